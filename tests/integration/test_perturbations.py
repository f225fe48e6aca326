"""Perturbations of a real 4-validator localnet under load, in the spirit of CometBFT's
e2e runner (without Docker): SIGKILL/restart, SIGSTOP/SIGCONT, isolate/heal, f+1
validators down, and repeated SIGKILLs at random (seeded) moments.

A background `LoadDriver` (tests/integration/load.py) submits kvstore txs at a steady
rate from two wallets per node throughout the module. After every perturbation:

- commits go on while 2f+1 validators are up (heights grow; the load sees new
  commits from wallets whose node is up) and stop while only 2f are;
- the perturbed node catches up: its height reaches the others';
- every tx the load saw committed is at the same height and index, with the same
  code, on every node (GET /v1/txs/{hash} on each);
- every node has the same block at every height (hash, header with its app hash,
  payload and tx list), each with a valid commit certificate;
- no node has halted and no node has seen duplicate-vote evidence (a restarted
  validator must not double-sign).

Knobs (environment):
    BFTNODE_PERTURB_RUNTIME   inprocess (default, fast) | ray
    BFTNODE_PERTURB_ROUNDS    rounds of the repeated-SIGKILL scenario (default 3) and
                              of the slow randomized schedule
    BFTNODE_PERTURB_SEED      seed of every random choice (default 1)
    BFTNODE_PERTURB_RATE      offered load in tx/s (default 50)

scripts/perturb.sh runs this longer (more rounds, both runtimes, the slow test).
"""

from __future__ import annotations

import os
import random
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from crypto import sha256
from node import localnet, procs
from node.actors.blockstore import SYNC_MAX_BYTES
from node.client import Wallet, tx_hash, validator_set_from_json, verify_block

from .conftest import down_leaving_nothing, wait_until
from .harness import metric
from .load import Committed, HttpError, LoadDriver, NodeHttp

RUNTIME = os.environ.get("BFTNODE_PERTURB_RUNTIME", "inprocess")
ROUNDS = int(os.environ.get("BFTNODE_PERTURB_ROUNDS", "3"))
SEED = int(os.environ.get("BFTNODE_PERTURB_SEED", "1"))
RATE = float(os.environ.get("BFTNODE_PERTURB_RATE", "50"))
N = 4
HOLD_S = 4.0  # the least time a perturbation lasts, so that it spans many heights
# Restarting a Ray node (its own Ray instance) takes far longer than an in-process one.
SLOW = 3.0 if RUNTIME == "ray" else 1.0
RESTART_S = 120 * SLOW

pytestmark = [pytest.mark.integration, pytest.mark.timeout(int(900 * SLOW))]


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localnet.Localnet]:
    directory = tmp_path_factory.mktemp(f"perturb-{RUNTIME}")
    n = localnet.up(directory, N, app="kvstore", runtime=RUNTIME, timeout=RESTART_S)
    try:
        yield n
    finally:
        down_leaving_nothing(n)


@pytest.fixture(scope="module")
def load(net: localnet.Localnet) -> Iterator[LoadDriver]:
    driver = LoadDriver([n.rpc for n in net.nodes], net.chain_id, rate=RATE, seed=SEED)
    driver.start()
    try:
        driver.wait_commits(20, timeout=60 * SLOW)
        yield driver
    finally:
        driver.stop()
        print(f"\nload: {driver.snapshot()}")
        assert not driver.errors, f"unexpected refusals of valid txs: {driver.errors[:5]}"


@pytest.fixture(autouse=True)
def whole_network(net: localnet.Localnet) -> None:
    """Each scenario starts from a whole network: a node that a failed scenario left
    down, paused or cut off is brought back first, so one failure does not cascade."""
    for i, node in enumerate(net.nodes):
        if localnet.running_pid(node) is None:
            localnet.restart(net, i, timeout=RESTART_S)
        elif procs.is_stopped(node.pid):
            localnet.resume(net, i)
        elif (localnet.fetch_status(node.rpc) or {}).get("isolated"):
            localnet.heal(net, i)
    for i in range(N):
        expect_caught_up(net, i)


