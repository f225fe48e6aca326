"""The HTTP API of a node (DESIGN section 8), on aiohttp.

Every handler answers JSON (except /metrics), never lets an exception escape as
a 500 for bad input, and counts each refusal by reason in /metrics.

Connections. ``[rpc] max_connections`` bounds the client TCP connections open at
once (idle keep-alive ones and /v1/events WebSockets included), not only the
requests being served: each holds a file descriptor and buffers whether it
sends anything or not. The listener counts them itself (`_LimitedSite`); one
more is answered ``503 {"error": "too many open connections ..."}`` and closed.

Submissions. A plain ``POST /v1/txs`` (no query, a Content-Length body, nothing
asking for more than a keep-alive exchange) is parsed and answered by the
connection itself (`_CountedHandler`'s fast path), pipelined requests in order:
aiohttp's request machinery costs tens of microseconds per request, and every
transaction a client sends crosses it. Anything else on the connection (a GET,
``?wait=commit``, chunked bodies, ``Expect``, ``Connection: close``, a body over
the limit) hands the connection to aiohttp for good, once the answers the fast
path still owes have been written. Both give the same status and JSON body.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import json
import logging
import math
import re
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from node.client import REFUSED_FOR_NOW

if TYPE_CHECKING:
    from node.supervisor import Node

log = logging.getLogger(__name__)

_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
_HEIGHT_RE = re.compile(r"^[0-9]{1,19}$")
_MAX_HEIGHT = 2**63 - 1
_REFUSED_LINGER_S = 2.0   # how long a refused connection may take to send its request
_REFUSED_HEAD_BYTES = 16 * 1024
_FAST_REQUEST_LINE = b"POST /v1/txs HTTP/1.1\r\n"
_FAST_HEAD_MAX = 8 * 1024       # a longer head goes to aiohttp (which applies its limits)
_FAST_MAX_PENDING = 128         # answers owed on one connection before it stops reading
# Headers that ask for more than the fast path does; "connection" is fine as keep-alive.
_FAST_HANDS_OVER = frozenset((b"transfer-encoding", b"expect", b"upgrade", b"connection"))

# What submitting one tx returns, resolved later: (hash hex, None, 202) or (None, reason,
# status), as `Node.submit_tx`.
Submit = Callable[[bytes], "asyncio.Future[tuple[str | None, str | None, int]]"]


class _DateHeader:
    """The Date header, formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def line(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._line = b"Date: %s\r\n" % email.utils.formatdate(now, usegmt=True).encode()
        return self._line


_DATE = _DateHeader()


# Sent with every 503 that refuses for now (node busy, mempool full, too many
# connections; node.client's REFUSED_FOR_NOW, the client's own test of the same): a
# hint, in seconds, for clients that pace their retries by it (node.client keeps its
# own). Not with a halted node's 503: retrying will not help.
RETRY_AFTER_S = 1


def _retry_after(status: int, error: str | None) -> bool:
    return status == 503 and (error or "").startswith(REFUSED_FOR_NOW)


def _fast_answer(result: tuple[str | None, str | None, int]) -> bytes:
    tx_hash, error, status = result
    body = json.dumps({"hash": tx_hash} if error is None else {"error": error}).encode()
    return b"".join((
        b"HTTP/1.1 %d %s\r\n" % (status, http.HTTPStatus(status).phrase.encode()),
        b"Content-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n"
        % len(body), b"Retry-After: %d\r\n" % RETRY_AFTER_S if _retry_after(status, error)
        else b"", _DATE.line(), b"Server: bftnode\r\n\r\n", body))


def _fast_body_length(head: bytes, max_body: int) -> int | None:
    """The body length of a request head the fast path serves, else None."""
    if not head.startswith(_FAST_REQUEST_LINE):
        return None
    length = None
    for line in head[len(_FAST_REQUEST_LINE):].split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            return None     # not a header line aiohttp would accept either: let it answer
        name = name.lower()
        if name == b"content-length":
            value = value.strip()
            if length is not None or not value.isdigit():
                return None
            length = int(value)
        elif name in _FAST_HANDS_OVER:
            if name != b"connection" or value.strip().lower() != b"keep-alive":
                return None
    if length is None or not 0 < length <= max_body:
        return None
    return length


class _ConnectionCount:
    """Client connections open on a listener: accepted ones, and ones being accepted."""

    def __init__(self) -> None:
        self.connected = 0
        # Made by the protocol factory, connection_made not yet run; an accept that
        # fails in between leaves nothing behind (the handler is collected).
        self.accepting: weakref.WeakSet[RequestHandler] = weakref.WeakSet()

    def __len__(self) -> int:
        return self.connected + len(self.accepting)


class _CountedHandler(RequestHandler):
    """aiohttp's per-connection protocol, counted in a `_ConnectionCount`.

    A request that does not parse as HTTP is the client's fault: aiohttp answers
    400 and would log it at ERROR with a traceback, so that any client could fill
    the log (and hide real errors). It is counted and logged at DEBUG instead.
    """

    def __init__(self, manager: Any, count: _ConnectionCount,
                 on_bad_request: Callable[[], None], submit: Submit | None = None,
                 max_body: int = 0, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._count = count
        self._counted = False
        self._on_bad_request = on_bad_request
        count.accepting.add(self)
        # Fast path (module docstring): on until the first request it does not serve.
        self._submit = submit
        self._fast_max_body = max_body
        self._fast = submit is not None
        self._fast_buf = bytearray()
        self._owed: deque[asyncio.Future] = deque()   # fast answers not yet written
        self._fast_paused = False
        self._handover: bytearray | None = None       # for aiohttp once `_owed` drains

    def data_received(self, data: bytes) -> None:
        if self._handover is not None:
            self._handover += data
        elif not self._fast:
            super().data_received(data)
        else:
            self._fast_buf += data
            self._fast_requests()

    def _fast_requests(self) -> None:
        buf = self._fast_buf
        assert self._submit is not None
        served = False
        while buf:
            end = buf.find(b"\r\n\r\n", 0, _FAST_HEAD_MAX)
            if end < 0:
                if len(buf) >= _FAST_HEAD_MAX or not _FAST_REQUEST_LINE.startswith(
                        bytes(buf[:len(_FAST_REQUEST_LINE)])):
                    self._leave_fast()
                return
            length = _fast_body_length(bytes(buf[:end]), self._fast_max_body)
            if length is None:
                self._leave_fast()
                return
            if len(buf) < end + 4 + length:
                break
            body = bytes(buf[end + 4:end + 4 + length])
            del buf[:end + 4 + length]
            fut = self._submit(body)
            self._owed.append(fut)
            fut.add_done_callback(self._write_owed)
            served = True
        if served and self._keepalive_timeout > 0:
            # aiohttp closes a connection it believes idle once the keep-alive time passes.
            self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
        if len(self._owed) >= _FAST_MAX_PENDING and not self._fast_paused:
            self._fast_paused = True
            if self.transport is not None:
                self.transport.pause_reading()

    def _write_owed(self, _done: asyncio.Future | None = None) -> None:
        out = []
        owed = self._owed
        while owed and owed[0].done():
            fut = owed.popleft()
            if fut.cancelled() or fut.exception() is not None:
                out.append(_fast_answer((None, "internal error admitting the transaction",
                                         500)))
            else:
                out.append(_fast_answer(fut.result()))
        if out and self.transport is not None:
            self.transport.write(b"".join(out))
        if self._fast_paused and len(owed) < _FAST_MAX_PENDING // 2:
            self._fast_paused = False
            if self.transport is not None:
                self.transport.resume_reading()
        if not owed and self._handover is not None:
            data, self._handover = bytes(self._handover), None
            if data and self.transport is not None:
                super().data_received(data)

    def _leave_fast(self) -> None:
        """Hand the connection to aiohttp, from the first request the fast path does not
        serve; the bytes wait until the fast answers owed are written (answers in order)."""
        self._fast = False
        data = bytes(self._fast_buf)
        self._fast_buf.clear()
        if self._owed:
            self._handover = bytearray(data)
        else:
            super().data_received(data)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        if isinstance(kw.get("exc_info"), HttpProcessingError):
            self._on_bad_request()
            self.logger.debug(*args, **kw)
            return
        super().log_exception(*args, **kw)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._count.accepting.discard(self)
        self._count.connected += 1
        self._counted = True
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._counted:
            self._counted = False
            self._count.connected -= 1
        super().connection_lost(exc)


class _RefusedConnection(asyncio.Protocol):
    """Reads the request head, answers one fixed response and closes.

    The response goes out after the head has arrived (or a short while), and the
    socket is closed only once the client stops sending: closing with unread input
    would make the kernel reset the connection and lose the answer.
    """

    def __init__(self, response: bytes) -> None:
        self._response = response
        self._head = bytearray()
        self._transport: asyncio.Transport | None = None
        self._answered = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(_REFUSED_LINGER_S, self._give_up)

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return  # the rest of the request: discarded
        self._head += data
        if b"\r\n\r\n" in self._head or len(self._head) >= _REFUSED_HEAD_BYTES:
            self._answer()

    def eof_received(self) -> bool | None:
        self._answer()
        return False

    def _answer(self) -> None:
        if self._answered or self._transport is None:
            return
        self._answered = True
        self._transport.write(self._response)
        if self._transport.can_write_eof():
            self._transport.write_eof()
        else:
            self._transport.close()

    def _give_up(self) -> None:
        self._answer()
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None


class _LimitedSite(web.TCPSite):
    """A TCPSite whose listener refuses connections beyond `limit` open ones."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, limit: int,
                 on_refuse: Callable[[], None], on_bad_request: Callable[[], None],
                 handler_args: dict[str, Any], submit: Submit | None = None,
                 max_body: int = 0) -> None:
        super().__init__(runner, host, port, reuse_address=True)
        self.limit = limit
        self._submit = submit
        self._max_body = max_body
        self._on_bad_request = on_bad_request
        self._handler_args = handler_args  # what the runner gives aiohttp's own handlers
        self.count = _ConnectionCount()
        self._on_refuse = on_refuse
        body = json.dumps({"error": f"too many open connections (limit {limit})"}).encode()
        self._refusal = (b"HTTP/1.1 503 Service Unavailable\r\n"
                         b"Content-Type: application/json; charset=utf-8\r\n"
                         b"Content-Length: %d\r\nRetry-After: %d\r\nConnection: close\r\n\r\n"
                         % (len(body), RETRY_AFTER_S)) + body

    def _protocol(self) -> asyncio.Protocol:
        server = self._runner.server
        assert server is not None
        if len(self.count) >= self.limit:
            self._on_refuse()
            return _RefusedConnection(self._refusal)
        return _CountedHandler(server, self.count, self._on_bad_request, self._submit,
                               self._max_body, loop=asyncio.get_running_loop(),
                               **self._handler_args)

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, self._host, self._port, backlog=self._backlog,
            reuse_address=self._reuse_address)


def _json(data: Any, status: int = 200) -> web.Response:
    error = data.get("error") if isinstance(data, dict) else None
    headers = {"Retry-After": str(RETRY_AFTER_S)} if _retry_after(status, error) else None
    return web.json_response(data, status=status, headers=headers)


class RpcServer:
    def __init__(self, node: Node, host: str, port: int, max_body_bytes: int,
                 max_connections: int, wait_timeout_s: float, fast_path: bool = True) -> None:
        self.node = node
        self.fast_path = fast_path
        self.host = host
        self.port = port
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        self.wait_timeout_s = wait_timeout_s
        self._runner: web.AppRunner | None = None
        self._site: _LimitedSite | None = None
        self._websockets: set[web.WebSocketResponse] = set()
        app = web.Application(client_max_size=max_body_bytes)
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

    @property
    def open_connections(self) -> int:
        return len(self._site.count) if self._site is not None else 0

    async def start(self) -> None:
        handler_args: dict[str, Any] = {"access_log": None}
        self._runner = web.AppRunner(self.app, handle_signals=False, **handler_args)
        await self._runner.setup()
        self._site = _LimitedSite(
            self._runner, self.host, self.port, self.max_connections,
            on_refuse=lambda: self.node.metrics.http_rejected.labels("connections").inc(),
            on_bad_request=lambda: self.node.metrics.http_rejected.labels("bad_http").inc(),
            handler_args=handler_args,
            submit=self.node.submit_nowait if self.fast_path else None,
            max_body=self.max_body_bytes)
        await self._site.start()

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
        timeout = self.wait_timeout_s
        if wait is not None and "timeout" in request.query:
            # Checked before the tx is admitted: a refused request must change nothing.
            try:
                timeout = float(request.query["timeout"])
            except ValueError:
                timeout = math.nan
            if not (math.isfinite(timeout) and timeout >= 0):
                return self._reject(400, "timeout must be a finite number of seconds >= 0",
                                    "bad_query")
            timeout = min(timeout, self.wait_timeout_s)
        tx_hash, error, status = await self.node.submit_tx(body)
        if error is not None:
            return _json({"error": error}, status)
        if wait is None:
            return _json({"hash": tx_hash}, 202)
        result = await self.node.wait_committed(tx_hash, timeout)
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
            if not _HEIGHT_RE.match(raw):
                return self._reject(400, "height must be decimal digits or 'latest'",
                                    "bad_height")
            height = int(raw)
            if not 1 <= height <= _MAX_HEIGHT:
                return self._reject(400, f"height must be in 1..{_MAX_HEIGHT}", "bad_height")
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

    async def events(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=20.0)
        if not ws.can_prepare(request).ok:
            return self._reject(400, "/v1/events is a WebSocket: send a WebSocket upgrade "
                                "request", "not_websocket")
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
