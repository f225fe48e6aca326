"""A node's configuration: `config.toml` in the node's home directory.

A home directory holds everything one validator needs::

    DIR/config.toml      this file's settings (`NodeConfig`)
    DIR/genesis.json     the chain's genesis (`node.genesis.Genesis`)
    DIR/node_key.json    the validator's Ed25519 key, mode 0600 (`crypto.keys`)
    DIR/data/            LMDB: blocks, certificates, tx index, app and safety state
    DIR/node.log         the node's log

Every setting has a default, so a config file only needs what differs. Loading
is strict: an unknown section or key is an error that names it (a misspelt
``timeout_propose`` silently ignored is a timeout you think you changed), and
every value is type- and range-checked before the node sees it.

The settings, their types, defaults, bounds and documentation are declared
once, on the dataclasses below; `render_config` turns them into the commented
TOML of ``configs/node.toml`` and of the ``config.toml`` that ``bftnode init``
writes, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.toml"
GENESIS_FILE = "genesis.json"
NODE_KEY_FILE = "node_key.json"
DATA_DIR = "data"
LOG_FILE = "node.log"

RUNTIMES = ("ray", "inprocess")
APPS = ("kvstore", "bank")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
BYZANTINE_MODES = ("", "equivocate", "silent")

MAX_CHAIN_ID_LEN = 64  # node.tx.MAX_CHAIN_ID_LEN: a tx names its chain in at most 64 chars
_CHAIN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_KIB = 1024
_MIB = 1024 * 1024
_GIB = 1024 * _MIB


class ConfigError(ValueError):
    """A config file or value that breaks a rule; the message names the key and the rule."""


# --- address parsing (shared with genesis and localnet) ---------------------------------


@dataclass(frozen=True)
class PeerAddress:
    """One entry of ``[p2p] peers``: who the peer is and where to dial it."""

    public_key: bytes
    host: str
    port: int

    @property
    def hostport(self) -> str:
        return format_host_port(self.host, self.port)

    def __str__(self) -> str:
        return f"{self.public_key.hex()}@{self.hostport}"


def parse_host_port(value: str, *, allow_port_zero: bool = False) -> tuple[str, int]:
    """Split ``host:port`` (``[v6addr]:port`` for IPv6); raises ValueError naming the rule."""
    if not isinstance(value, str):
        raise ValueError(f"expected a 'host:port' string, got {type(value).__name__}")
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep or ":" not in host:
            raise ValueError(f"{value!r} is not '[ipv6]:port'")
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{value!r} is not 'host:port'")
        if not _HOSTNAME_RE.fullmatch(host):
            raise ValueError(f"{value!r}: {host!r} is not a valid host name or IPv4 address")
    if not port_text.isdigit():
        raise ValueError(f"{value!r}: port {port_text!r} is not a number")
    port = int(port_text)
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"{value!r}: port {port} is not in {low}..65535")
    return host, port


def format_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_public_key_hex(value: str) -> bytes:
    """A 32-byte Ed25519 public key from 64 lowercase hex characters."""
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(f"{value!r} is not a public key: expected 64 lowercase hex characters")
    return bytes.fromhex(value)


def parse_peer(value: str) -> PeerAddress:
    """``"<public key hex>@host:port"`` -> PeerAddress; raises ValueError naming the rule."""
    if not isinstance(value, str):
        raise ValueError(f"a peer must be a string, got {type(value).__name__}")
    key_text, sep, hostport = value.partition("@")
    if not sep:
        raise ValueError(f"peer {value!r} is not '<public key hex>@host:port'")
    try:
        public_key = parse_public_key_hex(key_text)
        host, port = parse_host_port(hostport)
    except ValueError as exc:
        raise ValueError(f"peer {value!r}: {exc}") from None
    return PeerAddress(public_key, host, port)


def check_chain_id(value: str) -> None:
    if not 1 <= len(value) <= MAX_CHAIN_ID_LEN or not _CHAIN_ID_RE.fullmatch(value):
        raise ValueError(
            f"chain id {value!r} must be 1..{MAX_CHAIN_ID_LEN} characters of letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )


def _check_listen(value: str) -> None:
    parse_host_port(value, allow_port_zero=True)


def _check_peers(value: list[str]) -> None:
    seen: set[bytes] = set()
    for entry in value:
        peer = parse_peer(entry)
        if peer.public_key in seen:
            raise ValueError(f"peer {peer.public_key.hex()} is listed twice")
        seen.add(peer.public_key)


def _check_ray_address(value: str) -> None:
    if value:
        parse_host_port(value)


def _check_namespace(value: str) -> None:
    if value and not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", value):
        raise ValueError(f"namespace {value!r} must be 1..128 of letters, digits, '_', '.', '-'")


def _check_resources(value: dict[str, float]) -> None:
    for name, amount in value.items():
        if not name:
            raise ValueError("a resource name must not be empty")
        if not math.isfinite(amount) or amount < 0:
            raise ValueError(f"resource {name!r} = {amount} must be a finite number >= 0")


# --- declaring settings -----------------------------------------------------------------


def setting(
    default: Any,
    doc: str,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[Any, ...] | None = None,
    check: Callable[[Any], None] | None = None,
) -> Any:
    """A config field: its default, its documentation and the rule its value must follow."""
    meta = {"doc": doc, "low": low, "high": high, "choices": choices, "check": check}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class NodeSection:
    """[node]: identity of the node and of the chain, what it runs and how."""

    chain_id: str = setting(
        "bftnode", "The chain this node belongs to; must equal genesis.json's chain_id.",
        check=check_chain_id,
    )
    moniker: str = setting(
        "node", "A human-readable name for logs and status; not part of consensus.",
        check=lambda v: _check_len(v, 1, 64),
    )
    runtime: str = setting(
        "ray",
        'Where the node\'s actors run: "ray" (Ray actors, one process each, placeable on '
        'other machines) or "inprocess" (all in the supervisor process; for tests).',
        choices=RUNTIMES,
    )
    app: str = setting(
        "kvstore", 'The application: "kvstore" or "bank"; must equal genesis.json\'s app.',
        choices=APPS,
    )
    log_level: str = setting("INFO", "Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL.",
                             choices=LOG_LEVELS)
    byzantine: str = setting(
        "",
        'Tester mode, never on a real validator: "" (honest), "equivocate" (signs '
        'conflicting proposals and votes) or "silent" (sends no consensus messages).',
        choices=BYZANTINE_MODES,
    )


@dataclass
class P2PSection:
    """[p2p]: authenticated, encrypted TCP links to the other validators."""

    listen: str = setting(
        "127.0.0.1:26656",
        "Address the peer listener binds (host:port). Use a routable address to accept "
        "peers from other machines.",
        check=_check_listen,
    )
    peers: list[str] = setting(
        [],
        'Peers to dial: "<ed25519 public key hex>@host:port". Only keys in the validator '
        "set (or this list) may connect.",
        check=_check_peers,
    )
    max_frame_bytes: int = setting(
        4 * _MIB, "Largest frame accepted on a link; a larger frame closes the link.",
        low=64 * _KIB, high=64 * _MIB,
    )
    send_queue_len: int = setting(
        4096, "Most outgoing messages queued on one peer link.",
        low=16, high=1 << 20,
    )
    handshake_timeout_s: float = setting(
        5.0, "Seconds a new link has to finish the handshake.", low=0.1, high=300.0,
    )
    max_connections: int = setting(
        64, "Most peer links (inbound and outbound) open at once.", low=1, high=65535,
    )
    reconnect_max_s: float = setting(
        5.0, "Ceiling of the exponential back-off between redials of a lost peer.",
        low=0.1, high=3600.0,
    )


@dataclass
class RPCSection:
    """[rpc]: the HTTP API (/v1/txs, /v1/status, /v1/blocks, /v1/events, /metrics)."""

    listen: str = setting(
        "127.0.0.1:26657", "Address the HTTP API binds (host:port).", check=_check_listen,
    )
    max_body_bytes: int = setting(
        1 * _MIB, "Largest request body accepted.", low=1 * _KIB, high=1 * _GIB,
    )
    max_connections: int = setting(
        1024, "Most client connections open at once.", low=1, high=1_000_000,
    )
    wait_timeout_s: float = setting(
        30.0, "Longest a POST /v1/txs?wait=commit waits before answering 504.",
        low=0.1, high=3600.0,
    )
    fast_path: bool = setting(
        True, "Answer plain POST /v1/txs (no query, a Content-Length body) on the "
        "connection itself instead of through aiohttp: the same answers for a fraction of "
        "the CPU. Off only to compare.",
    )


@dataclass
class MempoolSection:
    """[mempool]: pending transactions and the batches gossiped to peers."""

    max_txs: int = setting(200_000, "Most pending transactions held.", low=1, high=100_000_000)
    max_bytes: int = setting(
        256 * _MIB, "Most bytes of pending transactions held.", low=1 * _KIB, high=64 * _GIB,
    )
    max_tx_bytes: int = setting(
        64 * _KIB,
        "Largest transaction this node admits from its clients. Peers' batches and blocks "
        "are decoded under the protocol's own fixed limit, so validators may differ here.",
        low=128, high=4 * _MIB,
    )
    batch_max_txs: int = setting(
        2000, "A batch is sealed when it holds this many transactions (at most the "
        "protocol's 100,000)...", low=1, high=1_000_000,
    )
    batch_max_bytes: int = setting(
        4_000_000, "...or this many bytes of encoded transactions (leaving 64 KiB of room "
        "under both [p2p] max_frame_bytes and the protocol's 4 MiB batch limit)...",
        low=1 * _KIB, high=64 * _MIB,
    )
    batch_timeout_ms: int = setting(
        20,
        "...or when its intake round ends: clients' txs and peers' batches are gathered for "
        "at most this long after the first arrival (less once 64 txs wait), then verified, "
        "admitted and sealed in one mempool call.",
        low=1, high=60_000,
    )
    max_verify_wait_ms: int = setting(
        1000,
        "Backpressure: clients' transactions are refused (503, node busy) while a peer's "
        "batch has waited longer than this to be verified: the node is behind the network's "
        "rate, and every tx admitted then would lengthen every validator's queue (and "
        "finality). A client must then retry (node.client does; a refused tx leaves a gap "
        "in its sender's nonces until it is sent again). 0: off.",
        low=0, high=600_000,
    )


@dataclass
class ConsensusSection:
    """[consensus]: Tendermint round timeouts (each grows by timeout_delta_ms per round)."""

    timeout_propose_ms: int = setting(
        1000, "Wait for the round's proposal before prevoting nil.", low=1, high=600_000,
    )
    timeout_prevote_ms: int = setting(
        500, "Wait after 2f+1 mixed prevotes before precommitting nil.", low=1, high=600_000,
    )
    timeout_precommit_ms: int = setting(
        500, "Wait after 2f+1 mixed precommits before the next round.", low=1, high=600_000,
    )
    timeout_delta_ms: int = setting(
        500, "Added to every timeout per round, so a slow network eventually keeps up.",
        low=0, high=600_000,
    )
    block_interval_ms: int = setting(
        20, "Least time from one commit to the next proposal; 0 starts the next height as "
        "soon as one commits. Heights back to back keep a busy machine's cores saturated "
        "with near-empty blocks; 20 gave lower CPU per tx and equal or lower finality on "
        "the 2-core bench machine (docs/BENCHMARKS.md). Where cores idle, or with one "
        "validator, 0 is lowest.",
        low=0, high=3_600_000,
    )
    empty_block_interval_ms: int = setting(
        500, "When no transactions wait, the proposer makes an empty block only after this "
        "long (keep it below timeout_propose_ms, or the others give up on the proposer); "
        "a batch arriving earlier is proposed at once.",
        low=0, high=3_600_000,
    )
    max_block_batches: int = setting(
        1000, "Most mempool batches (digests) one block orders.", low=1, high=10_000,
    )
    max_block_txs: int = setting(
        10_000, "Most transactions a proposer orders in one block, summed over its "
        "batches (a larger batch still goes alone): bounds one block's execution time "
        "under load. Not a validity rule: a block over it from another proposer is "
        "accepted.", low=1, high=10_000_000,
    )


@dataclass
class RaySection:
    """[ray]: where the actors run when [node] runtime = "ray"."""

    address: str = setting(
        "",
        'Empty: start a private local Ray bound to 127.0.0.1 for this node. "host:port": '
        "join that existing cluster (your own trusted network only: whoever reaches a "
        "Ray cluster can run code on it).",
        check=_check_ray_address,
    )
    namespace: str = setting(
        "", 'Ray namespace of the node\'s named actors; empty: "bftnode-<node id>".',
        check=_check_namespace,
    )
    verifier_actors: int = setting(
        1,
        "Signature-verifier actors in the pool, called by the mempool actor; each one uses "
        "every core of its machine. 0: the mempool verifies in its own process (one actor "
        "process and one call hop less; for a one-machine validator).",
        low=0, high=1024,
    )
    include_dashboard: bool = setting(False, "Start the Ray dashboard (private Ray only).")
    consensus_in_supervisor: bool = setting(
        True,
        "Host the consensus engine (ConsensusHost) in the supervisor's process instead of "
        "a Ray actor of its own. Its calls are many, small and on the critical path of "
        "every height (proposal, votes, commit), and each Ray call costs about a "
        "millisecond of CPU and a process wake-up; its own work is light. false: a Ray "
        "actor of its own.",
    )
    mempool_in_supervisor: bool = setting(
        True,
        "Host the mempool in the supervisor's process instead of a Ray actor of its own; "
        "its rounds (decode, admit, seal) run on a worker thread there and it still calls "
        "the verifier actors. It is on every transaction's path twice (the receiving "
        "node's round and each peer's), and on the commit path (get_batches, committed): "
        "three Ray hops and process wake-ups less per round or block. false: a Ray actor, "
        "which mempool_resources can place on another raylet.",
    )
    executor_in_supervisor: bool = setting(
        True,
        "Host the Executor in the supervisor's process instead of a Ray actor of its "
        "own; each block executes on a worker thread there. It is on every block's "
        "critical path (the next proposal waits for its app hash), and each Ray call "
        "costs a millisecond or more of CPU on each side plus a process wake-up, per "
        "block. It then shares the supervisor's GIL with the HTTP API and the mempool. "
        "false: a Ray actor, like the block store and the verifiers.",
    )
    mempool_resources: dict[str, float] = setting(
        {},
        'Custom Ray resources the mempool actor requires, e.g. { mempool_host = 1 }, to '
        "place it on another raylet (with mempool_in_supervisor = false).",
        check=_check_resources,
    )
    verifier_resources: dict[str, float] = setting(
        {}, "Custom Ray resources each verifier actor requires.", check=_check_resources,
    )

    def namespace_for(self, node_id: str) -> str:
        """The namespace to use: the configured one, else ``bftnode-<node id>``."""
        return self.namespace or f"bftnode-{node_id}"


@dataclass
class StorageSection:
    """[storage]: the LMDB environment in DIR/data."""

    map_size_mb: int = setting(
        1024,
        "LMDB map size in MiB: the most the store can ever hold (address space, not disk "
        "reserved up front).",
        low=1, high=16 * 1024 * 1024,
    )


def _check_len(value: str, low: int, high: int) -> None:
    if not low <= len(value) <= high:
        raise ValueError(f"must be {low}..{high} characters, got {len(value)}")


SECTIONS: dict[str, type] = {
    "node": NodeSection,
    "p2p": P2PSection,
    "rpc": RPCSection,
    "mempool": MempoolSection,
    "consensus": ConsensusSection,
    "ray": RaySection,
    "storage": StorageSection,
}


@dataclass
class NodeConfig:
    """All of a node's settings, one attribute per TOML section; `home` is where it lives."""

    node: NodeSection = field(default_factory=NodeSection)
    p2p: P2PSection = field(default_factory=P2PSection)
    rpc: RPCSection = field(default_factory=RPCSection)
    mempool: MempoolSection = field(default_factory=MempoolSection)
    consensus: ConsensusSection = field(default_factory=ConsensusSection)
    ray: RaySection = field(default_factory=RaySection)
    storage: StorageSection = field(default_factory=StorageSection)
    home: Path | None = field(default=None, compare=False)

    # Paths inside the home directory.

    @property
    def config_path(self) -> Path:
        return self._home() / CONFIG_FILE

    @property
    def genesis_path(self) -> Path:
        return self._home() / GENESIS_FILE

    @property
    def node_key_path(self) -> Path:
        return self._home() / NODE_KEY_FILE

    @property
    def data_dir(self) -> Path:
        return self._home() / DATA_DIR

    @property
    def log_path(self) -> Path:
        return self._home() / LOG_FILE

    def _home(self) -> Path:
        if self.home is None:
            raise ConfigError("this config has no home directory (load it with load_config)")
        return self.home

    def peer_addresses(self) -> list[PeerAddress]:
        return [parse_peer(p) for p in self.p2p.peers]

    def validate(self) -> None:
        """Check every value and the rules between values; raises ConfigError."""
        for name in SECTIONS:
            _validate_section(name, getattr(self, name))
        if self.mempool.max_tx_bytes > self.mempool.batch_max_bytes:
            raise ConfigError(
                f"[mempool] max_tx_bytes = {self.mempool.max_tx_bytes} exceeds batch_max_bytes"
                f" = {self.mempool.batch_max_bytes}: a transaction must fit in a batch"
            )
        if self.mempool.batch_max_bytes > self.p2p.max_frame_bytes - 64 * _KIB:
            raise ConfigError(
                f"[mempool] batch_max_bytes = {self.mempool.batch_max_bytes} must leave 64 KiB "
                f"of framing room under [p2p] max_frame_bytes = {self.p2p.max_frame_bytes}: "
                "a batch is gossiped in one frame"
            )
        # Peers' mempools, every executor and the block store decode a batch under the
        # protocol's fixed limits, whatever this node's own settings: a batch over them
        # would be refused by its peers and would halt any node whose block named it.
        from node.tx import DEFAULT_MAX_BATCH_BYTES, MAX_BATCH_TXS
        if self.mempool.batch_max_txs > MAX_BATCH_TXS:
            raise ConfigError(
                f"[mempool] batch_max_txs = {self.mempool.batch_max_txs} exceeds the "
                f"protocol's {MAX_BATCH_TXS} transactions per batch"
            )
        if self.mempool.batch_max_bytes > DEFAULT_MAX_BATCH_BYTES - 64 * _KIB:
            raise ConfigError(
                f"[mempool] batch_max_bytes = {self.mempool.batch_max_bytes} must leave 64 KiB "
                f"under the protocol's {DEFAULT_MAX_BATCH_BYTES}-byte batch limit"
            )
        if self.mempool.max_tx_bytes > self.rpc.max_body_bytes:
            raise ConfigError(
                f"[mempool] max_tx_bytes = {self.mempool.max_tx_bytes} exceeds [rpc] "
                f"max_body_bytes = {self.rpc.max_body_bytes}: such a tx could not be submitted"
            )
        c = self.consensus
        if max(c.block_interval_ms, c.empty_block_interval_ms) >= c.timeout_propose_ms:
            raise ConfigError(
                f"[consensus] block_interval_ms = {c.block_interval_ms} and "
                f"empty_block_interval_ms = {c.empty_block_interval_ms} must stay below "
                f"timeout_propose_ms = {c.timeout_propose_ms}: the other validators would give "
                "up on a proposer that is only pacing"
            )
        if self.ray.mempool_in_supervisor and self.ray.mempool_resources:
            raise ConfigError(
                "[ray] mempool_resources places the mempool actor on a raylet, but "
                "mempool_in_supervisor = true hosts it in the supervisor: set "
                "mempool_in_supervisor = false to use mempool_resources"
            )
        if self.p2p.listen == self.rpc.listen and not self.p2p.listen.endswith(":0"):
            raise ConfigError(f"[p2p] listen and [rpc] listen are both {self.p2p.listen}")


