"""A tiny deterministic harness: a few engines wired by an in-test message pump.

No threads, no sleeps: messages wait in a FIFO queue, timeouts in a heap ordered by
virtual time, and a test decides what is delivered, dropped or fired, and when.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable

from consensus import (
    Block,
    BlockCheck,
    Broadcast,
    Decide,
    Engine,
    EngineConfig,
    EvidenceFound,
    FetchPayload,
    MemorySafetyStore,
    Output,
    Proposal,
    ProposalContent,
    SafetyRules,
    ScheduleTimeout,
    Step,
    SyncNeeded,
    Validator,
    ValidatorSet,
    Vote,
    VoteKind,
)
from crypto import PrivateKey, verify_one

CHAIN = "test-chain"


def make_keys(n: int) -> list[PrivateKey]:
    return [PrivateKey(bytes([i + 1]) * 32) for i in range(n)]


def make_vset(keys: list[PrivateKey], powers: list[int] | None = None) -> ValidatorSet:
    powers = powers or [1] * len(keys)
    vs = ValidatorSet(tuple(Validator(k.public_key, p) for k, p in zip(keys, powers, strict=True)))
    vs.validate()
    return vs


class FakeSource:
    """A BlockSource: blocks carry one payload item naming the node and height."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready = True
        self.verdicts: dict[bytes, BlockCheck] = {}   # block hash -> verdict
        self.default = BlockCheck.VALID
        self.checked: list[bytes] = []

    def proposal_content(self, height: int) -> ProposalContent | None:
        if not self.ready:
            return None
        return ProposalContent((f"{self.name}@{height}".encode(),), 1000 * height, bytes(32))

    def check_block(self, block: Block) -> BlockCheck:
        self.checked.append(block.hash())
        return self.verdicts.get(block.hash(), self.default)


def signed_vote(key: PrivateKey, kind: VoteKind, height: int, round: int,
                block_hash: bytes | None, chain: str = CHAIN) -> Vote:
    """A vote signed directly with `key`, bypassing SafetyRules (byzantine or crafted)."""
    vote = Vote(kind, height, round, block_hash, key.public_key)
    return vote.with_signature(key.sign(vote.sign_bytes(chain)))


def signed_proposal(key: PrivateKey, height: int, round: int, block: Block,
                    pol_round: int = -1, chain: str = CHAIN) -> Proposal:
    p = Proposal(height, round, pol_round, block, key.public_key)
    return p.with_signature(key.sign(p.sign_bytes(chain)))


def make_block(vset: ValidatorSet, proposer: bytes, height: int = 1, tag: bytes = b"x",
               prev: bytes = bytes(32), chain: str = CHAIN) -> Block:
    return Block.build(chain_id=chain, height=height, time_ms=height, prev_block_hash=prev,
                       payload=(tag,), app_hash=bytes(32), validators_hash=vset.hash(),
                       proposer=proposer)


class Net:
    """`n` engines and a pump between them."""

    def __init__(self, n: int = 4, powers: list[int] | None = None,
                 config: EngineConfig | None = None, observers: int = 0) -> None:
        self.keys = make_keys(n + observers)
        self.vset = make_vset(self.keys[:n], powers)
        self.config = config or EngineConfig()
        self.stores = [MemorySafetyStore() for _ in self.keys]
        self.sources = [FakeSource(f"n{i}") for i in range(len(self.keys))]
        self.engines = [self.new_engine(i) for i in range(len(self.keys))]
        self.queue: deque[tuple[int, int, Proposal | Vote]] = deque()
        self.timers: list[tuple[int, int, int, int, int, Step]] = []
        self.now = 0
        self._seq = 0
        self.decided: list[list[Block]] = [[] for _ in self.keys]
        self.log: list[list[Output]] = [[] for _ in self.keys]
        self.down: set[int] = set()
        self.drop: Callable[[int, int, Proposal | Vote], bool] | None = None
        self.auto_sync = True

    def new_engine(self, i: int, height: int = 1, prev: bytes = bytes(32)) -> Engine:
        signer = SafetyRules(self.keys[i], self.stores[i], CHAIN)
        return Engine(CHAIN, self.vset, signer, self.sources[i], self.config,
                      height=height, prev_block_hash=prev)

    def outputs(self, i: int, kind: type) -> list:
        return [o for o in self.log[i] if isinstance(o, kind)]

    def handle(self, i: int, outs: list[Output]) -> None:
        self.log[i].extend(outs)
        for o in outs:
            if isinstance(o, Broadcast):
                for j in range(len(self.engines)):
                    if j != i:
                        self.queue.append((i, j, o.message))
            elif isinstance(o, ScheduleTimeout):
                self._seq += 1
                heapq.heappush(self.timers, (self.now + o.delay_ms, self._seq, i, o.height,
                                             o.round, o.step))
            elif isinstance(o, Decide):
                self.decided[i].append(o.block)
            elif isinstance(o, SyncNeeded) and self.auto_sync:
                self.sync(i, o)
            elif isinstance(o, (FetchPayload, SyncNeeded, EvidenceFound)):
                pass

    def sync(self, i: int, need: SyncNeeded) -> None:
        """Serve a SyncNeeded at once from the named validator's kept decisions."""
        source = self.engines[self.vset.index_of(need.from_validator)]
        me = self.engines[i]
        while me.height < need.height:
            got = source.decided(me.height)
            if got is None:
                return
            self.handle(i, me.on_certified_block(*got))

    def start(self, nodes: list[int] | None = None) -> None:
        for i in nodes if nodes is not None else range(len(self.engines)):
            self.handle(i, self.engines[i].start())

    def inject(self, dst: int, msg: Proposal | Vote) -> list[Output]:
        outs = self.engines[dst].on_message(msg)
        self.handle(dst, outs)
        return outs

    def deliver_one(self, index: int = 0) -> None:
        src, dst, msg = self.queue[index]
        del self.queue[index]
        if dst in self.down or src in self.down:
            return
        if self.drop is not None and self.drop(src, dst, msg):
            return
        self.handle(dst, self.engines[dst].on_message(msg))

    def deliver_all(self, limit: int = 100_000) -> None:
        while self.queue and limit > 0:
            self.deliver_one()
            limit -= 1

    def fire_next_timer(self) -> bool:
        while self.timers:
            t, _, i, h, r, step = heapq.heappop(self.timers)
            self.now = max(self.now, t)
            if i in self.down:
                continue
            self.handle(i, self.engines[i].on_timeout(h, r, step))
            return True
        return False

    def run(self, height: int, max_events: int = 100_000, nodes: list[int] | None = None) -> None:
        """Deliver and fire timers until every node in `nodes` reached `height`."""
        nodes = nodes if nodes is not None else [i for i in range(len(self.engines))
                                                  if i not in self.down]
        for _ in range(max_events):
            if all(self.engines[i].height >= height for i in nodes):
                return
            if self.queue:
                self.deliver_one()
            elif not self.fire_next_timer():
                break
        raise AssertionError(
            f"nodes did not reach height {height}: {[e.height for e in self.engines]}, "
            f"rounds {[e.round for e in self.engines]}"
        )


