"""Consensus messages and the values they carry: blocks, proposals, votes, certificates.

Every type is a frozen dataclass and a `WireMessage`: it travels as ``[TAG, *fields]``
(`to_fields` / `from_fields`), and `validate()` checks shapes, ranges and sizes before
any consensus logic sees it, raising `CodecError`.

Sign bytes (DESIGN section 4) are ``domain || 0x00 || msgpack([chain_id, *fields])``
with one domain per kind, so a signature is never valid for another kind or chain:

=====================  ======================  =======================================
kind                   domain                  signed fields after the chain id
=====================  ======================  =======================================
block header (hashed)  ``bftnode/header``      height, time_ms, prev_block_hash,
                                               payload_digest, app_hash,
                                               validators_hash, proposer
proposal               ``bftnode/proposal``    height, round, pol_round, block hash
prevote                ``bftnode/prevote``     height, round, block hash or nil
precommit              ``bftnode/precommit``   height, round, block hash or nil
=====================  ======================  =======================================

A proposal signs the block *hash*, not the block, and a vote does not name its signer
in the signed bytes: the key that verifies it does. So all precommits for one
(height, round, block) sign the same bytes, and a `CommitCertificate` is checked with
one encoding and one batch call.

Hashes and sign bytes are cached on the (immutable) objects: a block travels through
many engines in the simulator and is hashed once.

Wire tags: 16-21 are the consensus link messages in `CONSENSUS_MESSAGES`; 22-25 are
values nested inside them (also tagged, so they can be stored or sent on their own).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from consensus.codec import (
    CodecError,
    Registry,
    WireMessage,
    expect_bytes,
    expect_int,
    expect_list,
    expect_optional_bytes,
    expect_str,
    sign_bytes,
)
from consensus.errors import InvalidMessage
from consensus.validators import MAX_VALIDATORS, Validator, ValidatorSet
from crypto import merkle_root, sha256, verify_batch, verify_one

HASH_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
MAX_HEIGHT = (1 << 63) - 1
MAX_ROUND = (1 << 31) - 1
MAX_CHAIN_ID_LEN = 64
MAX_PAYLOAD_ITEMS = 65_536
MAX_PAYLOAD_ITEM_BYTES = 1 << 20

HEADER_DOMAIN = b"bftnode/header"
PROPOSAL_DOMAIN = b"bftnode/proposal"
PREVOTE_DOMAIN = b"bftnode/prevote"
PRECOMMIT_DOMAIN = b"bftnode/precommit"

VerifyOne = Callable[[bytes, bytes, bytes], bool]
VerifyBatch = Callable[[Sequence[bytes], Sequence[bytes], Sequence[bytes]], list[bool]]


class VoteKind(IntEnum):
    """The two vote kinds; their values are also their `Step`."""

    PREVOTE = 1
    PRECOMMIT = 2


class Step(IntEnum):
    """Steps of a round, in the order SafetyRules enforces: propose < prevote < precommit."""

    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2


_VOTE_DOMAINS = {VoteKind.PREVOTE: PREVOTE_DOMAIN, VoteKind.PRECOMMIT: PRECOMMIT_DOMAIN}


def _expect_height(value: Any, name: str = "height") -> int:
    return expect_int(value, name, lo=1, hi=MAX_HEIGHT)


def _expect_round(value: Any, name: str = "round") -> int:
    return expect_int(value, name, lo=0, hi=MAX_ROUND)


def vote_sign_bytes(kind: VoteKind, chain_id: str, height: int, round: int,
                    block_hash: bytes | None) -> bytes:
    """Sign bytes of a vote; shared by `Vote` and `CommitCertificate`."""
    return sign_bytes(_VOTE_DOMAINS[kind], chain_id, (height, round, block_hash))


# --- blocks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockHeader(WireMessage):
    """What a block commits to. Its hash is the block's identity in votes and certificates."""

    TAG = 22

    chain_id: str
    height: int
    time_ms: int
    prev_block_hash: bytes
    payload_digest: bytes
    app_hash: bytes
    validators_hash: bytes
    proposer: bytes

    def hash(self) -> bytes:
        """sha256 of the header's sign bytes (domain ``bftnode/header``); cached."""
        h = self.__dict__.get("_hash")
        if h is None:
            h = sha256(sign_bytes(HEADER_DOMAIN, self.chain_id, self.to_fields()[1:]))
            self.__dict__["_hash"] = h
        return h

    def to_fields(self) -> list[Any]:
        return [self.chain_id, self.height, self.time_ms, self.prev_block_hash,
                self.payload_digest, self.app_hash, self.validators_hash, self.proposer]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> BlockHeader:
        expect_list(fields, "BlockHeader", length=8)
        return cls(*fields)

    def validate(self) -> None:
        expect_str(self.chain_id, "header chain_id", max_len=MAX_CHAIN_ID_LEN)
        _expect_height(self.height, "header height")
        expect_int(self.time_ms, "header time_ms", lo=0, hi=MAX_HEIGHT)
        expect_bytes(self.prev_block_hash, "header prev_block_hash", size=HASH_SIZE)
        expect_bytes(self.payload_digest, "header payload_digest", size=HASH_SIZE)
        expect_bytes(self.app_hash, "header app_hash", size=HASH_SIZE)
        expect_bytes(self.validators_hash, "header validators_hash", size=HASH_SIZE)
        expect_bytes(self.proposer, "header proposer", size=PUBLIC_KEY_SIZE)


