"""bftnode's consensus: a sans-IO Tendermint engine, its messages, and the safety rules.

`Engine` runs Tendermint (Buchman, Kwon, Milosevic 2018, Algorithm 1) for one validator
as a plain state machine: the host feeds it messages, timer firings and block-sync
results, and carries out the outputs it returns (broadcast this, set that timer, commit
this block). It reads no clock and does no I/O, so the node's Ray actor, the in-process
runtime and the deterministic simulator all drive the same code. The message types
(`Proposal`, `Vote`, `CommitCertificate`, ...) are msgpack `WireMessage`s with
domain-separated sign bytes; `SafetyRules` is the only signer and refuses to
equivocate, even across restarts. The contract with the hosts is
docs/consensus-interface.md.
"""

from consensus.codec import CodecError, Registry, WireMessage
from consensus.engine import (
    BlockCheck,
    BlockSource,
    Broadcast,
    Decide,
    Engine,
    EngineConfig,
    EvidenceFound,
    FetchPayload,
    Output,
    ProposalContent,
    ScheduleTimeout,
    SyncNeeded,
)
from consensus.errors import ConsensusError, InvalidMessage, SafetyViolation
from consensus.evidence import EquivocationTracker
from consensus.safety import MemorySafetyStore, SafetyRules, SafetyState, SafetyStore
from consensus.types import (
    CONSENSUS_MESSAGES,
    Block,
    BlockHeader,
    CommitCertificate,
    DuplicateVoteEvidence,
    Proposal,
    Step,
    SyncRequest,
    SyncResponse,
    Vote,
    VoteKind,
)
from consensus.validators import Validator, ValidatorSet

__all__ = [
    "CONSENSUS_MESSAGES",
    "Block",
    "BlockCheck",
    "BlockHeader",
    "BlockSource",
    "Broadcast",
    "CodecError",
    "CommitCertificate",
    "ConsensusError",
    "Decide",
    "DuplicateVoteEvidence",
    "Engine",
    "EngineConfig",
    "EquivocationTracker",
    "EvidenceFound",
    "FetchPayload",
    "InvalidMessage",
    "MemorySafetyStore",
    "Output",
    "Proposal",
    "ProposalContent",
    "Registry",
    "SafetyRules",
    "SafetyState",
    "SafetyStore",
    "SafetyViolation",
    "ScheduleTimeout",
    "Step",
    "SyncNeeded",
    "SyncRequest",
    "SyncResponse",
    "Validator",
    "ValidatorSet",
    "Vote",
    "VoteKind",
    "WireMessage",
]