class Solo:
    """One engine under test (validator `me`); the test plays the others with their keys."""

    def __init__(self, me: int = 0, n: int = 4, height: int = 1, prev: bytes = bytes(32),
                 powers: list[int] | None = None, config: EngineConfig | None = None,
                 verify: Callable[[bytes, bytes, bytes], bool] = verify_one) -> None:
        self.keys = make_keys(n)
        self.pks = [k.public_key for k in self.keys]
        self.vset = make_vset(self.keys, powers)
        self.me = me
        self.store = MemorySafetyStore()
        self.source = FakeSource("solo")
        self.config = config or EngineConfig()
        self.engine = Engine(CHAIN, self.vset, SafetyRules(self.keys[me], self.store, CHAIN),
                             self.source, self.config, height=height, prev_block_hash=prev,
                             verify=verify)
        self.log: list[Output] = []

    def _keep(self, outs: list[Output]) -> list[Output]:
        self.log.extend(outs)
        return outs

    def start(self) -> list[Output]:
        return self._keep(self.engine.start())

    def feed(self, msg: Proposal | Vote) -> list[Output]:
        return self._keep(self.engine.on_message(msg))

    def timeout(self, round: int, step: Step, height: int | None = None) -> list[Output]:
        h = self.engine.height if height is None else height
        return self._keep(self.engine.on_timeout(h, round, step))

    def proposer(self, round: int, height: int | None = None) -> int:
        return self.vset.proposer_index(self.engine.height if height is None else height, round)

    def block(self, tag: bytes = b"x", proposer: int | None = None) -> Block:
        e = self.engine
        p = self.pks[proposer if proposer is not None else self.proposer(e.round)]
        return make_block(self.vset, p, height=e.height, tag=tag, prev=e.prev_block_hash)

    def propose(self, round: int, block: Block, pol_round: int = -1) -> list[Output]:
        key = self.keys[self.proposer(round, block.header.height)]
        return self.feed(signed_proposal(key, block.header.height, round, block, pol_round))

    def votes(self, kind: VoteKind, round: int, block_hash: bytes | None, senders: list[int],
              height: int | None = None) -> list[Output]:
        h = self.engine.height if height is None else height
        outs: list[Output] = []
        for i in senders:
            outs += self.feed(signed_vote(self.keys[i], kind, h, round, block_hash))
        return outs


def sent(outs: list[Output], kind: type = Vote) -> list:
    """Messages of type `kind` broadcast in `outs`."""
    return [o.message for o in outs if isinstance(o, Broadcast) and isinstance(o.message, kind)]


def sent_votes(outs: list[Output], kind: VoteKind) -> list[tuple[int, int, bytes | None]]:
    return [(v.height, v.round, v.block_hash) for v in sent(outs, Vote) if v.kind == kind]


def timeouts(outs: list[Output]) -> list[tuple[int, int, Step, int]]:
    return [(o.height, o.round, o.step, o.delay_ms) for o in outs if isinstance(o, ScheduleTimeout)]
