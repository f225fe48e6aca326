"""A small background load driver for the integration suite: steady kvstore txs, and a
record of every tx the client saw committed.

    load = LoadDriver([n.rpc for n in net.nodes], net.chain_id, rate=80, seed=1)
    load.start()
    ...                       # break the network on purpose
    load.wait_commits(10, nodes=[0, 1, 2], timeout=30)
    load.stop()
    load.committed            # {hash hex: Committed(height, index, code, ...)}

Wallets. `wallets_per_node` wallets per node; wallet k always submits to node
k % N, so its nonces arrive at one mempool in order. Keys are derived from
`seed`, and the tx for (wallet, nonce, epoch) is deterministic (Ed25519
signatures are), so a retry of an uncertain submit re-sends the *same* bytes:
if the first attempt was admitted after all, the node answers "duplicate" and
no second tx with that nonce exists in that epoch.

Submits. Each wallet thread paces itself at rate / wallets. A 202, or a 400
"duplicate", moves the wallet to its next nonce; anything that is not an
admission (connection refused: the node is down; a timeout or reset: paused
or killed mid-request; 503) keeps the nonce and retries the same tx after a
short back-off. A 400 "stale nonce ... next nonce is M" (the node saw that
nonce committed) moves the wallet to M. Any other 400 is recorded in
`errors`: the tests expect none.

Commits. A watcher thread follows the chain on one node that answers (block by
block, GET /v1/blocks/H), and for every tx hash of ours in a block asks that
node GET /v1/txs/{hash}: the answer (height, index, code) is what the client
*saw committed*. A tx admitted by a node that is then SIGKILLed before it
gossiped its batch is lost (mempools are not persisted; a 202 is not a commit),
so its wallet's later txs fail with BAD_NONCE (so do txs whose batch was
ordered before an earlier batch of the same wallet, e.g. one held back by an
isolated node). When the watcher sees that, it moves the wallet back to the
chain's next nonce (one past the highest nonce it saw committed OK) in a new
epoch: the txs from there on are new bytes, because a tx committed with
BAD_NONCE can never be committed again (its hash is spent), and re-sending it
would be answered "duplicate" forever.

Everything is bounded: every request has a timeout, `stop()` joins the threads.
Only the standard library is used (http.client keep-alive connections).
"""

from __future__ import annotations

import http.client
import json
import random
import re
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from crypto import sha256
from node.apps import CODE_BAD_NONCE, CODE_OK
from node.client import Wallet, tx_hash

_STALE = re.compile(r"stale nonce \d+: the sender's next nonce is (\d+)")


