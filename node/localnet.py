"""A local multi-validator network on one machine, for testers and benchmarks.

``bftnode localnet up --validators N --dir DIR`` lays out::

    DIR/localnet.json        what runs where (`Localnet`; format below)
    DIR/node0 .. nodeN-1     one node home each (node.config): key, config, genesis

every config from the defaults, then the localnet preset
(``configs/localnet.toml``, or `LOCALNET_PRESET` where the package is installed
without it), then the node's own ports and peers. All homes share one genesis
listing the N validators with power 10 each, in index order.

Ports. Each node gets a p2p and an RPC port on 127.0.0.1, tested free by
binding. They are drawn from 20000..32767, between Ray's worker port range
(10002..19999) and the kernel's ephemeral range (32768..60999), so neither a
Ray process nor an outgoing connection grabs one between this choice and the
node's bind. Ports chosen by this process are never chosen twice, and ports
held by a running localnet fail the bind test, so two localnets run at once.

Test accounts (bank app). Account i (0 <= i < LOCALNET_ACCOUNTS) is the
Ed25519 key with seed ``sha256(b"bftnode-localnet-account-%d" % i)``; genesis
gives each LOCALNET_ACCOUNT_BALANCE. `account_key(i)` rebuilds it, so a
benchmark or test client can spend from it. Public seeds: localnets only.

Processes. Each node runs ``python -m node start --home HOME`` in a new session
(its pid is the session id), with output appended to HOME/node.log, and with
``BFTNODE_NODE_HOME=HOME`` in its environment, which its Ray processes inherit:
`node.procs` finds a node's whole tree from those three facts even after its
supervisor died. A pid in localnet.json is trusted only while that process's
command line still names the node's home (pids are reused).

localnet.json::

    {"version": 1, "chain_id": str, "app": "kvstore"|"bank", "runtime": "ray"|"inprocess",
     "accounts": int,     # test accounts in genesis (bank), 0 for kvstore
     "nodes": [{"index": int, "home": abs path, "pid": int|null,
                "rpc": "http://127.0.0.1:PORT", "p2p": "127.0.0.1:PORT",
                "node_id": 40 hex, "public_key": 64 hex, "byzantine": ""|"equivocate"|"silent"}]}
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from crypto import PrivateKey, save_private_key, sha256
from node import procs, rayhead
from node.config import (
    GENESIS_FILE,
    LOG_FILE,
    NODE_KEY_FILE,
    NodeConfig,
    apply_overrides,
    load_config,
    read_toml,
    write_config,
)
from node.genesis import Genesis, GenesisValidator, save_genesis

LOCALNET_FILE = "localnet.json"
LOCALNET_VERSION = 1
NODE_HOME_ENV = "BFTNODE_NODE_HOME"
DEFAULT_CHAIN_ID = "bftnode-localnet"
VALIDATOR_POWER = 10
MAX_VALIDATORS = 64
LOCALNET_ACCOUNTS = 64
LOCALNET_ACCOUNT_BALANCE = 10**15
ACCOUNT_SEED_FORMAT = b"bftnode-localnet-account-%d"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
ORPHAN_GRACE_S = 3.0
STATUS_TIMEOUT_S = 2.0
PORT_RANGE = (20000, 32767)
PRESET_PATH = Path(__file__).resolve().parent.parent / "configs" / "localnet.toml"

# The localnet preset; configs/localnet.toml holds the same (a test keeps them equal).
LOCALNET_PRESET: dict[str, dict[str, Any]] = {
    "node": {"log_level": "INFO"},
    "mempool": {"max_txs": 100_000, "max_bytes": 64 * 1024 * 1024},
    "consensus": {"timeout_propose_ms": 1000, "timeout_prevote_ms": 500,
                  "timeout_precommit_ms": 500, "timeout_delta_ms": 500},
    "ray": {"verifier_actors": 0, "include_dashboard": False},
    "storage": {"map_size_mb": 256},
}


class LocalnetError(Exception):
    """A localnet command could not do what was asked; the message says why."""


class NodesNotReady(LocalnetError):
    """Some nodes did not answer /v1/status in time; `details` holds their log tails."""

    def __init__(self, message: str, details: str) -> None:
        super().__init__(message)
        self.details = details


def account_seed(i: int) -> bytes:
    """The seed of localnet test account `i` (module docstring)."""
    return sha256(ACCOUNT_SEED_FORMAT % i)


def account_key(i: int) -> PrivateKey:
    return PrivateKey(account_seed(i))


# --- localnet.json ----------------------------------------------------------------------


@dataclass
class LocalnetNode:
    index: int
    home: str
    rpc: str
    p2p: str
    node_id: str
    public_key: str
    byzantine: str = ""
    pid: int | None = None

    @property
    def marker(self) -> tuple[str, str]:
        """The environment entry every process of this node carries."""
        return (NODE_HOME_ENV, self.home)

    @property
    def log_path(self) -> Path:
        return Path(self.home) / LOG_FILE


@dataclass
class Localnet:
    dir: Path
    chain_id: str
    app: str
    runtime: str
    nodes: list[LocalnetNode] = field(default_factory=list)
    accounts: int = 0
    ray_head_pid: int | None = None

    def node(self, index: int) -> LocalnetNode:
        if not 0 <= index < len(self.nodes):
            raise LocalnetError(f"there is no node {index}: the localnet in {self.dir} has "
                                f"{len(self.nodes)} nodes (0..{len(self.nodes) - 1})")
        return self.nodes[index]

    def to_json(self) -> dict[str, Any]:
        return {"version": LOCALNET_VERSION, "chain_id": self.chain_id, "app": self.app,
                "runtime": self.runtime, "accounts": self.accounts,
                "ray_head_pid": self.ray_head_pid,
                "nodes": [asdict(n) for n in self.nodes]}

    def save(self) -> None:
        path = self.dir / LOCALNET_FILE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Localnet:
        directory = Path(directory).resolve()
        path = directory / LOCALNET_FILE
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise LocalnetError(f"no localnet in {directory} ({LOCALNET_FILE} is missing; "
                                "run: bftnode localnet up)") from None
        except ValueError as exc:
            raise LocalnetError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("version") != LOCALNET_VERSION:
            raise LocalnetError(f"{path}: not a version {LOCALNET_VERSION} localnet file")
        try:
            nodes = [LocalnetNode(**n) for n in doc["nodes"]]
            return cls(directory, doc["chain_id"], doc["app"], doc["runtime"], nodes,
                       doc.get("accounts", 0), doc.get("ray_head_pid"))
        except (KeyError, TypeError) as exc:
            raise LocalnetError(f"{path} is malformed: {exc}") from None


# --- generating the homes ---------------------------------------------------------------


class PortAllocator:
    """Free 127.0.0.1 TCP ports, never the same twice (see the module docstring)."""

    _taken: set[int] = set()  # across allocators: two localnets made by one process

    def __init__(self, port_range: tuple[int, int] = PORT_RANGE, rng: random.Random | None = None
                 ) -> None:
        self.low, self.high = port_range
        self.rng = rng or random.Random()

    def take(self) -> int:
        for _ in range(1000):
            port = self.rng.randint(self.low, self.high)
            if port not in PortAllocator._taken and _bindable(port):
                PortAllocator._taken.add(port)
                return port
        raise LocalnetError(f"found no free port in {self.low}..{self.high} on 127.0.0.1")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def load_preset() -> dict[str, Any]:
    """The localnet config overrides: configs/localnet.toml if present, else the built-in."""
    return read_toml(PRESET_PATH) if PRESET_PATH.exists() else LOCALNET_PRESET


def generate(
    directory: str | os.PathLike[str],
    validators: int,
    *,
    app: str = "kvstore",
    runtime: str = "ray",
    chain_id: str = DEFAULT_CHAIN_ID,
    byzantine: Mapping[int, str] | None = None,
    ports: PortAllocator | None = None,
    preset: Mapping[str, Any] | None = None,
    genesis_time_ms: int | None = None,
) -> Localnet:
    """Write N node homes, their shared genesis and localnet.json; start nothing.

    Refuses a `directory` that exists and is not empty. Every config is
    validated before the first file is written.
    """
    if not 1 <= validators <= MAX_VALIDATORS:
        raise LocalnetError(f"--validators must be in 1..{MAX_VALIDATORS}, got {validators}")
    byzantine = dict(byzantine or {})
    for index, mode in byzantine.items():
        if not 0 <= index < validators:
            raise LocalnetError(f"byzantine node {index} does not exist: there are "
                                f"{validators} nodes (0..{validators - 1})")
        if mode not in ("equivocate", "silent"):
            raise LocalnetError(f"byzantine mode {mode!r} is not 'equivocate' or 'silent'")
    root = Path(directory).resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        hint = (" (a localnet: run `bftnode localnet down` and remove it)"
                if (root / LOCALNET_FILE).exists() else "")
        raise LocalnetError(f"{root} exists and is not empty{hint}; choose a new --dir")
    ports = ports or PortAllocator()
    preset = load_preset() if preset is None else preset

    keys = [PrivateKey.generate() for _ in range(validators)]
    p2p = [f"127.0.0.1:{ports.take()}" for _ in range(validators)]
    rpc = [f"127.0.0.1:{ports.take()}" for _ in range(validators)]
    genesis = Genesis(
        chain_id=chain_id,
        genesis_time_ms=int(time.time() * 1000) if genesis_time_ms is None else genesis_time_ms,
        app=app,
        validators=[GenesisValidator(f"node{i}", k.public_key.hex(), VALIDATOR_POWER, p2p[i])
                    for i, k in enumerate(keys)],
        allocations=({account_key(i).address: LOCALNET_ACCOUNT_BALANCE
                      for i in range(LOCALNET_ACCOUNTS)} if app == "bank" else {}),
    )
    genesis.validate()
    configs = []
    for i in range(validators):
        cfg = apply_overrides(NodeConfig(), preset, source="localnet preset")
        cfg = apply_overrides(cfg, {
            "node": {"chain_id": chain_id, "moniker": f"node{i}", "runtime": runtime,
                     "app": app, "byzantine": byzantine.get(i, "")},
            "p2p": {"listen": p2p[i],
                    "peers": [f"{keys[j].public_key.hex()}@{p2p[j]}"
                              for j in range(validators) if j != i]},
            "rpc": {"listen": rpc[i]},
        }, source=f"node{i} config")
        genesis.check_config(cfg)
        configs.append(cfg)

    net = Localnet(root, chain_id, app, runtime,
                   accounts=LOCALNET_ACCOUNTS if app == "bank" else 0)
    root.mkdir(parents=True, exist_ok=True)
    for i, (key, cfg) in enumerate(zip(keys, configs, strict=True)):
        home = root / f"node{i}"
        home.mkdir()
        save_private_key(key, home / NODE_KEY_FILE)
        write_config(home, cfg)
        save_genesis(genesis, home / GENESIS_FILE)
        net.nodes.append(LocalnetNode(index=i, home=str(home), rpc=f"http://{rpc[i]}",
                                      p2p=p2p[i], node_id=key.address,
                                      public_key=key.public_key.hex(),
                                      byzantine=byzantine.get(i, "")))
    net.save()
    return net


# --- node processes ---------------------------------------------------------------------


def node_command(home: str) -> list[str]:
    """The command that runs one node (tests substitute a stand-in)."""
    return [sys.executable, "-m", "node", "start", "--home", home]


NodeCommand = Callable[[str], Sequence[str]]


# Nodes this process started, kept so their exit status is collected (no zombies).
_SPAWNED: dict[int, subprocess.Popen] = {}
_EXIT_CODES: dict[int, int] = {}


def _reap() -> None:
    for pid, proc in list(_SPAWNED.items()):
        if proc.poll() is not None:
            _EXIT_CODES[pid] = proc.returncode
            del _SPAWNED[pid]


def running_pid(node: LocalnetNode) -> int | None:
    """The node's supervisor pid if it is alive and still that node (not a reused pid).

    A node this process spawned is its child: until `_reap` collects its exit status
    the pid cannot be reused, so the child's own status answers, exactly. /proc is
    asked only about nodes started by another process (a pid read from the localnet
    file), which must still be alive and carry the node's home in their command line.
    """
    _reap()
    if node.pid is None:
        return None
    if node.pid in _SPAWNED:
        return node.pid
    if not procs.is_alive(node.pid):
        return None
    return node.pid if node.home in procs.cmdline(node.pid) else None


def spawn(node: LocalnetNode, command: NodeCommand | None = None) -> subprocess.Popen:
    """Start `node` in the background in its own session; records its pid (not saved).

    `command` maps the home to the argv to run; None means `node_command`.
    """
    command = command or node_command
    package_root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env[NODE_HOME_ENV] = node.home
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env["RAY_AUTH_MODE"] = "token"  # a localnet's shared Ray requires its token
    with open(node.log_path, "ab") as log:
        proc = subprocess.Popen(
            list(command(node.home)), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=node.home,
        )
    node.pid = proc.pid
    _SPAWNED[proc.pid] = proc
    return proc


def fetch_status(rpc: str, timeout: float = STATUS_TIMEOUT_S) -> dict[str, Any] | None:
    """GET rpc/v1/status as a dict, or None if the node does not answer in time."""
    try:
        with urllib.request.urlopen(f"{rpc}/v1/status", timeout=timeout) as resp:
            if resp.status != 200:
                return None
            doc = json.loads(resp.read())
            return doc if isinstance(doc, dict) else None
    except (OSError, ValueError, urllib.error.URLError):
        return None


def log_tail(node: LocalnetNode, lines: int = 20) -> list[str]:
    try:
        with open(node.log_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            return fh.read().decode(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return []


def wait_ready(nodes: Sequence[LocalnetNode], timeout: float = START_TIMEOUT_S,
               interval: float = 0.2) -> dict[int, str]:
    """Wait until every node answers /v1/status; {index: why not} for those that did not."""
    pending = {n.index: n for n in nodes}
    failed: dict[int, str] = {}

    def note_exited() -> None:
        for index, node in list(pending.items()):
            if running_pid(node) is None:
                code = _EXIT_CODES.get(node.pid or -1)
                failed[index] = ("exited during start" if code is None
                                 else f"exited with code {code} during start")
                del pending[index]

    deadline = time.monotonic() + timeout
    while pending:
        note_exited()
        for index, node in list(pending.items()):
            if fetch_status(node.rpc, timeout=min(STATUS_TIMEOUT_S, interval * 5)) is not None:
                del pending[index]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(interval)
    # A node that exits while the others are polled, just before the deadline, is
    # reported by its exit code rather than as merely silent.
    note_exited()
    for index in pending:
        failed[index] = f"did not answer GET /v1/status within {timeout:g} s"
    return failed


def _not_ready(net: Localnet, failed: Mapping[int, str], what: str) -> NodesNotReady:
    parts = []
    for index, reason in sorted(failed.items()):
        node = net.nodes[index]
        parts.append(f"node {index} ({node.rpc}) {reason}; last lines of {node.log_path}:")
        parts.extend(f"    {line}" for line in log_tail(node))
    return NodesNotReady(
        f"{what}: node(s) {', '.join(str(i) for i in sorted(failed))} failed to start "
        f"(logs above)", "\n".join(parts))


def up(directory: str | os.PathLike[str], validators: int, *, app: str = "kvstore",
       runtime: str = "ray", chain_id: str = DEFAULT_CHAIN_ID,
       byzantine: Mapping[int, str] | None = None, command: NodeCommand | None = None,
       timeout: float = START_TIMEOUT_S) -> Localnet:
    """Generate a localnet, start every node, return once all answer /v1/status.

    On failure every node is stopped, the homes stay for inspection, and
    NodesNotReady says which nodes failed with the tail of their logs.
    """
    net = generate(directory, validators, app=app, runtime=runtime, chain_id=chain_id,
                   byzantine=byzantine)
    try:
        try:
            if runtime == "ray" and command is None:
                ensure_ray_head(net)
            for node in net.nodes:
                spawn(node, command)
        finally:
            net.save()
        failed = wait_ready(net.nodes, timeout)
    except BaseException:  # Ctrl-C while starting: leave nothing running
        down(net)
        raise
    if failed:
        error = _not_ready(net, failed, f"localnet in {net.dir}")
        down(net)
        raise error
    return net


# --- the shared Ray of a Ray localnet ------------------------------------------------------

RAY_HEAD_ENV = "BFTNODE_LOCALNET_RAY"
RAY_HEAD_START_S = 90.0


def ray_head_running(net: Localnet) -> int | None:
    pid = net.ray_head_pid
    if pid is None or not procs.is_alive(pid) or "node.rayhead" not in procs.cmdline(pid):
        return None
    return pid


def ensure_ray_head(net: Localnet, timeout: float = RAY_HEAD_START_S) -> str:
    """Start the localnet's shared Ray (node.rayhead) unless it runs; point every node
    at it. Returns the Ray address."""
    head_file = net.dir / rayhead.HEAD_FILE
    if ray_head_running(net) is None:
        head_file.unlink(missing_ok=True)
        env = dict(os.environ)
        env[RAY_HEAD_ENV] = str(net.dir)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [
            str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH")]))
        with open(net.dir / "ray-head.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "node.rayhead", "--dir", str(net.dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=env, cwd=net.dir)
        _SPAWNED[proc.pid] = proc
        net.ray_head_pid = proc.pid
        net.save()
        deadline = time.monotonic() + timeout
        while not head_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (net.dir / "ray-head.log").read_text(errors="replace")[-2000:]
                stop_ray_head(net)
                raise LocalnetError(f"the localnet's Ray did not start:\n{tail}")
            time.sleep(0.2)
    address = json.loads(head_file.read_text())["address"]
    for node in net.nodes:
        cfg = load_config(node.home)
        if cfg.ray.address != address:
            cfg.ray.address = address
            write_config(node.home, cfg)
    return address


def stop_ray_head(net: Localnet, timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop the shared Ray and every process of it (its tree, its session, its marker)."""
    pid = ray_head_running(net)
    marker = (RAY_HEAD_ENV, str(net.dir))
    if pid is not None:
        snapshot = procs.tree(pid, env=marker)
        os.kill(pid, signal.SIGTERM)
        procs.wait_dead([pid], timeout)
        procs.wait_dead(list(snapshot), ORPHAN_GRACE_S)
        left = {p: t for p, t in snapshot.items() if procs.same_process(p, t)}
        procs.signal_snapshot(left, signal.SIGKILL)
        procs.wait_dead(list(left), 5.0)
    left = procs.marked(marker)
    procs.signal_snapshot(left, signal.SIGKILL)
    procs.wait_dead(list(left), 5.0)
    net.ray_head_pid = None
    (net.dir / rayhead.HEAD_FILE).unlink(missing_ok=True)


