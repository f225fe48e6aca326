"""Batch Ed25519 verification (placeholder pure-Python path; the Cython backend lands next)."""

from __future__ import annotations

from collections.abc import Sequence

from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError


def verify_one(public_key: bytes, message: bytes, signature: bytes) -> bool:
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        crypto_sign_open(signature + message, public_key)
        return True
    except (BadSignatureError, ValueError, TypeError):
        return False


def verify_batch(public_keys: Sequence[bytes], messages: Sequence[bytes],
                 signatures: Sequence[bytes], threads: int | None = None) -> list[bool]:
    return [verify_one(pk, m, s) for pk, m, s in zip(public_keys, messages, signatures, strict=True)]


def verifier_backend() -> str:
    return "python"
