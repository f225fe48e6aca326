"""VerifierPool: stateless actors running the Cython batch verifier.

A `VerifierWorker` takes one msgpack-packed batch ``[public_keys, messages,
signatures]`` and answers a packed bitmap of verdicts (one byte per item, 1 =
valid). `VerifierPool` is the front the Mempool actor calls: it splits a large
batch over the K workers and joins the verdicts back in order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

from crypto import verifier_backend, verify_batch
from node.runtime import offload, placement

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
    """Splits a batch over the K verifier workers and joins the verdicts in order.

    It lives where the signatures are: in the Mempool actor, which calls the workers
    directly (`of_ray_actors`), so a batch of sign items crosses one actor boundary
    each way. `submit(worker, packed)` starts one worker call and `gather(calls)`
    waits for all of them; by default the workers are plain `VerifierWorker` objects
    called inline (tests).
    """

    def __init__(self, workers: Sequence[Any],
                 submit: Callable[[Any, bytes], Any] | None = None,
                 gather: Callable[[list[Any]], list[bytes]] | None = None) -> None:
        if not workers:
            raise ValueError("a verifier pool needs at least one worker")
        self.workers = list(workers)
        self._submit = submit or (lambda worker, packed: worker.verify(packed))
        self._gather = gather or list
        self._next = 0
        self.verified = 0
        self.seconds = 0.0
        self._count_lock = threading.Lock()   # the Mempool may verify two rounds at once

    @classmethod
    def of_ray_actors(cls, handles: Sequence[Any]) -> VerifierPool:
        import ray

        return cls(handles, lambda worker, packed: worker.verify.remote(packed), ray.get)

    def verify(self, pks: Sequence[bytes], msgs: Sequence[bytes],
               sigs: Sequence[bytes]) -> bytes:
        """One verdict byte per item (1 = valid), in input order."""
        n = len(pks)
        if n == 0:
            return b""
        t0 = time.perf_counter()
        k = len(self.workers)
        if k == 1 or n < _MIN_SPLIT:
            worker = self.workers[self._next % k]
            self._next += 1
            calls = [self._submit(worker, msgpack.packb([list(pks), list(msgs), list(sigs)]))]
        else:
            step = -(-n // k)
            calls = [self._submit(w, msgpack.packb([list(pks[i:i + step]),
                                                    list(msgs[i:i + step]),
                                                    list(sigs[i:i + step])]))
                     for w, i in zip(self.workers, range(0, n, step), strict=False)]
        verdicts = b"".join(self._gather(calls))
        with self._count_lock:
            self.seconds += time.perf_counter() - t0
            self.verified += n
        return verdicts
