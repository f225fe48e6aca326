"""Wire types: codec round trips, validate() refusing bad shapes, sign bytes, quorums,
proposer rotation, certificates and duplicate-vote evidence."""

from __future__ import annotations

import dataclasses

import pytest
from consensus_harness import CHAIN, make_block, make_keys, make_vset, signed_proposal, signed_vote

from consensus import (
    CONSENSUS_MESSAGES,
    Block,
    BlockHeader,
    CodecError,
    CommitCertificate,
    DuplicateVoteEvidence,
    InvalidMessage,
    Proposal,
    SafetyState,
    Step,
    SyncRequest,
    SyncResponse,
    Validator,
    ValidatorSet,
    Vote,
    VoteKind,
)
from consensus.codec import pack, unpack
from consensus.types import MAX_ROUND

KEYS = make_keys(4)
VSET = make_vset(KEYS)
PK = [k.public_key for k in KEYS]
BLOCK = make_block(VSET, PK[1], tag=b"payload")
BH = BLOCK.hash()


def certificate(signers: list[int], block_hash: bytes = BH, height: int = 1,
                round: int = 0) -> CommitCertificate:
    votes = [signed_vote(KEYS[i], VoteKind.PRECOMMIT, height, round, block_hash) for i in signers]
    return CommitCertificate(height, round, block_hash, tuple((v.validator, v.signature) for v in votes))


def roundtrip(msg):
    """Encode, decode through the message's own class, and compare."""
    obj = unpack(msg.encode())
    assert obj[0] == msg.TAG
    back = type(msg).from_fields(obj[1:])
    back.validate()
    assert back == msg
    return back


# --- round trips ---------------------------------------------------------------------------


def test_every_type_round_trips_through_the_codec():
    vote = signed_vote(KEYS[0], VoteKind.PREVOTE, 1, 0, BH)
    nil = signed_vote(KEYS[0], VoteKind.PRECOMMIT, 1, 0, None)
    other = signed_vote(KEYS[0], VoteKind.PRECOMMIT, 1, 0, BH)
    messages = [
        Validator(PK[0], 7),
        VSET,
        BLOCK.header,
        BLOCK,
        signed_proposal(KEYS[1], 1, 0, BLOCK),
        vote,
        nil,
        certificate([0, 1, 2]),
        DuplicateVoteEvidence(nil, other),
        SyncRequest(5),
        SyncResponse(BLOCK, certificate([0, 1, 2])),
        SafetyState(1, 0, Step.PREVOTE, vote.sign_bytes(CHAIN), vote.signature),
        SafetyState(1, 0, Step.PRECOMMIT, other.sign_bytes(CHAIN), other.signature, 0, BH, BLOCK,
                    (vote, other)),
    ]
    for msg in messages:
        roundtrip(msg)
    assert roundtrip(BLOCK).hash() == BH
    assert roundtrip(vote).kind is VoteKind.PREVOTE


def test_registry_decodes_the_consensus_link_messages():
    for msg in [signed_proposal(KEYS[1], 1, 0, BLOCK), signed_vote(KEYS[2], VoteKind.PREVOTE, 1, 0, None),
                certificate([0, 1, 2]), SyncRequest(3), SyncResponse(BLOCK, certificate([1, 2, 3])),
                DuplicateVoteEvidence(signed_vote(KEYS[0], VoteKind.PREVOTE, 1, 0, None),
                                      signed_vote(KEYS[0], VoteKind.PREVOTE, 1, 0, BH))]:
        assert CONSENSUS_MESSAGES.decode(msg.encode()) == msg
    assert set(CONSENSUS_MESSAGES.classes().values()) == {
        Proposal, Vote, CommitCertificate, DuplicateVoteEvidence, SyncRequest, SyncResponse}


# --- validate() refuses bad shapes -------------------------------------------------------


def _bad_wire(msg, index: int, value) -> bytes:
    fields = [msg.TAG, *msg.to_fields()]
    fields[index + 1] = value
    return pack(fields)


@pytest.mark.parametrize(("index", "value"), [
    (0, 3),                  # kind out of range
    (0, "prevote"),          # kind not an int
    (1, 0),                  # height 0
    (1, -1),
    (2, MAX_ROUND + 1),      # round too large
    (3, b"short"),           # block hash size
    (4, b"\x01" * 31),       # validator key size
    (5, b"\x02" * 63),       # signature size
    (5, "sig"),
])
def test_vote_validate_refuses_bad_fields(index, value):
    vote = signed_vote(KEYS[0], VoteKind.PREVOTE, 1, 0, BH)
    with pytest.raises(CodecError):
        CONSENSUS_MESSAGES.decode(_bad_wire(vote, index, value))


