"""The sans-IO handshake and frame cipher of crypto.secure_channel."""

from __future__ import annotations

import pytest

from crypto.errors import ChannelError, HandshakeError
from crypto.keys import PrivateKey, address
from crypto.secure_channel import (
    AUTH_SIZE,
    HELLO_SIZE,
    NONCE_LIMIT,
    Handshake,
    SecureChannel,
    UnknownPeerError,
)

CHAIN = "sc-test"


def run_handshake(a: Handshake, b: Handshake) -> tuple[SecureChannel, SecureChannel]:
    hello_a, hello_b = a.hello(), b.hello()
    auth_a, auth_b = a.receive_hello(hello_b), b.receive_hello(hello_a)
    return a.receive_auth(auth_b), b.receive_auth(auth_a)


@pytest.fixture
def keys() -> tuple[PrivateKey, PrivateKey]:
    return PrivateKey.generate(), PrivateKey.generate()


def test_handshake_authenticates_both_sides_and_frames_flow(keys):
    ka, kb = keys
    a = Handshake(ka, CHAIN, {kb.public_key}, expected_peer=kb.public_key)
    b = Handshake(kb, CHAIN, lambda pk: pk == ka.public_key)
    assert len(a.hello()) == HELLO_SIZE
    ca, cb = run_handshake(a, b)
    assert ca.peer_public_key == kb.public_key and cb.peer_public_key == ka.public_key
    for i in range(3):
        assert cb.decrypt(ca.encrypt(b"to b %d" % i)) == b"to b %d" % i
        assert ca.decrypt(cb.encrypt(b"to a %d" % i)) == b"to a %d" % i
    assert ca.send_counter == cb.recv_counter == 4  # auth was frame 0


def test_auth_message_size(keys):
    ka, kb = keys
    a, b = Handshake(ka, CHAIN, {kb.public_key}), Handshake(kb, CHAIN, {ka.public_key})
    assert len(a.receive_hello(b.hello())) == AUTH_SIZE


def test_peer_outside_the_allow_list_is_refused_by_address(keys):
    ka, kb = keys
    a = Handshake(ka, CHAIN, set())
    b = Handshake(kb, CHAIN, {ka.public_key})
    with pytest.raises(UnknownPeerError, match=f"peer {address(kb.public_key)} is not in the "
                                               "validator set"):
        run_handshake(a, b)


def test_dialer_refuses_a_peer_other_than_the_one_it_dialed(keys):
    ka, kb = keys
    other = PrivateKey.generate().public_key
    a = Handshake(ka, CHAIN, {kb.public_key, other}, expected_peer=other)
    b = Handshake(kb, CHAIN, {ka.public_key})
    with pytest.raises(HandshakeError, match="authenticated as"):
        run_handshake(a, b)


def test_other_chain_is_refused_at_hello(keys):
    ka, kb = keys
    a = Handshake(ka, CHAIN, {kb.public_key})
    b = Handshake(kb, "another-chain", {ka.public_key})
    with pytest.raises(HandshakeError, match="another chain"):
        a.receive_hello(b.hello())


def test_recorded_auth_replayed_into_a_new_session_fails(keys):
    """A recorded handshake is useless in a new session: its keys and transcript differ."""
    ka, kb = keys
    first_a = Handshake(ka, CHAIN, {kb.public_key})
    first_b = Handshake(kb, CHAIN, {ka.public_key})
    recorded_hello = first_a.hello()
    recorded_auth = first_a.receive_hello(first_b.hello())
    first_b.receive_hello(recorded_hello)
    first_b.receive_auth(recorded_auth)  # the genuine session works

    victim = Handshake(kb, CHAIN, {ka.public_key})  # a new session, fresh ephemeral
    victim.receive_hello(recorded_hello)
    with pytest.raises(HandshakeError, match="does not decrypt"):
        victim.receive_auth(recorded_auth)


class RecordingIdentity:
    """Signs with a real key and keeps every signature it made."""

    def __init__(self, key: PrivateKey) -> None:
        self.key, self.public_key, self.signatures = key, key.public_key, []

    def sign(self, message: bytes) -> bytes:
        self.signatures.append(self.key.sign(message))
        return self.signatures[-1]


