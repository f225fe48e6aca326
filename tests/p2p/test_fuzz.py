"""Random bytes into the sans-IO decoders: only the documented errors come out, never a hang.

Documented errors: `HandshakeError` from `Handshake`, `ChannelError` (with its
`FrameError` subclasses) from `SecureChannel` and `FrameDecoder`.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto.errors import ChannelError, HandshakeError
from crypto.keys import PrivateKey
from crypto.secure_channel import AUTH_SIZE, HELLO_SIZE, Handshake, SecureChannel
from node.p2p.framing import FrameDecoder

CHAIN = "fuzz"
KEY_A, KEY_B = PrivateKey.from_seed(b"a" * 32), PrivateKey.from_seed(b"b" * 32)
ALLOWED = {KEY_A.public_key, KEY_B.public_key}
pytestmark = pytest.mark.timeout(60)  # a hang fails the test instead of stalling the suite
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def hello_like() -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, and hellos with a valid prefix and a random tail (reaches X25519)."""
    prefix = Handshake(KEY_B, CHAIN, ALLOWED).hello()[:HELLO_SIZE - 32]
    return st.one_of(
        st.binary(max_size=2 * HELLO_SIZE),
        st.binary(min_size=32, max_size=32).map(lambda tail: prefix + tail),
    )


@FUZZ
@given(hello_like())
def test_receive_hello_raises_only_handshake_error(data):
    try:
        Handshake(KEY_A, CHAIN, ALLOWED).receive_hello(data)
    except HandshakeError:
        pass


@FUZZ
@given(st.one_of(st.binary(max_size=2 * AUTH_SIZE), st.binary(min_size=AUTH_SIZE,
                                                                max_size=AUTH_SIZE)))
def test_receive_auth_raises_only_handshake_error(data):
    a = Handshake(KEY_A, CHAIN, ALLOWED)
    a.receive_hello(Handshake(KEY_B, CHAIN, ALLOWED).hello())
    try:
        a.receive_auth(data)
    except HandshakeError:
        pass


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_channel_decrypt_raises_only_channel_error(frames):
    channel = SecureChannel(KEY_B.public_key, b"k" * 32, b"r" * 32)
    for frame in frames:
        try:
            channel.decrypt(frame)
        except ChannelError:
            pass


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=12), st.integers(0, 300))
def test_frame_decoder_raises_only_channel_error(chunks, max_frame):
    decoder = FrameDecoder(max_frame_bytes=max_frame, min_frame_bytes=min(max_frame, 17))
    try:
        for chunk in chunks:
            for frame in decoder.frames(chunk):
                assert decoder.min_frame_bytes <= len(frame) <= max_frame
            assert decoder.buffered < 4 + max_frame
    except ChannelError:
        pass
