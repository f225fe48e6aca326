"""When to ask peers for a batch that consensus lacks.

A proposal usually names batches this node has already received and not yet
finished verifying: the proposer gossiped its own batch before the proposal, on
the same ordered link, and other validators' batches reached everyone at about
the same time. Asking the proposer for them at once only makes it send each one
again, and makes this node decode it again to find it known: at 2,200 tx/s on 4
validators, ~one redundant request per validator per height.

So a fetch waits until every peer batch received before it has been through the
mempool (the intake queue is FIFO), then asks only for what is still missing.
A batch that was never received is asked for after at most the batches queued
ahead of it.
"""

from __future__ import annotations

from collections import deque


class DeferredFetches:
    def __init__(self) -> None:
        self.received = 0     # peer batches queued for the mempool so far
        self.processed = 0    # ... of which the mempool has answered
        self._waiting: deque[tuple[int, list[bytes], bytes | None]] = deque()
        self._pending: set[bytes] = set()

    def add(self, digests: list[bytes], peer: bytes | None) -> None:
        """Consensus lacks `digests` (named by `peer`'s proposal)."""
        self._waiting.append((self.received, list(digests), peer))
        self._pending.update(digests)

    def arrived(self, digests: list[bytes]) -> None:
        """The mempool now holds `digests`: no need to ask for them."""
        self._pending.difference_update(digests)

    def due(self) -> list[tuple[list[bytes], bytes | None]]:
        """The requests to send now: fetches whose earlier batches have all been
        processed, reduced to the digests that are still missing."""
        out: list[tuple[list[bytes], bytes | None]] = []
        while self._waiting and self._waiting[0][0] <= self.processed:
            _, digests, peer = self._waiting.popleft()
            still = [d for d in digests if d in self._pending]
            self._pending.difference_update(still)
            if still:
                out.append((still, peer))
        return out

    def __len__(self) -> int:
        return len(self._waiting)
