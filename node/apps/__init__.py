"""The built-in applications (`kvstore`, `bank`) and the interface the executor drives.

Lifecycle of one block (the executor's side)::

    codes = app.deliver_block(height, txs)          # apply in order; state changes are pending
    storage.commit_block(..., app_writes=app.pending_writes(), app_hash=app.app_hash())
    app.commit()                                    # pending writes become the committed state

`deliver_block` never touches the backing state: every write goes to an overlay
until `commit`, so a block is applied all or nothing, and with the LMDB backend
(`node.storage.StoredAppState`) the app's writes land in the *same* LMDB
transaction as the block itself. After a crash the app state on disk is always
the state after the last stored block; nothing has to be replayed. With the
in-memory backend (`MemoryState`) the node replays stored blocks on restart.

App hash (DESIGN section 9: each header carries the app hash after the
previous block). It is a running hash chained over blocks::

    app_hash_0 = sha256(b"bftnode/app-genesis/" + app name + 0x00 + genesis encoding)
    app_hash_h = sha256(b"bftnode/app-hash" + 0x00 + app_hash_{h-1} + u64be(h)
                        + sha256(msgpack([[key, value or nil], ...] sorted by key)))

where the list holds the final value of every key block h wrote (nil = deleted).
It is cheap (proportional to a block's writes, not to the state) and exactly as
deterministic as execution: two nodes agree on app_hash_h if and only if (up to
sha256 collisions) they started from the same genesis and made the same writes
at every height, hence hold the same state. It is a fingerprint for detecting a
forked state, not a Merkle commitment: it cannot prove one account's balance to
a light client.

Result codes (one per tx, stored in the tx index)::

    0 OK                  applied
    1 BAD_NONCE           nonce is not the sender's next nonce; no state change
    2 INSUFFICIENT_FUNDS  bank: balance < amount; the nonce is consumed, nothing else
    3 INVALID_OP          op not valid for the app; no state change
    4 BALANCE_OVERFLOW    bank: recipient balance would exceed MAX_AMOUNT; nonce consumed
    5 WRONG_APP           tx addressed to another app; no state change
    6 MALFORMED           (executor) the bytes did not decode as a tx
    7 BAD_SIGNATURE       (executor) the signature did not verify
    8 WRONG_CHAIN         (executor) tx.chain_id is not this chain's

Why a failing transfer still consumes its nonce: otherwise the signed tx stays
valid and could be re-included later, when the sender has funds, after its
wallet had already moved on to the next nonce.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from operator import itemgetter
from typing import Protocol

from consensus.codec import CodecError, pack
from crypto import sha256, verify_batch
from node.tx import DEFAULT_MAX_TX_BYTES, Tx, decode_tx, validate_op, verify_txs

CODE_OK = 0
CODE_BAD_NONCE = 1
CODE_INSUFFICIENT_FUNDS = 2
CODE_INVALID_OP = 3
CODE_BALANCE_OVERFLOW = 4
CODE_WRONG_APP = 5
CODE_MALFORMED = 6
CODE_BAD_SIGNATURE = 7
CODE_WRONG_CHAIN = 8

CODE_NAMES = {
    CODE_OK: "ok",
    CODE_BAD_NONCE: "bad nonce",
    CODE_INSUFFICIENT_FUNDS: "insufficient funds",
    CODE_INVALID_OP: "invalid op",
    CODE_BALANCE_OVERFLOW: "balance overflow",
    CODE_WRONG_APP: "wrong app",
    CODE_MALFORMED: "malformed tx",
    CODE_BAD_SIGNATURE: "bad signature",
    CODE_WRONG_CHAIN: "wrong chain",
}

Write = tuple[bytes, bytes | None]

_U64 = struct.Struct(">Q")


class AppError(Exception):
    """The executor drove an app out of order (wrong height, deliver without commit...)."""


class AppState(Protocol):
    """The committed key-value state an app reads, and how its block writes land."""

    def get(self, key: bytes) -> bytes | None:
        """The committed value of `key`, or None."""

    def apply(self, writes: Sequence[Write]) -> None:
        """Make one block's writes (value None = delete) the committed state."""

    def reading(self) -> AbstractContextManager[object]:
        """A scope for many `get`s in a row (one block's), which may share one snapshot."""


class MemoryState:
    """An AppState in a dict: for tests, the simulator, and nodes that replay on restart."""

    def __init__(self, items: Mapping[bytes, bytes] | None = None) -> None:
        self.items: dict[bytes, bytes] = dict(items or {})

    def get(self, key: bytes) -> bytes | None:
        return self.items.get(key)

    def apply(self, writes: Sequence[Write]) -> None:
        for key, value in writes:
            if value is None:
                self.items.pop(key, None)
            else:
                self.items[key] = value

    def reading(self) -> AbstractContextManager[object]:
        return contextlib.nullcontext()


