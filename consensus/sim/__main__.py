"""``python -m consensus.sim``: run seeded Byzantine simulations and check them.

Exit status: 0 when every run kept every safety property and all honest nodes
reached the target height after the network healed; 1 on any violation or
liveness failure (each failing seed is printed with a trace); 2 on a usage
error. The last line of output is a JSON summary (see `summary`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from consensus.sim.byzantine import STRATEGIES
from consensus.sim.network import FAULT_KINDS, parse_faults
from consensus.sim.runner import STAT_KEYS, RunResult, SimConfig, run_seed

DEFAULT_FAULTS = ",".join(FAULT_KINDS)
MAX_FAILED_SEEDS_LISTED = 50


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m consensus.sim",
        description="Deterministic virtual-time simulations of the consensus engine "
                    "under network faults and byzantine validators.",
    )
    p.add_argument("--validators", type=int, default=4, metavar="N",
                   help="number of validators, equal power (default 4)")
    p.add_argument("--byzantine", type=int, default=1, metavar="F",
                   help="byzantine validators, chosen at random per seed (default 1)")
    p.add_argument("--strategy", choices=STRATEGIES, default="silent",
                   help="what the byzantine validators do (default silent)")
    p.add_argument("--faults", default=DEFAULT_FAULTS, metavar="LIST",
                   help=f"comma-separated network/node faults before GST, from "
                        f"{DEFAULT_FAULTS}; or 'none' or 'all' (default: all)")
    p.add_argument("--seeds", type=int, default=1, metavar="COUNT",
                   help="number of runs, one per seed (default 1)")
    p.add_argument("--seed-start", type=int, default=0, metavar="S",
                   help="first seed (default 0)")
    p.add_argument("--heights", type=int, default=10, metavar="H",
                   help="heights every honest node must decide (default 10)")
    return p


def parse_config(argv: Sequence[str] | None) -> tuple[SimConfig, int, int]:
    """Parse the command line; exits with status 2 on a usage error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.validators < 1:
        parser.error("--validators must be at least 1")
    if not 0 <= args.byzantine <= args.validators:
        parser.error(f"--byzantine must be between 0 and --validators ({args.validators})")
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.seed_start < 0:
        parser.error("--seed-start must not be negative")
    if args.heights < 1:
        parser.error("--heights must be at least 1")
    try:
        faults = parse_faults(args.faults)
    except ValueError as exc:
        parser.error(f"--faults: {exc}")
    config = SimConfig(validators=args.validators, byzantine=args.byzantine,
                       strategy=args.strategy, faults=faults, heights=args.heights)
    return config, args.seeds, args.seed_start


def summary(config: SimConfig, results: Sequence[RunResult], seed_start: int,
            seconds: float) -> dict:
    """The JSON summary: `violations` and `liveness_failures` count failing runs,
    `heights` is the total heights decided (per run: by the slowest honest node)."""
    heights = sum(r.heights for r in results)
    failed = [r.seed for r in results if not r.ok]
    return {
        "runs": len(results),
        "violations": sum(1 for r in results if r.violations),
        "liveness_failures": sum(1 for r in results if r.liveness),
        "heights": heights,
        "seconds": round(seconds, 3),
        "heights_per_s": round(heights / seconds, 1) if seconds > 0 else None,
        "validators": config.validators,
        "byzantine": config.byzantine,
        "strategy": config.strategy,
        "faults": sorted(config.faults),
        "target_heights": config.heights,
        "seed_start": seed_start,
        "failed_seeds": failed[:MAX_FAILED_SEEDS_LISTED],
        "stats": {key: sum(r.stats.get(key, 0) for r in results) for key in STAT_KEYS},
    }


def main(argv: Sequence[str] | None = None) -> int:
    config, seeds, seed_start = parse_config(argv)
    started = time.perf_counter()
    results: list[RunResult] = []
    for seed in range(seed_start, seed_start + seeds):
        result = run_seed(seed, config)
        results.append(result)
        if not result.ok:
            print(result.report(), flush=True)
    seconds = time.perf_counter() - started
    doc = summary(config, results, seed_start, seconds)
    print(f"{doc['runs']} runs: {doc['violations']} with safety violations, "
          f"{doc['liveness_failures']} with liveness failures, {doc['heights']} heights decided")
    print(json.dumps(doc), flush=True)
    if doc["failed_seeds"]:
        print(f"consensus.sim: {len([r for r in results if not r.ok])} of {len(results)} runs "
              f"failed, first seed {doc['failed_seeds'][0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