@dataclass(frozen=True)
class Block(WireMessage):
    """A header and the payload it commits to (batch digests in the node, any bytes in
    the simulator). ``validate()`` checks ``header.payload_digest == merkle_root(payload)``."""

    TAG = 23

    header: BlockHeader
    payload: tuple[bytes, ...]

    @classmethod
    def build(cls, *, chain_id: str, height: int, time_ms: int, prev_block_hash: bytes,
              payload: Sequence[bytes], app_hash: bytes, validators_hash: bytes,
              proposer: bytes) -> Block:
        """A block whose payload digest is computed from `payload`."""
        payload = tuple(payload)
        header = BlockHeader(chain_id, height, time_ms, prev_block_hash, merkle_root(payload),
                             app_hash, validators_hash, proposer)
        return cls(header, payload)

    def hash(self) -> bytes:
        return self.header.hash()

    @property
    def height(self) -> int:
        return self.header.height

    def to_fields(self) -> list[Any]:
        return [self.header.to_fields(), list(self.payload)]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Block:
        expect_list(fields, "Block", length=2)
        payload = expect_list(fields[1], "block payload", max_len=MAX_PAYLOAD_ITEMS)
        return cls(BlockHeader.from_fields(fields[0]), tuple(payload))

    def validate(self) -> None:
        if self.__dict__.get("_ok"):
            return
        if not isinstance(self.header, BlockHeader):
            raise CodecError("block header must be a BlockHeader")
        self.header.validate()
        if type(self.payload) is not tuple:
            raise CodecError(f"block payload must be a tuple, got {type(self.payload).__name__}")
        if len(self.payload) > MAX_PAYLOAD_ITEMS:
            raise CodecError(f"block payload has {len(self.payload)} items, more than {MAX_PAYLOAD_ITEMS}")
        for item in self.payload:
            expect_bytes(item, "block payload item", max_size=MAX_PAYLOAD_ITEM_BYTES)
        if merkle_root(self.payload) != self.header.payload_digest:
            raise CodecError(
                f"block at height {self.header.height}: payload digest does not match its payload"
            )
        self.__dict__["_ok"] = True


# --- proposals and votes -----------------------------------------------------------------


