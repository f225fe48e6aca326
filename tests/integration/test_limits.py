"""Every limit in the node config is enforced, with a clear error, and counted.

One in-process 4-validator localnet whose nodes carry small limits (set with
node.config.write_config in the generated homes before they start):

    node 0  [mempool] max_txs = 64; [p2p] send_queue_len = 32; allows an extra
            peer key that never connects (its send queue can only fill), and the
            test's peer key
    node 1  [mempool] max_bytes = 16 KiB; [rpc] max_body_bytes = 64 KiB
    node 2  [p2p] handshake_timeout_s = 1, max_connections = 4; allows the test's peer key
    node 3  [rpc] max_connections = 8, wait_timeout_s = 1; defaults otherwise

A chain that cannot commit is made by pausing (SIGSTOP) two validators: then a
mempool only fills, deterministically. The flood test at the end measures the
memory of a node's whole process tree before, during and after a flood of valid
and invalid transactions (BFTNODE_FLOOD_S seconds, default 15; the runtime is
BFTNODE_LIMITS_RUNTIME, default inprocess) and prints the figures recorded in
docs/BENCHMARKS.md ("Faults and limits").
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator

import aiohttp
import pytest

from crypto import PrivateKey, sha256
from node import localnet, procs
from node.config import NodeConfig
from node.p2p.transport import FRAME_DATA, FRAME_OVERHEAD
from node.tx import DEFAULT_MAX_TX_BYTES, Batch, Tx
from node.wallet import Wallet
from node.wire import BatchGossip

from .conftest import wait_until
from .harness import (
    RawPeer,
    metric,
    metrics,
    observer_key,
    p2p_address,
    tree_memory,
    up_with_overrides,
)

RUNTIME = os.environ.get("BFTNODE_LIMITS_RUNTIME", "inprocess")
FLOOD_S = float(os.environ.get("BFTNODE_FLOOD_S", "15"))
MIB = 1024 * 1024
PEER = observer_key(b"limits-peer")
UNREACHABLE = observer_key(b"limits-unreachable")

OVERRIDES = {
    0: {"mempool": {"max_txs": 64}, "p2p": {"send_queue_len": 32}},
    # Not [mempool] max_tx_bytes: it decides which txs a block may execute, so
    # validators that differ on it split (see the report in docs/BENCHMARKS.md).
    1: {"mempool": {"max_bytes": 16 * 1024}, "rpc": {"max_body_bytes": 64 * 1024}},
    2: {"p2p": {"handshake_timeout_s": 1.0, "max_connections": 4}},
    3: {"rpc": {"max_connections": 8, "wait_timeout_s": 1.0}},
}

pytestmark = [pytest.mark.integration, pytest.mark.timeout(int(300 + 6 * FLOOD_S))]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localnet.Localnet]:
    port = localnet.PortAllocator().take()  # nothing listens there: dials to it fail
    extra = {0: [f"{UNREACHABLE.public_key.hex()}@127.0.0.1:{port}",
                 f"{PEER.public_key.hex()}@127.0.0.1:{port}"],
             2: [f"{PEER.public_key.hex()}@127.0.0.1:{port}"]}
    n = up_with_overrides(tmp_path_factory.mktemp(f"limits-{RUNTIME}"), 4, runtime=RUNTIME,
                          overrides=OVERRIDES, extra_peers=extra)
    try:
        wait_until(lambda: min(r["height"] or 0 for r in localnet.status(n)) >= 2, 60,
                   "the chain to start")
        yield n
    finally:
        trees = [localnet.node_tree(node) for node in n.nodes]
        localnet.down(n)
        leftover = [p for t in trees for p, s in t.items() if procs.same_process(p, s)]
        assert not leftover, f"localnet down left processes behind: {leftover}"


# --- helpers ------------------------------------------------------------------------------------


def post(url: str, body: bytes, query: str = "", timeout: float = 10.0,
         headers: dict[str, str] | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(f"{url}/v1/txs{query}", data=body, method="POST",
                                 headers={"Content-Type": "application/octet-stream",
                                          **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def get_tx(url: str, tx: bytes) -> str:
    with urllib.request.urlopen(f"{url}/v1/txs/{sha256(tx).hex()}", timeout=5) as resp:
        return json.loads(resp.read())["status"]


def height(net: localnet.Localnet, i: int) -> int | None:
    """Node i's height, or None if it does not answer within 2 s (busy or paused)."""
    doc = localnet.fetch_status(net.nodes[i].rpc)
    return None if doc is None else doc["height"]