def chain_app_hash(prev: bytes, height: int, writes: Sequence[Write]) -> bytes:
    """app_hash_h from app_hash_{h-1} and block h's sorted writes (module docstring)."""
    # Each (key, value) tuple packs as the array [key, value] does: the same bytes.
    writes_digest = sha256(pack(writes))
    return sha256(b"bftnode/app-hash\x00" + prev + _U64.pack(height) + writes_digest)


class App:
    """Base of the built-in apps: overlay, height bookkeeping and the app hash.

    Subclasses set `name`, implement `_genesis_encoding`, `_check` (mempool
    pre-check against committed state), `_apply` (one tx against the overlay,
    through `_get` / `_put` / `_delete`) and `next_nonce`.

    `height` and `app_hash` at construction say where the backing state stands:
    (0, None) for a new chain, or (storage.latest_height(), storage.last_app_hash())
    for an LMDB-backed app reopened after a restart.
    """

    name: str = ""

    def __init__(self, state: AppState, height: int = 0, app_hash: bytes | None = None) -> None:
        self._state = state
        self._overlay: dict[bytes, bytes | None] = {}
        self._pending: tuple[int, bytes, list[Write]] | None = None
        self.height = height
        self._app_hash = app_hash if app_hash is not None else self.genesis_app_hash()
        if len(self._app_hash) != 32:
            raise AppError(f"app hash must be 32 bytes, got {len(self._app_hash)}")

    # --- the interface the executor drives -------------------------------------------

    def genesis_app_hash(self) -> bytes:
        return sha256(b"bftnode/app-genesis/" + self.name.encode() + b"\x00"
                      + self._genesis_encoding())

    def check_tx(self, tx: Tx) -> tuple[int, str]:
        """Mempool pre-check of a decoded, signature-verified tx: (code, reason).

        Reads the committed state only. A nonce *above* the next expected one
        passes (earlier txs of the sender may still be pending); one below it
        can never execute and fails.
        """
        if tx.app != self.name:
            return CODE_WRONG_APP, f"tx is for app {tx.app!r}, this chain runs {self.name!r}"
        try:
            validate_op(tx.app, tx.op)
        except CodecError as exc:
            return CODE_INVALID_OP, str(exc)
        expected = self.next_nonce(tx.sender_address)
        if tx.nonce < expected:
            return CODE_BAD_NONCE, f"nonce {tx.nonce} already used; next nonce is {expected}"
        return self._check(tx)

    def deliver_block(self, height: int, txs: Sequence[Tx], *, decoded: bool = False
                      ) -> list[int]:
        """Apply `txs` in order as block `height`; one result code per tx.

        Contract: every tx was decoded by `decode_tx` and its signature verified
        for this chain (`execute_block` does both). The writes stay pending until
        `commit`; `app_hash()` already returns the new hash. `decoded=True` vouches
        for the first half: `decode_tx` validated each tx's op for its own app, so
        the op of a tx addressed to this app is not checked again (INVALID_OP then
        cannot occur); without it a tx built some other way is checked here.
        """
        if self._pending is not None:
            raise AppError(f"block {self._pending[0]} was delivered but not committed")
        if height != self.height + 1:
            raise AppError(f"expected block {self.height + 1}, got block {height}")
        with self._state.reading():
            deliver, check_op = self._deliver, not decoded
            codes = [deliver(tx, check_op) for tx in txs]
        writes = sorted(self._overlay.items(), key=itemgetter(0))   # keys are unique
        self._pending = (height, chain_app_hash(self._app_hash, height, writes), writes)
        return codes

    def pending_writes(self) -> list[Write]:
        """The delivered block's writes, sorted by key (None = delete), for storage."""
        if self._pending is None:
            raise AppError("no delivered block to take writes from")
        return list(self._pending[2])

    def app_hash(self) -> bytes:
        """The app hash after the last delivered block (pending or committed)."""
        return self._pending[1] if self._pending is not None else self._app_hash

    def commit(self) -> None:
        """Make the delivered block's writes the committed state."""
        if self._pending is None:
            raise AppError("no delivered block to commit")
        height, app_hash, writes = self._pending
        self._state.apply(writes)
        self.height, self._app_hash = height, app_hash
        self._pending = None
        self._overlay.clear()

    def discard(self) -> None:
        """Drop a delivered but uncommitted block (the store refused it, say)."""
        self._pending = None
        self._overlay.clear()

    def next_nonce(self, address: bytes) -> int:
        """The next nonce the 20-byte `address` must use, per committed state."""
        raise NotImplementedError

    # --- for subclasses --------------------------------------------------------------

    def _deliver(self, tx: Tx, check_op: bool = True) -> int:
        if tx.app != self.name:
            return CODE_WRONG_APP
        if check_op:
            try:
                validate_op(tx.app, tx.op)
            except CodecError:
                return CODE_INVALID_OP
        return self._apply(tx)

    def _get(self, key: bytes) -> bytes | None:
        if key in self._overlay:
            return self._overlay[key]
        return self._state.get(key)

    def _put(self, key: bytes, value: bytes) -> None:
        self._overlay[key] = value

    def _delete(self, key: bytes) -> None:
        self._overlay[key] = None

    def _genesis_encoding(self) -> bytes:
        raise NotImplementedError

    def _check(self, tx: Tx) -> tuple[int, str]:
        raise NotImplementedError

    def _apply(self, tx: Tx) -> int:
        raise NotImplementedError


