"""Whole simulations: safety across configurations and strategies, liveness, and proof
that the checker fails when more than f validators are byzantine."""

from __future__ import annotations

import pytest

from consensus.sim import FAULT_KINDS, STRATEGIES, SimConfig, run_seed
from consensus.sim.network import parse_faults

ALL_FAULTS = frozenset(FAULT_KINDS)
LOSSLESS = parse_faults("delay,dup,reorder,missing")  # every message arrives, late or twice
SAFE = [(4, 1), (7, 2), (10, 3)]  # n = 3f + 1
SWEEP_SEEDS = {4: 150, 7: 60, 10: 30}  # 4 strategies each: 960 runs

def _runs(config: SimConfig, seeds: range):
    return [run_seed(seed, config) for seed in seeds]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("n", "f"), SAFE)
def test_f_byzantine_under_every_fault_keep_safety_and_liveness(n: int, f: int,
                                                                strategy: str) -> None:
    """Every fault at once before GST: no safety violation in any run, and every honest
    node reaches the target height within the bound after GST."""
    config = SimConfig(validators=n, byzantine=f, strategy=strategy, faults=ALL_FAULTS,
                       heights=3)
    results = _runs(config, range(SWEEP_SEEDS[n]))
    unsafe = [r.report() for r in results if r.violations]
    assert not unsafe, unsafe[0]
    stuck = [r.report() for r in results if r.liveness]
    assert not stuck, stuck[0]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("n", "f"), SAFE)
def test_honest_nodes_reach_the_target_when_no_message_is_lost(n: int, f: int,
                                                               strategy: str) -> None:
    config = SimConfig(validators=n, byzantine=f, strategy=strategy, faults=LOSSLESS,
                       heights=3)
    failures = [r.report() for r in _runs(config, range(100, 100 + SWEEP_SEEDS[n] // 4))
                if not r.ok]
    assert not failures, failures[0]


def test_fault_paths_are_exercised() -> None:
    totals: dict[str, int] = {}
    for strategy in ("equivocate", "crash"):
        config = SimConfig(validators=4, byzantine=1, strategy=strategy, faults=ALL_FAULTS,
                           heights=3)
        for result in _runs(config, range(10)):
            for key, value in result.stats.items():
                totals[key] = totals.get(key, 0) + value
    for key in ("dropped", "duplicated", "crashes", "restarts", "sync_requests",
                "synced_blocks", "forged_sync", "payload_missing", "proposal_not_ready",
                "evidence"):
        assert totals[key] > 0, key


def test_twins_beyond_f_break_agreement_and_the_checker_says_so() -> None:
    config = SimConfig(validators=4, byzantine=2, strategy="twins", faults=frozenset(),
                       heights=3)
    results = _runs(config, range(20))
    broken = [r for r in results if any(v.kind == "agreement" for v in r.violations)]
    assert len(broken) >= 15
    report = broken[0].report()
    assert f"seed {broken[0].seed} FAILED" in report
    assert "agreement violation" in report and "decide h1" in report


def test_no_decision_without_a_quorum() -> None:
    config = SimConfig(validators=4, byzantine=2, strategy="silent", faults=frozenset(),
                       heights=2, liveness_base_ms=2_000)
    result = run_seed(0, config)
    assert not result.violations
    assert result.heights == 0 and result.liveness


def test_restarts_that_forget_the_safety_store_are_caught_double_signing() -> None:
    """A host that loses SafetyRules' store in a crash lets the engine sign again in a
    round it already signed in: the checker must see it (and only then)."""
    config = SimConfig(validators=4, byzantine=0, faults=parse_faults("crash,delay,drop"),
                       heights=3, amnesia=True)
    results = _runs(config, range(40))
    kinds = {v.kind for r in results for v in r.violations}
    assert "double-sign" in kinds
    report = next(r for r in results if r.violations).report()
    assert "double-sign violation" in report and "signed two different" in report


def test_soak_seed_10243_crashed_validators_precommit_is_not_lost() -> None:
    result = run_seed(10243, SimConfig(validators=4, byzantine=1, strategy="crash",
                                       heights=10))
    assert not result.violations
    assert result.ok, result.report()