def expect_commits(net: localnet.Localnet, nodes: list[int], blocks: int = 2,
                   timeout: float = 30) -> None:
    start: dict[int, int] = {}

    def answered() -> bool:
        for i in nodes:
            if i not in start and (h := height(net, i)) is not None:
                start[i] = h
        return len(start) == len(nodes)

    wait_until(answered, timeout, f"nodes {nodes} to answer")
    wait_until(lambda: all((height(net, i) or 0) >= start[i] + blocks for i in nodes), timeout,
               f"nodes {nodes} to go on committing")


def drained(net: localnet.Localnet, i: int, timeout: float = 60) -> None:
    """Wait until node i's mempool is empty (the gauge is set at each commit)."""
    expect_commits(net, [i], blocks=1, timeout=timeout)
    wait_until(lambda: metric(metrics(net.nodes[i].rpc), "bftnode_mempool_txs") == 0, timeout,
               f"node {i}'s mempool to drain")


@contextlib.contextmanager
def stalled(net: localnet.Localnet, paused: tuple[int, ...]) -> Iterator[None]:
    """Pause two validators (f+1 of 4): nothing can commit until they resume."""
    for i in paused:
        localnet.pause(net, i)
    try:
        time.sleep(1.0)  # a block whose precommits were already out may still land
        yield
    finally:
        for i in paused:
            localnet.resume(net, i)


def kv_wallet(tag: str) -> Wallet:
    return Wallet.from_seed(sha256(tag.encode()))


# --- the inventory --------------------------------------------------------------------------------


LIMITS = {  # (section, key): documented default; each is exercised by a test below
    ("p2p", "max_frame_bytes"): 4 * MIB,
    ("p2p", "send_queue_len"): 4096,
    ("p2p", "handshake_timeout_s"): 5.0,
    ("p2p", "max_connections"): 64,
    ("rpc", "max_body_bytes"): 1 * MIB,
    ("rpc", "max_connections"): 1024,
    ("rpc", "wait_timeout_s"): 30.0,
    ("mempool", "max_txs"): 200_000,
    ("mempool", "max_bytes"): 256 * MIB,
    ("mempool", "max_tx_bytes"): 64 * 1024,
    ("mempool", "max_verify_wait_ms"): 1000,  # backpressure (test_intake_pacing.py)
}


def test_limit_defaults_are_the_documented_ones() -> None:
    cfg = NodeConfig()
    for (section, key), default in LIMITS.items():
        assert getattr(getattr(cfg, section), key) == default, f"[{section}] {key}"
    assert cfg.mempool.max_tx_bytes == DEFAULT_MAX_TX_BYTES


# --- p2p --------------------------------------------------------------------------------------------


def _connected_peer(net: localnet.Localnet, i: int) -> RawPeer:
    peer = RawPeer(p2p_address(net.nodes[i]))
    peer.handshake(PEER, net.chain_id, bytes.fromhex(net.nodes[i].public_key))
    return peer


def test_frame_at_the_limit_is_read_and_one_byte_over_closes_the_link(net) -> None:
    node = net.nodes[2]
    limit = NodeConfig().p2p.max_frame_bytes
    before = metrics(node.rpc)
    with _connected_peer(net, 2) as peer:
        # Exactly the limit: read, decrypted, and refused only as a malformed message.
        peer.send_frame(FRAME_DATA, b"\xc1" * (limit - FRAME_OVERHEAD))
        assert not peer.closed_by_remote(1.0), "a frame of exactly max_frame_bytes closed the link"
        # One byte over, announced by its length prefix alone: the link is closed.
        peer.sock.sendall((limit + 1).to_bytes(4, "big"))
        assert peer.closed_by_remote(5.0), "an oversized frame did not close the link"
    after = metrics(node.rpc)
    assert metric(after, "bftnode_p2p_rejected_total", reason="oversized_frame") == \
        metric(before, "bftnode_p2p_rejected_total", reason="oversized_frame") + 1
    assert metric(after, "bftnode_messages_rejected_total", reason="malformed") > \
        metric(before, "bftnode_messages_rejected_total", reason="malformed")
    expect_commits(net, [0, 1, 2, 3])


