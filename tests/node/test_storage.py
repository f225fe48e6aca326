"""The LMDB store (node/storage.py): read back, atomicity under SIGKILL, safety durability."""

from __future__ import annotations

import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from crypto import sha256
from node.apps import MemoryState, chain_app_hash, execute_block
from node.apps.kvstore import KVStore
from node.storage import LmdbSafetyStore, Storage, StorageError, StoredAppState, TxRecord
from node.wallet import Wallet, tx_hash

REPO = Path(__file__).resolve().parents[2]
CHAIN = "store-chain"


def block_of(height: int) -> dict:
    """Deterministic content of synthetic block `height` (shared with the crash child)."""
    return {
        "block": b"B%d|" % height + bytes([height % 251]) * (2000 + height % 7),
        "cert": b"C%d" % height,
        "hash": sha256(b"block %d" % height),
        "txs": [(sha256(b"tx %d %d" % (height, i)), i % 3) for i in range(50)],
        "writes": [(b"counter", b"%d" % height), (b"h/%d" % height, b"x" * 100)]
        + ([(b"h/%d" % (height - 3), None)] if height > 3 else []),
        "batch": (sha256(b"batch %d" % height), b"batch-bytes %d" % height),
    }


def commit_synthetic(store: Storage, height: int, prev_app_hash: bytes) -> bytes:
    b = block_of(height)
    writes = sorted(b["writes"])
    app_hash = chain_app_hash(prev_app_hash, height, writes)
    store.commit_block(height, b["block"], b["cert"], block_hash=b["hash"], tx_entries=b["txs"],
                       app_writes=writes, app_hash=app_hash, batches=[b["batch"]])
    return app_hash


def check_consistent(store: Storage) -> int:
    """Everything up to latest_height is whole; nothing beyond it exists."""
    top = store.latest_height()
    app_hash = bytes(32)
    for height in range(1, top + 1):
        b = block_of(height)
        assert store.block(height) == (b["block"], b["cert"])
        assert store.height_of(b["hash"]) == height
        for i, (h, code) in enumerate(b["txs"]):
            assert store.tx(h) == TxRecord(height, i, code)
        assert store.batch(b["batch"][0]) == b["batch"][1]
        app_hash = chain_app_hash(app_hash, height, sorted(b["writes"]))
    assert store.last_app_hash() == (app_hash if top else None)
    nxt = block_of(top + 1)
    assert store.block(top + 1) is None
    assert store.height_of(nxt["hash"]) is None
    assert store.tx(nxt["txs"][0][0]) is None
    assert store.batch(nxt["batch"][0]) is None
    assert store.app_get(b"counter") == (b"%d" % top if top else None)
    assert store.app_get(b"h/%d" % top) == (b"x" * 100 if top else None)
    if top > 3:
        assert store.app_get(b"h/%d" % (top - 3)) is None
    return top


def test_commit_and_read_back(tmp_path: Path) -> None:
    with Storage(tmp_path / "db") as store:
        assert store.latest_height() == 0 and store.last_app_hash() is None
        assert store.block(1) is None and store.block(0) is None
        app_hash = bytes(32)
        for height in range(1, 6):
            app_hash = commit_synthetic(store, height, app_hash)
        assert check_consistent(store) == 5
        assert store.block_by_hash(block_of(3)["hash"]) == (block_of(3)["block"], block_of(3)["cert"])
        assert [h for h, _, _ in store.iter_blocks(2, 4)] == [2, 3, 4]
        assert [h for h, _, _ in store.iter_blocks(4)] == [4, 5]
        assert list(store.iter_blocks(9)) == []
        store.put_meta(b"genesis", b"g")
        assert store.get_meta(b"genesis") == b"g"
        with pytest.raises(StorageError, match="owned by the store"):
            store.put_meta(b"height", b"x")
    with Storage(tmp_path / "db", readonly=True) as ro:
        assert check_consistent(ro) == 5


def test_out_of_order_block_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    with Storage(tmp_path / "db") as store:
        commit_synthetic(store, 1, bytes(32))
        with pytest.raises(StorageError, match="cannot store block 3: the last stored block is 1"):
            commit_synthetic(store, 3, bytes(32))
        with pytest.raises(StorageError, match="cannot store block 1"):
            commit_synthetic(store, 1, bytes(32))
        assert check_consistent(store) == 1


def test_tx_index_keeps_first_inclusion(tmp_path: Path) -> None:
    h = sha256(b"dup")
    with Storage(tmp_path / "db") as store:
        store.commit_block(1, b"b1", b"c1", block_hash=sha256(b"1"), tx_entries=[(h, 0)],
                           app_hash=bytes(32))
        store.commit_block(2, b"b2", b"c2", block_hash=sha256(b"2"),
                           tx_entries=[(sha256(b"o"), 0), (h, 1)], app_hash=bytes(32))
        assert store.tx(h) == TxRecord(1, 0, 0)