# --- validation -------------------------------------------------------------------------


def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(section: str, f: dataclasses.Field, hint: Any, value: Any) -> Any:
    """Check `value` against the field's type; return it normalized (int -> float...)."""
    where = f"[{section}] {f.name}"
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be finite, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings, got {value!r}")
        return list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table of name = number, got {value!r}")
        out = {}
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{where}: {k!r} must be a number, got {v!r}")
            out[str(k)] = float(v)
        return out
    raise TypeError(f"unsupported config type {hint!r} for {where}")


def _validate_value(section: str, f: dataclasses.Field, value: Any) -> None:
    where = f"[{section}] {f.name}"
    meta = f.metadata
    if meta.get("choices") is not None and value not in meta["choices"]:
        options = ", ".join(repr(c) for c in meta["choices"])
        raise ConfigError(f"{where} = {value!r} is not one of {options}")
    low, high = meta.get("low"), meta.get("high")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{where} = {value!r} is out of range: must be in {low}..{high}")
    if meta.get("check") is not None:
        try:
            meta["check"](value)
        except ValueError as exc:
            raise ConfigError(f"{where} = {_toml_value(value)}: {exc}") from None


def _validate_section(name: str, section: Any) -> None:
    hints = _type_hints(type(section))
    for f in dataclasses.fields(section):
        value = _coerce(name, f, hints[f.name], getattr(section, f.name))
        _validate_value(name, f, value)


