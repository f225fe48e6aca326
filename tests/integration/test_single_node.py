"""`bftnode init` then `bftnode start` as a real process: one validator commits,
answers the API, and SIGTERM is a clean shutdown (exit 0) on both runtimes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.client import Client
from node.config import load_config, write_config
from node.wallet import Wallet

from .conftest import wait_until

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("runtime", ["inprocess", "ray"])
def test_init_start_commit_sigterm(tmp_path: Path, runtime: str) -> None:
    home = tmp_path / "home"
    bftnode = [sys.executable, "-m", "node"]
    subprocess.run([*bftnode, "init", "--home", str(home), "--chain-id", "single-1"],
                   check=True, capture_output=True)
    assert (home / "node_key.json").stat().st_mode & 0o077 == 0
    cfg = load_config(home)
    cfg.node.runtime = runtime
    import socket

    ports = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        ports.append(s.getsockname()[1])
        s.close()
    cfg.p2p.listen = f"127.0.0.1:{ports[0]}"
    cfg.rpc.listen = f"127.0.0.1:{ports[1]}"
    write_config(home, cfg)
    log = open(tmp_path / "node.log", "wb")
    proc = subprocess.Popen([*bftnode, "start", "--home", str(home)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        client = Client([f"http://127.0.0.1:{ports[1]}"], timeout=2)

        def up() -> bool:
            try:
                return client.status()["chain_id"] == "single-1"
            except Exception:
                return False

        wait_until(up, 60, "the node to answer /v1/status")
        w = Wallet.generate()
        r = client.submit_and_wait(w.kv_set("single-1", b"k", b"v"), timeout=30)
        assert r["code"] == 0 and r["height"] >= 1
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, (tmp_path / "node.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        time.sleep(0.1)
