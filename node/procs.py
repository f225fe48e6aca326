"""Process trees on Linux, read from /proc: find, signal and wait for a node's processes.

A node's supervisor owns more than itself: with the Ray runtime it starts
gcs_server, raylet, agents and worker processes (the actors). Some of those are
its children, some are children of the raylet, and after the supervisor dies
they are re-parented to init, where a parent walk no longer finds them. So a
node's processes are found three ways, all from one /proc snapshot:

- descendants by parent pid (taken *before* anything is killed);
- members of the node's session: `localnet` starts each supervisor with
  ``start_new_session=True``, so its session id is its pid, and every process it
  starts stays in that session unless it calls setsid itself;
- processes whose environment carries a marker (``BFTNODE_NODE_HOME=<home>``),
  which children inherit even across setsid and re-parenting.

Pids are reused, so a process is identified by (pid, start time): a snapshot
taken earlier is only ever signalled where the start time still matches.
Zombies count as dead: they hold no resources and cannot be signalled away.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

PROC = "/proc"


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/PID/stat this module uses."""

    pid: int
    state: str
    ppid: int
    pgrp: int
    session: int
    start_time: int  # clock ticks after boot; with pid, identifies a process


def read_stat(pid: int) -> ProcStat | None:
    """/proc/PID/stat, or None if there is no such process."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as fh:
            data = fh.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or ')'.
    rest = data[data.rindex(")") + 2:].split()
    return ProcStat(pid=pid, state=rest[0], ppid=int(rest[1]), pgrp=int(rest[2]),
                    session=int(rest[3]), start_time=int(rest[19]))


def all_stats() -> dict[int, ProcStat]:
    """One snapshot of every visible process."""
    out = {}
    for name in os.listdir(PROC):
        if name.isdigit():
            st = read_stat(int(name))
            if st is not None:
                out[st.pid] = st
    return out


def is_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    st = read_stat(pid)
    return st is not None and st.state not in ("Z", "X", "x")


def is_stopped(pid: int) -> bool:
    """True if `pid` is stopped by a signal (SIGSTOP): a paused node."""
    st = read_stat(pid)
    return st is not None and st.state in ("T", "t")


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"{PROC}/{pid}/cmdline", "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []


def environ_has(pid: int, key: str, value: str) -> bool:
    """True if `pid`'s environment (as it was at exec) holds ``key=value``."""
    try:
        with open(f"{PROC}/{pid}/environ", "rb") as fh:
            entries = fh.read().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return f"{key}={value}".encode() in entries


def _live(st: ProcStat) -> bool:
    return st.state not in ("Z", "X", "x")


def descendants(pid: int, stats: dict[int, ProcStat] | None = None) -> list[int]:
    """Every live descendant of `pid` (children first, then theirs), `pid` excluded."""
    stats = all_stats() if stats is None else stats
    return [p for p in _descendants_of([pid], stats) if p != pid]


def _descendants_of(roots: Iterable[int], stats: dict[int, ProcStat]) -> list[int]:
    children: dict[int, list[int]] = {}
    for st in stats.values():
        children.setdefault(st.ppid, []).append(st.pid)
    seen = set(roots)
    out: list[int] = []
    frontier = list(seen)
    while frontier:
        nxt = []
        for parent in frontier:
            for child in children.get(parent, ()):
                if child not in seen:
                    seen.add(child)
                    out.append(child)
                    nxt.append(child)
        frontier = nxt
    return [p for p in out if _live(stats[p])]


def session_members(session: int, stats: dict[int, ProcStat] | None = None) -> list[int]:
    """Every live process whose session id is `session`."""
    stats = all_stats() if stats is None else stats
    return [st.pid for st in stats.values() if st.session == session and _live(st)]


def tree(pid: int, *, session: bool = True, env: tuple[str, str] | None = None,
         stats: dict[int, ProcStat] | None = None) -> dict[int, int]:
    """The processes of a node rooted at `pid`, as {pid: start time}.

    The root (if alive) and its descendants; with `session`, the members of the
    session `pid` leads (if `pid` is a session leader, or already dead: the
    session id outlives its leader); with ``env=(key, value)``, every process
    whose environment holds that marker, and its descendants. This process is
    never included.
    """
    stats = all_stats() if stats is None else stats
    found: set[int] = set()
    root = stats.get(pid)
    if root is not None and _live(root):
        found.add(pid)
    found.update(_descendants_of([pid], stats))
    if session and (root is None or root.session == pid):
        members = session_members(pid, stats)
        found.update(members)
        found.update(_descendants_of(members, stats))
    if env is not None:
        found.update(marked(env, stats))
    found.discard(os.getpid())
    return {p: stats[p].start_time for p in found if p in stats}


