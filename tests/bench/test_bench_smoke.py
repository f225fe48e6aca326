"""The bench harness: percentile math, the open-loop schedule (fake clock), the pipelined
HTTP client, tx preparation, and short real runs whose count is checked against the blocks.

The real runs use a 1-validator in-process localnet on 127.0.0.1; the one that
starts its own localnet, the sweep and plots are marked slow.
"""

from __future__ import annotations

import asyncio
import json
import math
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from node import localnet
from node.bench import percentile, summarize
from node.cli import main as cli_main
from node.loadgen import (
    DrainRule,
    EventWatcher,
    OpenLoopScheduler,
    PipelinedConnection,
    _NullServer,
    due_count,
    parse_responses,
    post_head,
    prepare_txs,
)
from node.tx import decode_tx

DESIGN_KEYS = {"validators", "offered_tps", "duration_s", "submitted", "committed",
               "committed_tps", "finality_ms", "consensus_ms", "blocks", "mean_block_txs",
               "verify_limit_tps", "machine"}

# --- percentiles --------------------------------------------------------------------------


def test_percentile_nearest_rank():
    data = list(range(1, 101))
    assert percentile(data, 50) == 50
    assert percentile(data, 95) == 95
    assert percentile(data, 99) == 99
    assert percentile(data, 100) == 100
    assert percentile(data, 0) == 1
    assert percentile([7.0], 99) == 7.0
    # 10 samples: p95 and p99 are both the largest (rank ceil(9.5) = ceil(9.9) = 10).
    ten = [float(x) for x in range(10)]
    assert percentile(ten, 50) == 4.0
    assert percentile(ten, 95) == 9.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(data, 101)


def test_summarize_sorts_skips_nan_and_handles_empty():
    s = summarize([5.0, 1.0, math.nan, 3.0, 2.0, 4.0])
    assert s == {"p50": 3.0, "p95": 5.0, "p99": 5.0, "max": 5.0}
    assert summarize([], ps=(50, 99), with_max=False) == {"p50": None, "p99": None}


# --- the open-loop schedule ---------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_due_count():
    assert due_count(-0.1, 100, 10) == 0
    assert due_count(0.0, 100, 10) == 1
    assert due_count(0.0499, 100, 10) == 5
    assert due_count(5.0, 100, 10) == 10
    assert due_count(0.0, math.inf, 10) == 10


def test_scheduler_sends_each_tx_when_due_without_waiting_for_replies():
    clock = FakeClock()
    sent: list[tuple[int, float]] = []
    sched = OpenLoopScheduler(rate=1000, total=500, clock=clock, sleep=clock.sleep, tick=0.001)
    # `send` never yields and nothing ever answers: an open loop must still send everything.
    t0 = asyncio.run(sched.run(lambda i: sent.append((i, clock()))))
    assert [i for i, _ in sent] == list(range(500))
    for i, t in sent:
        due = t0 + i / 1000
        assert due - 1e-9 <= t <= due + 0.001 + 1e-9, (i, t - t0)
    assert clock.now - t0 == pytest.approx(0.499, abs=0.0011)


def test_scheduler_catches_up_after_a_stall_instead_of_shifting_the_schedule():
    clock = FakeClock()
    sent: list[tuple[int, float]] = []

    def send(i: int) -> None:
        sent.append((i, clock()))
        if i == 10:
            clock.now += 0.5  # the loop was blocked for 500 ms (GC, a slow callback)

    sched = OpenLoopScheduler(rate=100, total=100, clock=clock, sleep=clock.sleep)
    t0 = asyncio.run(sched.run(send))
    times = dict(sent)
    # Everything due during the stall (tx 11..60 at 100 tx/s) goes out at once right after it.
    burst = [i for i, t in sent if t == times[11]]
    assert burst == list(range(11, due_count(times[11] - t0, 100, 100)))
    assert len(burst) >= 49
    # The schedule does not move: the last tx is still sent when it is due.
    assert times[99] == pytest.approx(t0 + 0.99, abs=0.0011)
    assert len(sent) == 100