def test_silent_connection_is_closed_after_the_handshake_timeout(net) -> None:
    node = net.nodes[2]
    before = metric(metrics(node.rpc), "bftnode_p2p_rejected_total", reason="handshake_timeout")
    with RawPeer(p2p_address(node)) as silent:
        t0 = time.monotonic()
        assert silent.closed_by_remote(5.0), "a silent connection was never closed"
        waited = time.monotonic() - t0
    assert 0.5 <= waited <= 3.0, f"closed after {waited:.2f} s; handshake_timeout_s is 1"
    wait_until(lambda: metric(metrics(node.rpc), "bftnode_p2p_rejected_total",
                              reason="handshake_timeout") == before + 1, 5,
               "the handshake timeout to be counted")


def test_pending_handshakes_beyond_max_connections_are_refused(net) -> None:
    node = net.nodes[2]
    before = metric(metrics(node.rpc), "bftnode_p2p_rejected_total", reason="too_many_pending")
    silent = [RawPeer(p2p_address(node)) for _ in range(4)]
    try:
        time.sleep(0.2)
        with RawPeer(p2p_address(node)) as extra:
            assert extra.closed_by_remote(0.5), "a 5th pending handshake was not refused"
    finally:
        for s in silent:
            s.close()
    assert metric(metrics(node.rpc), "bftnode_p2p_rejected_total",
                  reason="too_many_pending") == before + 1
    expect_commits(net, [0, 1, 2, 3])


def test_send_queue_to_a_peer_is_bounded_and_drops_are_counted(net) -> None:
    # Node 0 queues every broadcast for a configured peer that never connects; its
    # queue holds send_queue_len = 32 payloads, so the oldest are dropped and counted.
    node = net.nodes[0]
    wait_until(lambda: metric(metrics(node.rpc), "bftnode_p2p_rejected_total",
                              reason="queue_full") > 0, 30, "send-queue drops to be counted")
    expect_commits(net, [0, 1, 2, 3])


