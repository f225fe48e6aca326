"""Authenticated, encrypted peer channels: a sans-IO handshake and frame cipher.

Nothing here touches a socket or a clock: `Handshake` turns bytes received into
bytes to send, and `SecureChannel` seals and opens frames. The transport
(`node.p2p`) moves the bytes; the fuzz tests feed these classes random input.

Handshake (both sides run the same steps, so there is no initiator role)
-----------------------------------------------------------------------
1. Each side sends a *hello* (`HELLO_SIZE` bytes)::

       b"BFTN" || version (1 byte) || chain tag (8 bytes) || ephemeral X25519 public key (32)

   The chain tag (a hash of the chain id) gives an operator a clear error when
   two nodes of different chains meet; the chain id itself is bound into the
   keys below, so the tag is a courtesy, not the protection.
2. Both compute ``shared = X25519(own ephemeral, peer ephemeral)`` and the
   transcript, with the two ephemeral keys in canonical (sorted) order so that
   both sides build the same bytes::

       transcript = PROTOCOL_LABEL || len(chain id) (2 bytes) || chain id || lo_eph || hi_eph

   HKDF-SHA256 (salt = sha256(transcript), info = label) expands ``shared`` into
   96 bytes: the key for frames sent by the lo side, the key for frames sent by
   the hi side, and a 32-byte challenge that binds the signatures to the shared
   secret (so that a signature can only be used by someone who completed this
   very key exchange).
3. Each side sends its *auth* (`AUTH_SIZE` bytes): its static Ed25519 public
   key and its signature over
   ``AUTH_LABEL || sha256(transcript) || challenge || role`` (role is 0 for the
   lo side, 1 for the hi side, so a side's own signature reflected back to it is
   invalid), sealed as frame 0 of its direction.
4. The receiver opens it, checks the signature, then the allow-list, then (when
   dialing) that the key is the one it meant to reach.

Replay: the transcript holds both sides' *fresh* ephemeral keys, so auth bytes
recorded from one session neither decrypt nor verify in any other session.

Frames
------
ChaCha20-Poly1305 with a 96-bit nonce ``0x00000000 || counter (8 bytes, big
endian)``, one counter per direction starting at 0 (the auth message is frame 0).
A nonce must never repeat under one key, so the counter never wraps: at
``NONCE_LIMIT`` the channel refuses to send or receive and the link must be
closed and re-handshaked. Any failure (bad tag, exhausted counter) closes the
`SecureChannel`: every later call raises `ChannelError`.

Errors: every failure of the handshake raises `HandshakeError` (its subclass
`UnknownPeerError` when the peer authenticated but is not allowed); every frame
failure raises `ChannelError`. Nothing else escapes on hostile input.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crypto.errors import ChannelError, HandshakeError
from crypto.hashing import sha256
from crypto.keys import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, PrivateKey, address

PROTOCOL_LABEL = b"bftnode/secure-channel/v1"
AUTH_LABEL = PROTOCOL_LABEL + b"/auth"
HELLO_MAGIC = b"BFTN"
PROTOCOL_VERSION = 1
CHAIN_TAG_SIZE = 8
EPHEMERAL_KEY_SIZE = 32
KEY_SIZE = 32
TAG_SIZE = 16
HELLO_SIZE = len(HELLO_MAGIC) + 1 + CHAIN_TAG_SIZE + EPHEMERAL_KEY_SIZE
AUTH_PLAINTEXT_SIZE = PUBLIC_KEY_SIZE + SIGNATURE_SIZE
AUTH_SIZE = AUTH_PLAINTEXT_SIZE + TAG_SIZE
NONCE_LIMIT = 2**64 - 1
"""First counter value that is never used: a channel refuses to seal or open at it."""

AllowList = Collection[bytes] | Callable[[bytes], bool]
"""Who may connect: a collection of 32-byte Ed25519 public keys, or a predicate."""


class UnknownPeerError(HandshakeError):
    """The peer proved its identity, but that identity is not allowed on this network."""


def chain_tag(chain_id: str) -> bytes:
    """The 8-byte tag of `chain_id` carried in the hello."""
    return sha256(PROTOCOL_LABEL + b"/chain\x00" + chain_id.encode())[:CHAIN_TAG_SIZE]


def transcript(chain_id: str, ephemeral_a: bytes, ephemeral_b: bytes) -> bytes:
    """The handshake transcript; independent of which side computes it."""
    lo, hi = sorted((bytes(ephemeral_a), bytes(ephemeral_b)))
    cid = chain_id.encode()
    return PROTOCOL_LABEL + len(cid).to_bytes(2, "big") + cid + lo + hi


def auth_message(transcript_hash: bytes, challenge: bytes, role: int) -> bytes:
    """The bytes a side signs to prove its identity (role 0 = lo side, 1 = hi side)."""
    return AUTH_LABEL + transcript_hash + challenge + bytes([role])


def is_allowed(allowed: AllowList, public_key: bytes) -> bool:
    """Whether `public_key` passes `allowed` (a collection of keys or a predicate)."""
    if callable(allowed):
        return bool(allowed(public_key))
    return public_key in allowed


def _as_bytes(data: object, what: str, error: type[Exception]) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise error(f"{what} must be bytes, got {type(data).__name__}")
    return bytes(data)


class _DirectionCipher:
    """ChaCha20-Poly1305 under one key with a counter nonce that never wraps."""

    __slots__ = ("_aead", "counter")

    def __init__(self, key: bytes, counter: int = 0) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"ChaCha20-Poly1305 key must be {KEY_SIZE} bytes, got {len(key)}")
        if not 0 <= counter <= NONCE_LIMIT:
            raise ValueError(f"nonce counter {counter} is outside [0, 2**64 - 1]")
        self._aead = ChaCha20Poly1305(key)
        self.counter = counter

    def _next_nonce(self, action: str) -> bytes:
        if self.counter >= NONCE_LIMIT:
            raise ChannelError(
                f"cannot {action} frame {self.counter}: the nonce counter is exhausted "
                "(a nonce must never repeat under one key); close the link and reconnect"
            )
        nonce = b"\x00\x00\x00\x00" + self.counter.to_bytes(8, "big")
        self.counter += 1
        return nonce

    def seal(self, plaintext: bytes) -> bytes:
        return self._aead.encrypt(self._next_nonce("send"), plaintext, None)

    def open(self, ciphertext: bytes) -> bytes:
        index = self.counter
        nonce = self._next_nonce("receive")
        try:
            return self._aead.decrypt(nonce, ciphertext, None)
        except InvalidTag:
            raise ChannelError(
                f"frame {index} failed authentication (tampered, truncated, reordered "
                "or encrypted under another key)"
            ) from None


class SecureChannel:
    """Both directions of an established channel; made by `Handshake.receive_auth`.

    `encrypt` and `decrypt` must be called in wire order: frame *n* of a
    direction is sealed with nonce *n*, so the transport must write frames in
    the order it seals them, and open them in the order they arrive.
    """

    __slots__ = ("peer_public_key", "_send", "_recv", "_closed")

    def __init__(self, peer_public_key: bytes, send_key: bytes, recv_key: bytes,
                 send_counter: int = 0, recv_counter: int = 0) -> None:
        self.peer_public_key = bytes(peer_public_key)
        self._send = _DirectionCipher(send_key, send_counter)
        self._recv = _DirectionCipher(recv_key, recv_counter)
        self._closed: str | None = None

    @property
    def peer_address(self) -> str:
        return address(self.peer_public_key)

    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def send_counter(self) -> int:
        return self._send.counter

    @property
    def recv_counter(self) -> int:
        return self._recv.counter

    def _check_open(self) -> None:
        if self._closed is not None:
            raise ChannelError(f"secure channel is closed: {self._closed}")

    def encrypt(self, plaintext: bytes) -> bytes:
        """Seal the next outgoing frame (ciphertext is `TAG_SIZE` bytes longer)."""
        self._check_open()
        data = _as_bytes(plaintext, "plaintext", ChannelError)
        try:
            return self._send.seal(data)
        except ChannelError as exc:
            self._closed = str(exc)
            raise

    def decrypt(self, ciphertext: bytes) -> bytes:
        """Open the next incoming frame; any failure closes the channel."""
        self._check_open()
        try:
            data = _as_bytes(ciphertext, "ciphertext", ChannelError)
            if len(data) < TAG_SIZE:
                raise ChannelError(
                    f"frame of {len(data)} bytes is shorter than the {TAG_SIZE}-byte tag"
                )
            return self._recv.open(data)
        except ChannelError as exc:
            self._closed = str(exc)
            raise

    def close(self, reason: str = "closed by its owner") -> None:
        if self._closed is None:
            self._closed = reason

    def __repr__(self) -> str:
        return (f"SecureChannel(peer={self.peer_address}, sent={self.send_counter}, "
                f"received={self.recv_counter})")


class Handshake:
    """One side of one handshake: `hello()`, then `receive_hello`, then `receive_auth`.

    Usage (the same on the dialing and on the listening side)::

        hs = Handshake(identity, chain_id, allowed, expected_peer=pk_or_None)
        send(hs.hello())
        send(hs.receive_hello(recv_exactly(HELLO_SIZE)))
        channel = hs.receive_auth(recv_exactly(AUTH_SIZE))

    A Handshake is single-use: after any error every later call raises
    `HandshakeError`. `expected_peer`, when given (a dialer knows whom it
    dialed), must match the key the peer proves. `ephemeral_private` exists for
    tests; production code lets it be drawn fresh, which is what makes replays fail.
    """

    def __init__(self, identity: PrivateKey, chain_id: str, allowed: AllowList, *,
                 expected_peer: bytes | None = None,
                 ephemeral_private: bytes | None = None) -> None:
        self._identity = identity
        self._chain_id = chain_id
        self._allowed = allowed
        self._expected_peer = expected_peer
        seed = ephemeral_private if ephemeral_private is not None else os.urandom(32)
        self._ephemeral = X25519PrivateKey.from_private_bytes(seed)
        self.ephemeral_public_key = self._ephemeral.public_key().public_bytes_raw()
        self._state = "hello"
        self._channel: SecureChannel | None = None
        self._peer_auth_message = b""

    def hello(self) -> bytes:
        """The first message to send (`HELLO_SIZE` bytes); may be sent before reading."""
        return (HELLO_MAGIC + bytes([PROTOCOL_VERSION]) + chain_tag(self._chain_id)
                + self.ephemeral_public_key)

    def _fail(self, message: str, error: type[HandshakeError] = HandshakeError) -> HandshakeError:
        self._state = "failed"
        return error(message)

    def _expect_state(self, state: str) -> None:
        if self._state == "failed":
            raise HandshakeError("handshake already failed")
        if self._state != state:
            raise self._fail(f"handshake step out of order: expected {state}, at {self._state}")

    def receive_hello(self, data: bytes) -> bytes:
        """Take the peer's hello; return this side's auth message (`AUTH_SIZE` bytes)."""
        self._expect_state("hello")
        hello = _as_bytes(data, "hello", HandshakeError)
        if len(hello) != HELLO_SIZE:
            raise self._fail(f"hello must be {HELLO_SIZE} bytes, got {len(hello)}")
        magic_end = len(HELLO_MAGIC)
        if hello[:magic_end] != HELLO_MAGIC:
            raise self._fail("peer does not speak the bftnode peer protocol (bad magic)")
        version = hello[magic_end]
        if version != PROTOCOL_VERSION:
            raise self._fail(
                f"peer speaks peer-protocol version {version}, this node {PROTOCOL_VERSION}"
            )
        tag = hello[magic_end + 1:magic_end + 1 + CHAIN_TAG_SIZE]
        if tag != chain_tag(self._chain_id):
            raise self._fail(
                f"peer is on another chain (chain tag {tag.hex()}, ours is "
                f"{chain_tag(self._chain_id).hex()} for chain id {self._chain_id!r})"
            )
        peer_ephemeral = hello[-EPHEMERAL_KEY_SIZE:]
        if peer_ephemeral == self.ephemeral_public_key:
            raise self._fail("peer echoed our own ephemeral key (a reflected handshake)")
        try:
            shared = self._ephemeral.exchange(X25519PublicKey.from_public_bytes(peer_ephemeral))
        except ValueError:
            raise self._fail("peer's ephemeral key is a low-order point") from None

        script = transcript(self._chain_id, self.ephemeral_public_key, peer_ephemeral)
        script_hash = sha256(script)
        okm = HKDF(algorithm=SHA256(), length=3 * KEY_SIZE, salt=script_hash,
                   info=PROTOCOL_LABEL + b"/keys").derive(shared)
        key_from_lo, key_from_hi, challenge = okm[:32], okm[32:64], okm[64:]
        own_role = 0 if self.ephemeral_public_key < peer_ephemeral else 1
        if own_role == 0:
            send_key, recv_key = key_from_lo, key_from_hi
        else:
            send_key, recv_key = key_from_hi, key_from_lo
        self._peer_auth_message = auth_message(script_hash, challenge, 1 - own_role)
        # The peer's key is not known yet; receive_auth fills it in.
        self._channel = SecureChannel(b"", send_key, recv_key)
        signature = self._identity.sign(auth_message(script_hash, challenge, own_role))
        self._state = "auth"
        return self._channel.encrypt(self._identity.public_key + signature)

    def receive_auth(self, data: bytes) -> SecureChannel:
        """Take the peer's auth message; return the established channel.

        Raises `UnknownPeerError` when the peer's signature is valid but its key
        is not allowed, `HandshakeError` for every other failure.
        """
        self._expect_state("auth")
        assert self._channel is not None
        auth = _as_bytes(data, "auth message", HandshakeError)
        if len(auth) != AUTH_SIZE:
            raise self._fail(f"auth message must be {AUTH_SIZE} bytes, got {len(auth)}")
        try:
            plaintext = self._channel.decrypt(auth)
        except ChannelError:
            raise self._fail(
                "peer's auth message does not decrypt under this session's keys "
                "(tampered, replayed from another session, or another chain id)"
            ) from None
        peer_key, signature = plaintext[:PUBLIC_KEY_SIZE], plaintext[PUBLIC_KEY_SIZE:]
        peer = address(peer_key)
        if peer_key == self._identity.public_key:
            raise self._fail(f"peer presented our own identity {peer} (dialed ourselves?)")
        try:
            Ed25519PublicKey.from_public_bytes(peer_key).verify(
                signature, self._peer_auth_message)
        except (InvalidSignature, ValueError):
            raise self._fail(
                f"peer {peer} has no valid signature over this handshake's transcript "
                "(forged, or replayed from another session)"
            ) from None
        if not is_allowed(self._allowed, peer_key):
            raise self._fail(f"peer {peer} is not in the validator set", UnknownPeerError)
        if self._expected_peer is not None and peer_key != self._expected_peer:
            raise self._fail(
                f"dialed peer {address(self._expected_peer)} but the remote "
                f"authenticated as {peer}"
            )
        channel = self._channel
        channel.peer_public_key = peer_key
        self._channel = None
        self._state = "done"
        return channel