def node_tree(node: LocalnetNode) -> dict[int, int]:
    """Every process of `node` now: {pid: start time} (see node.procs)."""
    pid = running_pid(node)
    if pid is not None:
        return procs.tree(pid, env=node.marker)
    return procs.marked(node.marker)


def _kill_all(node: LocalnetNode) -> int:
    """SIGKILL every process left of `node` (frozen first); how many were killed."""
    pid = running_pid(node)

    def collect(stats: dict[int, procs.ProcStat]) -> dict[int, int]:
        if pid is not None:
            return procs.tree(pid, env=node.marker, stats=stats)
        return procs.marked(node.marker, stats)

    snap = procs.freeze(collect)
    hit = procs.signal_snapshot(snap, signal.SIGKILL)
    procs.wait_dead(hit, 5.0)
    return len(hit)


def stop(nodes: Sequence[LocalnetNode], *, timeout: float = STOP_TIMEOUT_S,
         grace: float = ORPHAN_GRACE_S) -> None:
    """SIGTERM each node's supervisor; after `timeout`, SIGKILL whatever is left of it.

    A paused node is continued after the SIGTERM, or it could never act on it.
    Once the supervisors are gone, their Ray processes get `grace` seconds to
    follow (fate-sharing) before they are killed too.
    """
    supervisors = []
    for node in nodes:
        pid = running_pid(node)
        if pid is None:
            continue
        snapshot = node_tree(node)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        procs.signal_snapshot(snapshot, signal.SIGCONT)
        supervisors.append(pid)
    procs.wait_dead(supervisors, timeout)
    deadline = time.monotonic() + grace
    for node in nodes:
        left = list(node_tree(node)) if running_pid(node) is None else []
        procs.wait_dead(left, max(0.0, deadline - time.monotonic()))
        _kill_all(node)


