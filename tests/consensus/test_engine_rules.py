"""Each rule of Algorithm 1, driven through the engine API.

The engine under test is validator 0 of 4 (equal power: quorum 3, f+1 = 2); the test
plays validators 1-3 with their keys. At height 1 the proposer of round r is
validator (1 + r) mod 4: round 0 -> 1, round 1 -> 2, round 2 -> 3, round 3 -> 0.
"""

from __future__ import annotations

from consensus_harness import Solo, make_block, sent, sent_votes, timeouts

from consensus import Decide, EngineConfig, Proposal, ProposalContent, Step, VoteKind

PV, PC = VoteKind.PREVOTE, VoteKind.PRECOMMIT


def started() -> Solo:
    s = Solo()
    s.start()
    assert s.proposer(0) == 1 and s.proposer(1) == 2 and s.proposer(2) == 3 and s.proposer(3) == 0
    return s


# --- start round, lines 11-21 ----------------------------------------------------------------


def test_start_round_schedules_the_propose_timeout():
    s = Solo()
    assert timeouts(s.start()) == [(1, 0, Step.PROPOSE, 1000)]
    assert (s.engine.height, s.engine.round, s.engine.step) == (1, 0, Step.PROPOSE)


def test_proposer_builds_a_block_from_the_source_and_prevotes_it():
    s = Solo(me=1)
    outs = s.start()
    (proposal,) = sent(outs, Proposal)
    assert proposal.pol_round == -1 and proposal.round == 0
    assert proposal.block.payload == (b"solo@1",) and proposal.block.header.proposer == s.pks[1]
    assert sent_votes(outs, PV) == [(1, 0, proposal.block.hash())]
    assert s.engine.step is Step.PREVOTE


def test_proposer_waits_for_content_then_proposes():
    s = Solo(me=1)
    s.source.ready = False
    assert sent(s.start(), Proposal) == []
    s.source.ready = True
    outs = s.engine.on_proposal_ready()
    assert len(sent(outs, Proposal)) == 1 and len(sent_votes(outs, PV)) == 1


# --- prevote, lines 22-33 -------------------------------------------------------------------


def test_line22_prevotes_a_valid_proposal():
    s = started()
    b = s.block()
    assert sent_votes(s.propose(0, b), PV) == [(1, 0, b.hash())]
    assert s.engine.step is Step.PREVOTE


def test_line22_prevotes_nil_for_an_invalid_block():
    s = started()
    b = s.block()
    s.source.verdicts[b.hash()] = s.source.default.INVALID
    assert sent_votes(s.propose(0, b), PV) == [(1, 0, None)]


def test_line22_prevotes_nil_for_a_block_that_breaks_the_chain():
    s = started()
    orphan = make_block(s.vset, s.pks[1], height=1, prev=b"\x09" * 32)
    assert sent_votes(s.propose(0, orphan), PV) == [(1, 0, None)]


# --- timeouts, lines 57-67 ---------------------------------------------------------------------


def test_propose_timeout_prevotes_nil():
    s = started()
    outs = s.timeout(0, Step.PROPOSE)
    assert sent_votes(outs, PV) == [(1, 0, None)]
    assert s.engine.step is Step.PREVOTE


def test_prevote_timeout_after_any_quorum_precommits_nil():
    s = started()
    b = s.block()
    s.propose(0, b)
    outs = s.votes(PV, 0, None, [1]) + s.votes(PV, 0, b.hash(), [2])  # 3 prevotes, no value has 3
    assert timeouts(outs) == [(1, 0, Step.PREVOTE, 500)]  # line 34
    outs = s.timeout(0, Step.PREVOTE)
    assert sent_votes(outs, PC) == [(1, 0, None)]
    assert s.engine.step is Step.PRECOMMIT


def test_precommit_timeout_after_any_quorum_starts_the_next_round():
    s = started()
    s.timeout(0, Step.PROPOSE)
    s.votes(PV, 0, None, [1, 2])            # line 44: 2f+1 nil prevotes -> precommit nil
    outs = s.votes(PC, 0, None, [1]) + s.votes(PC, 0, s.block().hash(), [2])
    assert timeouts(outs) == [(1, 0, Step.PRECOMMIT, 500)]  # line 47
    outs = s.timeout(0, Step.PRECOMMIT)
    assert s.engine.round == 1 and s.engine.step is Step.PROPOSE
    assert (1, 1, Step.PROPOSE, 1500) in timeouts(outs)


def test_timeouts_grow_linearly_per_round():
    config = EngineConfig(timeout_propose_ms=100, timeout_prevote_ms=20, timeout_precommit_ms=30,
                          delta_ms=7)
    assert [config.timeout_ms(Step.PROPOSE, r) for r in range(3)] == [100, 107, 114]
    assert config.timeout_ms(Step.PREVOTE, 2) == 34 and config.timeout_ms(Step.PRECOMMIT, 3) == 51


