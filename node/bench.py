"""`bftnode bench`: open-loop load against a localnet (or running nodes), finality report.

    bftnode bench [--validators N] [--rate TX_PER_S|Nx] [--duration S] [--tx-size B]
                  [--out FILE.json] [--plot FILE.png] [--rpc URL,...] [--peer pysyncobj]
                  [--sweep R1,R2,...] [--runtime ray|inprocess]

(also ``python -m node.bench`` with the same flags). One run:

1. ``verify_limit_tps``: `crypto.bench.measure_verify_rate` on all cores, divided
   by the number of validators (every validator checks every signature), and
   the generator's own ceiling (`node.loadgen.measure_ceiling`), both before
   any node runs. The verification limit is measured again after the last run
   (``verify_limit_after_tps``): the machine's speed drifts, so judge a ratio
   against the larger of the two.
2. A localnet of N validators (kvstore app) is started in a temporary
   directory, unless ``--rpc`` names running nodes; the bench waits until the
   chain makes blocks.
3. ``rate * duration`` kvstore txs of ``--tx-size`` bytes are signed *before* the
   clock starts, each from a wallet of its own (`node.loadgen.prepare_txs`): a tx
   the node refuses then costs only itself, not its wallet's later nonces.
   ``--rate`` (and each rate of ``--sweep``) is tx/s, or with an ``x`` a multiple
   of the ``verify_limit_tps`` just measured: ``--rate 0.25x`` offers a quarter
   of this machine's limit (``offered_of_verify_limit`` in the report).
4. The load window: txs are offered open-loop at ``--rate`` spread evenly over
   the nodes, while the bench follows every node's ``/v1/events``; a tx's
   finality is the time from writing its request to the first commit event
   naming it, at any node.
5. The drain: until every accepted tx has been seen committed, for as long as
   commits keep coming (none seen for 15 s ends it), at most
   ``max(60, 2 * duration)`` s: under overload the backlog is most of what the
   run measures.
6. The count: the blocks of the run's heights are read back
   (``GET /v1/blocks/H``) and the bench's txs found there are counted by result
   code (`count_committed`: the codes are replayed from the chain's order and
   checked against ``GET /v1/txs/{hash}``). ``committed`` is the number found
   with code 0: what the chain holds, not what the events said.

Definitions of the report (DESIGN section 8, plus the extra keys below):

- ``committed_tps = committed / duration_s``: every tx committed by the end
  of the drain, over the load window. Under overload the drain inflates it;
  ``window_tps`` counts only the commits seen inside the load window, and
  ``sustained_tps`` divides the committed txs by the time from the start of the
  window to the last commit seen (at least the window): what the chain sustained
  over the whole run, which in-window undercounts when blocks are few and large.
- ``finality_ms``: percentiles (nearest rank) over committed txs whose commit
  event was seen; ``finality_samples`` says how many.
- ``consensus_ms``: per block of the run, the first sighting of its commit
  event (bench wall clock) minus the block header's ``time_ms`` (the
  proposer's wall clock when it built the proposal). All processes share one
  machine and so one clock; the figure covers propose, prevote, precommit,
  execution and storage of the block, and the event's delivery (~1 ms).
- ``blocks``: blocks from the first to the last height holding a bench tx;
  ``mean_block_txs = committed / blocks``.

Before each run the bench waits (at most a minute) for the mempools to empty, so
that a run does not inherit the previous one's backlog (``backlog_at_start``).

Extra keys: runtime, tx_size, backlog_at_start, accepted, rejected (answered with
an error; + rejected_reasons), unanswered (no answer by the end of the drain),
not_committed_codes (bench txs in blocks with a failing code), codes_from, window_tps,
sustained_tps,
finality_samples, drain_s, heights, send_lag_ms (write time minus due time,
the generator's own lateness), generator{ceiling_tps, cpu_us_per_tx, ...},
load_average and cpu_pressure (Linux PSI, % of time a runnable task waited for a
CPU) at the end of the run, timeline (committed tx per bin, for plots), peer
(``--peer``), and node_cpu when
the bench started the localnet: the CPU seconds every process of every node used
from the start of the load window to the end of the drain (from /proc), by role
(supervisor, each actor, Ray's own processes), per committed tx and in cores.
On a shared machine this is the figure that other work disturbs least.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.loadgen import (
    DEFAULT_CONNECTIONS,
    STATUS_NO_REPLY,
    DriveResult,
    PreparedTxs,
    Progress,
    drive,
    measure_ceiling,
    prepare_txs,
    run_client,
)

DEFAULTS = {"validators": 4, "rate": "1000", "duration": 10.0, "tx_size": 200,
            "runtime": "ray"}
PEERS = ("pysyncobj",)
TIMELINE_BINS = 40
LIVE_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 60.0


class BenchError(Exception):
    """The bench could not run or could not count; the message says why."""


# --- statistics ---------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence: the smallest value with at least
    p% of the samples at or below it. NaN for no samples."""
    if not sorted_values:
        return math.nan
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside 0..100")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(values: Iterable[float], ps: Sequence[float] = (50, 95, 99),
              with_max: bool = True, digits: int = 1) -> dict[str, float | None]:
    """{"p50": .., "p95": .., "p99": .., "max": ..} rounded; None where there are no samples."""
    data = sorted(v for v in values if v == v)
    out: dict[str, float | None] = {}
    for p in ps:
        out[f"p{p:g}"] = round(percentile(data, p), digits) if data else None
    if with_max:
        out["max"] = round(data[-1], digits) if data else None
    return out