class HttpError(Exception):
    """A request got no HTTP answer: `kind` is "refused", "timeout" or "reset"."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class NodeHttp:
    """One keep-alive HTTP/1.1 connection to one node (not thread-safe: one per thread)."""

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.url = url
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: bytes | None = None,
                timeout: float | None = None) -> tuple[int, Any]:
        """(status, parsed JSON body or None); raises HttpError when no answer came."""
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port,
                                                    timeout=timeout or self.timeout)
        conn = self._conn
        conn.timeout = timeout or self.timeout
        if conn.sock is not None:
            conn.sock.settimeout(conn.timeout)
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except ConnectionRefusedError as exc:
            self.close()
            raise HttpError("refused", str(exc)) from None
        except TimeoutError as exc:
            self.close()
            raise HttpError("timeout", str(exc)) from None
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise HttpError("reset", f"{type(exc).__name__}: {exc}") from None
        if resp.getheader("Connection", "").lower() == "close":
            self.close()
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = None
        return resp.status, doc

    def get(self, path: str, timeout: float | None = None) -> Any:
        """The JSON of a 200 answer, else None (no answer, or another status)."""
        try:
            status, doc = self.request("GET", path, timeout=timeout)
        except HttpError:
            return None
        return doc if status == 200 else None


@dataclass(frozen=True)
class Committed:
    """A tx the client saw committed: GET /v1/txs/{hash} on `seen_on` said so."""

    hash: str
    height: int
    index: int
    code: int
    wallet: int
    nonce: int
    seen_on: int
    seen_at: float


@dataclass
class _WalletState:
    wallet: Wallet
    node: int
    nonce: int = 0
    max_ok: int = -1          # highest nonce seen committed with code OK
    epoch: int = 0            # resyncs so far: part of every tx's bytes (module doc)
    lock: threading.Lock = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.lock = threading.Lock()


class LoadDriver:
    """Steady kvstore load on a localnet, tolerant of nodes that are down (module doc)."""

    def __init__(self, urls: list[str], chain_id: str, *, rate: float = 80.0,
                 wallets_per_node: int = 2, seed: int = 0, submit_timeout: float = 2.0,
                 retry_delay: float = 0.25) -> None:
        if rate <= 0 or wallets_per_node < 1:
            raise ValueError("rate must be > 0 and wallets_per_node >= 1")
        self.urls = list(urls)
        self.chain_id = chain_id
        self.rate = rate
        self.submit_timeout = submit_timeout
        self.retry_delay = retry_delay
        count = wallets_per_node * len(self.urls)
        self.wallets = [
            _WalletState(Wallet.from_seed(sha256(b"bftnode-load-%d-%d" % (seed, k))),
                         k % len(self.urls))
            for k in range(count)]
        self._tx_cache: dict[tuple[int, int, int], bytes] = {}
        self._known: dict[str, tuple[int, int]] = {}     # hash -> (wallet, nonce)
        self.committed: dict[str, Committed] = {}
        self.outcomes: Counter[str] = Counter()          # submit outcomes by kind
        self.errors: list[tuple[int, int, str]] = []     # unexpected 4xx: (wallet, nonce, reason)
        self.resyncs = 0
        self.scanned_height = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._committed_ok = Counter()                   # node index -> OK commits seen

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> LoadDriver:
        for k in range(len(self.wallets)):
            self._threads.append(threading.Thread(target=self._submit_loop, args=(k,),
                                                  name=f"load-wallet-{k}", daemon=True))
        self._threads.append(threading.Thread(target=self._watch_loop, name="load-watcher",
                                              daemon=True))
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"load driver threads did not stop: {alive}")

    def __enter__(self) -> LoadDriver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what tests read ---------------------------------------------------------------

    def ok_commits(self, nodes: Iterable[int] | None = None) -> int:
        """OK commits seen so far, of wallets pinned to `nodes` (all when None)."""
        with self._lock:
            if nodes is None:
                return sum(self._committed_ok.values())
            return sum(self._committed_ok[i] for i in nodes)

    def wait_commits(self, count: int, *, nodes: Iterable[int] | None = None,
                     timeout: float = 30.0) -> int:
        """Wait until `count` more OK commits (of wallets on `nodes`) are seen; how many."""
        nodes = None if nodes is None else list(nodes)
        start = self.ok_commits(nodes)
        deadline = time.monotonic() + timeout
        while True:
            got = self.ok_commits(nodes) - start
            if got >= count:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the load saw {got} new commits in {timeout} s, expected {count} "
                    f"(wallets on nodes {nodes}; scanned up to height {self.scanned_height}; "
                    f"outcomes {dict(self.outcomes)})")
            time.sleep(0.1)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"committed": len(self.committed), "ok": sum(self._committed_ok.values()),
                    "known": len(self._known), "scanned_height": self.scanned_height,
                    "resyncs": self.resyncs, "outcomes": dict(self.outcomes),
                    "errors": len(self.errors)}

    def committed_records(self) -> list[Committed]:
        with self._lock:
            return list(self.committed.values())

    # --- submitting --------------------------------------------------------------------

    def _tx(self, k: int, nonce: int, epoch: int) -> bytes:
        key = (k, nonce, epoch)
        tx = self._tx_cache.get(key)
        if tx is None:
            w = self.wallets[k].wallet
            w.nonce = nonce
            tx = w.kv_set(self.chain_id, b"load/%d/%d" % (k, nonce), b"v%d.%d" % (nonce, epoch))
            self._tx_cache[key] = tx
            if len(self._tx_cache) > 50_000:
                self._tx_cache.pop(next(iter(self._tx_cache)))
        return tx

    def _submit_loop(self, k: int) -> None:
        state = self.wallets[k]
        conn = NodeHttp(self.urls[state.node], self.submit_timeout)
        interval = len(self.wallets) / self.rate
        rng = random.Random(k)
        next_at = time.monotonic() + rng.uniform(0, interval)
        try:
            while not self._stop.is_set():
                delay = next_at - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                next_at = max(next_at + interval, time.monotonic() - interval)
                with state.lock:
                    nonce, epoch = state.nonce, state.epoch
                tx = self._tx(k, nonce, epoch)
                h = tx_hash(tx)
                with self._lock:
                    self._known.setdefault(h, (k, nonce))
                backoff = self._submit_one(k, state, conn, nonce, tx)
                if backoff:
                    next_at = time.monotonic() + self.retry_delay
        finally:
            conn.close()

    def _submit_one(self, k: int, state: _WalletState, conn: NodeHttp, nonce: int,
                    tx: bytes) -> bool:
        """One POST; moves the wallet's nonce as the module doc says; True to back off."""
        try:
            status, doc = conn.request("POST", "/v1/txs", tx)
        except HttpError as exc:
            self._count(exc.kind)
            return True
        reason = (doc or {}).get("error", "") if isinstance(doc, dict) else ""
        if status == 202 or (status == 400 and reason.startswith("duplicate")):
            self._count("admitted" if status == 202 else "duplicate")
            self._advance(state, nonce, nonce + 1)
            return False
        if status == 400 and (m := _STALE.search(reason)):
            self._count("stale_nonce")
            self._advance(state, nonce, int(m.group(1)))
            return False
        if status >= 500:
            self._count(f"http_{status}")
            return True
        self._count(f"http_{status}")
        with self._lock:
            self.errors.append((k, nonce, f"{status}: {reason}"))
        self._advance(state, nonce, nonce + 1)
        return False

    @staticmethod
    def _advance(state: _WalletState, expected: int, new: int) -> None:
        with state.lock:
            if state.nonce == expected:  # the watcher may have moved it meanwhile
                state.nonce = new

    def _count(self, kind: str) -> None:
        with self._lock:
            self.outcomes[kind] += 1

    # --- watching commits --------------------------------------------------------------

    def _watch_loop(self) -> None:
        conns = [NodeHttp(u, 2.0) for u in self.urls]
        current = 0
        try:
            while not self._stop.wait(0.2):
                status = conns[current].get("/v1/status")
                if status is None:
                    current = (current + 1) % len(conns)
                    continue
                top = int(status.get("height") or 0)
                for height in range(self.scanned_height + 1, top + 1):
                    if self._stop.is_set() or not self._scan_block(conns[current], current,
                                                                   height):
                        break
                    self.scanned_height = height
        finally:
            for c in conns:
                c.close()

    def _scan_block(self, conn: NodeHttp, node: int, height: int) -> bool:
        block = conn.get(f"/v1/blocks/{height}")
        if block is None:
            return False
        for h in block.get("tx_hashes", []):
            with self._lock:
                owner = self._known.get(h)
                seen = h in self.committed
            if owner is None or seen:
                continue
            rec = conn.get(f"/v1/txs/{h}")
            if rec is None or rec.get("status") != "committed":
                return False  # that node went away mid-block: scan this height again
            self._record(Committed(h, rec["height"], rec["index"], rec["code"], owner[0],
                                   owner[1], node, time.monotonic()))
        return True

    def _record(self, c: Committed) -> None:
        state = self.wallets[c.wallet]
        with self._lock:
            self.committed[c.hash] = c
            if c.code == CODE_OK:
                self._committed_ok[state.node] += 1
        with state.lock:
            if c.code == CODE_OK:
                state.max_ok = max(state.max_ok, c.nonce)
            elif c.code == CODE_BAD_NONCE and c.nonce > state.max_ok + 1 \
                    and state.nonce > state.max_ok + 1:
                # A gap: txs before this one were lost with a killed node's mempool, or
                # committed after it. Those nonces are re-sent as new txs (next epoch): the
                # old bytes of a tx committed with BAD_NONCE are spent for good.
                state.nonce = state.max_ok + 1
                state.epoch += 1
                with self._lock:
                    self.resyncs += 1


__all__ = ["Committed", "HttpError", "LoadDriver", "NodeHttp"]
