"""Measure how long `localnet up` takes and how much memory each validator uses.

    .venv/bin/python scripts/localnet_startup.py --validators 4 --runtime ray --runs 3

Startup = from the call until every node answers /v1/status. Memory = the RSS of
each node's whole process tree (supervisor, and under Ray its gcs_server, raylet,
agents and actor workers), summed from /proc, a few seconds after startup.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from node import localnet


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--runtime", choices=["ray", "inprocess"], default="ray")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    times, mems = [], []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bftnode-startup-") as tmp:
            t0 = time.monotonic()
            net = localnet.up(Path(tmp) / "net", args.validators, runtime=args.runtime,
                              timeout=120)
            elapsed = time.monotonic() - t0
            try:
                time.sleep(3)
                per_node = [rss_mib(list(localnet.node_tree(n))) for n in net.nodes]
            finally:
                localnet.down(net)
        times.append(elapsed)
        mems.append(statistics.mean(per_node))
        print(f"run {run + 1}: up in {elapsed:.1f} s, RSS per validator "
              f"{', '.join(f'{m:.0f}' for m in per_node)} MiB", flush=True)
    print(f"{args.validators} validators, runtime {args.runtime}: startup median "
          f"{statistics.median(times):.1f} s (min {min(times):.1f}, max {max(times):.1f}); "
          f"RSS per validator median {statistics.median(mems):.0f} MiB")


if __name__ == "__main__":
    main()
