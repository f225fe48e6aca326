"""Heights: buffering future messages, SyncNeeded, certified-block sync, restarts."""

from __future__ import annotations

import dataclasses

from consensus_harness import (
    CHAIN,
    Net,
    Solo,
    make_block,
    sent,
    sent_votes,
    signed_proposal,
    signed_vote,
)

from consensus import (
    Broadcast,
    Decide,
    Engine,
    MemorySafetyStore,
    SafetyRules,
    Step,
    SyncNeeded,
    Vote,
    VoteKind,
)
from crypto import sha256, verify_one

PV, PC = VoteKind.PREVOTE, VoteKind.PRECOMMIT


def sync_needed(outs) -> list[tuple[int, bytes]]:
    return [(o.height, o.from_validator) for o in outs if isinstance(o, SyncNeeded)]


def test_messages_for_the_next_height_are_buffered_and_replayed():
    s = Solo()
    s.start()
    b1 = s.block(b"one", proposer=1)
    b2 = make_block(s.vset, s.pks[2], height=2, tag=b"two", prev=b1.hash())
    assert s.vset.proposer_index(2, 0) == 2
    early = [signed_proposal(s.keys[2], 2, 0, b2)] + [
        signed_vote(s.keys[i], PV, 2, 0, b2.hash()) for i in (1, 3)]
    for msg in early:
        assert s.feed(msg) == []                           # one height ahead: no sync yet
    s.propose(0, b1)
    s.votes(PV, 0, b1.hash(), [1, 2])
    outs = s.votes(PC, 0, b1.hash(), [1, 2])
    assert [o.block for o in outs if isinstance(o, Decide)] == [b1]
    # height 2 started and the buffered proposal and prevotes were replayed at once
    assert sent_votes(outs, PV) == [(2, 0, b2.hash())]
    assert sent_votes(outs, PC) == [(2, 0, b2.hash())]
    assert s.engine.locked_block_hash == b2.hash()


def test_buffered_messages_are_verified_once():
    calls = []

    def verify(pk, msg, sig):
        calls.append(msg)
        return verify_one(pk, msg, sig)

    s = Solo(verify=verify)
    s.start()
    s.feed(signed_vote(s.keys[1], PV, 2, 0, None))
    s.feed(signed_vote(s.keys[1], PV, 2, 0, None))        # duplicate: not verified again
    assert len(calls) == 1
    s.feed(signed_vote(s.keys[1], PV, 2, 0, None).with_signature(bytes(64)))
    assert s.engine.rejected["bad_signature"] == 0 and s.engine.ignored["duplicate"] == 2


def test_sync_needed_at_once_when_two_heights_behind_and_once_per_validator():
    s = Solo()
    s.start()
    outs = s.feed(signed_vote(s.keys[1], PV, 3, 0, None))
    assert sync_needed(outs) == [(3, s.pks[1])]
    assert sync_needed(s.feed(signed_vote(s.keys[1], PC, 3, 0, None))) == []
    assert sync_needed(s.feed(signed_vote(s.keys[1], PV, 9, 0, None))) == []   # far, same validator
    forged = signed_vote(s.keys[2], PV, 9, 0, None).with_signature(bytes(64))
    assert sync_needed(s.feed(forged)) == [] and s.engine.rejected["bad_signature"] == 1


def test_sync_needed_after_a_timeout_when_one_height_behind():
    s = Solo()
    s.start()
    s.feed(signed_vote(s.keys[2], PV, 2, 0, None))
    s.feed(signed_vote(s.keys[3], PV, 2, 0, None))
    assert sync_needed(s.log) == []
    first = sync_needed(s.timeout(0, Step.PROPOSE))
    second = sync_needed(s.timeout(0, Step.PROPOSE))
    third = sync_needed(s.timeout(0, Step.PROPOSE))
    assert set(first + second) == {(2, s.pks[2]), (2, s.pks[3])}      # each in turn
    assert len(third) == 1                                             # then again
    # a stale timeout of an old height asks nothing
    assert s.engine.on_timeout(0, 0, Step.PROPOSE) == []


def run_net(height: int) -> Net:
    net = Net(4)
    net.start()
    net.run(height)
    return net


