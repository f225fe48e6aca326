"""The simulated network: per-link delays, drops, duplicates, reordering, partitions.

Partial synchrony (Dwork, Lynch, Stockmeyer): before the global stabilisation
time (GST) the network may delay, drop, duplicate and reorder messages and cut
the nodes into partitions; from GST on, every message is delivered, once,
within `delta_ms`, and partitions are healed. A message sent before GST that is
not dropped is delivered by ``max(sent, GST) + delta`` at the latest, so the
network is never slower than the bound after GST even for old messages.

The model only computes *when* a message arrives (`deliveries`); the runner
puts the arrivals on the virtual clock. All randomness comes from the
`random.Random` it is given, in call order, so a run is reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

# Fault kinds accepted by --faults. "crash" and "missing" are applied by the runner
# (node crashes and late payloads); the rest are network faults.
FAULT_KINDS: tuple[str, ...] = ("delay", "drop", "dup", "reorder", "partition", "crash", "missing")


def parse_faults(text: str) -> frozenset[str]:
    """Parse a --faults LIST: comma-separated kinds, or "none", or "all".

    Raises ValueError naming the unknown kind.
    """
    text = text.strip()
    if text in ("", "none"):
        return frozenset()
    if text == "all":
        return frozenset(FAULT_KINDS)
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    for kind in kinds:
        if kind not in FAULT_KINDS:
            raise ValueError(
                f"unknown fault {kind!r}; choose from {', '.join(FAULT_KINDS)}, none, all"
            )
    return frozenset(kinds)


@dataclass(frozen=True)
class NetworkParams:
    """Bounds of the network model, in virtual milliseconds and probabilities."""

    delta_ms: int = 40                # delivery bound after GST (and always, without "delay")
    max_delay_ms: int = 400           # per-link delay ceiling before GST with "delay"
    max_drop: float = 0.3             # per-link drop probability ceiling before GST
    dup_probability: float = 0.1      # chance a message is delivered twice before GST
    reorder_probability: float = 0.15  # chance a message is held back (overtaken) before GST
    reorder_extra_ms: int = 600       # how long a held-back message may wait
    partition_epoch_ms: tuple[int, int] = (300, 1500)  # length of one partition layout


@dataclass(frozen=True)
class PartitionEpoch:
    """From `start` to `end` (ms), instance i is in group `groups[i]`; only same-group links work."""

    start: int
    end: int
    groups: tuple[int, ...]


PartitionMaker = Callable[[random.Random, int], tuple[int, ...]]


def random_split(rng: random.Random, size: int) -> tuple[int, ...]:
    """Two groups, each instance placed at random; sometimes everyone together."""
    if rng.random() < 0.2:
        return (0,) * size
    return tuple(rng.randrange(2) for _ in range(size))


class Network:
    """Computes arrival times for messages between `size` simulated instances.

    Contract: `deliveries(src, dst, now)` returns the arrival times (empty list =
    dropped; two entries = duplicated), each >= now + 1. From GST on it returns
    exactly one time in ``[now + 1, now + delta]``. Without "reorder", each link
    is FIFO (arrivals on one link never overtake each other).
    """

    def __init__(
        self,
        rng: random.Random,
        size: int,
        faults: Iterable[str],
        gst_ms: int,
        params: NetworkParams = NetworkParams(),
        partition_maker: PartitionMaker = random_split,
    ) -> None:
        self.rng = rng
        self.size = size
        self.faults = frozenset(faults)
        self.gst_ms = gst_ms
        self.params = params
        delta = params.delta_ms
        self._fifo = "reorder" not in self.faults
        self._last_arrival = [[0] * size for _ in range(size)]
        # Per-link character before GST: some links are slow or lossy, others fine.
        self._link_delay = [
            [rng.randint(delta, params.max_delay_ms) if "delay" in self.faults else delta
             for _ in range(size)]
            for _ in range(size)
        ]
        self._link_drop = [
            [rng.uniform(0.0, params.max_drop) if "drop" in self.faults else 0.0
             for _ in range(size)]
            for _ in range(size)
        ]
        self.epochs: list[PartitionEpoch] = []
        if "partition" in self.faults:
            self.epochs = self._partition_schedule(partition_maker)
        self._epoch_index = 0
        self.dropped = 0      # messages lost to a partition or a lossy link
        self.duplicated = 0   # extra copies delivered

    def _partition_schedule(self, maker: PartitionMaker) -> list[PartitionEpoch]:
        lo, hi = self.params.partition_epoch_ms
        epochs: list[PartitionEpoch] = []
        t = 0
        while t < self.gst_ms:
            end = min(self.gst_ms, t + self.rng.randint(lo, hi))
            epochs.append(PartitionEpoch(t, end, maker(self.rng, self.size)))
            t = end
        return epochs

    def groups_at(self, now: int) -> tuple[int, ...] | None:
        """The partition layout in force at `now`, or None when all links work."""
        if now >= self.gst_ms or not self.epochs:
            return None
        # Time only moves forward, so a cursor finds the epoch in O(1) amortised.
        while self._epoch_index < len(self.epochs) - 1 and self.epochs[self._epoch_index].end <= now:
            self._epoch_index += 1
        epoch = self.epochs[self._epoch_index]
        return epoch.groups if epoch.start <= now < epoch.end else None

    def connected(self, src: int, dst: int, now: int) -> bool:
        """Whether a message sent from `src` to `dst` at `now` can cross the partition."""
        groups = self.groups_at(now)
        return groups is None or groups[src] == groups[dst]

    def deliveries(self, src: int, dst: int, now: int) -> list[int]:
        """Arrival times of one message sent `src` -> `dst` at `now` (see class contract)."""
        rng = self.rng
        delta = self.params.delta_ms
        if now >= self.gst_ms:
            arrival = now + rng.randint(1, delta)
            if self._fifo:
                arrival = max(arrival, self._last_arrival[src][dst])
                self._last_arrival[src][dst] = arrival
            return [arrival]
        if not self.connected(src, dst, now) or rng.random() < self._link_drop[src][dst]:
            self.dropped += 1
            return []
        cap = self.gst_ms + delta  # sent before GST: arrives by GST + delta at the latest
        arrival = now + rng.randint(1, self._link_delay[src][dst])
        if not self._fifo and rng.random() < self.params.reorder_probability:
            arrival += rng.randint(1, self.params.reorder_extra_ms)
        arrival = min(arrival, cap)
        if self._fifo:
            arrival = max(arrival, self._last_arrival[src][dst])
            self._last_arrival[src][dst] = arrival
        times = [arrival]
        if "dup" in self.faults and rng.random() < self.params.dup_probability:
            times.append(min(cap, arrival + rng.randint(0, self._link_delay[src][dst])))
            self.duplicated += 1
        return times


def describe_groups(groups: Sequence[int]) -> str:
    """Human-readable partition layout, e.g. ``{0,2}|{1,3}``."""
    by_group: dict[int, list[int]] = {}
    for instance, group in enumerate(groups):
        by_group.setdefault(group, []).append(instance)
    return "|".join("{" + ",".join(map(str, members)) + "}"
                    for _, members in sorted(by_group.items()))