# --- the machine --------------------------------------------------------------------------


def _load_average() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def cpu_pressure() -> dict[str, float] | None:
    """Linux PSI: % of time some runnable task waited for a CPU (avg10, avg60).

    On a shared machine this says how much of the run's CPU other work took.
    """
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    fields = dict(kv.split("=") for kv in line.split()[1:])
    return {"avg10": float(fields["avg10"]), "avg60": float(fields["avg60"])}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    from crypto import verifier_backend
    from node.tx import tx_decoder_backend

    try:
        import ray
        ray_version = ray.__version__
    except ImportError:  # pragma: no cover - ray is a dependency
        ray_version = None
    return {"cpu": _cpu_model(), "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)), "arch": platform.machine(),
            "python": platform.python_version(), "os": platform.platform(terse=True),
            "verifier_backend": verifier_backend(), "tx_decoder": tx_decoder_backend(),
            "ray": ray_version,
            "load_average_start": _load_average(), "cpu_pressure_start": cpu_pressure()}


def measure_verify_limit(validators: int) -> tuple[float, float]:
    """(signatures/s on all cores, that divided by `validators`)."""
    from crypto.bench import measure_verify_rate

    rate = measure_verify_rate(count=4000, repeats=3)
    return rate, rate / validators


# --- talking to the nodes -----------------------------------------------------------------


async def _get_json(session: Any, url: str) -> Any:
    async with session.get(url) as resp:
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise BenchError(f"GET {url} -> {resp.status}: {(await resp.text())[:200]}")
        return await resp.json()


async def node_statuses(targets: Sequence[str]) -> list[dict[str, Any]]:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        return list(await asyncio.gather(*(_get_json(session, f"{u}/v1/status")
                                           for u in targets)))


async def wait_live(targets: Sequence[str], timeout: float = LIVE_TIMEOUT_S) -> int:
    """Wait until every node answers and the chain has grown by 2 blocks; the height."""
    deadline = time.monotonic() + timeout
    first: int | None = None
    last_error = ""
    while time.monotonic() < deadline:
        try:
            statuses = await node_statuses(targets)
            height = min(s["height"] for s in statuses)
            if first is None:
                first = height
            if height >= max(first + 2, 2):
                return height
        except Exception as exc:  # a node still starting refuses connections
            last_error = f": {exc}"
        await asyncio.sleep(0.2)
    raise BenchError(f"the chain at {', '.join(targets)} made no progress in {timeout:g} s"
                     f"{last_error}")


async def mempool_backlog(targets: Sequence[str]) -> int | None:
    """Txs waiting in the nodes' mempools (the ``bftnode_mempool_txs`` gauges), summed."""
    import aiohttp

    total = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for u in targets:
            async with session.get(f"{u}/metrics") as resp:
                text = await resp.text()
            values = [line.split()[-1] for line in text.splitlines()
                      if line.startswith("bftnode_mempool_txs ")]
            if not values:
                return None
            total += int(float(values[0]))
    return total


async def settle(targets: Sequence[str], timeout: float = SETTLE_TIMEOUT_S) -> tuple[int, float]:
    """Wait (bounded) until the mempools are empty, so a run does not inherit a backlog.

    Returns (txs still waiting, seconds waited).
    """
    started = time.monotonic()
    while True:
        backlog = await mempool_backlog(targets)
        if not backlog or time.monotonic() - started >= timeout:
            return backlog or 0, round(time.monotonic() - started, 1)
        await asyncio.sleep(0.5)


async def read_blocks(targets: Sequence[str], first: int, last: int,
                      concurrency: int = 8) -> dict[int, dict[str, Any]]:
    """GET /v1/blocks/H for first..last (spread over the nodes); {height: block JSON}."""
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    out: dict[int, dict[str, Any]] = {}

    async def one(session: Any, h: int) -> None:
        async with sem:
            for k in range(len(targets)):
                block = await _get_json(session, f"{targets[(h + k) % len(targets)]}/v1/blocks/{h}")
                if block is not None:
                    out[h] = block
                    return
        raise BenchError(f"no node has block {h}")

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(one(session, h) for h in range(first, last + 1)))
    return out


async def tx_codes(targets: Sequence[str], hashes: Sequence[str], concurrency: int = 32
                   ) -> dict[str, int | None]:
    """The committed result code of each tx (GET /v1/txs/{hash}); None if not committed."""
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    out: dict[str, int | None] = {}

    async def one(session: Any, i: int, h: str) -> None:
        async with sem:
            doc = await _get_json(session, f"{targets[i % len(targets)]}/v1/txs/{h}")
        out[h] = doc.get("code") if doc and doc.get("status") == "committed" else None

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(one(session, i, h) for i, h in enumerate(hashes)))
    return out


@dataclass
class ChainCount:
    """What the blocks of a run hold of the bench's txs."""

    committed: list[int]         # tx indices found with code 0
    failed: dict[int, int]       # tx index -> failing code
    heights: tuple[int, int]     # the range read
    block_of: dict[int, int]     # tx index -> height
    codes_from: str              # how the result codes were obtained


