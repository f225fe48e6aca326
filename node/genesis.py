"""The genesis file: the facts every validator of a chain must start from.

``genesis.json``::

    {
      "chain_id": "bftnode-localnet",
      "genesis_time_ms": 1764259200000,
      "app": "bank",
      "validators": [
        {"name": "node0", "public_key": "<64 hex>", "power": 10, "p2p": "127.0.0.1:26656"}
      ],
      "allocations": {"<40-hex address>": 1000000}
    }

Validators are listed in a fixed order: that order is the chain's validator
set (`consensus.types.ValidatorSet` is built from ``(public_key, power)`` in
this order), so two nodes with the same file agree on proposers. ``p2p`` says
where the validator listens, for tools that build peer lists; it is not part of
consensus. ``allocations`` are the bank app's starting balances (account
address = `crypto.address(public key)`); a kvstore chain has none.

Loading is strict, like the config: unknown keys, duplicate validators,
non-positive power or malformed hex are errors that name the entry at fault.
Every validator of a chain must hold a byte-identical copy of this file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.config import (
    APPS,
    ConfigError,
    NodeConfig,
    atomic_write,
    check_chain_id,
    parse_host_port,
    parse_public_key_hex,
)
from node.tx import MAX_AMOUNT  # the bank's own bound on a balance

MAX_VALIDATORS = 1000
MAX_POWER = 1 << 48
MAX_TOTAL_POWER = 1 << 52  # vote power sums stay exact in every language's int64 or double
MAX_NAME_LEN = 64
_ADDRESS_RE = re.compile(r"[0-9a-f]{40}")


class GenesisError(ConfigError):
    """A genesis file or value that breaks a rule; the message names the entry."""


@dataclass(frozen=True)
class GenesisValidator:
    """One member of the initial validator set."""

    name: str
    public_key: str  # 64 lowercase hex characters (Ed25519)
    power: int
    p2p: str  # host:port the validator's peer listener binds

    @property
    def public_key_bytes(self) -> bytes:
        return bytes.fromhex(self.public_key)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "public_key": self.public_key, "power": self.power,
                "p2p": self.p2p}


@dataclass
class Genesis:
    """A chain's genesis: its id, start time, application, validators and balances."""

    chain_id: str
    genesis_time_ms: int
    app: str
    validators: list[GenesisValidator]
    allocations: dict[str, int] = field(default_factory=dict)

    @property
    def total_power(self) -> int:
        return sum(v.power for v in self.validators)

    def validator_by_key(self, public_key: bytes) -> GenesisValidator | None:
        hex_key = public_key.hex()
        return next((v for v in self.validators if v.public_key == hex_key), None)

    def validate(self) -> None:
        """Check every rule; raises GenesisError naming the field or validator at fault."""
        _check_str(self.chain_id, "chain_id")
        try:
            check_chain_id(self.chain_id)
        except ValueError as exc:
            raise GenesisError(f"chain_id: {exc}") from None
        if isinstance(self.genesis_time_ms, bool) or not isinstance(self.genesis_time_ms, int) \
                or self.genesis_time_ms < 0:
            raise GenesisError(
                f"genesis_time_ms must be an integer >= 0, got {self.genesis_time_ms!r}")
        if self.app not in APPS:
            raise GenesisError(f"app {self.app!r} is not one of {', '.join(APPS)}")
        if not self.validators:
            raise GenesisError("validators must list at least one validator")
        if len(self.validators) > MAX_VALIDATORS:
            raise GenesisError(f"{len(self.validators)} validators; at most {MAX_VALIDATORS}")
        keys: set[str] = set()
        names: set[str] = set()
        for i, v in enumerate(self.validators):
            _validate_validator(i, v)
            if v.public_key in keys:
                raise GenesisError(f"validator {i} ({v.name}): public key {v.public_key} "
                                   "is listed twice")
            if v.name in names:
                raise GenesisError(f"validator {i}: name {v.name!r} is listed twice")
            keys.add(v.public_key)
            names.add(v.name)
        if self.total_power > MAX_TOTAL_POWER:
            raise GenesisError(f"total power {self.total_power} exceeds {MAX_TOTAL_POWER}")
        if not isinstance(self.allocations, Mapping):
            raise GenesisError("allocations must be an object of address -> amount")
        if self.allocations and self.app != "bank":
            raise GenesisError(f"allocations are for the bank app; this chain runs {self.app!r}")
        for address, amount in self.allocations.items():
            if not isinstance(address, str) or not _ADDRESS_RE.fullmatch(address):
                raise GenesisError(
                    f"allocation address {address!r} is not 40 lowercase hex characters")
            if isinstance(amount, bool) or not isinstance(amount, int) \
                    or not 0 < amount <= MAX_AMOUNT:
                raise GenesisError(
                    f"allocation to {address}: amount {amount!r} must be an integer in "
                    f"1..{MAX_AMOUNT}")

    def check_config(self, cfg: NodeConfig) -> None:
        """Raise GenesisError unless `cfg` is for this chain (same chain id and app)."""
        if cfg.node.chain_id != self.chain_id:
            raise GenesisError(f"config chain_id {cfg.node.chain_id!r} differs from genesis "
                               f"chain_id {self.chain_id!r}")
        if cfg.node.app != self.app:
            raise GenesisError(f"config app {cfg.node.app!r} differs from genesis app "
                               f"{self.app!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "genesis_time_ms": self.genesis_time_ms,
            "app": self.app,
            "validators": [v.to_json() for v in self.validators],
            "allocations": dict(self.allocations),
        }

    @classmethod
    def from_json(cls, doc: Any) -> Genesis:
        """Build and validate a Genesis from a decoded JSON document."""
        if not isinstance(doc, dict):
            raise GenesisError("genesis must be a JSON object")
        _reject_unknown(doc, ("chain_id", "genesis_time_ms", "app", "validators",
                              "allocations"), "genesis")
        for key in ("chain_id", "genesis_time_ms", "app", "validators"):
            if key not in doc:
                raise GenesisError(f"genesis is missing {key!r}")
        raw_validators = doc["validators"]
        if not isinstance(raw_validators, list):
            raise GenesisError("validators must be a list")
        validators = []
        for i, raw in enumerate(raw_validators):
            if not isinstance(raw, dict):
                raise GenesisError(f"validator {i} must be an object")
            _reject_unknown(raw, ("name", "public_key", "power", "p2p"), f"validator {i}")
            for key in ("name", "public_key", "power", "p2p"):
                if key not in raw:
                    raise GenesisError(f"validator {i} is missing {key!r}")
            validators.append(GenesisValidator(raw["name"], raw["public_key"], raw["power"],
                                               raw["p2p"]))
        allocations = doc.get("allocations", {})
        if not isinstance(allocations, dict):
            raise GenesisError("allocations must be an object of address -> amount")
        genesis = cls(doc["chain_id"], doc["genesis_time_ms"], doc["app"], validators,
                      dict(allocations))
        genesis.validate()
        return genesis

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"