@pytest.mark.parametrize(("index", "value"), [
    (0, 0),                  # height
    (1, -1),                 # round
    (2, 0),                  # pol_round must be below round (round is 0)
    (2, -2),
    (3, [1, 2]),             # block shape
    (4, b"\x01" * 33),       # proposer size
    (5, b""),                # unsigned
])
def test_proposal_validate_refuses_bad_fields(index, value):
    proposal = signed_proposal(KEYS[1], 1, 0, BLOCK)
    with pytest.raises(CodecError):
        CONSENSUS_MESSAGES.decode(_bad_wire(proposal, index, value))


def test_proposal_validate_refuses_a_block_of_another_height_or_a_wrong_payload_digest():
    with pytest.raises(CodecError, match="height"):
        Proposal(2, 0, -1, BLOCK, PK[1], b"\x00" * 64).validate()
    forged = Block(BLOCK.header, (b"other payload",))
    with pytest.raises(CodecError, match="payload digest"):
        forged.validate()
    with pytest.raises(CodecError):
        Block(BLOCK.header, [b"payload"]).validate()  # payload must be a tuple


@pytest.mark.parametrize(("field", "value"), [
    ("chain_id", 5), ("chain_id", "x" * 65), ("height", 0), ("time_ms", -1),
    ("prev_block_hash", b"\x00"), ("payload_digest", None), ("app_hash", b"\x00" * 33),
    ("validators_hash", "h"), ("proposer", b"\x00" * 31),
])
def test_header_validate_refuses_bad_fields(field, value):
    with pytest.raises(CodecError):
        dataclasses.replace(BLOCK.header, **{field: value}).validate()


def test_block_payload_items_must_be_bytes():
    with pytest.raises(CodecError):
        Block.from_fields([BLOCK.header.to_fields(), ["text"]]).validate()


def test_certificate_validate_refuses_bad_shapes():
    good = certificate([0, 1, 2])
    for bad in [
        dataclasses.replace(good, signatures=()),
        dataclasses.replace(good, signatures=((PK[0],),)),
        dataclasses.replace(good, signatures=((PK[0], b"\x00" * 10),)),
        dataclasses.replace(good, block_hash=b"\x00" * 5),
        dataclasses.replace(good, height=0),
    ]:
        with pytest.raises(CodecError):
            bad.validate()
    with pytest.raises(CodecError):
        CONSENSUS_MESSAGES.decode(pack([CommitCertificate.TAG, 1, 0, BH, [[PK[0]]]]))


def test_evidence_validate_refuses_votes_that_do_not_conflict():
    a = signed_vote(KEYS[0], VoteKind.PREVOTE, 1, 0, BH)
    for b in [
        signed_vote(KEYS[0], VoteKind.PREVOTE, 1, 0, BH),       # same value
        signed_vote(KEYS[1], VoteKind.PREVOTE, 1, 0, None),     # another validator
        signed_vote(KEYS[0], VoteKind.PRECOMMIT, 1, 0, None),   # another kind
        signed_vote(KEYS[0], VoteKind.PREVOTE, 1, 1, None),     # another round
        signed_vote(KEYS[0], VoteKind.PREVOTE, 2, 0, None),     # another height
    ]:
        with pytest.raises(CodecError):
            DuplicateVoteEvidence(a, b).validate()


def test_sync_messages_validate():
    with pytest.raises(CodecError):
        SyncRequest(0).validate()
    with pytest.raises(CodecError, match="another block"):
        SyncResponse(BLOCK, certificate([0, 1, 2], block_hash=b"\x07" * 32)).validate()
    with pytest.raises(CodecError, match="height"):
        SyncResponse(BLOCK, certificate([0, 1, 2], height=2)).validate()


def test_validator_set_validate():
    with pytest.raises(CodecError):
        ValidatorSet(()).validate()
    with pytest.raises(CodecError, match="twice"):
        ValidatorSet((Validator(PK[0], 1), Validator(PK[0], 2))).validate()
    with pytest.raises(CodecError):
        ValidatorSet((Validator(PK[0], 0),)).validate()
    with pytest.raises(CodecError):
        ValidatorSet((Validator(b"\x00" * 3, 1),)).validate()


