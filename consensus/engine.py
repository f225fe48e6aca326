"""The consensus engine: Tendermint's Algorithm 1 as a sans-IO state machine.

Reference: Buchman, Kwon, Milosevic, "The latest gossip on BFT consensus" (2018),
Algorithm 1. Comments cite its line numbers ("line 22"). Inputs come in through
`start`, `on_message`, `on_timeout`, `on_payload_available`, `on_proposal_ready` and
`on_certified_block`; each returns the list of outputs (`Broadcast`, `ScheduleTimeout`,
`Decide`, `FetchPayload`, `SyncNeeded`, `EvidenceFound`) for the host to carry out.
The engine reads no clock, opens no socket, starts no thread and touches no disk, so
the same object runs in a Ray actor, in-process, and in the deterministic simulator.

Departures from the paper's pseudo-code, all for a real network:

- Every `StartRound` schedules the propose timeout, the proposer's included (the paper
  has only non-proposers do so), and when a timeout fires for the current round the
  engine re-broadcasts its own proposal and votes of that round and of the round it
  signed in before (see `_rebroadcast`); if no timeout of the current round is left
  pending it schedules another propose timeout, which (the step being past propose by
  then) only re-broadcasts. So a round whose messages were all lost is retried for as
  long as it lasts, and 2f+1 prevotes are never waited for in silence.
- In place of the paper's gossip assumption (what one correct process received, all
  eventually receive), the engine relays the one set of other validators' messages that
  liveness needs: the prevotes proving its valid value's polka, sent with a
  re-proposal of that value and on each timeout.
- A value is known by its block hash; a proposal of any round of this height makes the
  block known, which is all line 49 needs.
- ``valid(v)`` is the host's `BlockSource.check_block` after structural checks
  (chain, height, parent, validator set). ``MISSING`` means "ask again later": the
  engine outputs `FetchPayload` and neither prevotes for nor decides the block until
  `on_payload_available`, while its timeouts keep running.
- Messages for the next few heights are verified, buffered (bounded) and replayed
  when the height starts; messages from a validator that is ahead trigger `SyncNeeded`
  (see `on_timeout`), and `on_certified_block` decides a block proven by its
  commit certificate.
- A validator counts once per (round, kind) toward "2f+1 of any value"; a validly
  signed second vote for a different value yields `EvidenceFound` and counts only toward
  that value, and only if it is nil or a block proposed at this height (see
  `_receive_vote` for why counting it is safe and needed).
- For memory safety against byzantine validators, each validator may occupy at most
  `EngineConfig.max_future_rounds` rounds above ours at a time; more are ignored until
  we move up (its timeouts re-broadcast them later).
- Crash recovery without a write-ahead log: SafetyRules keeps the lock, the locked
  block, the votes of the last two rounds signed in and the precommits of the last
  round left by OnTimeoutPrecommit, and `start` resumes from them.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from consensus.codec import CodecError
from consensus.errors import InvalidMessage, SafetyViolation
from consensus.evidence import EquivocationTracker
from consensus.safety import SafetyRules
from consensus.types import (
    Block,
    CommitCertificate,
    DuplicateVoteEvidence,
    Proposal,
    Step,
    Vote,
    VoteKind,
)
from consensus.validators import ValidatorSet
from crypto import verify_batch as crypto_verify_batch
from crypto import verify_one

PREVOTE = VoteKind.PREVOTE
PRECOMMIT = VoteKind.PRECOMMIT
PROPOSE_STEP = Step.PROPOSE
PREVOTE_STEP = Step.PREVOTE
PRECOMMIT_STEP = Step.PRECOMMIT
MAX_ALT_BLOCKS = 2  # blocks kept per round from an equivocating proposer's extra proposals


# --- host interface ----------------------------------------------------------------------


class BlockCheck(Enum):
    """The host's verdict on a proposed block's payload."""

    VALID = "valid"
    INVALID = "invalid"
    MISSING = "missing"  # payload batches not here yet: fetch, then on_payload_available()


@dataclass(frozen=True)
class ProposalContent:
    """What the host supplies for a new block: payload, timestamp, app hash after the
    previous block."""

    payload: tuple[bytes, ...]
    time_ms: int
    app_hash: bytes


class BlockSource(Protocol):
    """Host callbacks, synchronous and cheap; the engine calls them while handling inputs."""

    def proposal_content(self, height: int) -> ProposalContent | None:
        """Content for a block at `height`, or None if not ready (then the host calls
        `Engine.on_proposal_ready` later)."""
        ...

    def check_block(self, block: Block) -> BlockCheck:
        """Whether the payload of `block` is valid, invalid, or not available yet."""
        ...


@dataclass(frozen=True)
class EngineConfig:
    """Timeouts (milliseconds) and memory bounds.

    The timeout for `step` in `round` is ``timeout_<step>_ms + round * delta_ms``: it
    grows linearly per round, so after the network stabilises some round is long enough
    for every correct validator to hear from every other (the paper's liveness argument).
    """

    timeout_propose_ms: int = 1000
    timeout_prevote_ms: int = 500
    timeout_precommit_ms: int = 500
    delta_ms: int = 500
    future_heights: int = 3       # buffer messages for heights h+1 .. h+future_heights
    max_buffered: int = 4096      # future-height messages held at most, all heights together
    max_future_rounds: int = 2    # rounds above ours one validator may occupy at a time
    decisions_kept: int = 256     # recent decisions kept for decided() and SyncRequest

    def __post_init__(self) -> None:
        for name in ("timeout_propose_ms", "timeout_prevote_ms", "timeout_precommit_ms",
                     "delta_ms", "future_heights", "max_buffered", "max_future_rounds",
                     "decisions_kept"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"EngineConfig.{name} must be a non-negative integer, got {value!r}")

    def timeout_ms(self, step: Step, round: int) -> int:
        if step == PROPOSE_STEP:
            base = self.timeout_propose_ms
        elif step == PREVOTE_STEP:
            base = self.timeout_prevote_ms
        else:
            base = self.timeout_precommit_ms
        return base + round * self.delta_ms


# --- outputs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Send `message` to every peer. The engine has already processed it itself."""

    message: Proposal | Vote


@dataclass(frozen=True, slots=True)
class ScheduleTimeout:
    """Call `Engine.on_timeout(height, round, step)` after `delay_ms`."""

    height: int
    round: int
    step: Step
    delay_ms: int


@dataclass(frozen=True, slots=True)
class Decide:
    """`block` is committed at its height, proven by `certificate`. The engine has already
    moved to the next height."""

    block: Block
    certificate: CommitCertificate


@dataclass(frozen=True, slots=True)
class FetchPayload:
    """The payload of `block` is missing here; fetch it, then call `on_payload_available`."""

    block: Block


@dataclass(frozen=True, slots=True)
class SyncNeeded:
    """`from_validator` signed a message at `height`, above ours: it holds the certified
    blocks from `Engine.height` to ``height - 1``; fetch them (SyncRequest) and feed
    each to `on_certified_block`, lowest first."""

    height: int
    from_validator: bytes


@dataclass(frozen=True, slots=True)
class EvidenceFound:
    """A validator signed two different votes for one (kind, height, round)."""

    evidence: DuplicateVoteEvidence


Output = Broadcast | ScheduleTimeout | Decide | FetchPayload | SyncNeeded | EvidenceFound
VerifyOne = Callable[[bytes, bytes, bytes], bool]


# --- vote bookkeeping ------------------------------------------------------------------------


class _VoteSet:
    """Votes of one kind in one round of the current height.

    A validator counts once toward `total` (the "2f+1 of any value" rules) and, per
    value, toward `power[value]` for every value it signed that a rule can act on (see
    `Engine._receive_vote`).
    """

    __slots__ = ("first", "by_value", "power", "total")

    def __init__(self) -> None:
        self.first: dict[int, Vote] = {}                         # validator -> first vote
        self.by_value: dict[bytes | None, dict[int, Vote]] = {}  # value -> validator -> vote
        self.power: dict[bytes | None, int] = {}                # value (None = nil) -> power
        self.total = 0                                           # power of distinct voters


# --- the engine ------------------------------------------------------------------------------


class Engine:
    """One validator's (or observer's) view of consensus on one chain.

    Not thread-safe and not re-entrant: the host calls one input method at a time and
    carries out the returned outputs in order.
    """

    def __init__(
        self,
        chain_id: str,
        validators: ValidatorSet,
        signer: SafetyRules | None,
        source: BlockSource,
        config: EngineConfig | None = None,
        height: int = 1,
        prev_block_hash: bytes = bytes(32),
        verify: VerifyOne = verify_one,
    ) -> None:
        if height < 1:
            raise ValueError(f"engine height must be at least 1, got {height}")
        if signer is not None and signer.chain_id != chain_id:
            raise ValueError(f"signer is for chain {signer.chain_id!r}, engine for {chain_id!r}")
        self.chain_id = chain_id
        self.validators = validators
        self.config = config if config is not None else EngineConfig()
        self._signer = signer
        self._source = source
        self._verify = verify
        self._verify_batch = (
            crypto_verify_batch if verify is verify_one else _batch_of(verify)
        )
        self._my_key = signer.public_key if signer is not None else None
        self._me = validators.index_of(self._my_key) if self._my_key is not None else None
        self._powers = [v.power for v in validators.validators]
        self._quorum = validators.quorum
        self._f1 = validators.f_plus_one
        self._validators_hash = validators.hash()

        self.rejected: Counter[str] = Counter()  # invalid inputs refused, by reason
        self.ignored: Counter[str] = Counter()   # harmless drops (duplicates, stale, bounds)
        self.signing_refused = 0                 # SafetyViolations: nothing was sent
        self.evidence = EquivocationTracker()

        self._started = False
        self._out: list[Output] = []
        self._decisions: OrderedDict[int, tuple[Block, CommitCertificate]] = OrderedDict()
        self._future: dict[int, dict[tuple[int, int, int], Proposal | Vote]] = {}
        self._future_count = 0
        self._ahead: dict[int, int] = {}  # validator index -> highest height seen from it
        self._height = height
        self._prev_hash = prev_block_hash
        self._reset_height()

    # --- read-only state -----------------------------------------------------------------

    @property
    def height(self) -> int:
        return self._height

    @property
    def round(self) -> int:
        return self._round

    @property
    def step(self) -> Step:
        return self._step

    @property
    def prev_block_hash(self) -> bytes:
        return self._prev_hash

    @property
    def locked_round(self) -> int:
        return self._locked_round

    @property
    def locked_block_hash(self) -> bytes | None:
        return self._locked_hash

    @property
    def valid_round(self) -> int:
        return self._valid_round

    @property
    def valid_block_hash(self) -> bytes | None:
        return None if self._valid_block is None else self._valid_block.hash()

    @property
    def is_validator(self) -> bool:
        """True when this engine signs: it has a signer whose key is in the set."""
        return self._me is not None

    def decided(self, height: int) -> tuple[Block, CommitCertificate] | None:
        """The block decided at `height` and its certificate, if among the recent ones kept."""
        return self._decisions.get(height)

    # --- inputs ----------------------------------------------------------------------------

    def start(self) -> list[Output]:
        """Start the first round, or resume after a restart.

        A validator restarted in the middle of a height resumes from its SafetyRules'
        record: it takes back its lock (forgetting it could let a committed block be
        contradicted), returns to the last round it signed in, and counts and sends
        again the votes it signed there (peers may never have received them, and may
        be waiting for them to make 2f+1).
        """
        out = self._out = []
        if self._started:
            return out
        self._started = True
        self._begin_height()
        self._replay_future()  # buffered while not started (e.g. before a sync)
        self._advance()
        return out

    def _begin_height(self) -> None:
        """StartRound(0), unless SafetyRules shows we signed at this height before a crash
        (possibly reached again through block sync): then resume from its record."""
        state = self._signer.state if self._signer is not None else None
        if state is not None and state.height == self._height and self._me is not None:
            self._resume(state.round)
        else:
            self._start_round(0)

    def _resume(self, round: int) -> None:
        """Carry on at `round` (the last one signed in), or past the round we last left
        by OnTimeoutPrecommit if that is later, with the lock, our votes and that
        round's precommits (to relay, see `_left_round_precommits`) taken back."""
        assert self._signer is not None and self._me is not None
        self._locked_round, self._locked_hash = self._signer.lock(self._height)
        block = self._signer.locked_block(self._height)
        if block is not None:
            self._blocks[block.hash()] = block  # we may propose it (see _propose)
        exit_round, exits = self._signer.round_exit(self._height)
        if exit_round >= round:
            self._start_round(exit_round + 1)  # nothing signed in it yet
        else:
            self._start_round(round, propose=False)  # something was signed here already
        for vote in exits:
            self._receive_vote(vote, True)  # verified before they were recorded
        for vote in self._signer.signed_votes(self._height):
            if vote.round == self._round:
                self._step = PREVOTE_STEP if vote.kind == PREVOTE else PRECOMMIT_STEP
            votes = self._prevotes if vote.kind == PREVOTE else self._precommits
            vs = votes.get(vote.round)
            if vs is None:
                vs = votes[vote.round] = _VoteSet()
            if self._me not in vs.first:  # our precommit may be among the exit's
                self._add_vote(vs, self._me, vote, True)
            self._remember_own(vote)
            self._out.append(Broadcast(vote))

    def on_message(self, msg: Proposal | Vote) -> list[Output]:
        """Handle a Proposal or Vote from a peer: check shape, membership and signature
        (with the injected `verify`), then apply every rule it enables. Invalid messages
        are dropped and counted in `rejected`."""
        out = self._out = []
        self._receive(msg, False)
        if self._started:
            self._advance()
        return out

    def on_timeout(self, height: int, round: int, step: Step) -> list[Output]:
        """A timeout scheduled by `ScheduleTimeout` fired.

        One of the current round runs the paper's OnTimeout rule and re-broadcasts this
        round's own messages. Any timeout of the current height (even of an earlier
        round) also retries missing payloads and may ask for sync; those of other
        heights are ignored."""
        out = self._out = []
        if height != self._height or not self._started:
            return out
        if round == self._round:
            if self._round_timers:
                self._round_timers -= 1
            self._rebroadcast()
            if step == PROPOSE_STEP:
                if self._step == PROPOSE_STEP:  # OnTimeoutPropose, line 57
                    self._cast(PREVOTE, None)
            elif step == PREVOTE_STEP:
                if self._step == PREVOTE_STEP:  # OnTimeoutPrevote, line 61
                    self._cast(PRECOMMIT, None)
            else:  # OnTimeoutPrecommit, line 65
                self._record_round_exit()
                self._start_round(self._round + 1)
        self._retry_missing()
        self._ask_sync()
        self._advance()
        if self._round_timers == 0:
            # Keep one timer per round alive: it re-broadcasts (see module docstring).
            self._schedule(PROPOSE_STEP)
        return out

    def on_payload_available(self) -> list[Output]:
        """A payload the engine asked for (FetchPayload) arrived: check blocks again."""
        out = self._out = []
        self._retry_missing()
        if self._started:
            self._advance()
        return out

    def on_proposal_ready(self) -> list[Output]:
        """The source can now supply the content it refused (returned None) before."""
        out = self._out = []
        if self._started and self._waiting_content and self._step == PROPOSE_STEP:
            self._waiting_content = False
            self._propose()
            self._advance()
        return out

    def on_certified_block(self, block: Block, certificate: CommitCertificate) -> list[Output]:
        """Decide `block` at the current height if `certificate` proves it final.

        Used by block sync. The block must extend the last decided block and be at our
        height (feed sync responses lowest first); the certificate must pass
        `CommitCertificate.verify`. `check_block` is not consulted: the network decided.
        """
        out = self._out = []
        if not isinstance(block, Block) or not isinstance(certificate, CommitCertificate):
            self.rejected["malformed_certified_block"] += 1
            return out
        try:
            block.validate()
            certificate.validate()
        except CodecError:
            self.rejected["malformed_certified_block"] += 1
            return out
        height = block.header.height
        if height != self._height:
            self.ignored["certified_block_old" if height < self._height else "certified_block_ahead"] += 1
            return out
        bh = block.hash()
        if (certificate.height != height or certificate.block_hash != bh
                or block.header.prev_block_hash != self._prev_hash
                or block.header.chain_id != self.chain_id):
            self.rejected["certified_block_mismatch"] += 1
            return out
        try:
            certificate.verify(self.chain_id, self.validators, self._verify_batch)
        except InvalidMessage:
            self.rejected["invalid_certificate"] += 1
            return out
        self._commit(block, certificate)
        if self._started:
            self._advance()
        return out

    # --- receiving -------------------------------------------------------------------------

    def _receive(self, msg: Proposal | Vote, verified: bool) -> None:
        if isinstance(msg, Vote):
            self._receive_vote(msg, verified)
        elif isinstance(msg, Proposal):
            self._receive_proposal(msg, verified)
        else:
            self.rejected["unknown_message"] += 1

    def _receive_vote(self, vote: Vote, verified: bool) -> None:
        if not verified:
            try:
                vote.validate()
            except CodecError:
                self.rejected["malformed"] += 1
                return
        idx = self.validators.index_of(vote.validator)
        if idx is None:
            self.rejected["non_member"] += 1
            return
        if vote.height != self._height:
            if vote.height > self._height:
                self._receive_future(vote, (vote.kind, vote.round, idx), idx, verified)
            else:
                self.ignored["old_height"] += 1
            return
        votes = self._prevotes if vote.kind == PREVOTE else self._precommits
        r = vote.round
        bh = vote.block_hash
        vs = votes.get(r)
        first = None
        if vs is not None:
            same = vs.by_value.get(bh)
            if same is not None and idx in same:
                self.ignored["duplicate"] += 1
                return
            first = vs.first.get(idx)
        if first is None and r > self._round and not self._admit_round(idx, r):
            return
        if not verified and not self._verify(vote.validator, vote.sign_bytes(self.chain_id),
                                             vote.signature):
            self.rejected["bad_signature"] += 1
            return
        if first is not None:
            # Equivocation. Report it, and still count the vote for its value if a rule
            # can act on that value (nil, or a block proposed at this height). Counting
            # it is safe: two quorums for different values would still need a correct
            # validator in both. It is needed for liveness: an equivocator could
            # otherwise show one correct validator a different vote than the others
            # saw, and that validator would never see their polka.
            evidence = self.evidence.report(first, vote)
            if evidence is not None:
                self._out.append(EvidenceFound(evidence))
            if bh is not None and bh not in self._blocks:
                self.ignored["equivocation"] += 1
                return
        elif vs is None:
            vs = votes[r] = _VoteSet()
        self._add_vote(vs, idx, vote, first is None)

    def _add_vote(self, vs: _VoteSet, idx: int, vote: Vote, first: bool) -> None:
        power = self._powers[idx]
        bh = vote.block_hash
        same = vs.by_value.get(bh)
        if same is None:
            same = vs.by_value[bh] = {}
        same[idx] = vote
        value_power = vs.power.get(bh, 0) + power
        vs.power[bh] = value_power
        r = vote.round
        if (vote.kind == PRECOMMIT and bh is not None
                and value_power >= self._quorum > value_power - power):
            self._commit_candidates.append((r, bh))  # line 49 may now hold
        if first:
            vs.first[idx] = vote
            vs.total += power
            if r > self._round:
                self._count_sender(idx, r)

    def _receive_proposal(self, proposal: Proposal, verified: bool) -> None:
        if not verified:
            try:
                proposal.validate()
            except CodecError:
                self.rejected["malformed"] += 1
                return
        r = proposal.round
        idx = self.validators.index_of(proposal.proposer)
        if idx is None:
            self.rejected["non_member"] += 1
            return
        if self.validators.proposer_index(proposal.height, r) != idx:
            self.rejected["wrong_proposer"] += 1
            return
        if proposal.height != self._height:
            if proposal.height > self._height:
                self._receive_future(proposal, (0, r, idx), idx, verified)
            else:
                self.ignored["old_height"] += 1
            return
        first = self._proposals.get(r)
        if first is not None:
            bh = proposal.block.hash()
            if first.pol_round == proposal.pol_round and first.block.hash() == bh:
                self.ignored["duplicate"] += 1
                return
            # An equivocating proposer. The first proposal stands for lines 22-36, but the
            # other block is kept (a few per round) so that if the others commit it,
            # line 49 decides it here too instead of waiting for block sync.
            self.ignored["conflicting_proposal"] += 1
            if (bh not in self._blocks and self._alt_blocks.get(r, 0) < MAX_ALT_BLOCKS
                    and (verified or self._verify(proposal.proposer,
                                                  proposal.sign_bytes(self.chain_id),
                                                  proposal.signature))):
                self._alt_blocks[r] = self._alt_blocks.get(r, 0) + 1
                self._blocks[bh] = proposal.block
            return
        if r > self._round and not self._admit_round(idx, r):
            return
        if not verified and not self._verify(proposal.proposer, proposal.sign_bytes(self.chain_id),
                                             proposal.signature):
            self.rejected["bad_signature"] += 1
            return
        self._proposals[r] = proposal
        self._blocks.setdefault(proposal.block.hash(), proposal.block)
        if r > self._round:
            self._count_sender(idx, r)

    def _admit_round(self, idx: int, r: int) -> bool:
        """Bound memory: each validator may fill at most max_future_rounds rounds above ours."""
        rounds = self._future_rounds.get(idx)
        if rounds is None:
            self._future_rounds[idx] = {r}
            return True
        if r in rounds:
            return True
        if len(rounds) >= self.config.max_future_rounds:
            rounds = {x for x in rounds if x > self._round}
            self._future_rounds[idx] = rounds
            if len(rounds) >= self.config.max_future_rounds:
                self.ignored["future_round_limit"] += 1
                return False
        rounds.add(r)
        return True

    def _count_sender(self, idx: int, r: int) -> None:
        """Line 55 bookkeeping: power of distinct senders per round above ours."""
        senders = self._round_senders.get(r)
        if senders is None:
            senders = self._round_senders[r] = set()
        elif idx in senders:
            return
        senders.add(idx)
        power = self._round_power.get(r, 0) + self._powers[idx]
        self._round_power[r] = power
        if power >= self._f1 and r > self._skip_to:
            self._skip_to = r

    def _receive_future(self, msg: Proposal | Vote, key: tuple[int, int, int], idx: int,
                        verified: bool) -> None:
        """A message for a height above ours: buffer it if near, note who is ahead."""
        height = msg.height
        near = height <= self._height + self.config.future_heights
        if near:
            bucket = self._future.get(height)
            if bucket is not None and key in bucket:
                self.ignored["duplicate"] += 1
                return
            if self._future_count >= self.config.max_buffered:
                self.ignored["buffer_full"] += 1
                near = False
        if not near and (idx in self._sync_asked or idx == self._me):
            self.ignored["far_future"] += 1
            return
        if not verified:
            sb = msg.sign_bytes(self.chain_id)
            signer = msg.validator if isinstance(msg, Vote) else msg.proposer
            if not self._verify(signer, sb, msg.signature):
                self.rejected["bad_signature"] += 1
                return
        if near:
            self._future.setdefault(height, {})[key] = msg
            self._future_count += 1
        if height > self._ahead.get(idx, 0):
            self._ahead[idx] = height
        # Two or more heights ahead: we are behind, not merely slower by one decision.
        if height > self._height + 1 and idx not in self._sync_asked and idx != self._me:
            self._sync_asked.add(idx)
            self._out.append(SyncNeeded(height, self.validators.public_keys[idx]))

    # --- the rules -------------------------------------------------------------------------

    def _advance(self) -> None:
        """Apply every rule of Algorithm 1 that holds, until none does."""
        quorum = self._quorum
        while True:
            if self._commit_candidates and self._try_decide():  # line 49
                continue
            if self._skip_to > self._round:  # line 55
                self._start_round(self._skip_to)
                continue
            r = self._round
            step = self._step
            proposal = self._proposals.get(r)
            if step == PROPOSE_STEP:
                if proposal is not None and self._prevote_on(proposal):  # lines 22, 28
                    continue
            elif proposal is not None and not self._polka_seen:  # line 36
                prevotes = self._prevotes.get(r)
                if prevotes is not None:
                    bh = proposal.block.hash()
                    if (prevotes.power.get(bh, 0) >= quorum
                            and self._check(proposal.block) is BlockCheck.VALID):
                        self._polka_seen = True
                        if step == PREVOTE_STEP:
                            self._locked_hash = bh
                            self._locked_round = r
                            self._cast(PRECOMMIT, bh, proposal.block)
                        self._valid_block = proposal.block
                        self._valid_round = r
                        continue
            if self._step == PREVOTE_STEP:
                prevotes = self._prevotes.get(r)
                if prevotes is not None:
                    if prevotes.power.get(None, 0) >= quorum:  # line 44
                        self._cast(PRECOMMIT, None)
                        continue
                    if not self._prevote_timer and prevotes.total >= quorum:  # line 34
                        self._prevote_timer = True
                        self._schedule(PREVOTE_STEP)
            if not self._precommit_timer:  # line 47
                precommits = self._precommits.get(r)
                if precommits is not None and precommits.total >= quorum:
                    self._precommit_timer = True
                    self._schedule(PRECOMMIT_STEP)
            return

    def _prevote_on(self, proposal: Proposal) -> bool:
        """Lines 22 and 28, in step propose. False while the rule cannot fire yet."""
        block = proposal.block
        bh = block.hash()
        vr = proposal.pol_round
        if vr >= 0:  # line 28 needs 2f+1 prevotes for the block in round vr
            prevotes = self._prevotes.get(vr)
            if prevotes is None or prevotes.power.get(bh, 0) < self._quorum:
                return False
        check = self._check(block)
        if check is BlockCheck.MISSING:
            return False
        if check is BlockCheck.VALID and (
            self._locked_round <= vr or self._locked_hash == bh  # vr = -1: only if unlocked
        ):
            self._cast(PREVOTE, bh)
        else:
            self._cast(PREVOTE, None)
        return True

    def _try_decide(self) -> bool:
        """Line 49: a block with 2f+1 precommits in some round, known and valid, is decided."""
        for r, bh in self._commit_candidates:
            block = self._blocks.get(bh)
            if block is not None and self._check(block) is BlockCheck.VALID:
                self._commit(block, self._certificate(r, bh))
                return True
        return False

    def _certificate(self, r: int, bh: bytes) -> CommitCertificate:
        votes = self._precommits[r].by_value[bh]
        sigs = tuple((v.validator, v.signature) for _, v in sorted(votes.items()))
        return CommitCertificate(self._height, r, bh, sigs)

    def _commit(self, block: Block, certificate: CommitCertificate) -> None:
        height = self._height
        self._decisions[height] = (block, certificate)
        while len(self._decisions) > self.config.decisions_kept:
            self._decisions.popitem(last=False)
        self._out.append(Decide(block, certificate))
        self._height = height + 1
        self._prev_hash = block.hash()
        self._reset_height()
        self.evidence.prune(self._height)
        if self._started:
            self._begin_height()
            self._replay_future()

    def _check(self, block: Block) -> BlockCheck:
        """valid(v): structural checks, then the host's check_block; cached per block."""
        bh = block.hash()
        check = self._checks.get(bh)
        if check is not None:
            return check
        h = block.header
        if (h.chain_id != self.chain_id or h.height != self._height
                or h.prev_block_hash != self._prev_hash
                or h.validators_hash != self._validators_hash
                or self.validators.index_of(h.proposer) is None):
            check = BlockCheck.INVALID
        else:
            check = self._source.check_block(block)
        self._checks[bh] = check
        if check is BlockCheck.MISSING and bh not in self._fetching:
            self._fetching.add(bh)
            self._out.append(FetchPayload(block))
        return check

    def _retry_missing(self) -> None:
        """Forget MISSING verdicts so the next check asks the host again (and re-requests
        the payload if it is still missing)."""
        if self._fetching:
            for bh in self._fetching:
                if self._checks.get(bh) is BlockCheck.MISSING:
                    del self._checks[bh]
            self._fetching.clear()

    # --- rounds and actions ----------------------------------------------------------------

    def _start_round(self, round: int, propose: bool = True) -> None:
        """StartRound (line 11)."""
        self._round = round
        self._step = PROPOSE_STEP
        self._polka_seen = False
        self._prevote_timer = False
        self._precommit_timer = False
        self._waiting_content = False
        self._round_timers = 0
        for r in [r for r in self._round_senders if r <= round]:
            del self._round_senders[r]
            del self._round_power[r]
        if (propose and self._me is not None
                and self.validators.proposer_index(self._height, round) == self._me):
            self._propose()
        self._schedule(PROPOSE_STEP)

    def _propose(self) -> None:
        """Lines 14-19: re-propose validValue with its round, else a new block.

        After a restart the engine may hold a lock (from SafetyRules) but no valid value
        and none of the prevotes behind it: then it proposes the locked block as a new
        value (pol_round -1). Otherwise a lock no proposer can offer again could keep
        the locked validators prevoting nil for ever.
        """
        locked = self._blocks.get(self._locked_hash) if self._locked_hash is not None else None
        if self._valid_block is not None:
            block = self._valid_block
            pol_round = self._valid_round
        elif locked is not None:
            block = locked
            pol_round = -1
        else:
            content = self._source.proposal_content(self._height)
            if content is None:
                self._waiting_content = True
                return
            block = Block.build(
                chain_id=self.chain_id, height=self._height, time_ms=content.time_ms,
                prev_block_hash=self._prev_hash, payload=content.payload,
                app_hash=content.app_hash, validators_hash=self._validators_hash,
                proposer=self._my_key,
            )
            try:
                block.validate()  # peers would refuse it anyway; better not to sign it
            except CodecError:
                self.rejected["bad_proposal_content"] += 1
                return
            pol_round = -1
        assert self._signer is not None and self._my_key is not None
        try:
            proposal = self._signer.sign_proposal(
                Proposal(self._height, self._round, pol_round, block, self._my_key))
        except SafetyViolation:
            self.signing_refused += 1
            return
        bh = block.hash()
        self._remember_own(proposal)
        self._proposals.setdefault(self._round, proposal)
        self._blocks.setdefault(bh, block)
        self._checks.setdefault(bh, BlockCheck.VALID)  # we built it from the host's content
        self._out.append(Broadcast(proposal))
        if pol_round >= 0:
            self._out.extend(Broadcast(v) for v in self._pol_votes())

    def _cast(self, kind: VoteKind, block_hash: bytes | None, block: Block | None = None) -> None:
        """Move to the vote's step and, as a validator, sign, count and broadcast the vote.
        `block` goes to SafetyRules with a precommit that locks on it."""
        self._step = PREVOTE_STEP if kind == PREVOTE else PRECOMMIT_STEP
        if self._me is None:
            return
        assert self._signer is not None and self._my_key is not None
        try:
            vote = self._signer.sign_vote(
                Vote(kind, self._height, self._round, block_hash, self._my_key), block)
        except SafetyViolation:
            self.signing_refused += 1
            return
        self._remember_own(vote)
        votes = self._prevotes if kind == PREVOTE else self._precommits
        vs = votes.get(self._round)
        if vs is None:
            vs = votes[self._round] = _VoteSet()
        if self._me not in vs.first:
            self._add_vote(vs, self._me, vote, True)
        self._out.append(Broadcast(vote))

    def _schedule(self, step: Step) -> None:
        r = self._round
        self._round_timers += 1
        self._out.append(ScheduleTimeout(self._height, r, step, self.config.timeout_ms(step, r)))

    def _remember_own(self, msg: Proposal | Vote) -> None:
        """Keep our signed messages of the last two rounds we signed in, to re-send them."""
        own = self._own
        mine = own.get(msg.round)
        if mine is None:
            mine = own[msg.round] = []
            while len(own) > 2:
                del own[min(own)]
        mine.append(msg)

    def _rebroadcast(self) -> None:
        """Re-send our messages of this round and of the round we signed in before it, and
        relay the polka of our valid value.

        The earlier round matters: a validator may leave a round with 2f+1 precommits
        that include a byzantine one, while its own precommit there never reached the
        others (lost before the network stabilised). They then wait in that round for
        a 2f+1 they can only get from it, and it alone is not f+1 for a round skip.
        """
        sent: set[int] = set()
        for r in sorted(self._own):
            if r <= self._round:
                for msg in self._own[r]:
                    sent.add(id(msg))
                    self._out.append(Broadcast(msg))
        for vote in self._pol_votes() + self._left_round_precommits():
            if id(vote) not in sent:
                sent.add(id(vote))
                self._out.append(Broadcast(vote))

    def _left_round_precommits(self) -> list[Vote]:
        """The precommits that let us leave the latest earlier round of this height in
        which we saw 2f+1 precommits of any value (line 47, then OnTimeoutPrecommit).

        Without them a validator can strand the others: it left round r on 2f+1
        precommits that include one from a validator that then crashed and never
        reached anyone else, without precommitting in r itself; the others wait in r
        for a 2f+1 that only its relay can complete, and it alone in r+1 is not the
        f+1 a round skip needs (found by the simulator soak, seed 10243 of 4/1 crash).
        """
        for r in range(self._round - 1, -1, -1):
            vs = self._precommits.get(r)
            if vs is not None and vs.total >= self._quorum:
                return list(vs.first.values())
        return []

    def _record_round_exit(self) -> None:
        """Have SafetyRules keep the 2f+1 precommits we leave this round on, so that a
        restart does not lose what `_left_round_precommits` relays (simulator soak,
        seed 40000 of 7/2 crash: two validators that left round 0 this way restarted,
        and the three others waited in round 0 for ever)."""
        vs = self._precommits.get(self._round)
        if self._me is None or vs is None or vs.total < self._quorum:
            return
        assert self._signer is not None
        kept: list[Vote] = []
        power = 0
        for idx, vote in vs.first.items():  # a quorum is all a receiver needs
            kept.append(vote)
            power += self._powers[idx]
            if power >= self._quorum:
                break
        self._signer.record_round_exit(self._height, self._round, tuple(kept))

    def _pol_votes(self) -> list[Vote]:
        """The 2f+1 prevotes for validValue in validRound (its proof of lock), as received.

        The paper assumes that messages a correct process received reach every correct
        process (gossip). Relaying just these is what that buys here: a validator that
        missed them, or was shown another vote by an equivocator, can then accept a
        re-proposal of the valid value (line 28) instead of staying on a lock forever.
        """
        if self._valid_block is None:
            return []
        vs = self._prevotes.get(self._valid_round)
        if vs is None:
            return []
        return list(vs.by_value.get(self._valid_block.hash(), {}).values())

    def _ask_sync(self) -> None:
        """On a timeout at our height, ask one validator seen ahead of us for blocks.

        Being one height behind is normal for a moment (a peer decided first), so a
        message one height ahead only leads here, once a timeout shows we are stuck.
        Validators are asked in turn, one per timeout, so a lost request is retried.
        """
        ahead = [(-h, i) for i, h in self._ahead.items() if h > self._height and i != self._me]
        if not ahead:
            return
        fresh = [a for a in ahead if a[1] not in self._sync_asked]
        if not fresh:
            self._sync_asked.clear()
            fresh = ahead
        neg_height, idx = min(fresh)
        self._sync_asked.add(idx)
        self._out.append(SyncNeeded(-neg_height, self.validators.public_keys[idx]))

    # --- heights -----------------------------------------------------------------------------

    def _reset_height(self) -> None:
        """Forget everything about the previous height (lines 8-10 and the message log)."""
        self._round = 0
        self._step = PROPOSE_STEP
        self._locked_hash: bytes | None = None
        self._locked_round = -1
        self._valid_block: Block | None = None
        self._valid_round = -1
        self._proposals: dict[int, Proposal] = {}
        self._blocks: dict[bytes, Block] = {}      # every block proposed at this height
        self._alt_blocks: dict[int, int] = {}      # round -> blocks kept from conflicting proposals
        self._checks: dict[bytes, BlockCheck] = {}
        self._fetching: set[bytes] = set()
        self._prevotes: dict[int, _VoteSet] = {}
        self._precommits: dict[int, _VoteSet] = {}
        self._round_senders: dict[int, set[int]] = {}
        self._round_power: dict[int, int] = {}
        self._skip_to = 0
        self._future_rounds: dict[int, set[int]] = {}
        self._commit_candidates: list[tuple[int, bytes]] = []
        self._round_timers = 0  # timeouts of the current round not fired yet
        self._sync_asked: set[int] = set()
        self._polka_seen = False
        self._prevote_timer = False
        self._precommit_timer = False
        self._waiting_content = False
        self._own: dict[int, list[Proposal | Vote]] = {}  # round -> our signed messages
        self._ahead = {i: h for i, h in self._ahead.items() if h > self._height}

    def _replay_future(self) -> None:
        """Feed the buffered messages of the new height; drop those of passed heights."""
        for height in [h for h in self._future if h <= self._height]:
            bucket = self._future.pop(height)
            self._future_count -= len(bucket)
            if height == self._height:
                for msg in bucket.values():
                    self._receive(msg, True)


def _batch_of(verify: VerifyOne) -> Callable[[Sequence[bytes], Sequence[bytes], Sequence[bytes]], list[bool]]:
    """A verify_batch built from an injected single verifier, so certificates are checked
    with the same rule as messages (the simulator may inject a fake)."""

    def batch(pks: Sequence[bytes], msgs: Sequence[bytes], sigs: Sequence[bytes]) -> list[bool]:
        return [verify(pk, m, s) for pk, m, s in zip(pks, msgs, sigs, strict=True)]

    return batch


__all__ = [
    "BlockCheck",
    "BlockSource",
    "Broadcast",
    "Decide",
    "Engine",
    "EngineConfig",
    "EvidenceFound",
    "FetchPayload",
    "Output",
    "ProposalContent",
    "ScheduleTimeout",
    "SyncNeeded",
]
