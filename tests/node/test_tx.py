"""The signed transaction and batch wire formats (node/tx.py)."""

from __future__ import annotations

from collections.abc import Callable

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.codec import CodecError, pack, unpack
from crypto import PrivateKey, sha256, verify_batch
from crypto.hashing import merkle_proof, merkle_root, verify_merkle_proof
from node.tx import (
    DEFAULT_MAX_TX_BYTES,
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    TX_MESSAGES,
    TX_TAG,
    Batch,
    Tx,
    decode_batch,
    decode_tx,
    tx_hash,
    tx_limits,
    tx_sign_items,
    verify_txs,
)

KEY = PrivateKey.from_seed(bytes(range(32)))
OTHER = PrivateKey.from_seed(bytes(32))
TO = bytes(range(20))


def make_tx(op: tuple = ("set", b"k", b"v"), app: str = "kvstore", chain: str = "chain-a",
            nonce: int = 0, key: PrivateKey = KEY) -> Tx:
    return Tx(chain, app, key.public_key, nonce, op).signed(key)


def raw(fields: list) -> bytes:
    return pack([TX_TAG, *fields])


def good_fields() -> list:
    return make_tx().to_fields()


def test_round_trip_kv_set_del_and_transfer() -> None:
    for tx in (make_tx(), make_tx(("del", b"k")),
               make_tx(("transfer", TO, 7), app="bank"),
               make_tx(("transfer", TO.hex(), 7), app="bank")):
        data = tx.encode()
        decoded = decode_tx(data)
        assert decoded == tx
        assert decoded.hash() == tx_hash(data) == sha256(data)
        assert verify_txs([decoded]) == [True]


def test_signature_binds_chain_id() -> None:
    tx = make_tx(chain="chain-a")
    assert verify_txs([tx], "chain-a") == [True]
    assert verify_txs([tx], "chain-b") == [False]
    relabelled = Tx("chain-b", tx.app, tx.sender, tx.nonce, tx.op, tx.signature)
    assert verify_txs([relabelled]) == [False]


def test_signature_binds_every_field() -> None:
    tx = make_tx()
    for changed in (Tx(tx.chain_id, tx.app, tx.sender, 1, tx.op, tx.signature),
                    Tx(tx.chain_id, tx.app, tx.sender, 0, ("set", b"k", b"w"), tx.signature),
                    Tx(tx.chain_id, tx.app, OTHER.public_key, 0, tx.op, tx.signature)):
        assert verify_txs([changed]) == [False]


def test_sign_items_make_one_batch_call() -> None:
    txs = [make_tx(nonce=i) for i in range(5)]
    txs.append(Tx("chain-a", "kvstore", KEY.public_key, 9, ("del", b"x"), bytes(64)))
    calls = []

    def counting_verify(pks, msgs, sigs):
        calls.append(len(pks))
        return verify_batch(pks, msgs, sigs)

    assert verify_txs(txs, verify=counting_verify) == [True] * 5 + [False]
    assert calls == [6]
    pks, msgs, sigs = tx_sign_items(txs)
    assert pks[0] == KEY.public_key and sigs[0] == txs[0].signature
    assert msgs[0] == txs[0].sign_bytes()


def test_signed_refuses_foreign_key() -> None:
    with pytest.raises(ValueError, match="does not match"):
        Tx("c", "kvstore", KEY.public_key, 0, ("del", b"k")).signed(OTHER)


