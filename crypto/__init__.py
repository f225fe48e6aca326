"""Cryptography for bftnode: Ed25519 keys, hashing, batch verification, secure channels.

`verify_batch` checks many Ed25519 signatures in one call. With the compiled
Cython extension (`crypto._verify`, built on install) the loop runs without the
GIL, split over threads; without it a PyNaCl loop gives the same verdicts and
`verifier_backend()` reports ``"python"``. Every verdict is exactly libsodium's
`crypto_sign_verify_detached`, which all validators must share: a validity rule
that differs between validators splits the chain.
"""

from crypto.errors import ChannelError, CryptoError, HandshakeError, KeyFileError
from crypto.hashing import merkle_root, sha256, sha256_hex
from crypto.keys import (
    PrivateKey,
    address,
    load_private_key,
    node_id,
    save_private_key,
)
from crypto.verify import verifier_backend, verify_batch, verify_one

__all__ = [
    "ChannelError",
    "CryptoError",
    "HandshakeError",
    "KeyFileError",
    "PrivateKey",
    "address",
    "load_private_key",
    "merkle_root",
    "node_id",
    "save_private_key",
    "sha256",
    "sha256_hex",
    "verifier_backend",
    "verify_batch",
    "verify_one",
]