CODE_SAMPLE = 200


def replay_codes(txs: PreparedTxs, chain_order: Sequence[int]) -> dict[int, int]:
    """The kvstore result code of each bench tx, from the order the chain holds them in.

    kvstore applies a tx iff its nonce is its sender's next nonce (else code 1,
    BAD_NONCE, nothing changes), and the bench's wallets are fresh keys only the
    bench uses, so the codes follow from the order alone. A tx held twice counts
    at its first place, as the node's tx index does.
    """
    next_nonce: dict[int, int] = {}
    codes: dict[int, int] = {}
    for i in chain_order:
        if i in codes:
            continue
        wallet, nonce = txs.wallet_and_nonce(i)
        if nonce == next_nonce.get(wallet, 0):
            next_nonce[wallet] = nonce + 1
            codes[i] = 0
        else:
            codes[i] = 1
    return codes


async def count_committed(targets: Sequence[str], txs: PreparedTxs, first: int, last: int,
                          sample: int = CODE_SAMPLE) -> ChainCount:
    """Read blocks first..last and count the bench's txs in them by result code.

    Codes come from the blocks if the node lists them (a ``codes`` array beside
    ``tx_hashes``). Otherwise they are derived with `replay_codes` and checked
    against the node (``GET /v1/txs/{hash}``) on a random sample plus every tx
    the replay says failed (up to `sample` each); on any disagreement every tx
    is looked up instead. Looking up all of them costs about a millisecond
    each on a Ray node, which is minutes for a long run.
    """
    import random

    blocks = await read_blocks(targets, first, last) if last >= first else {}
    index = {h: i for i, h in enumerate(txs.hashes)}
    block_of: dict[int, int] = {}
    order: list[int] = []
    inline: dict[int, int] = {}
    for h in sorted(blocks):
        block = blocks[h]
        codes = block.get("codes")
        for k, tx_hash in enumerate(block.get("tx_hashes", ())):
            i = index.get(tx_hash)
            if i is None:
                continue
            order.append(i)
            block_of.setdefault(i, h)
            if isinstance(codes, list) and k < len(codes) and i not in inline:
                inline[i] = codes[k]
    if len(inline) == len(block_of):
        codes, source = inline, "blocks"
    else:
        codes = replay_codes(txs, order)
        failed = [i for i, c in codes.items() if c != 0]
        ok = [i for i, c in codes.items() if c == 0]
        rng = random.Random(len(order))
        check = rng.sample(ok, min(sample, len(ok))) + failed[:sample]
        found = await tx_codes(targets, [txs.hashes[i] for i in check])
        if all(found.get(txs.hashes[i]) == codes[i] for i in check):
            source = f"nonce replay, {len(check)} checked against GET /v1/txs"
        else:
            found = await tx_codes(targets, [txs.hashes[i] for i in block_of])
            codes = {i: -1 if found.get(txs.hashes[i]) is None else found[txs.hashes[i]]
                     for i in block_of}
            source = "GET /v1/txs for every tx (the replay disagreed with the node)"
    committed = sorted(i for i, c in codes.items() if c == 0)
    failed_codes = {i: c for i, c in codes.items() if c != 0}
    return ChainCount(committed, failed_codes, (first, last), block_of, source)


# --- where the nodes' CPU goes ------------------------------------------------------------

CpuProbe = Callable[[], dict[int, tuple[str, float]]]


def _role(pid: int) -> str:
    """What a node process is: supervisor, an actor (Mempool, ...), or Ray's own machinery."""
    from node import procs

    args = procs.cmdline(pid)
    text = " ".join(args)
    if args and args[0].startswith("ray::"):
        # Ray retitles a busy worker "ray::Class.method": the class is before the dot.
        name = args[0][5:].split(".")[0]
        return name if name in ACTOR_ROLES else "ray (agents)"
    if " node start " in f" {text} ":
        return "supervisor"
    if "node.rayhead" in text:
        return "ray (head)"
    for name in ("gcs_server", "raylet"):
        if name in text:
            return f"ray ({name})"
    return "ray (other)"


ACTOR_ROLES = ("Mempool", "ConsensusHost", "Executor", "BlockStore", "VerifierWorker")


def localnet_cpu_probe(net: Any) -> CpuProbe:
    """A function that returns {pid: (role, CPU seconds so far)} for every process of `net`."""
    from node import localnet, procs

    ticks = os.sysconf("SC_CLK_TCK")

    def pids() -> set[int]:
        found = {pid for node in net.nodes for pid in localnet.node_tree(node)}
        # A Ray localnet shares one Ray (node.rayhead): its gcs, raylet and agents too.
        head = localnet.ray_head_running(net) if hasattr(localnet, "ray_head_running") else None
        if head is not None:
            found |= set(procs.tree(head, env=(localnet.RAY_HEAD_ENV, str(net.dir))))
        return found

    def probe() -> dict[int, tuple[str, float]]:
        out = {}
        for pid in pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                out[pid] = (_role(pid), (int(fields[11]) + int(fields[12])) / ticks)
            except (OSError, IndexError, ValueError):
                continue
        return out

    return probe