@pytest.mark.parametrize("index,value,reason", [
    (0, "", "chain_id must not be empty"),
    (0, "x" * 65, "chain_id is longer"),
    (0, b"chain", "chain_id must be a string"),
    (1, "nft", "unknown app"),
    (2, bytes(31), "sender must be 32 bytes"),
    (3, -1, "nonce=-1 is outside"),
    (3, 1 << 63, "nonce="),
    (3, True, "nonce must be an integer"),
    (4, "set", "op must be an array"),
    (4, ["set", b"k"], "takes a key and a value"),
    (4, ["put", b"k", b"v"], "kvstore op must be"),
    (4, ["set", b"", b"v"], "key must not be empty"),
    (4, ["set", "k", b"v"], "key must be bytes"),
    (4, ["set", b"k" * (MAX_KEY_BYTES + 1), b"v"], "key is 257 bytes"),
    (4, ["del", b"k", b"v"], "'del' takes a key"),
    (5, bytes(63), "signature must be 64 bytes"),
])
def test_validate_rejects_bad_fields(index: int, value: object, reason: str) -> None:
    fields = good_fields()
    fields[index] = value
    with pytest.raises(CodecError, match=reason):
        decode_tx(raw(fields))


@pytest.mark.parametrize("op,reason", [
    (["transfer", TO, 0], "amount=0 is outside"),
    (["transfer", TO, 1 << 63], "amount="),
    (["transfer", TO, -5], "amount=-5"),
    (["transfer", bytes(19), 5], "recipient must be 20 bytes"),
    (["transfer", TO.hex().upper(), 5], "40 lowercase hex"),
    (["transfer", 5, 5], "recipient must be"),
    (["send", TO, 5], "bank op must be"),
    (["transfer", TO, 5, 6], "bank op must be"),
])
def test_validate_rejects_bad_transfers(op: list, reason: str) -> None:
    fields = make_tx(("transfer", TO, 1), app="bank").to_fields()
    fields[4] = op
    with pytest.raises(CodecError, match=reason):
        decode_tx(raw(fields))


def test_size_limits() -> None:
    big = make_tx(("set", b"k", b"v" * (DEFAULT_MAX_TX_BYTES - 200))).encode()
    assert decode_tx(big).op[2] == b"v" * (DEFAULT_MAX_TX_BYTES - 200)
    with pytest.raises(CodecError, match="exceeds the 1000-byte limit"):
        decode_tx(big, max_size=1000)
    huge_value = make_tx(("set", b"k", b"v" * (MAX_VALUE_BYTES + 1))).encode()
    with pytest.raises(CodecError, match="value is 65537 bytes"):
        decode_tx(huge_value, max_size=2 * DEFAULT_MAX_TX_BYTES)


def test_decode_refuses_other_messages_and_trailing_shapes() -> None:
    with pytest.raises(CodecError, match="not a transaction"):
        decode_tx(Batch((make_tx().encode(),)).encode())
    with pytest.raises(CodecError, match="malformed Tx"):
        decode_tx(raw(good_fields()[:-1]))
    with pytest.raises(CodecError, match="nests deeper"):
        fields = good_fields()
        fields[4] = ["set", b"k", [b"v"]]
        decode_tx(raw(fields))
    with pytest.raises(CodecError):
        decode_tx("text")  # type: ignore[arg-type]


def test_non_canonical_encoding_is_refused() -> None:
    tx = make_tx()
    fields = [TX_TAG, *tx.to_fields()]
    # nonce 0 as a uint32 instead of a positive fixint: same meaning, other bytes
    canonical = pack(fields)
    body = msgpack.packb(fields[:4], use_bin_type=True)[1:]
    head = bytes([0x97]) + body + b"\xce\x00\x00\x00\x00"
    rest = b"".join(msgpack.packb(f, use_bin_type=True) for f in fields[5:])
    widened = head + rest
    assert widened != canonical and msgpack.unpackb(widened) == msgpack.unpackb(canonical)
    with pytest.raises(CodecError, match="not canonically encoded"):
        decode_tx(widened)