@pytest.fixture(scope="module")
def checker(net: localnet.Localnet) -> Iterator[Checker]:
    c = Checker(net)
    yield c
    print(f"\nchecked {c.checked_height} heights and {len(c.checked_txs)} txs on every node")


# --- observing the network ----------------------------------------------------------------


def network_state(net: localnet.Localnet) -> str:
    """Heights, rounds and peers of every node, for failure messages."""
    rows = []
    for i, node in enumerate(net.nodes):
        doc = localnet.fetch_status(node.rpc, 2.0)
        if doc is None:
            rows.append(f"node {i}: no answer")
            continue
        try:
            with urllib.request.urlopen(node.rpc + "/metrics", timeout=2) as resp:
                rnd = metric(resp.read().decode(), "bftnode_round")
        except OSError:
            rnd = float("nan")
        rows.append(f"node {i}: height {doc['height']} round {rnd:.0f} peers "
                    f"{len(doc['peers'])} catching_up {doc['catching_up']}")
    return "; ".join(rows)


def wait_for(net: localnet.Localnet, predicate, timeout: float, what: str) -> None:
    try:
        wait_until(predicate, timeout, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc} [{network_state(net)}]") from None


def heights(net: localnet.Localnet, nodes: Iterable[int] = range(N)) -> dict[int, int | None]:
    nodes = list(nodes)
    with ThreadPoolExecutor(len(nodes)) as pool:
        docs = pool.map(lambda i: localnet.fetch_status(net.nodes[i].rpc, 1.0), nodes)
    return {i: (d["height"] if d else None) for i, d in zip(nodes, docs, strict=True)}


def expect_progress(net: localnet.Localnet, load: LoadDriver, nodes: Sequence[int], *,
                    blocks: int = 3, commits: int = 5, timeout: float = 30.0) -> None:
    """Commits go on: every node in `nodes` gets `blocks` past the highest of them now,
    and the load sees `commits` new commits from wallets pinned to those nodes."""
    start = max(h or 0 for h in heights(net, nodes).values())
    load.wait_commits(commits, nodes=nodes, timeout=timeout * SLOW)
    wait_for(net, lambda: all(h is not None and h >= start + blocks
                              for h in heights(net, nodes).values()),
             timeout * SLOW, f"nodes {list(nodes)} to commit {blocks} blocks past {start}")


def expect_caught_up(net: localnet.Localnet, node: int, timeout: float = 60.0) -> None:
    """`node`'s height reaches the highest height the others had when this was called."""
    others = [i for i in range(N) if i != node]
    target = max(h or 0 for h in heights(net, others).values())
    wait_for(net, lambda: (heights(net, [node])[node] or 0) >= target, timeout * SLOW,
             f"node {node} to catch up to height {target}")


def expect_stalled(net: localnet.Localnet, nodes: Sequence[int], seconds: float) -> None:
    """No commits on `nodes` for `seconds` (after a settling second for blocks in flight)."""
    time.sleep(1.5)
    before = heights(net, nodes)
    assert all(h is not None for h in before.values()), f"a node is not answering: {before}"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = heights(net, nodes)
        assert now == before, f"nodes {list(nodes)} committed with only 2f up: {before} -> {now}"
        time.sleep(0.5)


