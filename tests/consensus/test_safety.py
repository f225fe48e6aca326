"""SafetyRules: never two different signatures at one (height, round, step), never
backwards, identical re-signs allowed, state durable before the signature leaves,
and all of it across simulated restarts (same store object, new SafetyRules)."""

from __future__ import annotations

import dataclasses

import pytest
from consensus_harness import CHAIN, make_block, make_keys, make_vset

from consensus import (
    MemorySafetyStore,
    Proposal,
    SafetyRules,
    SafetyState,
    SafetyViolation,
    Step,
    Vote,
    VoteKind,
)
from consensus.codec import CodecError, unpack
from crypto import verify_one

KEY = make_keys(1)[0]
PK = KEY.public_key
VSET = make_vset([KEY])
B1 = make_block(VSET, PK, tag=b"one").hash()
B2 = make_block(VSET, PK, tag=b"two").hash()


def vote(kind: VoteKind, height: int, round: int, bh: bytes | None) -> Vote:
    return Vote(kind, height, round, bh, PK)


def test_signs_and_the_signature_verifies():
    rules = SafetyRules(KEY, MemorySafetyStore(), CHAIN)
    v = rules.sign_vote(vote(VoteKind.PREVOTE, 1, 0, B1))
    assert verify_one(PK, v.sign_bytes(CHAIN), v.signature)
    p = rules.sign_proposal(Proposal(1, 1, -1, make_block(VSET, PK), PK))
    assert verify_one(PK, p.sign_bytes(CHAIN), p.signature)
    assert rules.state.height == 1 and rules.state.round == 1 and rules.state.step is Step.PROPOSE


def test_refuses_a_conflicting_vote_at_the_same_step():
    rules = SafetyRules(KEY, MemorySafetyStore(), CHAIN)
    rules.sign_vote(vote(VoteKind.PREVOTE, 3, 2, B1))
    with pytest.raises(SafetyViolation, match="prevote for height 3 round 2"):
        rules.sign_vote(vote(VoteKind.PREVOTE, 3, 2, B2))
    with pytest.raises(SafetyViolation):
        rules.sign_vote(vote(VoteKind.PREVOTE, 3, 2, None))


def test_refuses_to_go_backwards_in_height_round_or_step():
    rules = SafetyRules(KEY, MemorySafetyStore(), CHAIN)
    rules.sign_vote(vote(VoteKind.PRECOMMIT, 5, 1, B1))
    for kind, h, r in [(VoteKind.PREVOTE, 5, 1), (VoteKind.PRECOMMIT, 5, 0), (VoteKind.PREVOTE, 4, 9)]:
        with pytest.raises(SafetyViolation, match=f"height {h} round {r}.*height 5 round 1"):
            rules.sign_vote(vote(kind, h, r, B1))
    with pytest.raises(SafetyViolation, match="propose"):
        rules.sign_proposal(Proposal(5, 1, -1, make_block(VSET, PK, height=5), PK))
    rules.sign_vote(vote(VoteKind.PREVOTE, 5, 2, None))  # forward is fine
    rules.sign_vote(vote(VoteKind.PREVOTE, 6, 0, B2))


def test_identical_resign_returns_the_stored_signature():
    store = MemorySafetyStore()
    rules = SafetyRules(KEY, store, CHAIN)
    first = rules.sign_vote(vote(VoteKind.PRECOMMIT, 2, 0, B1))
    again = rules.sign_vote(vote(VoteKind.PRECOMMIT, 2, 0, B1))
    assert again == first
    assert store.saves == 1  # nothing new to persist


def test_state_is_saved_before_the_signature_is_returned():
    class FailingStore(MemorySafetyStore):
        def save(self, state: SafetyState) -> None:
            raise OSError("disk full")

    rules = SafetyRules(KEY, FailingStore(), CHAIN)
    with pytest.raises(OSError):
        rules.sign_vote(vote(VoteKind.PREVOTE, 1, 0, B1))
    assert rules.state is None

    seen: list[SafetyState] = []

    class RecordingStore(MemorySafetyStore):
        def save(self, state: SafetyState) -> None:
            seen.append(state)
            super().save(state)

    signed = SafetyRules(KEY, RecordingStore(), CHAIN).sign_vote(vote(VoteKind.PREVOTE, 1, 0, B1))
    assert seen[-1].signature == signed.signature


