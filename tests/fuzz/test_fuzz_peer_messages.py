"""The peer message decoder (node.wire.PEER_MESSAGES.decode) against random bytes,
byte-mutated valid messages of every type, and valid messages with one field
replaced by an arbitrary value.

One error type comes out: CodecError. A message that does decode is valid by its
own rules and is a fixed point of the codec (its encoding decodes to an equal
message), so what the node's logic sees never depends on how a peer spelled it.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.codec import CodecError, Limits, pack, unpack
from consensus.types import Block, DuplicateVoteEvidence, Proposal, Vote, VoteKind
from crypto import PrivateKey, sha256
from node.tx import Batch
from node.wallet import Wallet
from node.wire import (
    PEER_MESSAGES,
    BatchGossip,
    BatchRequest,
    BlockSyncRequest,
    BlockSyncResponse,
)

from .conftest import FUZZ, MSGPACK_VALUES, TIMEOUT_S, mutated, replace_node

pytestmark = pytest.mark.timeout(TIMEOUT_S)
CHAIN = "fuzz-chain"
KEY = PrivateKey.from_seed(b"k" * 32)
LIMITS = Limits(max_bytes=4 * 1024 * 1024)


def _vote(kind: VoteKind, height: int, round: int, block_hash: bytes | None) -> Vote:
    v = Vote(kind, height, round, block_hash, KEY.public_key)
    return v.with_signature(KEY.sign(v.sign_bytes(CHAIN)))


def _valid_messages() -> list[bytes]:
    w = Wallet.from_seed(b"w" * 32)
    batch = Batch(tuple(w.kv_set(CHAIN, b"k%d" % i, b"v") for i in range(3)))
    block = Block.build(chain_id=CHAIN, height=7, time_ms=1_700_000_000_000,
                        prev_block_hash=sha256(b"prev"), payload=[batch.digest()],
                        app_hash=sha256(b"app"), validators_hash=sha256(b"vals"),
                        proposer=KEY.public_key)
    proposal = Proposal(7, 1, 0, block, KEY.public_key)
    proposal = proposal.with_signature(KEY.sign(proposal.sign_bytes(CHAIN)))
    messages = [
        proposal,
        _vote(VoteKind.PREVOTE, 7, 1, block.hash()),
        _vote(VoteKind.PRECOMMIT, 7, 1, None),
        DuplicateVoteEvidence(_vote(VoteKind.PREVOTE, 7, 2, block.hash()),
                              _vote(VoteKind.PREVOTE, 7, 2, None)),
        BatchGossip(batch.encode()),
        BatchRequest((batch.digest(), sha256(b"other"))),
        BlockSyncRequest(5, 16),
        BlockSyncResponse(((block.encode(), b"\x93\x01\x02\x03", (batch.encode(),)),)),
    ]
    out = []
    for m in messages:
        data = m.encode()
        assert PEER_MESSAGES.decode(data, LIMITS) == m  # the seeds are valid
        out.append(data)
    return out


VALID = _valid_messages()
valid = st.sampled_from(VALID)


def check(data: bytes) -> None:
    try:
        msg = PEER_MESSAGES.decode(data, LIMITS)
    except CodecError:
        return
    msg.validate()
    again = PEER_MESSAGES.decode(msg.encode(), LIMITS)
    assert again == msg


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_codec_error(data):
    check(data)
    check(bytes([0x90 + len(VALID) % 8]) + data)  # an array header first: past the 1st byte


@FUZZ
@given(mutated(valid, max_edits=6))
def test_mutated_valid_messages_raise_only_codec_error(data):
    check(data)


@FUZZ
@given(valid, st.lists(st.integers(0, 64), min_size=1, max_size=5), MSGPACK_VALUES)
def test_any_field_replaced_by_any_value_raises_only_codec_error(data, path, value):
    obj = unpack(data, LIMITS)
    try:
        encoded = pack(replace_node(obj, path, value))
    except CodecError:
        return
    check(encoded)


@FUZZ
@given(valid, st.integers(1, 64), st.integers(1, 4))
def test_tight_limits_refuse_with_codec_error(data, max_bytes, max_depth):
    try:
        PEER_MESSAGES.decode(data, Limits(max_bytes=max_bytes, max_depth=max_depth,
                                          max_container_len=4, max_str_len=8))
    except CodecError:
        pass
