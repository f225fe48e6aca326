"""Guards on the package itself: the public API re-exported by `consensus`, and the
sans-IO rule (no clock, sockets, threads, Ray, asyncio, disk or randomness)."""

from __future__ import annotations

import ast
from pathlib import Path

import consensus

ENGINE_MODULES = ["__init__", "codec", "errors", "types", "validators", "safety", "evidence",
                  "engine"]
FORBIDDEN = {"time", "datetime", "socket", "threading", "asyncio", "ray", "random", "os",
             "pathlib", "io", "subprocess", "multiprocessing", "secrets", "lmdb", "select"}


def test_public_api_is_re_exported():
    expected = {
        "CONSENSUS_MESSAGES", "Block", "BlockCheck", "BlockHeader", "BlockSource", "Broadcast",
        "CodecError", "CommitCertificate", "ConsensusError", "Decide", "DuplicateVoteEvidence",
        "Engine", "EngineConfig", "EquivocationTracker", "EvidenceFound", "FetchPayload",
        "InvalidMessage", "MemorySafetyStore", "Output", "Proposal", "ProposalContent",
        "Registry", "SafetyRules", "SafetyState", "SafetyStore", "SafetyViolation",
        "ScheduleTimeout", "Step", "SyncNeeded", "SyncRequest", "SyncResponse", "Validator",
        "ValidatorSet", "Vote", "VoteKind", "WireMessage",
    }
    assert set(consensus.__all__) == expected
    for name in expected:
        assert getattr(consensus, name) is not None
    assert consensus.__doc__ and "sans-IO" in consensus.__doc__


def test_consensus_modules_do_no_io():
    root = Path(consensus.__file__).parent
    for name in ENGINE_MODULES:
        tree = ast.parse((root / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [(node.module or "").split(".")[0]]
            else:
                continue
            assert not FORBIDDEN.intersection(mods), f"consensus/{name}.py imports {mods}"
