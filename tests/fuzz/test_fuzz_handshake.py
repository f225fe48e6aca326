"""The secure-channel handshake (crypto.secure_channel.Handshake) with messages tampered
in transit, steps out of order, and the established channel with tampered frames.

tests/p2p/test_fuzz.py feeds one side random hellos and auths; here two real sides
talk and an adversary in the middle edits one message of the four, so every edit
starts from bytes that were valid a moment before. The one error type is
HandshakeError (ChannelError for frames after the handshake), and no edit ever
ends in two sides that both think they are connected but disagree on keys or peers.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto.errors import ChannelError, HandshakeError
from crypto.keys import PrivateKey
from crypto.secure_channel import AUTH_SIZE, Handshake

from .conftest import FUZZ, TIMEOUT_S, apply_edits, mutated

pytestmark = pytest.mark.timeout(TIMEOUT_S)
CHAIN = "fuzz-chain"
A, B = PrivateKey.from_seed(b"A" * 32), PrivateKey.from_seed(b"B" * 32)
ALLOWED = {A.public_key, B.public_key}
EDITS = st.lists(st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate",
                                            "duplicate"]),
                           st.integers(0, 1 << 20), st.integers(0, 255),
                           st.binary(min_size=1, max_size=16)), min_size=1, max_size=3)


def run(tamper_at: int, edits, ephemeral_a: bytes, ephemeral_b: bytes):
    """Both sides, in the wire order hello A, hello B, auth A, auth B; message number
    `tamper_at` is edited. Returns (channel A or error, channel B or error, changed)."""
    a = Handshake(A, CHAIN, ALLOWED, expected_peer=B.public_key, ephemeral_private=ephemeral_a)
    b = Handshake(B, CHAIN, ALLOWED, ephemeral_private=ephemeral_b)
    changed = False

    def wire(i: int, data: bytes) -> bytes:
        nonlocal changed
        if i != tamper_at:
            return data
        out = apply_edits(data, edits)
        changed = out != data
        return out

    hello_a, hello_b = wire(0, a.hello()), wire(1, b.hello())
    results: list[object] = [None, None]
    auths: list[bytes | None] = [None, None]
    for side, (hs, hello) in enumerate(((a, hello_b), (b, hello_a))):
        try:
            auths[side] = hs.receive_hello(hello)
        except HandshakeError as exc:
            results[side] = exc
    for side, (hs, i) in enumerate(((a, 3), (b, 2))):  # A reads B's auth (message 3)
        other = auths[1 - side]
        if results[side] is not None:
            with pytest.raises(HandshakeError):  # a failed handshake stays failed
                hs.receive_auth(other or bytes(96))
            continue
        if other is None:
            continue  # the peer failed before sending its auth: this side just waits
        try:
            results[side] = hs.receive_auth(wire(i, other))
        except HandshakeError as exc:
            results[side] = exc
    return results[0], results[1], changed


@FUZZ
@given(st.integers(0, 3), EDITS, st.binary(min_size=32, max_size=32),
       st.binary(min_size=32, max_size=32))
def test_tampering_with_any_message_fails_cleanly(tamper_at, edits, eph_a, eph_b):
    res_a, res_b, changed = run(tamper_at, edits, eph_a, eph_b)
    for r in (res_a, res_b):
        assert r is None or isinstance(r, HandshakeError) or hasattr(r, "encrypt"), r
    both_up = hasattr(res_a, "encrypt") and hasattr(res_b, "encrypt")
    if changed:
        assert not both_up, "a tampered handshake completed on both sides"
    if both_up:
        assert res_a.peer_public_key == B.public_key and res_b.peer_public_key == A.public_key
        assert res_b.decrypt(res_a.encrypt(b"ping")) == b"ping"
        assert res_a.decrypt(res_b.encrypt(b"pong")) == b"pong"


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["hello", "receive_hello", "receive_auth"]),
                          st.one_of(st.binary(max_size=160), st.sampled_from(["real"]))),
                max_size=6))
def test_steps_in_any_order_with_any_bytes_raise_only_handshake_error(steps):
    peer = Handshake(B, CHAIN, ALLOWED)
    real = {"receive_hello": peer.hello(), "receive_auth": None}
    hs = Handshake(A, CHAIN, ALLOWED)
    failed = False
    for name, data in steps:
        if name == "hello":
            hs.hello()
            continue
        if data == "real":
            data = real[name]
            if data is None:  # B's auth exists only once B has read A's hello
                data = real["receive_auth"] = peer.receive_hello(hs.hello())
        try:
            getattr(hs, name)(data)
        except HandshakeError:
            failed = True
            continue
        assert not failed, "a call succeeded after the handshake had failed"


@FUZZ
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=6), st.integers(0, 5), EDITS)
def test_tampered_frame_closes_the_channel(plaintexts, which, edits):
    a = Handshake(A, CHAIN, ALLOWED)
    b = Handshake(B, CHAIN, ALLOWED)
    auth_a, auth_b = a.receive_hello(b.hello()), b.receive_hello(a.hello())
    ca, cb = a.receive_auth(auth_b), b.receive_auth(auth_a)
    which %= len(plaintexts)
    for i, p in enumerate(plaintexts):
        frame = ca.encrypt(p)
        if i == which:
            bad = apply_edits(frame, edits)
            if bad != frame:
                with pytest.raises(ChannelError):
                    cb.decrypt(bad)
                assert cb.closed
                with pytest.raises(ChannelError):  # closed for good, even for a good frame
                    cb.decrypt(frame)
                return
        assert cb.decrypt(frame) == p


@FUZZ
@given(mutated(st.just(Handshake(B, CHAIN, ALLOWED, ephemeral_private=b"e" * 32).hello())))
def test_mutated_hello_raises_only_handshake_error(hello):
    try:
        auth = Handshake(A, CHAIN, ALLOWED).receive_hello(hello)
    except HandshakeError:
        return
    assert len(auth) == AUTH_SIZE  # the edit kept magic, version and chain tag
