"""ConsensusHost: hosts the sans-IO consensus engine inside the node.

The engine (`consensus.engine.Engine`) is pure: messages and timer expiries
in, messages to send, timers to set and decided blocks out. This class feeds
it and turns its outputs into plain msgpack records for the supervisor, which
does the I/O (peer links, timers, the commit pipeline). One call carries every
input that arrived since the last one, so a burst of votes costs one actor call.

It is also the engine's `BlockSource`:
- a proposal takes, oldest first, up to `max_block_batches` batch digests that
  this node holds and that no committed block has named, stopping before their
  transactions would pass `max_block_txs` (a batch larger than that goes alone):
  one block's execution stays bounded under overload. It also takes the app hash after the
  previous block (so a proposer waits for its own executor to catch up);
- a proposal is checked against what this node knows: an app hash that
  differs from its own is INVALID (the proposer's state forked), a batch this
  node does not hold is MISSING (the supervisor fetches it from peers first).

SafetyRules' state lives in the node's LMDB store and is fsync'd before any
signature leaves this class: a validator that crashes right after voting and
restarts can never sign a conflicting vote.

Inputs (packed list of records):
    ["msg", encoded]                 a Proposal, Vote or DuplicateVoteEvidence from a peer (already decoded once
                                     by the supervisor for routing; re-decoded here)
    ["timeout", height, round, step]
    ["batches", [digest...], proposable, [tx count...]]   batches this node now holds
    ["executed", height, app_hash]   the executor applied `height`
    ["certified", block, cert]       a certified block from block sync
    ["ready"]                        a pacing delay asked for by "wake" has passed
Outputs (packed list of records):
    ["broadcast", encoded]
    ["timeout", height, round, step, delay_ms]
    ["decide", block, cert]
    ["fetch", [missing digests], proposer_pk]
    ["sync", height, validator_pk]
    ["evidence", encoded]           new duplicate-vote evidence (gossiped to peers)
    ["equivocate", encoded_a, encoded_b]   byzantine test mode: two conflicting messages
    ["wake", delay_ms]               send ["ready"] after delay_ms (proposal pacing)
    ["prepare", block]               this node proposed the block or prevoted for it: the
                                     executor may apply it ahead of the decision (once per
                                     block; see node/actors/executor.py)
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import msgpack

from consensus.codec import CodecError, unpack
from consensus.engine import (
    BlockCheck,
    Broadcast,
    Decide,
    Engine,
    EngineConfig,
    EvidenceFound,
    FetchPayload,
    ProposalContent,
    ScheduleTimeout,
    SyncNeeded,
)
from consensus.errors import InvalidMessage
from consensus.safety import SafetyRules, SafetyState
from consensus.types import (
    CONSENSUS_MESSAGES,
    Block,
    DuplicateVoteEvidence,
    Proposal,
    Vote,
    VoteKind,
)
from consensus.validators import Validator, ValidatorSet
from crypto import load_private_key, sha256
from node.runtime import placement
from node.storage import LmdbSafetyStore
from node.stores import open_storage
from node.wire import decode_block, decode_certificate

log = logging.getLogger(__name__)

_RECENT_COMMITTED_DIGESTS = 100_000
_MAX_PENDING_EVIDENCE = 1_000
MAX_BLOCK_EVIDENCE = 16
BATCH_DIGEST_SIZE = 32


def is_batch_digest(item: bytes) -> bool:
    """Block payload items are 32-byte batch digests or encoded evidence (always longer)."""
    return len(item) == BATCH_DIGEST_SIZE


def evidence_key(ev: DuplicateVoteEvidence) -> bytes:
    """One key per equivocation whichever order its two votes come in."""
    a, b = sorted((ev.vote_a.encode(), ev.vote_b.encode()))
    return sha256(a + b)


def decode_evidence(item: bytes) -> DuplicateVoteEvidence:
    msg = CONSENSUS_MESSAGES.decode(item)
    if not isinstance(msg, DuplicateVoteEvidence):
        raise CodecError("payload item is neither a batch digest nor duplicate-vote evidence")
    return msg


def decode_safety_state(raw: bytes) -> SafetyState:
    obj = unpack(raw)
    if type(obj) is not list or not obj or obj[0] != SafetyState.TAG:
        raise CodecError("stored safety state is not a SafetyState")
    state = SafetyState.from_fields(obj[1:])
    state.validate()
    return state


class ConsensusHost:
    def __init__(self, data_dir: str, key_path: str, chain_id: str,
                 validators: list[tuple[bytes, int]], timeouts: dict[str, int],
                 max_block_batches: int, map_size: int, genesis_app_hash: bytes,
                 block_interval_ms: int = 0, empty_block_interval_ms: int = 500,
                 byzantine: str = "", max_block_txs: int = 0) -> None:
        if byzantine not in ("", "equivocate", "silent"):
            raise ValueError(f"unknown byzantine mode {byzantine!r}")
        self.chain_id = chain_id
        self.byzantine = byzantine
        self.storage = open_storage(data_dir, map_size=map_size)
        self.key = load_private_key(key_path)
        self.validators = ValidatorSet(tuple(Validator(pk, power) for pk, power in validators))
        self.max_block_batches = max_block_batches
        self.max_block_txs = max_block_txs      # 0: no cap
        self.block_interval_ms = block_interval_ms
        self.empty_block_interval_ms = empty_block_interval_ms
        self.last_commit_wall = time.time()
        self._wake_ms: int | None = None
        self.is_validator = self.validators.index_of(self.key.public_key) is not None
        signer = None
        if self.is_validator:
            signer = SafetyRules(self.key, LmdbSafetyStore(self.storage, decode_safety_state),
                                 chain_id)
        self.signer = signer
        height = self.storage.latest_height()
        prev_hash = bytes(32)
        if height > 0:
            prev_hash = decode_block(self.storage.block(height)[0]).hash()
        self.app_hashes: dict[int, bytes] = {height: self.storage.last_app_hash()
                                             or genesis_app_hash}
        # Batches held by this node and not yet committed, in arrival order: `ready` ones
        # (digest -> tx count) may be proposed; `held` ones (a signature in them failed)
        # are only there because some proposal named them, and are never proposed by this
        # node.
        self.ready: OrderedDict[bytes, int] = OrderedDict()
        self.held: OrderedDict[bytes, None] = OrderedDict()
        self.committed_digests: OrderedDict[bytes, None] = OrderedDict()
        # Duplicate-vote evidence seen and not yet in a block; and evidence already in one.
        self.evidence_pending: OrderedDict[bytes, bytes] = OrderedDict()
        self.evidence_committed: OrderedDict[bytes, None] = OrderedDict()
        self.evidence_found = 0
        self.evidence_in_blocks = 0
        self.engine = Engine(
            chain_id=chain_id,
            validators=self.validators,
            signer=signer,
            source=self,
            config=EngineConfig(**timeouts),
            height=height + 1,
            prev_block_hash=prev_hash,
        )
        self.waiting_for_payload = False
        self.rejected: dict[str, int] = {}
        # Blocks check_block found VALID, by hash (the current height's only), and the
        # hashes already handed out for optimistic execution ("prepare").
        self._valid_blocks: dict[bytes, Block] = {}
        self._prepared: set[bytes] = set()

    # --- BlockSource -----------------------------------------------------------------

    def proposal_content(self, height: int) -> ProposalContent | None:
        app_hash = self.app_hashes.get(height - 1)
        if app_hash is None:
            return None
        # Pacing: at least block_interval_ms between blocks, and an idle chain makes an
        # empty block only every empty_block_interval_ms instead of spinning. It stays
        # below timeout_propose so the other validators do not give up on the proposer.
        since_ms = (time.time() - self.last_commit_wall) * 1000.0
        wait_ms = 0.0
        if since_ms < self.block_interval_ms:
            wait_ms = self.block_interval_ms - since_ms
        elif not self.ready and since_ms < self.empty_block_interval_ms:
            wait_ms = self.empty_block_interval_ms - since_ms
        if wait_ms > 0:
            self._wake_ms = max(1, int(wait_ms))
            return None
        evidence = [e for e, _ in zip(self.evidence_pending.values(),
                                      range(MAX_BLOCK_EVIDENCE), strict=False)]
        payload = tuple(evidence) + tuple(self._block_batches())
        return ProposalContent(payload=payload, time_ms=int(time.time() * 1000),
                               app_hash=app_hash)

    def _block_batches(self) -> list[bytes]:
        """The oldest ready batches, within max_block_batches and max_block_txs."""
        chosen: list[bytes] = []
        txs = 0
        for digest, count in self.ready.items():
            if len(chosen) >= self.max_block_batches:
                break
            if self.max_block_txs and chosen and txs + count > self.max_block_txs:
                break
            chosen.append(digest)
            txs += count
        return chosen

    def check_block(self, block: Block) -> BlockCheck:
        header = block.header
        if header.validators_hash != self.validators.hash():
            return BlockCheck.INVALID
        if len(block.payload) != len(set(block.payload)):
            return BlockCheck.INVALID
        digests = [d for d in block.payload if is_batch_digest(d)]
        if any(d in self.committed_digests for d in digests):
            return BlockCheck.INVALID
        evidence = [d for d in block.payload if not is_batch_digest(d)]
        if len(evidence) > MAX_BLOCK_EVIDENCE or not self._evidence_valid(evidence):
            return BlockCheck.INVALID
        app_hash = self.app_hashes.get(header.height - 1)
        if app_hash is None:
            return BlockCheck.MISSING  # our executor has not finished the previous block
        if header.app_hash != app_hash:
            return BlockCheck.INVALID
        if any(d not in self.ready and d not in self.held for d in digests):
            return BlockCheck.MISSING
        if self._valid_blocks and next(iter(self._valid_blocks.values())).height != header.height:
            self._valid_blocks.clear()
        self._valid_blocks[block.hash()] = block
        return BlockCheck.VALID

    def _evidence_valid(self, items: list[bytes]) -> bool:
        keys = set()
        for item in items:
            try:
                ev = decode_evidence(item)
                ev.verify(self.chain_id, self.validators)
            except (CodecError, InvalidMessage):
                return False
            key = evidence_key(ev)
            if key in self.evidence_committed or key in keys:
                return False
            keys.add(key)
        return True

    def _add_evidence(self, ev: DuplicateVoteEvidence) -> bool:
        key = evidence_key(ev)
        if key in self.evidence_committed or key in self.evidence_pending:
            return False
        self.evidence_pending[key] = ev.encode()
        while len(self.evidence_pending) > _MAX_PENDING_EVIDENCE:
            self.evidence_pending.popitem(last=False)
        return True

    # --- the actor interface ---------------------------------------------------------

    def start(self) -> bytes:
        with self._one_save():
            return self._pack(self.engine.start())

    def handle(self, packed: bytes) -> bytes:
        with self._one_save():
            return self._handle(packed)

    def _one_save(self) -> AbstractContextManager[None]:
        """What a call signs is saved once, when it ends, and fsync'd before any of it
        leaves: the outputs go out only once the call has returned. A proposer signs its
        proposal and its prevote in one call, a validator that hears a late proposal its
        prevote and precommit: one fsync each instead of two."""
        return self.signer.deferred_saves() if self.signer is not None else nullcontext()

    def _handle(self, packed: bytes) -> bytes:
        outs: list[Any] = []
        payload_changed = False
        for record in msgpack.unpackb(packed, raw=False):
            kind = record[0]
            if kind == "msg":
                try:
                    msg = CONSENSUS_MESSAGES.decode(record[1])
                except CodecError as exc:
                    self._count(f"malformed: {exc}"[:60])
                    continue
                if isinstance(msg, (Proposal, Vote)):
                    outs.extend(self.engine.on_message(msg))
                elif isinstance(msg, DuplicateVoteEvidence):
                    try:
                        msg.verify(self.chain_id, self.validators)
                    except InvalidMessage as exc:
                        self._count(f"invalid evidence: {exc}"[:60])
                        continue
                    self._add_evidence(msg)
                else:
                    self._count("unexpected message type")
            elif kind == "timeout":
                outs.extend(self.engine.on_timeout(record[1], record[2], record[3]))
            elif kind == "batches":
                proposable = record[2] if len(record) > 2 else True
                # Without counts (an older supervisor), a batch counts as one tx.
                counts = record[3] if len(record) > 3 else [1] * len(record[1])
                for d, n in zip(record[1], counts, strict=True):
                    if d in self.committed_digests:
                        continue
                    if proposable:
                        self.ready[d] = n
                    else:
                        self.held[d] = None
                        while len(self.held) > _RECENT_COMMITTED_DIGESTS:
                            self.held.popitem(last=False)
                payload_changed = True
                outs.extend(self.engine.on_proposal_ready())
            elif kind == "ready":
                outs.extend(self.engine.on_proposal_ready())
            elif kind == "executed":
                self.app_hashes[record[1]] = record[2]
                for h in [h for h in self.app_hashes if h < record[1] - 2]:
                    del self.app_hashes[h]
                payload_changed = True
                outs.extend(self.engine.on_proposal_ready())
            elif kind == "certified":
                # Peer bytes (block sync): garbage is dropped and counted, never raised,
                # or any peer could halt the node with one sync response.
                try:
                    block = decode_block(record[1])
                    cert = decode_certificate(record[2])
                except CodecError as exc:
                    self._count(f"malformed certified block: {exc}"[:60])
                    continue
                outs.extend(self.engine.on_certified_block(block, cert))
            else:
                raise ValueError(f"unknown consensus host input {kind!r}")
        if payload_changed and self.waiting_for_payload:
            self.waiting_for_payload = False
            outs.extend(self.engine.on_payload_available())
        return self._pack(outs)

    def _count(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def _pack(self, outs: list[Any]) -> bytes:
        records: list[list] = []
        if self._wake_ms is not None:
            records.append(["wake", self._wake_ms])
            self._wake_ms = None
        prepare: Block | None = None
        for out in outs:
            if isinstance(out, Broadcast):
                prepare = self._to_prepare(out.message) or prepare
                if self.byzantine == "silent":
                    continue
                if self.byzantine == "equivocate" and self._own(out.message):
                    twin = self._conflicting(out.message)
                    records.append(["equivocate", out.message.encode(), twin.encode()])
                    continue
                records.append(["broadcast", out.message.encode()])
            elif isinstance(out, ScheduleTimeout):
                records.append(["timeout", out.height, out.round, int(out.step), out.delay_ms])
            elif isinstance(out, Decide):
                block = out.block
                self.last_commit_wall = time.time()
                for d in block.payload:
                    if not is_batch_digest(d):
                        key = evidence_key(decode_evidence(d))
                        self.evidence_pending.pop(key, None)
                        self.evidence_committed[key] = None
                        self.evidence_in_blocks += 1
                        continue
                    self.ready.pop(d, None)
                    self.held.pop(d, None)
                    self.committed_digests[d] = None
                while len(self.evidence_committed) > _RECENT_COMMITTED_DIGESTS:
                    self.evidence_committed.popitem(last=False)
                while len(self.committed_digests) > _RECENT_COMMITTED_DIGESTS:
                    self.committed_digests.popitem(last=False)
                records.append(["decide", block.encode(), out.certificate.encode()])
            elif isinstance(out, FetchPayload):
                self.waiting_for_payload = True
                missing = [d for d in out.block.payload if is_batch_digest(d)
                           and d not in self.ready and d not in self.held]
                records.append(["fetch", missing, out.block.header.proposer])
            elif isinstance(out, SyncNeeded):
                records.append(["sync", out.height, out.from_validator])
            elif isinstance(out, EvidenceFound):
                if self._add_evidence(out.evidence):
                    self.evidence_found += 1
                    records.append(["evidence", out.evidence.encode()])
        if prepare is not None and prepare.height == self.engine.height:
            # After the broadcasts: the vote leaves first, then the executor starts.
            records.append(["prepare", prepare.encode()])
        return msgpack.packb(records)

    def _to_prepare(self, msg: Proposal | Vote | Any) -> Block | None:
        """The block this node's own proposal or non-nil prevote commits it to, once."""
        if isinstance(msg, Proposal) and msg.proposer == self.key.public_key:
            block = msg.block
        elif (isinstance(msg, Vote) and msg.kind == VoteKind.PREVOTE
              and msg.validator == self.key.public_key and msg.block_hash is not None):
            block = self._valid_blocks.get(msg.block_hash)
        else:
            return None
        if block is None:
            return None
        bh = block.hash()
        if bh in self._prepared:
            return None
        if len(self._prepared) > 64:
            self._prepared.clear()
        self._prepared.add(bh)
        return block

    # --- byzantine mode (testers only) ------------------------------------------------

    def _own(self, msg: Proposal | Vote) -> bool:
        signer = msg.proposer if isinstance(msg, Proposal) else msg.validator
        return signer == self.key.public_key

    def _conflicting(self, msg: Proposal | Vote) -> Proposal | Vote:
        """A second message for the same (height, round, step), signed with our key
        directly: what SafetyRules exists to prevent. Only `byzantine = "equivocate"`
        (a tester's mode) ever gets here."""
        if isinstance(msg, Proposal):
            h = msg.block.header
            block = Block.build(chain_id=h.chain_id, height=h.height, time_ms=h.time_ms + 1,
                                prev_block_hash=h.prev_block_hash, payload=(),
                                app_hash=h.app_hash, validators_hash=h.validators_hash,
                                proposer=h.proposer)
            twin = Proposal(msg.height, msg.round, msg.pol_round, block, msg.proposer)
        else:
            other = sha256(b"equivocation" + (msg.block_hash or b"nil"))
            twin = Vote(msg.kind, msg.height, msg.round,
                        None if msg.block_hash is not None else other, msg.validator)
        return twin.with_signature(self.key.sign(twin.sign_bytes(self.chain_id)))

    def status(self) -> list:
        """[height, round, step, rejected counts, engine counters, evidence found, evidence
        in blocks, evidence pending, engine ignored counts]."""
        e = self.engine
        return [e.height, e.round, int(e.step), dict(self.rejected),
                dict(getattr(e, "rejected", {})), self.evidence_found, self.evidence_in_blocks,
                len(self.evidence_pending), dict(getattr(e, "ignored", {}))]

    def where(self) -> dict[str, object]:
        """The process hosting this engine (the supervisor's, or a Ray actor's)."""
        return placement()

    def decided_raw(self, height: int) -> list | None:
        d = self.engine.decided(height)
        if d is None:
            return None
        return [d[0].encode(), d[1].encode()]

    def close(self) -> None:
        pass
