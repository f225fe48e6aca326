"""The in-process runtime (node/runtime.py): where calls run, one call at a time per actor
(Ray's max_concurrency=1), shutdown closing every actor, and the collector thresholds."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import pytest

from node.runtime import (
    GC_THRESHOLDS,
    InProcessRuntime,
    LocalRef,
    make_runtime,
    offload,
    placement,
    tune_gc,
)


class Probe:
    """An actor that records where and how concurrently its methods run."""

    closed: list[str] = []

    def __init__(self, name: str = "probe") -> None:
        self.name = name
        self.active = 0
        self.max_active = 0
        self.events: list[str] = []
        self._guard = threading.Lock()

    def where(self) -> int:
        return threading.get_ident()

    @offload
    def where_offloaded(self) -> int:
        return threading.get_ident()

    @offload
    def slow(self, tag: str) -> str:
        with self._guard:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        self.events.append(f"start {tag}")
        time.sleep(0.03)
        self.events.append(f"end {tag}")
        with self._guard:
            self.active -= 1
        return tag

    def quick(self, tag: str) -> str:
        self.events.append(f"quick {tag}")
        return tag

    @offload
    def meet(self, barrier: threading.Barrier) -> bool:
        barrier.wait()
        return True

    @offload
    def fail(self) -> None:
        raise RuntimeError("boom")

    def close(self) -> None:
        Probe.closed.append(self.name)


class NoClose:
    pass


async def test_offloaded_methods_run_on_a_thread_plain_ones_inline():
    rt = InProcessRuntime()
    ref = rt.spawn("probe", Probe)
    here = threading.get_ident()
    assert await ref.call("where") == here
    assert await ref.call("where_offloaded") != here
    await rt.shutdown()


async def test_arguments_results_and_errors_pass_through():
    rt = InProcessRuntime()
    ref = rt.spawn("probe", Probe, "named")
    assert isinstance(ref, LocalRef) and ref.name == "probe" and ref.obj.name == "named"
    assert await ref.call("quick", "x") == "x"
    with pytest.raises(RuntimeError, match="boom"):
        await ref.call("fail")
    with pytest.raises(AttributeError):
        await ref.call("no_such_method")
    await rt.shutdown()


async def test_one_call_at_a_time_per_actor_as_under_ray():
    rt = InProcessRuntime()
    ref = rt.spawn("probe", Probe)
    results = await asyncio.gather(ref.call("slow", "a"), ref.call("slow", "b"),
                                   ref.call("quick", "c"))
    assert results == ["a", "b", "c"]
    assert ref.obj.max_active == 1
    # The inline call waited for the offloaded ones queued before it.
    assert ref.obj.events == ["start a", "end a", "start b", "end b", "quick c"]
    await rt.shutdown()


async def test_different_actors_run_offloaded_work_in_parallel():
    rt = InProcessRuntime()
    refs = [rt.spawn(f"p{i}", Probe) for i in range(2)]
    barrier = threading.Barrier(2, timeout=5)  # breaks unless both run at the same time
    assert await asyncio.gather(*(r.call("meet", barrier) for r in refs)) == [True, True]
    await rt.shutdown()


async def test_shutdown_closes_every_actor_newest_first():
    Probe.closed = []
    rt = InProcessRuntime()
    rt.spawn("a", Probe, "first")
    rt.spawn("n", NoClose)
    rt.spawn("b", Probe, "second")
    await rt.shutdown()
    assert Probe.closed == ["second", "first"]
    await rt.shutdown()  # nothing left: closing twice is harmless
    assert Probe.closed == ["second", "first"]


def test_make_runtime():
    assert isinstance(make_runtime("inprocess", "ns"), InProcessRuntime)
    assert make_runtime("inprocess", "ns").kind == "inprocess"
    with pytest.raises(ValueError, match="unknown runtime 'threads'"):
        make_runtime("threads", "ns")


def test_tune_gc_sets_the_thresholds_and_placement_reports_them():
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert placement()["gc_threshold"] == list(GC_THRESHOLDS)
        assert GC_THRESHOLDS[0] > 700, "young collections must be rarer than the default"
    finally:
        gc.set_threshold(*saved)
