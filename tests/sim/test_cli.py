"""`python -m consensus.sim`: exit codes, the JSON last line, and byte-identical replays."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from consensus.sim.__main__ import main

REPO = Path(__file__).resolve().parents[2]
SUMMARY_KEYS = {"runs", "violations", "liveness_failures", "heights", "seconds"}


def run_cli(*args: str, hash_seed: str = "0") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    return subprocess.run([sys.executable, "-m", "consensus.sim", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def without_timing(stdout: str) -> str:
    return re.sub(r'"(seconds|heights_per_s)": [0-9.]+', r'"\1": _', stdout)


def test_clean_runs_exit_0_with_a_json_summary_last(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--validators", "4", "--byzantine", "1", "--strategy", "silent",
                 "--faults", "delay,dup,reorder", "--seeds", "3", "--seed-start", "5",
                 "--heights", "4"])
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert code == 0
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["runs"] == 3 and summary["violations"] == 0
    assert summary["liveness_failures"] == 0 and summary["heights"] >= 12
    assert summary["seed_start"] == 5


@pytest.mark.parametrize("args", [
    ["--validators", "0"],
    ["--validators", "4", "--byzantine", "5"],
    ["--strategy", "bribe"],
    ["--faults", "drop,meteor"],
    ["--seeds", "0"],
    ["--heights", "zero"],
])
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_violations_exit_1_and_replay_byte_for_byte() -> None:
    """More twins than f fork the chain: exit 1, the failing seeds with a trace, and the
    same output (timings aside) under another hash seed, i.e. no set-order dependence."""
    args = ["--validators", "4", "--byzantine", "2", "--strategy", "twins",
            "--faults", "none", "--seeds", "3", "--heights", "3"]
    first = run_cli(*args, hash_seed="1")
    second = run_cli(*args, hash_seed="2")
    assert first.returncode == 1, first.stderr
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert SUMMARY_KEYS <= summary.keys() and summary["violations"] >= 1
    assert "FAILED" in first.stdout and "agreement violation" in first.stdout
    assert "trace (last" in first.stdout
    assert without_timing(first.stdout) == without_timing(second.stdout)


def test_faulty_runs_replay_byte_for_byte_under_any_hash_seed() -> None:
    args = ["--validators", "4", "--byzantine", "1", "--strategy", "equivocate",
            "--seeds", "4", "--heights", "4"]
    first = run_cli(*args, hash_seed="3")
    second = run_cli(*args, hash_seed="4")
    assert first.returncode in (0, 1), first.stderr
    assert without_timing(first.stdout) == without_timing(second.stdout)


def test_the_same_seed_gives_the_same_run() -> None:
    from consensus.sim import SimConfig, run_seed

    config = SimConfig(validators=4, byzantine=1, strategy="equivocate", heights=4)
    a, b = run_seed(11, config), run_seed(11, config)
    assert (a.end_ms, a.events, a.heights, a.stats, a.trace) == \
           (b.end_ms, b.events, b.heights, b.stats, b.trace)
    c = run_seed(12, config)
    assert (c.end_ms, c.events) != (a.end_ms, a.events)
