"""A real 4-validator localnet, on both runtimes: commits, agreement across nodes,
hostile client input, loopback-only listeners, SIGKILL and catch-up.

Marked `integration`: each runtime starts four real node processes."""

from __future__ import annotations

import ipaddress
import json
import socket
import urllib.request

import pytest

from crypto import PrivateKey
from node import localnet, procs
from node.client import Client, ClientError, validator_set_from_json, verify_block, verify_receipt
from node.tx import Tx
from node.wallet import Wallet

from .conftest import heights, wait_until
from .harness import metric, metrics

pytestmark = pytest.mark.integration


def post_raw(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/v1/txs", data=body, method="POST",
                                 headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def test_commits_and_every_node_agrees(net: localnet.Localnet, client: Client) -> None:
    chain = client.status()["chain_id"]
    wallets = [Wallet.generate() for _ in range(4)]
    hashes = []
    for i, w in enumerate(wallets):
        node_client = Client([net.nodes[i].rpc])
        for j in range(5):
            hashes.append(node_client.submit(w.kv_set(chain, b"key-%d-%d" % (i, j), b"v")))
    results = [client.wait_committed(h, timeout=60) for h in hashes]
    assert all(r["code"] == 0 for r in results), results
    top = max(r["height"] for r in results)
    wait_until(lambda: all(h is not None and h >= top for h in heights(net)), 30,
               "every node to reach the last tx's height")
    status = client.status()
    validators = validator_set_from_json(status["validators"])
    for height in range(1, top + 1):
        blocks = [get_json(f"{node.rpc}/v1/blocks/{height}") for node in net.nodes]
        assert len({b["block_hash"] for b in blocks}) == 1, f"nodes disagree at {height}"
        assert len({json.dumps(b["header"], sort_keys=True) for b in blocks}) == 1
        verify_block(blocks[0], validators, chain)
    # The app hash in block h+1 is every node's app hash after block h.
    app_hashes = {get_json(f"{n.rpc}/v1/blocks/{top}")["header"]["app_hash"] for n in net.nodes}
    assert len(app_hashes) == 1
    receipt = client.receipt(hashes[0])
    assert verify_receipt(receipt, validators, chain)["height"] == results[0]["height"]
    # Blocks with txs were applied ahead of their decision (optimistic execution), and
    # still every node agrees on every block and app hash above.
    assert sum(metric(metrics(n.rpc), "bftnode_prepared_blocks_total") for n in net.nodes) > 0


def test_wait_commit_and_tx_status(net: localnet.Localnet, client: Client) -> None:
    chain = client.status()["chain_id"]
    w = Wallet.generate()
    r = client.submit_and_wait(w.kv_set(chain, b"waited", b"yes"), timeout=30)
    assert set(r) >= {"hash", "height", "index", "code"} and r["code"] == 0
    st = client.tx(r["hash"])
    assert st["status"] == "committed" and st["height"] == r["height"]
    assert client.tx("00" * 32)["status"] == "unknown"


def test_hostile_client_input_is_refused_and_node_stays_up(net: localnet.Localnet,
                                                           client: Client) -> None:
    url = net.nodes[0].rpc
    chain = client.status()["chain_id"]
    w = Wallet.generate()
    status, body = post_raw(url, b"")
    assert status == 400 and "empty" in body["error"]
    status, body = post_raw(url, b"\x93garbage\xff\x00")
    assert status == 400 and "malformed" in body["error"]
    status, body = post_raw(url, b"\x00" * (2 * 1024 * 1024))
    assert status == 413, body
    good = Tx(chain, "kvstore", w.public_key, 0, ("set", b"k", b"v")).signed(
        PrivateKey(w.seed))
    forged = Tx(good.chain_id, good.app, good.sender, good.nonce, good.op,
                bytes(64)).encode()
    status, body = post_raw(url, forged)
    assert status == 400 and "invalid signature" in body["error"]
    other_chain = Tx("another-chain", "kvstore", w.public_key, 0, ("set", b"k", b"v")).signed(
        PrivateKey(w.seed)).encode()
    status, body = post_raw(url, other_chain)
    assert status == 400 and "wrong chain id" in body["error"]
    status, body = post_raw(url, good.encode())
    assert status == 202
    status, body = post_raw(url, good.encode())
    assert status == 400 and "duplicate" in body["error"]
    with pytest.raises(ClientError):
        Client([url]).submit(forged)
    before = client.status()["height"]
    wait_until(lambda: client.status()["height"] > before, 20, "the chain to keep committing")
    metrics = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    assert 'bftnode_txs_rejected_total{reason="malformed"}' in metrics
    assert 'bftnode_http_rejected_total{reason="empty_body"}' in metrics
    # Every admission round is one Mempool.intake call, counted with its wait.
    assert metric(metrics, "bftnode_actor_calls_total", actor="Mempool", method="intake") > 0
    assert metric(metrics, "bftnode_actor_call_seconds_total", actor="Mempool",
                  method="intake") > 0


def test_listeners_are_loopback(net: localnet.Localnet) -> None:
    """bftnode's own sockets (p2p, RPC) listen on 127.0.0.1 only; on the in-process
    runtime nothing else listens at all.

    Ray 2.60's gRPC servers (GCS, raylet, every core worker, the supervisor's own
    driver included) bind every interface whatever node IP is given, with Ray's
    token authentication on; the README says what an operator must do about that
    (firewall). So on the Ray runtime only bftnode's own listeners are checked.
    """
    for node in net.nodes:
        own = {int(node.rpc.rsplit(":", 1)[1]), int(node.p2p.rsplit(":", 1)[1])}
        listening = procs_listening(list(localnet.node_tree(node)))
        assert own <= {port for _, port in listening}
        for host, port in listening:
            if net.runtime == "ray" and port not in own:
                continue
            assert host in ("127.0.0.1", "::1"), f"node {node.index} listens on {host}:{port}"


def procs_listening(pids: list[int]) -> set[tuple[str, int]]:
    inodes: set[str] = set()
    for pid in pids:
        try:
            import os

            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        with open(table) as f:
            next(f)
            for line in f:
                parts = line.split()
                local, state, inode = parts[1], parts[3], parts[9]
                if state != "0A" or inode not in inodes:  # 0A = LISTEN
                    continue
                addr_hex, port_hex = local.split(":")
                raw = bytes.fromhex(addr_hex)
                # /proc/net/tcp* hold addresses as host-order 32-bit words. (Not
                # socket.inet_ntop: pysyncobj, imported by the bench tests, replaces it.)
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                if family == socket.AF_INET:
                    host = str(ipaddress.IPv4Address(words))
                else:
                    host = str(ipaddress.IPv6Address(words))
                found.add((host, int(port_hex, 16)))
    return found


def test_sigkill_restart_catches_up(net: localnet.Localnet, client: Client) -> None:
    victim = net.nodes[2]
    tree = localnet.node_tree(victim)
    localnet.kill(net, 2)
    assert not any(procs.same_process(pid, start) for pid, start in tree.items()), \
        "SIGKILL of the supervisor left some of its processes alive"
    chain = client.status()["chain_id"]
    others = Client([net.nodes[0].rpc, net.nodes[1].rpc])
    w = Wallet.generate()
    last = None
    for i in range(10):
        last = others.submit(w.kv_set(chain, b"while-down-%d" % i, b"v"))
    committed = others.wait_committed(last, timeout=60)
    assert committed["code"] == 0
    target = committed["height"] + 3
    wait_until(lambda: others.status()["height"] >= target, 30, "the 3 others to go on")
    localnet.restart(net, 2)
    restarted = Client([net.nodes[2].rpc])
    wait_until(lambda: restarted.status()["height"] >= target, 60, "node 2 to catch up")
    assert restarted.tx(last)["status"] == "committed"
    # It caught up by block sync, and says so once it is level with the others.
    assert metric(metrics(net.nodes[2].rpc), "bftnode_sync_blocks_total") > 0
    wait_until(lambda: not restarted.status()["catching_up"], 30, "node 2 to stop catching up")
    for height in (1, committed["height"], target):
        hashes = {get_json(f"{n.rpc}/v1/blocks/{height}")["block_hash"] for n in net.nodes}
        assert len(hashes) == 1, f"nodes disagree at height {height} after the restart"
