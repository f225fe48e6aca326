"""Safety and liveness checks over everything the simulated nodes sign and decide.

The checker sees every decision, every message an honest key signs and every
piece of evidence an honest node reports, and records a `Violation` when:

- **agreement**: two honest nodes decide different blocks at one height
  (nodes run by byzantine keys - twins, equivocators - are not honest and are
  not compared);
- **certificate**: an honest node decides a block whose commit certificate is
  not for that block and height, or does not verify (`CommitCertificate.verify`:
  distinct members of the set holding > 2/3 of the power, real Ed25519
  precommit signatures over the right sign bytes);
- **chain**: an honest node decides out of order, or a block whose
  ``prev_block_hash`` is not the hash of its own previous decision;
- **double-sign**: an honest key signs two different sign bytes for the same
  (height, round, step) - across crashes and restarts too, which is exactly
  what `SafetyRules` with a durable store must prevent;
- **evidence**: an honest node reports evidence that does not verify or that
  accuses an honest validator.

Liveness is judged at the end of a run by `liveness_failures`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from consensus.codec import CodecError
from consensus.errors import ConsensusError

STEP_PROPOSE = 0
STEP_PREVOTE = 1
STEP_PRECOMMIT = 2
STEP_NAMES = {STEP_PROPOSE: "propose", STEP_PREVOTE: "prevote", STEP_PRECOMMIT: "precommit"}

BatchVerify = Callable[..., list[bool]]


@dataclass(frozen=True)
class Violation:
    """One broken safety property, at virtual time `time_ms`."""

    kind: str       # agreement | certificate | chain | double-sign | evidence
    time_ms: int
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} violation at t={self.time_ms}ms: {self.detail}"


def short(h: bytes | None) -> str:
    """First 8 hex digits of a hash, or "nil"."""
    return "nil" if h is None else h[:4].hex()


def message_step(msg: Any) -> int:
    """The (height, round, step) step of a Proposal (0) or Vote (its kind: 1 or 2)."""
    kind = getattr(msg, "kind", None)
    return STEP_PROPOSE if kind is None else int(kind)


def message_signer(msg: Any) -> bytes:
    """The public key that signed a Proposal or Vote."""
    signer = getattr(msg, "validator", None)
    return msg.proposer if signer is None else signer


class Checker:
    """Accumulates violations for one simulated run.

    `honest_keys` maps each honest public key to its validator index (for
    messages); instances are named by the caller's integer ids. `verify_batch`
    is passed to `CommitCertificate.verify` (the simulator passes its memo).
    """

    def __init__(self, chain_id: str, validators: Any, honest_keys: Mapping[bytes, int],
                 verify_batch: BatchVerify) -> None:
        self.chain_id = chain_id
        self.validators = validators
        self.honest_keys = dict(honest_keys)
        self.verify_batch = verify_batch
        self.violations: list[Violation] = []
        self.evidence_reports = 0
        # height -> (block hash, instance that decided it first)
        self._decided: dict[int, tuple[bytes, int]] = {}
        # instance -> (last decided height, its block hash)
        self._tip: dict[int, tuple[int, bytes]] = {}
        # (signer, height, round, step) -> (sign bytes, instance, time)
        self._signed: dict[tuple[bytes, int, int, int], tuple[bytes, int, int]] = {}
        self._certs_ok: dict[Any, str | None] = {}

    def _violate(self, kind: str, now: int, detail: str) -> None:
        self.violations.append(Violation(kind, now, detail))

    # --- signatures ----------------------------------------------------------------------

    def on_signed(self, now: int, instance: int, msg: Any) -> None:
        """An honest instance sent `msg` (a Proposal or Vote signed by its key)."""
        signer = message_signer(msg)
        if signer not in self.honest_keys:
            return
        step = message_step(msg)
        slot = (signer, msg.height, msg.round, step)
        data = msg.sign_bytes(self.chain_id)
        seen = self._signed.get(slot)
        if seen is None:
            self._signed[slot] = (data, instance, now)
        elif seen[0] != data:
            self._violate(
                "double-sign", now,
                f"validator {self.honest_keys[signer]} signed two different {STEP_NAMES[step]}s "
                f"at height {msg.height} round {msg.round} (instance {seen[1]} at t={seen[2]}ms, "
                f"instance {instance} at t={now}ms)",
            )

    # --- decisions -----------------------------------------------------------------------

    def on_decide(self, now: int, instance: int, block: Any, certificate: Any) -> None:
        """An honest instance decided `block` with `certificate`."""
        height = block.header.height
        block_hash = block.hash()
        tip = self._tip.get(instance)
        expected_height = 1 if tip is None else tip[0] + 1
        expected_prev = bytes(32) if tip is None else tip[1]
        if height != expected_height:
            self._violate("chain", now, f"instance {instance} decided height {height} "
                                        f"but its next height is {expected_height}")
        elif block.header.prev_block_hash != expected_prev:
            self._violate("chain", now, f"instance {instance} decided height {height} on "
                                        f"prev {short(block.header.prev_block_hash)}, but "
                                        f"its height {height - 1} is {short(expected_prev)}")
        self._tip[instance] = (height, block_hash)
        problem = self.certificate_problem(block, certificate)
        if problem is not None:
            self._violate("certificate", now, f"instance {instance} decided height {height} "
                                              f"with a bad certificate: {problem}")
        first = self._decided.get(height)
        if first is None:
            self._decided[height] = (block_hash, instance)
        elif first[0] != block_hash:
            self._violate("agreement", now, f"height {height}: instance {first[1]} decided "
                                            f"{short(first[0])}, instance {instance} decided "
                                            f"{short(block_hash)}")

    def certificate_problem(self, block: Any, certificate: Any) -> str | None:
        """Why `certificate` does not certify `block`, or None when it does."""
        try:
            key: Any = (block.hash(), certificate)
            hash(key)
        except TypeError:  # an unhashable certificate is simply checked every time
            key = None
        if key is not None and key in self._certs_ok:
            return self._certs_ok[key]
        problem: str | None = None
        if certificate.height != block.header.height:
            problem = f"certificate height {certificate.height} != block height {block.header.height}"
        elif certificate.block_hash != block.hash():
            problem = (f"certificate is for block {short(certificate.block_hash)}, "
                       f"not {short(block.hash())}")
        else:
            try:
                certificate.verify(self.chain_id, self.validators, verify_batch=self.verify_batch)
            except (ConsensusError, CodecError, ValueError) as exc:
                problem = str(exc) or type(exc).__name__
        if key is not None:
            self._certs_ok[key] = problem
        return problem

    # --- evidence ------------------------------------------------------------------------

    def on_evidence(self, now: int, instance: int, evidence: Any) -> None:
        """An honest instance reported duplicate-vote evidence."""
        self.evidence_reports += 1
        accused = evidence.vote_a.validator
        if accused in self.honest_keys:
            self._violate("evidence", now, f"instance {instance} reported evidence against "
                                           f"honest validator {self.honest_keys[accused]}")
            return
        try:
            evidence.verify(self.chain_id, self.validators)
        except (ConsensusError, CodecError, ValueError) as exc:
            self._violate("evidence", now, f"instance {instance} reported evidence that does "
                                           f"not verify: {exc}")

    # --- liveness ------------------------------------------------------------------------

    @staticmethod
    def liveness_failures(heights: Mapping[int, int], target: int,
                          checked: Iterable[int]) -> list[str]:
        """Instances in `checked` whose decided height is below `target`, described."""
        return [f"instance {i} decided {heights.get(i, 0)} of {target} heights"
                for i in checked if heights.get(i, 0) < target]


def describe(violations: Sequence[Violation]) -> str:
    """One line per violation."""
    return "\n".join(str(v) for v in violations)
