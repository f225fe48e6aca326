"""Ed25519 identity keys: generation, signing, 0600 key files, and ids.

Identifiers
-----------
A node id and an account address are the same derivation, so that one key can
be named the same way everywhere::

    address(public_key) = sha256(public_key)[:20].hex()   # 40 lowercase hex chars

Twenty bytes keep ids short in logs and URLs while a collision still needs about
2**80 work.

Key files
---------
A key file is JSON ``{"type": "ed25519", "seed": hex, "public_key": hex}``,
written with mode 0600. `load_private_key` refuses a file that its group or
others can read: a validator key that leaked is a key that can double-sign.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from nacl.bindings import crypto_sign_seed_keypair
from nacl.signing import SigningKey

from crypto.errors import KeyFileError
from crypto.hashing import sha256

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
SEED_SIZE = 32
ADDRESS_BYTES = 20


def address(public_key: bytes) -> str:
    """The hex address / node id of an Ed25519 public key (see module docstring)."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"public key must be {PUBLIC_KEY_SIZE} bytes, got {len(public_key)}")
    return sha256(public_key)[:ADDRESS_BYTES].hex()


node_id = address


class PrivateKey:
    """An Ed25519 signing key (libsodium through PyNaCl)."""

    __slots__ = ("_signing_key", "public_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_SIZE:
            raise ValueError(f"Ed25519 seed must be {SEED_SIZE} bytes, got {len(seed)}")
        self._signing_key = SigningKey(seed)
        self.public_key: bytes = bytes(self._signing_key.verify_key)

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls(os.urandom(SEED_SIZE))

    @classmethod
    def from_seed(cls, seed: bytes) -> PrivateKey:
        return cls(seed)

    @property
    def seed(self) -> bytes:
        return bytes(self._signing_key)

    @property
    def address(self) -> str:
        return address(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """A 64-byte detached signature over `message`."""
        return self._signing_key.sign(message).signature

    def __repr__(self) -> str:
        return f"PrivateKey(address={self.address})"


def public_key_from_seed(seed: bytes) -> bytes:
    pk, _ = crypto_sign_seed_keypair(seed)
    return pk


def save_private_key(key: PrivateKey, path: str | os.PathLike[str]) -> None:
    """Write `key` to `path` with mode 0600 (created atomically, never world-readable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps(
        {"type": "ed25519", "seed": key.seed.hex(), "public_key": key.public_key.hex()}
    ).encode()
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_private_key(path: str | os.PathLike[str]) -> PrivateKey:
    """Read a key file written by `save_private_key`.

    Raises KeyFileError if the file is missing, malformed, or readable or
    writable by group or others.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"key file {path} has mode {stat.S_IMODE(st.st_mode):04o}; group and others "
            f"must have no access (run: chmod 600 {path})"
        )
    try:
        doc = json.loads(path.read_bytes())
        if not isinstance(doc, dict):
            raise KeyFileError(f"key file {path} is malformed: expected a JSON object")
        if doc.get("type") != "ed25519":
            raise KeyFileError(f"key file {path}: unsupported key type {doc.get('type')!r}")
        seed = bytes.fromhex(doc["seed"])
        key = PrivateKey(seed)
    except KeyFileError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"key file {path} is malformed: {exc}") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    if "public_key" in doc and doc["public_key"] != key.public_key.hex():
        raise KeyFileError(f"key file {path}: public key does not match the seed")
    return key