def test_batch_round_trip_and_digest() -> None:
    txs = tuple(make_tx(nonce=i).encode() for i in range(3))
    batch = Batch(txs)
    data = batch.encode()
    assert decode_batch(data) == batch
    assert batch.tx_hashes() == [sha256(t) for t in txs]
    assert batch.digest() == merkle_root([sha256(t) for t in txs])
    proof = merkle_proof(batch.tx_hashes(), 1)
    assert verify_merkle_proof(sha256(txs[1]), proof, batch.digest())
    assert Batch(txs[:2]).digest() != batch.digest()
    with pytest.raises(CodecError, match="no transactions"):
        decode_batch(Batch(()).encode())
    with pytest.raises(CodecError, match="batch tx 1 must be bytes"):
        decode_batch(pack([Batch.TAG, [b"a", 1]]))
    with pytest.raises(CodecError, match="not a batch"):
        decode_batch(pack([TX_TAG, [b"a"]]))
    with pytest.raises(CodecError):
        decode_batch(txs[0])


def test_hypothesis_decode_tx_raises_only_codec_error() -> None:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64 - 1),
                        st.binary(max_size=40), st.text(max_size=40))
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6), max_leaves=20)
    seeds = [good_fields(), make_tx(("transfer", TO, 3), app="bank").to_fields()]

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=200), values, st.integers(0, 5), st.integers(0, 1))
    def check(blob: bytes, value: object, index: int, which: int) -> None:
        for data in (blob, bytes([0x97, TX_TAG]) + blob):
            try:
                decode_tx(data)
            except CodecError:
                pass
        fields = list(seeds[which])
        fields[index] = value
        try:
            encoded = pack([TX_TAG, *fields])
        except CodecError:
            return
        try:
            tx = decode_tx(encoded)
        except CodecError:
            return
        assert tx.encode() == encoded

    check()


def _general_decode(data: bytes) -> Tx:
    """decode_tx without its fast path (`_usual_tx`): the generic steps only."""
    limits = tx_limits(DEFAULT_MAX_TX_BYTES)
    obj = unpack(data, limits)
    tx = TX_MESSAGES.from_obj(obj)
    if pack(obj) != data:
        raise CodecError("tx is not canonically encoded")
    return tx  # type: ignore[return-value]


def _outcome(decode: Callable[[bytes], Tx], data: bytes) -> object:
    try:
        tx = decode(data)
    except CodecError as exc:
        return ("refused", str(exc))
    return ("tx", tx, dict(vars(tx)), hash(tx))


def test_hypothesis_the_fast_path_decodes_exactly_as_the_general_one() -> None:
    """Wallet-shaped txs take `_usual_tx`; for every field value the answer (the Tx, or
    the error text) is the general path's."""
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                        st.binary(max_size=70), st.text(max_size=40),
                        st.sampled_from(["set", "del", "transfer", "kvstore", "bank"]))
    ops = st.lists(scalars, max_size=4)
    seeds = [good_fields(), make_tx(("del", b"k")).to_fields(),
             make_tx(("transfer", TO, 3), app="bank").to_fields(),
             make_tx(("transfer", TO.hex(), 3), app="bank").to_fields()]

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.integers(0, 3), st.integers(0, 5), st.one_of(scalars, ops), ops)
    def check(which: int, index: int, value: object, op: list) -> None:
        fields = list(seeds[which])
        fields[index] = value
        encoded = pack([TX_TAG, *fields])
        assert _outcome(decode_tx, encoded) == _outcome(_general_decode, encoded)
        fields[4] = op
        encoded = pack([TX_TAG, *fields])
        assert _outcome(decode_tx, encoded) == _outcome(_general_decode, encoded)

    check()
    for fields in seeds:
        tx = decode_tx(pack([TX_TAG, *fields]))
        assert _outcome(decode_tx, tx.encode())[0] == "tx"
        assert tx == Tx.from_fields(fields) and type(tx.op) is tuple