def cpu_between(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                wall_s: float, committed: int) -> dict[str, Any]:
    """CPU the nodes used between two probes, by role, per committed tx and as cores."""
    by_role: dict[str, float] = {}
    for pid, (role, cpu) in after.items():
        used = cpu - before.get(pid, (role, 0.0))[1]
        by_role[role] = by_role.get(role, 0.0) + max(0.0, used)
    total = sum(by_role.values())
    return {"total_s": round(total, 2), "wall_s": round(wall_s, 2),
            "cores_busy": round(total / wall_s, 2) if wall_s else None,
            "us_per_committed_tx": round(total / committed * 1e6, 1) if committed else None,
            "by_role_s": {k: round(v, 2) for k, v in sorted(by_role.items(),
                                                             key=lambda kv: -kv[1])}}


# --- one run ------------------------------------------------------------------------------


class ProgressView:
    """A rich progress display of one run (on stderr, so stdout stays the report)."""

    def __init__(self, title: str, total: int, enabled: bool = True) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.enabled = enabled
        self.progress = Progress(TextColumn("{task.description:<11}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                 console=Console(stderr=True), transient=False,
                                 disable=not enabled)
        self.offered = self.progress.add_task(f"{title} offered", total=total, info="")
        self.committed = self.progress.add_task("committed", total=total, info="")

    def __enter__(self) -> ProgressView:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def update(self, p: Progress) -> None:
        self.progress.update(self.offered, completed=p.sent,
                             info=f"{p.phase} {p.elapsed:5.1f} s  accepted {p.accepted}  "
                                  f"refused {p.rejected}")
        self.progress.update(self.committed, completed=p.seen, info="seen in commit events")


def drain_timeout(duration: float) -> float:
    """The drain's limit; it ends sooner once everything is seen committed, or when
    commits stop coming (`node.loadgen.DrainRule`)."""
    return max(60.0, 2.0 * duration)


async def run_load(targets: Sequence[str], txs: PreparedTxs, rate: float, duration: float,
                   title: str, show_progress: bool = True, track_blocks: bool = True
                   ) -> DriveResult:
    with ProgressView(title, len(txs), show_progress) as view:
        return await drive(targets, txs, rate, duration, drain_timeout(duration),
                           DEFAULT_CONNECTIONS, progress=view.update, track_blocks=track_blocks)


def timeline(result: DriveResult, indices: Iterable[int], bins: int = TIMELINE_BINS
             ) -> dict[str, Any]:
    """Commits (first sightings) of `indices` per time bin from t0 to the end of the drain."""
    span = max(result.drain_end - result.t0, result.duration_s)
    width = max(0.25, span / bins)
    bins = max(1, math.ceil(span / width))
    counts = [0] * bins
    offered = [0] * bins
    for i in indices:
        t = result.watcher.seen[i]
        if t == t:
            counts[min(bins - 1, max(0, int((t - result.t0) / width)))] += 1
    for t in result.sent_at:
        if t == t:
            offered[min(bins - 1, max(0, int((t - result.t0) / width)))] += 1
    return {"bin_s": round(width, 4), "committed_tps": [round(c / width, 1) for c in counts],
            "offered_tps": [round(c / width, 1) for c in offered]}


def latency_samples(result: DriveResult, indices: Iterable[int]) -> list[float]:
    """Finality in ms of each of `indices` whose commit was seen."""
    seen, sent = result.watcher.seen, result.sent_at
    return [(seen[i] - sent[i]) * 1000 for i in indices if seen[i] == seen[i]]


def load_figures(result: DriveResult, rate: float, indices: Sequence[int]) -> dict[str, Any]:
    """The figures common to the node and its peer: throughput, finality, generator."""
    finality = latency_samples(result, indices)
    seen = [t for t in (result.watcher.seen[i] for i in indices) if t == t]  # not NaN
    in_window = sum(1 for t in seen if t <= result.t0 + result.duration_s)
    # From the first due submission to the last commit seen (at least the load window).
    span = max(result.duration_s, (max(seen) - result.t0) if seen else 0.0)
    lag = [(t - result.t0 - i / rate) * 1000 for i, t in enumerate(result.sent_at) if t == t]
    submitted = sum(1 for t in result.sent_at if t == t)
    unanswered = sum(1 for s in result.status if s == STATUS_NO_REPLY)
    return {
        "submitted": submitted,
        "accepted": result.accepted,
        "rejected": submitted - result.accepted - unanswered,
        "unanswered": unanswered,
        "rejected_reasons": dict(sorted(result.errors.items(), key=lambda kv: -kv[1])[:5]),
        "committed": len(indices),
        "committed_tps": round(len(indices) / result.duration_s, 1),
        "window_tps": round(in_window / result.duration_s, 1),
        "sustained_tps": round(len(indices) / span, 1),
        "finality_ms": summarize(finality),
        "finality_samples": len(finality),
        "drain_s": round(result.drain_end - result.load_end, 2),
        "send_lag_ms": summarize(lag, ps=(50, 99)),
        "generator_cpu_us_per_tx": round(result.cpu_s / max(1, submitted) * 1e6, 1),
        "timeline": timeline(result, indices),
    }


async def bench_once(targets: Sequence[str], validators: int, rate: float, duration: float,
                     tx_size: int, runtime: str, show_progress: bool = True,
                     cpu_probe: CpuProbe | None = None) -> tuple[dict[str, Any], list[float]]:
    """One run against running nodes: (report without machine/verify keys, finality samples)."""
    statuses = await node_statuses(targets)
    chain_id = statuses[0]["chain_id"]
    count = max(1, round(rate * duration))
    backlog, settled = await settle(targets)
    if settled:
        _say(f"waited {settled:g} s for the mempools to drain ({backlog} txs left)")
    started = time.monotonic()
    # A wallet per tx: kvstore applies a sender's txs in nonce order only, so a refused
    # tx (503: mempool full, or node busy under backpressure) would fail every later tx
    # of its wallet, and the count would measure this client's nonce gaps, not the chain.
    txs = prepare_txs(chain_id, count, rate, len(targets), tx_size, wallets=count)
    _say(f"signed {count} txs of {txs.tx_size} bytes from {txs.wallets} wallets in "
         f"{time.monotonic() - started:.1f} s")
    h0 = max(s["height"] for s in await node_statuses(targets))
    cpu_before = cpu_probe() if cpu_probe else None
    result = await run_load(targets, txs, rate, duration, f"{rate:g} tx/s", show_progress)
    cpu_after = cpu_probe() if cpu_probe else None
    # The highest node: the events may have come from it; read_blocks asks every node.
    h1 = max(s["height"] for s in await node_statuses(targets))
    started = time.monotonic()
    chain = await count_committed(targets, txs, h0 + 1, h1)
    _say(f"read blocks {h0 + 1}..{h1} and the codes of {len(chain.block_of)} txs in "
         f"{time.monotonic() - started:.1f} s")
    figures = load_figures(result, rate, chain.committed)
    our_heights = sorted({chain.block_of[i] for i in chain.committed})
    blocks = our_heights[-1] - our_heights[0] + 1 if our_heights else 0
    consensus = [sighting.seen_wall * 1000 - sighting.time_ms
                 for h, sighting in result.watcher.blocks.items()
                 if h0 < h <= h1 and isinstance(sighting.time_ms, int)]
    report = {
        "validators": validators,
        "offered_tps": rate,
        "duration_s": duration,
        "submitted": figures["submitted"],
        "committed": figures["committed"],
        "committed_tps": figures["committed_tps"],
        "finality_ms": figures["finality_ms"],
        "consensus_ms": summarize(consensus, ps=(50, 99), with_max=False),
        "blocks": blocks,
        "mean_block_txs": round(len(chain.committed) / blocks, 1) if blocks else 0.0,
        "runtime": runtime,
        "tx_size": txs.tx_size,
        "wallets": txs.wallets,
    }
    report.update({k: v for k, v in figures.items() if k not in report})
    report["not_committed_codes"] = _count_codes(chain.failed.values())
    report["codes_from"] = chain.codes_from
    report["load_average"] = _load_average()
    report["cpu_pressure"] = cpu_pressure()
    if cpu_before is not None and cpu_after is not None:
        report["node_cpu"] = cpu_between(cpu_before, cpu_after,
                                         result.drain_end - result.t0, len(chain.committed))
    report["backlog_at_start"] = backlog
    report["heights"] = [h0 + 1, h1]
    report["consensus_blocks"] = len(consensus)
    return report, latency_samples(result, chain.committed)


def _count_codes(codes: Iterable[int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in codes:
        out[str(c)] = out.get(str(c), 0) + 1
    return out


# --- the table ----------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(reports: Sequence[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for r in reports:
        peer = r.get("peer")
        multiple = r.get("offered_of_verify_limit")
        of_limit = f" ({multiple:g}x the verify limit)" if multiple else ""
        table = Table(title=f"bftnode bench: {r['validators']} validators ({r['runtime']}), "
                            f"{r['offered_tps']:g} tx/s{of_limit} offered for "
                            f"{r['duration_s']:g} s, "
                            f"{r['tx_size']}-byte txs")
        table.add_column("")
        table.add_column("bftnode (BFT)", justify="right")
        if peer:
            table.add_column(f"{peer['system']} (Raft)", justify="right")
            table.add_column("bftnode / peer", justify="right")
        rows = [
            ("submitted", "submitted"), ("accepted", "accepted"), ("rejected", "rejected"),
            ("unanswered", "unanswered"),
            ("committed (in blocks)", "committed"), ("committed tx/s", "committed_tps"),
            ("in-window tx/s", "window_tps"), ("sustained tx/s", "sustained_tps"),
        ]
        for label, key in rows:
            cells = [label, _fmt(r.get(key))]
            if peer:
                cells += [_fmt(peer.get(key)), _ratio(r.get(key), peer.get(key))]
            table.add_row(*cells)
        for p in ("p50", "p95", "p99", "max"):
            cells = [f"finality {p} ms", _fmt(r["finality_ms"].get(p))]
            if peer:
                cells += [_fmt(peer["finality_ms"].get(p)),
                          _ratio(r["finality_ms"].get(p), peer["finality_ms"].get(p))]
            table.add_row(*cells)
        extra = [("consensus p50 ms", r["consensus_ms"]["p50"]),
                 ("consensus p99 ms", r["consensus_ms"]["p99"]),
                 ("blocks", r["blocks"]), ("mean block txs", r["mean_block_txs"]),
                 ("verify limit tx/s", r.get("verify_limit_tps")),
                 ("... measured after", r.get("verify_limit_after_tps")),
                 ("generator ceiling tx/s", r.get("generator", {}).get("ceiling_tps")),
                 ("send lag p99 ms", r["send_lag_ms"]["p99"])]
        for label, value in extra:
            table.add_row(label, _fmt(value), *(["", ""] if peer else []))
        for label, key in (("node CPU us per tx", "us_per_committed_tx"),
                           ("node CPU cores busy", "cores_busy")):
            ours = r.get("node_cpu", {}).get(key)
            cells = [label, _fmt(ours)]
            if peer:
                theirs = peer.get("node_cpu", {}).get(key)
                cells += [_fmt(theirs), _ratio(ours, theirs)]
            table.add_row(*cells)
        if peer:
            table.caption = ("Raft (pysyncobj) tolerates crash faults only: no byzantine "
                             "faults, and it checks no signatures. bftnode checks every "
                             "signature at every validator and tolerates f byzantine of 3f+1.")
        console.print(table)
        if r.get("rejected_reasons"):
            console.print(f"refused: {r['rejected_reasons']}")


def _ratio(ours: Any, theirs: Any) -> str:
    if not isinstance(ours, (int, float)) or not isinstance(theirs, (int, float)) or not theirs:
        return "-"
    return f"{ours / theirs:.2f}x"


# --- plots --------------------------------------------------------------------------------


def plot_run(path: str, report: dict[str, Any], samples: Sequence[float],
             peer_samples: Sequence[float] | None = None) -> None:
    """Finality CDF and committed tx/s over time, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    series = [("bftnode", samples)]
    if peer_samples:
        series.append((f"{report['peer']['system']} (Raft, crash faults only)", peer_samples))
    for label, data in series:
        data = sorted(data)
        if data:
            ax1.plot(data, [(k + 1) / len(data) for k in range(len(data))], label=label)
    ax1.set_xscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax1.xaxis.set_major_formatter(plain)
    ax1.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax1.set_xlabel("finality: submit to commit seen by the client (ms)")
    ax1.set_ylabel("fraction of committed txs")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(loc="lower right")
    ax1.set_title("finality CDF")
    tl = report["timeline"]
    xs = [(k + 0.5) * tl["bin_s"] for k in range(len(tl["committed_tps"]))]
    ax2.plot(xs, tl["committed_tps"], label="committed tx/s (first sighting)")
    ax2.plot(xs, tl["offered_tps"], label="offered tx/s", linestyle="--")
    ax2.axvline(report["duration_s"], color="grey", linestyle=":", label="end of load window")
    if report.get("peer"):
        ptl = report["peer"]["timeline"]
        pxs = [(k + 0.5) * ptl["bin_s"] for k in range(len(ptl["committed_tps"]))]
        ax2.plot(pxs, ptl["committed_tps"], label="peer committed tx/s", alpha=0.7)
    ax2.set_xlabel("seconds since the first tx was due")
    ax2.set_ylabel("tx/s")
    ax2.grid(True, alpha=0.3)
    ax2.legend(loc="upper right", fontsize="small")
    ax2.set_title("throughput over time")
    fig.suptitle(f"{report['validators']} validators ({report['runtime']}), "
                 f"{report['offered_tps']:g} tx/s offered, {report['tx_size']}-byte txs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(path: str, reports: Sequence[dict[str, Any]]) -> None:
    """Finality (p50, p99) against sustained throughput, one point per offered rate.

    Sustained, not `committed_tps`: past the chain's capacity the drain commits the
    backlog, and committed / window would put an overloaded run at its offered rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(8, 5))

    def draw(rs: Sequence[dict[str, Any]], name: str, style: str) -> None:
        xs = [r.get("sustained_tps", r["committed_tps"]) for r in rs]
        for p, marker in (("p50", "o"), ("p99", "s")):
            ys = [r["finality_ms"][p] if r["finality_ms"][p] is not None else math.nan
                  for r in rs]
            ax.plot(xs, ys, style, marker=marker, label=f"{name} finality {p}")
        for r, x in zip(rs, xs, strict=True):
            y = r["finality_ms"]["p50"]
            if y is not None:
                ax.annotate(f"{r['offered_tps']:g}", (x, y), textcoords="offset points",
                            xytext=(4, -12), fontsize=7)

    draw(reports, "bftnode", "-")
    peers = [r["peer"] for r in reports if r.get("peer")]
    if peers:
        draw(peers, f"{peers[0]['system']} (Raft, crash only)", "--")
    limit = reports[0].get("verify_limit_tps")
    if limit:
        ax.axvline(limit, color="grey", linestyle=":", label=f"verify limit {limit:,.0f} tx/s")
    low, high = ax.get_ylim()
    if high > 10 * max(low, 1e-9):  # log only where latencies span decades
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("sustained tx/s: committed / time to the last commit (labels: offered tx/s)")
    ax.set_ylabel("finality (ms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    r0 = reports[0]
    ax.set_title(f"latency vs throughput: {r0['validators']} validators ({r0['runtime']}), "
                 f"{r0['tx_size']}-byte txs, {r0['duration_s']:g} s per rate")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the command --------------------------------------------------------------------------


@dataclass(frozen=True)
class OfferedRate:
    """An offered rate as given: tx/s, or a multiple of `verify_limit_tps` ("0.25x").

    The relative form runs a target stated against the verification limit ("a quarter
    of verify_limit_tps") at exactly that rate on whatever machine runs it: the limit is
    measured before any load, and the rate follows from it.
    """

    value: float
    of_verify_limit: bool = False

    def tps(self, verify_limit: float) -> float:
        return round(self.value * verify_limit, 1) if self.of_verify_limit else self.value

    def __str__(self) -> str:
        return f"{self.value:g}x" if self.of_verify_limit else f"{self.value:g}"


def parse_rate(text: str) -> OfferedRate:
    """`OfferedRate` of ``"1500"`` (tx/s) or ``"0.25x"`` (of the verify limit);
    ValueError for anything else, or a rate that is not a positive finite number."""
    text = str(text).strip()
    relative = text[-1:] in ("x", "X")
    try:
        value = float(text[:-1] if relative else text)
    except ValueError:
        raise ValueError(f"rate {text!r} is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"rate {text!r} is not a positive number")
    return OfferedRate(value, relative)


@dataclass
class BenchOptions:
    validators: int
    rates: list[OfferedRate]
    duration: float
    tx_size: int
    runtime: str
    rpc: list[str]
    peer: str | None
    out: str | None
    plot: str | None
    progress: bool = True


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    """Defaults for what the caller left None, and checks argparse could not do.

    A bad value raises `node.cli.UsageError` (exit code 2, like argparse's own errors).
    """
    from node.cli import UsageError

    def get(name: str) -> Any:
        value = getattr(args, name, None)
        return DEFAULTS[name] if value is None else value

    sweep = getattr(args, "sweep", None)
    if sweep:
        try:
            rates = [parse_rate(x) for x in str(sweep).split(",") if x.strip()]
        except ValueError as exc:
            raise UsageError(f"--sweep {sweep!r}: {exc}; give tx/s or multiples of the "
                             "verify limit, e.g. 500,1000 or 0.1x,0.25x") from None
        if not rates:
            raise UsageError("--sweep names no rate")
    else:
        try:
            rates = [parse_rate(get("rate"))]
        except ValueError as exc:
            raise UsageError(f"--rate: {exc}; give tx/s (1500) or a multiple of the "
                             "verify limit (0.25x)") from None
    duration = float(get("duration"))
    if not duration > 0:
        raise UsageError(f"--duration must be > 0, got {duration}")
    peer = getattr(args, "peer", None)
    if peer is not None and peer not in PEERS:
        raise UsageError(f"--peer {peer!r}: the only peer is {', '.join(PEERS)}")
    rpc = [u.strip().rstrip("/") for u in (getattr(args, "rpc", None) or "").split(",")
           if u.strip()]
    return BenchOptions(validators=int(get("validators")), rates=rates, duration=duration,
                        tx_size=int(get("tx_size")), runtime=str(get("runtime")), rpc=rpc,
                        peer=peer, out=getattr(args, "out", None),
                        plot=getattr(args, "plot", None),
                        progress=getattr(args, "progress", True))


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(opts: BenchOptions) -> list[dict[str, Any]]:
    """Every run of `opts`, each report complete (machine, verify limit, peer)."""
    machine = machine_info()
    _say("measuring the verification limit and the generator ceiling ...")
    validators = opts.validators
    if opts.rpc:
        statuses = asyncio.run(node_statuses(opts.rpc))
        validators = len(statuses[0].get("validators") or []) or len(opts.rpc)
    sig_rate, verify_limit = measure_verify_limit(validators)
    ceiling = measure_ceiling(count=20_000, tx_size=opts.tx_size)
    _say(f"verify: {sig_rate:,.0f} signatures/s on all cores -> {verify_limit:,.0f} tx/s "
         f"for {validators} validators; generator ceiling {ceiling['tps']:,.0f} req/s "
         f"({ceiling['cpu_us_per_tx']:.1f} us CPU per request)")
    rates = [r.tps(verify_limit) for r in opts.rates]
    for r, tps in zip(opts.rates, rates, strict=True):
        if r.of_verify_limit:
            _say(f"offered rate {r} of the verify limit: {tps:,.1f} tx/s")

    results: list[tuple[dict[str, Any], list[float]]] = []
    if opts.rpc:
        runtime = statuses[0].get("runtime") or "unknown"
        asyncio.run(wait_live(opts.rpc))
        for rate in rates:
            results.append(run_client(bench_once(opts.rpc, validators, rate, opts.duration,
                                                  opts.tx_size, runtime, opts.progress)))
    else:
        results = _with_localnet(opts, rates)
    # Once more with the nodes idle (or stopped): this shared machine's speed drifts, and
    # one measurement taken in a slow minute makes any throughput look close to it.
    sig_after, verify_limit_after = measure_verify_limit(validators)
    _say(f"verify after the load: {sig_after:,.0f} signatures/s -> "
         f"{verify_limit_after:,.0f} tx/s")

    reports = []
    for (report, _samples), offered in zip(results, opts.rates, strict=True):
        if offered.of_verify_limit:
            report["offered_of_verify_limit"] = offered.value
        report["verify_limit_tps"] = round(verify_limit, 1)
        report["verify_limit_after_tps"] = round(verify_limit_after, 1)
        report["machine"] = dict(machine, verify_signatures_per_s=round(sig_rate, 1),
                                 verify_signatures_after_per_s=round(sig_after, 1),
                                 load_average_end=_load_average(),
                                 cpu_pressure_end=cpu_pressure())
        report["generator"] = {"ceiling_tps": round(ceiling["tps"], 1),
                               "ceiling_cpu_us_per_tx": round(ceiling["cpu_us_per_tx"], 2),
                               "cpu_us_per_tx": report.pop("generator_cpu_us_per_tx"),
                               "connections_per_node": DEFAULT_CONNECTIONS,
                               "method": "open loop, pipelined HTTP/1.1 keep-alive, "
                                         "one process"}
        report["generator_ceiling_tps"] = round(ceiling["tps"], 1)
        reports.append(report)

    peer_samples: list[list[float]] = []
    if opts.peer:
        from node.peer_bench import run_peer

        for report in reports:
            peer, samples = run_peer(validators, report["offered_tps"], opts.duration,
                                     opts.tx_size, show_progress=opts.progress)
            for key in ("committed_tps", "window_tps", "sustained_tps"):
                peer.setdefault("ratio", {})[key] = _ratio(report[key], peer[key])
            for p in ("p50", "p99"):
                peer["ratio"][f"finality_{p}"] = _ratio(report["finality_ms"][p],
                                                        peer["finality_ms"][p])
            report["peer"] = peer
            peer_samples.append(samples)

    if opts.plot:
        if len(reports) > 1:
            plot_sweep(opts.plot, reports)
        else:
            plot_run(opts.plot, reports[0], results[0][1],
                     peer_samples[0] if peer_samples else None)
    return reports


def _with_localnet(opts: BenchOptions, rates: Sequence[float]
                   ) -> list[tuple[dict[str, Any], list[float]]]:
    from node import localnet

    directory = tempfile.mkdtemp(prefix="bftnode-bench-")
    _say(f"starting a localnet of {opts.validators} validators ({opts.runtime}) in {directory}")
    try:
        net = localnet.up(Path(directory) / "net", opts.validators, app="kvstore",
                          runtime=opts.runtime)
    except BaseException:
        # Node logs explain a failed start: keep them. Nothing written: leave nothing behind.
        if any(p.is_file() for p in Path(directory).rglob("*")):
            _say(f"the localnet's homes and logs are kept in {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    ok = False
    try:
        results = run_on_localnet(net, opts, rates)
        ok = True
        return results
    finally:
        localnet.down(net)
        if ok:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            _say(f"the localnet's homes and logs are kept in {directory}")


def run_on_localnet(net: Any, opts: BenchOptions, rates: Sequence[float]
                    ) -> list[tuple[dict[str, Any], list[float]]]:
    """Each of `rates` (tx/s) against a running `node.localnet.Localnet`, with CPU
    accounting; `opts` gives the rest."""
    targets = [n.rpc for n in net.nodes]
    asyncio.run(wait_live(targets))
    probe = localnet_cpu_probe(net)
    return [run_client(bench_once(targets, len(net.nodes), rate, opts.duration, opts.tx_size,
                                   net.runtime, opts.progress, cpu_probe=probe))
            for rate in rates]


def write_out(path: str, reports: Sequence[dict[str, Any]]) -> None:
    doc: Any = reports[0] if len(reports) == 1 else {"sweep": list(reports)}
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")


def main(args: argparse.Namespace) -> int:
    """Entry point of `bftnode bench` (node.cli passes its parsed arguments)."""
    opts = options_from_args(args)
    reports = run(opts)
    print_table(reports)
    if opts.out:
        write_out(opts.out, reports)
        _say(f"report written to {opts.out}")
    if opts.plot:
        _say(f"plot written to {opts.plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The same flags as `bftnode bench` (node.cli), for ``python -m node.bench``."""
    p = argparse.ArgumentParser(prog="python -m node.bench",
                                description="open-loop load against a localnet; finality report")
    p.add_argument("--validators", type=int, default=None, metavar="N")
    p.add_argument("--rate", default=None, metavar="TX_PER_S|Nx")
    p.add_argument("--duration", type=float, default=None, metavar="S")
    p.add_argument("--tx-size", type=int, default=None, metavar="B")
    p.add_argument("--out", default=None, metavar="FILE.json")
    p.add_argument("--plot", default=None, metavar="FILE.png")
    p.add_argument("--rpc", default=None, metavar="URL,...")
    p.add_argument("--peer", default=None, choices=PEERS)
    p.add_argument("--sweep", default=None, metavar="RATES")
    p.add_argument("--runtime", choices=("ray", "inprocess"), default=None)
    return p


def _cli(argv: Sequence[str] | None = None) -> int:
    from node.cli import UsageError

    args = build_parser().parse_args(argv)
    try:
        return main(args)
    except UsageError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"bench: error: {' '.join(str(exc).split()) or type(exc).__name__}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(_cli())


__all__ = ["BenchError", "OfferedRate", "bench_once", "count_committed", "main",
           "options_from_args", "parse_rate", "percentile", "run", "summarize"]
