"""A localnet with one byzantine validator (tester mode `--byzantine I:MODE`).

`equivocate`: node 3 signs two conflicting proposals and votes for each step,
with its own key, and sends them to all peers in different orders. Honest nodes
stay in agreement, keep committing, detect the duplicate votes, put the
evidence in blocks and count it in /metrics. `silent`: node 3 never sends a
consensus message; the other three (2f+1) go on alone.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from node import localnet
from node.client import Client
from node.wallet import Wallet

from .conftest import wait_until

pytestmark = pytest.mark.integration


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def agree_up_to(net: localnet.Localnet, nodes: list[int], top: int) -> None:
    for height in range(1, top + 1):
        hashes = {get(f"{net.nodes[i].rpc}/v1/blocks/{height}")["block_hash"] for i in nodes}
        assert len(hashes) == 1, f"honest nodes disagree at height {height}"


@pytest.mark.parametrize("mode", ["equivocate", "silent"])
def test_one_byzantine_validator(tmp_path: Path, mode: str) -> None:
    net = localnet.up(tmp_path / "net", 4, runtime="inprocess", byzantine={3: mode}, timeout=60)
    try:
        honest = [0, 1, 2]
        client = Client([net.nodes[i].rpc for i in honest])
        chain = client.status()["chain_id"]
        w = Wallet.generate()
        node0 = Client([net.nodes[0].rpc])
        hashes = [node0.submit(w.kv_set(chain, b"k%d" % i, b"v")) for i in range(10)]
        results = [client.wait_committed(h, timeout=60) for h in hashes]
        assert all(r["code"] == 0 for r in results)
        top = max(r["height"] for r in results) + 2
        wait_until(lambda: all(Client([net.nodes[i].rpc]).status()["height"] >= top
                               for i in honest), 60, "honest nodes to pass the txs' height")
        agree_up_to(net, honest, top)
        if mode == "equivocate":
            wait_until(lambda: all(metric(net.nodes[i].rpc, "bftnode_evidence_total") > 0
                                   for i in honest), 60, "every honest node to detect evidence")

            def evidence_committed() -> bool:
                return metric(net.nodes[0].rpc, "bftnode_evidence_committed_total") > 0

            wait_until(evidence_committed, 60, "evidence to be committed in a block")
            height = Client([net.nodes[0].rpc]).status()["height"]
            found = [e for h in range(1, height + 1)
                     for e in get(f"{net.nodes[0].rpc}/v1/blocks/{h}")["evidence"]]
            assert found and all(e["validator"] == net.nodes[3].public_key for e in found)
            assert metric(net.nodes[3].rpc, "bftnode_evidence_total") >= 0  # still up
    finally:
        localnet.down(net)
