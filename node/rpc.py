"""The HTTP API of a node (DESIGN section 8), on aiohttp.

Every handler answers JSON (except /metrics), never lets an exception escape as
a 500 for bad input, and counts each refusal by reason in /metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from node.supervisor import Node

log = logging.getLogger(__name__)

_HASH_RE = re.compile(r"^[0-9a-f]{64}$")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


class RpcServer:
    def __init__(self, node: Node, host: str, port: int, max_body_bytes: int,
                 max_connections: int, wait_timeout_s: float) -> None:
        self.node = node
        self.host = host
        self.port = port
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        self.wait_timeout_s = wait_timeout_s
        self._runner: web.AppRunner | None = None
        self._open = 0
        self._websockets: set[web.WebSocketResponse] = set()
        app = web.Application(client_max_size=max_body_bytes,
                              middlewares=[self._limit_connections])
        app.router.add_post("/v1/txs", self.post_tx)
        app.router.add_get("/v1/txs/{hash}", self.get_tx)
        app.router.add_get("/v1/status", self.get_status)
        app.router.add_get("/v1/blocks/{height}", self.get_block)
        app.router.add_get("/v1/receipts/{hash}", self.get_receipt)
        app.router.add_get("/v1/events", self.events)
        app.router.add_get("/metrics", self.metrics)
        self.app = app

    def _reject(self, status: int, reason: str, label: str) -> web.Response:
        self.node.metrics.http_rejected.labels(label).inc()
        return _json({"error": reason}, status)

    @web.middleware
    async def _limit_connections(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self._open >= self.max_connections:
            return self._reject(503, f"too many open requests (limit {self.max_connections})",
                                "connections")
        self._open += 1
        try:
            return await handler(request)
        finally:
            self._open -= 1

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()

    async def stop(self) -> None:
        for ws in list(self._websockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def post_tx(self, request: web.Request) -> web.Response:
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            return self._reject(413, f"body of {length} bytes exceeds the "
                                f"{self.max_body_bytes}-byte limit", "body_too_large")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._reject(413, f"body exceeds the {self.max_body_bytes}-byte limit",
                                "body_too_large")
        if not body:
            return self._reject(400, "empty body: expected one encoded signed transaction",
                                "empty_body")
        wait = request.query.get("wait")
        if wait not in (None, "commit"):
            return self._reject(400, f"unknown wait mode {wait!r} (expected 'commit')",
                                "bad_query")
        tx_hash, error, status = await self.node.submit_tx(body)
        if error is not None:
            return _json({"error": error}, status)
        if wait is None:
            return _json({"hash": tx_hash}, 202)
        try:
            timeout = float(request.query.get("timeout", self.wait_timeout_s))
        except ValueError:
            return self._reject(400, "timeout must be a number of seconds", "bad_query")
        result = await self.node.wait_committed(tx_hash, min(timeout, self.wait_timeout_s))
        if result is None:
            return _json({"error": f"transaction {tx_hash} not committed within {timeout} s",
                          "hash": tx_hash}, 504)
        return _json(result, 200)

    async def get_tx(self, request: web.Request) -> web.Response:
        h = request.match_info["hash"].lower()
        if not _HASH_RE.match(h):
            return self._reject(400, "transaction hash must be 64 hex characters", "bad_hash")
        return _json(await self.node.tx_status(h))

    async def get_status(self, request: web.Request) -> web.Response:
        return _json(await self.node.status())

    async def get_block(self, request: web.Request) -> web.Response:
        raw = request.match_info["height"]
        if raw == "latest":
            height = None
        else:
            try:
                height = int(raw)
            except ValueError:
                return self._reject(400, "height must be an integer or 'latest'", "bad_height")
            if height < 1:
                return self._reject(400, "height must be >= 1", "bad_height")
        block = await self.node.block_json(height)
        if block is None:
            return _json({"error": f"no block at height {raw}"}, 404)
        return _json(block)

    async def get_receipt(self, request: web.Request) -> web.Response:
        h = request.match_info["hash"].lower()
        if not _HASH_RE.match(h):
            return self._reject(400, "transaction hash must be 64 hex characters", "bad_hash")
        receipt = await self.node.finality_receipt(h)
        if receipt is None:
            return _json({"error": f"transaction {h} is not committed"}, 404)
        return _json(receipt)

    async def metrics(self, request: web.Request) -> web.Response:
        await self.node.refresh_metrics()
        return web.Response(body=self.node.metrics.render(),
                            content_type="text/plain", charset="utf-8")

    async def events(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20.0)
        await ws.prepare(request)
        queue = self.node.subscribe()
        self._websockets.add(ws)

        async def pump() -> None:
            while True:
                event = await queue.get()
                await ws.send_str(json.dumps(event))

        pump_task = asyncio.create_task(pump())
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            pump_task.cancel()
            self.node.unsubscribe(queue)
            self._websockets.discard(ws)
        return ws