def test_stale_timeouts_do_nothing():
    s = started()
    b = s.block()
    s.propose(0, b)
    assert s.timeout(0, Step.PROPOSE) and s.engine.step is Step.PREVOTE  # only re-broadcasts
    assert sent_votes(s.log, PV) == [(1, 0, b.hash())] * 2
    assert s.timeout(0, Step.PROPOSE, height=7) == []
    assert s.engine.on_timeout(0, 0, Step.PRECOMMIT) == []


def test_a_timeout_rebroadcasts_own_messages_of_the_round():
    s = Solo(me=1)
    (proposal,) = sent(s.start(), Proposal)
    outs = s.timeout(0, Step.PROPOSE)
    assert sent(outs, Proposal) == [proposal]
    assert sent_votes(outs, PV) == [(1, 0, proposal.block.hash())]
    # with no timer of this round left, one more is scheduled to keep retrying
    assert timeouts(outs) == [(1, 0, Step.PROPOSE, 1000)]


# --- precommit and lock, lines 34-46 -------------------------------------------------------------


def test_polka_locks_and_precommits():
    s = started()
    b = s.block()
    s.propose(0, b)
    outs = s.votes(PV, 0, b.hash(), [1, 2])
    assert sent_votes(outs, PC) == [(1, 0, b.hash())]
    assert s.engine.locked_round == 0 and s.engine.locked_block_hash == b.hash()
    assert s.engine.valid_round == 0 and s.engine.valid_block_hash == b.hash()


def test_nil_polka_precommits_nil_without_waiting():
    s = started()
    s.propose(0, s.block())
    outs = s.votes(PV, 0, None, [1, 2, 3])
    assert sent_votes(outs, PC) == [(1, 0, None)]
    assert s.engine.locked_round == -1


def test_locked_validator_prevotes_nil_for_another_block():
    s = started()
    b = s.block()
    s.propose(0, b)
    s.votes(PV, 0, b.hash(), [1, 2])                 # locked on b in round 0
    s.votes(PC, 0, None, [1, 2])
    s.timeout(0, Step.PRECOMMIT)
    other = s.block(b"other")
    assert sent_votes(s.propose(1, other), PV) == [(1, 1, None)]
    assert s.engine.locked_block_hash == b.hash()
    # but it prevotes its locked block when proposed again
    s2 = started()
    s2.propose(0, b)
    s2.votes(PV, 0, b.hash(), [1, 2])
    s2.votes(PC, 0, None, [1, 2])
    s2.timeout(0, Step.PRECOMMIT)
    assert sent_votes(s2.propose(1, b, pol_round=0), PV) == [(1, 1, b.hash())]


def test_newer_polka_unlocks_line28():
    s = started()
    b = s.block()
    s.propose(0, b)
    s.votes(PV, 0, b.hash(), [1, 2])                 # lock b at round 0
    s.votes(PC, 0, None, [1, 2])
    s.timeout(0, Step.PRECOMMIT)
    other = s.block(b"other")
    # round 1: the others see a polka for `other`; we miss the proposal and time out
    s.votes(PV, 1, other.hash(), [1, 2, 3])
    s.timeout(1, Step.PROPOSE)
    s.timeout(1, Step.PREVOTE)
    s.votes(PC, 1, None, [1, 2])
    s.timeout(1, Step.PRECOMMIT)
    assert s.engine.round == 2 and s.engine.locked_round == 0
    # round 2 re-proposes `other` with pol_round 1 > locked round 0: prevote it
    assert sent_votes(s.propose(2, other, pol_round=1), PV) == [(1, 2, other.hash())]


def test_line28_waits_for_the_polka_of_pol_round():
    s = started()
    s.timeout(0, Step.PROPOSE)
    s.votes(PV, 0, None, [1, 2])
    s.votes(PC, 0, None, [1, 2])
    s.timeout(0, Step.PRECOMMIT)
    b = s.block(b"b", proposer=1)
    assert sent_votes(s.propose(1, b, pol_round=0), PV) == []  # no polka for b at round 0
    # (the timeout also re-sends the round-0 prevote: see test_timeout_resends_the_previous_round)
    assert sent_votes(s.timeout(1, Step.PROPOSE), PV) == [(1, 0, None), (1, 1, None)]


def test_polka_seen_after_precommit_sets_valid_value_without_locking():
    s = started()
    b = s.block()
    s.timeout(0, Step.PROPOSE)                       # prevote nil
    s.votes(PV, 0, b.hash(), [1, 2])
    s.timeout(0, Step.PREVOTE)                       # precommit nil
    s.propose(0, b)
    s.votes(PV, 0, b.hash(), [3])                    # polka for b, step is precommit
    assert s.engine.valid_round == 0 and s.engine.valid_block_hash == b.hash()
    assert s.engine.locked_round == -1