def config_from_dict(data: Mapping[str, Any], *, source: str = "config") -> NodeConfig:
    """Build and validate a NodeConfig from parsed TOML; unknown sections or keys are errors."""
    try:
        return _config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _config_from_dict(data: Mapping[str, Any]) -> NodeConfig:
    for name in data:
        if name not in SECTIONS:
            known = ", ".join(f"[{s}]" for s in SECTIONS)
            raise ConfigError(f"unknown section [{name}] (known sections: {known})")
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        raw = data.get(name, {})
        if not isinstance(raw, Mapping):
            raise ConfigError(f"[{name}] must be a table, got {raw!r}")
        hints = _type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, value in raw.items():
            if key not in fields:
                raise ConfigError(
                    f"unknown key {key!r} in [{name}] (known keys: {', '.join(fields)})"
                )
            values[key] = _coerce(name, fields[key], hints[key], value)
        sections[name] = cls(**values)
    cfg = NodeConfig(**sections)
    cfg.validate()
    return cfg


def config_to_dict(cfg: NodeConfig) -> dict[str, dict[str, Any]]:
    """The config as plain TOML-able tables (without `home`)."""
    return {name: dataclasses.asdict(getattr(cfg, name)) for name in SECTIONS}


def apply_overrides(cfg: NodeConfig, overrides: Mapping[str, Mapping[str, Any]],
                    *, source: str = "overrides") -> NodeConfig:
    """A copy of `cfg` with `overrides` (same shape as the TOML) applied, re-validated."""
    data = config_to_dict(cfg)
    for section, values in overrides.items():
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: [{section}] must be a table")
        data.setdefault(section, {}).update(values)
    out = config_from_dict(data, source=source)
    out.home = cfg.home
    return out