def test_certified_blocks_bring_a_fresh_engine_up_to_date():
    net = run_net(5)
    fresh = Solo(me=3)
    fresh.start()
    for h in range(1, 5):
        block, cert = net.engines[0].decided(h)
        outs = fresh.engine.on_certified_block(block, cert)
        assert [o.block for o in outs if isinstance(o, Decide)] == [block]
    assert fresh.engine.height == 5
    assert fresh.engine.prev_block_hash == net.engines[0].decided(4)[0].hash()
    assert fresh.engine.decided(4) == net.engines[0].decided(4)


def test_certified_block_checks():
    net = run_net(3)
    (b1, c1), (b2, c2) = net.engines[1].decided(1), net.engines[1].decided(2)
    e = Solo(me=0).engine
    e.start()
    assert e.on_certified_block(b2, c2) == [] and e.ignored["certified_block_ahead"] == 1
    sigs = list(c1.signatures)
    forged = dataclasses.replace(c1, signatures=(*sigs[:-1], (sigs[-1][0], sigs[0][1])))
    assert e.on_certified_block(b1, forged) == [] and e.rejected["invalid_certificate"] == 1
    short = dataclasses.replace(c1, signatures=tuple(sigs[:2]))
    assert e.on_certified_block(b1, short) == [] and e.rejected["invalid_certificate"] == 2
    assert e.on_certified_block(b1, c2) == [] and e.rejected["certified_block_mismatch"] == 1
    assert e.on_certified_block(b1, "cert") == []  # type: ignore[arg-type]
    assert e.rejected["malformed_certified_block"] == 1
    assert e.height == 1
    assert any(isinstance(o, Decide) for o in e.on_certified_block(b1, c1))
    assert e.on_certified_block(b1, c1) == [] and e.ignored["certified_block_old"] == 1
    # a certificate that is valid but for a block on another branch is refused too
    other = Solo(me=0, height=2, prev=sha256(b"elsewhere")).engine
    assert other.on_certified_block(b2, c2) == [] and other.rejected["certified_block_mismatch"] == 1


def test_a_partitioned_validator_catches_up_by_sync():
    net = Net(4)
    net.drop = lambda src, dst, msg: 3 in (src, dst)
    net.start()
    net.run(6, nodes=[0, 1, 2])
    assert net.engines[3].height == 1
    net.drop = None
    net.run(9)
    assert any(isinstance(o, SyncNeeded) for o in net.log[3])
    assert [b.hash() for b in net.decided[3][:7]] == [b.hash() for b in net.decided[0][:7]]


def test_restarted_validator_resumes_without_double_signing():
    net = Net(4)
    net.start()
    net.run(3)
    for _ in range(6):                      # part of height 3 happens
        net.deliver_one()
    h, prev = net.engines[2].height, net.engines[2].prev_block_hash
    state = net.stores[2].load()
    net.engines[2] = net.new_engine(2, height=h, prev=prev)   # crash + restart, same store
    net.handle(2, net.engines[2].start())
    assert net.engines[2].round == (state.round if state.height == h else 0)
    net.run(7)
    for i in range(4):
        assert [b.hash() for b in net.decided[i][:6]] == [b.hash() for b in net.decided[0][:6]]
    signed: dict[tuple, bytes] = {}
    for o in net.log[2]:
        if isinstance(o, Broadcast) and isinstance(o.message, Vote) and o.message.validator == net.keys[2].public_key:
            v = o.message
            key = (v.kind, v.height, v.round)
            assert signed.setdefault(key, v.block_hash) == v.block_hash