@dataclass(frozen=True)
class Proposal(WireMessage):
    """The proposer's value for (height, round); ``pol_round`` is the round of the polka
    that justifies re-proposing a valid value, -1 when there is none."""

    TAG = 16

    height: int
    round: int
    pol_round: int
    block: Block
    proposer: bytes
    signature: bytes = b""

    def sign_bytes(self, chain_id: str) -> bytes:
        """Bytes the proposer signs: (height, round, pol_round, block hash); cached."""
        c = self.__dict__.get("_sb")
        if c is not None and c[0] == chain_id:
            return c[1]
        sb = sign_bytes(PROPOSAL_DOMAIN, chain_id,
                        (self.height, self.round, self.pol_round, self.block.hash()))
        self.__dict__["_sb"] = (chain_id, sb)
        return sb

    def with_signature(self, signature: bytes) -> Proposal:
        signed = Proposal(self.height, self.round, self.pol_round, self.block, self.proposer,
                          signature)
        if "_sb" in self.__dict__:
            signed.__dict__["_sb"] = self.__dict__["_sb"]
        return signed

    def to_fields(self) -> list[Any]:
        return [self.height, self.round, self.pol_round, self.block.to_fields(),
                self.proposer, self.signature]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Proposal:
        expect_list(fields, "Proposal", length=6)
        return cls(fields[0], fields[1], fields[2], Block.from_fields(fields[3]),
                   fields[4], fields[5])

    def validate(self) -> None:
        _expect_height(self.height, "proposal height")
        _expect_round(self.round, "proposal round")
        expect_int(self.pol_round, "proposal pol_round", lo=-1, hi=MAX_ROUND)
        if self.pol_round >= self.round:
            raise CodecError(
                f"proposal for round {self.round} has pol_round {self.pol_round}; it must be lower"
            )
        if not isinstance(self.block, Block):
            raise CodecError("proposal block must be a Block")
        self.block.validate()
        if self.block.header.height != self.height:
            raise CodecError(
                f"proposal for height {self.height} carries a block of height {self.block.header.height}"
            )
        expect_bytes(self.proposer, "proposal proposer", size=PUBLIC_KEY_SIZE)
        expect_bytes(self.signature, "proposal signature", size=SIGNATURE_SIZE)


@dataclass(frozen=True)
class Vote(WireMessage):
    """A prevote or precommit for a block hash, or for nil (``block_hash=None``)."""

    TAG = 17

    kind: VoteKind
    height: int
    round: int
    block_hash: bytes | None
    validator: bytes
    signature: bytes = b""

    def sign_bytes(self, chain_id: str) -> bytes:
        """Bytes the validator signs: (height, round, block hash or nil); cached."""
        c = self.__dict__.get("_sb")
        if c is not None and c[0] == chain_id:
            return c[1]
        sb = vote_sign_bytes(self.kind, chain_id, self.height, self.round, self.block_hash)
        self.__dict__["_sb"] = (chain_id, sb)
        return sb

    def with_signature(self, signature: bytes) -> Vote:
        signed = Vote(self.kind, self.height, self.round, self.block_hash, self.validator,
                      signature)
        if "_sb" in self.__dict__:
            signed.__dict__["_sb"] = self.__dict__["_sb"]
        return signed

    def to_fields(self) -> list[Any]:
        return [int(self.kind), self.height, self.round, self.block_hash, self.validator,
                self.signature]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Vote:
        expect_list(fields, "Vote", length=6)
        kind = expect_int(fields[0], "vote kind", lo=1, hi=2)
        return cls(VoteKind(kind), *fields[1:])

    def validate(self) -> None:
        if not isinstance(self.kind, VoteKind):
            raise CodecError(f"vote kind must be a VoteKind, got {self.kind!r}")
        _expect_height(self.height, "vote height")
        _expect_round(self.round, "vote round")
        expect_optional_bytes(self.block_hash, "vote block_hash", HASH_SIZE)
        expect_bytes(self.validator, "vote validator", size=PUBLIC_KEY_SIZE)
        expect_bytes(self.signature, "vote signature", size=SIGNATURE_SIZE)


# --- certificates and evidence -----------------------------------------------------------


