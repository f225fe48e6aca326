"""Two ways to host a node's actors: Ray (the default) and in-process.

Both give the supervisor the same thing, an `ActorRef` per actor whose
``call(method, *args)`` is awaited. Arguments and results are msgpack ``bytes``
or small scalars, one call per batch or block: a Ray actor call costs about a
millisecond here, so nothing crosses an actor boundary per transaction.

- `RayRuntime` starts (or joins) Ray bound to 127.0.0.1 with the dashboard off
  and creates each actor as a named Ray actor in the node's own namespace. The
  supervisor is the owner of every actor, so killing it with SIGKILL takes the
  actors down with it (Ray's owner fate-sharing): a node dies as a unit.
- `InProcessRuntime` hosts the same plain classes in the supervisor process. A
  method marked `@offload` (CPU-heavy and GIL-free, like batch verification)
  runs on a worker thread; everything else runs inline on the event loop, which
  keeps each actor single-threaded exactly as under Ray (max_concurrency=1).

A class may declare `CONCURRENCY = K` (the Mempool does): Ray then runs up to K
of its calls at once on threads, the in-process host stops queueing its calls,
and the class guards its own state with a lock.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

_OFFLOAD = "_bftnode_offload"


def offload(fn: Callable) -> Callable:
    """Mark a method as CPU-heavy: the in-process runtime runs it on a thread."""
    setattr(fn, _OFFLOAD, True)
    return fn


def concurrency(cls: type) -> int:
    """How many calls an actor class takes at once: its `CONCURRENCY`, else 1 (a plain
    class is single-threaded). A class above 1 guards its own state with a lock."""
    return int(getattr(cls, "CONCURRENCY", 1))


# Allocations between young-generation collections (CPython's default is 700).
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Make the garbage collector run ~70x less often in this process.

    A node allocates many short-lived, acyclic objects per transaction (decoded txs,
    hashes, msgpack lists), all freed by reference counting. With the default
    thresholds CPython still runs a collection every few hundred txs, and the older
    generations' collections walk every object the process holds (a mempool holds
    up to `max_txs` txs): at 2,200 tx/s on Ray it was a tenth of the Executor's
    samples. Cycles are still collected, only later. `Node.start` calls this for its
    own process (and the actors hosted in it); `RayRuntime.spawn` runs it first in each
    Ray actor's own process.
    """
    gc.set_threshold(*GC_THRESHOLDS)


def _tuning_gc_first(cls: type) -> type:
    """A subclass of `cls` whose constructor runs `tune_gc` first: the one place where
    bftnode's code runs in a Ray worker process before the actor's own."""
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        tune_gc()
        cls.__init__(self, *args, **kwargs)

    return type(cls.__name__, (cls,), {"__init__": __init__})


def placement() -> dict[str, object]:
    """Where the calling actor runs: pid, the Ray node id when hosted by Ray, and the
    process's garbage-collector thresholds (`tune_gc`)."""
    where: dict[str, object] = {"pid": os.getpid(), "ray_node_id": None,
                                "gc_threshold": list(gc.get_threshold())}
    try:
        import ray

        if ray.is_initialized():
            where["ray_node_id"] = ray.get_runtime_context().get_node_id()
    except ImportError:  # pragma: no cover - ray is a dependency
        pass
    return where


# Told of every actor call the supervisor makes: (actor class, method, seconds waited).
CallObserver = Callable[[str, str, float], None]


def _no_observer(actor: str, method: str, seconds: float) -> None:
    pass


class ActorRef(Protocol):
    name: str

    async def call(self, method: str, *args: Any) -> Any: ...


class Runtime(Protocol):
    kind: str

    def spawn(self, name: str, cls: type, *args: Any, resources: dict[str, float] | None = None,
              **kwargs: Any) -> ActorRef: ...

    async def shutdown(self) -> None: ...


class LocalRef:
    """An actor living in this process."""

    def __init__(self, name: str, obj: Any, observe: CallObserver = _no_observer) -> None:
        self.name = name
        self.obj = obj
        self._label = type(obj).__name__
        self._observe = observe
        # One call at a time per actor, as under Ray (max_concurrency=1): while an
        # offloaded call runs on its thread, later calls to the same actor wait. A class
        # that locks its own state (concurrency(cls) > 1) takes calls as they come.
        self._lock = asyncio.Lock() if concurrency(type(obj)) == 1 else None

    async def call(self, method: str, *args: Any) -> Any:
        fn = getattr(self.obj, method)
        t0 = time.monotonic()
        try:
            if self._lock is None:
                return await self._run(fn, args)
            async with self._lock:
                return await self._run(fn, args)
        finally:
            self._observe(self._label, method, time.monotonic() - t0)

    @staticmethod
    async def _run(fn: Callable, args: tuple) -> Any:
        if getattr(fn, _OFFLOAD, False):
            return await asyncio.to_thread(fn, *args)
        return fn(*args)