def test_inbound_batches_are_all_accounted_for(net) -> None:
    # Batches a peer pushes wait for verification in a queue bounded in count and bytes:
    # each one is either refused after decoding (bad_batch) or dropped from a full queue
    # (batch_queue_full), and counted; none is lost silently, none is kept.
    node = net.nodes[2]
    sent = 10_000

    def accounted(text: str) -> float:
        return sum(metric(text, "bftnode_messages_rejected_total", reason=r)
                   for r in ("bad_batch", "batch_queue_full"))

    before = accounted(metrics(node.rpc))
    with _connected_peer(net, 2) as peer:
        junk = BatchGossip(b"\x92\x41\x90").encode()  # not a valid batch
        for _ in range(sent // 2000):
            peer.send_payloads([junk] * 2000)
        wait_until(lambda: accounted(metrics(node.rpc)) >= before + sent, 30,
                   f"all {sent} junk batches to be counted")
    assert accounted(metrics(node.rpc)) == before + sent
    expect_commits(net, [0, 1, 2, 3])


def test_junk_batches_from_a_peer_neither_fill_the_mempool_nor_get_committed(net) -> None:
    node = net.nodes[0]  # max_txs = 64
    sender = bytes(range(32))
    junk = [Tx(net.chain_id, "kvstore", sender, n, ("set", b"j", b"v"), bytes(64)).encode()
            for n in range(500)]
    with _connected_peer(net, 0) as peer:
        peer.send_payloads([BatchGossip(Batch(tuple(junk[i:i + 100])).encode()).encode()
                            for i in range(0, 500, 100)])
        time.sleep(3)
    held = metric(metrics(node.rpc), "bftnode_mempool_txs")
    committed = get_tx(node.rpc, junk[0])
    # Leave node 0's mempool empty for the tests that count on it.
    wait_until(lambda: metric(metrics(node.rpc), "bftnode_mempool_txs") == 0, 60,
               "node 0's mempool to drain")
    assert held <= 64, f"node 0 holds {held:.0f} txs; max_txs is 64"
    assert committed != "committed", "a batch of forged signatures was committed"


# --- transactions and the mempool -------------------------------------------------------------


def test_oversized_tx_is_refused_with_the_limit_named(net) -> None:
    # The largest value a kvstore tx may carry makes a tx just over the 64 KiB default.
    w = kv_wallet("limits-size")
    node = net.nodes[3]
    before = metric(metrics(node.rpc), "bftnode_txs_rejected_total", reason="malformed")
    tx = w.kv_set(net.chain_id, b"k", b"x" * (64 * 1024))
    assert len(tx) > DEFAULT_MAX_TX_BYTES
    status, body = post(node.rpc, tx)
    assert status == 400 and f"exceeds the {DEFAULT_MAX_TX_BYTES}-byte limit" in body["error"]
    w.nonce = 0
    tx = w.kv_set(net.chain_id, b"k", b"x" * (DEFAULT_MAX_TX_BYTES - 400))
    assert DEFAULT_MAX_TX_BYTES - 400 < len(tx) <= DEFAULT_MAX_TX_BYTES
    status, body = post(node.rpc, tx)
    assert status == 202, body
    assert metric(metrics(node.rpc), "bftnode_txs_rejected_total", reason="malformed") == \
        before + 1


def test_http_body_over_the_limit_is_413(net) -> None:
    node = net.nodes[1]  # max_body_bytes = 64 KiB
    limit = 64 * 1024
    before = metric(metrics(node.rpc), "bftnode_http_rejected_total", reason="body_too_large")
    status, body = post(node.rpc, b"\x00" * (limit + 1))
    assert status == 413 and f"{limit}-byte limit" in body["error"], body
    # Without a Content-Length (chunked), the limit holds while reading.
    status, body = post(node.rpc, iter([b"\x00" * limit, b"\x00"]))  # type: ignore[arg-type]
    assert status == 413, body
    status, body = post(node.rpc, b"\x00" * limit)  # at the limit: read, then refused as a tx
    assert status == 400 and "malformed" in body["error"], body
    assert metric(metrics(node.rpc), "bftnode_http_rejected_total",
                  reason="body_too_large") == before + 2
    status, body = post(net.nodes[3].rpc, b"\x00" * (MIB + 1))  # the default, 1 MiB
    assert status == 413 and f"{MIB}-byte limit" in body["error"], body


def test_mempool_full_by_count_is_503_and_the_node_stays_up(net) -> None:
    node = net.nodes[0]  # max_txs = 64
    wallets = [kv_wallet(f"limits-count-{k}") for k in range(8)]
    answers: Counter[int] = Counter()
    refusals = []
    before = metric(metrics(node.rpc), "bftnode_txs_rejected_total", reason="mempool_full")
    drained(net, 0)
    with stalled(net, (1, 2)):
        for j in range(12):
            for k, w in enumerate(wallets):
                status, body = post(node.rpc, w.kv_set(net.chain_id, b"c%d-%d" % (k, j), b"v"))
                answers[status] += 1
                if status == 503:
                    refusals.append(body["error"])
                    w.nonce -= 1
        assert localnet.fetch_status(node.rpc, 5) is not None  # still answering
    # Peers' batches count too, so a few slots may be taken by others' txs.
    assert 56 <= answers[202] <= 64 and answers[202] + answers[503] == 96, answers
    assert all(r.startswith("mempool full (64 txs,") for r in refusals), refusals[:3]
    expect_commits(net, [0, 1, 2, 3])
    assert metric(metrics(node.rpc), "bftnode_txs_rejected_total", reason="mempool_full") == \
        before + answers[503]
    # Once blocks drain it, the mempool takes txs again.
    w = wallets[0]

    def accepted() -> bool:
        status, _ = post(node.rpc, w.kv_set(net.chain_id, b"again", b"v"))
        if status != 202:
            w.nonce -= 1
        return status == 202

    wait_until(accepted, 30, "the mempool to accept txs again")


def test_mempool_full_by_bytes_is_503(net) -> None:
    node = net.nodes[1]  # max_bytes = 16 KiB
    w = kv_wallet("limits-bytes")
    sizes, refused = [], None
    drained(net, 1)
    with stalled(net, (2, 3)):
        for j in range(40):
            tx = w.kv_set(net.chain_id, b"b%d" % j, b"x" * 1500)
            status, body = post(node.rpc, tx)
            if status == 503:
                refused = body["error"]
                break
            assert status == 202, body
            sizes.append(len(tx))
    assert refused is not None and refused.startswith("mempool full"), refused
    assert sum(sizes) <= 16 * 1024 < sum(sizes) + len(tx), (sum(sizes), len(tx))
    expect_commits(net, [0, 1, 2, 3])


def test_wait_commit_is_cut_at_wait_timeout(net) -> None:
    node = net.nodes[3]  # wait_timeout_s = 1
    w = kv_wallet("limits-wait")
    with stalled(net, (1, 2)):
        t0 = time.monotonic()
        status, body = post(node.rpc, w.kv_set(net.chain_id, b"w", b"v"),
                            query="?wait=commit&timeout=60", timeout=20)
        took = time.monotonic() - t0
    assert status == 504 and "not committed within 1.0 s" in body["error"], body
    assert took < 5, f"the wait took {took:.1f} s; wait_timeout_s is 1"
    for bad in ("nan", "-1", "inf", "soon"):
        status, body = post(node.rpc, w.kv_set(net.chain_id, b"w2", b"v"),
                            query=f"?wait=commit&timeout={bad}")
        w.nonce -= 1
        assert status == 400 and "timeout" in body["error"], (bad, body)


# --- HTTP connections -------------------------------------------------------------------------


def test_connections_beyond_max_connections_get_503(net) -> None:
    node = net.nodes[3]  # max_connections = 8
    host, port = node.rpc.rsplit("/", 1)[1].split(":")
    before = metric(metrics(node.rpc), "bftnode_http_rejected_total", reason="connections")
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(8)]
    try:
        time.sleep(0.3)
        for _ in range(3):
            try:
                with urllib.request.urlopen(node.rpc + "/v1/status", timeout=5) as resp:
                    status, body = resp.status, resp.read()
            except urllib.error.HTTPError as exc:
                status, body = exc.code, exc.read()
            assert status == 503 and b"too many open connections (limit 8)" in body
    finally:
        for s in idle:
            s.close()
    wait_until(lambda: localnet.fetch_status(node.rpc) is not None, 5,
               "the node to serve again once the idle connections closed")
    # At least the three above; a status poll racing the server's notice of the closed
    # sockets may be refused (and counted) too.
    assert metric(metrics(node.rpc), "bftnode_http_rejected_total",
                  reason="connections") >= before + 3


