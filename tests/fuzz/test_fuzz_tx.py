"""The transaction and batch decoders (node.tx.decode_tx / decode_batch), and the
mempool's intake of client bodies and peer batches, against mutated valid input.

tests/node/test_tx.py fuzzes decode_tx with random bytes and replaced fields; here
every example starts from a signed tx or a batch of them, so edits land inside
well-formed structure. Properties: only CodecError comes out of the decoders;
a tx that decodes is canonical (its encoding is the input) and, if it is not the
original, no node of the chain would take it (other chain, or a signature that fails); the mempool never raises on any body
or batch, it refuses with a reason.
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.codec import CodecError, pack, unpack
from crypto import verify_batch
from node.actors.mempool import Mempool, MempoolLimits
from node.tx import Batch, decode_batch, decode_tx, tx_sign_items
from node.wallet import Wallet

from .conftest import FUZZ, MSGPACK_VALUES, TIMEOUT_S, mutated, replace_node

pytestmark = pytest.mark.timeout(TIMEOUT_S)
CHAIN = "fuzz-chain"
W = Wallet.from_seed(b"t" * 32)
TO = Wallet.from_seed(b"u" * 32).address


def _txs() -> list[bytes]:
    w = Wallet.from_seed(b"t" * 32)
    return [w.kv_set(CHAIN, b"key", b"value"), w.kv_delete(CHAIN, b"key"),
            w.kv_set(CHAIN, b"k" * 256, b"\x00" * 300), w.transfer(CHAIN, TO, 12345)]


TXS = _txs()
BATCH = Batch(tuple(TXS)).encode()
valid_tx = st.sampled_from(TXS)


def acceptable(tx) -> bool:
    """Whether a node of CHAIN would take `tx`: its chain, and a signature that verifies
    as a tx of CHAIN (the mempool checks both)."""
    return tx.chain_id == CHAIN and verify_batch(*tx_sign_items([tx], CHAIN))[0]


@FUZZ
@given(mutated(valid_tx, max_edits=5))
def test_mutated_tx_is_refused_or_canonical_and_unsigned(data):
    try:
        tx = decode_tx(data)
    except CodecError:
        return
    assert tx.encode() == data, "decode_tx accepted a non-canonical encoding"
    if data not in TXS:
        assert not acceptable(tx), "an edited transaction still verifies"
        assert not verify_batch(*tx_sign_items([tx]))[0]  # not even as its own chain's


@FUZZ
@given(valid_tx, st.lists(st.integers(0, 16), min_size=1, max_size=3), MSGPACK_VALUES)
def test_tx_with_any_field_replaced_is_refused_or_canonical(data, path, value):
    try:
        encoded = pack(replace_node(unpack(data), path, value))
    except CodecError:
        return
    try:
        tx = decode_tx(encoded)
    except CodecError:
        return
    assert tx.encode() == encoded
    if encoded not in TXS:
        assert not acceptable(tx)


@FUZZ
@given(st.one_of(mutated(st.just(BATCH), max_edits=6), st.binary(max_size=400)))
def test_mutated_batch_raises_only_codec_error(data):
    try:
        batch = decode_batch(data)
    except CodecError:
        return
    batch.validate()
    assert len(batch.digest()) == 32
    for raw in batch.txs:
        try:
            decode_tx(raw)
        except CodecError:
            pass


@FUZZ
@given(st.lists(st.one_of(mutated(valid_tx), valid_tx, st.binary(max_size=100),
                          MSGPACK_VALUES), max_size=8),
       st.one_of(mutated(st.just(BATCH), max_edits=4), st.binary(max_size=200)))
def test_mempool_refuses_with_a_reason_and_never_raises(bodies, batch):
    pool = Mempool(CHAIN, "kvstore", MempoolLimits(max_txs=4, max_bytes=2048,
                                                   max_tx_bytes=512))
    ticket, (pks, msgs, sigs), rejected = msgpack.unpackb(
        pool.prepare(msgpack.packb(bodies)), raw=False)
    for index, _h, reason in rejected:
        assert 0 <= index < len(bodies) and isinstance(reason, str) and reason
    verdicts = bytes(verify_batch(pks, msgs, sigs)) if pks else b""
    results, _full = msgpack.unpackb(pool.admit(ticket, verdicts), raw=False)
    assert len(results) + len(rejected) == len(bodies)
    assert pool.size()[0] <= 4 and pool.size()[1] <= 2048
    ticket, digest, (pks, msgs, sigs), reason = msgpack.unpackb(pool.prepare_batch(batch),
                                                                 raw=False)
    if reason is not None:
        assert ticket is None and isinstance(reason, str)
    elif ticket is not None:
        pool.admit_batch(ticket, bytes(verify_batch(pks, msgs, sigs)))
