"""Signed transactions and the batches that mempools gossip.

A transaction is the wire message ``[64, chain_id, app, sender, nonce, op, signature]``:

- ``chain_id`` (str): the chain it is meant for; part of the sign bytes, so a
  transaction signed for one chain never verifies on another;
- ``app`` (str): ``"kvstore"`` or ``"bank"``;
- ``sender`` (32 bytes): the signer's Ed25519 public key; the account is
  ``crypto.address(sender)``;
- ``nonce`` (int): the sender's next expected nonce (0 for its first transaction);
- ``op`` (array): what to do, per app::

      kvstore  ["set", key: bytes, value: bytes]   |   ["del", key: bytes]
      bank     ["transfer", to: 20-byte address or its 40-char lowercase hex, amount: int > 0]

- ``signature`` (64 bytes) over ``codec.sign_bytes(b"bftnode/tx", chain_id,
  [app, sender, nonce, op])``.

Canonical encoding. `decode_tx` accepts only the exact bytes that `Tx.encode`
produces. A transaction's hash is sha256 of its encoded bytes and names it in
the tx index and the HTTP API; if a relayer could re-encode the same signed
transaction differently (a wider integer, say), one transaction would have two
hashes and a client could wait forever on the one that was not committed.

Signatures are never checked one by one: `tx_sign_items` lays out a list of
transactions as the three parallel lists `crypto.verify_batch` takes, so a
batch of any size costs one call to the (Cython, GIL-free) batch verifier.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from consensus.codec import (
    MAX_MESSAGE_BYTES,
    CodecError,
    Limits,
    Registry,
    WireMessage,
    check_depth,
    expect_bytes,
    expect_int,
    expect_list,
    expect_str,
    pack,
    sign_bytes,
    unpack,
)
from crypto import PrivateKey, merkle_root, sha256, verify_batch

TX_TAG = 64
BATCH_TAG = 65
TX_DOMAIN = b"bftnode/tx"

APPS = ("kvstore", "bank")
MAX_CHAIN_ID_LEN = 64
MAX_KEY_BYTES = 256
MAX_VALUE_BYTES = 64 * 1024
DEFAULT_MAX_TX_BYTES = 64 * 1024
# The largest tx any validator decodes in a peer's batch or a block: one constant of the
# protocol, never a node's setting. If it were ([mempool] max_tx_bytes), validators with
# different settings would give one block different results (an app hash split) or could
# not store a batch a block names (a stall). [mempool] max_tx_bytes only bounds what a
# node admits from its clients.
PROTOCOL_MAX_TX_BYTES = 4 * 1024 * 1024
MAX_NONCE = (1 << 63) - 1
MAX_AMOUNT = (1 << 63) - 1
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
ADDRESS_BYTES = 20

MAX_BATCH_TXS = 100_000
DEFAULT_MAX_BATCH_BYTES = MAX_MESSAGE_BYTES

_HEX_ADDRESS = re.compile(r"[0-9a-f]{40}")

TX_MESSAGES = Registry("tx")


def validate_op(app: str, op: Sequence[Any]) -> None:
    """Raise CodecError unless `op` is a well-formed operation of `app` (module docstring)."""
    if app == "kvstore":
        if len(op) < 1 or op[0] not in ("set", "del"):
            raise CodecError(f"kvstore op must be ['set', key, value] or ['del', key], got {_show(op)}")
        if op[0] == "set":
            if len(op) != 3:
                raise CodecError(f"kvstore 'set' takes a key and a value, got {len(op) - 1} arguments")
            expect_bytes(op[2], "kvstore value", max_size=MAX_VALUE_BYTES)
        elif len(op) != 2:
            raise CodecError(f"kvstore 'del' takes a key, got {len(op) - 1} arguments")
        key = expect_bytes(op[1], "kvstore key", max_size=MAX_KEY_BYTES)
        if not key:
            raise CodecError("kvstore key must not be empty")
    elif app == "bank":
        if len(op) != 3 or op[0] != "transfer":
            raise CodecError(f"bank op must be ['transfer', to, amount], got {_show(op)}")
        recipient(op)
        expect_int(op[2], "transfer amount", lo=1, hi=MAX_AMOUNT)
    else:
        raise CodecError(f"unknown app {app!r}; expected one of {', '.join(APPS)}")


def recipient(op: Sequence[Any]) -> bytes:
    """The 20-byte recipient address of a bank transfer op (either spelling accepted)."""
    to = op[1]
    if type(to) is bytes:
        return expect_bytes(to, "transfer recipient", size=ADDRESS_BYTES)
    if type(to) is str and _HEX_ADDRESS.fullmatch(to):
        return bytes.fromhex(to)
    raise CodecError(
        "transfer recipient must be a 20-byte address or 40 lowercase hex characters"
    )


def _show(op: Sequence[Any]) -> str:
    text = repr(list(op))
    return text if len(text) <= 80 else text[:77] + "..."


@TX_MESSAGES.register
@dataclass(frozen=True)
class Tx(WireMessage):
    """One signed transaction (see the module docstring for the fields)."""

    TAG: ClassVar[int] = TX_TAG

    chain_id: str
    app: str
    sender: bytes
    nonce: int
    op: tuple[Any, ...]
    signature: bytes = field(default=b"")

    def __post_init__(self) -> None:
        if isinstance(self.op, list):
            object.__setattr__(self, "op", tuple(self.op))

    def to_fields(self) -> list[Any]:
        return [self.chain_id, self.app, self.sender, self.nonce, list(self.op), self.signature]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Tx:
        chain_id, app, sender, nonce, op, signature = fields
        expect_list(op, "tx op", max_len=8)
        return cls(chain_id, app, sender, nonce, tuple(op), signature)

    def validate(self) -> None:
        """Check every field's type, size and range, and the op's shape for its app."""
        chain_id = expect_str(self.chain_id, "tx chain_id", max_len=MAX_CHAIN_ID_LEN)
        if not chain_id:
            raise CodecError("tx chain_id must not be empty")
        expect_str(self.app, "tx app", max_len=16)
        expect_bytes(self.sender, "tx sender", size=PUBLIC_KEY_BYTES)
        expect_int(self.nonce, "tx nonce", lo=0, hi=MAX_NONCE)
        if type(self.op) is not tuple:
            raise CodecError(f"tx op must be an array, got {type(self.op).__name__}")
        validate_op(self.app, self.op)
        expect_bytes(self.signature, "tx signature", size=SIGNATURE_BYTES)

    def sign_bytes(self, chain_id: str | None = None) -> bytes:
        """What the sender signs; `chain_id` overrides the tx's own (verify "as chain B")."""
        return sign_bytes(
            TX_DOMAIN,
            self.chain_id if chain_id is None else chain_id,
            [self.app, self.sender, self.nonce, list(self.op)],
        )

    def signed(self, key: PrivateKey) -> Tx:
        """A copy signed by `key`, which must be the sender's key."""
        if key.public_key != self.sender:
            raise ValueError("signing key does not match the tx sender")
        return replace(self, signature=key.sign(self.sign_bytes()))

    def hash(self) -> bytes:
        """sha256 of the encoded transaction: its id in the tx index and the API."""
        return sha256(self.encode())

    @property
    def sender_address(self) -> bytes:
        """The sender's 20-byte account address (`crypto.address` as bytes)."""
        return sha256(self.sender)[:ADDRESS_BYTES]