def down(net: Localnet, *, timeout: float = STOP_TIMEOUT_S, grace: float = ORPHAN_GRACE_S
         ) -> None:
    """Stop every node of `net` and leave no process of theirs behind."""
    stop(net.nodes, timeout=timeout, grace=grace)
    for node in net.nodes:
        node.pid = None
    stop_ray_head(net, timeout=timeout)
    net.save()


def kill(net: Localnet, index: int, *, grace: float = ORPHAN_GRACE_S) -> int:
    """SIGKILL node `index`'s supervisor (a crash), then reap its orphans; how many."""
    node = net.node(index)
    pid = _require_running(node)
    os.kill(pid, signal.SIGKILL)
    procs.wait_dead([pid], 5.0)
    procs.wait_dead(list(procs.marked(node.marker)), grace)
    return _kill_all(node)


def restart(net: Localnet, index: int, *, command: NodeCommand | None = None,
            timeout: float = START_TIMEOUT_S) -> LocalnetNode:
    """(Stop and) start node `index` with the same home; returns once it answers."""
    node = net.node(index)
    if running_pid(node) is not None:
        stop([node])
    else:
        _kill_all(node)
    if net.runtime == "ray" and command is None:
        ensure_ray_head(net)
    spawn(node, command)
    net.save()
    failed = wait_ready([node], timeout)
    if failed:
        error = _not_ready(net, failed, f"restart of node {index}")
        stop([node])
        raise error
    return node


