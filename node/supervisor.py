"""The supervisor: one process per node that owns its actors and does all I/O.

    client ─HTTP─▶ RpcServer ─▶ admission ─▶ Mempool ⇄ VerifierPool
                                                │ sealed batches ─▶ peers, ConsensusHost
    peers ⇄ PeerNetwork ─▶ route ─▶ ConsensusHost / Mempool / BlockStore
                                  ConsensusHost ─ decide ─▶ commit pipeline
    commit pipeline: Mempool(batches) ─▶ Executor(apply + store) ─▶ waiters, events

The actors (Mempool, ConsensusHost, Executor, BlockStore, VerifierWorker×K)
are plain classes hosted by `node.runtime`: Ray actors by default, or objects
in this process. On Ray the ConsensusHost, the Mempool and the Executor are
hosted in this process unless `[ray] consensus_in_supervisor` /
`mempool_in_supervisor` / `executor_in_supervisor` is false: the engine's calls
are the most frequent and sit on every height's critical path, the mempool's
sit on every tx's path (the hosted mempool still calls the verifier actors, if
any), and the executor's on every block's. Every path that
crosses an actor boundary is batched: the consensus pump hands the ConsensusHost
every input that arrived since its last call, the intake loop hands the mempool
every tx and peer batch that arrived within one batch timeout (one call, one
verifier call, one sealed batch), and the commit pipeline moves whole blocks.

The supervisor owns its Ray actors: if it is SIGKILLed they die with it
(Ray's owner fate-sharing) and the node restarts as a unit from its store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import msgpack

from consensus.codec import CodecError, Limits
from consensus.types import DuplicateVoteEvidence, Proposal, Vote
from crypto import address, load_private_key
from node.actors.blockstore import SYNC_MAX_BYTES, BlockStore
from node.actors.consensus_host import ConsensusHost, is_batch_digest
from node.actors.executor import Executor
from node.actors.mempool import Mempool, MempoolLimits, rejection_label
from node.actors.verifier_pool import VerifierWorker
from node.apps import CODE_NAMES, MemoryState, make_app
from node.batch_fetch import DeferredFetches
from node.config import NodeConfig, load_config, parse_host_port
from node.genesis import Genesis, load_genesis
from node.metrics import NodeMetrics, catch_up
from node.p2p import NetworkConfig, PeerAddress, PeerNetwork
from node.p2p.transport import within
from node.rpc import RpcServer
from node.runtime import InProcessRuntime, Runtime, make_runtime, tune_gc
from node.wire import (
    PEER_MESSAGES,
    BatchGossip,
    BatchRequest,
    BlockSyncRequest,
    BlockSyncResponse,
    decode_block,
)

log = logging.getLogger("bftnode")

SYNC_BATCH = 16
_SYNC_FED_VALID_S = 5.0        # how long blocks fed by sync count as "asked for already"
_FRAME_ROOM = 64 * 1024        # framing room kept under [p2p] max_frame_bytes
_ADMISSION_MAX = 4096          # txs per admission call
_INTAKE_NOW_TXS = 64           # txs waiting that start an intake round without more delay
_NOTICE_DELAY_S = 0.02        # longest a new-batch notice waits to share a consensus call
_REMOTE_BATCHES_PER_CALL = 64  # peer batches verified and stored per round of actor calls
# Peers' batches queued for intake. A batch dropped here is fetched back only when a
# proposal names it, and meanwhile this node may propose its origin's *later* batches:
# a wallet's next nonce ahead of the dropped one, which then fails. So the bound is
# generous in count (under overload rounds are slow and small batches pile up) and
# firm in bytes.
_REMOTE_BATCHES_QUEUED = 8192
_REMOTE_BATCH_BYTES_QUEUED = 256 * 1024 * 1024
_EVENT_QUEUE = 1024            # events buffered per /v1/events subscriber


@dataclass
class _Waiter:
    future: asyncio.Future
    submitted: float


async def _gather(wake: asyncio.Event, now: asyncio.Event, delay: float) -> None:
    """Wait for `wake`, then up to `delay` more for company unless `now` is (or gets)
    set; clear both. The batching wait of the consensus pump and of the intake loop."""
    await wake.wait()
    if not now.is_set():
        # `within`, not asyncio.wait_for: before Python 3.12 wait_for can swallow a cancel
        # that races with `now`, and Node.stop then waits forever for this loop.
        with contextlib.suppress(TimeoutError):
            await within(delay, now.wait())
    wake.clear()
    now.clear()


class NodeHalted(Exception):
    """The node stopped itself to stay safe (app hash mismatch, store error)."""


class Node:
    """One validator (or observer) node; `await start()`, then `await stop()`."""

    def __init__(self, cfg: NodeConfig, genesis: Genesis) -> None:
        self.cfg = cfg
        self.genesis = genesis
        self.chain_id = genesis.chain_id
        self.key = load_private_key(cfg.node_key_path)
        self.node_id = address(self.key.public_key)
        self.metrics = NodeMetrics()
        self.runtime: Runtime | None = None
        self._local_runtime: InProcessRuntime | None = None   # actors hosted here on Ray
        self.verifier_workers: list = []
        self.network: PeerNetwork | None = None
        self.rpc: RpcServer | None = None
        self.height = 0
        self.block_hash = b""
        self.app_hash = b""
        self.halted: str | None = None
        self.stopped = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._cons_inputs: list[list] = []
        self._cons_wake = asyncio.Event()
        self._cons_urgent = asyncio.Event()
        self._timers: dict[tuple[int, int, int], asyncio.TimerHandle] = {}
        self._admission: deque[tuple[bytes, asyncio.Future]] = deque()
        self._intake_wake = asyncio.Event()    # something arrived
        self._intake_now = asyncio.Event()     # ... that should not wait for company
        self._remote_wake = asyncio.Event()    # a peer's batch arrived
        # Peers' batches waiting for verification: (when it arrived, encoded batch).
        self._remote_batches: deque[tuple[float, bytes]] = deque()
        self._remote_batch_bytes = 0
        self._receive_lock = asyncio.Lock()    # one receive_batches call at a time
        self._max_verify_wait = cfg.mempool.max_verify_wait_ms / 1000.0
        self._decided: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue()
        self._to_prepare: bytes | None = None    # latest block to apply ahead of its decision
        self._executed_height = 0                # applied by the executor (maybe not stored)
        self._prepared_hash: bytes | None = None   # the block the executor last prepared
        self._prepare_wake = asyncio.Event()
        self._waiters: dict[bytes, list[_Waiter]] = {}
        self._admitted_at: dict[bytes, float] = {}
        self._subscribers: set[asyncio.Queue] = set()
        self._fetching: dict[bytes, float] = {}
        self._deferred_fetches = DeferredFetches()
        self._sync_requested_at = 0.0
        # Highest height handed to consensus by block sync, and when: the next request
        # starts above it, not at the executed height, which lags while blocks execute.
        self._synced_to = (0, 0.0)
        self._last_commit_time: float | None = None
        self._catching_up = False
        self._network_height = 0

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        cfg, genesis = self.cfg, self.genesis
        tune_gc()   # this process, and the actors the in-process host keeps in it
        data_dir = str(cfg.data_dir)
        map_size = cfg.storage.map_size_mb * 1024 * 1024
        self.runtime = rt = make_runtime(
            cfg.node.runtime, cfg.ray.namespace_for(self.node_id), address=cfg.ray.address,
            include_dashboard=cfg.ray.include_dashboard, observe=self.metrics.observe_call)
        validators = [(v.public_key_bytes, v.power) for v in genesis.validators]
        genesis_app_hash = make_app(genesis.app, MemoryState(),
                                    genesis=genesis.allocations).genesis_app_hash()
        ns = self.node_id[:8]
        # The verifier pool's workers are called by the mempool itself: one supervisor call
        # per admission round. In-process, the mempool verifies on its own worker thread.
        self.verifier_workers = workers = [rt.spawn(f"verifier-{ns}-{i}", VerifierWorker,
                            resources=cfg.ray.verifier_resources or None)
                   for i in range(cfg.ray.verifier_actors)] if rt.kind == "ray" else []
        # The engine's calls are many, small and on every height's critical path, the
        # mempool's are on every tx's path and the executor's on every block's: on Ray
        # all three are hosted here by default ([ray] consensus_in_supervisor,
        # mempool_in_supervisor, executor_in_supervisor), as under the in-process
        # runtime. The hosted mempool still calls the verifier actors.
        self._local_runtime = local_rt = (
            InProcessRuntime(self.metrics.observe_call) if rt.kind == "ray" else None)
        m = cfg.mempool
        mempool_rt = local_rt if local_rt is not None and cfg.ray.mempool_in_supervisor else rt
        executor_rt = local_rt if local_rt is not None and cfg.ray.executor_in_supervisor else rt
        # Both in this process (not Ray actors): the executor takes the mempool's decoded txs.
        share_decoded = mempool_rt is executor_rt and mempool_rt.kind == "inprocess"
        self.mempool = mempool_rt.spawn(
            f"mempool-{ns}", Mempool, self.chain_id, genesis.app,
            MempoolLimits(max_txs=m.max_txs, max_bytes=m.max_bytes, max_tx_bytes=m.max_tx_bytes,
                          batch_max_txs=m.batch_max_txs, batch_max_bytes=m.batch_max_bytes,
                          max_batch_bytes=cfg.p2p.max_frame_bytes),
            [w.handle for w in workers], share_decoded,
            resources=cfg.ray.mempool_resources or None)
        self.executor = executor_rt.spawn(f"executor-{ns}", Executor, data_dir, self.chain_id,
                                          genesis.app, dict(genesis.allocations), map_size)
        self.blockstore = rt.spawn(f"blockstore-{ns}", BlockStore, data_dir, map_size)
        c = cfg.consensus
        host_rt = local_rt if local_rt is not None and cfg.ray.consensus_in_supervisor else rt
        timeouts = dict(timeout_propose_ms=c.timeout_propose_ms,
                        timeout_prevote_ms=c.timeout_prevote_ms,
                        timeout_precommit_ms=c.timeout_precommit_ms,
                        delta_ms=c.timeout_delta_ms)
        self.consensus = host_rt.spawn(
            f"consensus-{ns}", ConsensusHost, data_dir, str(cfg.node_key_path), self.chain_id,
            validators, timeouts, c.max_block_batches, map_size, genesis_app_hash,
            c.block_interval_ms, c.empty_block_interval_ms, cfg.node.byzantine,
            c.max_block_txs)
        if cfg.node.byzantine:
            log.warning("BYZANTINE TEST MODE %r: this node misbehaves on purpose",
                        cfg.node.byzantine)
        self.height, self.block_hash, self.app_hash = await self.blockstore.call("latest")
        self._executed_height = self.height
        if not self.app_hash:
            self.app_hash = genesis_app_hash
        self.metrics.height.set(self.height)
        log.info("node %s starting at height %d (runtime %s, verifier %s)", self.node_id,
                 self.height, rt.kind, await self.mempool.call("backend"))

        host, port = parse_host_port(cfg.p2p.listen)
        peers = [PeerAddress(p.public_key, p.host, p.port) for p in cfg.peer_addresses()]
        allowed = {v.public_key_bytes for v in genesis.validators} | {p.public_key for p in peers}
        self.network = PeerNetwork(
            self.key,
            NetworkConfig(chain_id=self.chain_id, host=host, port=port,
                          max_frame_bytes=cfg.p2p.max_frame_bytes,
                          handshake_timeout=cfg.p2p.handshake_timeout_s,
                          send_queue_messages=cfg.p2p.send_queue_len,
                          send_queue_bytes=max(64 * 1024 * 1024, 2 * cfg.p2p.max_frame_bytes),
                          backoff_max=cfg.p2p.reconnect_max_s,
                          max_pending_handshakes=cfg.p2p.max_connections),
            peers=peers, allowed=allowed.__contains__, on_message=self._on_peer_message)
        await self.network.start()
        rhost, rport = parse_host_port(cfg.rpc.listen)
        self.rpc = RpcServer(self, rhost, rport, cfg.rpc.max_body_bytes,
                             cfg.rpc.max_connections, cfg.rpc.wait_timeout_s,
                             fast_path=cfg.rpc.fast_path)
        await self.rpc.start()
        for coro, name in ((self._consensus_pump(), "consensus"),
                           (self._commit_pipeline(), "commit"),
                           (self._intake_loop(), "intake"),
                           (self._remote_batch_loop(), "peer batches"),
                           (self._prepare_loop(), "prepare"),
                           (self._housekeeping(), "housekeeping")):
            self._tasks.append(asyncio.create_task(self._guard(coro, name), name=name))
        await self._handle_outputs(await self.consensus.call("start"))
        log.info("node %s up: p2p %s, rpc %s", self.node_id, cfg.p2p.listen, cfg.rpc.listen)

    async def _guard(self, coro: Any, name: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except NodeHalted as exc:
            self.halt(str(exc))
        except Exception as exc:
            log.exception("task %s failed", name)
            self.halt(f"internal error in {name}: {type(exc).__name__}: {exc}")

    def halt(self, reason: str) -> None:
        if self.halted is None:
            self.halted = reason
            log.critical("HALTING: %s", reason)
        self.stopped.set()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for h in self._timers.values():
            h.cancel()
        if self.rpc is not None:
            await self.rpc.stop()
        if self.network is not None:
            await self.network.close()
        if self._local_runtime is not None:
            await self._local_runtime.shutdown()
        if self.runtime is not None:
            await self.runtime.shutdown()

    # --- consensus ---------------------------------------------------------------------

    def _to_consensus(self, record: list, urgent: bool = True) -> None:
        """Queue an input for the ConsensusHost's next call. Inputs that are not `urgent`
        (notices of new batches nobody waits for) may wait up to _NOTICE_DELAY_S for
        company: under load they would otherwise cost one actor call each."""
        self._cons_inputs.append(record)
        if urgent:
            self._cons_urgent.set()
        self._cons_wake.set()

    async def _consensus_pump(self) -> None:
        while True:
            await _gather(self._cons_wake, self._cons_urgent, _NOTICE_DELAY_S)
            inputs, self._cons_inputs = self._cons_inputs, []
            if inputs:
                await self._handle_outputs(await self.consensus.call(
                    "handle", msgpack.packb(inputs)))

    async def _handle_outputs(self, packed: bytes) -> None:
        assert self.network is not None
        loop = asyncio.get_running_loop()
        for out in msgpack.unpackb(packed, raw=False):
            kind = out[0]
            if kind == "broadcast":
                self.network.broadcast(out[1])
            elif kind == "timeout":
                _, h, r, step, delay_ms = out
                key = (h, r, step)
                old = self._timers.pop(key, None)
                if old is not None:
                    old.cancel()
                self._timers[key] = loop.call_later(delay_ms / 1000.0, self._fire_timer, key)
            elif kind == "wake":
                loop.call_later(out[1] / 1000.0, self._to_consensus, ["ready"])
            elif kind == "decide":
                self._decided.put_nowait((out[1], out[2]))
            elif kind == "prepare":
                self._to_prepare = out[1]
                self._prepare_wake.set()
            elif kind == "fetch":
                missing = [d for d in out[1] if d not in self._fetching]
                now = time.monotonic()
                for d in missing:
                    self._fetching[d] = now
                if missing:
                    # Most are queued for the mempool already: ask peers only for what
                    # is still missing once those are through (node/batch_fetch.py).
                    self._deferred_fetches.add(missing, out[2])
                    self._remote_wake.set()
            elif kind == "sync":
                self._network_height = max(self._network_height, out[1])
                self._request_sync(out[2])
            elif kind == "evidence":
                self.metrics.evidence.inc()
                log.warning("duplicate-vote evidence detected; gossiping it to peers")
                self.network.broadcast(out[1])
            elif kind == "equivocate":
                # Byzantine test mode: half the peers get A then B, the others B then A.
                peers = sorted(self.network.connected_peers())
                for i, peer in enumerate(peers):
                    first, second = (out[1], out[2]) if i < len(peers) // 2 else (out[2], out[1])
                    self.network.send(peer, first)
                    self.network.send(peer, second)

    def _fire_timer(self, key: tuple[int, int, int]) -> None:
        self._timers.pop(key, None)
        # Timers of heights already passed are useless: drop them.
        for k in [k for k in self._timers if k[0] < key[0]]:
            self._timers.pop(k).cancel()
        self._to_consensus(["timeout", *key])

    def _request_sync(self, peer: bytes | None) -> None:
        now = time.monotonic()
        if now - self._sync_requested_at < 0.5:
            return
        self._sync_requested_at = now
        self._catching_up = True
        synced, at = self._synced_to
        # A fed block the engine refused (a bad peer's) must not be skipped for good: the
        # fed mark only counts while recent.
        start = max(self.height, synced if now - at < _SYNC_FED_VALID_S else 0) + 1
        self._send_or_broadcast(peer, BlockSyncRequest(start, SYNC_BATCH).encode())

    def _send_or_broadcast(self, peer: bytes | None, frame: bytes) -> None:
        """To `peer` when named and connected, else to every peer."""
        assert self.network is not None
        if peer is None or not self.network.send(peer, frame):
            self.network.broadcast(frame)

    # --- peers -----------------------------------------------------------------------

    async def _on_peer_message(self, peer: bytes, payload: bytes) -> None:
        try:
            msg = PEER_MESSAGES.decode(payload, Limits(max_bytes=self.cfg.p2p.max_frame_bytes))
        except CodecError as exc:
            self.metrics.messages_rejected.labels("malformed").inc()
            log.debug("malformed message from %s: %s", address(peer), exc)
            return
        if isinstance(msg, (Proposal, Vote, DuplicateVoteEvidence)):
            self._to_consensus(["msg", payload])
        elif isinstance(msg, BatchGossip):
            size = len(msg.encoded)
            if (len(self._remote_batches) >= _REMOTE_BATCHES_QUEUED
                    or self._remote_batch_bytes + size > _REMOTE_BATCH_BYTES_QUEUED):
                self.metrics.messages_rejected.labels("batch_queue_full").inc()
                return
            self._remote_batches.append((time.monotonic(), msg.encoded))
            self._remote_batch_bytes += size
            self._deferred_fetches.received += 1
            self._remote_wake.set()
        elif isinstance(msg, BatchRequest):
            digests = list(msg.digests)
            found = msgpack.unpackb(await self.mempool.call("get_batches", digests), raw=False)
            # Committed batches leave the mempool; a lagging peer still needs them.
            missing = [d for d, item in zip(digests, found, strict=True) if item is None]
            stored = await self.blockstore.call("get_batches", missing) if missing else []
            for encoded in [item[0] for item in found if item is not None] + [
                    b for b in stored if b is not None]:
                self.network.send(peer, BatchGossip(encoded).encode())
        elif isinstance(msg, BlockSyncRequest):
            # The answer must fit one frame, whatever [p2p] max_frame_bytes says.
            frame = self.cfg.p2p.max_frame_bytes
            budget = min(SYNC_MAX_BYTES, max(frame // 2, frame - _FRAME_ROOM))
            blocks = msgpack.unpackb(await self.blockstore.call(
                "sync_blocks", msg.height, min(msg.count, SYNC_BATCH), budget), raw=False)
            if blocks:
                self.network.send(peer, BlockSyncResponse(
                    tuple((b, c, tuple(bs)) for b, c, bs in blocks)).encode())
        elif isinstance(msg, BlockSyncResponse):
            await self._on_sync_response(peer, msg)
        else:
            self.metrics.messages_rejected.labels("unexpected_type").inc()

    async def _on_sync_response(self, peer: bytes, msg: BlockSyncResponse) -> None:
        await self._admit_remote_batches(
            [(encoded, True) for _block, _cert, batches in msg.blocks for encoded in batches])
        top = 0
        for block, cert, _batches in msg.blocks:
            try:
                top = max(top, decode_block(block).header.height)
            except CodecError:
                pass   # consensus drops and counts it
            self._to_consensus(["certified", block, cert])
        self.metrics.sync_blocks.inc(len(msg.blocks))
        if top > max(self.height, self._synced_to[0]):
            self._synced_to = (top, time.monotonic())
            # More may follow (the answer was cut at SYNC_BATCH blocks or at the frame
            # budget): ask at once. A peer with nothing above it does not answer.
            self._network_height = max(self._network_height, top)
            self._sync_requested_at = 0.0
            self._request_sync(peer)

    async def _admit_remote_batches(self, items: list[tuple[bytes, bool]]) -> None:
        """Verify and store peers' batches, [(encoded, requested), ...], in one mempool
        call. `requested`: a proposal or block names it (fetched, or part of a block-sync
        answer), so it is stored whatever it holds."""
        if not items:
            return
        # One call at a time. A node that falls behind gets the batches of the blocks it
        # syncs while its queue still holds gossiped copies of the same batches: two calls
        # at once each verified their copy (a lagging validator verified up to 2 signatures
        # per committed tx at overload). One after the other, the later copy is "known".
        async with self._receive_lock:
            # Batches this node asked for count as requested whichever way they arrive.
            packed = msgpack.packb([[[encoded, requested] for encoded, requested in items],
                                    list(self._fetching)])
            self._stored_batches(msgpack.unpackb(
                await self.mempool.call("receive_batches", packed), raw=False))

    def _stored_batches(self, outcomes: list) -> None:
        """Count and hand to consensus what the mempool did with peers' batches."""
        good, held, counts = [], [], []
        for digest, outcome, count in outcomes:
            if outcome in ("stored", "known"):
                good.append(digest)
                counts.append(count)
            elif outcome == "held":
                held.append(digest)
            elif outcome.startswith("malformed"):
                self.metrics.messages_rejected.labels("bad_batch").inc()
                log.info("refused a peer batch: %s", outcome)
            else:
                self.metrics.messages_rejected.labels(f"batch_{outcome}").inc()
        # Consensus waits for a batch it asked to fetch: tell it now. Other batches only
        # feed later proposals, and their notices may gather for a moment.
        # Pop every one (not any(...) over the pops: that stops at the first hit and leaves
        # the rest to look fetched until the housekeeping sweep, 5 s later).
        fetched = [self._fetching.pop(digest, None) is not None for digest in good + held]
        urgent = any(fetched)
        self._deferred_fetches.arrived(good + held)
        if good:
            self._to_consensus(["batches", good, True, counts], urgent)
        if held:
            # A batch with a failed signature is held (a block names it) but never proposed.
            self._to_consensus(["batches", held, False, [0] * len(held)], urgent)

    # --- admission and batching --------------------------------------------------------

    async def submit_tx(self, body: bytes) -> tuple[str | None, str | None, int]:
        """Admit one encoded tx: (hash hex, None, 202) or (None, reason, status)."""
        return await self.submit_nowait(body)

    def submit_nowait(self, body: bytes) -> asyncio.Future:
        """`submit_tx` without a coroutine: a future of its answer (the RPC fast path)."""
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        if self.halted:
            fut.set_result((None, f"node halted: {self.halted}", 503))
            return fut
        busy = self._verify_backlog()
        if busy is not None:
            self.metrics.txs_rejected.labels(rejection_label(busy)).inc()
            fut.set_result((None, busy, 503))
            return fut
        self._admission.append((body, fut))
        self._intake_wake.set()
        if len(self._admission) >= _INTAKE_NOW_TXS:
            # Enough to make a call worth it. Waiting longer would also cap throughput:
            # each HTTP/1.1 connection has one request in flight, and it waits here.
            self._intake_now.set()
        return fut

    def _verify_backlog(self) -> str | None:
        """Why a client's tx is refused now, or None: a peer's batch has waited longer
        than `[mempool] max_verify_wait_ms` to be verified. This node is behind the rate
        at which the network makes batches (every validator verifies every tx), and each
        tx it admitted now would be one more for every validator to verify: the wait of
        every tx, and of every proposal naming a batch still queued here, would grow
        without bound. Refused, the client may retry here later or at another node."""
        if not self._max_verify_wait:
            return None
        waited = self._verify_wait()
        if waited <= self._max_verify_wait:
            return None
        return (f"node busy: a peer's batch has waited {waited * 1000:.0f} ms to be verified"
                f" (limit {self._max_verify_wait * 1000:.0f} ms); retry later")

    def _verify_wait(self) -> float:
        """Seconds the oldest queued peer batch has waited for verification (0: none)."""
        queued = self._remote_batches
        return time.monotonic() - queued[0][0] if queued else 0.0

    async def _intake_loop(self) -> None:
        """Clients' txs, one mempool call per round.

        A round gathers arrivals for up to one batch timeout after the first (less when
        _INTAKE_NOW_TXS txs wait), then one `Mempool.intake` verifies them all in one
        verifier call, admits and seals: one batch per node per round. Under load
        (_INTAKE_NOW_TXS txs waiting) rounds run back to back, each taking what queued
        during the previous one; otherwise the next round gathers again. Running back
        to back on a trickle made a batch of a few txs per round (~200 a second per
        node at 2,200 tx/s on 4 validators), and every validator pays for every batch.
        """
        window = self.cfg.mempool.batch_timeout_ms / 1000.0
        while True:
            await _gather(self._intake_wake, self._intake_now, window)
            while self._admission:
                txs = [self._admission.popleft()
                       for _ in range(min(len(self._admission), _ADMISSION_MAX))]
                await self._intake(txs)
                if not self._intake_now.is_set() and len(self._admission) < _INTAKE_NOW_TXS:
                    if self._admission:
                        self._intake_wake.set()
                    break

    async def _remote_batch_loop(self) -> None:
        """Peers' batches, verified and stored as they come, apart from the clients'
        txs: they are batches already, with nothing to gather for, and the next
        proposal may name them at any moment. A validator that still holds one in this
        queue cannot prevote for that proposal, so waiting here for the intake round's
        batch timeout delayed every height. Each call takes what queued during the
        previous one (at most _REMOTE_BATCHES_PER_CALL)."""
        while True:
            await self._remote_wake.wait()
            self._remote_wake.clear()
            self._send_due_fetches()
            while self._remote_batches:
                batches = [self._remote_batches.popleft()[1] for _ in range(
                    min(len(self._remote_batches), _REMOTE_BATCHES_PER_CALL))]
                self._remote_batch_bytes -= sum(len(b) for b in batches)
                await self._admit_remote_batches([(b, False) for b in batches])
                self._deferred_fetches.processed += len(batches)
                self._send_due_fetches()

    def _send_due_fetches(self) -> None:
        for digests, peer in self._deferred_fetches.due():
            self.metrics.batch_requests.inc()
            self._send_or_broadcast(peer, BatchRequest(tuple(digests)).encode())

    async def _intake(self, txs: list[tuple[bytes, asyncio.Future]]) -> None:
        # Peers' batches go through _remote_batch_loop, none through this call.
        packed = msgpack.packb([[body for body, _ in txs], [], []])
        answers, sealed, _outcomes = msgpack.unpackb(
            await self.mempool.call("intake", packed), raw=False)
        now = time.monotonic()
        admitted = 0
        rejected: Counter[str] = Counter()
        for (_body, fut), (h, reason) in zip(txs, answers, strict=True):
            if reason is None:
                self._admitted_at[h] = now
                admitted += 1
                if not fut.done():
                    fut.set_result((h.hex(), None, 202))
                continue
            rejected[rejection_label(reason)] += 1
            if not fut.done():
                status = 503 if reason.startswith("mempool full") else 400
                fut.set_result((None, reason, status))
        # One metric update per round and label, not per tx.
        if admitted:
            self.metrics.txs_admitted.inc(admitted)
        for label, count in rejected.items():
            self.metrics.txs_rejected.labels(label).inc(count)
        if sealed:
            assert self.network is not None
            for _digest, encoded, _count in sealed:
                self.network.broadcast(BatchGossip(encoded).encode())
            self._to_consensus(["batches", [d for d, _, _ in sealed], True,
                                [n for _, _, n in sealed]], urgent=False)

    # --- commit ------------------------------------------------------------------------

    async def _commit_pipeline(self) -> None:
        while True:
            block_bytes, cert_bytes = await self._decided.get()
            await self._commit(block_bytes, cert_bytes)

    async def _commit(self, block_bytes: bytes, cert_bytes: bytes) -> None:
        block = decode_block(block_bytes)
        digests = [d for d in block.payload if is_batch_digest(d)]
        evidence = len(block.payload) - len(digests)
        if evidence:
            self.metrics.evidence_committed.inc(evidence)
        # A block the executor applied ahead of its decision needs no batches again.
        prepared, self._prepared_hash = self._prepared_hash == block.hash(), None
        batches = None if prepared else await self._collect_batches(digests)
        try:
            while (applied := msgpack.unpackb(await self.executor.call(
                    "apply_decided", msgpack.packb([block_bytes, cert_bytes, batches])),
                    raw=False)) is None:
                batches = await self._collect_batches(digests)   # another was prepared
            height, app_hash = applied
            # Consensus hears the app hash (the next proposal waits for it) before the
            # block is stored: storing is the slower half, and the block is decided
            # whatever happens to this node (Executor.apply_decided).
            self._executed_height = height
            self._to_consensus(["executed", height, app_hash])
            result = await self.executor.call("store")
        except Exception as exc:
            raise NodeHalted(f"executing block {block.header.height}: {exc}") from exc
        height, app_hash, hashes, codes, nonces = msgpack.unpackb(result, raw=False)
        # The block is stored: clients hear of it before the mempool forgets the block's
        # txs, one actor call later. Meanwhile a resubmitted tx is refused as pending
        # instead of committed, and the next block's batches are asked for only after
        # that call (same task).
        now = time.monotonic()
        if self._last_commit_time is not None:
            self.metrics.block_interval.observe(now - self._last_commit_time)
        self._last_commit_time = now
        self.height, self.block_hash, self.app_hash = height, block.hash(), app_hash
        if height >= self._network_height:
            self._catching_up = False
        m = self.metrics
        m.height.set(height)
        m.block_txs.observe(len(hashes))
        m.txs_committed.inc(len(hashes))
        for index, (h, code) in enumerate(zip(hashes, codes, strict=True)):
            t0 = self._admitted_at.pop(h, None)
            if t0 is not None:
                m.finality.observe(now - t0)
            waiters = self._waiters.pop(h, None)
            if waiters:
                result = {"hash": h.hex(), "height": height, "index": index, "code": code}
                for w in waiters:
                    if not w.future.done():
                        w.future.set_result(result)
        event = {"type": "block", "height": height, "block_hash": block.hash().hex(),
                 "app_hash": app_hash.hex(), "tx_hashes": [h.hex() for h in hashes],
                 "time_ms": block.header.time_ms}
        for q in list(self._subscribers):
            if q.full():
                q.get_nowait()  # a slow subscriber loses its oldest event, not the node
            q.put_nowait(event)
        pending = await self.mempool.call("committed", msgpack.packb([digests, hashes, nonces]))
        m.mempool_txs.set(pending)

    async def _prepare_loop(self) -> None:
        """Optimistic execution: hand the executor the block this node proposed or
        prevoted for, so that it applies the txs while the votes go round and only
        stores them once the block is decided (node/actors/executor.py). The next
        proposal waits for this block's app hash, so this shortens every height.
        Only a hint: a failure here is logged, and `_commit` applies the block itself."""
        while True:
            await self._prepare_wake.wait()
            self._prepare_wake.clear()
            block_bytes, self._to_prepare = self._to_prepare, None
            if block_bytes is None:
                continue
            try:
                block = decode_block(block_bytes)
                if block.header.height != self._executed_height + 1:
                    continue   # decided and executed already, or a later height's
                digests = [d for d in block.payload if is_batch_digest(d)]
                got = msgpack.unpackb(await self.mempool.call("get_batches", digests),
                                      raw=False)
                if any(b is None for b in got):
                    continue   # a batch left the mempool: the block was committed already
                if await self.executor.call("prepare", msgpack.packb([block_bytes, got])):
                    self._prepared_hash = block.hash()
                    self.metrics.prepared_blocks.inc()
            except Exception as exc:   # noqa: BLE001 - only an optimization
                log.warning("applying block ahead of its decision failed: %s", exc)

    async def _collect_batches(self, digests: list[bytes]) -> list:
        """The block's batches with verdicts, fetching missing ones from peers."""
        assert self.network is not None
        delay = 0.05
        while True:
            got = msgpack.unpackb(await self.mempool.call("get_batches", digests), raw=False)
            missing = [d for d, b in zip(digests, got, strict=True) if b is None]
            if not missing:
                return got
            now = time.monotonic()
            for d in missing:
                self._fetching[d] = now
            # Every peer, the proposer included: any validator that voted for the block may
            # hold its batches.
            self.network.broadcast(BatchRequest(tuple(missing[:256])).encode())
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    # --- queries (RPC) -----------------------------------------------------------------

    async def wait_committed(self, tx_hash: str, timeout: float) -> dict | None:
        h = bytes.fromhex(tx_hash)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(h, []).append(_Waiter(fut, time.monotonic()))
        rec = await self.blockstore.call("tx", h)
        if rec is not None and not fut.done():
            fut.set_result({"hash": tx_hash, "height": rec[0], "index": rec[1], "code": rec[2]})
        try:
            return await within(timeout, fut)
        except TimeoutError:
            return None
        finally:
            waiters = self._waiters.get(h)
            if waiters is not None:
                self._waiters[h] = [w for w in waiters if w.future is not fut]
                if not self._waiters[h]:
                    del self._waiters[h]

    async def tx_status(self, tx_hash: str) -> dict:
        h = bytes.fromhex(tx_hash)
        rec = await self.blockstore.call("tx", h)
        if rec is not None:
            return {"hash": tx_hash, "status": "committed", "height": rec[0], "index": rec[1],
                    "code": rec[2], "code_name": CODE_NAMES.get(rec[2], "unknown")}
        if await self.mempool.call("contains", h):
            return {"hash": tx_hash, "status": "pending", "height": None, "index": None,
                    "code": None}
        return {"hash": tx_hash, "status": "unknown", "height": None, "index": None,
                "code": None}

    async def status(self) -> dict:
        assert self.network is not None
        return {
            "chain_id": self.chain_id,
            "node_id": self.node_id,
            "public_key": self.key.public_key.hex(),
            "moniker": self.cfg.node.moniker,
            "height": self.height,
            "block_hash": self.block_hash.hex(),
            "app_hash": self.app_hash.hex(),
            "validators": [{"address": address(v.public_key_bytes),
                            "public_key": v.public_key, "power": v.power, "name": v.name}
                           for v in self.genesis.validators],
            "peers": [address(pk) for pk in self.network.connected_peers()],
            "catching_up": self._catching_up,
            "isolated": self.network.isolated,
            "halted": self.halted,
            "runtime": self.runtime.kind if self.runtime else None,
        }

    async def block_json(self, height: int | None) -> dict | None:
        return await self.blockstore.call("block_json", height)

    async def finality_receipt(self, tx_hash: str) -> dict | None:
        receipt = await self.blockstore.call("receipt", bytes.fromhex(tx_hash))
        if receipt is not None:
            receipt["chain_id"] = self.chain_id
            receipt["validators"] = [{"public_key": v.public_key, "power": v.power}
                                     for v in self.genesis.validators]
        return receipt

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(maxsize=_EVENT_QUEUE)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self._subscribers.discard(q)

    async def refresh_metrics(self) -> None:
        assert self.network is not None
        self.metrics.peers.set(len(self.network.connected_peers()))
        self.metrics.verify_queue.set(len(self._remote_batches))
        self.metrics.verify_wait.set(self._verify_wait())
        for reason, n in self.network.rejections().items():
            catch_up(self.metrics.p2p_rejected.labels(reason), n)
        verified, seconds = await self.mempool.call("verify_stats")
        catch_up(self.metrics.signatures_verified, verified)
        if seconds > 0:
            self.metrics.verify_rate.set(verified / seconds)
        (_h, r, _step, host_rejected, engine_rejected, _found, _in_blocks, _pending,
         engine_ignored) = await self.consensus.call("status")
        self.metrics.round.set(r)
        totals: dict[tuple[str, str], int] = {}
        for kind, counts in (("rejected", host_rejected), ("rejected", engine_rejected),
                             ("ignored", engine_ignored)):
            for reason, n in counts.items():
                # Host reasons may carry an exception's text after the colon: not a label.
                key = (kind, reason.split(":")[0].replace(" ", "_"))
                totals[key] = totals.get(key, 0) + n
        for (kind, reason), n in totals.items():
            catch_up(self.metrics.consensus_dropped.labels(kind, reason), n)

    async def _housekeeping(self) -> None:
        """Periodic: forget stale fetches, and ask for blocks when we seem stuck."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for d in [d for d, t in self._fetching.items() if now - t > 5.0]:
                del self._fetching[d]
            cutoff = now - 600
            if len(self._admitted_at) > 100_000:
                for h in [h for h, t in self._admitted_at.items() if t < cutoff]:
                    del self._admitted_at[h]
            stalled = self._last_commit_time is None or now - self._last_commit_time > 3.0
            if stalled and self.network is not None and self.network.connected_peers():
                self._request_sync(None)

    # --- tester hooks ------------------------------------------------------------------

    def isolate(self) -> None:
        assert self.network is not None
        log.warning("isolating: cutting every peer link")
        self.network.isolate()

    def heal(self) -> None:
        assert self.network is not None
        log.warning("healing: restoring peer links")
        self.network.heal()


def _setup_logging(cfg: NodeConfig) -> None:
    logging.basicConfig(
        level=getattr(logging, cfg.node.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


async def _run(cfg: NodeConfig, genesis: Genesis) -> int:
    node = Node(cfg, genesis)
    loop = asyncio.get_running_loop()
    stop_reason: list[str] = []

    def request_stop(name: str) -> None:
        stop_reason.append(name)
        node.stopped.set()

    def install_handlers() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, request_stop, sig.name)
        loop.add_signal_handler(signal.SIGUSR1, node.isolate)
        loop.add_signal_handler(signal.SIGUSR2, node.heal)

    install_handlers()
    try:
        await node.start()
    except Exception:
        log.exception("node failed to start")
        await node.stop()
        return 1
    # ray.init installs its own SIGTERM handler (sys.exit); take the signals back so
    # that SIGTERM is a clean shutdown here too.
    install_handlers()
    await node.stopped.wait()
    log.info("stopping (%s)", stop_reason[0] if stop_reason else node.halted)
    await node.stop()
    if node.halted:
        print(f"bftnode: error: node halted: {node.halted}", file=__import__("sys").stderr)
        return 1
    return 0


def run_node(home: str) -> int:
    """Run the node in `home` until SIGINT/SIGTERM; the process exit code."""
    cfg = load_config(home)
    genesis = load_genesis(cfg.genesis_path)
    genesis.check_config(cfg)
    _setup_logging(cfg)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep running without
        log.warning("uvloop not available; using the default asyncio loop")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    return asyncio.run(_run(cfg, genesis))