@functools.lru_cache(maxsize=16)
def tx_limits(max_size: int = DEFAULT_MAX_TX_BYTES) -> Limits:
    """Decoder limits for one transaction of at most `max_size` bytes."""
    return Limits(max_bytes=max_size, max_depth=2, max_container_len=8,
                  max_str_len=MAX_KEY_BYTES)


_CONTAINERS = frozenset((list, dict))


def _usual_shape(obj: list[Any]) -> bool:
    """[tag, 4 scalars, [scalars], scalar]: nests 2 deep, within `tx_limits`' max_depth."""
    op = obj[5] if len(obj) == 7 else None
    return (type(op) is list and _CONTAINERS.isdisjoint(map(type, op))
            and _CONTAINERS.isdisjoint(map(type, obj[1:5])) and type(obj[6]) not in _CONTAINERS)


_OP_SCALARS = frozenset((bytes, str, int))
_new_object = object.__new__


def _usual_tx(obj: list[Any]) -> Tx | None:
    """The validated Tx of a decoded tx of the shape every wallet sends (six scalar fields
    of the right types, an op of 1-3 scalars), or None: then the general path decides.

    Every node decodes every tx twice (admission, execution), so this skips the generic
    steps (`_usual_shape`, `Registry.from_obj`, `Tx.from_fields`) where their checks
    hold by construction: the same Tx, or `Tx.validate`'s same CodecError."""
    if len(obj) != 7:
        return None
    _, chain_id, app, sender, nonce, op, signature = obj
    if (type(chain_id) is not str or type(app) is not str or type(sender) is not bytes
            or type(nonce) is not int or type(signature) is not bytes
            or type(op) is not list or not 1 <= len(op) <= 3):
        return None
    for value in op:
        if type(value) not in _OP_SCALARS:
            return None
    # Tx(...) would spend more than validate() does on the frozen dataclass's per-field
    # object.__setattr__; the fields are final here, so fill the instance dict at once.
    tx = _new_object(Tx)
    tx.__dict__.update(chain_id=chain_id, app=app, sender=sender, nonce=nonce,
                       op=tuple(op), signature=signature)
    tx.validate()
    return tx


