"""Mempool: admission, batching and dissemination of transactions.

The supervisor gathers what comes in for up to one batch timeout (or until a
batch is full): clients' txs and peers' batches. One call, `intake`, takes it
all, and signatures are checked in batches, never one by one:

    ticket, sign_items, rejected = prepare(txs)     # decode, validate, dedupe, limits
    ... the same for each peer batch (`_prepare_batch`)
    verdicts = VerifierPool.verify(*all_sign_items) # the pool's worker actors, one call
    results = admit(ticket, verdicts)               # keep the valid txs
    ... store the peer batches (`admit_batch`)
    seal()                                          # this round's txs become a batch

The mempool calls the VerifierPool's workers itself (with `[ray] verifier_actors
= 0`, and in the in-process runtime, it verifies in its own process): sign items
cross one actor boundary each way, and a Ray call (about a millisecond of CPU on
a small machine, on each side) is paid once per round, not once per step, tx or
batch. Batches are also sealed by size (`batch_max_txs`, `batch_max_bytes`). A
batch is disseminated to peers and only its digest goes to consensus (DESIGN
section 2). Each validator checks each signature once; a tx whose signature
fails in a peer's batch stays in the batch (its digest is what was ordered) and
the executor gives it a failing code, deterministically. Block sync stores the
batches of the blocks it fetches through `receive_batches`.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from consensus.codec import CodecError
from crypto import merkle_root, sha256, verifier_backend
from node.actors.verifier_pool import VerifierPool, VerifierWorker
from node.runtime import offload, placement
from node.tx import (
    ADMITTED_BATCHES,
    ADMITTED_TXS,
    DEFAULT_MAX_BATCH_BYTES,
    PROTOCOL_MAX_TX_BYTES,
    Batch,
    Tx,
    decode_batch,
    decode_tx,
    tx_sign_items,
)


def _bin_header_size(n: int) -> int:
    """Bytes msgpack puts before a bin of n bytes."""
    return 2 if n < 0x100 else 3 if n < 0x10000 else 5


# How many committed tx hashes and batch digests are remembered to refuse replays.
_RECENT_COMMITTED = 500_000


# Admission refusals: reason text prefix -> the stable label counted in /metrics
# (bftnode_txs_rejected_total{reason=...}).
_REJECTION_LABELS = (
    ("malformed", "malformed"),
    ("wrong chain id", "wrong_chain"),
    ("wrong app", "wrong_app"),
    ("duplicate", "duplicate"),
    ("stale nonce", "stale_nonce"),
    ("mempool full", "mempool_full"),
    ("node busy", "node_busy"),
    ("invalid signature", "invalid_signature"),
)


def rejection_label(reason: str) -> str:
    """The metric label of an admission refusal (one of `_REJECTION_LABELS`, else other)."""
    for prefix, label in _REJECTION_LABELS:
        if reason.startswith(prefix):
            return label
    return "other"


def _locked(fn: Any) -> Any:
    """Run the method holding the mempool's lock (see `Mempool.CONCURRENCY`)."""
    @functools.wraps(fn)
    def locked(self: Mempool, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return fn(self, *args, **kwargs)
    return locked


@dataclass(frozen=True)
class MempoolLimits:
    max_txs: int = 200_000
    max_bytes: int = 256 * 1024 * 1024
    max_tx_bytes: int = 64 * 1024
    batch_max_txs: int = 2000
    batch_max_bytes: int = 4_000_000   # encoded txs of a batch this node seals
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES   # a peer's batch, as received


@dataclass
class StoredBatch:
    encoded: bytes
    verdicts: bytes          # one byte per tx: 1 valid signature, 0 invalid
    tx_hashes: list[bytes]
    local: bool
    created: float
    tx_bytes: int            # sum of the encoded txs' sizes, for the byte limit


class Mempool:
    """Plain-class logic of the Mempool actor (no Ray, no I/O).

    Calls may run concurrently (`CONCURRENCY`; the runtime hosts the class so): every
    method holds `_lock`, except that `intake` and `receive_batches` decode before taking
    it and let go of it while the verifier pool checks their signatures (most of their
    time). The commit pipeline's `get_batches` and `committed` then do not queue behind
    a verification. What changes during that gap is re-checked when the verified txs and
    batches are admitted (tickets, `_admit`, `admit_batch`).
    """

    CONCURRENCY = 4

    def __init__(self, chain_id: str, app: str, limits: MempoolLimits = MempoolLimits(),
                 verifiers: Sequence[Any] | None = None, keep_decoded: bool = False) -> None:
        self.chain_id = chain_id
        self.app = app
        # A peer's batch is decoded under the protocol's limit even where this node's
        # frames are larger: every executor decodes it under that limit, so a batch over
        # it stored here would halt this node once a block named it.
        self.limits = replace(
            limits, max_batch_bytes=min(limits.max_batch_bytes, DEFAULT_MAX_BATCH_BYTES))
        # The executor runs in this process: leave it the decoded txs (ADMITTED_TXS).
        self._keep_decoded = keep_decoded
        # Ray handles of the VerifierPool's workers; none: one worker in this process (the
        # in-process runtime, or [ray] verifier_actors = 0).
        self._pool = (VerifierPool.of_ray_actors(verifiers) if verifiers
                      else VerifierPool([VerifierWorker()]))
        self._tickets = itertools.count(1)
        self._prepared: dict[int, list[tuple[bytes, bytes, Tx]]] = {}
        self._prepared_batches: dict[int, tuple[bytes, Batch, list[bytes], bytes]] = {}
        # Admitted, not yet sealed: hash -> encoded tx (insertion order = arrival order).
        self._pending: OrderedDict[bytes, bytes] = OrderedDict()
        self._pending_bytes = 0
        self._batch_bytes = 0                    # txs sealed or received in stored batches
        self._batch_txs = 0                      # how many txs those stored batches hold
        self._known: set[bytes] = set()          # pending or sealed, not committed
        self._committed: OrderedDict[bytes, None] = OrderedDict()
        self._batches: dict[bytes, StoredBatch] = {}
        self._committed_batches: OrderedDict[bytes, None] = OrderedDict()
        self._next_nonce: dict[bytes, int] = {}
        self._reserved_txs = 0                  # prepared but not yet admitted
        self._reserved_bytes = 0
        self.stats = {"admitted": 0, "rejected": 0, "sealed_batches": 0, "remote_batches": 0}
        self._lock = threading.RLock()

    # --- admission -------------------------------------------------------------------

    def _size(self) -> tuple[int, int]:
        return len(self._pending) + self._batch_txs, self._pending_bytes + self._batch_bytes

    @_locked
    def prepare(self, packed_txs: bytes) -> bytes:
        """Decode and pre-check a list of encoded txs.

        Returns packed ``[ticket, [pks, msgs, sigs], [[index, hash|None, reason], ...]]``:
        the sign items of the txs still in the running (in input order) and the
        refused ones with their reasons.
        """
        txs = msgpack.unpackb(packed_txs, raw=False)
        return msgpack.packb(self._prepare(txs, self._decode_txs(txs)))

    def _decode_txs(self, txs: list) -> list[tuple[Tx | None, bytes | None, str | None]]:
        """(tx, hash, None) or (None, None, why) per encoded tx. Reads no state, so it
        runs without the lock."""
        out: list[tuple[Tx | None, bytes | None, str | None]] = []
        for raw in txs:
            if type(raw) is not bytes:
                out.append((None, None, "malformed"))
                continue
            try:
                tx = decode_tx(raw, self.limits.max_tx_bytes)
            except CodecError as exc:
                out.append((None, None, f"malformed transaction: {exc}"))
                continue
            # = Tx.hash(tx): decode_tx accepts only the canonical encoding
            out.append((tx, sha256(raw), None))
        if self._keep_decoded:
            ADMITTED_TXS.keep([(raw, tx) for raw, (tx, _h, _r) in zip(txs, out, strict=True)
                               if tx is not None])
        return out

    def _prepare(self, txs: list, decoded: list) -> list:
        """`prepare` of a list; `decoded` is `_decode_txs(txs)` (done without the lock)."""
        ticket = next(self._tickets)
        keep: list[tuple[bytes, bytes, Tx]] = []
        rejected: list[list] = []
        count, nbytes = self._size()
        count += self._reserved_txs
        nbytes += self._reserved_bytes
        seen: set[bytes] = set()
        for i, (raw, (tx, h, why)) in enumerate(zip(txs, decoded, strict=True)):
            if tx is None or h is None:
                rejected.append([i, None, why])
                continue
            if tx.chain_id != self.chain_id:
                rejected.append([i, h, f"wrong chain id {tx.chain_id!r} (this chain is "
                                       f"{self.chain_id!r})"])
                continue
            if tx.app != self.app:
                rejected.append([i, h, f"wrong app {tx.app!r} (this chain runs {self.app!r})"])
                continue
            if h in self._known or h in seen:
                rejected.append([i, h, "duplicate: transaction already in the mempool"])
                continue
            if h in self._committed:
                rejected.append([i, h, "duplicate: transaction already committed"])
                continue
            expected = self._next_nonce.get(tx.sender, 0)
            if tx.nonce < expected:
                rejected.append([i, h, f"stale nonce {tx.nonce}: the sender's next nonce "
                                       f"is {expected}"])
                continue
            if count + 1 > self.limits.max_txs or nbytes + len(raw) > self.limits.max_bytes:
                rejected.append([i, h, f"mempool full ({count} txs, {nbytes} bytes)"])
                continue
            count += 1
            nbytes += len(raw)
            seen.add(h)
            keep.append((h, raw, tx))
        self._prepared[ticket] = keep
        self._reserved_txs += len(keep)
        self._reserved_bytes += sum(len(raw) for _, raw, _ in keep)
        pks, msgs, sigs = tx_sign_items([t for _, _, t in keep], raws=[r for _, r, _ in keep])
        self.stats["rejected"] += len(rejected)
        return [ticket, [pks, msgs, sigs], rejected]

    @_locked
    def admit(self, ticket: int, verdicts: bytes) -> bytes:
        """Keep the prepared txs whose signature verified.

        Returns packed ``[[hash, reason|None], ...]`` in the order of the prepared
        txs, and a flag saying whether a batch is now full and should be sealed.
        """
        return msgpack.packb(self._admit(ticket, verdicts))

    def _admit(self, ticket: int, verdicts: bytes) -> list:
        keep = self._prepared.pop(ticket)
        self._reserved_txs -= len(keep)
        self._reserved_bytes -= sum(len(raw) for _, raw, _ in keep)
        if len(verdicts) != len(keep):
            raise ValueError(f"ticket {ticket}: {len(verdicts)} verdicts for {len(keep)} txs")
        results = []
        for (h, raw, tx), ok in zip(keep, verdicts, strict=True):
            if not ok:
                results.append([h, f"invalid signature for sender {tx.sender.hex()}"])
                self.stats["rejected"] += 1
                continue
            if h in self._known or h in self._committed:
                results.append([h, "duplicate: transaction already in the mempool"])
                self.stats["rejected"] += 1
                continue
            self._pending[h] = raw
            self._pending_bytes += len(raw)
            self._known.add(h)
            results.append([h, None])
            self.stats["admitted"] += 1
        full = len(self._pending) >= self.limits.batch_max_txs
        return [results, full]

    # --- batches ---------------------------------------------------------------------

    @_locked
    def seal(self, force: bool = True) -> bytes:
        """Seal pending txs into batches; packed ``[[digest, encoded, tx count], ...]``.

        Without `force` only full batches are sealed (the time trigger passes
        force=True).
        """
        return msgpack.packb(self._seal(force))

    def _seal(self, force: bool) -> list[list]:
        out = []
        while self._pending:
            if not force and len(self._pending) < self.limits.batch_max_txs:
                break
            txs: list[bytes] = []
            hashes: list[bytes] = []
            size = encoded_size = 0
            while self._pending and len(txs) < self.limits.batch_max_txs:
                h, raw = next(iter(self._pending.items()))
                # Counted as encoded (with each tx's msgpack header), so that a batch of
                # many small txs still fits the frame room that [mempool] batch_max_bytes
                # leaves.
                encoded_size += len(raw) + _bin_header_size(len(raw))
                if txs and encoded_size > self.limits.batch_max_bytes:
                    break
                self._pending.popitem(last=False)
                self._pending_bytes -= len(raw)
                txs.append(raw)
                hashes.append(h)
                size += len(raw)
            batch = Batch(tuple(txs))
            encoded = batch.encode()
            digest = merkle_root(hashes)   # = batch.digest(): the txs' hashes are known
            self._store_batch(digest, encoded, batch.txs, hashes, b"\x01" * len(txs), True,
                              size)
            self.stats["sealed_batches"] += 1
            out.append([digest, encoded, len(txs)])
        return out

    @_locked
    def prepare_batch(self, encoded: bytes) -> bytes:
        """Decode a peer's batch: packed ``[ticket|None, digest, [pks, msgs, sigs], reason]``.

        ticket is None when the batch is already known (nothing to verify) or
        refused (reason set).
        """
        return msgpack.packb(self._prepare_batch(encoded))

    def _prepare_batch(self, encoded: bytes) -> list:
        return self._register_batch(encoded, self._decode_batch(encoded))

    def _known_batch(self, digest: bytes) -> bool:
        return digest in self._batches or digest in self._committed_batches

    def _decode_batch(self, encoded: bytes) -> tuple:
        """(batch, hashes, digest, sign items, reason) of a peer's batch. Reads no state
        but a lock-free glance at whether the batch is known (to skip decoding its txs),
        so it runs without the lock; `_register_batch` decides under it."""
        try:
            batch = decode_batch(encoded, self.limits.max_batch_bytes)
        except CodecError as exc:
            return None, None, None, None, f"malformed batch: {exc}"
        hashes, digest = batch.hashes_and_digest()
        if self._known_batch(digest):
            return batch, hashes, digest, None, None
        txs: list[Tx] = []
        for i, raw in enumerate(batch.txs):
            try:
                tx = decode_tx(raw, PROTOCOL_MAX_TX_BYTES)
            except CodecError as exc:
                return batch, hashes, digest, None, f"batch tx {i} is malformed: {exc}"
            txs.append(tx)
        if self._keep_decoded:
            ADMITTED_TXS.keep(list(zip(batch.txs, txs, strict=True)))
        return (batch, hashes, digest, list(tx_sign_items(txs, self.chain_id, batch.txs)),
                None)

    def _register_batch(self, encoded: bytes, decoded: tuple) -> list:
        """`prepare_batch`'s answer for a decoded batch: known, refused, or a ticket."""
        batch, hashes, digest, items, reason = decoded
        if digest is None:
            return [None, None, [[], [], []], reason]
        if self._known_batch(digest):
            return [None, digest, [[], [], []], None]
        if reason is not None:
            return [None, digest, [[], [], []], reason]
        if items is None:
            # Known when decoded and forgotten since: committed, and already out of the
            # committed-batch memory. Nothing to store.
            return [None, digest, [[], [], []], None]
        ticket = next(self._tickets)
        self._prepared_batches[ticket] = (encoded, batch, hashes, digest)
        return [ticket, digest, items, None]

    @_locked
    def admit_batch(self, ticket: int, verdicts: bytes, requested: bool = True) -> bytes:
        """Store a verified peer batch; its digest, or b"" if refused.

        A batch this node asked for (`requested`: a proposal or a committed block
        names it) is always stored: consensus needs it whatever it holds. One that
        was merely gossiped is refused when any signature in it failed (an honest
        validator never seals such a batch) or when it would take the mempool over
        `max_txs` / `max_bytes`: a peer cannot fill our mempool, or our blocks, with
        junk.
        """
        encoded, batch, hashes, digest = self._prepared_batches.pop(ticket)
        if not requested:
            count, nbytes = self._size()
            size = sum(len(raw) for raw in batch.txs)
            if not all(verdicts):
                self.stats["refused_batches"] = self.stats.get("refused_batches", 0) + 1
                return b""
            if (count + len(hashes) > self.limits.max_txs
                    or nbytes + size > self.limits.max_bytes):
                self.stats["refused_batches"] = self.stats.get("refused_batches", 0) + 1
                return b""
        # Known by now if another copy was admitted meanwhile, or was even committed while
        # this one was being verified: storing it again would resurrect a committed batch.
        if digest not in self._batches and digest not in self._committed_batches:
            self._store_batch(digest, encoded, batch.txs, hashes, bytes(verdicts), False,
                              sum(len(raw) for raw in batch.txs))
            self.stats["remote_batches"] += 1
            # Our own pending copies of these txs would be included twice: drop them.
            for h in hashes:
                raw = self._pending.pop(h, None)
                if raw is not None:
                    self._pending_bytes -= len(raw)
                self._known.add(h)
        return digest

    def _store_batch(self, digest: bytes, encoded: bytes, txs: tuple[bytes, ...],
                     hashes: list[bytes], verdicts: bytes, local: bool, size: int) -> None:
        """Hold a sealed or admitted batch (`digest` is the root of `hashes`, `encoded`
        is `Batch(txs).encode()`, `size` the txs' bytes), and leave its txs and hashes
        for the executor when it shares this process (ADMITTED_BATCHES)."""
        self._batches[digest] = StoredBatch(encoded, verdicts, hashes, local,
                                            time.monotonic(), size)
        self._batch_bytes += size
        self._batch_txs += len(hashes)
        if self._keep_decoded:
            ADMITTED_BATCHES.keep(digest, encoded, txs, hashes)

    # --- one call per round: verification through the pool from here ----------------

    def backend(self) -> str:
        return verifier_backend()

    @offload
    def receive_batches(self, packed: bytes) -> bytes:
        """Peers' batches in one call, ``[[[encoded, requested], ...], fetching]``: decode,
        verify through the pool, store (`admit_batch` says what a requested batch
        changes). A batch whose digest is in `fetching` (the node asked peers for it)
        counts as requested.

        Returns packed ``[[digest|None, outcome, tx count], ...]`` in input order, outcome
        one of ``"stored"`` (every signature valid), ``"held"`` (stored because a block or
        proposal names it, though a signature failed: never proposed; a later copy of it
        is "held" too), ``"known"`` (held already with every signature valid, or
        committed), ``"bad_signature"`` or ``"mempool_full"`` (refused), or
        ``"malformed: <why>"``; the count is the stored batch's (0 when this mempool does
        not hold it). Copies of one batch in one call are verified once (`_prepare_remote`).
        """
        items, fetching = msgpack.unpackb(packed, raw=False)
        decoded = self._decode_remote(items)
        with self._lock:
            prepared, (pks, msgs, sigs) = self._prepare_remote(items, decoded)
        verdicts = self._pool.verify(pks, msgs, sigs)
        with self._lock:
            return msgpack.packb(self._admit_remote(items, prepared, verdicts, set(fetching)))

    @offload
    def intake(self, packed: bytes) -> bytes:
        """One round of everything that came in: clients' txs and peers' batches.

        `packed` is ``[[encoded tx, ...], [[encoded batch, requested], ...], fetching]``.
        Their signatures go to the verifier pool in a single call; then the txs are
        admitted as by `prepare` and `admit`, the batches stored as by `receive_batches`, and every
        pending tx is sealed (a round is at most one batch timeout of arrivals).

        Returns packed ``[answers, sealed, outcomes]``: one ``[hash|None, reason|None]``
        per tx, the new batches ``[[digest, encoded, tx count], ...]``, one ``[digest,
        outcome, tx count]`` per peer batch (as `receive_batches`).
        """
        txs, items, fetching = msgpack.unpackb(packed, raw=False)
        local_decoded = self._decode_txs(txs)
        remote_decoded = self._decode_remote(items)
        with self._lock:
            ticket, (pks, msgs, sigs), rejected = self._prepare(txs, local_decoded)
            prepared, (rpks, rmsgs, rsigs) = self._prepare_remote(items, remote_decoded)
        verdicts = self._pool.verify(pks + rpks, msgs + rmsgs, sigs + rsigs)
        local, remote = verdicts[:len(pks)], verdicts[len(pks):]
        with self._lock:
            results, _full = self._admit(ticket, local)
            answers = self._answers(len(txs), rejected, results)
            # Peers' batches first: they drop our pending copies of txs they already carry.
            outcomes = self._admit_remote(items, prepared, remote, set(fetching))
            return msgpack.packb([answers, self._seal(force=True), outcomes])

    @staticmethod
    def _answers(n: int, rejected: list, results: list) -> list[list]:
        """One [hash, reason] per input tx, in order, from `prepare`'s refusals and
        `admit`'s results (which cover the others, in order)."""
        answers: list[list] = [[]] * n
        for i, h, reason in rejected:
            answers[i] = [h, reason]
        it = iter(results)
        for i in range(n):
            if not answers[i]:
                answers[i] = next(it)
        return answers

    def _decode_remote(self, items: list) -> list[tuple]:
        """`_decode_batch` of each peer batch: without the lock."""
        return [self._decode_batch(e) if type(e) is bytes
                else (None, None, None, None, "malformed batch: not bytes")
                for e, _requested in items]

    def _prepare_remote(self, items: list, decoded: list[tuple]
                        ) -> tuple[list, list[list[bytes]]]:
        """`_register_batch` of each peer batch; `decoded` is `_decode_remote(items)`.

        A batch that comes twice in one call (a gossiped copy and a fetched one, say) is
        verified once: the later copy gets no ticket, and `_admit_remote` answers it as
        the first copy went. (Copies in concurrent calls are each verified: the
        supervisor makes one such call at a time.)"""
        prepared = []
        registered: set[bytes] = set()
        for (e, _requested), d in zip(items, decoded, strict=True):
            digest = d[2]
            if digest in registered:
                prepared.append([None, digest, [[], [], []], None])
                continue
            p = self._register_batch(e, d)
            if p[0] is not None:
                registered.add(digest)
            prepared.append(p)
        pks = [pk for p in prepared for pk in p[2][0]]
        msgs = [m for p in prepared for m in p[2][1]]
        sigs = [sg for p in prepared for sg in p[2][2]]
        return prepared, [pks, msgs, sigs]

    def _admit_remote(self, items: list, prepared: list, verdicts: bytes,
                      fetching: set[bytes]) -> list[list]:
        out: list[list] = []
        offset = 0
        # A batch is stored whatever it holds if any of its copies here was asked for.
        requested_digests = set(fetching)
        requested_digests.update(p[1] for (_e, requested), p in zip(items, prepared, strict=True)
                                 if requested and p[1] is not None)
        refused: dict[bytes, str] = {}   # first copies refused in this call
        for ticket, digest, (p, _m, _s), reason in prepared:
            if reason is not None:
                out.append([digest, f"malformed: {reason}"])
                continue
            if ticket is None:
                out.append([digest, refused.get(digest) or self._known_outcome(digest)])
                continue
            v = verdicts[offset:offset + len(p)]
            offset += len(p)
            ok = all(v)
            if self.admit_batch(ticket, v, digest in requested_digests):
                out.append([digest, "stored" if ok else "held"])
            else:
                refused[digest] = "mempool_full" if ok else "bad_signature"
                out.append([digest, refused[digest]])
        for record in out:
            stored = self._batches.get(record[0]) if record[0] is not None else None
            record.append(len(stored.tx_hashes) if stored is not None else 0)
        return out

    def _known_outcome(self, digest: bytes) -> str:
        """The outcome of a copy of a batch this mempool already has: "known", or "held"
        if it holds it with a failed signature (stored only because a proposal or block
        named it). Answered "known", it would become proposable by this node."""
        stored = self._batches.get(digest)
        if stored is not None and not all(stored.verdicts):
            return "held"
        return "known"

    def verify_stats(self) -> tuple[int, float]:
        """Signatures verified for this mempool and the seconds it took."""
        return self._pool.verified, self._pool.seconds

    @_locked
    def has_batches(self, digests: list[bytes]) -> list[bool]:
        return [d in self._batches for d in digests]

    @_locked
    def get_batches(self, digests: list[bytes]) -> bytes:
        """Packed ``[[encoded, verdicts] | None, ...]`` in the order asked."""
        out = []
        for d in digests:
            b = self._batches.get(d)
            out.append(None if b is None else [b.encoded, b.verdicts])
        return msgpack.packb(out)

    @_locked
    def uncommitted_digests(self) -> list[bytes]:
        """Digests of stored batches not yet committed, oldest first."""
        return [d for d, _ in sorted(self._batches.items(), key=lambda kv: kv[1].created)]

    # --- commit ----------------------------------------------------------------------

    @_locked
    def committed(self, packed: bytes) -> int:
        """Forget what a committed block holds: packed ``[digests, tx_hashes, [[sender, nonce]...]]``.

        Returns the number of txs still waiting (pending + sealed, uncommitted).
        """
        digests, hashes, nonces = msgpack.unpackb(packed, raw=False)
        for d in digests:
            stored = self._batches.pop(d, None)
            if stored is not None:
                self._batch_bytes -= stored.tx_bytes
                self._batch_txs -= len(stored.tx_hashes)
            self._committed_batches[d] = None
        for h in hashes:
            self._known.discard(h)
            raw = self._pending.pop(h, None)
            if raw is not None:
                self._pending_bytes -= len(raw)
            self._committed[h] = None
        for sender, nonce in nonces:
            if nonce + 1 > self._next_nonce.get(sender, 0):
                self._next_nonce[sender] = nonce + 1
        while len(self._committed) > _RECENT_COMMITTED:
            self._committed.popitem(last=False)
        while len(self._committed_batches) > _RECENT_COMMITTED // 100:
            self._committed_batches.popitem(last=False)
        return self._size()[0]

    @_locked
    def contains(self, tx_hash: bytes) -> bool:
        return tx_hash in self._known

    @_locked
    def size(self) -> tuple[int, int]:
        return self._size()

    def where(self) -> dict[str, object]:
        """Placement of this actor (pid, Ray node id), for operators and tests."""
        return placement()

    def close(self) -> None:
        pass