def load_genesis(path: str | os.PathLike[str]) -> Genesis:
    """Read and validate a genesis file; errors name the file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise GenesisError(f"{path} does not exist") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise GenesisError(f"{path} is not valid JSON: {exc}") from None
    try:
        return Genesis.from_json(doc)
    except GenesisError as exc:
        raise GenesisError(f"{path}: {exc}") from None


def save_genesis(genesis: Genesis, path: str | os.PathLike[str]) -> None:
    """Validate and write `genesis` as JSON (atomically)."""
    genesis.validate()
    atomic_write(Path(path), genesis.dumps().encode())


def _check_str(value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise GenesisError(f"{where} must be a string, got {value!r}")


def _reject_unknown(doc: dict, known: tuple[str, ...], where: str) -> None:
    for key in doc:
        if key not in known:
            raise GenesisError(f"unknown key {key!r} in {where} (known keys: {', '.join(known)})")


def _validate_validator(i: int, v: GenesisValidator) -> None:
    _check_str(v.name, f"validator {i} name")
    if not 1 <= len(v.name) <= MAX_NAME_LEN:
        raise GenesisError(f"validator {i}: name must be 1..{MAX_NAME_LEN} characters")
    where = f"validator {i} ({v.name})"
    try:
        parse_public_key_hex(v.public_key)
    except ValueError as exc:
        raise GenesisError(f"{where}: {exc}") from None
    if isinstance(v.power, bool) or not isinstance(v.power, int):
        raise GenesisError(f"{where}: power must be an integer, got {v.power!r}")
    if not 0 < v.power <= MAX_POWER:
        raise GenesisError(f"{where}: power {v.power} must be in 1..{MAX_POWER}")
    try:
        parse_host_port(v.p2p)
    except ValueError as exc:
        raise GenesisError(f"{where}: p2p: {exc}") from None


__all__ = [
    "MAX_AMOUNT",
    "MAX_POWER",
    "MAX_TOTAL_POWER",
    "MAX_VALIDATORS",
    "Genesis",
    "GenesisError",
    "GenesisValidator",
    "load_genesis",
    "save_genesis",
]