def test_deferred_saves_save_once_on_the_way_out():
    store = MemorySafetyStore()
    rules = SafetyRules(KEY, store, CHAIN)
    block = make_block(VSET, PK)
    with rules.deferred_saves():
        p = rules.sign_proposal(Proposal(1, 0, -1, block, PK))
        with rules.deferred_saves():  # a nested block joins the outer one
            v = rules.sign_vote(vote(VoteKind.PREVOTE, 1, 0, block.hash()))
        assert store.saves == 0 and store.state is None
        # The checks run on the state in memory, ahead of the store's.
        with pytest.raises(SafetyViolation):
            rules.sign_vote(vote(VoteKind.PREVOTE, 1, 0, B2))
        with pytest.raises(SafetyViolation):
            rules.sign_proposal(Proposal(1, 0, -1, make_block(VSET, PK, tag=b"x"), PK))
    assert verify_one(PK, p.sign_bytes(CHAIN), p.signature)
    assert store.saves == 1
    assert store.state.step is Step.PREVOTE and store.state.signature == v.signature
    # A restart from the store refuses to go back below what the block signed.
    with pytest.raises(SafetyViolation):
        SafetyRules(KEY, store, CHAIN).sign_vote(vote(VoteKind.PREVOTE, 1, 0, B2))
    # Outside a block, one save per new signature again; a block that signs nothing
    # saves nothing.
    rules.sign_vote(vote(VoteKind.PRECOMMIT, 1, 0, block.hash()))
    assert store.saves == 2
    with rules.deferred_saves():
        rules.lock(1)
    assert store.saves == 2


def test_deferred_saves_save_when_the_block_raises_and_a_failed_save_raises():
    store = MemorySafetyStore()
    rules = SafetyRules(KEY, store, CHAIN)
    with pytest.raises(RuntimeError, match="engine bug"):
        with rules.deferred_saves():
            rules.sign_vote(vote(VoteKind.PREVOTE, 1, 0, B1))
            raise RuntimeError("engine bug")
    assert store.saves == 1 and store.state.step is Step.PREVOTE

    class FailingStore(MemorySafetyStore):
        def save(self, state: SafetyState) -> None:
            raise OSError("disk full")

    failing = SafetyRules(KEY, FailingStore(), CHAIN)
    signed = []
    with pytest.raises(OSError, match="disk full"):
        with failing.deferred_saves():
            signed.append(failing.sign_vote(vote(VoteKind.PREVOTE, 1, 0, B1)))
    # The caller sees the failure before it could release the vote; the rules stay
    # ahead of the store, so they never sign a conflicting one either.
    assert len(signed) == 1
    with pytest.raises(SafetyViolation):
        failing.sign_vote(vote(VoteKind.PREVOTE, 1, 0, B2))


def test_across_restarts_refuses_double_sign_and_resigns_identically():
    store = MemorySafetyStore()
    before = SafetyRules(KEY, store, CHAIN).sign_vote(vote(VoteKind.PREVOTE, 7, 3, B1))
    # crash: the engine and the rules are gone, the store survives
    after = SafetyRules(KEY, store, CHAIN)
    assert after.sign_vote(vote(VoteKind.PREVOTE, 7, 3, B1)).signature == before.signature
    with pytest.raises(SafetyViolation):
        after.sign_vote(vote(VoteKind.PREVOTE, 7, 3, B2))
    with pytest.raises(SafetyViolation):
        after.sign_vote(vote(VoteKind.PRECOMMIT, 7, 2, B1))
    after.sign_vote(vote(VoteKind.PRECOMMIT, 7, 3, B1))
    again = SafetyRules(KEY, store, CHAIN)
    with pytest.raises(SafetyViolation):
        again.sign_vote(vote(VoteKind.PREVOTE, 7, 3, B1))  # already past prevote
    assert again.state.step is Step.PRECOMMIT


def test_state_survives_an_encoded_store():
    """The node persists SafetyState as msgpack; a decoded state guards the same way."""
    store = MemorySafetyStore()
    SafetyRules(KEY, store, CHAIN).sign_vote(vote(VoteKind.PREVOTE, 2, 0, B1))
    fields = unpack(store.state.encode())
    restored = SafetyState.from_fields(fields[1:])
    restored.validate()
    rules = SafetyRules(KEY, MemorySafetyStore(restored), CHAIN)
    with pytest.raises(SafetyViolation):
        rules.sign_vote(vote(VoteKind.PREVOTE, 2, 0, B2))


def test_refuses_to_sign_for_another_key():
    other = make_keys(2)[1].public_key
    rules = SafetyRules(KEY, MemorySafetyStore(), CHAIN)
    with pytest.raises(SafetyViolation, match="not this signer"):
        rules.sign_vote(Vote(VoteKind.PREVOTE, 1, 0, B1, other))
    with pytest.raises(SafetyViolation, match="not this signer"):
        rules.sign_proposal(Proposal(1, 0, -1, make_block(VSET, PK), other))


def test_the_lock_is_kept_with_the_state_until_the_height_changes():
    store = MemorySafetyStore()
    rules = SafetyRules(KEY, store, CHAIN)
    assert rules.lock(3) == (-1, None)
    rules.sign_vote(vote(VoteKind.PRECOMMIT, 3, 1, B1))
    assert rules.lock(3) == (1, B1)
    rules.sign_vote(vote(VoteKind.PREVOTE, 3, 2, None))
    rules.sign_vote(vote(VoteKind.PRECOMMIT, 3, 2, None))   # nil precommits do not unlock
    assert SafetyRules(KEY, store, CHAIN).lock(3) == (1, B1)
    rules.sign_vote(vote(VoteKind.PRECOMMIT, 3, 4, B2))     # a newer polka re-locks
    assert rules.lock(3) == (4, B2) and rules.lock(4) == (-1, None)
    rules.sign_vote(vote(VoteKind.PREVOTE, 4, 0, B1))
    assert store.state.lock_round == -1 and store.state.lock_hash is None


