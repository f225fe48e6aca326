"""The bftnode command line: init, exit codes, lazy dispatch to the node and the bench."""

from __future__ import annotations

import stat
import subprocess
import sys
import types
from pathlib import Path

import pytest

from crypto import load_private_key
from node.cli import main
from node.config import load_config
from node.genesis import load_genesis

REPO = Path(__file__).resolve().parents[2]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bftnode: error: ")
    return lines[0]


def test_init_creates_a_private_key_a_config_and_a_single_validator_genesis(tmp_path, capsys):
    home = tmp_path / "val"
    assert main(["init", "--home", str(home), "--chain-id", "test-1", "--app", "bank"]) == 0
    key_path = home / "node_key.json"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = load_private_key(key_path)
    cfg = load_config(home)
    assert (cfg.node.chain_id, cfg.node.app, cfg.node.moniker) == ("test-1", "bank", "val")
    genesis = load_genesis(home / "genesis.json")
    genesis.check_config(cfg)
    assert [(v.name, v.public_key, v.power, v.p2p) for v in genesis.validators] == [
        ("val", key.public_key.hex(), 10, cfg.p2p.listen)]
    assert key.address in capsys.readouterr().out
    assert "# " in (home / "config.toml").read_text()  # documented, like configs/node.toml


def test_init_refuses_an_existing_home_unless_forced(tmp_path, capsys):
    home = tmp_path / "n"
    assert main(["init", "--home", str(home), "--chain-id", "c1", "--moniker", "alice"]) == 0
    first = load_private_key(home / "node_key.json")
    (home / "data").mkdir()
    (home / "data" / "old.mdb").write_bytes(b"x")
    capsys.readouterr()

    assert main(["init", "--home", str(home), "--chain-id", "c2"]) == 1
    assert "--force" in _one_error_line(capsys)
    assert load_private_key(home / "node_key.json").seed == first.seed

    assert main(["init", "--home", str(home), "--chain-id", "c2", "--force"]) == 0
    assert load_private_key(home / "node_key.json").seed != first.seed
    assert load_config(home).node.chain_id == "c2"
    assert not (home / "data").exists()


def test_init_with_a_bad_chain_id_writes_nothing(tmp_path, capsys):
    home = tmp_path / "n"
    assert main(["init", "--home", str(home), "--chain-id", "no spaces"]) == 1
    assert "chain_id" in _one_error_line(capsys)
    assert not home.exists()


@pytest.mark.parametrize("argv", [
    [],
    ["frobnicate"],
    ["init", "--home", "x"],
    ["init", "--home", "x", "--chain-id", "c", "--app", "chess"],
    ["start"],
    ["localnet"],
    ["localnet", "up", "--dir", "d", "--validators", "0"],
    ["localnet", "up", "--dir", "d", "--byzantine", "1:evil"],
    ["localnet", "up", "--dir", "d", "--validators", "2", "--byzantine", "2:silent"],
    ["localnet", "up", "--dir", "d", "--byzantine", "1:silent", "1:equivocate"],
    ["localnet", "up", "--dir", "d", "--validators", "1000"],
    ["localnet", "kill", "--dir", "d"],
    ["localnet", "kill", "x", "--dir", "d"],
    ["bench", "--rate", "fast"],
])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "localnet" in capsys.readouterr().out


def test_runtime_errors_exit_1_with_one_line(tmp_path, capsys):
    assert main(["start", "--home", str(tmp_path / "none")]) == 1
    assert "bftnode init" in _one_error_line(capsys)
    assert main(["localnet", "status", "--dir", str(tmp_path)]) == 1
    assert "no localnet" in _one_error_line(capsys)
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "file").write_text("x")
    assert main(["localnet", "up", "--dir", str(tmp_path / "occupied")]) == 1
    assert "not empty" in _one_error_line(capsys)


def test_start_runs_the_supervisor_lazily(tmp_path, monkeypatch, capsys):
    home = tmp_path / "n"
    assert main(["init", "--home", str(home), "--chain-id", "c"]) == 0
    calls = []
    fake = types.ModuleType("node.supervisor")
    fake.run_node = lambda h: calls.append(h) or 7
    monkeypatch.setitem(sys.modules, "node.supervisor", fake)
    assert main(["start", "--home", str(home)]) == 7
    assert calls == [str(home)]

    def crash(h):
        raise RuntimeError("storage at\nDIR is locked")

    fake.run_node = crash
    capsys.readouterr()
    assert main(["start", "--home", str(home)]) == 1
    assert _one_error_line(capsys) == "bftnode: error: storage at DIR is locked"


def test_bench_dispatches_lazily(monkeypatch, capsys):
    seen = []
    fake = types.ModuleType("node.bench")
    fake.main = lambda args: seen.append(args) or 0
    monkeypatch.setitem(sys.modules, "node.bench", fake)
    assert main(["bench", "--validators", "4", "--rate", "500", "--duration", "5",
                 "--tx-size", "128", "--out", "r.json", "--rpc", "http://a:1,http://b:2",
                 "--runtime", "inprocess"]) == 0
    args = seen[0]
    assert (args.validators, args.rate, args.duration, args.tx_size, args.out, args.rpc,
            args.runtime, args.plot) == (4, "500", 5.0, 128, "r.json", "http://a:1,http://b:2",
                                         "inprocess", None)

    monkeypatch.setitem(sys.modules, "node.bench", None)
    assert main(["bench"]) == 1
    assert "node.bench" in _one_error_line(capsys)


def test_python_dash_m_node(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "node", "init", "--home", str(tmp_path / "n")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--chain-id" in proc.stderr