# --- files ------------------------------------------------------------------------------


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a TOML file; a missing file or a syntax error is a ConfigError naming it."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def load_config(home: str | os.PathLike[str]) -> NodeConfig:
    """Read and validate ``home/config.toml``."""
    path = Path(home) / CONFIG_FILE
    if not path.exists():
        raise ConfigError(f"no config at {path} (run: bftnode init --home {home})")
    cfg = config_from_dict(read_toml(path), source=str(path))
    cfg.home = Path(home)
    return cfg


def write_config(home: str | os.PathLike[str], cfg: NodeConfig) -> Path:
    """Validate `cfg` and write it, documented, to ``home/config.toml`` (atomically)."""
    cfg.validate()
    path = Path(home) / CONFIG_FILE
    atomic_write(path, render_config(cfg).encode())
    return path


def atomic_write(path: Path, body: bytes, mode: int = 0o644) -> None:
    """Write `body` to `path` through a synced temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


# --- the TOML writer --------------------------------------------------------------------

_HEADER = """\
# bftnode validator node configuration.
#
# Lives at <home>/config.toml next to genesis.json, node_key.json (mode 0600),
# data/ (LMDB) and node.log. Every setting below shows its default; a key left
# out takes its default, and an unknown key is an error. Durations carry their
# unit in the name (_ms, _s); sizes are in bytes unless the name says otherwise.
"""


def render_config(cfg: NodeConfig, *, comments: bool = True) -> str:
    """`cfg` as TOML; with `comments`, each section and setting carries its documentation."""
    lines: list[str] = [_HEADER] if comments else []
    for name, cls in SECTIONS.items():
        section = getattr(cfg, name)
        if comments:
            about = (cls.__doc__ or "").split(": ", 1)[-1]
            lines.append(f"# {about[:1].upper()}{about[1:]}")
        lines.append(f"[{name}]")
        for f in dataclasses.fields(section):
            if comments:
                lines.extend(f"# {line}" for line in _wrap(f.metadata["doc"], 88))
            lines.append(f"{f.name} = {_toml_value(getattr(section, f.name))}")
        lines.append("")
    return "\n".join(lines)


def _wrap(text: str, width: int) -> list[str]:
    out, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return out + ([line] if line else [])


def _toml_string(value: str) -> str:
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_key(key: str) -> str:
    return key if _BARE_KEY_RE.fullmatch(key) else _toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"cannot write non-finite number {value!r}")
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }"
    raise ConfigError(f"cannot write {type(value).__name__} value {value!r} as TOML")


def render_overrides(overrides: Mapping[str, Mapping[str, Any]]) -> str:
    """Plain TOML for a partial config (sections of key = value), without comments."""
    lines = []
    for section, values in overrides.items():
        lines.append(f"[{section}]")
        lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in values.items())
        lines.append("")
    return "\n".join(lines)


__all__ = [
    "APPS",
    "BYZANTINE_MODES",
    "CONFIG_FILE",
    "DATA_DIR",
    "GENESIS_FILE",
    "LOG_FILE",
    "LOG_LEVELS",
    "NODE_KEY_FILE",
    "RUNTIMES",
    "SECTIONS",
    "ConfigError",
    "ConsensusSection",
    "MempoolSection",
    "NodeConfig",
    "NodeSection",
    "P2PSection",
    "PeerAddress",
    "RPCSection",
    "RaySection",
    "StorageSection",
    "apply_overrides",
    "atomic_write",
    "check_chain_id",
    "config_from_dict",
    "config_to_dict",
    "format_host_port",
    "load_config",
    "parse_host_port",
    "parse_peer",
    "parse_public_key_hex",
    "read_toml",
    "render_config",
    "render_overrides",
    "write_config",
]
