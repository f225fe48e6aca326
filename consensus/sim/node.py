"""One simulated process: an engine, its block source, and what survives a crash.

A `SimNode` plays the node host around one `Engine`. What a real node keeps on
disk survives `crash()`: the `MemorySafetyStore` object (the engine's
`SafetyRules` state) and the list of decided blocks with their certificates
(the block store). Everything else - the engine, pending timers, payloads
being fetched - is lost, and `start()` builds a fresh engine at the height
after the last decided block.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from consensus.engine import BlockCheck, Engine, EngineConfig, ProposalContent
from consensus.safety import MemorySafetyStore, SafetyRules
from consensus.sim.byzantine import Equivocator, InstanceSpec
from crypto import PrivateKey, sha256

# Events the block source puts on the virtual clock: (kind, instance, incarnation).
EV_PAYLOAD = 3
EV_READY = 4

Schedule = Callable[[int, tuple], None]

MAX_PAYLOAD_ITEMS = 4
PAYLOAD_ITEM_BYTES = 16


def app_hash_after(prev_block_hash: bytes) -> bytes:
    """The simulated application's state hash after the block `prev_block_hash`."""
    return sha256(b"bftnode-sim/app" + prev_block_hash)


class SimBlockSource:
    """The host's `BlockSource` for one engine incarnation.

    Payloads are a few random byte strings from the run's RNG; the app hash
    of block h is `app_hash_after(hash of block h-1)`, and `check_block` calls a
    block VALID exactly when its app hash and payload follow those rules. With
    `late` set (the "missing" fault) it sometimes answers "not ready" /
    MISSING and puts the arrival of the content on the clock within `late_ms`.
    """

    def __init__(self, node: SimNode, rng: random.Random, now: Callable[[], int],
                 schedule: Schedule, late: bool, late_ms: int, stats: dict[str, int]) -> None:
        self.node = node
        self.stats = stats
        self.rng = rng
        self.now = now
        self.schedule = schedule
        self.late = late
        self.late_ms = late_ms
        self._ready_at: dict[int, int] = {}        # height -> when its content is ready
        self.awaiting = 0  # height whose content was refused for want of the previous block
        self._available_at: dict[bytes, int] = {}  # block hash -> when its payload arrives

    def proposal_content(self, height: int) -> ProposalContent | None:
        decided = self.node.decided
        if height != len(decided) + 1:
            # The engine starts height h+1 inside the call that decides h, before the host
            # has stored (executed) block h: not ready; the host calls on_proposal_ready
            # once it has stored the block (see `awaiting`).
            self.awaiting = height
            return None
        now = self.now()
        if self.late:
            ready = self._ready_at.get(height)
            if ready is None:
                ready = now
                if self.rng.random() < 0.05:
                    ready = now + self.rng.randint(1, self.late_ms)
                    self.stats["proposal_not_ready"] += 1
                    self.schedule(ready, (EV_READY, self.node.spec.instance, self.node.incarnation))
                self._ready_at[height] = ready
            if now < ready:
                return None
        prev_hash = decided[-1][0].hash() if decided else bytes(32)
        prev_time = decided[-1][0].header.time_ms if decided else 0
        items = self.rng.randint(0, MAX_PAYLOAD_ITEMS)
        payload = tuple(self.rng.randbytes(PAYLOAD_ITEM_BYTES) for _ in range(items))
        return ProposalContent(payload=payload, time_ms=max(now, prev_time + 1),
                               app_hash=app_hash_after(prev_hash))

    def check_block(self, block: Any) -> BlockCheck:
        header = block.header
        if header.app_hash != app_hash_after(header.prev_block_hash):
            return BlockCheck.INVALID
        if len(block.payload) > MAX_PAYLOAD_ITEMS + 1:  # +1: an equivocator's other block
            return BlockCheck.INVALID
        if self.late:
            block_hash = block.hash()
            now = self.now()
            at = self._available_at.get(block_hash)
            if at is None:
                at = now
                if self.rng.random() < 0.1:
                    at = now + self.rng.randint(1, self.late_ms)
                    self.stats["payload_missing"] += 1
                    self.schedule(at, (EV_PAYLOAD, self.node.spec.instance, self.node.incarnation))
                self._available_at[block_hash] = at
            if now < at:
                return BlockCheck.MISSING
        return BlockCheck.VALID


class SimNode:
    """One engine instance and its durable state (see module docstring).

    `decided[h-1]` is ``(block, certificate)`` for height h: the block store.
    `incarnation` grows at every crash so that timers of a dead engine are
    recognised and dropped.
    """

    def __init__(self, spec: InstanceSpec, key: PrivateKey, chain_id: str, validators: Any,
                 config: EngineConfig, verify: Callable[[bytes, bytes, bytes], bool],
                 equivocator: Equivocator | None = None) -> None:
        self.spec = spec
        self.key = key
        self.chain_id = chain_id
        self.validators = validators
        self.config = config
        self.verify = verify
        self.equivocator = equivocator
        self.store = MemorySafetyStore()
        self.signer: SafetyRules | None = None
        self.decided: list[tuple[Any, Any]] = []
        self.engine: Engine | None = None
        self.source: SimBlockSource | None = None
        self.incarnation = 0
        self.crashes = 0

    @property
    def up(self) -> bool:
        return self.engine is not None

    def start(self, source: SimBlockSource) -> list[Any]:
        """Build a fresh engine after the last decided block and start it."""
        self.source = source
        prev = self.decided[-1][0].hash() if self.decided else bytes(32)
        self.signer = SafetyRules(self.key, self.store, self.chain_id)
        self.engine = Engine(
            chain_id=self.chain_id,
            validators=self.validators,
            signer=self.signer,
            source=source,
            config=self.config,
            height=len(self.decided) + 1,
            prev_block_hash=prev,
            verify=self.verify,
        )
        with self.one_save():
            return self.engine.start()

    def one_save(self) -> AbstractContextManager[None]:
        """As the node's ConsensusHost does: what one engine call signs is saved once,
        when the call returns, and only then do its outputs leave (a crash comes
        between calls here)."""
        return self.signer.deferred_saves() if self.signer is not None else nullcontext()

    def crash(self, amnesia: bool = False) -> None:
        """Lose everything but the safety store and the decided blocks. With `amnesia`
        the safety store is lost too: a broken host, for testing that the checker
        catches the double-signs this allows."""
        if amnesia:
            self.store = MemorySafetyStore()
        self.engine = None
        self.signer = None
        self.source = None
        self.incarnation += 1
        self.crashes += 1
