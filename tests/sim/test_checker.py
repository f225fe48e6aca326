"""The checker can fail: forged certificates, forks, double-signs and false evidence are caught."""

from __future__ import annotations

from dataclasses import replace

from consensus.sim.checker import Checker
from consensus.sim.sigcache import SignatureCache
from consensus.types import (
    Block,
    CommitCertificate,
    DuplicateVoteEvidence,
    ValidatorSet,
    Vote,
    VoteKind,
    vote_sign_bytes,
)
from crypto import PrivateKey

CHAIN = "checker-test"
KEYS = [PrivateKey.from_seed(bytes([i + 1]) * 32) for i in range(4)]
VALIDATORS = ValidatorSet.equal_power([k.public_key for k in KEYS])


def make_checker(honest: range = range(3)) -> Checker:
    return Checker(CHAIN, VALIDATORS, {KEYS[i].public_key: i for i in honest},
                   SignatureCache().verify_batch)


def block(height: int, prev: bytes = bytes(32), salt: bytes = b"") -> Block:
    return Block.build(chain_id=CHAIN, height=height, time_ms=height, prev_block_hash=prev,
                       payload=(salt,) if salt else (), app_hash=bytes(32),
                       validators_hash=VALIDATORS.hash(), proposer=KEYS[0].public_key)


def certificate(b: Block, signers: list[int], round_: int = 0) -> CommitCertificate:
    sb = vote_sign_bytes(VoteKind.PRECOMMIT, CHAIN, b.header.height, round_, b.hash())
    return CommitCertificate(b.header.height, round_, b.hash(),
                             tuple((KEYS[i].public_key, KEYS[i].sign(sb)) for i in signers))


def vote(i: int, block_hash: bytes | None, height: int = 1, round_: int = 0,
         kind: VoteKind = VoteKind.PREVOTE) -> Vote:
    v = Vote(kind, height, round_, block_hash, KEYS[i].public_key)
    return v.with_signature(KEYS[i].sign(v.sign_bytes(CHAIN)))


def test_valid_decisions_pass() -> None:
    checker = make_checker()
    b1 = block(1)
    b2 = block(2, prev=b1.hash())
    for instance in range(3):
        checker.on_decide(10, instance, b1, certificate(b1, [0, 1, 2]))
        checker.on_decide(20, instance, b2, certificate(b2, [1, 2, 3]))
    assert checker.violations == []


def test_forged_signature_in_certificate_is_caught() -> None:
    b = block(1)
    good = certificate(b, [0, 1, 2])
    pk, sig = good.signatures[1]
    forged = replace(good, signatures=(good.signatures[0], (pk, bytes([sig[0] ^ 1]) + sig[1:]),
                                       good.signatures[2]))
    checker = make_checker()
    checker.on_decide(5, 0, b, forged)
    assert [v.kind for v in checker.violations] == ["certificate"]
    assert "invalid" in checker.violations[0].detail


def test_certificate_without_quorum_or_with_repeated_signer_is_caught() -> None:
    b = block(1)
    few = certificate(b, [0, 1])
    twice = replace(few, signatures=few.signatures + (few.signatures[0],))
    for bad in (few, twice):
        checker = make_checker()
        checker.on_decide(5, 0, b, bad)
        assert [v.kind for v in checker.violations] == ["certificate"]


def test_certificate_for_another_block_is_caught() -> None:
    checker = make_checker()
    checker.on_decide(5, 0, block(1), certificate(block(1, salt=b"other"), [0, 1, 2]))
    assert [v.kind for v in checker.violations] == ["certificate"]


def test_fork_between_honest_nodes_is_an_agreement_violation() -> None:
    a, b = block(1, salt=b"a"), block(1, salt=b"b")
    checker = make_checker()
    checker.on_decide(5, 0, a, certificate(a, [0, 1, 2]))
    checker.on_decide(6, 1, b, certificate(b, [1, 2, 3]))
    assert [v.kind for v in checker.violations] == ["agreement"]
    assert "height 1" in checker.violations[0].detail


def test_decisions_out_of_order_or_off_chain_are_caught() -> None:
    skipping = make_checker()
    b2 = block(2, prev=block(1).hash())
    skipping.on_decide(5, 0, b2, certificate(b2, [0, 1, 2]))
    assert [v.kind for v in skipping.violations] == ["chain"]

    off_chain = make_checker()
    b1 = block(1)
    orphan = block(2, prev=bytes([7]) * 32)
    off_chain.on_decide(5, 1, b1, certificate(b1, [0, 1, 2]))
    off_chain.on_decide(6, 1, orphan, certificate(orphan, [0, 1, 2]))
    assert [v.kind for v in off_chain.violations] == ["chain"]


def test_honest_double_sign_is_caught_and_resend_is_not() -> None:
    checker = make_checker()
    checker.on_signed(1, 0, vote(0, bytes(32)))
    checker.on_signed(2, 0, vote(0, bytes(32)))          # the same vote, re-sent
    checker.on_signed(3, 0, vote(0, bytes(32), round_=1))  # another round
    assert checker.violations == []
    checker.on_signed(4, 0, vote(0, None))               # nil at the same (h, r, step)
    assert [v.kind for v in checker.violations] == ["double-sign"]
    assert "validator 0" in checker.violations[0].detail


def test_byzantine_keys_may_equivocate() -> None:
    checker = make_checker(honest=range(3))
    checker.on_signed(1, 3, vote(3, bytes(32)))
    checker.on_signed(1, 3, vote(3, None))
    assert checker.violations == []


def test_evidence_against_an_honest_validator_is_caught() -> None:
    checker = make_checker(honest=range(3))
    against_byzantine = DuplicateVoteEvidence(vote(3, bytes(32)), vote(3, None))
    checker.on_evidence(1, 0, against_byzantine)
    assert checker.violations == []
    against_honest = DuplicateVoteEvidence(vote(1, bytes(32)), vote(1, None))
    checker.on_evidence(2, 0, against_honest)
    assert [v.kind for v in checker.violations] == ["evidence"]


def test_liveness_failures_name_the_slow_instances() -> None:
    assert Checker.liveness_failures({0: 5, 1: 3}, 5, [0, 1, 2]) == [
        "instance 1 decided 3 of 5 heights", "instance 2 decided 0 of 5 heights"]