def test_the_drain_waits_for_a_backlog_that_still_commits_and_not_for_a_stalled_one():
    rule = DrainRule(load_end=100.0, limit_s=60, stall_s=15)
    # A backlog committing slowly: each check sees a few more, so the drain goes on.
    assert not any(rule.done(100.0 + t, True, 1000, 10 * t) for t in range(0, 50, 5))
    assert rule.done(150.0, True, 1000, 1000)                 # all seen: done at once
    # Answers still owed hold it too, even with every accepted tx seen.
    assert not DrainRule(100.0, 60, 15).done(101.0, False, 10, 10)
    # Nothing new for 15 s: the chain stopped (or lost them); the drain ends.
    stalled = DrainRule(load_end=100.0, limit_s=60, stall_s=15)
    assert not stalled.done(101.0, True, 1000, 400)
    assert not stalled.done(115.9, True, 1000, 400)
    assert stalled.done(116.1, True, 1000, 400)
    # And never past the limit, however steady the progress.
    steady = DrainRule(load_end=100.0, limit_s=60, stall_s=15)
    assert not steady.done(159.0, True, 10**6, 59)
    assert steady.done(160.0, True, 10**6, 60)


def test_scheduler_rejects_a_zero_rate():
    with pytest.raises(ValueError):
        OpenLoopScheduler(rate=0, total=1)


# --- the pipelined HTTP client ------------------------------------------------------------


def test_parse_responses_handles_pipelined_and_split_answers():
    a = b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}"
    b = b'HTTP/1.1 400 Bad Request\r\ncontent-length: 15\r\n\r\n{"error": "no"}'
    buf = bytearray(a + b[:20])
    assert parse_responses(buf) == [(202, b"{}")]
    buf += b[20:]
    assert parse_responses(buf) == [(400, b'{"error": "no"}')]
    assert buf == bytearray()


def test_pipelined_connection_gets_answers_in_order():
    async def scenario() -> list[tuple[int, int]]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_NullServer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        answers: list[tuple[int, int]] = []
        done = loop.create_future()

        def on_answer(tag: int, status: int, body: bytes, t: float) -> None:
            answers.append((tag, status))
            if len(answers) == 50:
                done.set_result(None)

        _, conn = await loop.create_connection(lambda: PipelinedConnection(on_answer),
                                               "127.0.0.1", port)
        request = post_head(f"127.0.0.1:{port}", "/v1/txs", 3) + b"abc"
        for i in range(50):  # all written before any answer is read
            assert conn.send(i, request)
        await asyncio.wait_for(done, 5)
        conn.close()
        server.close()
        await server.wait_closed()
        return answers

    assert asyncio.run(scenario()) == [(i, 202) for i in range(50)]


def test_event_watcher_keeps_the_first_sighting():
    now = [1.0]
    w = EventWatcher(["aa", "bb", "cc"], clock=lambda: now[0], wall=lambda: 1000.0)
    w.on_event({"type": "block", "height": 5, "tx_hashes": ["aa", "zz"], "time_ms": 999_990})
    now[0] = 2.0
    w.on_event({"type": "block", "height": 5, "tx_hashes": ["aa", "zz"], "time_ms": 999_990})
    w.on_event({"type": "block", "height": 6, "tx_hashes": ["bb"], "time_ms": 999_995})
    assert w.seen[0] == 1.0 and w.seen[1] == 2.0 and math.isnan(w.seen[2])
    assert w.seen_count == 2
    assert w.blocks[5].seen == 1.0 and w.blocks[5].time_ms == 999_990


# --- transactions -------------------------------------------------------------------------


def test_prepare_txs_sizes_wallets_and_nonce_order():
    txs = prepare_txs("bench-test", 600, rate=200, targets=3, tx_size=250, connections=4)
    assert len(txs) == 600 and txs.wallets == 200
    assert {len(b) for b in txs.bodies} == {250}
    assert len(set(txs.hashes)) == 600
    by_sender: dict[bytes, list[tuple[int, int, int, int]]] = {}
    for i, body in enumerate(txs.bodies):
        tx = decode_tx(body, 65536)
        assert tx.chain_id == "bench-test" and tx.app == "kvstore"
        by_sender.setdefault(tx.sender, []).append((i, tx.nonce, txs.node[i], txs.conn[i]))
    for sends in by_sender.values():
        assert [nonce for _, nonce, _, _ in sends] == list(range(len(sends)))
        assert len({(node, conn) for _, _, node, conn in sends}) == 1  # one node, one connection
    assert set(txs.node) == {0, 1, 2} and set(txs.conn) == {0, 1, 2, 3}


