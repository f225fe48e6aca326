"""What storing one block costs: CPU, wall time and bytes written, with and without fsync.

    .venv/bin/python scripts/store_writes.py [--txs 150] [--blocks 50] [--warm 300]

Commits blocks shaped like a kvstore block under load through `Storage.commit_block`
(one tx-index entry per tx, a key write and a nonce write per tx, ~10 batches) into a
store warmed with `--warm` such blocks, in a temporary directory on the same filesystem
as /tmp. Prints per block: CPU (this thread, kernel time included), wall time, the
bytes handed to write() (`wchar`) and the bytes the kernel counted as sent to the
storage layer (`write_bytes`, /proc/self/io), for the node's settings (sync) and for
the same store opened without sync, and for each kind of write alone.

Random keys (hashes, addresses) make each put dirty its own B-tree page, and an fsync
per block writes every dirtied page; docs/BENCHMARKS.md has figures.

Read the CPU, wall and write() columns. `write_bytes` is what the kernel charges this
process for writeback, not what reaches the device: on the ext4 of the machine these
figures come from it overcounted (an fdatasync after overwriting a fully written file
was charged 80 MB), so the storage-layer column is shown for what it is, no more.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from node.storage import Storage

_KINDS = ("tx app batches", "tx", "app", "batches", "")


def _io() -> tuple[int, int]:
    wchar = write_bytes = 0
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                wchar = int(line.split()[1])
            elif line.startswith("write_bytes:"):
                write_bytes = int(line.split()[1])
    return wchar, write_bytes


class _Blocks:
    def __init__(self, storage: Storage, txs: int) -> None:
        self.storage = storage
        self.txs = txs
        self.height = storage.latest_height()

    def commit(self, kind: str) -> None:
        self.height += 1
        n = self.txs
        entries = [(os.urandom(32), 0) for _ in range(n)] if "tx" in kind else []
        writes: list[tuple[bytes, bytes | None]] = []
        if "app" in kind:
            for _ in range(n):
                writes.append((b"kv/" + os.urandom(8), os.urandom(100)))
                writes.append((b"nonce/" + os.urandom(20), os.urandom(8)))
            writes.sort()
        batches = ([(os.urandom(32), os.urandom(200 * max(1, n // 10))) for _ in range(10)]
                   if "batches" in kind else [])
        self.storage.commit_block(self.height, os.urandom(400), os.urandom(300),
                                  block_hash=os.urandom(32), tx_entries=entries,
                                  app_writes=writes, app_hash=os.urandom(32), batches=batches)


def run(sync: bool, txs: int, blocks: int, warm: int) -> None:
    root = tempfile.mkdtemp(prefix="bftnode-store-writes-", dir="/tmp")
    try:
        storage = Storage(os.path.join(root, "data"), map_size=1 << 31, sync=sync)
        maker = _Blocks(storage, txs)
        for _ in range(warm):
            maker.commit(_KINDS[0])
        print(f"sync={sync}: {txs} txs per block, store warmed with {warm} blocks")
        print(f"  {'writes':16s} {'CPU ms':>7s} {'wall ms':>8s} {'write() KiB':>12s} "
              f"{'storage-layer KiB':>18s}")
        for kind in _KINDS:
            w0, b0 = _io()
            c0, t0 = time.thread_time(), time.perf_counter()
            for _ in range(blocks):
                maker.commit(kind)
            c1, t1 = time.thread_time(), time.perf_counter()
            w1, b1 = _io()
            print(f"  {kind or 'block record':16s} {(c1 - c0) / blocks * 1e3:7.2f} "
                  f"{(t1 - t0) / blocks * 1e3:8.2f} {(w1 - w0) / blocks / 1024:12.0f} "
                  f"{(b1 - b0) / blocks / 1024:18.0f}")
        storage.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--txs", type=int, default=150)
    parser.add_argument("--blocks", type=int, default=50)
    parser.add_argument("--warm", type=int, default=300)
    args = parser.parse_args()
    for sync in (True, False):
        run(sync, args.txs, args.blocks, args.warm)


if __name__ == "__main__":
    main()
