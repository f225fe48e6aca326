"""Where a transaction's finality goes, stage by stage, from a localnet's stage trace.

    BFTNODE_STAGE_TRACE=/tmp/trace PYTHONPATH=$PWD:$PWD/scripts/stage_trace \\
        .venv/bin/python -m node.bench --validators 4 --rate 2000 --duration 20
    .venv/bin/python scripts/stage_trace.py /tmp/trace

Reads the JSON lines scripts/stage_trace/sitecustomize.py wrote (one file per node)
and prints percentiles (p50 / p90 / p99, ms) of each stage a batch goes through, from
the clients' txs that make it to the first node that stores the block naming it, and
of the height cycle. Batches are followed by digest across nodes; times are one
machine's wall clock. See docs/BENCHMARKS.md for figures.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import sys


def pct(xs: list[float]) -> str:
    if not xs:
        return "-"
    xs = sorted(xs)
    cut = [xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000 for p in (50, 90, 99)]
    mean = 1000 * sum(xs) / len(xs)
    return " / ".join(f"{v:6.1f}" for v in cut) + f"   mean {mean:6.1f}  n={len(xs)}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.folder, "*.jsonl")))
    if not files:
        print(f"no *.jsonl in {args.folder}", file=sys.stderr)
        return 1
    sealed: dict[str, tuple[int, float]] = {}
    stored: dict[str, dict[int, float]] = collections.defaultdict(dict)
    committed: dict[int, dict[int, float]] = collections.defaultdict(dict)
    commit_call: dict[int, dict[int, float]] = collections.defaultdict(dict)
    block_of: dict[str, int] = {}
    proposed: dict[int, tuple[int, float]] = {}
    no_proposal: dict[tuple[int, int], float] = {}
    intake, saves = [], []
    for node, path in enumerate(files):
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                kind = r[0]
                if kind == "error":
                    print(f"{os.path.basename(path)}: trace error: {r[1]}", file=sys.stderr)
                elif kind == "intake":
                    intake.append(r[2] - r[5])
                elif kind == "batches":
                    for d in r[3]:
                        if r[2] == "local":
                            sealed[d] = (node, r[1])
                        else:
                            stored[d].setdefault(node, r[1])
                elif kind == "commit":
                    _, t0, t1, height, digests = r
                    committed[height][node] = t1
                    commit_call[height][node] = t1 - t0
                    for d in digests:
                        block_of[d] = height
                elif kind == "propose":
                    proposed[r[2]] = (node, r[1])
                elif kind == "no_proposal":
                    no_proposal.setdefault((node, r[2]), r[1])
                elif kind == "save":
                    saves.append(r[2] - r[1])
    to_peer, ready_wait, to_proposal, to_commit, by_origin = [], [], [], [], 0
    for d, (origin, t_seal) in sealed.items():
        h = block_of.get(d)
        if h is None or h not in proposed or not committed.get(h):
            continue
        proposer, t_prop = proposed[h]
        to_peer.extend(t - t_seal for t in stored[d].values())
        ready = t_seal if proposer == origin else stored[d].get(proposer)
        by_origin += proposer == origin
        if ready is not None:
            ready_wait.append(t_prop - ready)
        to_proposal.append(t_prop - t_seal)
        to_commit.append(min(committed[h].values()) - t_prop)
    heights = sorted(h for h in proposed if h in committed)
    cycle = [proposed[h][1] - proposed[h - 1][1] for h in heights if h - 1 in proposed]
    waited = [proposed[h][1] - no_proposal[(proposed[h][0], h)] for h in heights
              if (proposed[h][0], h) in no_proposal]
    fastest_commit = [min(commit_call[h].values()) for h in heights]
    print(f"{len(files)} nodes, {len(heights)} heights, {len(to_commit)} batches followed "
          f"({by_origin} proposed by the node that sealed them)")
    print("stage (ms)                                   p50 /    p90 /    p99")
    rows = [
        ("client tx arrival -> its batch sealed", intake),
        ("sealed -> stored by a peer (each peer)", to_peer),
        ("held by the proposer -> proposed", ready_wait),
        ("sealed -> proposed", to_proposal),
        ("proposed -> first node stored the block", to_commit),
        ("height cycle (proposal to proposal)", cycle),
        (f"proposer waited to propose ({len(waited)} heights)", waited),
        ("commit call (decide -> stored), fastest node", fastest_commit),
        (f"safety save ({len(saves) / max(len(heights), 1):.2f} per height, all nodes)", saves),
    ]
    for name, xs in rows:
        print(f"{name:44s} {pct(xs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