def test_the_locked_block_and_the_last_two_rounds_of_votes_are_kept():
    store = MemorySafetyStore()
    rules = SafetyRules(KEY, store, CHAIN)
    block = make_block(VSET, PK, tag=b"one")
    rules.sign_vote(vote(VoteKind.PREVOTE, 1, 0, block.hash()))
    rules.sign_vote(vote(VoteKind.PRECOMMIT, 1, 0, block.hash()), block)
    rules.sign_vote(vote(VoteKind.PREVOTE, 1, 1, None))
    restarted = SafetyRules(KEY, store, CHAIN)
    assert restarted.locked_block(1) == block and restarted.locked_block(2) is None
    assert [(v.kind, v.round) for v in restarted.signed_votes(1)] == [
        (VoteKind.PREVOTE, 0), (VoteKind.PRECOMMIT, 0), (VoteKind.PREVOTE, 1)]
    assert all(verify_one(PK, v.sign_bytes(CHAIN), v.signature) for v in restarted.signed_votes(1))
    restarted.sign_vote(vote(VoteKind.PREVOTE, 1, 2, None))
    assert {v.round for v in restarted.signed_votes(1)} == {1, 2}
    assert restarted.signed_votes(2) == ()
    with pytest.raises(ValueError):
        restarted.sign_vote(vote(VoteKind.PRECOMMIT, 1, 3, B2), block)


def _precommits(height: int, round: int, n: int = 3) -> tuple[Vote, ...]:
    """Signed precommits nil of `n` other validators (what an engine leaves a round on)."""
    return tuple(Vote(VoteKind.PRECOMMIT, height, round, None, k.public_key).with_signature(
        k.sign(Vote(VoteKind.PRECOMMIT, height, round, None, k.public_key).sign_bytes(CHAIN)))
        for k in make_keys(n + 1)[1:])


def test_the_round_exit_precommits_are_kept_durably_for_their_height():
    store = MemorySafetyStore()
    rules = SafetyRules(KEY, store, CHAIN)
    rules.sign_vote(vote(VoteKind.PREVOTE, 5, 0, None))
    saves = store.saves
    exits = _precommits(5, 0)
    rules.record_round_exit(5, 0, exits)
    assert store.saves == saves + 1                          # durable now, nothing signed
    restarted = SafetyRules(KEY, store, CHAIN)
    assert restarted.round_exit(5) == (0, exits) and restarted.round_exit(6) == (-1, ())
    restarted.record_round_exit(5, 0, _precommits(5, 0, 2))  # not later: ignored
    assert restarted.round_exit(5) == (0, exits)
    restarted.sign_vote(vote(VoteKind.PREVOTE, 5, 1, None))  # signing keeps it
    assert SafetyRules(KEY, store, CHAIN).round_exit(5) == (0, exits)
    restarted.sign_vote(vote(VoteKind.PREVOTE, 6, 0, None))  # a new height drops it
    assert store.state.exit_round == -1 and store.state.exit_precommits == ()
    with pytest.raises(ValueError):
        restarted.record_round_exit(6, 1, _precommits(6, 0))     # not of that round


def test_a_round_exit_before_any_signature_at_its_height_waits_for_the_first():
    store = MemorySafetyStore()
    rules = SafetyRules(KEY, store, CHAIN)
    rules.sign_vote(vote(VoteKind.PREVOTE, 1, 0, None))
    exits = _precommits(2, 0)
    rules.record_round_exit(2, 0, exits)         # a SafetyState needs a signature
    assert rules.round_exit(2) == (0, exits) and store.state.height == 1
    rules.sign_vote(vote(VoteKind.PREVOTE, 2, 1, None))
    assert store.state.exit_round == 0 and store.state.exit_precommits == exits


def test_round_exit_state_encodes_and_old_records_still_decode():
    store = MemorySafetyStore()
    rules = SafetyRules(KEY, store, CHAIN)
    rules.sign_vote(vote(VoteKind.PREVOTE, 3, 1, None))
    rules.record_round_exit(3, 1, _precommits(3, 1))
    fields = unpack(store.state.encode())[1:]
    restored = SafetyState.from_fields(fields)
    restored.validate()
    assert restored == store.state
    old = SafetyState.from_fields(fields[:9])     # written before the round-exit fields
    old.validate()
    assert (old.exit_round, old.exit_precommits) == (-1, ())
    assert old.height == 3 and old.votes == store.state.votes
    with pytest.raises(CodecError):
        SafetyState.from_fields(fields[:10])
    bad = dataclasses.replace(restored, exit_round=2)   # precommits are of round 1
    with pytest.raises(CodecError, match="exit_round"):
        bad.validate()
    with pytest.raises(CodecError, match="set together"):
        dataclasses.replace(restored, exit_precommits=()).validate()
