"""Validator sets: voting power, quorum arithmetic and proposer rotation.

All arithmetic is on integers. With total power ``T``:

- ``quorum = T * 2 // 3 + 1`` is the smallest power strictly greater than 2/3 of ``T``
  (the paper's "2f+1" when every validator has power 1 and ``T = 3f+1``);
- ``f_plus_one = T // 3 + 1`` is the smallest power strictly greater than 1/3 of ``T``:
  any set holding it contains at least one correct validator.

Proposer rotation (`ValidatorSet.proposer`) is a weighted round robin that is a pure
function of (height, round), so every validator computes the same proposer with no
shared state::

    slot  = ((height + round) * stride) mod T
    owner = the validator whose interval of the cumulative powers contains slot

``stride`` is ``floor(T * 0.382)`` (0.382 = 2 - the golden ratio), raised to the next
integer coprime with ``T`` (1 when ``T`` is 1). Being coprime, ``T`` consecutive values of
``height + round`` visit every slot exactly once, so each validator proposes exactly
``power`` times in any ``T`` consecutive rounds; the golden stride spreads those turns out
instead of giving a heavy validator a long run of consecutive rounds (which would stall
liveness for many rounds if it crashed). With equal powers every validator proposes once
in any ``n`` consecutive rounds.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

from consensus.codec import (
    CodecError,
    WireMessage,
    expect_bytes,
    expect_int,
    expect_list,
    pack,
)
from crypto import sha256

PUBLIC_KEY_SIZE = 32
MAX_VALIDATORS = 10_000
MAX_POWER = 1 << 50  # keeps total power * 2 well inside msgpack's 64-bit integers
_VALIDATORS_DOMAIN = b"bftnode/validators\x00"


@dataclass(frozen=True)
class Validator(WireMessage):
    """One member of a validator set: its Ed25519 public key and its voting power."""

    TAG = 24

    public_key: bytes
    power: int

    def to_fields(self) -> list[Any]:
        return [self.public_key, self.power]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Validator:
        expect_list(fields, "Validator", length=2)
        return cls(fields[0], fields[1])

    def validate(self) -> None:
        expect_bytes(self.public_key, "validator public_key", size=PUBLIC_KEY_SIZE)
        expect_int(self.power, "validator power", lo=1, hi=MAX_POWER)


@dataclass(frozen=True)
class ValidatorSet(WireMessage):
    """An ordered, fixed set of validators; the order is the genesis order.

    Derived values (total power, index, cumulative powers, stride) are computed once at
    construction, so `index_of`, `power_of` and `proposer` are dictionary lookups or a
    bisection. `validate()` refuses empty sets, duplicate keys and bad powers; a set
    built from untrusted input must be validated before use.
    """

    TAG = 25

    validators: tuple[Validator, ...]
    _index: dict[bytes, int] = field(init=False, repr=False, compare=False)
    _cumulative: list[int] = field(init=False, repr=False, compare=False)
    _stride: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        validators = tuple(self.validators)
        object.__setattr__(self, "validators", validators)
        index: dict[bytes, int] = {}
        cumulative: list[int] = []
        total = 0
        for i, v in enumerate(validators):
            index.setdefault(v.public_key, i)
            total += v.power
            cumulative.append(total)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_cumulative", cumulative)
        object.__setattr__(self, "total_power", total)
        object.__setattr__(self, "quorum", total * 2 // 3 + 1)
        object.__setattr__(self, "f_plus_one", total // 3 + 1)
        object.__setattr__(self, "public_keys", tuple(v.public_key for v in validators))
        object.__setattr__(self, "_stride", _golden_stride(total))
        object.__setattr__(self, "_hash", None)

    # Declared for type checkers; set in __post_init__.
    total_power: int = field(init=False, repr=False, compare=False)
    quorum: int = field(init=False, repr=False, compare=False)
    f_plus_one: int = field(init=False, repr=False, compare=False)
    public_keys: tuple[bytes, ...] = field(init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.validators)

    def index_of(self, public_key: bytes) -> int | None:
        """Position of `public_key` in the set, or None for a non-member."""
        return self._index.get(public_key)

    def power_of(self, public_key: bytes) -> int:
        """Voting power of `public_key`; 0 for a non-member."""
        i = self._index.get(public_key)
        return 0 if i is None else self.validators[i].power

    def proposer_index(self, height: int, round: int) -> int:
        """Index of the proposer for (height, round); see the module docstring."""
        slot = ((height + round) * self._stride) % self.total_power
        return bisect.bisect_right(self._cumulative, slot)

    def proposer(self, height: int, round: int) -> bytes:
        """Public key of the proposer for (height, round)."""
        return self.validators[self.proposer_index(height, round)].public_key

    def hash(self) -> bytes:
        """sha256 over the canonical encoding of (public key, power) in set order."""
        h = self._hash
        if h is None:
            h = sha256(_VALIDATORS_DOMAIN + pack(self.to_fields()))
            object.__setattr__(self, "_hash", h)
        return h

    def to_fields(self) -> list[Any]:
        return [v.to_fields() for v in self.validators]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> ValidatorSet:
        expect_list(fields, "ValidatorSet", max_len=MAX_VALIDATORS)
        return cls(tuple(Validator.from_fields(f) for f in fields))

    def validate(self) -> None:
        if not self.validators:
            raise CodecError("a validator set needs at least one validator")
        if len(self.validators) > MAX_VALIDATORS:
            raise CodecError(
                f"validator set has {len(self.validators)} validators, more than {MAX_VALIDATORS}"
            )
        for v in self.validators:
            if not isinstance(v, Validator):
                raise CodecError(f"validator set member must be a Validator, got {type(v).__name__}")
            v.validate()
        if len(self._index) != len(self.validators):
            raise CodecError("validator set lists the same public key twice")

    @classmethod
    def equal_power(cls, public_keys: list[bytes] | tuple[bytes, ...], power: int = 1) -> ValidatorSet:
        """A set in which every key has the same power (tests, simulator, localnets)."""
        vs = cls(tuple(Validator(pk, power) for pk in public_keys))
        vs.validate()
        return vs


def _golden_stride(total: int) -> int:
    if total <= 1:
        return 1
    stride = max(1, total * 381_966_011_250 // 1_000_000_000_000)
    while math.gcd(stride, total) != 1:
        stride += 1
    return stride
