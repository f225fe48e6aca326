"""Batch Ed25519 verification with libsodium's rule, compiled or pure-Python.

The contract, shared by both backends: a verdict is exactly what libsodium's
``crypto_sign_verify_detached`` returns for the same (public key, message,
signature). That rule rejects non-canonical S, non-canonical point encodings and
small-order keys and R; every validator must apply the same rule, or a
signature that one accepts and another rejects splits the chain.

Inputs are ``bytes`` (other bytes-like objects are accepted and copied). An item
that is not bytes-like, or whose public key is not 32 bytes or whose signature
is not 64 bytes, is ``False``, never an exception.

Backends:

- ``"cython"``: `crypto._verify`, compiled on install; one call checks a whole
  batch without the GIL, split over threads.
- ``"python"``: a PyNaCl loop (``crypto_sign_open`` calls the same libsodium
  verification), used when the extension cannot be imported; a warning is
  logged once, on first use.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Literal

from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError

log = logging.getLogger(__name__)

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64

try:
    from crypto import _verify
except ImportError as exc:  # not compiled, or libsodium could not be resolved
    _verify = None
    _import_error: ImportError | None = exc
else:
    _import_error = None

_fallback_warned = False


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def verifier_backend() -> Literal["cython", "python"]:
    """``"cython"`` when the compiled batch verifier is in use, else ``"python"``."""
    return "cython" if _verify is not None else "python"


def verify_batch(
    public_keys: Sequence[bytes],
    messages: Sequence[bytes],
    signatures: Sequence[bytes],
    threads: int | None = None,
) -> list[bool]:
    """Verify item i = (public_keys[i], messages[i], signatures[i]) for every i.

    Returns one verdict per item, in the same order (see the module docstring
    for the rule). `threads` is how many threads may share the batch: None
    means every core this process may use; small batches run on the calling
    thread whatever `threads` says. The Python backend ignores `threads`.

    Raises ValueError if the three sequences differ in length or `threads` < 1.
    """
    if threads is None:
        threads = available_cores()
    if _verify is not None:
        return _verify.verify_batch(public_keys, messages, signatures, threads)
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    _warn_fallback()
    return verify_batch_python(public_keys, messages, signatures)


def verify_one(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Libsodium's verdict on one signature (False for wrong lengths or types)."""
    if _verify is not None:
        return _verify.verify_one(public_key, message, signature)
    _warn_fallback()
    return verify_one_python(public_key, message, signature)


def verify_one_python(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """The pure-Python (PyNaCl) backend for one item; same contract as `verify_one`."""
    pk = _as_bytes(public_key)
    msg = _as_bytes(message)
    sig = _as_bytes(signature)
    # crypto_sign_open does not check the key's length: a short key would make
    # libsodium read past the buffer, so lengths are checked here first.
    if pk is None or msg is None or sig is None:
        return False
    if len(pk) != PUBLIC_KEY_SIZE or len(sig) != SIGNATURE_SIZE:
        return False
    try:
        # Signed-message form: libsodium's crypto_sign_open checks it with
        # crypto_sign_verify_detached(sm, sm + 64, len - 64, pk).
        crypto_sign_open(sig + msg, pk)
    except BadSignatureError:
        return False
    return True


def verify_batch_python(
    public_keys: Sequence[bytes], messages: Sequence[bytes], signatures: Sequence[bytes]
) -> list[bool]:
    """The pure-Python (PyNaCl) backend; same verdicts as the compiled `verify_batch`."""
    public_keys, messages, signatures = tuple(public_keys), tuple(messages), tuple(signatures)
    if not len(public_keys) == len(messages) == len(signatures):
        raise ValueError(
            f"verify_batch needs as many messages and signatures as public keys, got "
            f"{len(public_keys)} public keys, {len(messages)} messages and "
            f"{len(signatures)} signatures"
        )
    return [
        verify_one_python(pk, msg, sig)
        for pk, msg, sig in zip(public_keys, messages, signatures, strict=True)
    ]


def _as_bytes(item: object) -> bytes | None:
    """`item` as bytes if it is bytes-like (the rule the compiled backend applies)."""
    if isinstance(item, bytes):
        return item
    try:
        return memoryview(item).tobytes()  # type: ignore[arg-type]
    except TypeError:
        return None


def _warn_fallback() -> None:
    global _fallback_warned
    if not _fallback_warned:
        _fallback_warned = True
        log.warning(
            "crypto._verify is unavailable (%s); verifying signatures with the pure-Python "
            "PyNaCl loop, single-threaded. Rebuild with: pip install -e . --no-build-isolation",
            _import_error,
        )
