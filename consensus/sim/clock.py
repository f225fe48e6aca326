"""Virtual time for the simulator: a priority queue of events, no wall clock.

Events at the same virtual millisecond run in the order they were scheduled
(a sequence number breaks ties), so a run is a pure function of its seed: no
two events ever compare on their payload, and nothing depends on dict or set
ordering or on how fast the host machine is.
"""

from __future__ import annotations

import heapq
from typing import Any


class VirtualClock:
    """Virtual milliseconds plus the queue of events still to happen.

    `schedule(at, event)` queues `event` (any object) at time `at`, never in
    the past; `pop()` advances `now` to the earliest event and returns it.
    """

    __slots__ = ("_queue", "_seq", "now")

    def __init__(self) -> None:
        self.now: int = 0
        self._seq = 0
        self._queue: list[tuple[int, int, Any]] = []

    def schedule(self, at: int, event: Any) -> None:
        """Queue `event` at virtual time `at` (clamped to now: time never goes back)."""
        if at < self.now:
            at = self.now
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, event))

    def after(self, delay_ms: int, event: Any) -> None:
        """Queue `event` `delay_ms` milliseconds from now."""
        self.schedule(self.now + delay_ms, event)

    def pop(self) -> Any | None:
        """Advance to the next event and return it; None when the queue is empty."""
        if not self._queue:
            return None
        at, _, event = heapq.heappop(self._queue)
        self.now = at
        return event

    def peek_time(self) -> int | None:
        """Time of the next event, or None when nothing is queued."""
        return self._queue[0][0] if self._queue else None

    def __len__(self) -> int:
        return len(self._queue)
