"""One seeded, deterministic simulation run, and many of them.

`Simulation(seed, config).run()` builds N validators (plus twin instances),
wires them through the simulated `Network` on a `VirtualClock`, starts every
engine at time 0 and processes events until every honest node has decided
`config.heights` heights, a safety check fails, or the liveness deadline
(GST + a bound) passes. Everything random comes from one
``random.Random(seed)`` used in event order, so a seed always replays the same
run, byte for byte.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from consensus.codec import CodecError
from consensus.engine import (
    Broadcast,
    Decide,
    EngineConfig,
    EvidenceFound,
    FetchPayload,
    ScheduleTimeout,
    SyncNeeded,
)
from consensus.errors import ConsensusError
from consensus.sim.byzantine import (
    ROLE_CRASH,
    ROLE_EQUIVOCATOR,
    Equivocator,
    layout,
    twins_partition_maker,
)
from consensus.sim.checker import Checker, Violation, short
from consensus.sim.clock import VirtualClock
from consensus.sim.network import FAULT_KINDS, Network, NetworkParams, describe_groups, random_split
from consensus.sim.node import EV_PAYLOAD, EV_READY, SimBlockSource, SimNode
from consensus.sim.sigcache import SignatureCache
from consensus.types import Validator, ValidatorSet
from crypto import PrivateKey, sha256

# Event kinds on the clock (small ints: cheap to compare, stable to print).
EV_MESSAGE = 1
EV_TIMER = 2
EV_CRASH = 5
EV_RESTART = 6
EV_SYNC_REQUEST = 7
EV_SYNC_RESPONSE = 8

SYNC_BATCH = 32  # blocks per sync response
TRACE_KEEP = 200
STAT_KEYS = ("messages", "dropped", "duplicated", "crashes", "restarts", "sync_requests",
             "synced_blocks", "forged_sync", "payload_missing", "proposal_not_ready", "evidence")
TRACE_SHOW = 20


# Timeouts sized to the simulated network (delta 40 ms after GST) so that a run covers
# many rounds and heights in little virtual time; they grow by delta_ms per round.
SIM_ENGINE_CONFIG = EngineConfig(timeout_propose_ms=300, timeout_prevote_ms=150,
                                 timeout_precommit_ms=150, delta_ms=100)


@dataclass(frozen=True)
class SimConfig:
    """What one run simulates. Times are virtual milliseconds.

    `liveness_base_ms + heights * liveness_per_height_ms` after GST is the
    bound within which every honest node must reach `heights`.
    """

    validators: int = 4
    byzantine: int = 1
    strategy: str = "silent"
    faults: frozenset[str] = frozenset(FAULT_KINDS)
    heights: int = 10
    chain_id: str = "bftnode-sim"
    network: NetworkParams = NetworkParams()
    engine: EngineConfig = SIM_ENGINE_CONFIG
    gst_range_ms: tuple[int, int] = (1_000, 4_000)
    liveness_base_ms: int = 30_000
    liveness_per_height_ms: int = 1_000
    max_events: int = 3_000_000
    # Checker self-test only: crashed nodes also lose their safety store (not a CLI option).
    amnesia: bool = False


@dataclass
class RunResult:
    """The outcome of one seed."""

    seed: int
    config: SimConfig
    violations: list[Violation]
    liveness: list[str]
    heights: int                 # lowest decided height among liveness-checked nodes
    gst_ms: int
    end_ms: int
    events: int
    trace: list[str]             # the last events before the failure (empty when ok)
    state: list[str] = field(default_factory=list)  # every node's state, on liveness failure
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations and not self.liveness

    def report(self) -> str:
        """Seed, what failed, and the last events before it (empty when ok)."""
        if self.ok:
            return ""
        c = self.config
        lines = [f"seed {self.seed} FAILED (validators={c.validators} byzantine={c.byzantine} "
                 f"strategy={c.strategy} faults={','.join(sorted(c.faults)) or 'none'} "
                 f"heights={c.heights} gst={self.gst_ms}ms end={self.end_ms}ms)"]
        lines += [f"  {v}" for v in self.violations]
        lines += [f"  liveness failure: {msg}" for msg in self.liveness]
        lines.append(f"  trace (last {len(self.trace)} events):")
        lines += [f"    {line}" for line in self.trace]
        lines += [f"  {line}" for line in self.state]
        return "\n".join(lines)


def describe_message(msg: Any) -> str:
    """A short, stable rendering of a Proposal, Vote or sync item list."""
    kind = getattr(msg, "kind", None)
    if kind is not None:
        name = "prevote" if int(kind) == 1 else "precommit"
        return f"{name} h{msg.height} r{msg.round} {short(msg.block_hash)}"
    if hasattr(msg, "block"):
        return (f"proposal h{msg.height} r{msg.round} pol{msg.pol_round} "
                f"{short(msg.block.hash())}")
    return type(msg).__name__


class Simulation:
    """One run (see module docstring). Not reusable: call `run()` once."""

    def __init__(self, seed: int, config: SimConfig) -> None:
        if not 0 <= config.byzantine <= config.validators:
            raise ValueError(f"byzantine={config.byzantine} must be in [0, validators]")
        self.seed = seed
        self.config = config
        self.rng = rng = random.Random(seed)
        self.clock = VirtualClock()
        self.cache = SignatureCache()
        self.trace: deque[tuple] = deque(maxlen=TRACE_KEEP)
        self.events = 0
        # How often each fault path was exercised (reported, and summed by the CLI).
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)

        n = config.validators
        self.keys = [PrivateKey.from_seed(sha256(f"bftnode-sim/{seed}/{v}".encode()))
                     for v in range(n)]
        self.validators = ValidatorSet(tuple(Validator(k.public_key, 1) for k in self.keys))
        self.byzantine = sorted(rng.sample(range(n), config.byzantine))
        self.specs = layout(n, self.byzantine, config.strategy)
        twins = config.strategy == "twins" and config.byzantine > 0
        faults = set(config.faults)
        if twins:
            faults.add("partition")  # the twins attack is a partition schedule
        self.gst = rng.randint(*config.gst_range_ms) if faults else 0
        maker = twins_partition_maker(self.specs) if twins else random_split
        self.network = Network(rng, len(self.specs), faults, self.gst, config.network, maker)
        self.late = "missing" in faults

        honest_keys = {self.keys[s.validator].public_key: s.validator
                       for s in self.specs if s.honest}
        self.checker = Checker(config.chain_id, self.validators, honest_keys,
                               self.cache.verify_batch)
        self.instances_of: dict[int, list[int]] = {}
        self.nodes: list[SimNode] = []
        for spec in self.specs:
            key = self.keys[spec.validator]
            equivocator = (Equivocator(key, config.chain_id, rng)
                           if spec.role == ROLE_EQUIVOCATOR else None)
            self.nodes.append(SimNode(spec, key, config.chain_id, self.validators,
                                      config.engine, self.cache.verify, equivocator))
            self.instances_of.setdefault(spec.validator, []).append(spec.instance)
        self.peers = [[j for j in range(len(self.nodes)) if j != i]
                      for i in range(len(self.nodes))]
        self.live_checked = [s.instance for s in self.specs if s.liveness_checked]
        self.deadline = (self.gst + config.liveness_base_ms
                         + config.heights * config.liveness_per_height_ms)
        self._schedule_crashes(faults)
        self._reached = 0  # liveness-checked nodes that have decided `heights` heights

    # --- setup ---------------------------------------------------------------------------

    def _schedule_crashes(self, faults: set[str]) -> None:
        rng, gst = self.rng, self.gst
        for spec in self.specs:
            if spec.role == ROLE_CRASH:
                at = rng.randint(0, max(gst, 1_000) + 1_000)
                self.clock.schedule(at, (EV_CRASH, spec.instance))
                if rng.random() < 0.5:
                    self.clock.schedule(at + rng.randint(100, 3_000), (EV_RESTART, spec.instance))
            elif spec.honest and "crash" in faults and gst > 200 and rng.random() < 0.4:
                at = rng.randint(0, gst - 200)
                self.clock.schedule(at, (EV_CRASH, spec.instance))
                self.clock.schedule(rng.randint(at + 50, gst), (EV_RESTART, spec.instance))

    def _source(self, node: SimNode) -> SimBlockSource:
        return SimBlockSource(node, self.rng, lambda: self.clock.now, self.clock.schedule,
                              self.late, self.config.network.delta_ms, self.stats)

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> RunResult:
        clock = self.clock
        for node in self.nodes:
            if node.spec.runs_engine:
                self._call(node, "start", lambda n=node: n.start(self._source(n)))
        target = self.config.heights
        checker = self.checker
        max_events = self.config.max_events
        dispatch = {
            EV_MESSAGE: self._on_message,
            EV_TIMER: self._on_timer,
            EV_PAYLOAD: self._on_payload,
            EV_READY: self._on_ready,
            EV_CRASH: self._on_crash,
            EV_RESTART: self._on_restart,
            EV_SYNC_REQUEST: self._on_sync_request,
            EV_SYNC_RESPONSE: self._on_sync_response,
        }
        liveness: list[str] = []
        trace: list[str] = []
        state: list[str] = []
        live_count = len(self.live_checked)
        while not (live_count and self._reached == live_count):
            if checker.violations:  # stop at the first: its trace is the useful one
                trace = self._trace_lines()
                break
            at = clock.peek_time()
            if at is None or at > self.deadline:
                clock.now = max(clock.now, min(at or 0, self.deadline))
                liveness = self._liveness(target)
            elif self.events >= max_events:
                liveness = [f"gave up after {max_events} events at t={clock.now}ms"]
            if liveness:
                trace, state = self._trace_lines(), self._state_lines()
                break
            event = clock.pop()
            self.events += 1
            dispatch[event[0]](event)
        heights = min((len(self.nodes[i].decided) for i in self.live_checked), default=0)
        stats = self.stats
        stats["dropped"] = self.network.dropped
        stats["duplicated"] = self.network.duplicated
        stats["evidence"] = checker.evidence_reports
        return RunResult(self.seed, self.config, list(checker.violations), liveness, heights,
                         self.gst, clock.now, self.events, trace,
                         state, stats)

    def _liveness(self, target: int) -> list[str]:
        heights = {i: len(self.nodes[i].decided) for i in self.live_checked}
        failures = Checker.liveness_failures(heights, target, self.live_checked)
        if failures:
            failures.insert(0, f"deadline t={self.deadline}ms (GST {self.gst}ms + bound) passed")
        return failures

    # --- calling engines -----------------------------------------------------------------

    def _call(self, node: SimNode, what: str, fn: Any) -> None:
        """Run one engine entry point and act on its outputs. A rejected input
        (InvalidMessage & co) is what a peer's garbage costs: logged in the trace.
        Any other exception is an engine bug: recorded as a violation."""
        try:
            with node.one_save():
                outs = fn()
        except (ConsensusError, CodecError) as exc:
            self._note(node.spec.instance, f"{what} rejected: {type(exc).__name__}: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - an engine crash must be reported, not hidden
            self.checker.violations.append(Violation(
                "engine-error", self.clock.now,
                f"instance {node.spec.instance} raised {type(exc).__name__} in {what}: {exc}"))
            return
        if outs:
            self._outputs(node, outs)

    def _outputs(self, node: SimNode, outs: Iterable[Any]) -> None:
        clock = self.clock
        me = node.spec.instance
        for out in outs:
            kind = type(out)
            if kind is Broadcast:
                self._broadcast(node, out.message)
            elif kind is ScheduleTimeout:
                clock.schedule(clock.now + out.delay_ms,
                               (EV_TIMER, me, node.incarnation, out.height, out.round, out.step))
            elif kind is Decide:
                self._decide(node, out.block, out.certificate)
            elif kind is SyncNeeded:
                self._sync(node, out.height, out.from_validator)
            elif kind is EvidenceFound:
                self.trace.append((clock.now, me, "evidence", out.evidence.vote_a, None))
                if node.spec.honest:
                    self.checker.on_evidence(clock.now, me, out.evidence)
            elif kind is FetchPayload:
                pass  # the block source already put the payload's arrival on the clock
            else:
                self.checker.violations.append(Violation(
                    "engine-error", clock.now,
                    f"instance {me} returned an unknown output {kind.__name__}"))

    def _broadcast(self, node: SimNode, msg: Any) -> None:
        now = self.clock.now
        me = node.spec.instance
        self.trace.append((now, me, "send", msg, None))
        if node.spec.honest:
            self.checker.on_signed(now, me, msg)
        if node.equivocator is not None:
            sends = node.equivocator.split(msg, self.peers[me])
        else:
            sends = [(p, msg) for p in self.peers[me]]
        deliveries = self.network.deliveries
        schedule = self.clock.schedule
        self.stats["messages"] += len(sends)
        for peer, m in sends:
            for at in deliveries(me, peer, now):
                schedule(at, (EV_MESSAGE, peer, me, m))

    def _decide(self, node: SimNode, block: Any, certificate: Any) -> None:
        now = self.clock.now
        me = node.spec.instance
        self.trace.append((now, me, "decide", block, None))
        if node.spec.honest:
            self.checker.on_decide(now, me, block, certificate)
        if block.header.height == len(node.decided) + 1:
            node.decided.append((block, certificate))
            if len(node.decided) == self.config.heights and node.spec.liveness_checked:
                self._reached += 1  # decided blocks are durable: counted once per node
            source = node.source
            if source is not None and source.awaiting == len(node.decided) + 1:
                source.awaiting = 0
                self.clock.schedule(now, (EV_READY, me, node.incarnation))

    # --- block sync ----------------------------------------------------------------------

    def _sync(self, node: SimNode, height: int, from_validator: Any) -> None:
        now = self.clock.now
        index = (self.validators.index_of(from_validator)
                 if isinstance(from_validator, bytes) else from_validator)
        candidates = [i for i in self.instances_of.get(index, []) if i != node.spec.instance]
        if not candidates:
            return
        target = candidates[0] if len(candidates) == 1 else self.rng.choice(candidates)
        first = len(node.decided) + 1
        me = node.spec.instance
        self.trace.append((now, me, "sync-request", (first, height), target))
        self.stats["sync_requests"] += 1
        for at in self.network.deliveries(me, target, now):
            self.clock.schedule(at, (EV_SYNC_REQUEST, target, me, first, height))

    def _on_sync_request(self, event: tuple) -> None:
        _, me, requester, first, _height = event
        node = self.nodes[me]
        if not node.up or not node.spec.runs_engine:
            return
        items = node.decided[first - 1:first - 1 + SYNC_BATCH]
        if not items:
            return
        engine = node.engine
        for block, _cert in items:
            kept = engine.decided(block.header.height)
            if kept is not None and kept[0].hash() != block.hash():
                self.checker.violations.append(Violation(
                    "engine-error", self.clock.now,
                    f"instance {me}: engine.decided({block.header.height}) is "
                    f"{short(kept[0].hash())} but it decided {short(block.hash())}"))
        if node.equivocator is not None:
            items = node.equivocator.forge_sync(items, self.validators)
            self.stats["forged_sync"] += 1
        now = self.clock.now
        for at in self.network.deliveries(me, requester, now):
            self.clock.schedule(at, (EV_SYNC_RESPONSE, requester, me, tuple(items)))

    def _on_sync_response(self, event: tuple) -> None:
        _, me, sender, items = event
        node = self.nodes[me]
        if not node.up:
            return
        self.trace.append((self.clock.now, me, "sync-response",
                           (items[0][0].header.height, items[-1][0].header.height), sender))
        for block, cert in items:
            if node.engine is None or block.header.height != node.engine.height:
                continue
            self.stats["synced_blocks"] += 1
            self._call(node, "on_certified_block",
                       lambda b=block, c=cert: node.engine.on_certified_block(b, c))

    # --- other events --------------------------------------------------------------------

    def _on_message(self, event: tuple) -> None:
        _, me, sender, msg = event
        node = self.nodes[me]
        engine = node.engine
        if engine is None:
            return
        self.trace.append((self.clock.now, me, "recv", msg, sender))
        self._call(node, "on_message", lambda: engine.on_message(msg))

    def _on_timer(self, event: tuple) -> None:
        _, me, incarnation, height, round_, step = event
        node = self.nodes[me]
        engine = node.engine
        if engine is None or node.incarnation != incarnation:
            return
        if engine.height == height and engine.round == round_:
            self.trace.append((self.clock.now, me, "timeout", (height, round_, step), None))
        self._call(node, "on_timeout", lambda: engine.on_timeout(height, round_, step))

    def _on_payload(self, event: tuple) -> None:
        _, me, incarnation = event
        node = self.nodes[me]
        if node.engine is not None and node.incarnation == incarnation:
            self._call(node, "on_payload_available", node.engine.on_payload_available)

    def _on_ready(self, event: tuple) -> None:
        _, me, incarnation = event
        node = self.nodes[me]
        if node.engine is not None and node.incarnation == incarnation:
            self._call(node, "on_proposal_ready", node.engine.on_proposal_ready)

    def _on_crash(self, event: tuple) -> None:
        node = self.nodes[event[1]]
        if node.up:
            self.trace.append((self.clock.now, node.spec.instance, "crash",
                               len(node.decided), None))
            self.stats["crashes"] += 1
            node.crash(amnesia=self.config.amnesia)

    def _on_restart(self, event: tuple) -> None:
        node = self.nodes[event[1]]
        if not node.up and node.spec.runs_engine:
            self.trace.append((self.clock.now, node.spec.instance, "restart",
                               len(node.decided) + 1, None))
            self.stats["restarts"] += 1
            self._call(node, "start", lambda: node.start(self._source(node)))

    # --- reporting -----------------------------------------------------------------------

    def _note(self, instance: int, text: str) -> None:
        self.trace.append((self.clock.now, instance, "note", text, None))

    def _trace_lines(self) -> list[str]:
        lines = []
        for now, me, verb, obj, peer in list(self.trace)[-TRACE_SHOW:]:
            spec = self.specs[me]
            who = f"n{me}(v{spec.validator}{'' if spec.honest else '*'})"
            if verb in ("send", "recv"):
                what = describe_message(obj)
                if hasattr(obj, "signature"):
                    signer = self.validators.index_of(
                        obj.validator if hasattr(obj, "kind") else obj.proposer)
                    what += f" by v{signer}"
            elif verb == "decide":
                what = f"h{obj.header.height} {short(obj.hash())}"
            elif verb == "timeout":
                what = f"h{obj[0]} r{obj[1]} step {obj[2]}"
            elif verb == "evidence":
                what = f"against v{self.validators.index_of(obj.validator)}"
            elif verb == "sync-request":
                what = f"heights {obj[0]}..{obj[1]}"
            elif verb == "sync-response":
                what = f"heights {obj[0]}..{obj[1]}"
            else:
                what = str(obj)
            src = "" if peer is None else (" from" if verb in ("recv", "sync-response")
                                           else " to") + f" n{peer}"
            lines.append(f"t={now:>6} {who} {verb} {what}{src}")
        return lines

    def _state_lines(self) -> list[str]:
        """Where every node stopped: what a liveness failure is diagnosed from."""
        lines = ["state at the end:"]
        groups = self.network.groups_at(max(0, self.gst - 1)) if self.gst else None
        if groups is not None:
            lines.append(f"  last partition before GST: {describe_groups(groups)}")
        for node in self.nodes:
            spec = node.spec
            if node.engine is not None:
                e = node.engine
                where = (f"at h{e.height} r{e.round} {e.step.name.lower()}, locked "
                         f"r{e.locked_round} {short(e.locked_block_hash)}, valid "
                         f"r{e.valid_round} {short(e.valid_block_hash)}")
            else:
                where = "down" if spec.runs_engine else "silent"
            lines.append(f"  n{spec.instance} v{spec.validator} {spec.role}: decided "
                         f"{len(node.decided)}, {where}, crashes {node.crashes}")
        return lines


def run_seed(seed: int, config: SimConfig) -> RunResult:
    """Run one seed (see `Simulation`)."""
    return Simulation(seed, config).run()
