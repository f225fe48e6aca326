"""The simulated network and clock on their own: bounds after GST, FIFO, partitions."""

from __future__ import annotations

import random

import pytest

from consensus.sim.clock import VirtualClock
from consensus.sim.network import FAULT_KINDS, Network, NetworkParams, parse_faults


def test_clock_orders_by_time_then_schedule_order() -> None:
    clock = VirtualClock()
    clock.schedule(10, "b")
    clock.schedule(5, "a")
    clock.schedule(10, "c")
    assert [clock.pop(), clock.pop(), clock.pop(), clock.pop()] == ["a", "b", "c", None]
    assert clock.now == 10


def test_clock_never_goes_back() -> None:
    clock = VirtualClock()
    clock.schedule(7, "x")
    clock.pop()
    clock.schedule(3, "late")
    assert clock.peek_time() == 7


def test_parse_faults() -> None:
    assert parse_faults("none") == frozenset()
    assert parse_faults("all") == frozenset(FAULT_KINDS)
    assert parse_faults("drop, delay") == {"drop", "delay"}
    with pytest.raises(ValueError, match="unknown fault 'lag'"):
        parse_faults("drop,lag")


def test_after_gst_every_message_arrives_once_within_delta() -> None:
    params = NetworkParams(delta_ms=30)
    net = Network(random.Random(1), 5, FAULT_KINDS, gst_ms=1_000, params=params)
    for now in range(1_000, 3_000, 7):
        for src in range(5):
            for dst in range(5):
                times = net.deliveries(src, dst, now)
                assert len(times) == 1
                assert now + 1 <= times[0] <= now + 30


def test_before_gst_messages_arrive_by_gst_plus_delta_or_not_at_all() -> None:
    params = NetworkParams(delta_ms=30)
    net = Network(random.Random(2), 4, FAULT_KINDS, gst_ms=2_000, params=params)
    dropped = duplicated = 0
    for now in range(0, 2_000, 3):
        times = net.deliveries(now % 4, (now + 1) % 4, now)
        dropped += not times
        duplicated += len(times) > 1
        assert all(now < t <= 2_030 for t in times)
    assert dropped > 0 and duplicated > 0


def test_links_are_fifo_without_reorder() -> None:
    net = Network(random.Random(3), 3, {"delay", "drop", "dup"}, gst_ms=5_000)
    last = 0
    for now in range(0, 6_000, 5):
        for t in net.deliveries(0, 1, now)[:1]:
            assert t >= last
            last = t


def test_partitions_cut_links_before_gst_and_heal_at_gst() -> None:
    net = Network(random.Random(4), 4, {"partition"}, gst_ms=3_000)
    assert net.epochs and net.epochs[-1].end == 3_000
    cut = [now for now in range(0, 3_000, 10) if not net.connected(0, 1, now)]
    for now in cut:
        assert net.deliveries(0, 1, now) == []
    assert all(net.connected(a, b, 3_000) for a in range(4) for b in range(4))


def test_same_seed_same_network() -> None:
    def arrivals(seed: int) -> list[list[int]]:
        net = Network(random.Random(seed), 4, FAULT_KINDS, gst_ms=1_500)
        return [net.deliveries(i % 4, (i * 3 + 1) % 4, i * 4) for i in range(800)]

    assert arrivals(9) == arrivals(9)
    assert arrivals(9) != arrivals(10)
