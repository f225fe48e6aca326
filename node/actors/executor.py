"""Executor: applies committed blocks to the application and stores them.

For each committed block the supervisor hands over the block, its commit
certificate and the block's batches with the mempool's signature verdicts. The
executor applies the txs in order with the app (`kvstore` or `bank`, DESIGN
section 9) and writes block, certificate, tx index, batches, the app's writes
and the new app hash in ONE LMDB transaction (`Storage.commit_block`): after a
crash the stored app state always matches the stored height, so restart is
"open the store and go on" and there is nothing to replay.

Before applying block h+1 it checks that the header's app hash (the network's
app hash after block h) equals its own. If not, this node's state has forked
from the network's: it refuses to go on (`AppHashMismatch`) and the supervisor
halts the node with that error rather than keep signing on a wrong state.

Optimistic execution (`prepare`): once this node has prevoted for a block (or
proposed it), the supervisor hands it over ahead of the decision. The executor
applies its txs into the app's overlay, computes the app hash and keeps the
result, writing nothing. When that block is decided, `execute` only checks the
certificate and stores; when another block is decided instead, the prepared one
is discarded and the decided one applied as usual. The next proposer needs this
block's app hash before it can propose, so applying during the votes takes the
application's work off every height's critical path (docs/BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from consensus.types import Block
from node.actors.consensus_host import is_batch_digest
from node.apps import (
    CODE_BAD_SIGNATURE,
    CODE_BALANCE_OVERFLOW,
    CODE_INSUFFICIENT_FUNDS,
    CODE_OK,
    decode_block_txs,
    make_app,
)
from node.runtime import offload, placement
from node.storage import StoredAppState
from node.stores import open_storage
from node.tx import ADMITTED_BATCHES, ADMITTED_TXS, PROTOCOL_MAX_TX_BYTES, decode_batch
from node.wire import decode_block, decode_certificate

# Codes after which the sender's nonce has moved on (see node.apps).
_NONCE_CONSUMED = (CODE_OK, CODE_INSUFFICIENT_FUNDS, CODE_BALANCE_OVERFLOW)


class AppHashMismatch(Exception):
    """The network's app hash for a height differs from the one this node computed."""


@dataclass
class _Applied:
    """A block applied into the app's overlay, not yet stored."""

    block_hash: bytes
    height: int
    prev_app_hash: bytes
    hashes: list[bytes]
    codes: list[int]
    nonces: list[list]
    batches: list[tuple[bytes, bytes]]


