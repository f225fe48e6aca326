"""Byzantine building blocks: instance layouts, the twins partitions, the equivocator."""

from __future__ import annotations

import random

from consensus.sim.byzantine import (
    ROLE_HONEST,
    ROLE_TWIN,
    Equivocator,
    layout,
    twins_partition_maker,
)
from consensus.types import Block, Proposal, Vote, VoteKind
from crypto import PrivateKey, verify_one

CHAIN = "byz-test"
KEY = PrivateKey.from_seed(bytes([9]) * 32)


def test_twins_layout_adds_a_second_instance_per_byzantine_key() -> None:
    specs = layout(4, [1, 3], "twins")
    assert [(s.validator, s.role) for s in specs] == [
        (0, ROLE_HONEST), (1, ROLE_TWIN), (2, ROLE_HONEST), (3, ROLE_TWIN),
        (1, ROLE_TWIN), (3, ROLE_TWIN)]
    assert [s.honest for s in specs] == [True, False, True, False, False, False]


def test_twins_partitions_always_separate_each_pair_and_split_honest_nodes() -> None:
    specs = layout(4, [1, 3], "twins")
    make = twins_partition_maker(specs)
    rng = random.Random(5)
    for _ in range(50):
        groups = make(rng, len(specs))
        assert groups[1] != groups[4] and groups[3] != groups[5]
        assert groups[0] != groups[2]  # two honest nodes: one on each side


def test_crash_and_silent_roles() -> None:
    crash = layout(4, [2], "crash")
    assert crash[2].honest and not crash[2].liveness_checked
    silent = layout(4, [2], "silent")
    assert not silent[2].runs_engine and not silent[2].honest


def _proposal() -> Proposal:
    block = Block.build(chain_id=CHAIN, height=3, time_ms=1, prev_block_hash=bytes(32),
                        payload=(b"x",), app_hash=bytes(32), validators_hash=bytes(32),
                        proposer=KEY.public_key)
    p = Proposal(3, 1, -1, block, KEY.public_key)
    return p.with_signature(KEY.sign(p.sign_bytes(CHAIN)))


def test_equivocator_signs_a_conflicting_proposal_and_votes_for_it() -> None:
    eq = Equivocator(KEY, CHAIN, random.Random(1))
    original = _proposal()
    other = eq.conflicting(original)
    assert (other.height, other.round) == (original.height, original.round)
    assert other.block.hash() != original.block.hash()
    other.validate()  # the payload digest matches its new payload
    assert verify_one(KEY.public_key, other.sign_bytes(CHAIN), other.signature)

    vote = Vote(VoteKind.PREVOTE, 3, 1, original.block.hash(), KEY.public_key)
    vote = vote.with_signature(KEY.sign(vote.sign_bytes(CHAIN)))
    alt = eq.conflicting(vote)
    assert alt.block_hash == other.block.hash()
    assert verify_one(KEY.public_key, alt.sign_bytes(CHAIN), alt.signature)


def test_equivocator_splits_peers_between_the_two_versions() -> None:
    eq = Equivocator(KEY, CHAIN, random.Random(2))
    vote = Vote(VoteKind.PRECOMMIT, 2, 0, None, KEY.public_key)
    vote = vote.with_signature(KEY.sign(vote.sign_bytes(CHAIN)))
    sends = eq.split(vote, [0, 1, 2, 4, 5, 6])
    versions = {m.block_hash for _, m in sends}
    assert len(versions) == 2 and None in versions
    assert {p for p, _ in sends} == {0, 1, 2, 4, 5, 6}


def test_equivocator_relays_other_validators_votes_unchanged() -> None:
    other = PrivateKey.from_seed(bytes([10]) * 32)
    vote = Vote(VoteKind.PREVOTE, 2, 0, bytes(32), other.public_key)
    vote = vote.with_signature(other.sign(vote.sign_bytes(CHAIN)))
    sends = Equivocator(KEY, CHAIN, random.Random(3)).split(vote, [0, 1, 2])
    assert sends == [(0, vote), (1, vote), (2, vote)]


def test_forged_sync_answers_carry_certificates_that_do_not_verify() -> None:
    import pytest

    from consensus.errors import InvalidMessage
    from consensus.types import CommitCertificate, ValidatorSet, vote_sign_bytes

    keys = [KEY] + [PrivateKey.from_seed(bytes([20 + i]) * 32) for i in range(3)]
    validators = ValidatorSet.equal_power([k.public_key for k in keys])
    block = _proposal().block
    sb = vote_sign_bytes(VoteKind.PRECOMMIT, CHAIN, 3, 0, block.hash())
    cert = CommitCertificate(3, 0, block.hash(), tuple((k.public_key, k.sign(sb)) for k in keys[:3]))
    cert.verify(CHAIN, validators)
    [(other, forged)] = Equivocator(KEY, CHAIN, random.Random(4)).forge_sync([(block, cert)],
                                                                            validators)
    assert other.hash() != block.hash() and forged.block_hash == other.hash()
    assert len(forged.signatures) == validators.quorum
    with pytest.raises(InvalidMessage):
        forged.verify(CHAIN, validators)