# --- the flood ---------------------------------------------------------------------------------


def flood_bodies(chain_id: str, count: int, value_bytes: int, seed: int) -> list[bytes]:
    """A seeded mix of valid (kvstore txs with `value_bytes` values) and invalid bodies."""
    rng = random.Random(seed)
    wallets = [kv_wallet(f"flood-{seed}-{k}") for k in range(64)]
    over_tx = [b"\x00" * (DEFAULT_MAX_TX_BYTES + extra) for extra in (1, 100, 4000)]
    over_body = b"\x00" * (MIB + 1)
    value = rng.randbytes(value_bytes)
    bodies = []
    for i in range(count):
        roll = rng.random()
        w = wallets[i % len(wallets)]
        if roll < 0.5:
            bodies.append(w.kv_set(chain_id, b"f%d" % i, value))
        elif roll < 0.65:
            bodies.append(rng.randbytes(rng.randrange(1, 300)))  # garbage
        elif roll < 0.8:  # a forged signature
            tx = Tx(chain_id, "kvstore", w.public_key, 10**6 + i, ("set", b"f", b"v"),
                    bytes(64))
            bodies.append(tx.encode())
        elif roll < 0.9:  # another chain
            tx = Tx("other-chain", "kvstore", w.public_key, i, ("set", b"f", b"v"))
            bodies.append(tx.signed(PrivateKey(w.seed)).encode())
        elif roll < 0.99:  # just over the tx size limit
            bodies.append(rng.choice(over_tx))
        else:  # over the HTTP body limit
            bodies.append(over_body)
    return bodies