def test_replay_codes_follows_the_kvstore_nonce_rule():
    from node.bench import replay_codes

    txs = prepare_txs("bench-test", 6, rate=2, targets=1, tx_size=150, connections=1)
    assert txs.wallets == 2  # tx i: wallet i % 2, nonce i // 2
    assert [txs.wallet_and_nonce(i) for i in range(6)] == [(0, 0), (1, 0), (0, 1), (1, 1),
                                                           (0, 2), (1, 2)]
    # Wallet 0's nonce 2 lands before its nonce 1: nonce 2 fails, nonce 1 still applies.
    # Wallet 1's nonce 0 is held twice: it counts once, at its first place.
    codes = replay_codes(txs, [0, 4, 2, 1, 1, 3, 5])
    assert codes == {0: 0, 4: 1, 2: 0, 1: 0, 3: 0, 5: 0}
    # A tx never in the chain has no code; its wallet's later txs fail.
    assert replay_codes(txs, [1, 5]) == {1: 0, 5: 1}


def test_offered_rates_in_tx_per_s_or_as_a_multiple_of_the_verify_limit():
    from node.bench import OfferedRate, parse_rate

    assert parse_rate("1500") == OfferedRate(1500.0) and parse_rate("1500").tps(9e9) == 1500
    quarter = parse_rate(" 0.25x")
    assert quarter == OfferedRate(0.25, of_verify_limit=True) and str(quarter) == "0.25x"
    assert quarter.tps(7021.3) == 1755.3 and parse_rate("2X").tps(100) == 200
    for bad in ("fast", "x", "0x", "-1", "0", "nan", "infx", ""):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_bad_bench_flags_are_usage_errors(capsys):
    assert cli_main(["bench", "--sweep", "100,fast"]) == 2
    assert cli_main(["bench", "--sweep", "0.1x,0x"]) == 2
    assert cli_main(["bench", "--rate", "0x"]) == 2
    assert "multiple of the verify limit" in capsys.readouterr().err
    assert cli_main(["bench", "--peer", "etcd"]) == 2
    assert cli_main(["bench", "--duration", "0"]) == 2
    assert "--duration must be > 0" in capsys.readouterr().err


# --- real runs ----------------------------------------------------------------------------


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _committed_in_chain(rpc: str) -> tuple[int, int]:
    """(txs with code 0, all txs) in every block of the chain, read through the API."""
    latest = _get(f"{rpc}/v1/status")["height"]
    ok = total = 0
    for h in range(1, latest + 1):
        for tx_hash in _get(f"{rpc}/v1/blocks/{h}")["tx_hashes"]:
            total += 1
            ok += _get(f"{rpc}/v1/txs/{tx_hash}")["code"] == 0
    return ok, total


@pytest.fixture(scope="module")
def one_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localnet.Localnet]:
    net = localnet.up(tmp_path_factory.mktemp("bench") / "net", 1, runtime="inprocess",
                      timeout=120)
    try:
        yield net
    finally:
        localnet.down(net)