def marked(env: tuple[str, str], stats: dict[int, ProcStat] | None = None) -> dict[int, int]:
    """Live processes whose environment holds ``key=value``, and their descendants.

    For the processes of a node whose supervisor is gone: its pid may already
    belong to someone else, but the marker it passed on identifies its orphans.
    """
    stats = all_stats() if stats is None else stats
    found = [p for p, st in stats.items() if _live(st) and environ_has(p, *env)]
    found += _descendants_of(found, stats)
    return {p: stats[p].start_time for p in found if p != os.getpid()}


def same_process(pid: int, start_time: int) -> bool:
    """True if `pid` is alive and is the process that started at `start_time`."""
    st = read_stat(pid)
    return st is not None and st.start_time == start_time and _live(st)


def signal_snapshot(snapshot: dict[int, int], sig: int) -> list[int]:
    """Send `sig` to each (pid, start time) still alive as that same process; the pids hit."""
    hit = []
    for pid, start in snapshot.items():
        if same_process(pid, start):
            try:
                os.kill(pid, sig)
                hit.append(pid)
            except (ProcessLookupError, PermissionError):
                pass
    return hit


def freeze(collect: Callable[[dict[int, ProcStat]], dict[int, int]], rounds: int = 20
           ) -> dict[int, int]:
    """SIGSTOP the processes `collect` finds, and whatever they fork, until none is new.

    `collect` maps a /proc snapshot to {pid: start time} (`tree`, `marked`).
    Returns every process stopped, once each has actually stopped (delivery is
    asynchronous). Stopped processes cannot fork, so a kill that follows reaches
    the whole tree; SIGCONT undoes it (a paused node).
    """
    snap = collect(all_stats())
    for _ in range(rounds):
        _wait_stopped(signal_snapshot(snap, signal.SIGSTOP))
        stats = all_stats()
        grown = collect(stats)
        grown.update({p: stats[p].start_time for p in _descendants_of(snap, stats)})
        more = {p: s for p, s in grown.items() if p not in snap}
        if not more:
            break
        snap.update(more)
    return snap


def _wait_stopped(pids: Iterable[int], timeout: float = 2.0) -> None:
    """Wait until each pid is stopped or gone: a signal is delivered when its target runs."""
    deadline = time.monotonic() + timeout
    pending = list(pids)
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if is_alive(p) and not is_stopped(p)]
        if pending:
            time.sleep(0.005)


def kill_tree(pid: int, sig: int = signal.SIGKILL, *, env: tuple[str, str] | None = None
              ) -> list[int]:
    """Send `sig` to `pid` and every process of its tree (see `tree`); the pids signalled.

    For SIGKILL the tree is first frozen (`freeze`), so no process can fork a
    child that escapes between the walk and the kill.
    """
    def collect(stats: dict[int, ProcStat]) -> dict[int, int]:
        return tree(pid, env=env, stats=stats)

    snap = freeze(collect) if sig == signal.SIGKILL else collect(all_stats())
    return signal_snapshot(snap, sig)


def wait_dead(pids: Iterable[int], timeout: float, interval: float = 0.05) -> list[int]:
    """Wait until every pid is dead (or a zombie); the survivors after `timeout` seconds."""
    remaining = [p for p in pids if is_alive(p)]
    deadline = time.monotonic() + timeout
    while remaining and time.monotonic() < deadline:
        time.sleep(interval)
        remaining = [p for p in remaining if is_alive(p)]
    return remaining


__all__ = [
    "ProcStat",
    "all_stats",
    "cmdline",
    "descendants",
    "environ_has",
    "freeze",
    "is_alive",
    "is_stopped",
    "kill_tree",
    "marked",
    "read_stat",
    "same_process",
    "session_members",
    "signal_snapshot",
    "tree",
    "wait_dead",
]