@dataclass(frozen=True)
class CommitCertificate(WireMessage):
    """Precommits of more than 2/3 of the power for one block: proof that it is final.

    ``signatures`` is ``((validator public key, precommit signature), ...)``, in
    validator-set order when built by the engine.
    """

    TAG = 18

    height: int
    round: int
    block_hash: bytes
    signatures: tuple[tuple[bytes, bytes], ...]

    def sign_bytes(self, chain_id: str) -> bytes:
        """The precommit sign bytes every signature in the certificate covers."""
        return vote_sign_bytes(VoteKind.PRECOMMIT, chain_id, self.height, self.round,
                               self.block_hash)

    def verify(self, chain_id: str, validators: ValidatorSet,
               verify_batch: VerifyBatch = verify_batch) -> None:
        """Raise `InvalidMessage` unless this certificate proves its block final.

        Checks that the signers are distinct members of `validators` holding more than
        2/3 of the power, and that every signature is a valid precommit for
        (height, round, block_hash) on `chain_id`: one `verify_batch` call for all.
        """
        try:
            self.validate()
        except CodecError as exc:
            raise InvalidMessage(f"malformed commit certificate: {exc}") from None
        power = 0
        seen: set[bytes] = set()
        for pk, _ in self.signatures:
            if pk in seen:
                raise InvalidMessage(
                    f"commit certificate for height {self.height} lists validator {pk.hex()[:16]} twice"
                )
            seen.add(pk)
            p = validators.power_of(pk)
            if p == 0:
                raise InvalidMessage(
                    f"commit certificate for height {self.height} is signed by {pk.hex()[:16]}, "
                    "not a member of the validator set"
                )
            power += p
        if power < validators.quorum:
            raise InvalidMessage(
                f"commit certificate for height {self.height} holds power {power} of "
                f"{validators.total_power}; it needs {validators.quorum}"
            )
        sb = self.sign_bytes(chain_id)
        n = len(self.signatures)
        verdicts = verify_batch([pk for pk, _ in self.signatures], [sb] * n,
                                [sig for _, sig in self.signatures])
        for (pk, _), ok in zip(self.signatures, verdicts, strict=True):
            if not ok:
                raise InvalidMessage(
                    f"commit certificate for height {self.height}: the precommit signature of "
                    f"validator {pk.hex()[:16]} is invalid"
                )

    def to_fields(self) -> list[Any]:
        return [self.height, self.round, self.block_hash, [list(s) for s in self.signatures]]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> CommitCertificate:
        expect_list(fields, "CommitCertificate", length=4)
        sigs = expect_list(fields[3], "certificate signatures", max_len=MAX_VALIDATORS)
        pairs = tuple(tuple(expect_list(p, "certificate signature", length=2)) for p in sigs)
        return cls(fields[0], fields[1], fields[2], pairs)  # type: ignore[arg-type]

    def validate(self) -> None:
        _expect_height(self.height, "certificate height")
        _expect_round(self.round, "certificate round")
        expect_bytes(self.block_hash, "certificate block_hash", size=HASH_SIZE)
        if type(self.signatures) is not tuple or not self.signatures:
            raise CodecError("certificate signatures must be a non-empty tuple")
        if len(self.signatures) > MAX_VALIDATORS:
            raise CodecError(f"certificate has more than {MAX_VALIDATORS} signatures")
        for pair in self.signatures:
            if type(pair) is not tuple or len(pair) != 2:
                raise CodecError("certificate signature must be a (public key, signature) pair")
            expect_bytes(pair[0], "certificate signer", size=PUBLIC_KEY_SIZE)
            expect_bytes(pair[1], "certificate signature", size=SIGNATURE_SIZE)


