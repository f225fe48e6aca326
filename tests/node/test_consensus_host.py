"""ConsensusHost (node/actors/consensus_host.py) as a plain class: the real Engine, real
keys and the real LMDB safety store in a tmp home; inputs and outputs as packed records."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgpack
import pytest

from consensus.safety import MemorySafetyStore, SafetyRules
from consensus.types import (
    CONSENSUS_MESSAGES,
    Block,
    CommitCertificate,
    Proposal,
    Step,
    Vote,
    VoteKind,
)
from consensus.validators import ValidatorSet
from crypto import PrivateKey, save_private_key, sha256, verify_one
from node.actors.consensus_host import ConsensusHost, decode_safety_state
from node.actors.executor import Executor
from node.apps import MemoryState, make_app
from node.stores import close_storage, open_storage
from node.wire import decode_block, decode_certificate

CHAIN = "host-chain"
MAP_SIZE = 1 << 24
TIMEOUTS = dict(timeout_propose_ms=1000, timeout_prevote_ms=500, timeout_precommit_ms=500,
                delta_ms=250)
GENESIS_APP_HASH = make_app("kvstore", MemoryState()).genesis_app_hash()
KEYS = [PrivateKey.from_seed(bytes([70 + i]) * 32) for i in range(4)]
VSET4 = ValidatorSet.equal_power([k.public_key for k in KEYS])
D1, D2, D3 = (sha256(b"batch %d" % i) for i in range(1, 4))


class Home:
    """A node home: its key file and data dir (the LMDB store is closed at teardown)."""

    def __init__(self, root: Path, key: PrivateKey, validators: Sequence[PrivateKey]) -> None:
        self.key = key
        self.key_path = str(root / "node_key.json")
        save_private_key(key, self.key_path)
        self.data = str(root / "data")
        self.validators = [(k.public_key, 1) for k in validators]
        self.vset = ValidatorSet.equal_power([k.public_key for k in validators])

    def host(self, *, max_block_batches: int = 16, block_interval_ms: int = 0,
             empty_block_interval_ms: int = 0, max_block_txs: int = 0) -> ConsensusHost:
        return ConsensusHost(self.data, self.key_path, CHAIN, self.validators, TIMEOUTS,
                             max_block_batches, MAP_SIZE, GENESIS_APP_HASH,
                             block_interval_ms, empty_block_interval_ms,
                             max_block_txs=max_block_txs)

    def crash(self) -> None:
        """What a restart leaves: only what LMDB holds."""
        close_storage(self.data)


@pytest.fixture
def solo(tmp_path) -> Iterator[Home]:
    home = Home(tmp_path, KEYS[0], KEYS[:1])
    yield home
    home.crash()


def outputs(packed: bytes) -> list[list]:
    return msgpack.unpackb(packed, raw=False)


def handle(host: ConsensusHost, *records: list) -> list[list]:
    return outputs(host.handle(msgpack.packb(list(records))))


def sent(outs: list[list]) -> list[Proposal | Vote]:
    return [CONSENSUS_MESSAGES.decode(o[1]) for o in outs if o[0] == "broadcast"]


def decided(outs: list[list]) -> list[tuple[Block, CommitCertificate]]:
    return [(decode_block(o[1]), decode_certificate(o[2])) for o in outs if o[0] == "decide"]


def kinds(outs: list[list]) -> list[str]:
    return [o[0] for o in outs]


def describe(msg: Proposal | Vote) -> tuple:
    if isinstance(msg, Proposal):
        return ("proposal", msg.height, msg.round, msg.block.hash())
    return (msg.kind.name.lower(), msg.height, msg.round, msg.block_hash)


# --- one validator -----------------------------------------------------------------------


def test_start_proposes_votes_and_decides(solo):
    host = solo.host()
    outs = outputs(host.start())
    msgs = sent(outs)
    block = msgs[0].block
    bh = block.hash()
    assert [describe(m) for m in msgs] == [("proposal", 1, 0, bh), ("prevote", 1, 0, bh),
                                           ("precommit", 1, 0, bh)]
    for m in msgs:
        signer = m.proposer if isinstance(m, Proposal) else m.validator
        assert signer == KEYS[0].public_key
        assert verify_one(signer, m.sign_bytes(CHAIN), m.signature)
    assert ["timeout", 1, 0, int(Step.PROPOSE), 1000] in outs
    [(decided_block, cert)] = decided(outs)
    assert decided_block == block
    assert block.header.app_hash == GENESIS_APP_HASH and block.payload == ()
    assert block.header.prev_block_hash == bytes(32)
    assert block.header.validators_hash == solo.vset.hash()
    cert.verify(CHAIN, solo.vset)
    assert host.decided_raw(1) == [block.encode(), cert.encode()]
    # Height 2 waits for the executor: its block must carry the app hash after block 1.
    assert host.status()[:3] == [2, 0, int(Step.PROPOSE)]
    assert "broadcast" not in kinds(outputs(host.handle(msgpack.packb([["ready"]]))))
    app_hash_1 = sha256(b"state after block 1")
    outs = handle(host, ["executed", 1, app_hash_1])
    [(block2, _)] = decided(outs)
    assert block2.header.height == 2 and block2.header.app_hash == app_hash_1
    assert block2.header.prev_block_hash == bh


def test_batches_make_the_next_proposal_include_their_digests(solo):
    host = solo.host(max_block_batches=2, empty_block_interval_ms=60_000)
    outs = outputs(host.start())
    assert kinds(outs)[0] == "wake" and "broadcast" not in kinds(outs)
    outs = handle(host, ["batches", [D1, D2, D3]])
    [(block, _)] = decided(outs)
    assert block.payload == (D1, D2)  # at most max_block_batches, oldest first
    outs = handle(host, ["executed", 1, sha256(b"s1")])
    [(block2, _)] = decided(outs)
    assert block2.payload == (D3,)
    # Committed digests are never proposed again, even if announced again.
    outs = handle(host, ["batches", [D1]], ["executed", 2, sha256(b"s2")])
    assert decided(outs) == [] and kinds(outs)[0] == "wake"


def test_proposals_stop_before_max_block_txs_and_a_larger_batch_goes_alone(solo):
    host = solo.host(max_block_txs=10, empty_block_interval_ms=60_000)
    outputs(host.start())
    D4 = sha256(b"batch 4")
    outs = handle(host, ["batches", [D1, D2, D3, D4], True, [6, 4, 5, 30]])
    [(block, _)] = decided(outs)
    assert block.payload == (D1, D2)          # 6 + 4 = 10; D3 would make 15
    outs = handle(host, ["executed", 1, sha256(b"s1")])
    [(block2, _)] = decided(outs)
    assert block2.payload == (D3,)            # 5 + 30 > 10
    outs = handle(host, ["executed", 2, sha256(b"s2")])
    [(block3, _)] = decided(outs)
    assert block3.payload == (D4,)            # over the cap on its own: still proposed


def test_an_idle_chain_asks_for_a_wake_instead_of_proposing_empty_blocks(solo):
    host = solo.host(empty_block_interval_ms=60_000)
    outs = outputs(host.start())
    assert outs[0][0] == "wake" and 59_000 < outs[0][1] <= 60_000
    assert sent(outs) == []
    outs = handle(host, ["ready"])  # too early: still nothing to propose
    assert kinds(outs) == ["wake"] and sent(outs) == []
    assert host.status()[:3] == [1, 0, int(Step.PROPOSE)]


def test_block_interval_paces_proposals_then_ready_proposes(solo):
    host = solo.host(block_interval_ms=40)
    outs = outputs(host.start())
    assert outs[0][0] == "wake" and 0 < outs[0][1] <= 40
    assert sent(outs) == []
    time.sleep(0.05)
    outs = handle(host, ["ready"])
    assert len(decided(outs)) == 1 and "wake" not in kinds(outs)
    # Just committed: the next block waits its interval again.
    outs = handle(host, ["executed", 1, sha256(b"s1")])
    assert kinds(outs) == ["wake"]


def test_restart_after_the_block_was_stored_resumes_at_the_next_height(solo):
    host = solo.host()
    [(block, cert)] = decided(outputs(host.start()))
    executor = Executor(solo.data, CHAIN, "kvstore", {}, MAP_SIZE, sync=False)
    app_hash_1 = msgpack.unpackb(executor.execute(msgpack.packb(
        [block.encode(), cert.encode(), []])), raw=False)[1]
    solo.crash()
    again = solo.host()
    assert again.status()[0] == 2
    outs = outputs(again.start())
    [(block2, cert2)] = decided(outs)
    assert block2.header.height == 2
    assert block2.header.prev_block_hash == block.hash()
    assert block2.header.app_hash == app_hash_1
    cert2.verify(CHAIN, solo.vset)


class SignedLog:
    """Everything a validator sent, across its lives, keyed by (kind, height, round)."""

    def __init__(self) -> None:
        self.first: dict[tuple, Proposal | Vote] = {}

    def add(self, outs: list[list]) -> list[Proposal | Vote]:
        msgs = sent(outs)
        for m in msgs:
            key = describe(m)[:3]
            # Never two different signed messages for one (height, round, step): only the
            # very same one (same bytes, same signature) may go out again.
            assert self.first.setdefault(key, m) == m, f"conflicting {key}"
        return msgs


def test_restart_mid_height_never_signs_a_conflicting_message(solo):
    log = SignedLog()
    log.add(outputs(solo.host().start()))
    assert set(log.first) == {("proposal", 1, 0), ("prevote", 1, 0), ("precommit", 1, 0)}
    # Crash after precommitting, before the executor stored block 1. The safety state
    # that let the precommit out is on disk.
    solo.crash()
    state = decode_safety_state(open_storage(solo.data, map_size=MAP_SIZE).load_safety())
    assert (state.height, state.round, state.step) == (1, 0, Step.PRECOMMIT)
    again = solo.host()
    log.add(outputs(again.start()))
    # Its timeouts fire; the proposal it made in round 0 (whose block it no longer has)
    # cannot be signed again with other content.
    for round_step in [(0, Step.PROPOSE), (0, Step.PREVOTE), (0, Step.PRECOMMIT)] * 2:
        log.add(handle(again, ["timeout", 1, *round_step]))
    state = decode_safety_state(again.storage.load_safety())
    assert (state.height, state.round, state.step) >= (1, 0, Step.PRECOMMIT)


def test_a_restarted_node_catches_up_from_a_certified_block(solo):
    host = solo.host()
    [(block, cert)] = decided(outputs(host.start()))
    solo.crash()
    again = solo.host()
    # However much of height 1 the engine recovers from its own records, the certificate
    # settles it; then the chain goes on.
    outs = outputs(again.start())
    outs += handle(again, ["certified", block.encode(), cert.encode()],
                   ["executed", 1, sha256(b"s1")])
    decisions = decided(outs)
    assert [b.header.height for b, _ in decisions] == [1, 2]
    assert decisions[0][0] == block


# --- four validators, this node not the proposer -----------------------------------------


@pytest.fixture
def four(tmp_path) -> Iterator[tuple[Home, PrivateKey]]:
    proposer_pk = VSET4.proposer(1, 0)
    proposer = next(k for k in KEYS if k.public_key == proposer_pk)
    me = next(k for k in KEYS if k is not proposer)
    home = Home(tmp_path, me, KEYS)
    yield home, proposer
    home.crash()


def proposal(proposer: PrivateKey, payload: Sequence[bytes], app_hash: bytes = GENESIS_APP_HASH,
             round: int = 0, time_ms: int = 1_000) -> Proposal:
    block = Block.build(chain_id=CHAIN, height=1, time_ms=time_ms, prev_block_hash=bytes(32),
                        payload=payload, app_hash=app_hash, validators_hash=VSET4.hash(),
                        proposer=proposer.public_key)
    rules = SafetyRules(proposer, MemorySafetyStore(), CHAIN)
    return rules.sign_proposal(Proposal(1, round, -1, block, proposer.public_key))


def vote(key: PrivateKey, kind: VoteKind, block_hash: bytes | None) -> Vote:
    return SafetyRules(key, MemorySafetyStore(), CHAIN).sign_vote(
        Vote(kind, 1, 0, block_hash, key.public_key))


def test_unknown_batch_is_fetched_then_the_engine_prevotes_and_decides(four):
    home, proposer = four
    host = home.host()
    outs = outputs(host.start())
    assert sent(outs) == []  # not our turn to propose
    p = proposal(proposer, [D1, D2])
    handle(host, ["batches", [D2]])
    outs = handle(host, ["msg", p.encode()])
    assert ["fetch", [D1], proposer.public_key] in outs
    assert sent(outs) == []  # no prevote for a block whose payload we cannot check
    outs = handle(host, ["batches", [D1]])
    [prevote] = sent(outs)
    bh = p.block.hash()
    assert describe(prevote) == ("prevote", 1, 0, bh)
    assert prevote.validator == home.key.public_key
    assert verify_one(prevote.validator, prevote.sign_bytes(CHAIN), prevote.signature)
    others = [k for k in KEYS if k is not home.key]
    outs = handle(host, *[["msg", vote(k, VoteKind.PREVOTE, bh).encode()] for k in others[:2]])
    assert [describe(m) for m in sent(outs)] == [("precommit", 1, 0, bh)]
    outs = handle(host, *[["msg", vote(k, VoteKind.PRECOMMIT, bh).encode()] for k in others[:2]])
    [(block, cert)] = decided(outs)
    assert block == p.block and len(cert.signatures) == 3
    cert.verify(CHAIN, VSET4)


def test_a_proposal_on_another_app_hash_gets_a_nil_prevote(four):
    home, proposer = four
    host = home.host()
    outputs(host.start())
    handle(host, ["batches", [D1]])
    outs = handle(host, ["msg", proposal(proposer, [D1], app_hash=sha256(b"fork")).encode()])
    assert [describe(m) for m in sent(outs)] == [("prevote", 1, 0, None)]
    assert "prepare" not in kinds(outs)   # nothing to apply ahead of a decision


def test_a_prevoted_block_is_handed_out_once_for_optimistic_execution(four):
    home, proposer = four
    host = home.host()
    outputs(host.start())
    p = proposal(proposer, [D1])
    outs = handle(host, ["msg", p.encode()])
    assert "prepare" not in kinds(outs)    # its batch is missing: no prevote yet
    outs = handle(host, ["batches", [D1]])
    assert [describe(m) for m in sent(outs)] == [("prevote", 1, 0, p.block.hash())]
    # After the vote has gone out, and only once.
    assert kinds(outs)[-1] == "prepare" and outs[-1][1] == p.block.encode()
    others = [k for k in KEYS if k is not home.key]
    outs = handle(host, *[["msg", vote(k, VoteKind.PREVOTE, p.block.hash()).encode()]
                          for k in others[:2]])
    assert [describe(m) for m in sent(outs)] == [("precommit", 1, 0, p.block.hash())]
    assert "prepare" not in kinds(outs)


def test_the_proposer_hands_out_its_own_block(tmp_path):
    proposer = next(k for k in KEYS if k.public_key == VSET4.proposer(1, 0))
    home = Home(tmp_path, proposer, KEYS)
    try:
        outs = outputs(home.host().start())
        [own] = [m for m in sent(outs) if isinstance(m, Proposal)]
        assert ["prepare", own.block.encode()] in outs
        assert len([o for o in outs if o[0] == "prepare"]) == 1
    finally:
        home.crash()


def test_a_call_that_signs_twice_saves_once_before_returning(tmp_path):
    # The proposer signs its proposal and its own prevote in one call: one fsync.
    proposer = next(k for k in KEYS if k.public_key == VSET4.proposer(1, 0))
    home = Home(tmp_path, proposer, KEYS)
    try:
        host = home.host()
        saved = []
        store = host.signer._store
        real_save = store.save
        store.save = lambda state: (saved.append(state), real_save(state))
        outs = outputs(host.start())
        assert [describe(m)[0] for m in sent(outs)] == ["proposal", "prevote"]
        assert len(saved) == 1
        durable = decode_safety_state(host.storage.load_safety())
        prevote = sent(outs)[1]
        assert durable.step is Step.PREVOTE and durable.signature == prevote.signature
    finally:
        home.crash()


def test_garbage_from_a_peer_is_counted_not_raised(four):
    home, _ = four
    host = home.host()
    outputs(host.start())
    assert handle(host, ["msg", b"\xc1garbage"]) == []
    rejected = host.status()[3]
    assert sum(rejected.values()) == 1 and next(iter(rejected)).startswith("malformed")
    with pytest.raises(ValueError, match="unknown consensus host input 'bogus'"):
        handle(host, ["bogus"])


def test_restart_never_prevotes_for_an_equivocating_proposers_other_block(four):
    home, proposer = four
    log = SignedLog()
    host = home.host()
    log.add(outputs(host.start()))
    handle(host, ["batches", [D1, D2]])
    a = proposal(proposer, [D1])
    [prevote_a] = log.add(handle(host, ["msg", a.encode()]))
    assert describe(prevote_a) == ("prevote", 1, 0, a.block.hash())
    home.crash()
    # The proposer equivocates: another valid block at the same (height, round), shown
    # to the restarted validator first.
    b = proposal(proposer, [D2], time_ms=2_000)
    again = home.host()
    log.add(outputs(again.start()))
    log.add(handle(again, ["batches", [D1, D2]]))
    log.add(handle(again, ["msg", b.encode()]))
    log.add(handle(again, ["msg", a.encode()]))
    assert log.first[("prevote", 1, 0)] == prevote_a
    # Its round-0 timeouts may move it on to nil votes and later rounds, never to B in round 0.
    log.add(handle(again, ["timeout", 1, 0, int(Step.PROPOSE)]))
    log.add(handle(again, ["timeout", 1, 0, int(Step.PREVOTE)]))
    assert log.first[("prevote", 1, 0)] == prevote_a


def test_a_garbage_or_forged_certified_block_from_sync_is_dropped(four):
    home, proposer = four
    host = home.host()
    outputs(host.start())
    p = proposal(proposer, [D1])
    # Bytes that are no block: a peer's BlockSyncResponse carries them unchecked.
    assert handle(host, ["certified", b"\xc1garbage", b"\x90"]) == []
    assert handle(host, ["certified", p.block.encode(), b"not a certificate"]) == []
    # A well-formed certificate with too few signatures decides nothing.
    short = CommitCertificate(1, 0, p.block.hash(),
                              ((proposer.public_key, vote(proposer, VoteKind.PRECOMMIT,
                                                          p.block.hash()).signature),))
    assert decided(handle(host, ["certified", p.block.encode(), short.encode()])) == []
    assert host.status()[0] == 1
    assert sum(host.status()[3].values()) == 2
    # A real one still goes through afterwards.
    bh = p.block.hash()
    signers = KEYS[:3]
    cert = CommitCertificate(1, 0, bh, tuple(
        (k.public_key, vote(k, VoteKind.PRECOMMIT, bh).signature)
        for k in sorted(signers, key=lambda k: VSET4.index_of(k.public_key))))
    [(block, _)] = decided(handle(host, ["certified", p.block.encode(), cert.encode()]))
    assert block == p.block