def test_garbage_never_escapes_as_anything_but_codec_error():
    for data in [b"", b"\xc1", pack([]), pack([99]), pack([Vote.TAG]), pack([Vote.TAG, 1, 2]),
                 pack([Proposal.TAG, 1, 0, -1, 5, PK[0], b"\x00" * 64]),
                 pack([SyncResponse.TAG, [1], [2]]), pack({"a": 1}), pack([Vote.TAG] + [None] * 6)]:
        with pytest.raises(CodecError):
            CONSENSUS_MESSAGES.decode(data)


# --- sign bytes ------------------------------------------------------------------------------


def test_sign_bytes_are_domain_separated_by_kind_and_chain():
    prevote = Vote(VoteKind.PREVOTE, 1, 0, BH, PK[0])
    precommit = Vote(VoteKind.PRECOMMIT, 1, 0, BH, PK[0])
    assert prevote.sign_bytes(CHAIN).startswith(b"bftnode/prevote\x00")
    assert precommit.sign_bytes(CHAIN).startswith(b"bftnode/precommit\x00")
    assert prevote.sign_bytes(CHAIN) != prevote.sign_bytes("other-chain")
    proposal = Proposal(1, 0, -1, BLOCK, PK[1])
    assert proposal.sign_bytes(CHAIN).startswith(b"bftnode/proposal\x00")
    # All precommits for one (height, round, block) sign the same bytes.
    assert precommit.sign_bytes(CHAIN) == Vote(VoteKind.PRECOMMIT, 1, 0, BH, PK[3]).sign_bytes(CHAIN)
    assert certificate([0, 1, 2]).sign_bytes(CHAIN) == precommit.sign_bytes(CHAIN)


def test_header_hash_covers_every_field():
    seen = {BLOCK.header.hash()}
    for field, value in [("chain_id", "c2"), ("height", 2), ("time_ms", 99),
                         ("prev_block_hash", b"\x01" * 32), ("payload_digest", b"\x02" * 32),
                         ("app_hash", b"\x03" * 32), ("validators_hash", b"\x04" * 32),
                         ("proposer", PK[2])]:
        seen.add(dataclasses.replace(BLOCK.header, **{field: value}).hash())
    assert len(seen) == 9
    assert isinstance(BLOCK.header, BlockHeader)


# --- validator sets ---------------------------------------------------------------------------


@pytest.mark.parametrize(("powers", "quorum", "f1"), [
    ([1, 1, 1, 1], 3, 2), ([1, 1, 1], 3, 2), ([1] * 7, 5, 3), ([1], 1, 1),
    ([10, 20, 30], 41, 21), ([1, 1, 1, 1, 1, 1], 5, 3),
])
def test_quorum_arithmetic_is_more_than_two_thirds(powers, quorum, f1):
    vs = make_vset(make_keys(len(powers)), powers)
    total = sum(powers)
    assert vs.total_power == total
    assert vs.quorum == quorum and 3 * vs.quorum > 2 * total and 3 * (vs.quorum - 1) <= 2 * total
    assert vs.f_plus_one == f1 and 3 * vs.f_plus_one > total and 3 * (vs.f_plus_one - 1) <= total


def test_membership_and_power():
    assert len(VSET) == 4 and VSET.public_keys == tuple(PK)
    assert VSET.index_of(PK[2]) == 2 and VSET.index_of(b"\x00" * 32) is None
    assert VSET.power_of(PK[3]) == 1 and VSET.power_of(b"\x00" * 32) == 0
    assert VSET.hash() != make_vset(KEYS, [1, 1, 1, 2]).hash()


def test_proposer_rotation_is_weighted_and_deterministic():
    powers = [1, 2, 3, 4]
    vs = make_vset(make_keys(4), powers)
    total = sum(powers)
    for height in (1, 17):
        turns = [vs.proposer_index(height, r) for r in range(total)]
        assert [turns.count(i) for i in range(4)] == powers  # exact per window of T rounds
    assert vs.proposer(5, 2) == vs.proposer(5, 2) == vs.proposer(6, 1)
    # equal powers: every validator once in any n consecutive rounds
    assert sorted(VSET.proposer_index(3, r) for r in range(4)) == [0, 1, 2, 3]
    assert sorted(VSET.proposer_index(h, 0) for h in range(9, 13)) == [0, 1, 2, 3]


