"""Adversarial inputs: equivocation, forged or foreign signatures, non-members, wrong
proposers, malformed messages and floods. None may crash the engine or move it; each is
dropped and counted."""

from __future__ import annotations

import dataclasses

from consensus_harness import CHAIN, Solo, make_keys, sent_votes, signed_proposal, signed_vote

from consensus import Decide, EngineConfig, EvidenceFound, Step, VoteKind

PV, PC = VoteKind.PREVOTE, VoteKind.PRECOMMIT


def started() -> Solo:
    s = Solo()
    s.start()
    return s


def evidence(outs) -> list:
    return [o.evidence for o in outs if isinstance(o, EvidenceFound)]


def test_duplicate_vote_yields_evidence_once_and_is_not_counted():
    s = started()
    b = s.block()
    s.propose(0, b)
    first = signed_vote(s.keys[1], PV, 1, 0, b.hash())
    second = signed_vote(s.keys[1], PV, 1, 0, None)
    s.feed(first)
    (ev,) = evidence(s.feed(second))
    assert (ev.vote_a, ev.vote_b) == (first, second)
    ev.verify(CHAIN, s.vset)
    assert evidence(s.feed(second)) == []                       # reported once
    assert evidence(s.feed(signed_vote(s.keys[1], PV, 1, 0, b"\x01" * 32))) == []
    assert s.engine.evidence.take_pending() == [ev]
    # validator 1's nil prevote did not count: own + 1 + 2 nil-votes would otherwise be 2f+1
    s.votes(PV, 0, None, [2])
    assert s.engine.step is Step.PREVOTE and sent_votes(s.log, PC) == []


def test_identical_vote_delivered_twice_counts_once():
    s = started()
    s.timeout(0, Step.PROPOSE)
    v = signed_vote(s.keys[1], PV, 1, 0, None)
    s.feed(v)
    s.feed(v)
    assert s.engine.ignored["duplicate"] == 1
    assert sent_votes(s.log, PC) == []                          # 2 nil prevotes, not 3


def test_invalid_signature_is_rejected():
    s = started()
    b = s.block()
    s.propose(0, b)
    good = signed_vote(s.keys[1], PV, 1, 0, b.hash())
    forged = good.with_signature(bytes(64))
    other_chain = signed_vote(s.keys[2], PV, 1, 0, b.hash(), chain="other-chain")
    stolen = dataclasses.replace(good, validator=s.pks[2])      # 1's signature, 2's name
    for msg in (forged, other_chain, stolen):
        assert s.feed(msg) == []
    assert s.engine.rejected["bad_signature"] == 3
    assert sent_votes(s.log, PC) == []
    bad_proposal = signed_proposal(s.keys[1], 1, 1, s.block(b"z", proposer=2))
    s.feed(dataclasses.replace(bad_proposal, proposer=s.pks[2]))
    assert s.engine.rejected["bad_signature"] == 4


def test_non_member_is_rejected_without_verifying():
    calls = []
    s = Solo(verify=lambda pk, m, sig: calls.append(pk) or True)
    s.start()
    stranger = make_keys(7)[6]
    s.feed(signed_vote(stranger, PV, 1, 0, None))
    s.feed(signed_proposal(stranger, 1, 0, s.block(proposer=1)))
    assert s.engine.rejected["non_member"] == 2 and calls == []


def test_proposal_from_the_wrong_proposer_is_rejected():
    s = started()
    b = s.block(proposer=2)
    assert s.feed(signed_proposal(s.keys[2], 1, 0, b)) == []    # round 0 belongs to validator 1
    assert s.engine.rejected["wrong_proposer"] == 1 and s.engine.step is Step.PROPOSE


def test_malformed_messages_are_rejected():
    s = started()
    v = signed_vote(s.keys[1], PV, 1, 0, None)
    for bad in (dataclasses.replace(v, block_hash=b"short"), dataclasses.replace(v, round=-1),
                dataclasses.replace(v, signature=b"")):
        assert s.feed(bad) == []
    p = signed_proposal(s.keys[1], 1, 0, s.block())
    s.feed(dataclasses.replace(p, pol_round=3))
    s.feed("not a message")  # type: ignore[arg-type]
    assert s.engine.rejected["malformed"] == 4 and s.engine.rejected["unknown_message"] == 1


def test_conflicting_second_proposal_is_ignored():
    s = started()
    b, other = s.block(b"one"), s.block(b"two")
    s.propose(0, b)
    s.propose(0, other)
    assert s.engine.ignored["conflicting_proposal"] == 1
    assert sent_votes(s.log, PV) == [(1, 0, b.hash())]


def test_votes_for_old_heights_are_ignored_cheaply():
    s = Solo(height=5, prev=b"\x01" * 32)
    s.start()
    s.feed(signed_vote(s.keys[1], PC, 4, 0, b"\x02" * 32))
    assert s.engine.ignored["old_height"] == 1


def test_a_validator_cannot_flood_many_future_rounds():
    s = started()
    for r in range(10, 60):
        s.feed(signed_vote(s.keys[1], PV, 1, r, None))
    assert s.engine.ignored["future_round_limit"] == 48
    assert s.engine.round == 0
    # the two rounds it holds still count toward a round skip
    s.feed(signed_vote(s.keys[2], PV, 1, 11, None))
    assert s.engine.round == 11


def test_future_height_buffer_is_bounded():
    s = Solo(config=EngineConfig(max_buffered=5))
    s.start()
    for r in range(3):
        for i in (1, 2, 3):
            s.feed(signed_vote(s.keys[i], PV, 2, r, None))
    assert s.engine.ignored["buffer_full"] == 4


def test_block_of_an_equivocating_proposer_can_still_be_decided():
    s = started()
    shown, other = s.block(b"shown"), s.block(b"other")
    s.propose(0, shown)                                 # we prevote `shown`
    s.propose(0, other)                                 # the others got `other`
    outs = s.votes(PC, 0, other.hash(), [1, 2, 3])
    assert [o.block for o in outs if isinstance(o, Decide)] == [other]