class Executor:
    def __init__(self, data_dir: str, chain_id: str, app: str, allocations: dict[str, int],
                 map_size: int, sync: bool = True) -> None:
        self.chain_id = chain_id
        self.storage = open_storage(data_dir, map_size=map_size, sync=sync)
        height = self.storage.latest_height()
        self.app = make_app(app, StoredAppState(self.storage), genesis=allocations,
                            height=height, app_hash=self.storage.last_app_hash())
        self._prepared: _Applied | None = None                  # ahead of its decision
        self._decided: tuple[_Applied, bytes, bytes] | None = None   # applied, not stored

    def info(self) -> list:
        """[last committed height, app hash after it]."""
        pending = self._prepared or (self._decided[0] if self._decided else None)
        if pending is not None:
            return [self.app.height, pending.prev_app_hash]
        return [self.app.height, self.app.app_hash()]

    @offload
    def prepare(self, packed: bytes) -> bool:
        """Apply a block ahead of its decision, storing nothing (module docstring).

        `packed` is ``[block_bytes, [[encoded_batch, verdicts], ...]]`` as for `execute`.
        A block that is not the next one on this node's state (its height, or the app
        hash its header carries) is ignored: its proposal came late or is invalid, and
        `execute` will say so if it is ever decided. Returns whether it was applied.
        """
        block_bytes, batches = msgpack.unpackb(packed, raw=False)
        block = decode_block(block_bytes)
        block_hash = block.hash()
        if self._decided is not None:
            return False   # a decided block is between apply_decided and store
        if self._prepared is not None:
            if self._prepared.block_hash == block_hash:
                return True
            self._discard_prepared()
        header = block.header
        if header.height != self.app.height + 1 or header.app_hash != self.app.app_hash():
            return False
        self._prepared = self._apply(block, block_hash, batches)
        return True

    @offload
    def execute(self, packed: bytes) -> bytes:
        """Apply and store one block: `apply_decided`, then `store`, in one call.

        `packed` is ``[block_bytes, cert_bytes, [[encoded_batch, verdicts], ...]]``
        with the batches in the block's payload order. Returns packed
        ``[height, app_hash, [tx_hash...], [code...], [[sender_pk, nonce]...]]``.
        """
        if self._apply_decided(packed) is None:
            raise ValueError("execute needs the block's batches")
        return self._store()

    @offload
    def apply_decided(self, packed: bytes) -> bytes:
        """Apply a decided block (packed as for `execute`) without storing it yet:
        packed ``[height, app_hash]``. The block `prepare` applied is taken as it is.

        The next proposal waits for this app hash, and storing (one LMDB transaction
        with its fsyncs) is the slower half on a busy machine, so the supervisor hands
        the hash to consensus first and calls `store` right after. The block is decided
        whatever happens to this node: if it crashes in between, it restarts one block
        lower and gets the block back from its peers (block sync).

        The batches may be None when the supervisor knows `prepare` applied this block:
        they are not needed then. If it was not (another block was prepared since), the
        answer is packed None and nothing changes but the prepared block's discard: ask
        again with the batches.
        """
        applied = self._apply_decided(packed)
        return msgpack.packb(None if applied is None else list(applied))

    @offload
    def store(self) -> bytes:
        """Store the block `apply_decided` applied; returns packed as `execute`."""
        return self._store()

    def _apply_decided(self, packed: bytes) -> tuple[int, bytes] | None:
        if self._decided is not None:
            raise ValueError(f"block {self._decided[0].height} was applied but not stored")
        block_bytes, cert_bytes, batches = msgpack.unpackb(packed, raw=False)
        block = decode_block(block_bytes)
        block_hash = block.hash()
        header = block.header
        height = header.height
        if height != self.app.height + 1:
            raise ValueError(f"executor at height {self.app.height} got block {height}")
        cert = decode_certificate(cert_bytes)
        if cert.height != height or cert.block_hash != block_hash:
            raise ValueError(f"block {height}: the commit certificate is for height "
                             f"{cert.height}, block {cert.block_hash.hex()[:16]}, not this block")
        applied = self._prepared
        if applied is not None and applied.block_hash != block_hash:
            self._discard_prepared()   # another block was decided at this height
            applied = None
        self._prepared = None
        if applied is None:
            if batches is None:
                return None
            expected = self.app.app_hash()
            if header.app_hash != expected:
                raise AppHashMismatch(
                    f"block {height} carries app hash {header.app_hash.hex()} for height "
                    f"{height - 1}, but this node computed {expected.hex()}: its state has "
                    f"forked from the network's; refusing to continue"
                )
            applied = self._apply(block, block_hash, batches)
        elif batches is not None:
            # Same block, so the same payload: the batches handed over now must match the
            # digests the prepared ones were checked against.
            self._check_batches(block, batches)
        self._decided = (applied, block_bytes, cert_bytes)
        return height, self.app.app_hash()

    def _store(self) -> bytes:
        if self._decided is None:
            raise ValueError("no applied block to store")
        applied, block_bytes, cert_bytes = self._decided
        self._decided = None
        app_hash = self.app.app_hash()
        try:
            self.storage.commit_block(
                applied.height, block_bytes, cert_bytes, block_hash=applied.block_hash,
                tx_entries=list(zip(applied.hashes, applied.codes, strict=True)),
                app_writes=self.app.pending_writes(), app_hash=app_hash,
                batches=applied.batches)
        except Exception:
            self.app.discard()
            raise
        self.app.commit()
        return msgpack.packb([applied.height, app_hash, applied.hashes, applied.codes,
                              applied.nonces])

    def _discard_prepared(self) -> None:
        self._prepared = None
        self.app.discard()

    @staticmethod
    def _check_batches(block: Block, batches: list) -> None:
        digests = [d for d in block.payload if is_batch_digest(d)]
        if len(digests) != len(batches):
            raise ValueError(f"block {block.header.height}: {len(batches)} batches for "
                             f"{len(digests)} digests")

    def _apply(self, block: Block, block_hash: bytes, batches: list) -> _Applied:
        """Deliver the block's txs into the app's overlay (nothing stored); on any error
        the overlay is left empty."""
        try:
            return self._deliver(block, block_hash, batches)
        except Exception:
            self.app.discard()
            raise

    def _deliver(self, block: Block, block_hash: bytes, batches: list) -> _Applied:
        height = block.header.height
        prev_app_hash = self.app.app_hash()
        raw_txs: list[bytes] = []
        hashes: list[bytes] = []
        verdicts: list[int] = []
        stored_batches: list[tuple[bytes, bytes]] = []
        digests = [d for d in block.payload if is_batch_digest(d)]
        for digest, (encoded, batch_verdicts) in zip(digests, batches, strict=True):
            # Decoded and hashed already where the mempool shares this process.
            kept = ADMITTED_BATCHES.take(digest, encoded)
            if kept is not None:
                batch_txs, batch_hashes = kept
            else:
                batch = decode_batch(encoded)
                batch_txs = batch.txs
                batch_hashes, batch_digest = batch.hashes_and_digest()
                if batch_digest != digest:
                    raise ValueError(f"block {height}: batch {digest.hex()} content does "
                                     "not match")
            raw_txs.extend(batch_txs)
            hashes.extend(batch_hashes)
            verdicts.extend(batch_verdicts)
            stored_batches.append((digest, encoded))
        # Each tx is decoded once; a failed signature (verdict 0, from the mempool's
        # batch verification) gives BAD_SIGNATURE without being applied.
        valid_index = [i for i, ok in enumerate(verdicts) if ok]
        # Decoded already where the mempool shares this process (ADMITTED_TXS).
        known = ADMITTED_TXS.take(raw_txs)
        decode_codes, decoded = decode_block_txs([raw_txs[i] for i in valid_index],
                                                 chain_id=self.chain_id,
                                                 max_tx_bytes=PROTOCOL_MAX_TX_BYTES,
                                                 known=[known[i] for i in valid_index])
        applied = self.app.deliver_block(height, [tx for _, tx in decoded], decoded=True)
        codes = [CODE_BAD_SIGNATURE] * len(raw_txs)
        for j, code in enumerate(decode_codes):
            if code is not None:
                codes[valid_index[j]] = code
        nonces = []
        for (j, tx), code in zip(decoded, applied, strict=True):
            codes[valid_index[j]] = code
            if code in _NONCE_CONSUMED:
                nonces.append([tx.sender, tx.nonce])
        return _Applied(block_hash, height, prev_app_hash, hashes, codes, nonces, stored_batches)

    def where(self) -> dict[str, object]:
        """Placement of this actor (pid, Ray node id), for operators and tests."""
        return placement()

    def close(self) -> None:
        pass