class ReplayingIdentity:
    """Claims a public key and offers an old signature made by its owner."""

    def __init__(self, public_key: bytes, signature: bytes) -> None:
        self.public_key, self.signature = public_key, signature

    def sign(self, message: bytes) -> bytes:
        return self.signature


def test_old_signature_fails_even_when_the_attacker_holds_the_session_keys(keys):
    """Mallory runs the key exchange herself and presents a's signature from a past
    session, correctly encrypted: the signature does not cover this transcript."""
    ka, kb = keys
    recorder = RecordingIdentity(ka)
    run_handshake(Handshake(recorder, CHAIN, {kb.public_key}),
                  Handshake(kb, CHAIN, {ka.public_key}))
    [old_signature] = recorder.signatures

    victim = Handshake(kb, CHAIN, {ka.public_key})
    mallory = Handshake(ReplayingIdentity(ka.public_key, old_signature), CHAIN, {kb.public_key})
    forged_auth = mallory.receive_hello(victim.hello())
    victim.receive_hello(mallory.hello())
    with pytest.raises(HandshakeError, match="no valid signature"):
        victim.receive_auth(forged_auth)


def test_reflected_hello_is_refused(keys):
    ka, _ = keys
    a = Handshake(ka, CHAIN, set())
    with pytest.raises(HandshakeError, match="reflected"):
        a.receive_hello(a.hello())


def test_low_order_ephemeral_key_is_refused(keys):
    ka, kb = keys
    a = Handshake(ka, CHAIN, {kb.public_key})
    hello = bytearray(Handshake(kb, CHAIN, set()).hello())
    hello[-32:] = bytes(32)  # the identity point: the shared secret would be all zeros
    with pytest.raises(HandshakeError, match="low-order"):
        a.receive_hello(bytes(hello))


def test_steps_out_of_order_and_reuse_are_refused(keys):
    ka, kb = keys
    a = Handshake(ka, CHAIN, {kb.public_key})
    with pytest.raises(HandshakeError, match="out of order"):
        a.receive_auth(bytes(AUTH_SIZE))
    with pytest.raises(HandshakeError, match="already failed"):
        a.receive_hello(Handshake(kb, CHAIN, set()).hello())


def test_tampered_frame_raises_and_closes_the_channel(keys):
    ka, kb = keys
    ca, cb = run_handshake(Handshake(ka, CHAIN, {kb.public_key}),
                           Handshake(kb, CHAIN, {ka.public_key}))
    frame = bytearray(ca.encrypt(b"payload"))
    frame[3] ^= 1
    with pytest.raises(ChannelError, match="failed authentication"):
        cb.decrypt(bytes(frame))
    assert cb.closed
    with pytest.raises(ChannelError, match="closed"):
        cb.decrypt(ca.encrypt(b"next"))


def test_replayed_frame_is_rejected(keys):
    ka, kb = keys
    ca, cb = run_handshake(Handshake(ka, CHAIN, {kb.public_key}),
                           Handshake(kb, CHAIN, {ka.public_key}))
    frame = ca.encrypt(b"once")
    assert cb.decrypt(frame) == b"once"
    with pytest.raises(ChannelError):
        cb.decrypt(frame)


def test_nonce_counter_never_wraps():
    """At 2**64 - 1 the channel refuses to send or receive instead of reusing a nonce."""
    key_ab, key_ba = bytes(range(32)), bytes(range(32, 64))
    a = SecureChannel(b"b" * 32, key_ab, key_ba, send_counter=NONCE_LIMIT - 1)
    b = SecureChannel(b"a" * 32, key_ba, key_ab, recv_counter=NONCE_LIMIT - 1)
    assert b.decrypt(a.encrypt(b"last")) == b"last"
    with pytest.raises(ChannelError, match="exhausted"):
        a.encrypt(b"one too many")
    assert a.closed
    with pytest.raises(ChannelError, match="exhausted"):
        b.decrypt(b"\x00" * 32)
    with pytest.raises(ValueError):
        SecureChannel(b"a" * 32, key_ab, key_ba, send_counter=2**64)
