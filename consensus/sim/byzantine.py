"""Byzantine strategies: which validators misbehave, and how.

F of the N validators (chosen by the seeded RNG) follow one strategy:

- ``twins``: each byzantine key runs as *two* honest engine instances, each with
  its own `MemorySafetyStore` (so neither instance knows what the other signed),
  placed in different partitions before GST, as in Twins (Bano et al., 2020).
  Every partition layout before GST separates each twin pair and spreads the
  honest nodes over both sides; with F > f the two sides can each form a quorum.
- ``equivocate``: an engine tracks height and round, but every proposal or vote
  it broadcasts is re-signed with the raw key (bypassing `SafetyRules`) into two
  conflicting versions, sent to different halves of the peers. Some conflicting
  proposals carry a block the application rejects (wrong app hash), and block-sync
  answers are forged: another block, with a certificate whose other signatures
  are random bytes.
- ``silent``: never sends anything (a validator that is down from the start).
- ``crash``: an honest engine that crashes at a random time and may restart.
  Its code is honest, so it stays under the safety checks; it is excluded from
  the liveness check because it may stay down.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from consensus.sim.network import PartitionMaker
from consensus.types import CommitCertificate, VoteKind, vote_sign_bytes
from crypto import PrivateKey, merkle_root

STRATEGIES: tuple[str, ...] = ("twins", "equivocate", "silent", "crash")

ROLE_HONEST = "honest"
ROLE_TWIN = "twin"
ROLE_EQUIVOCATOR = "equivocator"
ROLE_SILENT = "silent"
ROLE_CRASH = "crash"


@dataclass(frozen=True)
class InstanceSpec:
    """One simulated process: the validator whose key it holds, and its role."""

    instance: int
    validator: int
    role: str

    @property
    def honest(self) -> bool:
        """Runs honest code with its own durable safety store: under the safety checks."""
        return self.role in (ROLE_HONEST, ROLE_CRASH)

    @property
    def runs_engine(self) -> bool:
        return self.role != ROLE_SILENT

    @property
    def liveness_checked(self) -> bool:
        """Must reach the target height once the network has healed."""
        return self.role == ROLE_HONEST


def layout(validators: int, byzantine: Sequence[int], strategy: str) -> list[InstanceSpec]:
    """The instances of one run: one per validator, two per byzantine key under twins."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    bad = set(byzantine)
    role = {"twins": ROLE_TWIN, "equivocate": ROLE_EQUIVOCATOR,
            "silent": ROLE_SILENT, "crash": ROLE_CRASH}[strategy]
    specs: list[InstanceSpec] = []
    for v in range(validators):
        specs.append(InstanceSpec(len(specs), v, role if v in bad else ROLE_HONEST))
    if strategy == "twins":
        for v in sorted(bad):
            specs.append(InstanceSpec(len(specs), v, ROLE_TWIN))
    return specs


def twins_partition_maker(specs: Sequence[InstanceSpec]) -> PartitionMaker:
    """Partition layouts for Twins: each twin pair split across the two sides,
    honest instances spread at random (both sides non-empty when there are two)."""
    first_seen: dict[int, int] = {}
    side_of_twin: dict[int, int] = {}
    for spec in specs:
        if spec.role == ROLE_TWIN:
            side_of_twin[spec.instance] = 0 if spec.validator not in first_seen else 1
            first_seen.setdefault(spec.validator, spec.instance)
    honest = [s.instance for s in specs if s.role != ROLE_TWIN]

    def make(rng: random.Random, size: int) -> tuple[int, ...]:
        groups = [0] * size
        for instance, side in side_of_twin.items():
            groups[instance] = side
        order = list(honest)
        rng.shuffle(order)
        cut = rng.randint(1, len(order) - 1) if len(order) >= 2 else len(order)
        for k, instance in enumerate(order):
            groups[instance] = 0 if k < cut else 1
        return tuple(groups)

    return make


class Equivocator:
    """Turns each message its engine broadcasts into two conflicting, validly signed ones.

    `split(msg, peers)` returns ``(peer, message)`` pairs: one half of the peers
    gets the engine's message, the other half a conflicting one for the same
    (height, round, step); sometimes one peer gets both, so evidence can be
    found. Messages of other validators that the engine relays go out unchanged. A conflicting proposal carries a block with a different payload; a
    conflicting vote is for that block when this node proposed one at the
    round, else nil (or, for a nil vote, a random hash).
    """

    def __init__(self, key: PrivateKey, chain_id: str, rng: random.Random) -> None:
        self.key = key
        self.chain_id = chain_id
        self.rng = rng
        self._alt_block: dict[tuple[int, int], bytes] = {}  # (height, round) -> other block hash
        self.sent_pairs = 0

    def conflicting(self, msg: Any) -> Any:
        """A validly signed message conflicting with `msg` (same height, round, step)."""
        if hasattr(msg, "block") and not hasattr(msg, "kind"):  # a Proposal
            alt_block = self._other_block(msg.block, invalid=self.rng.random() < 0.3)
            self._alt_block[(msg.height, msg.round)] = alt_block.hash()
            unsigned = replace(msg, block=alt_block, signature=bytes(64))
        else:
            alt = self._alt_block.get((msg.height, msg.round))
            if alt == msg.block_hash:
                alt = None
            if alt is None and msg.block_hash is None:
                alt = self.rng.randbytes(32)
            unsigned = replace(msg, block_hash=alt, signature=bytes(64))
        return replace(unsigned, signature=self.key.sign(unsigned.sign_bytes(self.chain_id)))

    def _other_block(self, block: Any, invalid: bool = False) -> Any:
        """`block` with one more payload item: same height and parent, another hash.
        With `invalid`, its app hash is one the application rejects."""
        payload = tuple(block.payload) + (self.rng.randbytes(8),)
        header = replace(block.header, payload_digest=merkle_root(payload))
        if invalid:
            header = replace(header, app_hash=self.rng.randbytes(32))
        return replace(block, header=header, payload=payload)

    def forge_sync(self, items: Sequence[tuple[Any, Any]],
                   validators: Any) -> list[tuple[Any, Any]]:
        """A lying block-sync answer: for each height another block, certified by this
        key's real precommit plus random bytes in the name of enough other validators."""
        forged = []
        for block, cert in items:
            other = self._other_block(block)
            sb = vote_sign_bytes(VoteKind.PRECOMMIT, self.chain_id, cert.height, cert.round,
                                 other.hash())
            sigs = [(self.key.public_key, self.key.sign(sb))]
            for pk in validators.public_keys:
                if len(sigs) >= validators.quorum:
                    break
                if pk != self.key.public_key:
                    sigs.append((pk, self.rng.randbytes(64)))
            forged.append((other, CommitCertificate(cert.height, cert.round, other.hash(),
                                                    tuple(sigs))))
        return forged

    def split(self, msg: Any, peers: Sequence[int]) -> list[tuple[int, Any]]:
        signer = getattr(msg, "validator", None) or getattr(msg, "proposer", None)
        if signer != self.key.public_key:  # the engine relays another validator's vote
            return [(p, msg) for p in peers]
        other = self.conflicting(msg)
        self.sent_pairs += 1
        order = list(peers)
        self.rng.shuffle(order)
        half = len(order) // 2
        out = [(p, msg) for p in order[:half]] + [(p, other) for p in order[half:]]
        if order and self.rng.random() < 0.25:
            out.append((order[0], other))
        return out