def pause(net: Localnet, index: int) -> int:
    """SIGSTOP every process of node `index`; how many were stopped."""
    node = net.node(index)
    pid = _require_running(node)
    return len(procs.freeze(lambda stats: procs.tree(pid, env=node.marker, stats=stats)))


def resume(net: Localnet, index: int) -> int:
    """SIGCONT every process of node `index`; how many were continued."""
    node = net.node(index)
    _require_running(node)
    return len(procs.signal_snapshot(node_tree(node), signal.SIGCONT))


def isolate(net: Localnet, index: int) -> None:
    """Ask node `index` to cut all its peer links (SIGUSR1 to its supervisor)."""
    os.kill(_require_running(net.node(index)), signal.SIGUSR1)


def heal(net: Localnet, index: int) -> None:
    """Ask node `index` to restore its peer links (SIGUSR2 to its supervisor)."""
    os.kill(_require_running(net.node(index)), signal.SIGUSR2)


def _require_running(node: LocalnetNode) -> int:
    pid = running_pid(node)
    if pid is None:
        raise LocalnetError(f"node {node.index} is not running "
                            f"(start it with: bftnode localnet restart {node.index})")
    return pid


# --- status -----------------------------------------------------------------------------

STATUS_KEYS = ("index", "pid", "rpc", "p2p", "height", "app_hash", "peers", "up")


