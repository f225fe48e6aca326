"""The `--peer pysyncobj` comparison of `bftnode bench`: a Raft cluster driven the same way.

Raft tolerates crash faults only: a single lying replica can break it, and it
checks no signatures. It is here as a yardstick for what the same language,
the same machine and the same client get from a crash-fault-tolerant
replicated log, next to bftnode, which checks every signature at every
validator and tolerates f byzantine validators of 3f+1.

The cluster: N replica processes on 127.0.0.1 (free ports), each a
`pysyncobj.SyncObj` holding a replicated dict (tx hash -> tx) and counter,
with append-entries every 5 ms, no journal file (in memory: it does not fsync,
while bftnode's LMDB does), log compaction off for the run. Each replica
serves the same HTTP surface the bench uses on a node, on aiohttp like the
node:

- ``POST /v1/txs`` (the tx bytes): hands the command to Raft (a follower
  forwards it to the leader) and answers ``202 {"hash"}``, or 503 while there
  is no leader;
- ``GET /v1/events`` (WebSocket): every 1 ms, the hashes of the commands this
  replica applied since the last message, as ``{"type": "block", "height",
  "tx_hashes", "time_ms"}`` (a command is applied only once Raft committed it);
- ``GET /v1/status``: leader, readiness and the applied count.

The client is `node.loadgen.drive`, exactly as for bftnode: the same signed
txs (of the same size; their signatures are simply not checked), open loop at
the same rate for the same window, spread over the replicas; finality is
submit to the first "applied" sighting at any replica.

    python -m node.peer_bench --replicas 3 --rate 2000 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

REPLICA_FLUSH_S = 0.001
APPEND_ENTRIES_PERIOD_S = 0.005
READY_TIMEOUT_S = 30.0
FAULT_MODEL = ("crash faults only: no byzantine fault tolerance, no signatures checked "
               "(bftnode: f byzantine of 3f+1, every signature checked at every validator)")


# --- one replica (runs in its own process) ------------------------------------------------


def _make_replica(self_addr: str, partners: list[str]) -> Any:
    from pysyncobj import SyncObj, SyncObjConf, replicated

    class ReplicatedLog(SyncObj):
        def __init__(self) -> None:
            # Set before SyncObj.__init__, so not part of the replicated state.
            self.applied: deque[bytes] = deque()
            conf = SyncObjConf(appendEntriesPeriod=APPEND_ENTRIES_PERIOD_S,
                               autoTickPeriod=APPEND_ENTRIES_PERIOD_S,
                               commandsQueueSize=2_000_000, dynamicMembershipChange=False,
                               logCompactionMinEntries=10**9, logCompactionMinTime=10**9)
            super().__init__(self_addr, partners, conf)
            self._txs: dict[bytes, bytes] = {}
            self._count = 0

        @replicated
        def put(self, tx: bytes) -> None:
            from hashlib import sha256

            h = sha256(tx).digest()
            self._txs[h] = tx
            self._count += 1
            self.applied.append(h)

        def count(self) -> int:
            return self._count

    return ReplicatedLog()


async def _serve_replica(self_addr: str, partners: list[str], http_port: int) -> None:
    from hashlib import sha256

    from aiohttp import web

    log = _make_replica(self_addr, partners)
    subscribers: set[web.WebSocketResponse] = set()
    seq = 0

    async def post_tx(request: web.Request) -> web.Response:
        body = await request.read()
        if log._getLeader() is None:
            return web.json_response({"error": "no leader yet"}, status=503)
        log.put(body)
        return web.json_response({"hash": sha256(body).hexdigest()}, status=202)

    async def status(request: web.Request) -> web.Response:
        leader = log._getLeader()
        return web.json_response({"leader": None if leader is None else str(leader),
                                  "ready": log.isReady(), "applied": log.count(),
                                  "self": self_addr})

    async def events(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        subscribers.add(ws)
        try:
            async for _msg in ws:
                pass
        finally:
            subscribers.discard(ws)
        return ws

    async def flush() -> None:
        nonlocal seq
        while True:
            await asyncio.sleep(REPLICA_FLUSH_S)
            if not log.applied:
                continue
            hashes = []
            while log.applied:
                hashes.append(log.applied.popleft().hex())
            seq += 1
            text = json.dumps({"type": "block", "height": seq, "tx_hashes": hashes,
                               "time_ms": int(time.time() * 1000)})
            for ws in list(subscribers):
                try:
                    await ws.send_str(text)
                except ConnectionError:
                    subscribers.discard(ws)

    app = web.Application()
    app.router.add_post("/v1/txs", post_tx)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/events", events)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    flusher = asyncio.create_task(flush())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    flusher.cancel()
    await runner.cleanup()
    log.destroy()


# --- the cluster --------------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class RaftCluster:
    """N pysyncobj replica processes on 127.0.0.1; a context manager that stops them."""

    def __init__(self, replicas: int) -> None:
        if replicas < 1:
            raise ValueError("a Raft cluster needs at least one replica")
        ports = _free_ports(2 * replicas)
        self.raft = [f"127.0.0.1:{p}" for p in ports[:replicas]]
        self.http = [f"http://127.0.0.1:{p}" for p in ports[replicas:]]
        self.dir = tempfile.mkdtemp(prefix="bftnode-raft-")
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> RaftCluster:
        for i, addr in enumerate(self.raft):
            partners = ",".join(a for a in self.raft if a != addr)
            port = self.http[i].rsplit(":", 1)[1]
            with open(os.path.join(self.dir, f"replica{i}.log"), "ab") as log:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "node.peer_bench", "replica", "--self", addr,
                     "--partners", partners, "--http-port", port],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.stop()
        if exc_type is None:  # keep the replicas' logs only when something went wrong
            shutil.rmtree(self.dir, ignore_errors=True)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until every replica answers and all agree on a leader."""
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a pysyncobj replica exited with {p.returncode}; "
                                       f"logs in {self.dir}")
            try:
                docs = [json.loads(urllib.request.urlopen(f"{u}/v1/status", timeout=1).read())
                        for u in self.http]
                leaders = {d["leader"] for d in docs}
                if len(leaders) == 1 and None not in leaders and all(d["ready"] for d in docs):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the pysyncobj cluster elected no leader in {timeout:g} s; "
                           f"logs in {self.dir}")

    def cpu(self) -> dict[int, tuple[str, float]]:
        """{pid: ("replica", CPU seconds so far)} of the replica processes."""
        ticks = os.sysconf("SC_CLK_TCK")
        out = {}
        for p in self.procs:
            try:
                with open(f"/proc/{p.pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                out[p.pid] = ("replica", (int(fields[11]) + int(fields[12])) / ticks)
            except (OSError, IndexError, ValueError):
                continue
        return out

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.procs.clear()


def run_peer(replicas: int, rate: float, duration: float, tx_size: int,
             show_progress: bool = True) -> tuple[dict[str, Any], list[float]]:
    """One open-loop run against a fresh Raft cluster: (figures, finality samples in ms)."""
    import pysyncobj

    from node.bench import cpu_between, load_figures, run_load
    from node.loadgen import prepare_txs, run_client

    count = max(1, round(rate * duration))
    with RaftCluster(replicas) as cluster:
        txs = prepare_txs("pysyncobj-peer", count, rate, replicas, tx_size)
        cpu_before = cluster.cpu()
        result = run_client(run_load(cluster.http, txs, rate, duration,
                                      f"raft {rate:g} tx/s", show_progress,
                                      track_blocks=False))
        cpu_after = cluster.cpu()
    seen = result.watcher.seen
    applied = [i for i in range(count) if seen[i] == seen[i]]
    figures = load_figures(result, rate, applied)
    figures["node_cpu"] = cpu_between(cpu_before, cpu_after, result.drain_end - result.t0,
                                      len(applied))
    peer = {"system": "pysyncobj", "version": getattr(pysyncobj, "__version__", None) or
            _dist_version("pysyncobj"),
            "protocol": "Raft", "fault_model": FAULT_MODEL, "replicas": replicas,
            "offered_tps": rate, "duration_s": duration,
            "config": {"append_entries_period_ms": APPEND_ENTRIES_PERIOD_S * 1000,
                       "journal": "none (in memory, no fsync)",
                       "event_flush_ms": REPLICA_FLUSH_S * 1000},
            "committed_means": "applied, seen by the client in a replica's event stream",
            "tx_size": txs.tx_size}
    peer.update(figures)
    return peer, [(seen[i] - result.sent_at[i]) * 1000 for i in applied]


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.peer_bench",
                                     description="bftnode bench's pysyncobj (Raft) peer")
    sub = parser.add_subparsers(dest="command")
    r = sub.add_parser("replica", help="run one replica (the bench starts these)")
    r.add_argument("--self", required=True, dest="self_addr", metavar="HOST:PORT")
    r.add_argument("--partners", default="", metavar="HOST:PORT,...")
    r.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--tx-size", type=int, default=200)
    args = parser.parse_args(argv)
    if args.command == "replica":
        partners = [p for p in args.partners.split(",") if p]
        asyncio.run(_serve_replica(args.self_addr, partners, args.http_port))
        return 0
    peer, _ = run_peer(args.replicas, args.rate, args.duration, args.tx_size)
    peer.pop("timeline", None)
    print(json.dumps(peer, indent=2))
    return 0 if peer["committed"] > 0 and not math.isnan(peer["committed_tps"]) else 1


if __name__ == "__main__":
    sys.exit(main())