def test_map_grows_when_full(tmp_path: Path) -> None:
    with Storage(tmp_path / "db", map_size=256 * 1024) as store:
        for height in range(1, 5):
            store.commit_block(height, os.urandom(200_000), b"c", block_hash=sha256(b"%d" % height),
                               app_hash=bytes(32))
        assert store.latest_height() == 4


def test_kvstore_on_stored_state_survives_reopen(tmp_path: Path) -> None:
    w = Wallet.from_seed(sha256(b"w"))
    txs = [[w.kv_set(CHAIN, b"a", b"1"), w.kv_set(CHAIN, b"b", b"2")], [w.kv_delete(CHAIN, b"a")]]
    mem = KVStore(MemoryState())
    with Storage(tmp_path / "db") as store:
        app = KVStore(StoredAppState(store))
        for height, block in enumerate(txs[:1], start=1):
            codes = execute_block(app, height, block, chain_id=CHAIN)
            store.commit_block(height, b"b", b"c", block_hash=sha256(b"%d" % height),
                               tx_entries=[(sha256(t), c) for t, c in zip(block, codes, strict=True)],
                               app_writes=app.pending_writes(), app_hash=app.app_hash())
            app.commit()
    with Storage(tmp_path / "db") as store:
        app = KVStore(StoredAppState(store), height=store.latest_height(),
                      app_hash=store.last_app_hash())
        assert app.get(b"a") == b"1" and app.get(b"b") == b"2"
        execute_block(app, 2, txs[1], chain_id=CHAIN)
        store.commit_block(2, b"b", b"c", block_hash=sha256(b"2"), app_writes=app.pending_writes(),
                           app_hash=app.app_hash())
        app.commit()
        assert app.get(b"a") is None
        assert store.tx(bytes.fromhex(tx_hash(txs[0][1]))) == TxRecord(1, 1, 0)
        for height, block in enumerate(txs, start=1):
            execute_block(mem, height, block, chain_id=CHAIN)
            mem.commit()
        assert store.last_app_hash() == mem.app_hash()  # same hash from LMDB and memory state


@dataclass(frozen=True)
class FakeSafetyState:
    height: int
    round: int

    def encode(self) -> bytes:
        return b"%d/%d" % (self.height, self.round)

    @classmethod
    def decode(cls, data: bytes) -> FakeSafetyState:
        h, r = data.split(b"/")
        return cls(int(h), int(r))


@pytest.mark.parametrize("sync", [True, False])
def test_safety_state_survives_reopen(tmp_path: Path, sync: bool) -> None:
    with Storage(tmp_path / "db", sync=sync) as store:
        safety = LmdbSafetyStore(store, FakeSafetyState.decode)
        assert safety.load() is None
        safety.save(FakeSafetyState(3, 1))
        safety.save(FakeSafetyState(4, 0))
    with Storage(tmp_path / "db") as store:
        assert LmdbSafetyStore(store, FakeSafetyState.decode).load() == FakeSafetyState(4, 0)


def test_a_safety_save_does_not_wait_for_the_block_writer(tmp_path: Path) -> None:
    """The safety state has an environment of its own: a vote's save (on the consensus
    path) does not queue behind a block's commit, which holds the blocks' one writer."""
    with Storage(tmp_path / "db") as store:
        safety = LmdbSafetyStore(store, FakeSafetyState.decode)
        safety.save(FakeSafetyState(1, 0))
        holding, release = threading.Event(), threading.Event()

        def block_writer() -> None:
            with store._env.begin(write=True) as txn:   # as commit_block's transaction
                txn.put(b"x", b"y", db=store._dbs["meta"])
                holding.set()
                release.wait(30)

        writer = threading.Thread(target=block_writer)
        writer.start()
        try:
            assert holding.wait(10)
            saver = threading.Thread(target=safety.save, args=(FakeSafetyState(2, 1),))
            saver.start()
            saver.join(10)
            assert not saver.is_alive(), "the safety save waited for the block writer"
        finally:
            release.set()
            writer.join()
        assert safety.load() == FakeSafetyState(2, 1)
    assert (tmp_path / "db" / "safety" / "data.mdb").is_file()
    assert stat.S_IMODE((tmp_path / "db" / "safety" / "data.mdb").stat().st_mode) == 0o600