# --- certificates ---------------------------------------------------------------------------


def test_certificate_verifies_with_a_quorum_of_valid_signatures():
    certificate([0, 1, 2]).verify(CHAIN, VSET)
    certificate([0, 1, 2, 3]).verify(CHAIN, VSET)


def test_certificate_verify_uses_one_batch_call():
    calls = []

    def batch(pks, msgs, sigs):
        calls.append(len(pks))
        return [True] * len(pks)

    certificate([3, 1, 0]).verify(CHAIN, VSET, verify_batch=batch)
    assert calls == [3]


def test_certificate_verify_refuses_bad_certificates():
    good = certificate([0, 1, 2])
    sigs = list(good.signatures)
    stranger = make_keys(6)[5]
    foreign = signed_vote(stranger, VoteKind.PRECOMMIT, 1, 0, BH)
    cases = {
        "twice": dataclasses.replace(good, signatures=(sigs[0], sigs[0], sigs[1])),
        "not a member": dataclasses.replace(
            good, signatures=(*sigs[:2], (foreign.validator, foreign.signature))),
        "needs 3": certificate([0, 1]),
        "invalid": dataclasses.replace(good, signatures=(*sigs[:2], (sigs[2][0], sigs[1][1]))),
        "malformed": dataclasses.replace(good, signatures=()),
    }
    for reason, cert in cases.items():
        with pytest.raises(InvalidMessage, match=reason):
            cert.verify(CHAIN, VSET)
    with pytest.raises(InvalidMessage, match="invalid"):
        good.verify("another-chain", VSET)
    with pytest.raises(InvalidMessage, match="invalid"):  # prevotes are not precommits
        prevotes = [signed_vote(KEYS[i], VoteKind.PREVOTE, 1, 0, BH) for i in range(3)]
        CommitCertificate(1, 0, BH, tuple((v.validator, v.signature) for v in prevotes)).verify(CHAIN, VSET)


def test_certificate_respects_voting_power():
    vs = make_vset(KEYS, [1, 1, 1, 5])  # total 8, quorum 6
    with pytest.raises(InvalidMessage, match="needs 6"):
        certificate([0, 1, 2]).verify(CHAIN, vs)
    certificate([0, 3]).verify(CHAIN, vs)


# --- evidence ---------------------------------------------------------------------------------


def test_duplicate_vote_evidence_verifies():
    a = signed_vote(KEYS[2], VoteKind.PRECOMMIT, 4, 1, BH)
    b = signed_vote(KEYS[2], VoteKind.PRECOMMIT, 4, 1, None)
    ev = DuplicateVoteEvidence(a, b)
    ev.verify(CHAIN, VSET)
    assert ev.validator == PK[2]
    with pytest.raises(InvalidMessage, match="invalid signature"):
        DuplicateVoteEvidence(a, b.with_signature(a.signature)).verify(CHAIN, VSET)
    stranger = make_keys(6)[5]
    with pytest.raises(InvalidMessage, match="not a member"):
        DuplicateVoteEvidence(signed_vote(stranger, VoteKind.PREVOTE, 1, 0, None),
                              signed_vote(stranger, VoteKind.PREVOTE, 1, 0, BH)).verify(CHAIN, VSET)
    with pytest.raises(InvalidMessage, match="malformed"):
        DuplicateVoteEvidence(a, a).verify(CHAIN, VSET)


def test_safety_state_validate_refuses_bad_shapes():
    v = signed_vote(KEYS[0], VoteKind.PRECOMMIT, 2, 1, BH)
    good = SafetyState(2, 1, Step.PRECOMMIT, v.sign_bytes(CHAIN), v.signature, 1, BH, None, (v,))
    good.validate()
    for bad in [
        dataclasses.replace(good, lock_round=2),                  # lock above the round
        dataclasses.replace(good, lock_hash=None),                # round without hash
        dataclasses.replace(good, lock_block=make_block(VSET, PK[1], tag=b"other")),
        dataclasses.replace(good, votes=(v, v, v, v, v)),
        dataclasses.replace(good, votes=(signed_vote(KEYS[0], VoteKind.PREVOTE, 3, 0, None),)),
        dataclasses.replace(good, signature=b"short"),
        dataclasses.replace(good, step=5),
    ]:
        with pytest.raises(CodecError):
            bad.validate()