async def _flood(url: str, bodies: list[bytes], seconds: float, concurrency: int
                 ) -> Counter[int]:
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + seconds
    queue = itertools.cycle(bodies)  # once through, valid txs come back as duplicates
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async def worker() -> None:
            for body in queue:
                if time.monotonic() > deadline:
                    return
                try:
                    async with session.post(url + "/v1/txs", data=body) as resp:
                        await resp.read()
                        statuses[resp.status] += 1
                except (aiohttp.ClientError, TimeoutError):
                    statuses[0] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


class MemorySampler:
    """Samples a node's process-tree memory every `interval` seconds in a thread."""

    def __init__(self, node: localnet.LocalnetNode, interval: float = 0.25) -> None:
        self.node, self.interval = node, interval
        self.samples: list[dict[str, int]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            self.samples.append(tree_memory(self.node))

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(5)

    def peak(self, key: str) -> int:
        return max((s[key] for s in self.samples), default=0)


def _flood_phase(net: localnet.Localnet, name: str, value_bytes: int, seed: int,
                 paused: tuple[int, ...]) -> tuple[Counter[int], dict, dict, dict]:
    target = net.nodes[2]
    bodies = flood_bodies(net.chain_id, int(2000 * FLOOD_S), value_bytes, seed)
    before = tree_memory(target)
    t0 = time.monotonic()
    with MemorySampler(target) as sampler:  # the peak covers the recovery too
        with stalled(net, paused) if paused else contextlib.nullcontext():
            statuses = asyncio.run(_flood(target.rpc, bodies, FLOOD_S, concurrency=64))
            elapsed = time.monotonic() - t0
        # Once commits resume, whatever the flood left in the mempools drains.
        wait_until(lambda: metric(metrics(target.rpc), "bftnode_mempool_txs") == 0, 120,
                   "the mempool to drain")
        expect_commits(net, [0, 1, 2, 3], blocks=3, timeout=60)
        time.sleep(5)
    after = tree_memory(target)
    peak = {k: max(sampler.peak(k), before[k]) for k in ("rss", "anon", "pss")}
    sent = sum(statuses.values())
    print(f"\n{name}: {sent} requests to node 2 in {elapsed:.1f} s ({sent / elapsed:.0f}/s), "
          f"valid txs carry {value_bytes} B values; answers {dict(sorted(statuses.items()))}")
    print(f"  MiB over node 2's {before['processes']} process(es), before / peak / after:")
    for key, what in (("rss", "RSS"), ("anon", "RSS anon (heap)"), ("pss", "PSS")):
        print(f"    {what:16} {before[key] / MIB:6.0f} {peak[key] / MIB:6.0f} "
              f"{after[key] / MIB:6.0f}")
    return statuses, before, peak, after


def test_flood_memory_stays_bounded(net) -> None:
    """A flood while the chain commits, then one while it cannot (two validators
    paused), so admitted txs pile up to the mempool's byte limit (64 MiB in the
    localnet preset) and the rest are refused with 503."""
    # The mempool holds at most 64 MiB (the localnet preset), but the block that
    # commits it all at once is copied several times on its way (msgpack between
    # the supervisor and the actors, batch decoding, LMDB): the heap peaks near 8x
    # the block's bytes while it commits (see docs/BENCHMARKS.md). Generous bound.
    ceiling = 1024 * MIB
    statuses, before, peak, after = _flood_phase(net, "flood while committing", 32, 7, ())
    assert statuses.get(500, 0) == 0 and statuses.get(0, 0) == 0, statuses
    assert statuses[202] > 0 and statuses[400] > 0 and statuses[413] > 0, statuses
    assert peak["rss"] < before["rss"] + ceiling and after["rss"] < before["rss"] + ceiling
    statuses, before, peak, after = _flood_phase(net, "flood while stalled", 32 * 1024, 8,
                                                 (0, 1))
    assert statuses.get(500, 0) == 0 and statuses.get(0, 0) == 0, statuses
    assert statuses[503] > 0, f"the mempool never filled: {statuses}"
    assert peak["rss"] < before["rss"] + ceiling, f"RSS peaked at {peak['rss'] / MIB:.0f} MiB"
    assert after["rss"] < before["rss"] + ceiling