def u64(value: int) -> bytes:
    return _U64.pack(value)


def read_u64(data: bytes) -> int:
    return _U64.unpack(data)[0]


def decode_block_txs(raw_txs: Sequence[bytes], *, chain_id: str,
                     max_tx_bytes: int = DEFAULT_MAX_TX_BYTES,
                     known: Sequence[Tx | None] | None = None
                     ) -> tuple[list[int | None], list[tuple[int, Tx]]]:
    """Decode a block's encoded txs once: (codes, [(index, tx)]).

    `codes[i]` is MALFORMED or WRONG_CHAIN for entries that cannot execute and None
    for the decoded ones, which are returned with their position. `known[i]`, where
    given and not None, is ``decode_tx(raw_txs[i])`` already done (`DecodedTxs`).
    """
    codes: list[int | None] = [None] * len(raw_txs)
    decoded: list[tuple[int, Tx]] = []
    for i, raw in enumerate(raw_txs):
        tx = known[i] if known is not None and len(raw) <= max_tx_bytes else None
        if tx is None:
            try:
                tx = decode_tx(raw, max_tx_bytes)
            except CodecError:
                codes[i] = CODE_MALFORMED
                continue
        if tx.chain_id != chain_id:
            codes[i] = CODE_WRONG_CHAIN
            continue
        decoded.append((i, tx))
    return codes, decoded


def execute_block(
    app: App,
    height: int,
    raw_txs: Sequence[bytes],
    *,
    chain_id: str,
    max_tx_bytes: int = DEFAULT_MAX_TX_BYTES,
    verify: Callable[..., list[bool]] | None = verify_batch,
) -> list[int]:
    """Decode, check and deliver a block's encoded txs; one code per entry, in order.

    Entries that do not decode (MALFORMED), name another chain (WRONG_CHAIN) or
    fail verification (BAD_SIGNATURE) get their code and no effect; the rest go
    to `app.deliver_block`. Signatures are checked in one `verify` call; pass
    ``verify=None`` only when every tx was already verified (by the mempool,
    when it accepted the batch) under the same rule. The block is left
    delivered, not committed.
    """
    codes, decoded = decode_block_txs(raw_txs, chain_id=chain_id, max_tx_bytes=max_tx_bytes)
    if verify is not None and decoded:
        verdicts = verify_txs([tx for _, tx in decoded], chain_id, verify)
        rejected = {i for (i, _), ok in zip(decoded, verdicts, strict=True) if not ok}
        for i in rejected:
            codes[i] = CODE_BAD_SIGNATURE
        decoded = [(i, tx) for i, tx in decoded if i not in rejected]
    applied = app.deliver_block(height, [tx for _, tx in decoded], decoded=True)
    for (i, _), code in zip(decoded, applied, strict=True):
        codes[i] = code
    return [c if c is not None else CODE_MALFORMED for c in codes]


def make_app(name: str, state: AppState, *, genesis: Mapping[str, int] | None = None,
             height: int = 0, app_hash: bytes | None = None) -> App:
    """Build the app `name` ("kvstore" or "bank"); `genesis` is the bank's allocations."""
    from node.apps.bank import Bank
    from node.apps.kvstore import KVStore

    if name == "kvstore":
        return KVStore(state, height=height, app_hash=app_hash)
    if name == "bank":
        return Bank(state, genesis or {}, height=height, app_hash=app_hash)
    raise AppError(f"unknown app {name!r}; expected 'kvstore' or 'bank'")


__all__ = [
    "CODE_BAD_NONCE",
    "CODE_BAD_SIGNATURE",
    "CODE_BALANCE_OVERFLOW",
    "CODE_INSUFFICIENT_FUNDS",
    "CODE_INVALID_OP",
    "CODE_MALFORMED",
    "CODE_NAMES",
    "CODE_OK",
    "CODE_WRONG_APP",
    "CODE_WRONG_CHAIN",
    "App",
    "AppError",
    "AppState",
    "MemoryState",
    "chain_app_hash",
    "decode_block_txs",
    "execute_block",
    "make_app",
]
