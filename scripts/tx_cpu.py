"""A node's own CPU per transaction, verification left out: the mempool and the executor.

    .venv/bin/python scripts/tx_cpu.py [--txs 2000] [--rounds 6]

Drives the plain actor classes in this process, as a node on one machine hosts them
(the mempool leaves what it decoded for the executor), with 200-byte kvstore txs from
fresh wallets, and prints the median over rounds (the first is a warm-up) of this
process's CPU per tx for:

- a peer's batch of `--txs` txs: `Mempool.receive_batches` (decode, sign items, store);
- as many clients' txs: `Mempool.intake` (decode, admission, sealing one batch);
- one block of those two batches: `Executor.prepare` (apply into the overlay, app
  hash) and then `apply_decided` + `store` (one LMDB transaction, no fsync).

Signatures are answered valid by a stand-in verifier pool: their cost is the verify
limit's, measured by `bftnode bench` itself. On a 4-validator chain a node takes 3/4 of
the txs as peers' batches and 1/4 from its clients, and executes all of them. To set
a change against its baseline, run both trees in turn on the same venv (the compiled
modules must be in both trees), e.g. ``PYTHONPATH=/tmp/base .venv/bin/python
scripts/tx_cpu.py`` and then this tree's; docs/BENCHMARKS.md has figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence

import msgpack

from consensus.types import Block, CommitCertificate, VoteKind, vote_sign_bytes
from consensus.validators import ValidatorSet
from crypto import PrivateKey
from node.actors.executor import Executor
from node.actors.mempool import Mempool
from node.stores import close_storage
from node.tx import Batch
from node.wallet import Wallet

CHAIN = "tx-cpu"
KEYS = [PrivateKey.from_seed(bytes([200 + i]) * 32) for i in range(4)]
VSET = ValidatorSet.equal_power([k.public_key for k in KEYS])


class AllValid:
    """A verifier pool that answers every signature valid, at no cost."""

    verified = 0
    seconds = 0.0

    def verify(self, pks: Sequence[bytes], msgs: Sequence[bytes],
               sigs: Sequence[bytes]) -> bytes:
        return b"\x01" * len(pks)


def signed_txs(count: int, tag: bytes) -> list[bytes]:
    return [Wallet.from_seed(os.urandom(32)).kv_set(CHAIN, tag + b"%d" % i, os.urandom(150))
            for i in range(count)]


def certificate(block: Block) -> CommitCertificate:
    sb = vote_sign_bytes(VoteKind.PRECOMMIT, CHAIN, block.height, 0, block.hash())
    return CommitCertificate(block.height, 0, block.hash(),
                             tuple((k.public_key, k.sign(sb)) for k in KEYS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--txs", type=int, default=2000, help="txs per batch (default 2000)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds (default 6)")
    args = parser.parse_args()
    n = args.txs
    home = tempfile.mkdtemp(prefix="bftnode-tx-cpu-")
    try:
        mempool = Mempool(CHAIN, "kvstore", keep_decoded=True)
        mempool._pool = AllValid()  # type: ignore[assignment]
        executor = Executor(home, CHAIN, "kvstore", {}, 1 << 30, sync=False)
        figures: dict[str, list[float]] = {"peer": [], "client": [], "prepare": [], "store": []}
        prev = bytes(32)
        for r in range(args.rounds):
            peer = Batch(tuple(signed_txs(n, b"p%d." % r))).encode()
            clients = signed_txs(n, b"c%d." % r)
            t0 = time.process_time()
            out = msgpack.unpackb(mempool.receive_batches(msgpack.packb([[[peer, False]], []])),
                                  raw=False)
            t1 = time.process_time()
            answers, sealed, _ = msgpack.unpackb(
                mempool.intake(msgpack.packb([clients, [], []])), raw=False)
            t2 = time.process_time()
            assert out[0][1] == "stored" and all(reason is None for _, reason in answers)
            digests = [out[0][0]] + [d for d, _, _ in sealed]
            got = msgpack.unpackb(mempool.get_batches(digests), raw=False)
            height, app_hash = executor.info()
            block = Block.build(chain_id=CHAIN, height=height + 1, time_ms=1000 * (height + 1),
                                prev_block_hash=prev, payload=digests, app_hash=app_hash,
                                validators_hash=VSET.hash(), proposer=KEYS[0].public_key)
            t3 = time.process_time()
            assert executor.prepare(msgpack.packb([block.encode(), got]))
            t4 = time.process_time()
            executor.apply_decided(msgpack.packb([block.encode(), certificate(block).encode(),
                                                  None]))
            executor.store()
            t5 = time.process_time()
            mempool.committed(msgpack.packb([digests, [], []]))
            prev = block.hash()
            if r:
                figures["peer"].append((t1 - t0) / n)
                figures["client"].append((t2 - t1) / n)
                figures["prepare"].append((t4 - t3) / (2 * n))
                figures["store"].append((t5 - t4) / (2 * n))
        us = {k: statistics.median(v) * 1e6 for k, v in figures.items()}
        print(f"CPU per tx, median of {args.rounds - 1} rounds of {n}-tx batches (us):")
        print(f"  peer's batch (receive_batches)       {us['peer']:6.2f}")
        print(f"  clients' txs (intake, seal)          {us['client']:6.2f}")
        print(f"  execution (prepare)                  {us['prepare']:6.2f}")
        print(f"  storing (apply_decided + store)      {us['store']:6.2f}")
        node = 0.75 * us["peer"] + 0.25 * us["client"] + us["prepare"] + us["store"]
        print(f"  a node of 4 validators, per tx       {node:6.2f}   "
              "(3/4 peer, 1/4 client, all executed)")
    finally:
        close_storage(home)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