@dataclass(frozen=True)
class DuplicateVoteEvidence(WireMessage):
    """Two votes by one validator for the same (kind, height, round) and different values
    (nil counts as a value): proof that the validator equivocated."""

    TAG = 19

    vote_a: Vote
    vote_b: Vote

    @property
    def validator(self) -> bytes:
        return self.vote_a.validator

    def verify(self, chain_id: str, validators: ValidatorSet,
               verify: VerifyOne = verify_one) -> None:
        """Raise `InvalidMessage` unless both votes are validly signed by the same member."""
        try:
            self.validate()
        except CodecError as exc:
            raise InvalidMessage(f"malformed duplicate-vote evidence: {exc}") from None
        a = self.vote_a
        if validators.index_of(a.validator) is None:
            raise InvalidMessage(
                f"duplicate-vote evidence names {a.validator.hex()[:16]}, not a member of the set"
            )
        for label, v in (("first", a), ("second", self.vote_b)):
            if not verify(v.validator, v.sign_bytes(chain_id), v.signature):
                raise InvalidMessage(
                    f"duplicate-vote evidence at height {v.height} round {v.round}: the {label} "
                    f"vote of validator {v.validator.hex()[:16]} has an invalid signature"
                )

    def to_fields(self) -> list[Any]:
        return [self.vote_a.to_fields(), self.vote_b.to_fields()]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> DuplicateVoteEvidence:
        expect_list(fields, "DuplicateVoteEvidence", length=2)
        return cls(Vote.from_fields(fields[0]), Vote.from_fields(fields[1]))

    def validate(self) -> None:
        a, b = self.vote_a, self.vote_b
        if not isinstance(a, Vote) or not isinstance(b, Vote):
            raise CodecError("duplicate-vote evidence must hold two Votes")
        a.validate()
        b.validate()
        if (a.validator, a.kind, a.height, a.round) != (b.validator, b.kind, b.height, b.round):
            raise CodecError(
                "duplicate-vote evidence must hold two votes by one validator for the same "
                "kind, height and round"
            )
        if a.block_hash == b.block_hash:
            raise CodecError("duplicate-vote evidence holds two votes for the same value")


# --- block sync ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncRequest(WireMessage):
    """Ask a peer for the certified block at `height`."""

    TAG = 20

    height: int

    def to_fields(self) -> list[Any]:
        return [self.height]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> SyncRequest:
        expect_list(fields, "SyncRequest", length=1)
        return cls(fields[0])

    def validate(self) -> None:
        _expect_height(self.height, "sync request height")


@dataclass(frozen=True)
class SyncResponse(WireMessage):
    """A committed block with its commit certificate; fed to `Engine.on_certified_block`."""

    TAG = 21

    block: Block
    certificate: CommitCertificate

    def to_fields(self) -> list[Any]:
        return [self.block.to_fields(), self.certificate.to_fields()]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> SyncResponse:
        expect_list(fields, "SyncResponse", length=2)
        return cls(Block.from_fields(fields[0]), CommitCertificate.from_fields(fields[1]))

    def validate(self) -> None:
        if not isinstance(self.block, Block) or not isinstance(self.certificate, CommitCertificate):
            raise CodecError("sync response must hold a Block and a CommitCertificate")
        self.block.validate()
        self.certificate.validate()
        if self.certificate.height != self.block.header.height:
            raise CodecError(
                f"sync response: certificate for height {self.certificate.height} with a block "
                f"of height {self.block.header.height}"
            )
        if self.certificate.block_hash != self.block.hash():
            raise CodecError(
                f"sync response for height {self.certificate.height}: the certificate is for "
                "another block"
            )


CONSENSUS_MESSAGES = Registry("consensus")
for _cls in (Proposal, Vote, CommitCertificate, DuplicateVoteEvidence, SyncRequest, SyncResponse):
    CONSENSUS_MESSAGES.register(_cls)
del _cls

__all__ = [
    "CONSENSUS_MESSAGES",
    "Block",
    "BlockHeader",
    "CommitCertificate",
    "DuplicateVoteEvidence",
    "Proposal",
    "Step",
    "SyncRequest",
    "SyncResponse",
    "Validator",
    "ValidatorSet",
    "Vote",
    "VoteKind",
    "vote_sign_bytes",
]
