"""The RPC fast path for tx submission answers exactly as aiohttp's route does.

One real in-process validator (its own listener serves the fast path) and a second
`RpcServer` on the same node with the fast path off: the same raw HTTP/1.1 bytes go
to both over 127.0.0.1 and the answers must agree (status and JSON body), in order,
whatever the requests are and however they are split or pipelined.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from crypto import sha256
from node import localnet
from node.loadgen import parse_responses
from node.rpc import RpcServer
from node.supervisor import Node
from node.wallet import Wallet

from .harness import inprocess_node

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _post(body: bytes, path: str = "/v1/txs", extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            f"{extra}Content-Length: {len(body)}\r\n\r\n").encode() + body


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


async def _exchange(port: int, chunks: list[bytes], answers: int,
                    timeout: float = 30.0) -> list[tuple[int, dict]]:
    """Write `chunks` one by one on one connection; read `answers` responses."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
        buf = bytearray()
        got: list[tuple[int, bytes]] = []
        async with asyncio.timeout(timeout):
            while len(got) < answers:
                data = await reader.read(65536)
                if not data:
                    break
                buf += data
                got += parse_responses(buf)
        return [(status, json.loads(body)) for status, body in got]
    finally:
        writer.close()


def _with_node(tmp_path: Path, test: Callable[[Node, int, int], Awaitable[None]]) -> None:
    async def run() -> None:
        async with inprocess_node(tmp_path / "net") as node:
            rpc = node.cfg.rpc
            slow = RpcServer(node, "127.0.0.1", localnet.PortAllocator().take(),
                             rpc.max_body_bytes, rpc.max_connections, rpc.wait_timeout_s,
                             fast_path=False)
            await slow.start()
            try:
                assert node.rpc is not None and node.rpc.fast_path
                await test(node, node.rpc.port, slow.port)
            finally:
                await slow.stop()

    asyncio.run(run())


def test_fast_and_aiohttp_paths_give_the_same_answers(tmp_path: Path) -> None:
    async def check(node: Node, fast: int, slow: int) -> None:
        chain = node.chain_id
        answers = {}
        for name, port in (("fast", fast), ("slow", slow)):
            w = Wallet.from_seed(sha256(name.encode()))
            good = [w.kv_set(chain, b"k%d" % i, b"v") for i in range(3)]
            forged = bytearray(w.kv_set(chain, b"forged", b"v"))
            forged[-1] ^= 1   # the signature's last byte
            requests = [
                _post(good[0]),
                _post(good[0]),                         # duplicate
                _post(b"\x93not a tx"),                 # malformed
                _post(bytes(forged)),                   # invalid signature
                _post(Wallet.generate().kv_set("other-chain", b"k", b"v")),
                _post(good[1], extra="Connection: keep-alive\r\n"),
                _post(b"x" * (node.cfg.rpc.max_body_bytes + 1)),   # 413 (aiohttp from here)
                _post(good[2]),
            ]
            got = await _exchange(port, [b"".join(requests)], len(requests))
            assert len(got) == len(requests), (name, got)
            answers[name] = (got, [sha256(t).hex() for t in good])
        (fast_got, fast_hashes), (slow_got, slow_hashes) = answers["fast"], answers["slow"]
        assert [s for s, _ in fast_got] == [s for s, _ in slow_got] == [
            202, 400, 400, 400, 400, 202, 413, 202]
        assert fast_got[0][1] == {"hash": fast_hashes[0]}
        assert slow_got[0][1] == {"hash": slow_hashes[0]}
        assert fast_got[5][1] == {"hash": fast_hashes[1]}
        assert fast_got[7][1] == {"hash": fast_hashes[2]}
        for i in (2, 4, 6):   # refusals whose text does not name the tx
            assert fast_got[i][1] == slow_got[i][1], i
        # The duplicate: "already in the mempool" or "already committed" depending on
        # whether the first copy's block committed before the second came through intake
        # (aiohttp waits for the first answer before it reads the second request).
        for got in (fast_got, slow_got):
            assert got[1][1]["error"] in ("duplicate: transaction already in the mempool",
                                          "duplicate: transaction already committed")
        assert fast_got[3][1]["error"].startswith("invalid signature")
        assert slow_got[3][1]["error"].startswith("invalid signature")

    _with_node(tmp_path, check)


