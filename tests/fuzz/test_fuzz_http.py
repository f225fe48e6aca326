"""The HTTP API of a real node against random requests: bodies (valid, mutated and
random transactions), headers, query strings, paths and methods, and raw request
heads that are not quite HTTP.

Properties: never a 500, an answer for every well-framed request within a bound
(no hang), the node keeps committing, and every refusal the API makes (a JSON
``{"error"}`` with 400, 413 or 503) is counted by reason in /metrics, exactly.
Integration: one in-process validator on 127.0.0.1 (tests/fuzz/conftest.py).
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.parse
from itertools import count

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto import sha256
from node import localnet
from node.wallet import Wallet
from tests.integration.harness import metric, metrics

from .conftest import FUZZ, TIMEOUT_S, mutated

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300 + TIMEOUT_S)]
ANSWER_WITHIN_S = 35.0  # a valid tx with ?wait=commit waits for its block
_wallet_ids = count()


def rejections(text: str) -> float:
    return metric(text, "bftnode_http_rejected_total") + metric(text, "bftnode_txs_rejected_total")


def fresh_tx(chain_id: str, value: bytes) -> bytes:
    w = Wallet.from_seed(sha256(b"fuzz-http-%d" % next(_wallet_ids)))
    return w.kv_set(chain_id, b"fuzz", value)


segments = st.one_of(
    st.sampled_from(["latest", "0", "1", "-1", "+1", "01", "1.5", "1e3", "9" * 19, "9" * 30,
                     "a" * 64, "A" * 64, "0" * 63, "0" * 65, "g" * 64, "\u0661", "%00",
                     "..", "."]).map(lambda t: urllib.parse.quote(t, safe="%+.-")),
    st.text(max_size=40).map(lambda t: urllib.parse.quote(t, safe="")),
)
paths = st.one_of(
    st.just("/v1/txs"),
    st.builds(lambda s: f"/v1/txs/{s}", segments),
    st.builds(lambda s: f"/v1/blocks/{s}", segments),
    st.builds(lambda s: f"/v1/receipts/{s}", segments),
    st.sampled_from(["/v1/status", "/metrics", "/v1/events", "/", "/v1", "/v1/", "/v1/txs/"]),
    st.builds(lambda s: f"/v1/{s}", segments),
)
queries = st.lists(st.tuples(
    st.one_of(st.sampled_from(["wait", "timeout"]), st.text(max_size=10)),
    st.one_of(st.sampled_from(["commit", "0", "0.5", "1", "-1", "nan", "inf", "1e309",
                               "0x10", ""]), st.text(max_size=12))),
    max_size=3).map(urllib.parse.urlencode)
header_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ-0123456789",
                       min_size=1, max_size=20).filter(
    lambda n: n.lower() not in ("content-length", "transfer-encoding", "host", "connection",
                                "expect", "upgrade"))
headers = st.dictionaries(header_names, st.text(alphabet=st.characters(
    min_codepoint=0x20, max_codepoint=0x7e), max_size=40), max_size=4)
content_types = st.sampled_from([None, "application/octet-stream", "application/json",
                                 "text/plain", "multipart/form-data; boundary=x", "\u00ff"])
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])


@st.composite
def targets(draw) -> tuple[str, str]:
    """(method, path): mostly the method the path serves, sometimes any other."""
    path = draw(st.one_of(st.just("/v1/txs"), paths))
    natural = "POST" if path == "/v1/txs" else "GET"
    method = draw(st.one_of(st.just(natural), st.just(natural), st.just(natural), methods))
    return method, path


@st.composite
def bodies(draw, chain_id: str) -> bytes:
    kind = draw(st.sampled_from(["valid", "mutated", "random", "empty", "big"]))
    value = draw(st.binary(max_size=64))
    if kind == "valid":
        return fresh_tx(chain_id, value)
    if kind == "mutated":
        return draw(mutated(st.just(fresh_tx(chain_id, value))))
    if kind == "random":
        return draw(st.binary(max_size=600))
    if kind == "big":
        return b"\x00" * draw(st.sampled_from([64 * 1024 + 1, 1024 * 1024 + 1]))
    return b""


def request(url: str, method: str, path: str, body: bytes | None, hdrs: dict[str, str],
            chunked: bool) -> tuple[int, bytes, float]:
    host, port = urllib.parse.urlsplit(url).hostname, urllib.parse.urlsplit(url).port
    conn = http.client.HTTPConnection(host, port, timeout=ANSWER_WITHIN_S)
    t0 = time.monotonic()
    try:
        if chunked and body is not None:
            conn.request(method, path, body=iter([body[:len(body) // 2], body[len(body) // 2:]]),
                         headers=hdrs, encode_chunked=True)
        else:
            conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.read(), time.monotonic() - t0
    finally:
        conn.close()


def counted_refusal(method: str, status: int, data: bytes) -> bool:
    """A refusal the API counts: 400, 413 or 503 with a JSON error (aiohttp's own
    answers for unknown routes or methods are text and are not refusals by reason).
    HEAD runs the GET handler and drops the body: there, the status says it."""
    if status not in (400, 413, 503):
        return False
    if method == "HEAD":
        return True
    try:
        doc = json.loads(data)
    except ValueError:
        return False
    return isinstance(doc, dict) and "error" in doc


def test_random_requests_never_500_and_refusals_are_counted(single_node):
    node = single_node.nodes[0]
    chain = single_node.chain_id
    start_height = localnet.fetch_status(node.rpc)["height"]
    before = rejections(metrics(node.rpc))
    seen = {"refused": 0, "requests": 0}
    statuses: dict[int, int] = {}

    @FUZZ
    @given(targets(), queries, bodies(chain), headers, content_types, st.booleans())
    def one(target, query, body, hdrs, ctype, chunked):
        method, path = target
        hdrs = dict(hdrs)
        if ctype is not None:
            hdrs["Content-Type"] = ctype
        target = f"{path}?{query}" if query else path
        send = body if method in ("POST", "PUT", "PATCH") else None
        status, data, took = request(node.rpc, method, target, send, hdrs, chunked)
        seen["requests"] += 1
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500 or status in (503, 504), (status, method, target, data[:200])
        assert took < ANSWER_WITHIN_S
        if counted_refusal(method, status, data):
            seen["refused"] += 1

    one()
    after = metrics(node.rpc)
    print(f"\n{seen['requests']} requests, answers {dict(sorted(statuses.items()))}")
    assert rejections(after) - before == seen["refused"]
    wait = time.monotonic() + 20
    while localnet.fetch_status(node.rpc)["height"] < start_height + 2:
        assert time.monotonic() < wait, "the node stopped committing"
        time.sleep(0.2)
    assert localnet.fetch_status(node.rpc)["halted"] is None


@FUZZ
@given(st.sampled_from([b"GET", b"POST", b"G\x00T", b"", b"get", b"BREW"]),
       st.binary(max_size=60), st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/9.9", b"",
                                                b"HTTP/1.1 x"]),
       st.lists(st.binary(max_size=60), max_size=4))
def test_raw_request_heads_get_an_answer_or_a_close(single_node, method, target, version,
                                                     lines):
    host, port = urllib.parse.urlsplit(single_node.nodes[0].rpc).hostname, \
        urllib.parse.urlsplit(single_node.nodes[0].rpc).port
    head = method + b" /" + target.replace(b"\r", b"").replace(b"\n", b"") + b" " + version
    head += b"".join(b"\r\n" + line.replace(b"\r", b"").replace(b"\n", b"") for line in lines)
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head + b"\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)  # no body will follow
        data = b""
        while chunk := sock.recv(65536):  # a timeout here is a hang: the test fails
            data += chunk
    if data:
        assert data.startswith(b"HTTP/1."), data[:100]
        status = int(data.split(b" ", 2)[1])
        assert status != 500, data[:300]


def test_unparsable_requests_are_counted_not_logged_as_errors(single_node):
    """aiohttp would log each at ERROR with a traceback: a client could fill the disk."""
    node = single_node.nodes[0]
    host, port = urllib.parse.urlsplit(node.rpc).hostname, urllib.parse.urlsplit(node.rpc).port
    before = metric(metrics(node.rpc), "bftnode_http_rejected_total", reason="bad_http")
    for head in (b"GET /\xff HTTP/1.1", b"GET / HTTP/1.1\r\nBad Header: x", b"\x16\x03\x01"):
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(head + b"\r\n\r\n")
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
    assert metric(metrics(node.rpc), "bftnode_http_rejected_total", reason="bad_http") >= \
        before + 2
    log = node.log_path.read_text(errors="replace")
    assert "ERROR aiohttp.server: Error handling request" not in log


def test_events_without_a_websocket_upgrade_is_a_counted_400(single_node):
    import asyncio

    import aiohttp

    node = single_node.nodes[0]
    before = metric(metrics(node.rpc), "bftnode_http_rejected_total", reason="not_websocket")
    status, data, _ = request(node.rpc, "GET", "/v1/events", None, {}, False)
    assert status == 400 and "WebSocket" in json.loads(data)["error"]
    assert metric(metrics(node.rpc), "bftnode_http_rejected_total",
                  reason="not_websocket") == before + 1

    async def one_event() -> dict:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            async with session.ws_connect(node.rpc + "/v1/events") as ws:
                return json.loads((await ws.receive(timeout=15)).data)

    event = asyncio.run(one_event())
    assert event["type"] == "block" and event["height"] >= 1
