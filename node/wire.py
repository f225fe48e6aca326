"""Messages on the peer link (one registry for everything a peer may send us).

A peer frame's plaintext is one message: ``[tag, *fields]``. Consensus messages
keep their own tags from `consensus.types`; the node adds batch dissemination
and block sync. Everything a peer sends goes through `PEER_MESSAGES.decode`,
which validates shapes and sizes before any logic sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from consensus.codec import (
    CodecError,
    Limits,
    Registry,
    WireMessage,
    expect_bytes,
    expect_int,
    expect_list,
    unpack,
)
from consensus.types import (
    Block,
    CommitCertificate,
    DuplicateVoteEvidence,
    Proposal,
    Vote,
)

MAX_SYNC_BLOCKS = 16
MAX_BATCH_REQUEST = 256

PEER_MESSAGES = Registry("peer")
for _cls in (Proposal, Vote, DuplicateVoteEvidence):
    PEER_MESSAGES.register(_cls)
del _cls


@PEER_MESSAGES.register
@dataclass(frozen=True)
class BatchGossip(WireMessage):
    """A sealed batch pushed by the validator that made it."""

    TAG: ClassVar[int] = 80
    encoded: bytes

    def to_fields(self) -> list[Any]:
        return [self.encoded]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> BatchGossip:
        (encoded,) = fields
        return cls(encoded)

    def validate(self) -> None:
        expect_bytes(self.encoded, "batch")


@PEER_MESSAGES.register
@dataclass(frozen=True)
class BatchRequest(WireMessage):
    """Ask a peer for batches named in a proposal that we do not hold."""

    TAG: ClassVar[int] = 81
    digests: tuple[bytes, ...]

    def to_fields(self) -> list[Any]:
        return [list(self.digests)]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> BatchRequest:
        (digests,) = fields
        expect_list(digests, "batch request digests", max_len=MAX_BATCH_REQUEST)
        return cls(tuple(digests))

    def validate(self) -> None:
        for d in self.digests:
            expect_bytes(d, "batch digest", size=32)


@PEER_MESSAGES.register
@dataclass(frozen=True)
class BlockSyncRequest(WireMessage):
    """Ask for certified blocks from `height` on (at most `count`)."""

    TAG: ClassVar[int] = 83
    height: int
    count: int

    def to_fields(self) -> list[Any]:
        return [self.height, self.count]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> BlockSyncRequest:
        height, count = fields
        return cls(height, count)

    def validate(self) -> None:
        expect_int(self.height, "sync height", lo=1)
        expect_int(self.count, "sync count", lo=1, hi=MAX_SYNC_BLOCKS)


@PEER_MESSAGES.register
@dataclass(frozen=True)
class BlockSyncResponse(WireMessage):
    """Certified blocks, each with its batches: ``[[block, cert, [batch...]], ...]``."""

    TAG: ClassVar[int] = 84
    blocks: tuple[tuple[bytes, bytes, tuple[bytes, ...]], ...]

    def to_fields(self) -> list[Any]:
        return [[[b, c, list(bs)] for b, c, bs in self.blocks]]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> BlockSyncResponse:
        (blocks,) = fields
        expect_list(blocks, "sync blocks", max_len=MAX_SYNC_BLOCKS)
        out = []
        for item in blocks:
            expect_list(item, "sync block", length=3)
            expect_list(item[2], "sync block batches", max_len=65_536)
            out.append((item[0], item[1], tuple(item[2])))
        return cls(tuple(out))

    def validate(self) -> None:
        for block, cert, batches in self.blocks:
            expect_bytes(block, "sync block")
            expect_bytes(cert, "sync certificate")
            for b in batches:
                expect_bytes(b, "sync batch")


_STORED = Registry("stored")
_STORED.register(Block)
_STORED.register(CommitCertificate)


def decode_block(data: bytes) -> Block:
    msg = _STORED.decode(data, Limits(max_bytes=len(data) + 1))
    if not isinstance(msg, Block):
        raise CodecError("expected a block")
    return msg


def decode_certificate(data: bytes) -> CommitCertificate:
    msg = _STORED.decode(data, Limits(max_bytes=len(data) + 1))
    if not isinstance(msg, CommitCertificate):
        raise CodecError("expected a commit certificate")
    return msg


def unpack_trusted(data: bytes) -> Any:
    """Decode bytes that came from this node's own store or actors (still bounded)."""
    return unpack(data, Limits(max_bytes=max(len(data), 1)))
