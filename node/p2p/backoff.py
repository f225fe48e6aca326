"""Reconnect delays: exponential backoff with jitter, bounded above.

Jitter keeps the nodes of a network that lost a peer at the same instant from
redialing it in lockstep; the upper bound keeps a peer that was down for a
long time from waiting minutes after it comes back.
"""

from __future__ import annotations

import random


class Backoff:
    """Delay for attempt k: uniform in [d/2, d] with d = min(maximum, initial * 2**k)."""

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"need 0 < initial ({initial}) <= maximum ({maximum})")
        self.initial = initial
        self.maximum = maximum
        self._rng = rng or random.Random()
        self.attempts = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one attempt."""
        ceiling = min(self.maximum, self.initial * 2.0 ** min(self.attempts, 60))
        self.attempts += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempts = 0