def decode_tx(data: bytes, max_size: int = DEFAULT_MAX_TX_BYTES) -> Tx:
    """Decode and validate one client- or peer-supplied transaction.

    Raises CodecError (and nothing else) naming the broken rule: too large,
    malformed msgpack, not a tx, a field out of range, a bad op, or an encoding
    that is not canonical. The signature is *not* checked here; see
    `tx_sign_items` / `verify_txs`.

    The usual tx goes through the compiled `node._txfast` when it is built: the
    same Tx for the same bytes; anything it does not take is decoded here.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"tx must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_size:
        raise CodecError(f"tx of {len(data)} bytes exceeds the {max_size}-byte limit")
    if _txfast is not None:
        tx = _txfast.decode(data)
        if tx is not None:
            return tx
    return _decode_tx_python(data, max_size)


def _decode_tx_python(data: bytes, max_size: int) -> Tx:
    """`decode_tx` of `data` (bytes within `max_size`) without the compiled fast path."""
    limits = tx_limits(max_size)
    obj = unpack(data, limits, walk_depth=False)
    if type(obj) is not list or not obj or obj[0] != TX_TAG or type(obj[0]) is not int:
        raise CodecError(f"not a transaction: expected an array starting with type tag {TX_TAG}")
    tx = _usual_tx(obj)
    if tx is None:
        if not _usual_shape(obj):
            check_depth(obj, limits.max_depth)   # refused with the depth error where it applies
        tx = TX_MESSAGES.from_obj(obj)
        assert isinstance(tx, Tx)
    # Canonical iff re-encoding gives the same bytes. `obj` has exactly Tx.encode's
    # structure here (from_fields took its six fields), so encoding it is the same test.
    if pack(obj) != data:
        raise CodecError("tx is not canonically encoded")
    return tx


try:
    from node import _txfast
except ImportError:   # not compiled: every tx takes the Python decoder, with the same results
    _txfast = None
else:
    _txfast.bind(Tx)


def tx_decoder_backend() -> str:
    """``"cython"`` when the usual tx is decoded by the compiled `node._txfast`."""
    return "cython" if _txfast is not None else "python"


class DecodedTxs:
    """Txs decoded at admission, kept for their decode at execution in the same process.

    A validator decodes every tx twice: its mempool when admitting it, its executor when
    a block holding it commits. Where both run in one process (the default), the mempool
    leaves each decoded tx here and the executor takes it instead of decoding the same
    bytes again. `decode_tx` is a pure function of the bytes (given a size limit they
    fit), so a tx taken is the one decoding would give, whoever left it; a miss (another
    process, or evicted: past `max_txs` or `max_bytes` of encoded txs, the oldest go
    first) just decodes. A kept tx costs about twice its encoded size.
    """

    def __init__(self, max_txs: int, max_bytes: int) -> None:
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self._txs: dict[bytes, Tx] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def keep(self, items: Sequence[tuple[bytes, Tx]]) -> None:
        with self._lock:
            txs = self._txs
            for raw, tx in items:
                if raw not in txs:
                    self._bytes += len(raw)
                txs[raw] = tx
            while txs and (len(txs) > self.max_txs or self._bytes > self.max_bytes):
                oldest = next(iter(txs))
                del txs[oldest]
                self._bytes -= len(oldest)

    def take(self, raws: Sequence[bytes]) -> list[Tx | None]:
        """The kept tx of each of `raws` (None where none is), each forgotten."""
        with self._lock:
            pop = self._txs.pop
            out = [pop(raw, None) for raw in raws]
            self._bytes -= sum(len(raw) for raw, tx in zip(raws, out, strict=True)
                               if tx is not None)
            return out

    def __len__(self) -> int:
        return len(self._txs)


# This process's. 16 MiB of 200-byte txs is ~80,000: several blocks' worth under overload.
ADMITTED_TXS = DecodedTxs(max_txs=100_000, max_bytes=16 * 1024 * 1024)


class DecodedBatches:
    """Batches' txs and tx hashes worked out at admission, kept for execution in the same
    process.

    To apply a block the executor needs each of its batches' txs and their hashes, and
    checks that their Merkle root is the digest the block names. The mempool worked out
    exactly those when it sealed or admitted the batch. Where both run in one process it
    leaves them here under the digest, with the encoded batch, and the executor takes
    them only when the batch it was handed is that encoded batch byte for byte (one
    memcmp) and within `decode_batch`'s default limits: they are then what decoding and
    hashing it would give. A miss (another process, or evicted: past `max_txs`, the
    oldest go first) decodes and hashes.
    """

    def __init__(self, max_txs: int) -> None:
        self.max_txs = max_txs
        self._batches: dict[bytes, tuple[bytes, tuple[bytes, ...], list[bytes]]] = {}
        self._txs = 0
        self._lock = threading.Lock()

    def keep(self, digest: bytes, encoded: bytes, txs: tuple[bytes, ...],
             hashes: list[bytes]) -> None:
        """Leave batch `digest`: `encoded` is `Batch(txs).encode()`, `hashes` its tx
        hashes, and `digest` their Merkle root."""
        with self._lock:
            batches = self._batches
            old = batches.pop(digest, None)
            if old is not None:
                self._txs -= len(old[1])
            batches[digest] = (encoded, txs, hashes)
            self._txs += len(txs)
            while batches and self._txs > self.max_txs:
                oldest = next(iter(batches))
                self._txs -= len(batches.pop(oldest)[1])

    def take(self, digest: bytes, encoded: bytes
             ) -> tuple[tuple[bytes, ...], list[bytes]] | None:
        """(txs, tx hashes) of batch `digest` if `encoded` is the batch kept, else None;
        the batch is forgotten either way."""
        with self._lock:
            kept = self._batches.pop(digest, None)
            if kept is None:
                return None
            self._txs -= len(kept[1])
        kept_encoded, txs, hashes = kept
        if (kept_encoded != encoded or len(encoded) > DEFAULT_MAX_BATCH_BYTES
                or len(txs) > MAX_BATCH_TXS):
            return None
        return txs, hashes

    def __len__(self) -> int:
        return len(self._batches)


# This process's: a few blocks' worth of batches under overload.
ADMITTED_BATCHES = DecodedBatches(max_txs=100_000)


def tx_hash(data: bytes) -> bytes:
    """The 32-byte id of an encoded transaction (sha256 of its bytes)."""
    return sha256(data)


# sign_bytes of a tx straight from its canonical encoding: ``pack([TX_TAG, chain_id, app,
# sender, nonce, op, signature])`` is 0x97 (array of 7), 0x40 (the tag), the five signed
# fields, then the 64-byte signature as bin 8 (0xc4 0x40 + 64 bytes); the signed message
# packs the same five fields as an array of 5 (0x95).
_SIGN_PREFIX = TX_DOMAIN + b"\x00\x95"
_SIGNATURE_TAIL = 2 + SIGNATURE_BYTES


def tx_sign_items(txs: Sequence[Tx], chain_id: str | None = None,
                  raws: Sequence[bytes] | None = None
                  ) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """(public keys, messages, signatures) for one `crypto.verify_batch` call.

    With `chain_id` the messages are built for that chain whatever each tx
    claims, so a tx signed for another chain fails verification. `raws`, when
    given, are the txs' encodings as `decode_tx` accepted them (canonical): the
    messages are then cut from them instead of re-encoded (same bytes).
    """
    pks = [tx.sender for tx in txs]
    if raws is None:
        msgs = [tx.sign_bytes(chain_id) for tx in txs]
    else:
        msgs = [_SIGN_PREFIX + raw[2:-_SIGNATURE_TAIL]
                if chain_id is None or tx.chain_id == chain_id else tx.sign_bytes(chain_id)
                for tx, raw in zip(txs, raws, strict=True)]
    sigs = [tx.signature for tx in txs]
    return pks, msgs, sigs


VerifyBatch = Callable[[Sequence[bytes], Sequence[bytes], Sequence[bytes]], list[bool]]


def verify_txs(txs: Sequence[Tx], chain_id: str | None = None,
               verify: VerifyBatch = verify_batch) -> list[bool]:
    """One verdict per tx, from a single batch-verifier call."""
    if not txs:
        return []
    return list(verify(*tx_sign_items(txs, chain_id)))


@TX_MESSAGES.register
@dataclass(frozen=True)
class Batch(WireMessage):
    """An ordered list of encoded transactions, disseminated by mempools.

    Consensus orders only batch digests (DESIGN section 2); the digest is
    the Merkle root of its tx hashes. The transactions inside are
    decoded and verified separately (`decode_tx`, `verify_txs`).
    """

    TAG: ClassVar[int] = BATCH_TAG

    txs: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if isinstance(self.txs, list):
            object.__setattr__(self, "txs", tuple(self.txs))

    def to_fields(self) -> list[Any]:
        return [list(self.txs)]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Batch:
        (txs,) = fields
        expect_list(txs, "batch txs", max_len=MAX_BATCH_TXS)
        return cls(tuple(txs))

    def validate(self) -> None:
        if type(self.txs) is not tuple:
            raise CodecError(f"batch txs must be an array, got {type(self.txs).__name__}")
        if not self.txs:
            raise CodecError("batch holds no transactions")
        if len(self.txs) > MAX_BATCH_TXS:
            raise CodecError(f"batch holds {len(self.txs)} txs, more than {MAX_BATCH_TXS}")
        for i, tx in enumerate(self.txs):
            if not expect_bytes(tx, f"batch tx {i}"):
                raise CodecError(f"batch tx {i} is empty")

    def tx_hashes(self) -> list[bytes]:
        """The hash of every tx in the batch, in order."""
        return [sha256(tx) for tx in self.txs]

    def digest(self) -> bytes:
        """Merkle root (crypto.hashing.merkle_root) of the tx hashes: what blocks carry.

        A Merkle root rather than a flat hash so that a finality receipt can prove
        one transaction's inclusion with a short path instead of the whole batch.
        """
        return merkle_root(self.tx_hashes())

    def hashes_and_digest(self) -> tuple[list[bytes], bytes]:
        """`tx_hashes()` and `digest()` together, hashing each tx once."""
        hashes = self.tx_hashes()
        return hashes, merkle_root(hashes)


def decode_batch(data: bytes, max_size: int = DEFAULT_MAX_BATCH_BYTES) -> Batch:
    """Decode and validate a peer's batch; any problem raises CodecError."""
    obj = unpack(data, Limits(max_bytes=max_size, max_depth=2,
                              max_container_len=MAX_BATCH_TXS, max_str_len=0))
    if type(obj) is not list or not obj or obj[0] != BATCH_TAG or type(obj[0]) is not int:
        raise CodecError(f"not a batch: expected an array starting with type tag {BATCH_TAG}")
    batch = TX_MESSAGES.from_obj(obj)
    assert isinstance(batch, Batch)
    return batch


__all__ = [
    "ADMITTED_BATCHES",
    "ADMITTED_TXS",
    "APPS",
    "BATCH_TAG",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_TX_BYTES",
    "MAX_AMOUNT",
    "MAX_BATCH_TXS",
    "MAX_KEY_BYTES",
    "MAX_NONCE",
    "MAX_VALUE_BYTES",
    "PROTOCOL_MAX_TX_BYTES",
    "TX_DOMAIN",
    "TX_MESSAGES",
    "TX_TAG",
    "Batch",
    "DecodedBatches",
    "DecodedTxs",
    "Tx",
    "decode_batch",
    "decode_tx",
    "recipient",
    "tx_decoder_backend",
    "tx_hash",
    "tx_limits",
    "tx_sign_items",
    "validate_op",
    "verify_txs",
]