class InProcessRuntime:
    kind = "inprocess"

    def __init__(self, observe: CallObserver = _no_observer) -> None:
        self._actors: list[LocalRef] = []
        self._observe = observe

    def spawn(self, name: str, cls: type, *args: Any, resources: dict[str, float] | None = None,
              **kwargs: Any) -> LocalRef:
        ref = LocalRef(name, cls(*args, **kwargs), self._observe)
        self._actors.append(ref)
        return ref

    async def shutdown(self) -> None:
        for ref in reversed(self._actors):
            close = getattr(ref.obj, "close", None)
            if close is not None:
                close()
        self._actors.clear()


class RayRef:
    def __init__(self, name: str, handle: Any, label: str,
                 observe: CallObserver = _no_observer) -> None:
        self.name = name
        self.handle = handle
        self._label = label
        self._observe = observe

    async def call(self, method: str, *args: Any) -> Any:
        t0 = time.monotonic()
        try:
            return await getattr(self.handle, method).remote(*args)
        finally:
            self._observe(self._label, method, time.monotonic() - t0)


class RayRuntime:
    """Hosts actors in Ray, in namespace `namespace`.

    `address` empty: start a private Ray instance for this node on 127.0.0.1
    (what a production validator runs); otherwise join that cluster.
    """

    kind = "ray"

    def __init__(self, namespace: str, address: str = "", include_dashboard: bool = False,
                 num_cpus: int | None = None, observe: CallObserver = _no_observer) -> None:
        import ray

        self._ray = ray
        self._observe = observe
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        # Ray runs workers at nice 15 by default: a node's actors would get a 1/28 share of
        # the CPU against its own supervisor. They are the node; run them at normal priority.
        os.environ.setdefault("RAY_worker_niceness", "0")
        opts: dict[str, Any] = dict(
            namespace=namespace,
            include_dashboard=include_dashboard,
            configure_logging=False,
            log_to_driver=True,
            ignore_reinit_error=False,
        )
        if address:
            opts["address"] = address
            # Joining a shared cluster: tag this node's worker processes with its home so
            # that localnet tools (pause, kill) find them among other nodes' workers.
            home = os.environ.get("BFTNODE_NODE_HOME")
            if home:
                opts["runtime_env"] = {"env_vars": {"BFTNODE_NODE_HOME": home}}
        else:
            # Bound to loopback: peers never get Ray access, they only speak the peer protocol.
            opts["_node_ip_address"] = "127.0.0.1"
            opts["num_cpus"] = num_cpus or os.cpu_count() or 1
        # Several nodes hosted by one test process share that process's Ray connection
        # (actor names carry the node id); only the runtime that started Ray stops it.
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(**opts)
        self._actors: list[RayRef] = []

    def spawn(self, name: str, cls: type, *args: Any, resources: dict[str, float] | None = None,
              **kwargs: Any) -> RayRef:
        ray = self._ray
        remote_cls = ray.remote(_tuning_gc_first(cls))
        options: dict[str, Any] = dict(name=name, max_concurrency=concurrency(cls), num_cpus=0,
                                       max_restarts=0, lifetime=None)
        if resources:
            options["resources"] = dict(resources)
        handle = remote_cls.options(**options).remote(*args, **kwargs)
        ref = RayRef(name, handle, cls.__name__, self._observe)
        self._actors.append(ref)
        return ref

    async def shutdown(self) -> None:
        ray = self._ray
        for ref in reversed(self._actors):
            try:
                await ref.call("close")
            except Exception as exc:  # an actor already gone is fine at shutdown
                log.debug("closing actor %s: %s", ref.name, exc)
            try:
                ray.kill(ref.handle, no_restart=True)
            except Exception as exc:  # Ray already shut down by the test process
                log.debug("killing actor %s: %s", ref.name, exc)
        self._actors.clear()
        if self._owns_ray:
            ray.shutdown()


def make_runtime(kind: str, namespace: str, address: str = "", include_dashboard: bool = False,
                 observe: CallObserver = _no_observer) -> Runtime:
    """`observe` is told of every actor call (actor class, method, seconds waited)."""
    if kind == "inprocess":
        return InProcessRuntime(observe)
    if kind == "ray":
        return RayRuntime(namespace, address=address, include_dashboard=include_dashboard,
                          observe=observe)
    raise ValueError(f"unknown runtime {kind!r} (expected 'ray' or 'inprocess')")