def _peer_count(value: Any) -> int | None:
    if isinstance(value, list):
        return len(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def node_status(node: LocalnetNode, timeout: float = STATUS_TIMEOUT_S) -> dict[str, Any]:
    """One row of `localnet status`: exactly STATUS_KEYS (peers as a count)."""
    pid = running_pid(node)
    doc = fetch_status(node.rpc, timeout) if pid is not None else None
    return {
        "index": node.index,
        "pid": node.pid,
        "rpc": node.rpc,
        "p2p": node.p2p,
        "height": doc.get("height") if doc else None,
        "app_hash": doc.get("app_hash") if doc else None,
        "peers": _peer_count(doc.get("peers")) if doc else None,
        "up": doc is not None,
    }


def status(net: Localnet, timeout: float = STATUS_TIMEOUT_S) -> list[dict[str, Any]]:
    """`node_status` of every node, queried in parallel."""
    with ThreadPoolExecutor(max_workers=min(16, len(net.nodes) or 1)) as pool:
        return list(pool.map(lambda n: node_status(n, timeout), net.nodes))


def state_of(node: LocalnetNode, row: Mapping[str, Any]) -> str:
    """A word for the status table: up, paused, unresponsive or down."""
    if row["up"]:
        return "up"
    pid = running_pid(node)
    if pid is None:
        return "down"
    return "paused" if procs.is_stopped(pid) else "unresponsive"


__all__ = [
    "ACCOUNT_SEED_FORMAT",
    "DEFAULT_CHAIN_ID",
    "LOCALNET_ACCOUNTS",
    "LOCALNET_ACCOUNT_BALANCE",
    "LOCALNET_FILE",
    "LOCALNET_PRESET",
    "NODE_HOME_ENV",
    "STATUS_KEYS",
    "Localnet",
    "LocalnetError",
    "LocalnetNode",
    "NodesNotReady",
    "PortAllocator",
    "account_key",
    "account_seed",
    "down",
    "fetch_status",
    "generate",
    "heal",
    "isolate",
    "kill",
    "node_status",
    "node_tree",
    "pause",
    "restart",
    "resume",
    "spawn",
    "status",
    "up",
    "wait_ready",
]