def test_sign_items_cut_from_the_encoding_equal_the_re_encoded_ones() -> None:
    txs = [make_tx(), make_tx(("del", b"k" * MAX_KEY_BYTES), nonce=2**63 - 1),
           make_tx(("set", b"k", b"v" * MAX_VALUE_BYTES), chain="c" * 64),
           make_tx(("transfer", TO, 2**40), app="bank", nonce=70_000),
           make_tx(("transfer", TO.hex(), 1), app="bank", chain="chain-b", key=OTHER)]
    raws = [decode_tx(tx.encode(), 2 * MAX_VALUE_BYTES).encode() for tx in txs]
    for chain in (None, "chain-a", "chain-b"):
        cut = tx_sign_items(txs, chain, raws)
        assert cut == tx_sign_items(txs, chain)
    # A tx of another chain is checked as this chain's: its message is re-encoded.
    assert tx_sign_items(txs, "chain-a", raws)[1][4] == txs[4].sign_bytes("chain-a")
    assert verify_batch(*tx_sign_items(txs, None, raws)) == [True] * 5


def test_decoded_txs_are_taken_once_and_the_oldest_go_past_the_limits() -> None:
    from node.tx import DecodedTxs
    from node.wallet import Wallet

    w = Wallet.from_seed(b"\x07" * 32)
    raws = [w.kv_set("c", b"k%d" % i, b"v") for i in range(5)]
    kept = DecodedTxs(max_txs=3, max_bytes=1 << 20)
    kept.keep([(raw, decode_tx(raw)) for raw in raws[:2]])
    kept.keep([(raw, decode_tx(raw)) for raw in raws[2:]])
    assert len(kept) == 3                                       # raws[0], raws[1] went
    got = kept.take([raws[0], raws[3], bytes(raws[3])])
    assert got[0] is None and got[1] == decode_tx(raws[3]) and got[2] is None
    assert kept.take(raws) == [None, None, decode_tx(raws[2]), None, decode_tx(raws[4])]
    assert len(kept) == 0
    # The byte limit: big txs push the oldest out long before the count limit does.
    big = [w.kv_set("c", b"b%d" % i, b"v" * 4000) for i in range(4)]
    kept = DecodedTxs(max_txs=100, max_bytes=2 * len(big[0]) + 10)
    kept.keep([(raw, decode_tx(raw)) for raw in big])
    assert kept.take(big) == [None, None, decode_tx(big[2]), decode_tx(big[3])]
    kept.keep([(big[0], decode_tx(big[0]))] * 2)                # the same tx twice: once
    assert kept.take(big[:1]) == [decode_tx(big[0])] and len(kept) == 0


def test_decoded_batches_are_taken_once_for_their_own_bytes_and_the_oldest_go() -> None:
    from node.tx import DEFAULT_MAX_BATCH_BYTES, DecodedBatches
    from node.wallet import Wallet

    w = Wallet.from_seed(b"\x08" * 32)
    batches = [Batch(tuple(w.kv_set("c", b"k%d.%d" % (i, j), b"v") for j in range(2)))
               for i in range(3)]
    kept = DecodedBatches(max_txs=4)
    for batch in batches:
        hashes, digest = batch.hashes_and_digest()
        kept.keep(digest, batch.encode(), batch.txs, hashes)
    assert len(kept) == 2                                    # 6 txs > 4: the first went
    assert kept.take(batches[0].digest(), batches[0].encode()) is None
    # Other bytes under a kept digest: a miss, and the entry is gone.
    assert kept.take(batches[1].digest(), batches[2].encode()) is None
    assert kept.take(batches[1].digest(), batches[1].encode()) is None
    assert kept.take(batches[2].digest(), bytes(batches[2].encode())) == (
        batches[2].txs, batches[2].tx_hashes())
    assert len(kept) == 0
    # A batch decode_batch would refuse by its default size limit is never handed out.
    huge = Batch((b"\x01" * (DEFAULT_MAX_BATCH_BYTES + 1),))
    kept.keep(b"d" * 32, huge.encode(), huge.txs, huge.tx_hashes())
    assert kept.take(b"d" * 32, huge.encode()) is None
