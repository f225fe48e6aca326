"""The stage-trace diagnostic (scripts/stage_trace): it wraps the node methods it names,
and its report follows a batch across nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_tracer_wraps_every_method_it_names(tmp_path):
    # In a child process: it patches the node's classes for good.
    code = (
        "import importlib, sys, sitecustomize\n"
        "sys.argv += ['start', '--home', 'h']\n"
        "importlib.reload(sitecustomize)\n"
        "import node.supervisor as s\n"
        "assert hasattr(s.Node._intake, '__wrapped__')\n"
    )
    tmp_path = tmp_path / "made by the tracer"
    env = dict(os.environ, BFTNODE_STAGE_TRACE=str(tmp_path),
               PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'scripts' / 'stage_trace'}")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    [trace] = list(tmp_path.glob("*.jsonl"))
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [r[0] for r in records] == ["installed", "exit"], records


def test_the_report_follows_a_batch_from_sealing_to_the_stored_block(tmp_path):
    d = "ab" * 8
    node0 = [["intake", 0.990, 1.000, 2, 0.980, 0.985],
             ["batches", 1.000, "local", [d]],
             ["commit", 1.030, 1.040, 1, [d]]]
    node1 = [["batches", 1.006, "remote", [d]],
             ["no_proposal", 1.008, 1],
             ["propose", 1.010, 1, [d]],
             ["save", 1.011, 1.013],
             ["commit", 1.031, 1.045, 1, [d]]]
    for i, recs in enumerate((node0, node1)):
        (tmp_path / f"{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "stage_trace.py"),
                          str(tmp_path)], capture_output=True, text=True, check=True).stdout
    lines = {line[:44].strip(): line[44:].split("/")[0].strip() for line in out.splitlines()
             if "/" in line[44:]}
    assert lines["client tx arrival -> its batch sealed"] == "15.0"
    assert lines["sealed -> stored by a peer (each peer)"] == "6.0"
    assert lines["held by the proposer -> proposed"] == "4.0"
    assert lines["sealed -> proposed"] == "10.0"
    assert lines["proposed -> first node stored the block"] == "30.0"
    assert lines["proposer waited to propose (1 heights)"] == "2.0"
    assert "1 batches followed (0 proposed by the node that sealed them)" in out