def test_restart_resumes_the_round_with_its_lock_and_resends_its_votes():
    s = Solo()
    s.start()
    b = s.block()
    s.propose(0, b)
    s.votes(PV, 0, b.hash(), [1, 2])        # locked on b at round 0, precommit b
    s.votes(PC, 0, None, [1, 2])
    s.timeout(0, Step.PRECOMMIT)            # round 1: nothing signed there yet
    assert s.engine.round == 1 and s.engine.locked_round == 0
    restarted = Engine(CHAIN, s.vset, SafetyRules(s.keys[0], s.store, CHAIN), s.source, height=1)
    outs = restarted.start()
    # Round 0 was left by OnTimeoutPrecommit: carry on in round 1, as before the crash.
    assert (restarted.round, restarted.step) == (1, Step.PROPOSE)
    assert (restarted.locked_round, restarted.locked_block_hash) == (0, b.hash())
    assert sent_votes(outs, PV) == [(1, 0, b.hash())]
    assert sent_votes(outs, PC) == [(1, 0, b.hash())]
    other = make_block(s.vset, s.pks[2], tag=b"other")
    outs = restarted.on_message(signed_proposal(s.keys[2], 1, 1, other))
    assert sent_votes(outs, PV) == [(1, 1, None)]           # the lock survived the crash
    again = Engine(CHAIN, s.vset, SafetyRules(s.keys[0], s.store, CHAIN), s.source, height=1)
    outs = again.start()
    assert (again.round, again.step) == (1, Step.PREVOTE)   # the last round signed in
    assert sent_votes(outs, PV) == [(1, 0, b.hash()), (1, 1, None)]   # the last two rounds
    assert sent_votes(outs, PC) == [(1, 0, b.hash())]
    assert again.on_timeout(1, 1, Step.PROPOSE)            # no double sign, nothing refused
    assert again.signing_refused == 0
    # the store's lock belongs to height 1 only
    assert Engine(CHAIN, s.vset, SafetyRules(s.keys[0], s.store, CHAIN), s.source, height=2,
                  prev_block_hash=b.hash()).locked_round == -1


def test_round_exit_precommits_survive_a_restart_and_are_relayed():
    """Seed 40000 of 7/2 crash: a validator left round 0 on 2f+1 precommits, some from
    validators that crashed since, without precommitting there itself; then it
    restarted. The others, still in round 0, can only finish it with those precommits,
    so they must be relayed after the restart too."""
    s = Solo()
    s.start()
    s.timeout(0, Step.PROPOSE)              # prevote nil; no precommit of ours in round 0
    s.votes(PC, 0, None, [1, 2, 3])         # 2f+1 precommits nil without ours
    assert s.engine.step == Step.PREVOTE
    s.timeout(0, Step.PRECOMMIT)            # OnTimeoutPrecommit: round 1
    assert s.engine.round == 1
    assert s.store.load().exit_round == 0
    restarted = Engine(CHAIN, s.vset, SafetyRules(s.keys[0], s.store, CHAIN), s.source, height=1)
    restarted.start()
    assert restarted.round == 1
    outs = restarted.on_timeout(1, 1, Step.PROPOSE)
    relayed = [v for v in sent(outs, Vote) if v.kind == PC and v.round == 0]
    assert sorted(v.validator for v in relayed) == sorted(s.pks[i] for i in (1, 2, 3))


def test_observer_follows_without_signing():
    net = Net(4, observers=1)
    observer = net.engines[4]
    assert not observer.is_validator
    net.start()
    net.run(4)
    assert sent(net.log[4]) == [] and sent(net.log[4], object) == []
    assert [b.hash() for b in net.decided[4]] == [b.hash() for b in net.decided[0][:3]]
    assert MemorySafetyStore().load() is None


def test_a_height_reached_by_sync_resumes_from_what_was_signed_there():
    net = run_net(3)
    (b1, c1) = net.engines[0].decided(1)
    s = Solo(me=0)
    # this validator signed at height 2 before a crash that lost its copy of block 1
    s.engine._signer.sign_vote(Vote(VoteKind.PREVOTE, 2, 0, None, s.pks[0]))
    s.start()
    outs = s.engine.on_certified_block(b1, c1)
    assert s.engine.height == 2 and (s.engine.round, s.engine.step) == (0, Step.PREVOTE)
    assert sent_votes(outs, PV) == [(2, 0, None)] and s.engine.signing_refused == 0


def test_messages_buffered_before_start_are_replayed_by_start():
    net = run_net(2)
    (b1, c1) = net.engines[0].decided(1)
    s = Solo(me=0)
    b2 = make_block(s.vset, s.pks[2], height=2, tag=b"two", prev=b1.hash())
    s.feed(signed_proposal(s.keys[2], 2, 0, b2))      # not started yet, height 1: buffered
    s.engine.on_certified_block(b1, c1)
    assert s.engine.height == 2
    assert sent_votes(s.start(), PV) == [(2, 0, b2.hash())]