class Checker:
    """The agreement checks, incremental: each call covers what is new since the last."""

    def __init__(self, net: localnet.Localnet) -> None:
        self.net = net
        self.checked_height = 0
        self.checked_txs: set[str] = set()
        self.blocks_tx_hashes: dict[int, list[str]] = {}
        self.validators = None

    def _per_node(self, job) -> list:
        with ThreadPoolExecutor(N) as pool:
            return list(pool.map(job, range(N)))

    def check(self, load: LoadDriver, timeout: float = 60.0) -> None:
        net = self.net
        statuses = [localnet.fetch_status(n.rpc, 2.0) for n in net.nodes]
        assert all(statuses), "every node must answer before the agreement check"
        for i, s in enumerate(statuses):
            assert s["halted"] is None, f"node {i} halted: {s['halted']}"
        if self.validators is None:
            self.validators = validator_set_from_json(statuses[0]["validators"])
        # Every node reaches the height of the tallest, so all records can be checked.
        top = max(s["height"] for s in statuses)
        wait_for(net, lambda: all(h is not None and h >= top for h in heights(net).values()),
                 timeout * SLOW, f"every node to reach height {top}")
        self._check_blocks(top)
        self._check_txs(load, top)
        for i, node in enumerate(net.nodes):
            with urllib.request.urlopen(node.rpc + "/metrics", timeout=5) as resp:
                text = resp.read().decode()
            evidence = metric(text, "bftnode_evidence_total")
            assert evidence == 0, f"node {i} saw {evidence} duplicate votes: a validator " \
                                  "double-signed"

    def _check_blocks(self, top: int) -> None:
        lo = self.checked_height + 1

        def fetch(i: int) -> list[dict]:
            conn = NodeHttp(self.net.nodes[i].rpc, 5.0)
            try:
                return [conn.get(f"/v1/blocks/{h}") for h in range(lo, top + 1)]
            finally:
                conn.close()

        per_node = self._per_node(fetch)
        for offset, height in enumerate(range(lo, top + 1)):
            blocks = [per_node[i][offset] for i in range(N)]
            missing = [i for i, b in enumerate(blocks) if b is None]
            assert not missing, f"nodes {missing} have no block at height {height}"
            ref = blocks[0]
            for i, b in enumerate(blocks[1:], 1):
                for key in ("block_hash", "header", "payload", "tx_hashes"):
                    assert b[key] == ref[key], \
                        f"node {i} and node 0 disagree on the {key} of block {height}"
            for b in blocks:  # each node's own certificate proves the same block final
                verify_block(b, self.validators, self.net.chain_id)
            self.blocks_tx_hashes[height] = ref["tx_hashes"]
        self.checked_height = top

    def _check_txs(self, load: LoadDriver, top: int) -> None:
        todo = [r for r in load.committed_records()
                if r.hash not in self.checked_txs and r.height <= top]
        for r in todo:
            hashes = self.blocks_tx_hashes.get(r.height)
            if hashes is not None:
                assert r.index < len(hashes) and hashes[r.index] == r.hash, \
                    f"tx {r.hash} is not at index {r.index} of block {r.height}"

        def fetch(i: int) -> list[tuple[Committed, dict | None]]:
            conn = NodeHttp(self.net.nodes[i].rpc, 5.0)
            try:
                return [(r, conn.get(f"/v1/txs/{r.hash}")) for r in todo]
            finally:
                conn.close()

        for i, answers in enumerate(self._per_node(fetch)):
            for r, got in answers:
                seen = (r.height, r.index, r.code)
                assert got is not None and got.get("status") == "committed", \
                    f"node {i} does not know tx {r.hash}, which the client saw committed " \
                    f"at height {r.height} on node {r.seen_on} (answer: {got})"
                assert (got["height"], got["index"], got["code"]) == seen, \
                    f"node {i} has tx {r.hash} at (height, index, code) " \
                    f"{(got['height'], got['index'], got['code'])}, the client saw {seen}"
        self.checked_txs.update(r.hash for r in todo)


def up_nodes_but(*down: int) -> list[int]:
    return [i for i in range(N) if i not in down]


def hold_until(started: float, seconds: float = HOLD_S) -> None:
    time.sleep(max(0.0, started + seconds - time.monotonic()))


def burst_txs(chain_id: str, count: int, value_bytes: int, tag: str) -> list[bytes]:
    """`count` txs with `value_bytes`-byte values, from fresh wallets (one tx each)."""
    return [Wallet.from_seed(sha256(f"burst-{tag}-{k}".encode())).kv_set(
        chain_id, b"burst/%d" % k, bytes([k % 256]) * value_bytes) for k in range(count)]


