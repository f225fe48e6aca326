"""VerifierPool: stateless actors running the Cython batch verifier.

A `VerifierWorker` takes one msgpack-packed batch ``[public_keys, messages,
signatures]`` and answers a packed bitmap of verdicts (one byte per item, 1 =
valid). `VerifierPool` is the supervisor-side front: it splits a large batch
over the K workers and joins the verdicts back in order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import msgpack

from crypto import verifier_backend, verify_batch
from node.runtime import ActorRef, offload, placement

# Below this many signatures a split costs more in actor calls than it saves.
_MIN_SPLIT = 512


class VerifierWorker:
    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self.verified = 0
        self.busy_s = 0.0

    def backend(self) -> str:
        return verifier_backend()

    @offload
    def verify(self, packed: bytes) -> bytes:
        pks, msgs, sigs = msgpack.unpackb(packed, raw=False)
        t0 = time.perf_counter()
        verdicts = verify_batch(pks, msgs, sigs, threads=self.threads)
        self.busy_s += time.perf_counter() - t0
        self.verified += len(verdicts)
        return bytes(verdicts)

    def stats(self) -> tuple[int, float]:
        return self.verified, self.busy_s

    def where(self) -> dict[str, object]:
        """Placement of this actor (pid, Ray node id), for operators and tests."""
        return placement()

    def close(self) -> None:
        pass


class VerifierPool:
    def __init__(self, workers: Sequence[ActorRef]) -> None:
        if not workers:
            raise ValueError("a verifier pool needs at least one worker")
        self.workers = list(workers)
        self._next = 0
        self.verified = 0
        self.seconds = 0.0

    async def verify(self, pks: Sequence[bytes], msgs: Sequence[bytes],
                     sigs: Sequence[bytes]) -> list[bool]:
        n = len(pks)
        if n == 0:
            return []
        t0 = time.perf_counter()
        k = len(self.workers)
        if k == 1 or n < _MIN_SPLIT:
            worker = self.workers[self._next % k]
            self._next += 1
            parts = [await worker.call("verify", msgpack.packb([list(pks), list(msgs), list(sigs)]))]
        else:
            step = -(-n // k)
            calls = [
                w.call("verify", msgpack.packb([list(pks[i:i + step]), list(msgs[i:i + step]),
                                                list(sigs[i:i + step])]))
                for w, i in zip(self.workers, range(0, n, step), strict=False)
            ]
            parts = await asyncio.gather(*calls)
        self.seconds += time.perf_counter() - t0
        self.verified += n
        return [b == 1 for part in parts for b in part]