def test_pipelined_and_split_requests_are_answered_in_order(tmp_path: Path) -> None:
    async def check(node: Node, fast: int, slow: int) -> None:
        chain = node.chain_id
        w = Wallet.generate()
        txs = [w.kv_set(chain, b"k%d" % i, b"v" * 50) for i in range(300)]
        stream = b"".join(_post(t) for t in txs)
        # Cut at awkward places: inside request lines, heads, CRLFs and bodies.
        cuts = list(range(0, len(stream), 97)) + [len(stream)]
        chunks = [stream[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
        got = await _exchange(fast, chunks, len(txs))
        assert got == [(202, {"hash": sha256(t).hex()}) for t in txs]
        # A GET, a wait, and posts after them on the same connection: aiohttp takes over
        # in order, after the fast answers still owed.
        w2 = Wallet.generate()
        more = [w2.kv_set(chain, b"m%d" % i, b"v") for i in range(4)]
        requests = [_post(more[0]), _post(more[1]), _get("/v1/status"),
                    _post(more[2], path="/v1/txs?wait=commit"), _post(more[3])]
        got = await _exchange(fast, [b"".join(requests)], len(requests))
        assert [s for s, _ in got] == [202, 202, 200, 200, 202]
        assert got[0][1] == {"hash": sha256(more[0]).hex()}
        assert got[2][1]["chain_id"] == chain
        assert got[3][1]["hash"] == sha256(more[2]).hex() and got[3][1]["code"] == 0
        assert got[4][1] == {"hash": sha256(more[3]).hex()}
        result = await node.wait_committed(sha256(txs[-1]).hex(), 30)
        assert result is not None and result["code"] == 0

    _with_node(tmp_path, check)


def test_requests_the_fast_path_does_not_serve_go_to_aiohttp(tmp_path: Path) -> None:
    async def check(node: Node, fast: int, slow: int) -> None:
        chain = node.chain_id
        w = Wallet.generate()
        tx = w.kv_set(chain, b"chunked", b"v")
        chunked = (b"POST /v1/txs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + b"%x\r\n" % len(tx) + tx + b"\r\n0\r\n\r\n")
        got = await _exchange(fast, [chunked], 1)
        assert got == [(202, {"hash": sha256(tx).hex()})]
        empty = await _exchange(fast, [_post(b"")], 1)
        assert empty[0][0] == 400 and "empty body" in empty[0][1]["error"]
        tx2 = w.kv_set(chain, b"close", b"v")
        closing = await _exchange(fast, [_post(tx2, extra="Connection: close\r\n")], 1)
        assert closing == [(202, {"hash": sha256(tx2).hex()})]
        assert node.metrics.http_rejected.labels("empty_body")._value.get() == 1

    _with_node(tmp_path, check)


def test_a_halted_node_refuses_without_a_retry_hint(tmp_path: Path) -> None:
    # Retry-After tells a client the refusal is for now; a halted node's is final.
    async def raw_answer(port: int, body: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(_post(body))
            await writer.drain()
            async with asyncio.timeout(30):
                data = b""
                while b"\r\n\r\n" not in data or not data.endswith(b"}"):
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    data += chunk
            return data
        finally:
            writer.close()

    async def check(node: Node, fast: int, slow: int) -> None:
        tx = Wallet.generate().kv_set(node.chain_id, b"k", b"v")
        node.halt("test: the executor failed")
        for port in (fast, slow):
            answer = await raw_answer(port, tx)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503"), answer
            assert json.loads(body)["error"] == "node halted: test: the executor failed"
            assert b"retry-after" not in head.lower(), head

    _with_node(tmp_path, check)
