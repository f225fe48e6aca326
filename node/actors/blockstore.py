"""BlockStore: the read side of the node's LMDB store.

The executor writes each block, its certificate, tx index, batches and app
state in one transaction; this actor answers everything that reads them back:
blocks for the API, tx lookups, finality receipts, and certified blocks with
their batches for peers that are catching up (block sync). LMDB lets both
processes open the store; each read sees the last committed transaction.
"""

from __future__ import annotations

from typing import Any

import msgpack

from consensus.types import Block, BlockHeader, CommitCertificate
from crypto.hashing import merkle_proof
from node.actors.consensus_host import decode_evidence, is_batch_digest
from node.stores import open_storage
from node.tx import decode_batch
from node.wire import decode_block, decode_certificate


def header_json(h: BlockHeader) -> dict[str, Any]:
    return {
        "chain_id": h.chain_id,
        "height": h.height,
        "time_ms": h.time_ms,
        "prev_block_hash": h.prev_block_hash.hex(),
        "payload_digest": h.payload_digest.hex(),
        "app_hash": h.app_hash.hex(),
        "validators_hash": h.validators_hash.hex(),
        "proposer": h.proposer.hex(),
    }


def certificate_json(c: CommitCertificate) -> dict[str, Any]:
    return {
        "height": c.height,
        "round": c.round,
        "block_hash": c.block_hash.hex(),
        "signatures": [{"validator": v.hex(), "signature": s.hex()} for v, s in c.signatures],
    }


# What one block-sync answer may hold: room under the default 4 MiB peer frame.
SYNC_MAX_BYTES = 3 * 1024 * 1024
_SYNC_ITEM_OVERHEAD = 16  # msgpack headers of one item, generously


class BlockStore:
    def __init__(self, data_dir: str, map_size: int) -> None:
        self.storage = open_storage(data_dir, map_size=map_size)

    def latest(self) -> list:
        """[height, block hash, app hash after it] (zeros before the first block)."""
        height = self.storage.latest_height()
        app_hash = self.storage.last_app_hash() or b""
        if height == 0:
            return [0, b"", app_hash]
        block = decode_block(self.storage.block(height)[0])
        return [height, block.hash(), app_hash]

    def _load(self, height: int) -> tuple[Block, CommitCertificate] | None:
        raw = self.storage.block(height)
        if raw is None:
            return None
        return decode_block(raw[0]), decode_certificate(raw[1])

    def block_raw(self, height: int) -> list | None:
        raw = self.storage.block(height)
        return None if raw is None else [raw[0], raw[1]]

    def block_json(self, height: int | None) -> dict[str, Any] | None:
        if height is None:
            height = self.storage.latest_height()
            if height == 0:
                return None
        loaded = self._load(height)
        if loaded is None:
            return None
        block, cert = loaded
        tx_hashes: list[str] = []
        evidence = []
        for digest in block.payload:
            if not is_batch_digest(digest):
                ev = decode_evidence(digest)
                evidence.append({
                    "validator": ev.validator.hex(), "height": ev.vote_a.height,
                    "round": ev.vote_a.round, "kind": int(ev.vote_a.kind),
                    "block_hash_a": ev.vote_a.block_hash.hex() if ev.vote_a.block_hash else None,
                    "block_hash_b": ev.vote_b.block_hash.hex() if ev.vote_b.block_hash else None})
                continue
            encoded = self.storage.batch(digest)
            if encoded is not None:
                tx_hashes.extend(h.hex() for h in decode_batch(encoded).tx_hashes())
        return {
            "header": header_json(block.header),
            "block_hash": block.hash().hex(),
            "payload": [d.hex() for d in block.payload],
            "tx_hashes": tx_hashes,
            "evidence": evidence,
            "commit": certificate_json(cert),
        }

    def tx(self, tx_hash: bytes) -> list | None:
        rec = self.storage.tx(tx_hash)
        return None if rec is None else [rec.height, rec.index, rec.code]

    def receipt(self, tx_hash: bytes) -> dict[str, Any] | None:
        """A finality receipt a third party can check offline (node.client.verify_receipt)."""
        rec = self.storage.tx(tx_hash)
        if rec is None:
            return None
        block, cert = self._load(rec.height)
        for batch_index, digest in enumerate(block.payload):
            if not is_batch_digest(digest):
                continue
            batch = decode_batch(self.storage.batch(digest))
            hashes = batch.tx_hashes()
            if tx_hash in hashes:
                i = hashes.index(tx_hash)
                return {
                    "tx_hash": tx_hash.hex(),
                    "height": rec.height,
                    "index": rec.index,
                    "code": rec.code,
                    "header": header_json(block.header),
                    "commit": certificate_json(cert),
                    "payload": [d.hex() for d in block.payload],
                    "batch_index": batch_index,
                    "batch_proof": [[left, h.hex()] for left, h in merkle_proof(hashes, i)],
                }
        return None

    def get_batches(self, digests: list[bytes]) -> list[bytes | None]:
        """Encoded committed batches by digest (None where not stored), in the order asked.

        For a peer's BatchRequest that the mempool cannot answer because the batch was
        committed (and dropped from it): a node catching up over a block whose batches
        did not all fit in one block-sync answer fetches the rest this way.
        """
        return [self.storage.batch(d) for d in digests]

    def sync_blocks(self, height: int, count: int, max_bytes: int = SYNC_MAX_BYTES) -> bytes:
        """Packed ``[[block, cert, [encoded batch...]], ...]`` from `height` on.

        The answer travels in one peer frame, so it holds at most `max_bytes` of
        blocks, certificates and batches: whole blocks while they fit, and when
        even the first does not fit with all its batches, that block alone with
        the leading batches that fit (the requester fetches the others; a block and
        its certificate, a few KiB, always go). Without
        the bound, 16 blocks of a loaded chain easily exceed the frame limit and
        no peer could ever serve a node that fell behind.
        """
        out: list[list] = []
        size = 0
        for h in range(height, height + count):
            raw = self.storage.block(h)
            if raw is None:
                break
            block = decode_block(raw[0])
            batches = [self.storage.batch(d) for d in block.payload if is_batch_digest(d)]
            if any(b is None for b in batches):
                break
            head = len(raw[0]) + len(raw[1]) + _SYNC_ITEM_OVERHEAD
            item = head + sum(len(b) + _SYNC_ITEM_OVERHEAD for b in batches)
            if size + item > max_bytes:
                if not out:
                    kept: list[bytes] = []
                    for b in batches:
                        if head + len(b) + _SYNC_ITEM_OVERHEAD > max_bytes:
                            break
                        kept.append(b)
                        head += len(b) + _SYNC_ITEM_OVERHEAD
                    out.append([raw[0], raw[1], kept])
                break
            out.append([raw[0], raw[1], batches])
            size += item
        return msgpack.packb(out)

    def close(self) -> None:
        pass
