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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from consensus.codec import (
    CodecError,
    WireMessage,
    expect_bytes,
    expect_int,
    expect_list,
)
from consensus.errors import SafetyViolation
from consensus.types import MAX_HEIGHT, MAX_ROUND, SIGNATURE_SIZE, Proposal, Step, Vote
from crypto import PrivateKey

_STEP_NAMES = {Step.PROPOSE: "propose", Step.PREVOTE: "prevote", Step.PRECOMMIT: "precommit"}


@dataclass(frozen=True)
class SafetyState(WireMessage):
    """The last thing signed: its (height, round, step), sign bytes and signature.

    A WireMessage so that the node can persist it as one msgpack record.
    """

    TAG = 30

    height: int
    round: int
    step: Step
    sign_bytes: bytes
    signature: bytes

    def to_fields(self) -> list[Any]:
        return [self.height, self.round, int(self.step), self.sign_bytes, self.signature]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> SafetyState:
        expect_list(fields, "SafetyState", length=5)
        step = expect_int(fields[2], "safety step", lo=0, hi=2)
        return cls(fields[0], fields[1], Step(step), fields[3], fields[4])

    def validate(self) -> None:
        expect_int(self.height, "safety height", lo=1, hi=MAX_HEIGHT)
        expect_int(self.round, "safety round", lo=0, hi=MAX_ROUND)
        if not isinstance(self.step, Step):
            raise CodecError(f"safety step must be a Step, got {self.step!r}")
        expect_bytes(self.sign_bytes, "safety sign_bytes", max_size=4096)
        expect_bytes(self.signature, "safety signature", size=SIGNATURE_SIZE)


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

    @property
    def state(self) -> SafetyState | None:
        """The last signed (height, round, step), or None if this key never signed."""
        return self._state

    def sign_proposal(self, proposal: Proposal) -> Proposal:
        """`proposal` with its signature filled in; raises SafetyViolation (see module doc)."""
        if proposal.proposer != self.public_key:
            raise SafetyViolation(
                f"proposal for height {proposal.height} round {proposal.round} names proposer "
                f"{proposal.proposer.hex()[:16]}, not this signer's key {self.public_key.hex()[:16]}"
            )
        sig = self._sign(proposal.height, proposal.round, Step.PROPOSE,
                         proposal.sign_bytes(self.chain_id))
        return proposal.with_signature(sig)

    def sign_vote(self, vote: Vote) -> Vote:
        """`vote` with its signature filled in; raises SafetyViolation (see module doc)."""
        if vote.validator != self.public_key:
            raise SafetyViolation(
                f"{_STEP_NAMES[Step(vote.kind)]} for height {vote.height} round {vote.round} names "
                f"validator {vote.validator.hex()[:16]}, not this signer's key "
                f"{self.public_key.hex()[:16]}"
            )
        sig = self._sign(vote.height, vote.round, Step(vote.kind), vote.sign_bytes(self.chain_id))
        return vote.with_signature(sig)

    def _sign(self, height: int, round: int, step: Step, data: bytes) -> bytes:
        last = self._state
        if last is not None:
            here = (height, round, step)
            before = (last.height, last.round, last.step)
            if here == before:
                if data == last.sign_bytes:
                    return last.signature
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
        state = SafetyState(height, round, step, data, signature)
        self._store.save(state)  # durable before the signature leaves
        self._state = state
        return signature


__all__ = ["MemorySafetyStore", "SafetyRules", "SafetyState", "SafetyStore"]