def burst(net: localnet.Localnet, node: int, txs: list[bytes]) -> dict[int, int]:
    """Submit `txs` to one node, 16 at a time: big blocks. Statuses by count."""

    def submit(tx: bytes) -> int:
        conn = NodeHttp(net.nodes[node].rpc, 10.0)
        try:
            return conn.request("POST", "/v1/txs", tx)[0]
        except HttpError:
            return 0
        finally:
            conn.close()

    with ThreadPoolExecutor(16) as pool:
        return dict(Counter(pool.map(submit, txs)))


def largest_block_bytes(net: localnet.Localnet, txs: list[bytes]) -> int:
    """The most bytes of `txs` that one block of node 0's chain carries."""
    sizes = {tx_hash(tx): len(tx) for tx in txs}
    heights_seen: Counter[int] = Counter()
    conn = NodeHttp(net.nodes[0].rpc, 5.0)
    try:
        for h, size in sizes.items():
            rec = conn.get(f"/v1/txs/{h}")
            if rec and rec.get("status") == "committed":
                heights_seen[rec["height"]] += size
    finally:
        conn.close()
    return max(heights_seen.values(), default=0)


# --- scenarios ----------------------------------------------------------------------------


def test_baseline_agreement_under_load(net, load, checker) -> None:
    expect_progress(net, load, range(N))
    checker.check(load)


def test_sigkill_then_restart(net, load, checker) -> None:
    victim = 3
    tree = localnet.node_tree(net.nodes[victim])
    started = time.monotonic()
    localnet.kill(net, victim)
    assert not any(procs.same_process(p, s) for p, s in tree.items()), \
        "SIGKILL of the supervisor left some of its processes alive"
    expect_progress(net, load, up_nodes_but(victim))
    hold_until(started)
    localnet.restart(net, victim, timeout=RESTART_S)
    expect_caught_up(net, victim)
    expect_progress(net, load, range(N))
    checker.check(load)


def test_pause_then_resume(net, load, checker) -> None:
    victim = 1
    started = time.monotonic()
    localnet.pause(net, victim)
    try:
        assert procs.is_stopped(net.nodes[victim].pid)
        expect_progress(net, load, up_nodes_but(victim))
        hold_until(started)
        assert heights(net, [victim])[victim] is None, "a paused node answered"
    finally:
        localnet.resume(net, victim)
    expect_caught_up(net, victim)
    expect_progress(net, load, range(N))
    checker.check(load)


def test_isolate_then_heal(net, load, checker) -> None:
    victim = 2
    started = time.monotonic()
    localnet.isolate(net, victim)
    try:
        wait_until(lambda: (localnet.fetch_status(net.nodes[victim].rpc) or {}).get("peers") == [],
                   10, f"node {victim} to drop its peers")
        cut_at = heights(net, [victim])[victim]
        expect_progress(net, load, up_nodes_but(victim))
        hold_until(started)
        # Cut off, it can commit at most a block whose certificate it already had.
        assert heights(net, [victim])[victim] <= cut_at + 1, "an isolated node kept committing"
    finally:
        localnet.heal(net, victim)
    expect_caught_up(net, victim)
    expect_progress(net, load, range(N))
    checker.check(load)


def test_f_plus_one_down_stalls_then_recovers(net, load, checker) -> None:
    down = (0, 1)
    for i in down:
        localnet.kill(net, i)
    try:
        expect_stalled(net, up_nodes_but(*down), seconds=5)
    finally:
        for i in down:
            localnet.restart(net, i, timeout=RESTART_S)
    expect_progress(net, load, range(N), timeout=60)
    for i in down:
        expect_caught_up(net, i)
    checker.check(load)


