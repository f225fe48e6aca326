"""BlockStore (node/actors/blockstore.py) as a plain class: blocks written by a real
Executor into a real LMDB home, read back as JSON, tx lookups, finality receipts checked
offline with node.client against 4 real validator keys, and block-sync packing."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import msgpack
import pytest

from consensus.errors import InvalidMessage
from consensus.types import Block, CommitCertificate, VoteKind, vote_sign_bytes
from consensus.validators import ValidatorSet
from crypto import PrivateKey
from node.actors.blockstore import BlockStore
from node.actors.executor import Executor
from node.apps import CODE_BAD_SIGNATURE, CODE_OK
from node.client import verify_block, verify_receipt
from node.stores import close_storage
from node.tx import Batch, decode_batch
from node.wallet import Wallet
from node.wire import decode_block, decode_certificate

CHAIN = "store-chain"
KEYS = [PrivateKey.from_seed(bytes([50 + i]) * 32) for i in range(4)]
VSET = ValidatorSet.equal_power([k.public_key for k in KEYS])
MAP_SIZE = 1 << 24


def certificate(block: Block, signers: Sequence[PrivateKey] = KEYS, round: int = 1,
                chain_id: str = CHAIN) -> CommitCertificate:
    sb = vote_sign_bytes(VoteKind.PRECOMMIT, chain_id, block.height, round, block.hash())
    return CommitCertificate(block.height, round, block.hash(),
                             tuple((k.public_key, k.sign(sb)) for k in signers))


class Chain:
    """Two committed blocks: block 1 with one batch, block 2 with two (one bad signature)."""

    def __init__(self, home: str) -> None:
        ex = Executor(home, CHAIN, "kvstore", {}, MAP_SIZE, sync=False)
        a, b = Wallet.from_seed(b"\x01" * 32), Wallet.from_seed(b"\x02" * 32)
        self.batches = [
            [Batch(tuple(a.kv_set(CHAIN, b"a%d" % i, b"x") for i in range(3)))],
            [Batch((b.kv_set(CHAIN, b"b", b"y"),)),
             Batch(tuple(a.kv_set(CHAIN, b"c%d" % i, b"z") for i in range(5)))],
        ]
        verdicts = [[b"\x01\x01\x01"], [b"\x00", b"\x01" * 5]]
        self.blocks: list[Block] = []
        self.certs: list[CommitCertificate] = []
        self.app_hashes: list[bytes] = []
        prev = bytes(32)
        for height, (batches, vs) in enumerate(zip(self.batches, verdicts, strict=True), 1):
            block = Block.build(chain_id=CHAIN, height=height, time_ms=1_700_000_000_000 + height,
                                prev_block_hash=prev, payload=[x.digest() for x in batches],
                                app_hash=ex.info()[1], validators_hash=VSET.hash(),
                                proposer=KEYS[height % 4].public_key)
            cert = certificate(block)
            result = msgpack.unpackb(ex.execute(msgpack.packb(
                [block.encode(), cert.encode(),
                 [[x.encode(), v] for x, v in zip(batches, vs, strict=True)]])), raw=False)
            self.blocks.append(block)
            self.certs.append(cert)
            self.app_hashes.append(result[1])
            prev = block.hash()


@pytest.fixture
def home(tmp_path) -> Iterator[str]:
    path = str(tmp_path / "home")
    yield path
    close_storage(path)


@pytest.fixture
def chain(home) -> Chain:
    return Chain(home)


def test_an_empty_store_answers_nothing(home):
    store = BlockStore(home, MAP_SIZE)
    assert store.latest() == [0, b"", b""]
    assert store.block_json(None) is None and store.block_json(1) is None
    assert store.block_raw(1) is None
    assert store.tx(bytes(32)) is None and store.receipt(bytes(32)) is None
    assert msgpack.unpackb(store.sync_blocks(1, 16), raw=False) == []


def test_latest_and_block_raw(chain, home):
    store = BlockStore(home, MAP_SIZE)
    assert store.latest() == [2, chain.blocks[1].hash(), chain.app_hashes[1]]
    block_bytes, cert_bytes = store.block_raw(1)
    assert decode_block(block_bytes) == chain.blocks[0]
    assert decode_certificate(cert_bytes) == chain.certs[0]


def test_block_json_shape_and_contents(chain, home):
    store = BlockStore(home, MAP_SIZE)
    doc = store.block_json(2)
    block, cert = chain.blocks[1], chain.certs[1]
    assert set(doc) == {"header", "block_hash", "payload", "tx_hashes", "evidence", "commit"}
    assert doc["evidence"] == []
    h = block.header
    assert doc["header"] == {
        "chain_id": CHAIN, "height": 2, "time_ms": h.time_ms,
        "prev_block_hash": chain.blocks[0].hash().hex(), "payload_digest": h.payload_digest.hex(),
        "app_hash": chain.app_hashes[0].hex(), "validators_hash": VSET.hash().hex(),
        "proposer": KEYS[2].public_key.hex(),
    }
    assert doc["block_hash"] == block.hash().hex()
    assert doc["payload"] == [b.digest().hex() for b in chain.batches[1]]
    # Every tx of the block in order, the one with a bad signature included.
    assert doc["tx_hashes"] == [x.hex() for b in chain.batches[1] for x in b.tx_hashes()]
    assert doc["commit"] == {
        "height": 2, "round": 1, "block_hash": block.hash().hex(),
        "signatures": [{"validator": pk.hex(), "signature": sig.hex()}
                       for pk, sig in cert.signatures],
    }
    assert store.block_json(None) == doc
    assert store.block_json(3) is None
    verify_block(doc, VSET, CHAIN)  # what a client does with GET /v1/blocks/2


def test_tx_lookup(chain, home):
    store = BlockStore(home, MAP_SIZE)
    first, second = chain.batches[1]
    assert store.tx(first.tx_hashes()[0]) == [2, 0, CODE_BAD_SIGNATURE]
    assert store.tx(second.tx_hashes()[4]) == [2, 5, CODE_OK]
    assert store.tx(chain.batches[0][0].tx_hashes()[2]) == [1, 2, CODE_OK]
    assert store.tx(b"\x07" * 32) is None


def test_receipt_verifies_offline_against_the_validator_set(chain, home):
    store = BlockStore(home, MAP_SIZE)
    tx = chain.batches[1][1].tx_hashes()[3]
    receipt = store.receipt(tx)
    assert receipt["height"] == 2 and receipt["index"] == 4 and receipt["batch_index"] == 1
    assert verify_receipt(receipt, VSET, CHAIN) == {"tx_hash": tx.hex(), "height": 2,
                                                    "code": CODE_OK}
    single = store.receipt(chain.batches[0][0].tx_hashes()[0])
    assert verify_receipt(single, VSET, CHAIN)["height"] == 1
    assert store.receipt(b"\x07" * 32) is None


def _tampered(receipt: dict, **changes) -> dict:
    r = copy.deepcopy(receipt)
    for key, value in changes.items():
        if key == "signatures":
            r["commit"]["signatures"] = value
        elif key == "app_hash":
            r["header"]["app_hash"] = value
        else:
            r[key] = value
    return r


def test_a_tampered_or_under_signed_receipt_is_refused(chain, home):
    store = BlockStore(home, MAP_SIZE)
    first, second = chain.batches[1]
    receipt = store.receipt(second.tx_hashes()[3])
    sigs = receipt["commit"]["signatures"]
    cases = [
        (_tampered(receipt, tx_hash=second.tx_hashes()[2].hex()), "not in the named batch"),
        (_tampered(receipt, tx_hash=first.tx_hashes()[0].hex()), "not in the named batch"),
        (_tampered(receipt, batch_index=2), "outside the block payload"),
        (_tampered(receipt, app_hash="00" * 32), "for another block"),
        (_tampered(receipt, signatures=sigs[:2]), "needs 3"),
        (_tampered(receipt, signatures=sigs[:2] + [dict(sigs[2], signature="00" * 64)]),
         "invalid"),
    ]
    for bad, reason in cases:
        with pytest.raises(InvalidMessage, match=reason):
            verify_receipt(bad, VSET, CHAIN)
    with pytest.raises(InvalidMessage, match="not-this-chain"):
        verify_receipt(receipt, VSET, "not-this-chain")
    strangers = ValidatorSet.equal_power([PrivateKey.from_seed(bytes([9 + i]) * 32).public_key
                                          for i in range(4)])
    with pytest.raises(InvalidMessage, match="not a member"):
        verify_receipt(receipt, strangers, CHAIN)


def test_sync_blocks_packs_certified_blocks_with_their_batches(chain, home):
    store = BlockStore(home, MAP_SIZE)
    packed = msgpack.unpackb(store.sync_blocks(1, 16), raw=False)
    assert len(packed) == 2
    for (block_bytes, cert_bytes, batches), block, cert, expected in zip(
            packed, chain.blocks, chain.certs, chain.batches, strict=True):
        assert decode_block(block_bytes) == block
        assert decode_certificate(cert_bytes) == cert
        assert batches == [b.encode() for b in expected]
        assert [decode_batch(b).digest() for b in batches] == list(block.payload)
        cert.verify(CHAIN, VSET)
    assert len(msgpack.unpackb(store.sync_blocks(2, 1), raw=False)) == 1
    assert msgpack.unpackb(store.sync_blocks(1, 1), raw=False)[0][0] == chain.blocks[0].encode()
    assert msgpack.unpackb(store.sync_blocks(3, 4), raw=False) == []


def test_get_batches_answers_committed_batches_by_digest(chain, home):
    store = BlockStore(home, MAP_SIZE)
    wanted = [chain.batches[1][1].digest(), bytes(32), chain.batches[0][0].digest()]
    assert store.get_batches(wanted) == [
        chain.batches[1][1].encode(), None, chain.batches[0][0].encode()]


def test_sync_blocks_fit_in_the_byte_budget(chain, home):
    store = BlockStore(home, MAP_SIZE)
    whole = msgpack.unpackb(store.sync_blocks(1, 16), raw=False)
    sizes = [len(b) + len(c) + sum(len(x) for x in bs) for b, c, bs in whole]
    # Room for block 1 only: block 2 waits for the next request.
    packed = msgpack.unpackb(store.sync_blocks(1, 16, max_bytes=sizes[0] + 100), raw=False)
    assert [p[0] for p in packed] == [whole[0][0]]
    # Block 2 alone does not fit with both batches: it comes with the first only.
    first_batch = len(whole[1][2][0])
    budget = len(whole[1][0]) + len(whole[1][1]) + first_batch + 64
    packed = msgpack.unpackb(store.sync_blocks(2, 16, max_bytes=budget), raw=False)
    assert len(packed) == 1 and packed[0][:2] == whole[1][:2]
    assert packed[0][2] == whole[1][2][:1]
    assert len(msgpack.unpackb(store.sync_blocks(1, 16, max_bytes=1), raw=False)[0][2]) == 0
