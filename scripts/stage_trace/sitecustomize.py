"""Per-stage timestamps from every node of a localnet: a diagnostic, not part of a node.

Loaded by Python at start-up when this folder is on PYTHONPATH (a ``sitecustomize``).
It acts only in a process started as ``... start --home ...`` with BFTNODE_STAGE_TRACE
set to a folder, and there wraps a few of the node's own methods to write one JSON line
per event to ``<folder>/<pid>.jsonl``: intake rounds, batches handed to consensus (own
or a peer's), proposals built, safety saves, block commits, consensus calls and the
executor's answers. It reaches into private methods of node.supervisor.Node and
node.actors.consensus_host.ConsensusHost, so a rename there stops a record: it then
writes an ["error", ...] line at start, and scripts/stage_trace.py says so.

    BFTNODE_STAGE_TRACE=/tmp/trace PYTHONPATH=$PWD:$PWD/scripts/stage_trace \\
        .venv/bin/python -m node.bench --validators 4 --rate 2000 --duration 20
    .venv/bin/python scripts/stage_trace.py /tmp/trace

PYTHONPATH must hold absolute paths: the bench's nodes run in another directory. The
bench's nodes must run in the in-supervisor layout (the localnet preset): the
mempool, consensus host and executor in the node's own process. Timestamps are
time.time(); one machine, one clock.
"""

from __future__ import annotations

import os
import sys

_FOLDER = os.environ.get("BFTNODE_STAGE_TRACE")


def _install(folder: str) -> None:  # noqa: C901 - one wrapper per traced method
    import atexit
    import collections
    import functools
    import json
    import threading
    import time

    os.makedirs(folder, exist_ok=True)
    out = open(os.path.join(folder, f"{os.getpid()}.jsonl"), "w", buffering=1 << 16)  # noqa: SIM115
    lock = threading.Lock()

    def log(*rec: object) -> None:
        with lock:
            out.write(json.dumps(rec) + "\n")

    def flusher() -> None:
        while True:
            time.sleep(1)
            with lock:
                out.flush()

    threading.Thread(target=flusher, daemon=True, name="stage-trace").start()

    @atexit.register
    def at_exit() -> None:
        log("exit", time.time())
        with lock:
            out.flush()

    try:
        import node.actors.consensus_host as host_mod
        import node.storage as storage_mod
        import node.supervisor as sup
    except Exception as exc:  # noqa: BLE001 - a diagnostic must not stop the node
        log("error", f"import: {exc}")
        return
    node_cls = sup.Node
    arrivals: collections.deque[float] = collections.deque()

    def wrap(owner: type, name: str, make) -> None:
        orig = getattr(owner, name, None)
        if orig is None:
            log("error", f"{owner.__name__}.{name} not found")
            return
        setattr(owner, name, functools.wraps(orig)(make(orig)))

    def submit_nowait(orig):
        def f(self, body):
            fut = orig(self, body)
            if not fut.done():
                arrivals.append(time.time())
            return fut
        return f

    def intake(orig):
        async def f(self, txs):
            t0 = time.time()
            ts = [arrivals.popleft() for _ in range(min(len(txs), len(arrivals)))]
            self._stage_local = True
            try:
                await orig(self, txs)
            finally:
                self._stage_local = False
            first = ts[0] if ts else t0
            log("intake", t0, time.time(), len(txs), first, sum(ts) / max(len(ts), 1))
        return f

    def to_consensus(orig):
        def f(self, record, urgent=True):
            kind = record[0]
            if kind == "batches":
                where = "local" if getattr(self, "_stage_local", False) else "remote"
                log("batches", time.time(), where, [d.hex()[:16] for d in record[1]])
            elif kind == "executed":
                log("executed", time.time(), record[1])
            return orig(self, record, urgent)
        return f

    def commit(orig):
        async def f(self, block_bytes, cert_bytes):
            t0 = time.time()
            block = sup.decode_block(block_bytes)
            await orig(self, block_bytes, cert_bytes)
            log("commit", t0, time.time(), block.header.height,
                [d.hex()[:16] for d in block.payload if len(d) == 32])
        return f

    def proposal_content(orig):
        def f(self, height):
            content = orig(self, height)
            if content is None:
                log("no_proposal", time.time(), height)
            else:
                log("propose", time.time(), height,
                    [d.hex()[:16] for d in content.payload if len(d) == 32])
            return content
        return f

    def handle(orig):
        def f(self, packed):
            t0 = time.time()
            try:
                return orig(self, packed)
            finally:
                log("handle", t0, time.time())
        return f

    def save(orig):
        def f(self, state):
            t0 = time.time()
            orig(self, state)
            log("save", t0, time.time())
        return f

    wrap(node_cls, "submit_nowait", submit_nowait)
    wrap(node_cls, "_intake", intake)
    wrap(node_cls, "_to_consensus", to_consensus)
    wrap(node_cls, "_commit", commit)
    wrap(host_mod.ConsensusHost, "proposal_content", proposal_content)
    wrap(host_mod.ConsensusHost, "handle", handle)
    wrap(storage_mod.LmdbSafetyStore, "save", save)
    log("installed", time.time(), os.getpid())


if _FOLDER and "start" in sys.argv and "--home" in sys.argv:
    _install(_FOLDER)