def test_repeated_sigkills_at_random_moments(net, load, checker) -> None:
    rng = random.Random(SEED)
    victim = 0
    start = max(h or 0 for h in heights(net).values())
    for _ in range(ROUNDS):
        time.sleep(rng.uniform(0.2, 3.0))
        localnet.kill(net, victim)
        time.sleep(rng.uniform(0.0, 2.0))
        localnet.restart(net, victim, timeout=RESTART_S)
    expect_progress(net, load, range(N), timeout=60)
    expect_caught_up(net, victim)
    assert min(h or 0 for h in heights(net).values()) > start
    checker.check(load)


def test_catch_up_over_heavy_blocks(net, load, checker) -> None:
    """A node down while several MiB of txs commit catches up by block sync (sixteen
    such blocks used to exceed one peer frame: no peer could serve it)."""
    victim = 3
    localnet.kill(net, victim)
    try:
        statuses = burst(net, 0, burst_txs(net.chain_id, 400, 16 * 1024, "heavy"))
        assert statuses.get(202, 0) >= 390, statuses
        expect_progress(net, load, up_nodes_but(victim))
    finally:
        localnet.restart(net, victim, timeout=RESTART_S)
    expect_caught_up(net, victim, timeout=90)
    checker.check(load)


@pytest.mark.slow
def test_randomized_schedule(net, load, checker) -> None:
    """BFTNODE_PERTURB_ROUNDS random perturbations of random nodes (at most f at once)."""
    rng = random.Random(SEED * 7919 + 1)
    for round_no in range(ROUNDS):
        victim = rng.randrange(N)
        action = rng.choice(["kill", "pause", "isolate"])
        print(f"round {round_no}: {action} node {victim}")
        time.sleep(rng.uniform(0.5, 3.0))
        if action == "kill":
            localnet.kill(net, victim)
            expect_progress(net, load, up_nodes_but(victim), blocks=1, commits=1)
            localnet.restart(net, victim, timeout=RESTART_S)
        elif action == "pause":
            localnet.pause(net, victim)
            try:
                expect_progress(net, load, up_nodes_but(victim), blocks=1, commits=1)
            finally:
                localnet.resume(net, victim)
        else:
            localnet.isolate(net, victim)
            try:
                time.sleep(rng.uniform(1.0, 4.0))
            finally:
                localnet.heal(net, victim)
        expect_caught_up(net, victim)
        if round_no % 5 == 4:
            checker.check(load)
    expect_progress(net, load, range(N))
    checker.check(load)


def test_catch_up_over_a_block_larger_than_a_frame(net, load) -> None:
    """A node that was down catches up over a block whose batches exceed one block-sync
    answer (3 MiB): the missing batches are fetched with BatchRequest, which peers
    answer from their block store once the batches have left their mempools."""
    victim, paused = 3, (1, 2)
    localnet.kill(net, victim)
    try:
        for i in paused:  # nothing commits: node 0's mempool gathers one huge block
            localnet.pause(net, i)
        txs = burst_txs(net.chain_id, 400, 16 * 1024, "huge")
        try:
            statuses = burst(net, 0, txs)
            assert statuses.get(202, 0) >= 390, statuses
        finally:
            for i in paused:
                localnet.resume(net, i)
        expect_progress(net, load, up_nodes_but(victim), timeout=60)
        largest = largest_block_bytes(net, txs)
        # 400 txs of 16 KiB gathered while nothing committed: the first block after the
        # pause orders them all, more than one sync answer holds.
        assert largest > SYNC_MAX_BYTES, f"no block exceeded one sync answer ({largest} B)"
        # The others' send queues still hold the batches gossiped while the victim was
        # down, and would hand them over on reconnection: restart them, one at a time,
        # as a node that joins later would find them.
        for i in up_nodes_but(victim):
            localnet.kill(net, i)
            localnet.restart(net, i, timeout=RESTART_S)
            expect_caught_up(net, i)
    finally:
        localnet.restart(net, victim, timeout=RESTART_S)
    try:
        expect_caught_up(net, victim, timeout=30)
    finally:
        # Whatever the outcome, leave the network whole for the tests that follow.
        localnet.restart(net, victim, timeout=RESTART_S)
