"""SafetyRules: the only code that signs proposals and votes with a validator key.

Why it exists: a validator may crash after signing a vote and before anything else
records it. When it restarts, the engine starts from scratch and could sign a
*different* vote for the same (height, round, step): that is equivocation, and with
enough such validators two blocks get committed at one height. So the signer keeps
its own durable record of the last (height, round, step) it signed, writes it
*before* the signature leaves this module, and refuses:

- to sign anything at a (height, round, step) lower than the last one signed;
- to sign different bytes at the same (height, round, step).

Signing exactly the same bytes again returns the stored signature, so a restarted
validator can resend the vote it cast before the crash. Steps order
propose < prevote < precommit (`Step`).

The record also keeps what a restarted engine needs to carry on where it stopped
(`Engine.start` reads it back):

- the validator's *lock* at that height: the round and block of its latest precommit
  for a block (Tendermint's lockedRound / lockedValue). The lock keeps a validator from
  prevoting a block that conflicts with one that may already be committed; one that
  forgot its lock in a crash would be as dangerous as a byzantine one. The locked
  block itself is kept when the engine hands it over, so that the validator can still
  propose it: a lock on a block nobody can propose any more can stall the height;
- the votes it signed in the latest two rounds it signed in, so that it can send them
  again: peers may never have received them, and without them the others may wait
  forever for a 2f+1 that includes this validator;
- the 2f+1 precommits on which it last left a round by OnTimeoutPrecommit at that
  height (`record_round_exit`). The engine relays them on timeouts, since the others
  may still wait in that round for precommits only it received (from a validator
  that has crashed since). Kept only in memory they were lost in a restart, and the
  others could then wait forever (simulator soak, seed 40000 of 7/2 crash).

A caller that releases nothing it signed until a block of work ends may sign inside
`deferred_saves()`: the state is then saved once, when the block ends, instead of once
per signature. The node's ConsensusHost does this for each call, whose outputs leave
only after it returns: a proposer signs its proposal and its own prevote in one call,
and one save (one fsync) before the proposal leaves is one less on every height's path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol

from consensus.codec import (
    CodecError,
    WireMessage,
    expect_bytes,
    expect_int,
    expect_list,
    expect_optional_bytes,
)
from consensus.errors import SafetyViolation
from consensus.types import (
    HASH_SIZE,
    MAX_HEIGHT,
    MAX_ROUND,
    SIGNATURE_SIZE,
    Block,
    Proposal,
    Step,
    Vote,
    VoteKind,
)
from consensus.validators import MAX_VALIDATORS
from crypto import PrivateKey

MAX_KEPT_VOTES = 4  # prevote and precommit of the latest two rounds signed in
MAX_EXIT_PRECOMMITS = MAX_VALIDATORS  # one precommit per validator at most
_STEP_NAMES = {Step.PROPOSE: "propose", Step.PREVOTE: "prevote", Step.PRECOMMIT: "precommit"}


@dataclass(frozen=True)
class SafetyState(WireMessage):
    """The last thing signed: its (height, round, step), sign bytes and signature; the
    lock held at that height (``lock_round`` -1 and ``lock_hash`` None: no lock) and the
    locked block if known; ``votes``, the votes signed at this height in the latest
    two rounds signed in, in signing order; and ``exit_precommits``, the precommits of
    round ``exit_round`` of this height on which the validator last left a round by
    OnTimeoutPrecommit (``exit_round`` -1 and none: no such round recorded).

    A WireMessage so that the node can persist it as one msgpack record. Records
    written before the round-exit fields existed (9 fields) still decode.
    """

    TAG = 30

    height: int
    round: int
    step: Step
    sign_bytes: bytes
    signature: bytes
    lock_round: int = -1
    lock_hash: bytes | None = None
    lock_block: Block | None = None
    votes: tuple[Vote, ...] = ()
    exit_round: int = -1
    exit_precommits: tuple[Vote, ...] = ()

    def to_fields(self) -> list[Any]:
        return [self.height, self.round, int(self.step), self.sign_bytes, self.signature,
                self.lock_round, self.lock_hash,
                None if self.lock_block is None else self.lock_block.to_fields(),
                [v.to_fields() for v in self.votes],
                self.exit_round, [v.to_fields() for v in self.exit_precommits]]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> SafetyState:
        expect_list(fields, "SafetyState", max_len=11)
        if len(fields) not in (9, 11):
            raise CodecError(f"SafetyState must have 9 or 11 fields, got {len(fields)}")
        step = expect_int(fields[2], "safety step", lo=0, hi=2)
        block = None if fields[7] is None else Block.from_fields(fields[7])
        votes = expect_list(fields[8], "safety votes", max_len=MAX_KEPT_VOTES)
        exit_round, exits = -1, ()
        if len(fields) == 11:
            exit_round = fields[9]
            exits = tuple(Vote.from_fields(v) for v in expect_list(
                fields[10], "safety exit precommits", max_len=MAX_EXIT_PRECOMMITS))
        return cls(fields[0], fields[1], Step(step), fields[3], fields[4], fields[5], fields[6],
                   block, tuple(Vote.from_fields(v) for v in votes), exit_round, exits)

    def validate(self) -> None:
        expect_int(self.height, "safety height", lo=1, hi=MAX_HEIGHT)
        expect_int(self.round, "safety round", lo=0, hi=MAX_ROUND)
        if not isinstance(self.step, Step):
            raise CodecError(f"safety step must be a Step, got {self.step!r}")
        expect_bytes(self.sign_bytes, "safety sign_bytes", max_size=4096)
        expect_bytes(self.signature, "safety signature", size=SIGNATURE_SIZE)
        expect_int(self.lock_round, "safety lock_round", lo=-1, hi=self.round)
        if (self.lock_round == -1) != (self.lock_hash is None):
            raise CodecError("safety lock_round and lock_hash must be set together")
        expect_optional_bytes(self.lock_hash, "safety lock_hash", HASH_SIZE)
        if self.lock_block is not None:
            if not isinstance(self.lock_block, Block):
                raise CodecError("safety lock_block must be a Block")
            self.lock_block.validate()
            if self.lock_block.hash() != self.lock_hash:
                raise CodecError("safety lock_block is not the locked block")
        if type(self.votes) is not tuple or len(self.votes) > MAX_KEPT_VOTES:
            raise CodecError(f"safety votes must be a tuple of at most {MAX_KEPT_VOTES} votes")
        for v in self.votes:
            if not isinstance(v, Vote):
                raise CodecError("safety votes must hold Votes")
            v.validate()
            if v.height != self.height or v.round > self.round:
                raise CodecError("safety votes must be of the state's height, not above its round")
        expect_int(self.exit_round, "safety exit_round", lo=-1, hi=MAX_ROUND)
        if (type(self.exit_precommits) is not tuple
                or len(self.exit_precommits) > MAX_EXIT_PRECOMMITS):
            raise CodecError("safety exit_precommits must be a tuple of at most "
                             f"{MAX_EXIT_PRECOMMITS} votes")
        if (self.exit_round == -1) != (not self.exit_precommits):
            raise CodecError("safety exit_round and exit_precommits must be set together")
        for v in self.exit_precommits:
            if not isinstance(v, Vote):
                raise CodecError("safety exit_precommits must hold Votes")
            v.validate()
            if (v.kind != VoteKind.PRECOMMIT or v.height != self.height
                    or v.round != self.exit_round):
                raise CodecError("safety exit_precommits must be precommits of the state's "
                                 "height and exit_round")


class SafetyStore(Protocol):
    """Durable home of the SafetyState. `save` must be durable when it returns (the node
    fsyncs LMDB): a signature is released only after `save` returns."""

    def load(self) -> SafetyState | None: ...

    def save(self, state: SafetyState) -> None: ...


class MemorySafetyStore:
    """In-memory SafetyStore for tests and the simulator. A simulated crash keeps this
    object and builds a new SafetyRules over it, which is what a disk would give."""

    def __init__(self, state: SafetyState | None = None) -> None:
        self.state = state
        self.saves = 0

    def load(self) -> SafetyState | None:
        return self.state

    def save(self, state: SafetyState) -> None:
        self.state = state
        self.saves += 1


class SafetyRules:
    """Signs proposals and votes for one validator key on one chain, never equivocating.

    The state is read from `store` once at construction and kept in memory; every new
    signature is saved to `store` before it is returned.
    """

    def __init__(self, key: PrivateKey, store: SafetyStore, chain_id: str) -> None:
        self._key = key
        self._store = store
        self.chain_id = chain_id
        self.public_key: bytes = key.public_key
        self._state: SafetyState | None = store.load()
        # A round exit at a height nothing was signed at yet: saved with the first
        # signature there (a state needs one), until then only in memory.
        self._pending_exit: tuple[int, int, tuple[Vote, ...]] | None = None
        # Inside deferred_saves(): saving waits for its end; _unsaved: a state is waiting.
        self._deferring = False
        self._unsaved = False

    @property
    def state(self) -> SafetyState | None:
        """The last signed (height, round, step), or None if this key never signed."""
        return self._state

    def lock(self, height: int) -> tuple[int, bytes | None]:
        """(lock round, locked block hash) held at `height`; (-1, None) when none."""
        st = self._state
        if st is None or st.height != height:
            return -1, None
        return st.lock_round, st.lock_hash

    def locked_block(self, height: int) -> Block | None:
        """The block locked on at `height`, if the engine handed it over."""
        st = self._state
        return st.lock_block if st is not None and st.height == height else None

    def signed_votes(self, height: int) -> tuple[Vote, ...]:
        """The votes signed at `height` in the latest two rounds signed in, oldest first."""
        st = self._state
        if st is None or st.height != height:
            return ()
        return st.votes

    def round_exit(self, height: int) -> tuple[int, tuple[Vote, ...]]:
        """(round, its precommits) recorded by `record_round_exit` at `height`, the latest
        one; (-1, ()) when none."""
        st = self._state
        if st is not None and st.height == height and st.exit_round >= 0:
            return st.exit_round, st.exit_precommits
        pending = self._pending_exit
        if pending is not None and pending[0] == height:
            return pending[1], pending[2]
        return -1, ()

    def record_round_exit(self, height: int, round: int, precommits: tuple[Vote, ...]) -> None:
        """Keep, durably, the precommits of `round` at `height` on which the engine leaves
        that round by OnTimeoutPrecommit (see the module docstring). An earlier round than
        the one recorded is ignored. At a height nothing was signed at yet, the record is
        saved with the first signature there."""
        if not precommits or len(precommits) > MAX_EXIT_PRECOMMITS:
            raise ValueError("record_round_exit: between 1 and "
                             f"{MAX_EXIT_PRECOMMITS} precommits expected")
        for v in precommits:
            if v.kind != VoteKind.PRECOMMIT or v.height != height or v.round != round:
                raise ValueError("record_round_exit: precommits of that height and round only")
        if round <= self.round_exit(height)[0]:
            return
        st = self._state
        if st is None or st.height != height:
            self._pending_exit = (height, round, tuple(precommits))
            return
        self._save(replace(st, exit_round=round, exit_precommits=tuple(precommits)))

    def sign_proposal(self, proposal: Proposal) -> Proposal:
        """`proposal` with its signature filled in; raises SafetyViolation (see module doc)."""
        if proposal.proposer != self.public_key:
            raise SafetyViolation(
                f"proposal for height {proposal.height} round {proposal.round} names proposer "
                f"{proposal.proposer.hex()[:16]}, not this signer's key {self.public_key.hex()[:16]}"
            )
        sig, _ = self._sign(proposal.height, proposal.round, Step.PROPOSE,
                            proposal.sign_bytes(self.chain_id), None)
        return proposal.with_signature(sig)

    def sign_vote(self, vote: Vote, block: Block | None = None) -> Vote:
        """`vote` with its signature filled in; raises SafetyViolation (see module doc).

        For a precommit for a block, pass the `block` to have it kept with the lock.
        """
        if block is not None and block.hash() != vote.block_hash:
            raise ValueError("sign_vote: the block given is not the one voted for")
        if vote.validator != self.public_key:
            raise SafetyViolation(
                f"{_STEP_NAMES[Step(vote.kind)]} for height {vote.height} round {vote.round} names "
                f"validator {vote.validator.hex()[:16]}, not this signer's key "
                f"{self.public_key.hex()[:16]}"
            )
        sig, signed = self._sign(vote.height, vote.round, Step(vote.kind),
                                 vote.sign_bytes(self.chain_id), vote, block)
        return signed if signed is not None else vote.with_signature(sig)

    def _sign(self, height: int, round: int, step: Step, data: bytes,
              vote: Vote | None, block: Block | None = None) -> tuple[bytes, Vote | None]:
        """Sign `data` at (height, round, step) if allowed; `vote` is the vote being
        signed (None for a proposal), remembered with the state. Returns the signature
        and, when newly signed, the signed vote as stored."""
        last = self._state
        if last is not None:
            here = (height, round, step)
            before = (last.height, last.round, last.step)
            if here == before:
                if data == last.sign_bytes:
                    return last.signature, None
                raise SafetyViolation(
                    f"refusing to sign a different {_STEP_NAMES[step]} for height {height} "
                    f"round {round}: one was already signed there"
                )
            if here < before:
                raise SafetyViolation(
                    f"refusing to sign a {_STEP_NAMES[step]} for height {height} round {round}: "
                    f"already signed a {_STEP_NAMES[last.step]} for height {last.height} "
                    f"round {last.round}"
                )
        signature = self._key.sign(data)
        lock_round, lock_hash = self.lock(height)
        lock_block = self.locked_block(height)
        votes = self.signed_votes(height)
        signed = None
        if vote is not None:
            signed = vote.with_signature(signature)
            votes = (*votes, signed)
            rounds = sorted({v.round for v in votes})[-2:]
            votes = tuple(v for v in votes if v.round in rounds)
            if vote.kind == VoteKind.PRECOMMIT and vote.block_hash is not None:
                lock_round, lock_hash = round, vote.block_hash
                if lock_block is None or lock_block.hash() != lock_hash:
                    lock_block = block
        exit_round, exits = self.round_exit(height)
        state = SafetyState(height, round, step, data, signature, lock_round, lock_hash,
                            lock_block, votes, exit_round, exits)
        self._save(state)  # durable before the signature leaves
        return signature, signed

    def _save(self, state: SafetyState) -> None:
        if self._deferring:
            self._unsaved = True
        else:
            self._store.save(state)
        self._state = state

    @contextmanager
    def deferred_saves(self) -> Iterator[None]:
        """Sign any number of times inside; the state is saved once, on the way out.

        The caller must not release a signature made inside before the block has
        ended (returned or raised): until then it is not durable. Every check runs on
        the state in memory, which is always the latest. A nested use joins the outer
        one. On the way out the state is saved even when the block raised: it is only
        ever ahead of what left, which is what a restart must not go below.
        """
        if self._deferring:
            yield
            return
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
            if self._unsaved:
                self._unsaved = False
                assert self._state is not None
                self._store.save(self._state)


__all__ = ["MemorySafetyStore", "SafetyRules", "SafetyState", "SafetyStore"]