def test_proposer_reproposes_valid_value_with_its_round():
    s = Solo(me=0, height=3, prev=b"\x05" * 32)  # at height 3: round 0 -> 3, round 1 -> 0
    s.start()
    assert s.proposer(0) == 3 and s.proposer(1) == 0
    b = s.block()
    s.propose(0, b)
    s.votes(PV, 0, b.hash(), [1, 3])                 # polka: valid value b, round 0
    s.votes(PC, 0, None, [1, 2])
    outs = s.timeout(0, Step.PRECOMMIT)
    (proposal,) = sent(outs, Proposal)
    assert proposal.round == 1 and proposal.pol_round == 0 and proposal.block == b
    # with it go the prevotes proving the polka, and line 28 holds for its own proposal
    pol = [v for v in sent(outs) if v.kind == PV and v.round == 0]
    assert {v.validator for v in pol} == {s.pks[0], s.pks[1], s.pks[3]}
    mine = [v for v in sent(outs) if v.validator == s.pks[0] and v.round == 1]
    assert [(v.kind, v.block_hash) for v in mine] == [(PV, b.hash())]


# --- decision, line 49 -------------------------------------------------------------------------


def test_decides_on_a_quorum_of_precommits_and_starts_the_next_height():
    s = started()
    b = s.block()
    s.propose(0, b)
    s.votes(PV, 0, b.hash(), [1, 2])
    outs = s.votes(PC, 0, b.hash(), [1, 2])
    (decide,) = [o for o in outs if isinstance(o, Decide)]
    assert decide.block == b and decide.certificate.round == 0
    decide.certificate.verify("test-chain", s.vset)
    assert (s.engine.height, s.engine.round, s.engine.step) == (2, 0, Step.PROPOSE)
    assert s.engine.prev_block_hash == b.hash()
    assert s.engine.decided(1) == (b, decide.certificate)
    assert timeouts(outs)[-1] == (2, 0, Step.PROPOSE, 1000)
    assert s.engine.locked_round == -1 and s.engine.valid_round == -1


def test_decides_for_an_earlier_round_while_in_a_later_one():
    s = started()
    b = s.block()
    s.votes(PV, 5, None, [2, 3])                     # f+1 in round 5: skip there
    assert s.engine.round == 5
    s.propose(0, b)
    outs = s.votes(PC, 0, b.hash(), [1, 2, 3])
    (decide,) = [o for o in outs if isinstance(o, Decide)]
    assert decide.certificate.round == 0 and s.engine.height == 2


def test_decision_waits_for_the_block():
    s = started()
    b = s.block()
    s.votes(PC, 0, b.hash(), [1, 2, 3])
    assert s.engine.height == 1
    outs = s.propose(0, b)
    assert [o.block for o in outs if isinstance(o, Decide)] == [b]


# --- round skip, line 55 ----------------------------------------------------------------------


def test_round_skip_needs_f_plus_one_power_in_a_higher_round():
    s = started()
    s.votes(PV, 4, None, [1])
    s.votes(PV, 4, None, [1])                         # the same sender again does not count
    assert s.engine.round == 0
    outs = s.votes(PC, 4, None, [2])
    assert s.engine.round == 4
    assert (1, 4, Step.PROPOSE, 3000) in timeouts(outs)


def test_round_skip_counts_proposals_and_power():
    s = Solo(powers=[1, 1, 1, 3])                      # total 6: f+1 = 3
    s.start()
    s.votes(PV, 2, None, [1, 2])
    assert s.engine.round == 0
    s.votes(PV, 2, None, [3])
    assert s.engine.round == 2


def test_round_skip_to_the_proposers_round():
    s = started()
    b = s.block(proposer=3)
    s.propose(2, b)                                    # proposer of round 2 is validator 3
    outs = s.votes(PV, 2, None, [1])
    assert s.engine.round == 2
    assert sent_votes(outs, PV) == [(1, 2, b.hash())]  # and line 22 applies at once


def test_timeout_resends_the_previous_round():
    """Others may wait in the round we left for our precommit there (lost earlier)."""
    s = started()
    s.timeout(0, Step.PROPOSE)
    s.votes(PV, 0, None, [1, 2])                      # precommit nil at round 0
    s.votes(PC, 0, None, [3])
    s.votes(PC, 0, s.block().hash(), [2])
    s.timeout(0, Step.PRECOMMIT)                      # round 1
    s.timeout(1, Step.PROPOSE)                        # prevote nil at round 1
    s.votes(PV, 1, None, [1, 2])                      # precommit nil at round 1
    s.votes(PC, 1, None, [1, 2])
    s.timeout(1, Step.PRECOMMIT)                      # round 2
    s.timeout(2, Step.PROPOSE)                        # prevote nil at round 2
    outs = s.timeout(2, Step.PROPOSE)                 # the re-broadcast timer
    assert {(v.kind, v.round) for v in sent(outs)} == {(PV, 1), (PC, 1), (PV, 2)}


def test_malformed_content_from_the_source_is_not_proposed():
    s = Solo(me=1)
    s.source.proposal_content = lambda height: ProposalContent((b"x",), 5, b"short app hash")
    outs = s.start()
    assert sent(outs, Proposal) == [] and s.engine.rejected["bad_proposal_content"] == 1
    assert sent_votes(s.timeout(0, Step.PROPOSE), PV) == [(1, 0, None)]
