"""Executor (node/actors/executor.py) as a plain class over a real LMDB home: codes, app
hash chaining, the tx index, the fork check, signature verdicts and restart."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

import msgpack
import pytest

from consensus.types import Block, CommitCertificate, VoteKind, vote_sign_bytes
from consensus.validators import ValidatorSet
from crypto import PrivateKey, sha256
from node.actors.executor import AppHashMismatch, Executor
from node.apps import (
    CODE_BAD_NONCE,
    CODE_BAD_SIGNATURE,
    CODE_INSUFFICIENT_FUNDS,
    CODE_OK,
    CODE_WRONG_APP,
    MemoryState,
    execute_block,
    make_app,
)
from node.storage import TxRecord
from node.stores import close_storage
from node.tx import Batch
from node.wallet import Wallet
from node.wire import decode_block, decode_certificate

CHAIN = "exec-chain"
KEYS = [PrivateKey.from_seed(bytes([100 + i]) * 32) for i in range(4)]
VSET = ValidatorSet.equal_power([k.public_key for k in KEYS])
MAP_SIZE = 1 << 24


@pytest.fixture
def home(tmp_path) -> Iterator[str]:
    path = str(tmp_path / "home")
    yield path
    close_storage(path)


def new_executor(home: str, app: str = "kvstore", allocations: dict | None = None) -> Executor:
    return Executor(home, CHAIN, app, allocations or {}, MAP_SIZE, sync=False)


def certificate(block: Block, round: int = 0) -> CommitCertificate:
    sb = vote_sign_bytes(VoteKind.PRECOMMIT, CHAIN, block.height, round, block.hash())
    return CommitCertificate(block.height, round, block.hash(),
                             tuple((k.public_key, k.sign(sb)) for k in KEYS))


def build(ex: Executor, batches: Sequence[Batch], prev_hash: bytes,
          app_hash: bytes | None = None) -> Block:
    height, current = ex.info()
    return Block.build(chain_id=CHAIN, height=height + 1, time_ms=1_000 * (height + 1),
                       prev_block_hash=prev_hash, payload=[b.digest() for b in batches],
                       app_hash=current if app_hash is None else app_hash,
                       validators_hash=VSET.hash(), proposer=KEYS[0].public_key)


def execute(ex: Executor, block: Block, batches: Sequence[Batch],
            verdicts: Sequence[bytes] | None = None) -> list:
    if verdicts is None:
        verdicts = [b"\x01" * len(b.txs) for b in batches]
    packed = msgpack.packb([block.encode(), certificate(block).encode(),
                            [[b.encode(), v] for b, v in zip(batches, verdicts, strict=True)]])
    return msgpack.unpackb(ex.execute(packed), raw=False)


def wallet(i: int) -> Wallet:
    return Wallet.from_seed(bytes([i + 1]) * 32)


def test_execute_applies_stores_and_indexes_a_block(home):
    ex = new_executor(home)
    assert ex.info() == [0, make_app("kvstore", MemoryState()).genesis_app_hash()]
    a, b = wallet(0), wallet(1)
    b1 = Batch((a.kv_set(CHAIN, b"x", b"1"), a.kv_set(CHAIN, b"y", b"2")))
    b2 = Batch((b.kv_set(CHAIN, b"x", b"3"),))
    block = build(ex, [b1, b2], bytes(32))
    height, app_hash, hashes, codes, nonces = execute(ex, block, [b1, b2])
    assert height == 1
    assert hashes == b1.tx_hashes() + b2.tx_hashes()
    assert codes == [CODE_OK] * 3
    assert nonces == [[a.public_key, 0], [a.public_key, 1], [b.public_key, 0]]
    assert ex.info() == [1, app_hash]
    assert ex.app.get(b"x") == b"3" and ex.app.get(b"y") == b"2"
    storage = ex.storage
    assert storage.latest_height() == 1 and storage.last_app_hash() == app_hash
    for i, h in enumerate(hashes):
        assert storage.tx(h) == TxRecord(1, i, CODE_OK)
    block_bytes, cert_bytes = storage.block(1)
    assert decode_block(block_bytes) == block
    assert decode_certificate(cert_bytes) == certificate(block)
    assert storage.height_of(block.hash()) == 1
    assert storage.batch(b1.digest()) == b1.encode() and storage.batch(b2.digest()) == b2.encode()


def test_app_hash_chains_over_blocks_like_an_independent_replay(home):
    ex = new_executor(home)
    w = wallet(0)
    replica = make_app("kvstore", MemoryState())
    prev = bytes(32)
    for height in range(1, 4):
        batches = [Batch(tuple(w.kv_set(CHAIN, b"k%d" % i, b"v%d" % height) for i in range(2)))]
        if height == 2:
            batches = []  # an empty block still moves height and app hash
        block = build(ex, batches, prev)
        assert block.header.app_hash == replica.app_hash()
        result = execute(ex, block, batches)
        raw = [tx for b in batches for tx in b.txs]
        assert execute_block(replica, height, raw, chain_id=CHAIN, verify=None) == result[3]
        replica.commit()
        assert result[:2] == [height, replica.app_hash()]
        prev = block.hash()
    assert ex.storage.last_app_hash() == replica.app_hash()
    assert ex.info() == [3, replica.app_hash()]


def test_app_hash_mismatch_halts_with_a_clear_error_and_stores_nothing(home):
    ex = new_executor(home)
    batch = Batch((wallet(0).kv_set(CHAIN, b"k", b"v"),))
    before = ex.info()
    forked = build(ex, [batch], bytes(32), app_hash=sha256(b"someone else's state"))
    with pytest.raises(AppHashMismatch) as info:
        execute(ex, forked, [batch])
    message = str(info.value)
    assert "block 1 carries app hash " + sha256(b"someone else's state").hex() in message
    assert "for height 0" in message and before[1].hex() in message
    assert "forked" in message
    assert ex.info() == before
    assert ex.storage.latest_height() == 0 and ex.storage.block(1) is None
    assert ex.storage.tx(batch.tx_hashes()[0]) is None
    assert ex.storage.batch(batch.digest()) is None
    # The executor is not wedged: the network's real block 1 still applies.
    assert execute(ex, build(ex, [batch], bytes(32)), [batch])[3] == [CODE_OK]


def test_out_of_order_block_or_wrong_batch_content_is_refused(home):
    ex = new_executor(home)
    batch = Batch((wallet(0).kv_set(CHAIN, b"k", b"v"),))
    block = build(ex, [batch], bytes(32))
    future = replace(block, header=replace(block.header, height=2))
    with pytest.raises(ValueError, match="executor at height 0 got block 2"):
        execute(ex, future, [batch])
    other = Batch((wallet(1).kv_set(CHAIN, b"k", b"v"),))
    with pytest.raises(ValueError, match=f"batch {batch.digest().hex()} content does not match"):
        execute(ex, block, [other])
    assert ex.info()[0] == 0 and ex.storage.latest_height() == 0


def test_verdict_zero_gives_bad_signature_and_does_not_consume_the_nonce(home):
    ex = new_executor(home)
    w = wallet(0)
    txs = [w.kv_set(CHAIN, b"k%d" % i, b"v") for i in range(3)]
    batch = Batch(tuple(txs))
    block = build(ex, [batch], bytes(32))
    _, _, hashes, codes, nonces = execute(ex, block, [batch], [b"\x01\x00\x01"])
    # tx 1 never happened, so tx 2 (nonce 2) finds the sender's next nonce still 1.
    assert codes == [CODE_OK, CODE_BAD_SIGNATURE, CODE_BAD_NONCE]
    assert nonces == [[w.public_key, 0]]
    assert [ex.storage.tx(h).code for h in hashes] == codes
    assert ex.app.get(b"k1") is None and ex.app.get(b"k0") == b"v"


def test_a_tx_included_twice_fails_the_second_time_and_keeps_its_first_index(home):
    ex = new_executor(home)
    tx = wallet(0).kv_set(CHAIN, b"k", b"v")
    first = Batch((tx,))
    block1 = build(ex, [first], bytes(32))
    execute(ex, block1, [first])
    again = Batch((wallet(1).kv_set(CHAIN, b"j", b"w"), tx))
    codes = execute(ex, build(ex, [again], block1.hash()), [again])[3]
    assert codes == [CODE_OK, CODE_BAD_NONCE]
    assert ex.storage.tx(sha256(tx)) == TxRecord(1, 0, CODE_OK)


def test_bank_codes_and_which_of_them_consume_the_nonce(home):
    rich, poor = wallet(0), wallet(1)
    ex = new_executor(home, "bank", {rich.address: 100})
    txs = (rich.transfer(CHAIN, poor.address, 60),
           poor.transfer(CHAIN, rich.address, 1_000),       # insufficient: nonce consumed
           wallet(2).kv_set(CHAIN, b"k", b"v"))              # another app's tx
    batch = Batch(txs)
    _, _, _, codes, nonces = execute(ex, build(ex, [batch], bytes(32)), [batch])
    assert codes == [CODE_OK, CODE_INSUFFICIENT_FUNDS, CODE_WRONG_APP]
    assert nonces == [[rich.public_key, 0], [poor.public_key, 0]]
    assert ex.app.balance(rich.address) == 40 and ex.app.balance(poor.address) == 60
    assert ex.app.nonce(poor.address) == 1


def test_the_certificate_is_stored_as_given(home):
    """The executor trusts consensus for the certificate: it stores it, it does not check
    it (the engine verified it, or built it from votes it verified)."""
    ex = new_executor(home)
    block = build(ex, [], bytes(32))
    cert = certificate(block)
    packed = msgpack.packb([block.encode(), cert.encode(), []])
    ex.execute(packed)
    assert ex.storage.block(1) == (block.encode(), cert.encode())


def test_reopened_store_resumes_at_the_stored_height_and_app_hash(home):
    ex = new_executor(home)
    w = wallet(0)
    prev = bytes(32)
    for i in range(2):
        batch = Batch((w.kv_set(CHAIN, b"k%d" % i, b"v%d" % i),))
        block = build(ex, [batch], prev)
        execute(ex, block, [batch])
        prev = block.hash()
    info = ex.info()
    ex.close()
    close_storage(home)
    again = new_executor(home)
    assert again.info() == info
    assert again.app.get(b"k1") == b"v1"
    assert again.app.next_nonce(sha256(w.public_key)[:20]) == 2
    batch = Batch((w.kv_set(CHAIN, b"k2", b"v2"),))
    result = execute(again, build(again, [batch], prev), [batch])
    assert result[0] == 3 and result[3] == [CODE_OK]
    assert again.storage.tx(batch.tx_hashes()[0]) == TxRecord(3, 0, CODE_OK)


def test_txs_the_mempool_decoded_are_taken_not_decoded_again_with_the_same_result(tmp_path):
    # Two executors over two homes run the same two blocks: one finds every tx and batch
    # decoded by a mempool in this process (ADMITTED_TXS, ADMITTED_BATCHES), the other
    # decodes and hashes each one itself. Results and stores must be identical.
    from node.tx import ADMITTED_BATCHES, ADMITTED_TXS, decode_tx

    a, b = wallet(0), wallet(1)
    blocks = [[Batch((a.kv_set(CHAIN, b"x", b"1"), b.kv_set(CHAIN, b"y", b"2")))],
              [Batch((a.kv_set(CHAIN, b"x", b"3"), a.kv_set(CHAIN, b"x", b"4"))),
               Batch((b.kv_set(CHAIN, b"z", b"5"),))]]
    results, stores = {}, {}
    for kept in (True, False):
        home = str(tmp_path / f"kept-{kept}")
        ex = new_executor(home)
        prev, out = bytes(32), []
        for batches in blocks:
            raws = [raw for batch in batches for raw in batch.txs]
            ADMITTED_TXS.take(raws)                # none left over from elsewhere
            for batch in batches:
                ADMITTED_BATCHES.take(batch.digest(), batch.encode())
            if kept:
                ADMITTED_TXS.keep([(raw, decode_tx(raw)) for raw in raws])
                for batch in batches:
                    hashes, digest = batch.hashes_and_digest()
                    ADMITTED_BATCHES.keep(digest, batch.encode(), batch.txs, hashes)
            block = build(ex, batches, prev)
            out.append(execute(ex, block, batches))
            assert ADMITTED_TXS.take(raws) == [None] * len(raws)   # all taken
            assert all(ADMITTED_BATCHES.take(batch.digest(), batch.encode()) is None
                       for batch in batches)
            prev = block.hash()
        results[kept] = out
        stores[kept] = [ex.storage.block(h) for h in (1, 2)] + [
            ex.storage.tx(h) for batches in blocks for batch in batches
            for h in batch.tx_hashes()]
        close_storage(home)
    assert results[True] == results[False]
    assert stores[True] == stores[False]
    assert [r[3] for r in results[True]] == [[CODE_OK] * 2, [CODE_OK] * 3]


def test_a_kept_batch_is_used_only_for_the_very_bytes_it_was_kept_with(home):
    # The batch kept under the block's digest is not taken for other bytes handed over
    # under that digest: those are decoded and checked against the digest.
    from node.tx import ADMITTED_BATCHES

    a, b = wallet(0), wallet(1)
    batch = Batch((a.kv_set(CHAIN, b"x", b"1"),))
    other = Batch((b.kv_set(CHAIN, b"y", b"2"),))
    ex = new_executor(home)
    block = build(ex, [batch], bytes(32))
    hashes, digest = batch.hashes_and_digest()
    ADMITTED_BATCHES.keep(digest, batch.encode(), batch.txs, hashes)
    with pytest.raises(ValueError, match="content does not match"):
        execute(ex, block, [other])
    assert ex.info()[0] == 0
    ADMITTED_BATCHES.keep(digest, batch.encode(), batch.txs, hashes)
    result = execute(ex, block, [batch])
    assert result[2] == batch.tx_hashes() and result[3] == [CODE_OK]
    assert ex.app.get(b"x") == b"1" and ex.app.get(b"y") is None


def prepare(ex: Executor, block: Block, batches: Sequence[Batch]) -> bool:
    return ex.prepare(msgpack.packb([block.encode(),
                                     [[b.encode(), b"\x01" * len(b.txs)] for b in batches]]))


def _three_blocks() -> list[list[Batch]]:
    a, b = wallet(0), wallet(1)
    return [[Batch((a.kv_set(CHAIN, b"x", b"1"), b.kv_set(CHAIN, b"y", b"2")))],
            [],
            [Batch((a.kv_set(CHAIN, b"x", b"3"), a.kv_set(CHAIN, b"x", b"4"))),
             Batch((b.kv_set(CHAIN, b"z", b"5"),))]]


def test_a_block_prepared_ahead_of_its_decision_is_stored_exactly_as_executed(tmp_path):
    # Two homes run the same blocks: one applies each ahead of its decision (prepare),
    # the other only when decided. Results, app hashes and the stores must be identical.
    results, stores = {}, {}
    for ahead in (True, False):
        home = str(tmp_path / f"ahead-{ahead}")
        ex = new_executor(home)
        prev, out = bytes(32), []
        for batches in _three_blocks():
            block = build(ex, batches, prev)
            if ahead:
                committed = ex.info()
                assert prepare(ex, block, batches) is True
                assert prepare(ex, block, batches) is True          # once is enough
                assert ex.info() == committed                       # nothing stored yet
                assert ex.storage.latest_height() == committed[0]
            out.append(execute(ex, block, batches))
            prev = block.hash()
        results[ahead] = out
        stores[ahead] = [(ex.storage.block(h), ex.storage.last_app_hash()) for h in (1, 2, 3)]
        close_storage(home)
    assert results[True] == results[False]
    assert stores[True] == stores[False]


def test_another_block_decided_than_the_prepared_one_discards_it(home):
    ex = new_executor(home)
    prepared = [Batch((wallet(0).kv_set(CHAIN, b"x", b"prepared"),))]
    decided = [Batch((wallet(1).kv_set(CHAIN, b"y", b"decided"),))]
    assert prepare(ex, build(ex, prepared, bytes(32)), prepared) is True
    block = build(ex, decided, bytes(32))
    height, app_hash, hashes, codes, _ = execute(ex, block, decided)
    replica = make_app("kvstore", MemoryState())
    execute_block(replica, 1, list(decided[0].txs), chain_id=CHAIN, verify=None)
    assert (height, app_hash, codes) == (1, replica.app_hash(), [CODE_OK])
    assert ex.app.get(b"x") is None and ex.app.get(b"y") == b"decided"
    assert ex.storage.tx(prepared[0].tx_hashes()[0]) is None
    assert ex.storage.tx(hashes[0]) == TxRecord(1, 0, CODE_OK)


def test_a_prepare_that_is_not_the_next_block_is_ignored(home):
    ex = new_executor(home)
    batch = [Batch((wallet(0).kv_set(CHAIN, b"k", b"v"),))]
    block = build(ex, batch, bytes(32))
    forked = build(ex, batch, bytes(32), app_hash=sha256(b"another state"))
    later = replace(block, header=replace(block.header, height=2))
    assert prepare(ex, forked, batch) is False
    assert prepare(ex, later, batch) is False
    assert ex.info() == [0, make_app("kvstore", MemoryState()).genesis_app_hash()]
    # A forked block decided anyway still halts with the app-hash error.
    with pytest.raises(AppHashMismatch):
        execute(ex, forked, batch)
    assert execute(ex, block, batch)[3] == [CODE_OK]


def test_apply_decided_gives_the_app_hash_before_store_writes_the_block(home):
    ex = new_executor(home)
    batches = _three_blocks()[0]
    block = build(ex, batches, bytes(32))
    packed = msgpack.packb([block.encode(), certificate(block).encode(),
                            [[b.encode(), b"\x01" * len(b.txs)] for b in batches]])
    height, app_hash = msgpack.unpackb(ex.apply_decided(packed), raw=False)
    assert height == 1
    assert ex.storage.latest_height() == 0 and ex.info()[0] == 0
    # Nothing may be applied on top of a block that is not stored yet.
    assert prepare(ex, build(ex, [], block.hash()), []) is False
    with pytest.raises(ValueError, match="applied but not stored"):
        ex.apply_decided(packed)
    result = msgpack.unpackb(ex.store(), raw=False)
    assert result[:2] == [1, app_hash] and result[3] == [CODE_OK, CODE_OK]
    assert ex.storage.latest_height() == 1 and ex.storage.last_app_hash() == app_hash
    assert ex.info() == [1, app_hash]
    with pytest.raises(ValueError, match="no applied block"):
        ex.store()


def test_apply_decided_takes_a_prepared_block_without_its_batches(home):
    ex = new_executor(home)
    batches = _three_blocks()[0]
    block = build(ex, batches, bytes(32))
    cert = certificate(block).encode()
    other = [Batch((wallet(2).kv_set(CHAIN, b"o", b"x"),))]
    assert prepare(ex, build(ex, other, bytes(32)), other) is True
    # Not the prepared block: the executor says so, and asks for the batches.
    assert msgpack.unpackb(ex.apply_decided(msgpack.packb([block.encode(), cert, None])),
                           raw=False) is None
    assert ex.info()[0] == 0 and ex.app.get(b"o") is None
    assert prepare(ex, block, batches) is True
    height, app_hash = msgpack.unpackb(
        ex.apply_decided(msgpack.packb([block.encode(), cert, None])), raw=False)
    result = msgpack.unpackb(ex.store(), raw=False)
    assert result[:2] == [height, app_hash] == [1, ex.storage.last_app_hash()]
    assert result[3] == [CODE_OK, CODE_OK]
    assert ex.storage.batch(batches[0].digest()) == batches[0].encode()
