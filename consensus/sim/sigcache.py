"""A memo of Ed25519 verdicts shared by every simulated node.

Every vote is delivered to every node, so N engines would verify the same
signature N times. A verdict is a pure function of (public key, message,
signature), so remembering it is sound: a forged or corrupted signature is a
different key in the memo and gets its own real check. Signing stays real.
"""

from __future__ import annotations

from collections.abc import Sequence

from crypto import verify_one


class SignatureCache:
    """`verify` and `verify_batch` with the contracts of `crypto.verify_one` / `verify_batch`,
    memoised. One cache per simulation run keeps memory bounded by the run's messages."""

    __slots__ = ("_verdicts", "checks", "hits")

    def __init__(self) -> None:
        self._verdicts: dict[tuple[bytes, bytes, bytes], bool] = {}
        self.checks = 0  # real verifications done
        self.hits = 0    # verdicts answered from the memo

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        key = (public_key, message, signature)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = verify_one(public_key, message, signature)
            self._verdicts[key] = verdict
            self.checks += 1
        else:
            self.hits += 1
        return verdict

    def verify_batch(self, public_keys: Sequence[bytes], messages: Sequence[bytes],
                     signatures: Sequence[bytes], threads: int | None = None) -> list[bool]:
        return [self.verify(pk, m, s)
                for pk, m, s in zip(public_keys, messages, signatures, strict=True)]