@pytest.mark.timeout(120)
def test_bench_report_has_every_key_and_counts_what_the_blocks_hold(one_node, tmp_path):
    out = tmp_path / "report.json"
    rpc = one_node.nodes[0].rpc
    code = cli_main(["bench", "--rpc", rpc, "--rate", "100", "--duration", "3",
                     "--tx-size", "180", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert DESIGN_KEYS <= set(report)
    assert set(report["finality_ms"]) == {"p50", "p95", "p99", "max"}
    assert set(report["consensus_ms"]) == {"p50", "p99"}
    assert report["validators"] == 1 and report["offered_tps"] == 100
    assert report["duration_s"] == 3 and report["submitted"] == 300
    assert report["wallets"] == 300                   # a wallet per tx: no nonce chains
    assert report["tx_size"] == 180
    assert report["committed_tps"] == pytest.approx(report["committed"] / 3, abs=0.1)
    # Sustained: over the window and whatever drain the last commit needed.
    span = 3 + max(0.0, report["drain_s"])
    assert report["committed"] / (span + 0.5) <= report["sustained_tps"] <= report["committed_tps"]
    assert report["verify_limit_tps"] > 0 and report["machine"]["cores"] >= 1
    assert report["verify_limit_after_tps"] > 0       # measured again after the run
    assert report["machine"]["verify_signatures_after_per_s"] == pytest.approx(
        report["verify_limit_after_tps"], rel=0.01)   # one validator: the same rate
    # The bench's txs are the only txs this chain ever saw: the blocks must hold exactly
    # `committed` of them with code 0.
    ok, total = _committed_in_chain(rpc)
    assert report["committed"] == ok == total == 300
    assert report["blocks"] >= 1
    assert report["mean_block_txs"] == pytest.approx(300 / report["blocks"], abs=0.1)
    assert report["finality_samples"] == 300
    assert 0 < report["finality_ms"]["p50"] <= report["finality_ms"]["p99"] \
        <= report["finality_ms"]["max"]
    assert report["consensus_ms"]["p50"] is not None
    assert report["codes_from"].startswith("nonce replay")


@pytest.mark.timeout(120)
def test_a_rate_relative_to_the_verify_limit_is_resolved_before_the_load(one_node, tmp_path):
    out = tmp_path / "report.json"
    code = cli_main(["bench", "--rpc", one_node.nodes[0].rpc, "--rate", "0.004x",
                     "--duration", "2", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["offered_of_verify_limit"] == 0.004
    # Measured before the load, on this machine: the rate follows from it.
    assert report["offered_tps"] == pytest.approx(0.004 * report["verify_limit_tps"], abs=0.2)
    assert report["submitted"] == round(report["offered_tps"] * 2)
    assert report["committed"] == report["submitted"]


@pytest.mark.timeout(60)
def test_pysyncobj_peer_on_three_replicas_produces_numbers():
    from node.peer_bench import run_peer

    peer, samples = run_peer(3, rate=200, duration=2, tx_size=200, show_progress=False)
    assert peer["system"] == "pysyncobj" and peer["replicas"] == 3
    assert "crash faults only" in peer["fault_model"]
    assert peer["submitted"] == 400
    assert peer["committed"] == 400 == len(samples)
    assert peer["committed_tps"] == pytest.approx(200, abs=0.1)
    assert 0 < peer["finality_ms"]["p50"] <= peer["finality_ms"]["p99"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_with_its_own_localnet_sweep_plot_and_peer(tmp_path: Path):
    out, plot = tmp_path / "sweep.json", tmp_path / "sweep.png"
    code = cli_main(["bench", "--validators", "1", "--runtime", "inprocess", "--sweep",
                     "50,150", "--duration", "2", "--out", str(out), "--plot", str(plot),
                     "--peer", "pysyncobj"])
    assert code == 0
    doc = json.loads(out.read_text())
    assert [r["offered_tps"] for r in doc["sweep"]] == [50, 150]
    for r in doc["sweep"]:
        assert DESIGN_KEYS <= set(r)
        assert r["committed"] == r["submitted"]
        assert r["peer"]["committed"] == r["submitted"]
    assert plot.stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_single_run_plot(one_node, tmp_path: Path):
    plot = tmp_path / "run.png"
    code = cli_main(["bench", "--rpc", one_node.nodes[0].rpc, "--rate", "200",
                     "--duration", "2", "--plot", str(plot)])
    assert code == 0
    assert plot.stat().st_size > 10_000


@pytest.mark.parametrize("writes_logs", [False, True])
def test_a_localnet_that_does_not_start_leaves_no_empty_directory(tmp_path, monkeypatch,
                                                                  capsys, writes_logs):
    """The bench's own localnet failing to start: exit 1 with the reason; its temporary
    directory is removed when nothing was written, kept (and named) when node logs are."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def failing_up(directory: Path, *args, **kwargs):
        if writes_logs:
            (directory / "node0").mkdir(parents=True)
            (directory / "node0" / "node.log").write_text("node 0 failed to start\n")
        raise RuntimeError("node 0 did not answer /v1/status")

    monkeypatch.setattr(localnet, "up", failing_up)
    assert cli_main(["bench", "--validators", "1", "--runtime", "inprocess",
                     "--duration", "1"]) == 1
    err = capsys.readouterr().err
    assert "node 0 did not answer" in err
    left = [p for p in tmp_path.iterdir() if p.name.startswith("bftnode-bench-")]
    if writes_logs:
        assert len(left) == 1 and (left[0] / "net" / "node0" / "node.log").is_file()
        assert f"kept in {left[0]}" in err
    else:
        assert left == []
