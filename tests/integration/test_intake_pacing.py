"""The intake loop's pacing and its bookkeeping of fetched batches, on a real node.

One in-process validator: clients' txs arrive a few at a time, as under a moderate
load, and must be sealed into batches of about one batch timeout, not one batch per
intake round (rounds take a millisecond or two; a tiny batch per round multiplies
every per-batch cost on every validator). A batch that consensus asked to fetch
stops counting as fetched the moment it is stored, each of several stored at once.
And the loops' batching wait gives way to a cancel, so that the node can stop.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from crypto import sha256
from node import localnet
from node.client import Client, ClientError
from node.config import load_config
from node.genesis import load_genesis
from node.supervisor import Node, _gather
from node.tx import Batch
from node.wallet import Wallet
from node.wire import BatchGossip

from .harness import inprocess_node

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _post_status(url: str, body: bytes) -> tuple[int, str | None, str]:
    """(status, Retry-After header, error text) of a refused POST."""
    req = urllib.request.Request(url, data=body, method="POST")
    try:
        urllib.request.urlopen(req, timeout=10).close()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Retry-After"), json.loads(exc.read())["error"]
    raise AssertionError(f"POST {url} was admitted")


def _with_node(tmp_path: Path, test: Callable[[Node], Awaitable[None]]) -> None:
    async def run() -> None:
        async with inprocess_node(tmp_path / "net") as node:
            await test(node)

    asyncio.run(run())


def test_a_trickle_of_txs_is_sealed_per_batch_timeout_not_per_round(tmp_path: Path) -> None:
    count, spacing_s = 100, 0.001

    async def check(node: Node) -> None:
        mempool = node.mempool.obj
        window_s = node.cfg.mempool.batch_timeout_ms / 1000
        w = Wallet.from_seed(sha256(b"trickle"))
        txs = [w.kv_set(node.chain_id, b"k%d" % i, b"v") for i in range(count)]
        before = mempool.stats["sealed_batches"]
        answers = []
        for tx in txs:
            answers.append(node.submit_nowait(tx))
            await asyncio.sleep(spacing_s)
        results = await asyncio.gather(*answers)
        assert [status for _h, _reason, status in results] == [202] * count
        sealed = mempool.stats["sealed_batches"] - before
        # 100 ms of arrivals 1 ms apart: a handful of batch timeouts (20 ms each), however
        # slow the machine (slower rounds only gather more). Rounds run back to back
        # after the first window, as they once did, sealed 10-11 here.
        span_s = count * spacing_s
        assert 1 <= sealed <= span_s / window_s + 3, sealed

    _with_node(tmp_path, check)


def test_clients_are_refused_while_peers_batches_wait_too_long_to_be_verified(
        tmp_path: Path) -> None:
    """Backpressure: a node behind on verifying its peers' batches refuses clients' txs
    (503, node busy) instead of adding to every validator's queue, and admits again once
    it has caught up."""
    per_batch, batches = 300, 66       # a verifier call takes 64: two wait for it to end

    async def check(node: Node) -> None:
        node._max_verify_wait = 0.01   # [mempool] max_verify_wait_ms = 10
        chain = node.chain_id
        gossip = [BatchGossip(Batch(tuple(
            Wallet.from_seed(sha256(b"peer %d" % b)).kv_set(chain, b"k%d" % i, b"v")
            for i in range(per_batch))).encode()).encode() for b in range(batches)]
        client = Wallet.from_seed(sha256(b"client"))
        busy = node.metrics.txs_rejected.labels("node_busy")
        refused_before = busy._value.get()
        for payload in gossip:          # all queued before the batch loop runs
            await node._on_peer_message(b"\x01" * 32, payload)
        answer = None
        while node._remote_batches:
            if time.monotonic() - node._remote_batches[0][0] > 0.02:
                answer = await node.submit_nowait(client.kv_set(chain, b"c", b"refused"))
                break
            await asyncio.sleep(0.001)
        # 64 x 300 signatures take far longer than 20 ms anywhere: the last two waited.
        assert answer is not None, "the peers' batches never waited 20 ms"
        h, reason, status = answer
        assert status == 503 and h is None
        assert reason.startswith("node busy: a peer's batch has waited "), reason
        assert reason.endswith("ms to be verified (limit 10 ms); retry later"), reason
        assert busy._value.get() == refused_before + 1
        client.nonce -= 1               # refused: the wallet's next tx reuses the nonce
        # /metrics shows the queue and its oldest batch's wait (read while they last).
        await node.refresh_metrics()
        assert node.metrics.verify_queue._value.get() >= 1
        assert node.metrics.verify_wait._value.get() > 0.02
        url = "http://" + node.cfg.rpc.listen
        # Over HTTP, on the fast path (a plain POST) and on aiohttp's (?wait=commit) alike:
        # 503 with a Retry-After hint.
        for path in ("/v1/txs", "/v1/txs?wait=commit"):
            refused = await asyncio.to_thread(
                _post_status, url + path, client.kv_set(chain, b"c", b"refused over http"))
            client.nonce -= 1
            assert refused[0] == 503 and refused[1] == "1", (path, refused)
            assert refused[2].startswith("node busy: "), (path, refused)
        # The client library: refused at once with busy_timeout=0 ...
        with pytest.raises(ClientError) as refused:
            await asyncio.to_thread(Client(url, busy_timeout=0).submit,
                                    client.kv_set(chain, b"c", b"refused again"))
        client.nonce -= 1
        assert refused.value.status == 503 and "node busy" in str(refused.value)
        # ... and by default sends the same tx again until the node takes it.
        retried = asyncio.create_task(asyncio.to_thread(
            Client(url, busy_timeout=60).submit, client.kv_set(chain, b"c", b"retried")))
        while busy._value.get() < refused_before + 3:   # refused once more at least
            assert not retried.done(), "the client was never refused"
            await asyncio.sleep(0.001)
        node._max_verify_wait = 0       # 0: never refused for this
        assert node._verify_backlog() is None
        node._max_verify_wait = 0.01
        while node._remote_batches:     # caught up: admitted again
            await asyncio.sleep(0.01)
        h, reason, status = await node.submit_nowait(client.kv_set(chain, b"c", b"admitted"))
        assert (status, reason) == (202, None)
        assert bytes.fromhex(await retried) in node.mempool.obj._known
        await node.refresh_metrics()
        assert node.metrics.verify_queue._value.get() == 0
        assert node.metrics.verify_wait._value.get() == 0
        # The queue empties when the last call takes its batches, before it stores them.
        stats = node.mempool.obj.stats
        for _ in range(3000):
            if stats["remote_batches"] >= batches:
                break
            await asyncio.sleep(0.01)
        assert stats["remote_batches"] >= batches, stats["remote_batches"]

    _with_node(tmp_path, check)


def test_every_fetched_batch_stored_in_one_round_stops_being_fetched(tmp_path: Path) -> None:
    net = localnet.generate(tmp_path / "net", 1, runtime="inprocess")
    cfg = load_config(net.nodes[0].home)
    node = Node(cfg, load_genesis(cfg.genesis_path))   # bookkeeping only: not started
    digests = [sha256(b"batch %d" % i) for i in range(3)]
    for d in digests:
        node._fetching[d] = 0.0
    node._fetching[b"\x01" * 32] = 0.0          # still missing: stays
    node._stored_batches([[digests[0], "stored", 2], [digests[1], "known", 1],
                          [digests[2], "held", 1]])
    assert list(node._fetching) == [b"\x01" * 32]


def test_a_batch_arriving_twice_at_once_is_verified_once(tmp_path: Path) -> None:
    # A lagging node gets a block-sync answer carrying batches its queue also holds: the
    # two mempool calls overlapped and each verified its copy. Made one after the other,
    # the later copy is known.
    count = 400

    async def check(node: Node) -> None:
        mempool = node.mempool.obj
        w = Wallet.from_seed(sha256(b"twice"))
        encoded = Batch(tuple(w.kv_set(node.chain_id, b"k%d" % i, b"v")
                              for i in range(count))).encode()
        before = mempool.verify_stats()[0]
        await asyncio.gather(node._admit_remote_batches([(encoded, False)]),
                             node._admit_remote_batches([(encoded, True)]))
        assert mempool.verify_stats()[0] - before == count
        assert mempool.size()[0] == count

    _with_node(tmp_path, check)


def test_a_gathering_loop_stops_when_cancelled_as_its_event_fires() -> None:
    # The intake and consensus loops wait in _gather. With asyncio.wait_for under
    # Python 3.11, a cancel arriving in the same loop turn as `now` was swallowed: the
    # loop went back to waiting for `wake`, and Node.stop waited for it forever.
    async def main() -> None:
        wake, now = asyncio.Event(), asyncio.Event()

        async def loop() -> None:
            while True:
                wake.set()
                await _gather(wake, now, 10.0)

        task = asyncio.create_task(loop())
        await asyncio.sleep(0.01)          # the task waits for `now`, within the delay
        now.set()
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2.0)
        assert task in done and task.cancelled()

    asyncio.run(main())
