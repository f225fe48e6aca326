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
"""

from __future__ import annotations

import msgpack

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
from node.tx import ADMITTED_TXS, PROTOCOL_MAX_TX_BYTES, decode_batch
from node.wire import decode_block, decode_certificate

# Codes after which the sender's nonce has moved on (see node.apps).
_NONCE_CONSUMED = (CODE_OK, CODE_INSUFFICIENT_FUNDS, CODE_BALANCE_OVERFLOW)


class AppHashMismatch(Exception):
    """The network's app hash for a height differs from the one this node computed."""


class Executor:
    def __init__(self, data_dir: str, chain_id: str, app: str, allocations: dict[str, int],
                 map_size: int, sync: bool = True) -> None:
        self.chain_id = chain_id
        self.storage = open_storage(data_dir, map_size=map_size, sync=sync)
        height = self.storage.latest_height()
        self.app = make_app(app, StoredAppState(self.storage), genesis=allocations,
                            height=height, app_hash=self.storage.last_app_hash())

    def info(self) -> list:
        """[last committed height, app hash after it]."""
        return [self.app.height, self.app.app_hash()]

    @offload
    def execute(self, packed: bytes) -> bytes:
        """Apply and store one block.

        `packed` is ``[block_bytes, cert_bytes, [[encoded_batch, verdicts], ...]]``
        with the batches in the block's payload order. Returns packed
        ``[height, app_hash, [tx_hash...], [code...], [[sender_pk, nonce]...]]``.
        """
        block_bytes, cert_bytes, batches = msgpack.unpackb(packed, raw=False)
        block = decode_block(block_bytes)
        header = block.header
        height = header.height
        if height != self.app.height + 1:
            raise ValueError(f"executor at height {self.app.height} got block {height}")
        cert = decode_certificate(cert_bytes)
        if cert.height != height or cert.block_hash != block.hash():
            raise ValueError(f"block {height}: the commit certificate is for height "
                             f"{cert.height}, block {cert.block_hash.hex()[:16]}, not this block")
        expected = self.app.app_hash()
        if header.app_hash != expected:
            raise AppHashMismatch(
                f"block {height} carries app hash {header.app_hash.hex()} for height "
                f"{height - 1}, but this node computed {expected.hex()}: its state has "
                f"forked from the network's; refusing to continue"
            )
        raw_txs: list[bytes] = []
        hashes: list[bytes] = []
        verdicts: list[int] = []
        stored_batches: list[tuple[bytes, bytes]] = []
        digests = [d for d in block.payload if is_batch_digest(d)]
        for digest, (encoded, batch_verdicts) in zip(digests, batches, strict=True):
            batch = decode_batch(encoded)
            batch_hashes, batch_digest = batch.hashes_and_digest()
            if batch_digest != digest:
                raise ValueError(f"block {height}: batch {digest.hex()} content does not match")
            raw_txs.extend(batch.txs)
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
        applied = self.app.deliver_block(height, [tx for _, tx in decoded])
        codes = [CODE_BAD_SIGNATURE] * len(raw_txs)
        for j, code in enumerate(decode_codes):
            if code is not None:
                codes[valid_index[j]] = code
        nonces = []
        for (j, tx), code in zip(decoded, applied, strict=True):
            codes[valid_index[j]] = code
            if code in _NONCE_CONSUMED:
                nonces.append([tx.sender, tx.nonce])
        app_hash = self.app.app_hash()
        try:
            self.storage.commit_block(
                height, block_bytes, cert_bytes, block_hash=block.hash(),
                tx_entries=list(zip(hashes, codes, strict=True)),
                app_writes=self.app.pending_writes(), app_hash=app_hash,
                batches=stored_batches)
        except Exception:
            self.app.discard()
            raise
        self.app.commit()
        return msgpack.packb([height, app_hash, hashes, codes, nonces])

    def where(self) -> dict[str, object]:
        """Placement of this actor (pid, Ray node id), for operators and tests."""
        return placement()

    def close(self) -> None:
        pass

