"""node.procs on real process trees, and node.localnet: generation and the whole lifecycle.

The lifecycle test runs a stand-in node (FAKE_NODE below) instead of the real
one: a process that serves /v1/status on the configured RPC port, answers
SIGUSR1/SIGUSR2 like the node (isolate / heal), and, like a supervisor that
owns Ray, leaves processes behind: a child, a grandchild, and a daemon that
called setsid and was re-parented to init, which only the environment marker
still ties to its node.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crypto import load_private_key
from node import localnet, procs
from node.cli import main
from node.config import load_config
from node.genesis import load_genesis

MARK = "BFTNODE_TEST_MARK"


def _spawn(script: str, *, env_mark: str | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    if env_mark:
        env[MARK] = env_mark
    return subprocess.Popen(["sh", "-c", script], start_new_session=True, env=env)


def _wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


# --- procs ------------------------------------------------------------------------------


def test_descendants_and_kill_tree():
    root = _spawn("sleep 60 & (sleep 60 & sleep 60; wait) & wait")
    try:
        found = _wait_for(lambda: len(procs.descendants(root.pid)) >= 4 and
                          procs.descendants(root.pid))
        assert all(procs.is_alive(p) for p in found)
        hit = procs.kill_tree(root.pid)
        assert set(hit) >= {root.pid, *found}
        root.wait(timeout=5)
        assert procs.wait_dead(found, 5) == []
        assert not procs.is_alive(root.pid)
    finally:
        procs.kill_tree(root.pid)
        root.wait(timeout=5)


def test_orphans_are_found_by_session_and_environment_marker():
    # The daemon calls setsid and its parent exits: no parent walk finds it.
    launcher = _spawn("setsid sleep 61 & sleep 62 & exit 0", env_mark="tree-a")
    launcher.wait(timeout=5)

    def both_sleeps() -> dict[int, int] | bool:
        # One snapshot per poll, and only once both sleeps have exec'd: setsid may fork,
        # and for a moment the snapshot holds its exiting parent instead of "sleep 61".
        found = procs.marked((MARK, "tree-a"))
        names = sorted(" ".join(procs.cmdline(p)) for p in found)
        return names == ["sleep 61", "sleep 62"] and found

    orphans = _wait_for(both_sleeps)
    try:
        # "sleep 62" stays in the launcher's session; "sleep 61" leaves it.
        in_session = set(_wait_for(lambda: len(procs.session_members(launcher.pid)) == 1
                                   and procs.session_members(launcher.pid)))
        assert set(orphans) > in_session
        assert procs.marked((MARK, "tree-b")) == {}
        assert set(procs.tree(launcher.pid, env=(MARK, "tree-a"))) == set(orphans)
    finally:
        procs.signal_snapshot(orphans, signal.SIGKILL)
    assert procs.wait_dead(orphans, 5) == []


def test_freeze_stops_the_tree_and_sigcont_resumes_it():
    root = _spawn("sleep 60 & sleep 60 & wait")
    try:
        _wait_for(lambda: len(procs.descendants(root.pid)) == 2)
        snap = procs.freeze(lambda stats: procs.tree(root.pid, stats=stats))
        assert len(snap) == 3
        assert all(procs.is_stopped(p) for p in snap)
        procs.signal_snapshot(snap, signal.SIGCONT)
        _wait_for(lambda: not any(procs.is_stopped(p) for p in snap))
    finally:
        procs.kill_tree(root.pid)
        root.wait(timeout=5)


def test_a_reused_pid_is_never_signalled():
    proc = _spawn("sleep 60")
    try:
        start = procs.read_stat(proc.pid).start_time
        assert procs.same_process(proc.pid, start)
        assert procs.signal_snapshot({proc.pid: start + 1}, signal.SIGKILL) == []
        assert procs.is_alive(proc.pid)
    finally:
        proc.kill()
        proc.wait(timeout=5)
    assert not procs.is_alive(proc.pid)


def test_wait_dead_returns_the_survivors():
    proc = _spawn("sleep 60")
    try:
        assert procs.wait_dead([proc.pid], 0.2) == [proc.pid]
    finally:
        proc.kill()
        proc.wait(timeout=5)
    assert procs.wait_dead([proc.pid], 1) == []


# --- localnet generation ----------------------------------------------------------------


def test_generate_lays_out_homes_ports_peers_and_genesis(tmp_path):
    net = localnet.generate(tmp_path / "ln", 4, app="bank", runtime="inprocess",
                            chain_id="ln-test", byzantine={3: "silent"})
    assert localnet.Localnet.load(tmp_path / "ln") == net
    ports = [int(a.rsplit(":", 1)[1]) for n in net.nodes for a in (n.p2p, n.rpc)]
    assert len(set(ports)) == 8
    genesis_bytes = {(Path(n.home) / "genesis.json").read_bytes() for n in net.nodes}
    assert len(genesis_bytes) == 1
    genesis = load_genesis(Path(net.nodes[0].home) / "genesis.json")
    assert [(v.name, v.power, v.p2p) for v in genesis.validators] == [
        (f"node{i}", 10, n.p2p) for i, n in enumerate(net.nodes)]
    assert genesis.allocations == {localnet.account_key(i).address:
                                   localnet.LOCALNET_ACCOUNT_BALANCE
                                   for i in range(localnet.LOCALNET_ACCOUNTS)}
    for n in net.nodes:
        home = Path(n.home)
        assert home == tmp_path / "ln" / f"node{n.index}"
        assert stat.S_IMODE((home / "node_key.json").stat().st_mode) == 0o600
        key = load_private_key(home / "node_key.json")
        assert (key.public_key.hex(), key.address) == (n.public_key, n.node_id)
        assert genesis.validators[n.index].public_key == n.public_key
        cfg = load_config(home)
        genesis.check_config(cfg)
        assert cfg.node.runtime == "inprocess" and cfg.node.moniker == f"node{n.index}"
        assert cfg.node.byzantine == ("silent" if n.index == 3 else "")
        assert (cfg.p2p.listen, f"http://{cfg.rpc.listen}") == (n.p2p, n.rpc)
        assert sorted(cfg.p2p.peers) == sorted(
            f"{m.public_key}@{m.p2p}" for m in net.nodes if m.index != n.index)
        assert cfg.storage.map_size_mb == localnet.LOCALNET_PRESET["storage"]["map_size_mb"]
        assert n.pid is None


def test_two_localnets_get_disjoint_ports_and_a_used_dir_is_refused(tmp_path):
    a = localnet.generate(tmp_path / "a", 3)
    b = localnet.generate(tmp_path / "b", 3)
    ports = {x for net in (a, b) for n in net.nodes for x in (n.p2p, n.rpc)}
    assert len(ports) == 12
    with pytest.raises(localnet.LocalnetError, match="not empty"):
        localnet.generate(tmp_path / "a", 3)
    with pytest.raises(localnet.LocalnetError, match="byzantine node 5"):
        localnet.generate(tmp_path / "c", 3, byzantine={5: "silent"})


def test_localnet_accounts_are_fixed():
    seed = localnet.account_seed(0)
    assert len(seed) == 32 and seed != localnet.account_seed(1)
    assert localnet.account_key(0).public_key == localnet.account_key(0).public_key


# --- the lifecycle, with a stand-in node ------------------------------------------------

FAKE_NODE = r'''
import http.server, json, os, signal, subprocess, sys, threading, time, tomllib
home = sys.argv[sys.argv.index("--home") + 1]
with open(os.path.join(home, "config.toml"), "rb") as fh:
    cfg = tomllib.load(fh)
host, port = cfg["rpc"]["listen"].rsplit(":", 1)
started = time.time()
isolated = threading.Event()
stop = threading.Event()
signal.signal(signal.SIGUSR1, lambda *a: isolated.set())
signal.signal(signal.SIGUSR2, lambda *a: isolated.clear())
signal.signal(signal.SIGTERM, lambda *a: stop.set())
# Like Ray: a child with a grandchild, and a daemon in its own session.
subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300; wait"])
subprocess.Popen(["sh", "-c", "setsid sleep 300 & exit 0"])

class Status(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({
            "chain_id": cfg["node"]["chain_id"], "node_id": "x",
            "height": int((time.time() - started) * 10), "block_hash": "00" * 32,
            "app_hash": "ab" * 32, "validators": 3, "catching_up": False,
            "peers": [] if isolated.is_set() else cfg["p2p"]["peers"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer((host, int(port)), Status)
threading.Thread(target=server.serve_forever, daemon=True).start()
print("fake node up", flush=True)
while not stop.wait(0.1):
    pass
print("fake node stopping", flush=True)
sys.exit(0)  # leaves its children behind, for `down` to reap
'''


@pytest.fixture
def fake_command(tmp_path):
    script = tmp_path / "fake_node.py"
    script.write_text(FAKE_NODE)
    return lambda home: [sys.executable, str(script), "--home", home]


def _marked_anywhere(net: localnet.Localnet) -> dict[int, int]:
    left: dict[int, int] = {}
    for node in net.nodes:
        left.update(procs.marked(node.marker))
    return left


def test_localnet_lifecycle(tmp_path, fake_command, capsys, monkeypatch):
    monkeypatch.setattr(localnet, "node_command", fake_command)  # for the CLI's restart
    directory = tmp_path / "ln"
    net = localnet.up(directory, 3, command=fake_command, timeout=30)
    try:
        assert all(localnet.running_pid(n) for n in net.nodes)
        saved = localnet.Localnet.load(directory)
        assert [n.pid for n in saved.nodes] == [n.pid for n in net.nodes]
        # each node's tree: supervisor, sh, 2 sleeps, setsid'd sleep
        _wait_for(lambda: all(len(localnet.node_tree(n)) >= 5 for n in net.nodes))

        assert main(["localnet", "status", "--dir", str(directory), "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert [list(r) for r in rows] == [list(localnet.STATUS_KEYS)] * 3
        assert [(r["index"], r["up"], r["peers"], r["app_hash"]) for r in rows] == [
            (i, True, 2, "ab" * 32) for i in range(3)]
        assert main(["localnet", "status", "--dir", str(directory)]) == 0
        assert "up" in capsys.readouterr().out

        assert main(["localnet", "isolate", "1", "--dir", str(directory)]) == 0
        _wait_for(lambda: localnet.node_status(net.nodes[1])["peers"] == 0)
        assert main(["localnet", "heal", "1", "--dir", str(directory)]) == 0
        _wait_for(lambda: localnet.node_status(net.nodes[1])["peers"] == 2)

        assert main(["localnet", "pause", "2", "--dir", str(directory)]) == 0
        tree2 = localnet.node_tree(net.nodes[2])
        assert len(tree2) >= 5 and all(procs.is_stopped(p) for p in tree2)
        row = localnet.node_status(net.nodes[2], timeout=0.5)
        assert row["up"] is False and localnet.state_of(net.nodes[2], row) == "paused"
        assert main(["localnet", "resume", "2", "--dir", str(directory)]) == 0
        assert localnet.node_status(net.nodes[2])["up"] is True

        old_tree = localnet.node_tree(net.nodes[0])
        assert main(["localnet", "kill", "0", "--dir", str(directory)]) == 0
        assert procs.wait_dead(list(old_tree), 5) == []
        assert localnet.node_status(net.nodes[0])["up"] is False
        capsys.readouterr()
        assert main(["localnet", "isolate", "0", "--dir", str(directory)]) == 1
        assert "not running" in capsys.readouterr().err

        assert main(["localnet", "restart", "0", "--dir", str(directory)]) == 0
        net = localnet.Localnet.load(directory)
        assert net.nodes[0].pid not in old_tree
        assert localnet.node_status(net.nodes[0])["up"] is True
        # pause then down: a stopped supervisor must still get its SIGTERM
        localnet.pause(net, 1)
    finally:
        localnet.down(localnet.Localnet.load(directory), timeout=10, grace=1)
    net = localnet.Localnet.load(directory)
    assert _marked_anywhere(net) == {}
    assert all(n.pid is None for n in net.nodes)
    assert "fake node stopping" in net.nodes[1].log_path.read_text()


def test_up_reports_nodes_that_fail_and_stops_the_rest(tmp_path):
    def command(home: str) -> list[str]:
        if home.endswith("node1"):
            return [sys.executable, "-c", "print('cannot open store'); raise SystemExit(3)",
                    "--home", home]
        return [sys.executable, "-c", "import time; time.sleep(60)", "--home", home]

    with pytest.raises(localnet.NodesNotReady) as info:
        localnet.up(tmp_path / "ln", 2, command=command, timeout=8)
    assert "node(s) 0, 1 failed" in str(info.value)
    assert "exited with code 3" in info.value.details
    assert "cannot open store" in info.value.details
    assert "did not answer GET /v1/status" in info.value.details
    net = localnet.Localnet.load(tmp_path / "ln")
    assert _marked_anywhere(net) == {}


def test_running_pid_trusts_its_own_children_and_checks_others(tmp_path, monkeypatch):
    """A node this process spawned is judged by its child status (its pid cannot be
    reused before it is reaped); one known only by a saved pid by /proc, which must show
    the node's home in the command line."""
    net = localnet.generate(tmp_path / "ln", 1, runtime="inprocess")
    node = net.nodes[0]
    proc = localnet.spawn(node, lambda home: [sys.executable, "-c",
                                              "import time; time.sleep(60)", "--home", home])
    try:
        assert localnet.running_pid(node) == proc.pid
        # Whatever /proc says of a child that has not exited: it is running.
        monkeypatch.setattr(procs, "cmdline", lambda pid: [])
        monkeypatch.setattr(procs, "is_alive", lambda pid: False)
        assert localnet.running_pid(node) == proc.pid
        monkeypatch.undo()
        # Between fork and exec the child's /proc cmdline is still this process's: wait
        # for the exec (a fresh-clone CI run caught the check in that window).
        deadline = time.monotonic() + 10
        while node.home not in procs.cmdline(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        # The same pid as another process knows it (read from the localnet file).
        stranger = dataclasses.replace(node, home=str(tmp_path / "elsewhere"))
        localnet._SPAWNED.pop(proc.pid)
        try:
            assert localnet.running_pid(node) == proc.pid          # alive, its home
            assert localnet.running_pid(stranger) is None          # alive, not that node
        finally:
            localnet._SPAWNED[proc.pid] = proc
        proc.kill()
        proc.wait()
        assert localnet.running_pid(node) is None                  # exited
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        localnet._SPAWNED.pop(proc.pid, None)

