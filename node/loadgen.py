"""Open-loop load generation for `bftnode bench` and its pysyncobj peer.

Open loop means the offered load does not depend on the system under test:
transaction i is due at ``t0 + i / rate`` by the clock, and it is written to
its connection when due whether or not any earlier one was answered. A slow
node therefore sees its queue grow, as it would under real clients, instead
of the generator politely slowing down (closed-loop generators hide overload:
"coordinated omission").

The pieces, each usable on its own:

- `due_count` and `OpenLoopScheduler`: the schedule, with the clock and sleep
  injected so that a test can drive it with a fake clock;
- `prepare_txs`: every transaction signed *before* the clock starts, from
  many wallets; a wallet always goes to the same node over the same
  connection, so its nonces arrive in order (the node handles the requests of
  one HTTP connection one after the other);
- `PipelinedConnection`: a minimal HTTP/1.1 keep-alive client that writes
  pre-encoded requests without waiting (pipelining) and matches the answers
  in order. aiohttp's client costs several times more CPU per request, and on
  a small machine every cycle the generator spends is taken from the nodes;
- `EventWatcher`: the first sighting of each transaction in any node's
  ``/v1/events`` stream (one JSON message per committed block);
- `drive`: all of the above for one run, returning a `DriveResult`;
- `measure_ceiling`: the generator's own ceiling, against a null server.

Times are `time.monotonic()` (one clock for all processes of the machine);
block sightings also keep the wall clock, to compare with block header times.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

STATUS_LOST = 0          # connection lost before the answer came
STATUS_NO_REPLY = -1     # no answer before the run ended
DEFAULT_CONNECTIONS = 128  # per node: the node answers one request per connection at a time
WALLET_SPACING_S = 1.0   # target time between two transactions of one wallet
DRAIN_STALL_S = 15.0     # a drain with no new commit seen for this long ends

def run_client(coro: Awaitable[Any]) -> Any:
    """Run a generator coroutine to completion on uvloop (asyncio's loop without it).

    asyncio's own loop spends about twice the CPU per socket write, and on a small
    machine every cycle the generator spends is taken from the nodes it measures.
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of the package
        return asyncio.run(coro)  # type: ignore[arg-type]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)  # type: ignore[arg-type]


# --- the schedule -------------------------------------------------------------------------


def due_count(elapsed: float, rate: float, total: int) -> int:
    """How many of `total` transactions are due `elapsed` s after t0 (tx i at i / rate)."""
    if elapsed < 0 or total <= 0:
        return 0
    if math.isinf(rate):
        return total
    # The margin absorbs float rounding, so that "due" here agrees with t0 + i / rate <= now.
    return min(total, int(elapsed * rate + 1e-6) + 1)


class OpenLoopScheduler:
    """Calls ``send(i)`` for i = 0..total-1, each when it is due, never waiting on a reply.

    ``send`` must not block: it hands the bytes to the transport and returns.
    When the loop falls behind (a long GC pause, a busy event loop) the overdue
    transactions go out at once, so the offered total and the schedule's end
    do not move. `tick` is the coarsest sleep: sends go out in bursts of at
    most ``rate * tick`` transactions.
    """

    def __init__(self, rate: float, total: int, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep, tick: float = 0.001) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.rate = rate
        self.total = total
        self.clock = clock
        self.sleep = sleep
        self.tick = tick
        self.t0: float | None = None
        self.sent = 0

    def due_at(self, i: int) -> float:
        """Seconds after t0 at which tx `i` is due."""
        return 0.0 if math.isinf(self.rate) else i / self.rate

    async def run(self, send: Callable[[int], None]) -> float:
        """Send everything on schedule; returns t0 (the clock when tx 0 was due)."""
        self.t0 = t0 = self.clock()
        while self.sent < self.total:
            due = due_count(self.clock() - t0, self.rate, self.total)
            while self.sent < due:
                send(self.sent)
                self.sent += 1
            if self.sent < self.total:
                wait = t0 + self.due_at(self.sent) - self.clock()
                await self.sleep(max(wait, self.tick) if wait > 0 else 0)
        return t0


# --- transactions -------------------------------------------------------------------------


@dataclass
class PreparedTxs:
    """Signed transactions in schedule order, with where each one goes."""

    bodies: list[bytes]
    hashes: list[str]          # hex, as the node's API and events name them
    node: list[int]            # target index for each tx
    conn: list[int]            # connection index (per target) for each tx
    wallets: int
    tx_size: int               # mean encoded size (nonces above 127 add a byte or two)

    def __len__(self) -> int:
        return len(self.bodies)

    def wallet_and_nonce(self, i: int) -> tuple[int, int]:
        """Who signed tx `i`, and with which nonce (see `prepare_txs`)."""
        return i % self.wallets, i // self.wallets


def _kv_value_len(chain_id: str, tx_size: int, key: bytes) -> int:
    """The kv value length that makes an encoded tx exactly `tx_size` bytes (or the minimum)."""
    from node.wallet import Wallet

    probe = Wallet.from_seed(bytes(32))
    length = 0
    for _ in range(4):  # msgpack's bin length prefix grows at 256 and 65536 bytes
        probe.nonce = 0  # nonces above 127 add a byte or two; see PreparedTxs.tx_size
        size = len(probe.kv_set(chain_id, key, bytes(length)))
        if size == tx_size:
            break
        length = max(0, length + tx_size - size)
    return length


def _sign_chunk(args: tuple[str, list[bytes], int, int, int, int]) -> list[bytes]:
    """Sign `per_wallet` kv sets for each seed; tx (wallet w, nonce k) is global w + k*W.

    Runs in a worker process. Keys are fixed-width so every tx has one size.
    """
    from node.wallet import Wallet

    chain_id, seeds, first_wallet, wallets, per_wallet, value_len = args
    value = b"\x00" * value_len
    out = []
    for j, seed in enumerate(seeds):
        w = Wallet.from_seed(seed)
        for k in range(per_wallet):
            i = first_wallet + j + k * wallets
            out.append(w.kv_set(chain_id, b"bench/%010d/%s" % (i, seed[:6].hex().encode()),
                                value))
    return out


def plan_wallets(count: int, rate: float, targets: int, connections: int) -> int:
    """How many wallets: enough that one wallet's txs are about WALLET_SPACING_S apart.

    At least one per (target, connection), so every connection is used.
    """
    spaced = math.ceil(rate * WALLET_SPACING_S) if math.isfinite(rate) else count
    return max(1, min(count, max(spaced, targets * connections)))


def prepare_txs(chain_id: str, count: int, rate: float, targets: int, tx_size: int,
                connections: int = DEFAULT_CONNECTIONS, workers: int | None = None,
                wallets: int | None = None) -> PreparedTxs:
    """Sign `count` kvstore txs for the schedule, `tx_size` bytes each (see the module doc).

    Transaction i comes from wallet ``w = i % W`` with nonce ``i // W``; wallet w
    always goes to target ``w % targets`` over connection ``(w // targets) % connections``.
    W is `wallets`, by default `plan_wallets` (one tx a second per wallet); with
    ``wallets=count`` every tx has a wallet of its own.
    """
    from crypto import sha256_hex

    if wallets is None:
        wallets = plan_wallets(count, rate, targets, connections)
    wallets = max(1, min(count, wallets))
    per_wallet = math.ceil(count / wallets)
    value_len = _kv_value_len(chain_id, tx_size, b"bench/%010d/%s" % (0, b"0" * 12))
    seeds = [os.urandom(32) for _ in range(wallets)]
    workers = workers or min(len(os.sched_getaffinity(0)), 8)
    step = math.ceil(wallets / workers)
    jobs = [(chain_id, seeds[a:a + step], a, wallets, per_wallet, value_len)
            for a in range(0, wallets, step)]
    by_wallet: list[bytes] = [b""] * (wallets * per_wallet)
    if workers > 1 and count >= 2000:
        with ProcessPoolExecutor(workers) as pool:
            chunks = list(pool.map(_sign_chunk, jobs))
    else:
        chunks = [_sign_chunk(job) for job in jobs]
    for (_, chunk_seeds, first, _, _, _), chunk in zip(jobs, chunks, strict=True):
        for j in range(len(chunk_seeds)):
            for k in range(per_wallet):
                by_wallet[first + j + k * wallets] = chunk[j * per_wallet + k]
    bodies = by_wallet[:count]
    nodes = [(i % wallets) % targets for i in range(count)]
    conns = [((i % wallets) // targets) % connections for i in range(count)]
    mean = round(sum(map(len, bodies)) / count) if count else tx_size
    return PreparedTxs(bodies, [sha256_hex(b) for b in bodies], nodes, conns, wallets, mean)


# --- HTTP ---------------------------------------------------------------------------------


def post_head(host: str, path: str, length: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
            ).encode()


class HttpProtocolError(Exception):
    """An answer that is not the HTTP/1.1 this client reads (Content-Length bodies)."""


def parse_responses(buf: bytearray) -> list[tuple[int, bytes]]:
    """Take every complete response off the front of `buf`: [(status, body), ...]."""
    out = []
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return out
        head = bytes(buf[:end]).split(b"\r\n")
        try:
            status = int(head[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            raise HttpProtocolError(f"bad status line {head[0][:60]!r}") from None
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                raise HttpProtocolError("chunked responses are not supported")
        if len(buf) < end + 4 + length:
            return out
        body = bytes(buf[end + 4:end + 4 + length])
        del buf[:end + 4 + length]
        out.append((status, body))


class PipelinedConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; requests are written at once, answers come in order.

    ``on_answer(tag, status, body, t)`` is called for each answer; when the
    connection is lost every outstanding tag gets STATUS_LOST.
    """

    def __init__(self, on_answer: Callable[[int, int, bytes, float], None],
                 clock: Clock = time.monotonic) -> None:
        self.on_answer = on_answer
        self.clock = clock
        self.transport: asyncio.Transport | None = None
        self.outstanding: deque[int] = deque()
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, tag: int, request: bytes) -> bool:
        if self.transport is None or self.transport.is_closing():
            return False
        self.outstanding.append(tag)
        self.transport.write(request)
        return True

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            answers = parse_responses(self.buf)
        except HttpProtocolError:
            assert self.transport is not None
            self.transport.close()
            return
        now = self.clock()
        for status, body in answers:
            if self.outstanding:
                self.on_answer(self.outstanding.popleft(), status, body, now)

    def close(self) -> None:
        """Stop waiting: the outstanding requests stay STATUS_NO_REPLY."""
        self.outstanding.clear()
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        now = self.clock()
        while self.outstanding:
            self.on_answer(self.outstanding.popleft(), STATUS_LOST, b"connection lost", now)


async def open_connections(url: str, count: int,
                           on_answer: Callable[[int, int, bytes, float], None]
                           ) -> list[PipelinedConnection]:
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(count):
        _, proto = await loop.create_connection(lambda: PipelinedConnection(on_answer),
                                                parts.hostname, parts.port)
        conns.append(proto)
    return conns


# --- commit events ------------------------------------------------------------------------


@dataclass
class BlockSighting:
    height: int
    seen: float          # monotonic, first sighting at any node
    seen_wall: float     # wall clock of the same moment
    time_ms: int | None  # the block header's time (the proposer's clock at proposal)
    txs: int


class EventWatcher:
    """First sighting of our transactions (and of blocks) in commit events."""

    def __init__(self, hashes: Sequence[str], clock: Clock = time.monotonic,
                 wall: Clock = time.time, track_blocks: bool = True) -> None:
        self.index = {h: i for i, h in enumerate(hashes)}
        self.seen: list[float] = [math.nan] * len(hashes)
        self.seen_count = 0
        self.blocks: dict[int, BlockSighting] = {}
        self.track_blocks = track_blocks
        self.clock = clock
        self.wall = wall
        self.messages = 0

    def on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") != "block":
            return
        self.messages += 1
        now = self.clock()
        hashes = event.get("tx_hashes") or ()
        if self.track_blocks:
            height = event.get("height")
            if isinstance(height, int) and height not in self.blocks:
                self.blocks[height] = BlockSighting(height, now, self.wall(),
                                                    event.get("time_ms"), len(hashes))
        index, seen = self.index, self.seen
        for h in hashes:
            i = index.get(h)
            if i is not None and seen[i] != seen[i]:  # NaN: not seen yet
                seen[i] = now
                self.seen_count += 1

    async def watch(self, session: Any, url: str, ready: asyncio.Event) -> None:
        """Follow `url`/v1/events until cancelled."""
        import json

        async with session.ws_connect(f"{url}/v1/events", heartbeat=None,
                                      max_msg_size=256 * 1024 * 1024) as ws:
            ready.set()
            async for msg in ws:
                if msg.type == 1:  # aiohttp.WSMsgType.TEXT
                    self.on_event(json.loads(msg.data))
                elif msg.type in (8, 256, 257, 258):  # CLOSE, CLOSING, CLOSED, ERROR
                    break


# --- one run ------------------------------------------------------------------------------


@dataclass
class Progress:
    phase: str
    due: int
    sent: int
    answered: int
    accepted: int
    rejected: int
    seen: int
    elapsed: float


@dataclass
class DriveResult:
    t0: float                    # monotonic time tx 0 was due
    t0_wall: float
    duration_s: float            # the load window (the schedule's length)
    sent_at: list[float]         # monotonic write time per tx (NaN: never sent)
    status: list[int]            # HTTP status per tx (STATUS_* when none)
    answered_at: list[float]
    errors: dict[str, int]       # reason -> count, for refused txs
    watcher: EventWatcher
    load_end: float              # monotonic end of the load window
    drain_end: float             # when the drain stopped
    cpu_s: float                 # this process's CPU time over load + drain
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> int:
        return sum(1 for s in self.status if s == 202)


class DrainRule:
    """When the drain after the load window ends.

    It ends when every request has its answer and every accepted tx has been seen
    committed; or when no more of them has been seen committed for `stall_s` (the
    chain stopped, or lost them); or `limit_s` after the window at the latest. A
    backlog that still commits is waited for: under overload it is most of what the
    run measures, and cutting it short would count a fraction of the txs the chain
    went on to commit.
    """

    def __init__(self, load_end: float, limit_s: float, stall_s: float) -> None:
        self.deadline = load_end + limit_s
        self.stall_s = stall_s
        self._seen = -1
        self._progress_at = load_end

    def done(self, now: float, answered: bool, accepted: int, seen: int) -> bool:
        if answered and seen >= accepted:
            return True
        if seen > self._seen:
            self._seen, self._progress_at = seen, now
        return now >= self.deadline or now - self._progress_at >= self.stall_s


async def drive(targets: Sequence[str], txs: PreparedTxs, rate: float, duration: float,
                drain_timeout: float, connections: int = DEFAULT_CONNECTIONS,
                progress: Callable[[Progress], None] | None = None,
                track_blocks: bool = True, clock: Clock = time.monotonic,
                drain_stall: float = DRAIN_STALL_S) -> DriveResult:
    """Offer `txs` to `targets` open-loop at `rate`, watch commits, drain; see the module doc.

    Connections and event streams are opened, and every request encoded,
    before the clock starts. After the load window the drain waits until each
    accepted tx has been seen committed, while commits still come (`DrainRule`:
    none for `drain_stall` seconds ends it), at most `drain_timeout` seconds.
    """
    import aiohttp

    n = len(txs)
    hosts = [urlsplit(u).netloc for u in targets]
    heads: dict[tuple[int, int], bytes] = {}
    requests = []
    for t, body in zip(txs.node, txs.bodies, strict=True):
        head = heads.get((t, len(body)))
        if head is None:
            head = heads[(t, len(body))] = post_head(hosts[t], "/v1/txs", len(body))
        requests.append(head + body)
    sent_at = [math.nan] * n
    answered_at = [math.nan] * n
    status = [STATUS_NO_REPLY] * n
    errors: dict[str, int] = {}
    counts = {"answered": 0, "accepted": 0, "rejected": 0}

    def on_answer(tag: int, code: int, body: bytes, t: float) -> None:
        status[tag] = code
        answered_at[tag] = t
        counts["answered"] += 1
        if code == 202:
            counts["accepted"] += 1
        else:
            counts["rejected"] += 1
            reason = _reason(code, body)
            errors[reason] = errors.get(reason, 0) + 1

    watcher = EventWatcher(txs.hashes, clock=clock, track_blocks=track_blocks)
    conns = [await open_connections(u, connections, on_answer) for u in targets]
    session = aiohttp.ClientSession()
    readies = [asyncio.Event() for _ in targets]
    watches = [asyncio.create_task(watcher.watch(session, u, r))
               for u, r in zip(targets, readies, strict=True)]
    try:
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 10)
        scheduler = OpenLoopScheduler(rate, n, clock=clock)

        def send(i: int) -> None:
            sent_at[i] = clock()
            if not conns[txs.node[i]][txs.conn[i]].send(i, requests[i]):
                on_answer(i, STATUS_LOST, b"connection closed", sent_at[i])

        def report(phase: str) -> None:
            if progress is not None and scheduler.t0 is not None:
                elapsed = clock() - scheduler.t0
                progress(Progress(phase, due_count(elapsed, rate, n), scheduler.sent,
                                  counts["answered"], counts["accepted"], counts["rejected"],
                                  watcher.seen_count, elapsed))

        async def ticker() -> None:
            while True:
                report("load")
                await asyncio.sleep(0.25)

        cpu0, wall0 = time.process_time(), clock()
        tick = asyncio.create_task(ticker())
        try:
            t0 = await scheduler.run(send)
        finally:
            tick.cancel()
        t0_wall = time.time() - (clock() - t0)
        load_end = max(clock(), t0 + duration)
        while clock() < load_end:  # the schedule's last tx is due just before the end
            report("load")
            await asyncio.sleep(min(0.25, load_end - clock()))
        rule = DrainRule(load_end, drain_timeout, drain_stall)
        while not rule.done(clock(), counts["answered"] >= n, counts["accepted"],
                            _seen_accepted(watcher, status)):
            report("drain")
            await asyncio.sleep(0.05)
        drain_end = clock()
        report("done")
        cpu_s, wall_s = time.process_time() - cpu0, clock() - wall0
    finally:
        for w in watches:
            w.cancel()
        await asyncio.gather(*watches, return_exceptions=True)
        await session.close()
        for per_target in conns:
            for c in per_target:
                c.close()
    for w in watches:
        exc = w.exception() if w.done() and not w.cancelled() else None
        if exc is not None:
            raise RuntimeError(f"event stream failed: {exc}") from exc
    return DriveResult(t0, t0_wall, duration, sent_at, status, answered_at, errors, watcher,
                       load_end, drain_end, cpu_s, wall_s)


def _seen_accepted(watcher: EventWatcher, status: list[int]) -> int:
    # Cheap enough at drain time (every 50 ms): one pass over the run.
    seen = watcher.seen
    return sum(1 for i, s in enumerate(status) if s == 202 and seen[i] == seen[i])


def _reason(code: int, body: bytes) -> str:
    import json

    if code == STATUS_LOST:
        return "connection lost"
    try:
        text = json.loads(body).get("error", "")
    except (ValueError, AttributeError):
        text = body[:80].decode(errors="replace")
    # Reasons name hashes and counts; keep their first words so they aggregate.
    words = str(text).split(":")[0].split()[:4]
    return f"{code} {' '.join(words)}".strip()


# --- the generator's ceiling ---------------------------------------------------------------

_NULL_ANSWER = (b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
                b"Content-Length: 2\r\n\r\n{}")


class _NullServer(asyncio.Protocol):
    """Answers every request with a canned 202: the cheapest possible node."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        answers = 0
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = bytes(self.buf[:end]).lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buf) < end + 4 + length:
                break
            del self.buf[:end + 4 + length]
            answers += 1
        if answers:
            self.transport.write(_NULL_ANSWER * answers)  # type: ignore[attr-defined]


async def _serve_null(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_NullServer, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def measure_ceiling(count: int = 20_000, tx_size: int = 200, connections: int = 16) -> dict:
    """Requests/s this generator sustains against a null server in another process.

    Everything is sent at once (rate = inf) and the figure is answers/s until
    the last answer, plus the generator's CPU time per request. On a shared
    machine the null server takes one core; the CPU figure is the fairer one.
    """
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "node.loadgen", "--null-server", str(port)],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("null server did not start")
        return run_client(_blast(f"http://127.0.0.1:{port}", count, tx_size, connections))
    finally:
        proc.terminate()
        proc.wait(5)


async def _blast(url: str, count: int, tx_size: int, connections: int) -> dict:
    done = asyncio.get_running_loop().create_future()
    answered = [0]

    def on_answer(tag: int, code: int, body: bytes, t: float) -> None:
        answered[0] += 1
        if answered[0] == count and not done.done():
            done.set_result(t)

    conns = await open_connections(url, connections, on_answer)
    request = post_head(urlsplit(url).netloc, "/v1/txs", tx_size) + b"\x00" * tx_size
    scheduler = OpenLoopScheduler(math.inf, count)
    cpu0, t0 = time.process_time(), time.monotonic()
    await scheduler.run(lambda i: conns[i % connections].send(i, request))
    t_end = await asyncio.wait_for(done, 60)
    cpu = time.process_time() - cpu0
    for c in conns:
        c.close()
    return {"requests": count, "tps": count / (t_end - t0),
            "cpu_us_per_tx": cpu / count * 1e6, "tps_per_core": count / cpu if cpu else math.inf}


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m node.loadgen",
                                     description="the bench's load generator: its ceiling")
    parser.add_argument("--null-server", type=int, metavar="PORT",
                        help="run the null HTTP server on PORT (used by --ceiling)")
    parser.add_argument("--count", type=int, default=20_000)
    args = parser.parse_args(argv)
    if args.null_server:
        try:
            run_client(_serve_null(args.null_server))
        except KeyboardInterrupt:
            pass
        return 0
    print(measure_ceiling(args.count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