def test_a_safety_state_stored_before_its_environment_existed_is_read_then_moved(
        tmp_path: Path) -> None:
    with Storage(tmp_path / "db") as store:
        # As a store of an earlier release held it: in the blocks' environment.
        store._write(lambda txn: txn.put(b"state", b"7/2", db=store._dbs["safety"]))
    with Storage(tmp_path / "db", readonly=True) as store:
        assert LmdbSafetyStore(store, FakeSafetyState.decode).load() == FakeSafetyState(7, 2)
    with Storage(tmp_path / "db") as store:
        safety = LmdbSafetyStore(store, FakeSafetyState.decode)
        assert safety.load() == FakeSafetyState(7, 2)
        safety.save(FakeSafetyState(8, 0))
        with store._begin(db=store._dbs["safety"]) as txn:
            assert txn.get(b"state") is None          # moved: no older state to fall back on
    with Storage(tmp_path / "db", readonly=True) as store:
        assert LmdbSafetyStore(store, FakeSafetyState.decode).load() == FakeSafetyState(8, 0)
        with pytest.raises(StorageError, match="read-only"):
            store.save_safety(b"9/0")
    shutil.rmtree(tmp_path / "db" / "safety")
    with Storage(tmp_path / "db", readonly=True) as store:
        assert store.load_safety() is None            # read-only opens create nothing
    assert not (tmp_path / "db" / "safety").exists()


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open"):
        Storage(tmp_path / "missing", readonly=True)


CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    sys.path.insert(0, sys.argv[2])
    from test_storage import commit_synthetic
    from node.storage import Storage
    store = Storage(sys.argv[3])
    height = store.latest_height()
    app_hash = store.last_app_hash() or bytes(32)
    while True:
        height += 1
        app_hash = commit_synthetic(store, height, app_hash)
        print(height, flush=True)
""")


def test_sigkill_never_leaves_a_half_written_block(tmp_path: Path) -> None:
    """A child commits blocks in a loop and is SIGKILLed at a random moment, four times.

    SIGKILL cannot stop the OS from writing what it already has, so this tests
    LMDB's transaction atomicity (the crash case a node actually meets), not a
    power cut; fsync on commit covers that.
    """
    db = tmp_path / "db"
    rng = random.Random(1)
    reached = 0
    for round_ in range(4):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(REPO), str(Path(__file__).parent), str(db)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            target = reached + 15
            assert child.stdout is not None
            for line in child.stdout:
                if int(line) >= target:
                    break
            else:
                pytest.fail(f"crash child exited early: {child.stderr.read() if child.stderr else ''}")
            # land the kill somewhere inside the next commits
            for _ in range(rng.randrange(1, 4)):
                child.stdout.readline()
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
        assert child.returncode == -signal.SIGKILL, f"round {round_}"
        with Storage(db) as store:
            top = check_consistent(store)
        assert top >= target
        reached = top


RESIZE_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from crypto import sha256
    from node.storage import Storage
    store = Storage(sys.argv[2], map_size=256 * 1024)
    print(store.latest_height(), flush=True)
    sys.stdin.readline()  # the parent grows the map meanwhile
    height = store.latest_height()
    store.commit_block(height + 1, b"child", b"c", block_hash=sha256(b"child"), app_hash=bytes(32))
    print(height + 1, store.block(1)[0][:4].decode(), flush=True)
""")


def test_second_process_adopts_a_grown_map(tmp_path: Path) -> None:
    """Two processes on one home (Ray actors): one grows the map, the other keeps working."""
    db = tmp_path / "db"
    with Storage(db, map_size=256 * 1024) as store:
        child = subprocess.Popen([sys.executable, "-c", RESIZE_CHILD, str(REPO), str(db)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdin is not None
            assert child.stdout.readline().strip() == "0"
            for height in range(1, 5):
                store.commit_block(height, b"big!" + os.urandom(300_000), b"c",
                                   block_hash=sha256(b"%d" % height), app_hash=bytes(32))
            out, err = child.communicate("go\n", timeout=30)
        finally:
            child.kill()
            child.wait()
        assert child.returncode == 0, err
        assert out.split() == ["5", "big!"]
        assert store.latest_height() == 5


def test_app_state_reads_in_one_transaction_see_the_same_values_and_end_with_it(tmp_path):
    with Storage(tmp_path / "db") as store:
        prev = b""
        for height in range(1, 5):
            prev = commit_synthetic(store, height, prev)
        state = StoredAppState(store)
        keys = [b"counter", b"h/1", b"h/3", b"h/4", b"missing"]
        alone = [state.get(k) for k in keys]
        assert alone[0] == b"4" and alone[1] is None and alone[3] == b"x" * 100
        with state.reading():
            assert [state.get(k) for k in keys] == alone
        # The transaction ended with the scope: a later commit is seen at once.
        prev = commit_synthetic(store, 5, prev)
        assert state.get(b"counter") == b"5"
        with state.reading():
            assert state.get(b"counter") == b"5" and state.get(b"h/2") is None
