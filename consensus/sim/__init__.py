"""Deterministic simulator for the consensus engine (``python -m consensus.sim``).

N engines run in one process on a virtual clock, talking through a simulated
network that delays, drops, duplicates, reorders and partitions messages until
a global stabilisation time (GST) and is well behaved after it. Nodes crash and
restart with only their durable state (safety store and decided blocks), and F
validators can be byzantine (`twins`, `equivocate`, `silent`, `crash`). A
checker watches every decision and every honestly signed message for agreement,
certificate validity, chain order and double-signing, and requires every honest
node to reach the target height within a bound after GST. One seed drives all
randomness, so a failing seed replays exactly.

Public API: `SimConfig`, `Simulation`, `RunResult`, `run_seed`, `Checker`,
`Violation`, `Network`, `NetworkParams`, `VirtualClock`, `SignatureCache`,
`parse_faults`, `FAULT_KINDS`, `STRATEGIES`.
"""

from consensus.sim.byzantine import STRATEGIES
from consensus.sim.checker import Checker, Violation
from consensus.sim.clock import VirtualClock
from consensus.sim.network import FAULT_KINDS, Network, NetworkParams, parse_faults
from consensus.sim.runner import RunResult, SimConfig, Simulation, run_seed
from consensus.sim.sigcache import SignatureCache

__all__ = [
    "FAULT_KINDS",
    "STRATEGIES",
    "Checker",
    "NetworkParams",
    "Network",
    "RunResult",
    "SignatureCache",
    "SimConfig",
    "Simulation",
    "VirtualClock",
    "Violation",
    "parse_faults",
    "run_seed",
]
