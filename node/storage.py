"""The node's durable store: one LMDB environment per node home.

Layout (named sub-databases; integers are unsigned 64-bit big-endian so that
LMDB's byte order is numeric order)::

    blocks        u64be height  -> u32be len(block_bytes) || block_bytes || cert_bytes
    block_hashes  block hash    -> u64be height
    txs           tx hash       -> u64be height || u32be index || u32be code
    batches       batch digest  -> encoded Batch
    app           app key       -> value            (node.apps state, see StoredAppState)
    safety        b"state"      -> encoded SafetyState   (written before the
                                   safety environment below existed: read once, moved)
    meta          b"height"     -> u64be last committed height
                  b"app_hash"   -> app hash after the last committed block
                  b"schema"     -> b"1"
                  other keys    -> whatever `put_meta` stored (genesis hash, ...)

Blocks and certificates are opaque bytes encoded by the caller, so the store
does not depend on `consensus.types`.

The safety state (consensus SafetyRules: what this validator last signed) has an
LMDB environment of its own in the ``safety/`` subdirectory, one key ``b"state"``.
It is saved, with fsync, before every vote leaves the node, on the consensus path.
In the blocks' environment that save queued behind LMDB's one writer, which a
block's commit holds for milliseconds (~9 ms at 2,000 tx/s), and its fsync also
flushed the block's pages: 3.4 ms a save on average, 2-3 saves a height. In its own
environment a save writes and syncs a page or two of a small file (~0.25 ms idle).

One block, one write transaction. `commit_block` writes the block, its hash,
its tx index entries, its batches, the app's writes and the new meta in a
single LMDB transaction: a crash (even SIGKILL mid-write) leaves the store at
the previous block or at this one, never in between, and the app state on disk
always matches the stored height and app hash.

Why these flags:
- ``sync=True, metasync=True``: a commit returns only after fsync of data and
  meta pages. A block the node announced as committed (and, above all, a
  safety state that let a vote leave the node) must survive a power loss.
- ``writemap=False``: with a writable map a stray write from a bug anywhere in
  the process could corrupt the database file, and LMDB's durability story is
  simplest with the default malloc'd write pages.
- ``map_async=False`` (only meaningful with writemap) and ``lock=True`` (other
  processes, e.g. ``bftnode localnet status``, may open it read-only).
- ``map_size`` (default 1 GiB) is only address space; the file grows as data
  does. When it fills, `commit_block` doubles it and retries instead of
  halting the node.
- ``max_dbs`` covers the sub-databases above with room to add some.

``sync=False`` exists for throwaway benchmarks only: block commits then skip
fsync, but the safety environment is always synced, so a validator never
double-signs after a crash even then.

LMDB allows one open environment per file per process: open a home once and
share the `Storage` object (node.stores). Several processes (Ray actors) may
open the same home; LMDB serialises their writers, and a process whose map
another one grew adopts the new size on its next transaction.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import lmdb

DEFAULT_MAP_SIZE = 1 << 30
MAX_DBS = 16
SCHEMA_VERSION = b"1"

_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_TX_ENTRY = struct.Struct(">QII")

_DB_NAMES = ("blocks", "block_hashes", "txs", "batches", "app", "safety", "meta")
_META_HEIGHT = b"height"
_META_APP_HASH = b"app_hash"
_META_SCHEMA = b"schema"
_SAFETY_KEY = b"state"
_SAFETY_DIR = "safety"
_SAFETY_MAP_SIZE = 64 << 20   # address space only; a state with a locked block is ~40 KB
_MAX_MAP_GROWTHS = 8


class StorageError(Exception):
    """The store refused an operation (out-of-order block, corrupt record, full disk...)."""


@dataclass(frozen=True)
class TxRecord:
    """Where a committed transaction landed."""

    height: int
    index: int
    code: int


class Storage:
    """The LMDB environment of one node home (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], *, map_size: int = DEFAULT_MAP_SIZE,
                 sync: bool = True, readonly: bool = False) -> None:
        self.path = os.fspath(path)
        self._sync = sync
        if not readonly:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        try:
            self._env = lmdb.open(
                self.path,
                map_size=map_size,
                max_dbs=MAX_DBS,
                subdir=True,
                readonly=readonly,
                sync=sync,
                metasync=sync,
                writemap=False,
                map_async=False,
                lock=True,
                create=not readonly,
                mode=0o600,
            )
        except lmdb.Error as exc:
            raise StorageError(f"cannot open the store at {self.path}: {exc}") from None
        try:
            self._dbs = {name: self._env.open_db(name.encode(), create=not readonly)
                         for name in _DB_NAMES}
        except lmdb.NotFoundError:
            self._env.close()
            raise StorageError(f"the store at {self.path} has not been initialised") from None
        self._readonly = readonly
        self._safety_env: lmdb.Environment | None = None
        self._legacy_safety = False   # a state in the blocks' environment's `safety` db
        if not readonly:
            self._check_schema()

    def _check_schema(self) -> None:
        with self._begin(write=True, db=self._dbs["meta"]) as txn:
            found = txn.get(_META_SCHEMA)
            if found is None:
                txn.put(_META_SCHEMA, SCHEMA_VERSION)
            elif found != SCHEMA_VERSION:
                raise StorageError(
                    f"the store at {self.path} has schema {found!r}; this node reads "
                    f"{SCHEMA_VERSION!r}"
                )

    def _begin(self, env: lmdb.Environment | None = None, **kwargs: object
               ) -> lmdb.Transaction:
        """`env`.begin() (default: the blocks' environment), adopting a map that another
        process grew meanwhile."""
        env = self._env if env is None else env
        try:
            return env.begin(**kwargs)
        except lmdb.MapResizedError:
            env.set_mapsize(0)
            return env.begin(**kwargs)

    # --- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        if self._safety_env is not None:
            self._safety_env.close()
            self._safety_env = None
        self._env.close()

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sync(self) -> None:
        """Force everything committed so far to disk (fsync)."""
        self._env.sync(True)

    # --- the block writer ----------------------------------------------------------

    def commit_block(
        self,
        height: int,
        block_bytes: bytes,
        cert_bytes: bytes,
        *,
        block_hash: bytes,
        tx_entries: Sequence[tuple[bytes, int]] = (),
        app_writes: Sequence[tuple[bytes, bytes | None]] = (),
        app_hash: bytes,
        batches: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        """Store block `height` and everything it changed, in one transaction.

        `tx_entries` is the block's txs in order as (tx hash, result code); the
        index of an entry is its position. A tx hash already in the index keeps
        its first entry: a tx included twice fails the second time with a bad
        nonce, and its sender should see the commit that counted.
        `app_writes` are `App.pending_writes()` (value None = delete);
        `batches` are (digest, encoded batch) of the block's payload, so it can
        be served and replayed after a restart. Raises StorageError unless
        `height` is the last committed height + 1; on any error nothing is written.
        """
        if len(app_hash) != 32 or len(block_hash) != 32:
            raise StorageError("block hash and app hash must be 32 bytes")
        self._write(lambda txn: self._commit_block(txn, height, block_bytes, cert_bytes,
                                                   block_hash, tx_entries, app_writes,
                                                   app_hash, batches))

    def _write(self, body: Callable[[lmdb.Transaction], None],
               env: lmdb.Environment | None = None) -> None:
        """Run `body` in one write transaction of `env` (default: the blocks'), growing
        the map when it is full."""
        env = self._env if env is None else env
        for _ in range(_MAX_MAP_GROWTHS):
            try:
                with self._begin(env, write=True) as txn:
                    body(txn)
                return
            except lmdb.MapFullError:
                env.set_mapsize(env.info()["map_size"] * 2)
        raise StorageError(f"the store at {self.path} is full even after growing its map")

    def _commit_block(self, txn: lmdb.Transaction, height: int, block_bytes: bytes,
                      cert_bytes: bytes, block_hash: bytes,
                      tx_entries: Sequence[tuple[bytes, int]],
                      app_writes: Sequence[tuple[bytes, bytes | None]], app_hash: bytes,
                      batches: Sequence[tuple[bytes, bytes]]) -> None:
        d = self._dbs
        latest = self._latest_height(txn)
        if height != latest + 1:
            raise StorageError(f"cannot store block {height}: the last stored block is {latest}")
        record = _U32.pack(len(block_bytes)) + block_bytes + cert_bytes
        txn.put(_U64.pack(height), record, db=d["blocks"])
        txn.put(block_hash, _U64.pack(height), db=d["block_hashes"])
        for index, (tx_hash, code) in enumerate(tx_entries):
            txn.put(tx_hash, _TX_ENTRY.pack(height, index, code), db=d["txs"], overwrite=False)
        for digest, data in batches:
            txn.put(digest, data, db=d["batches"])
        app_db = d["app"]
        for key, value in app_writes:
            if value is None:
                txn.delete(key, db=app_db)
            else:
                txn.put(key, value, db=app_db)
        txn.put(_META_HEIGHT, _U64.pack(height), db=d["meta"])
        txn.put(_META_APP_HASH, app_hash, db=d["meta"])

    def put_batches(self, batches: Sequence[tuple[bytes, bytes]]) -> None:
        """Store (digest, encoded batch) pairs ahead of any block naming them."""
        def body(txn: lmdb.Transaction) -> None:
            for digest, data in batches:
                txn.put(digest, data, db=self._dbs["batches"])

        self._write(body)

    def put_meta(self, key: bytes, value: bytes) -> None:
        if key in (_META_HEIGHT, _META_APP_HASH, _META_SCHEMA):
            raise StorageError(f"meta key {key!r} is owned by the store")
        self._write(lambda txn: txn.put(key, value, db=self._dbs["meta"]))

    # --- readers -------------------------------------------------------------------

    def _latest_height(self, txn: lmdb.Transaction) -> int:
        raw = txn.get(_META_HEIGHT, db=self._dbs["meta"])
        return 0 if raw is None else _U64.unpack(raw)[0]

    def latest_height(self) -> int:
        """The last committed height (0 for an empty store)."""
        with self._begin() as txn:
            return self._latest_height(txn)

    def last_app_hash(self) -> bytes | None:
        """The app hash after the last committed block (None for an empty store)."""
        return self.get_meta(_META_APP_HASH)

    def get_meta(self, key: bytes) -> bytes | None:
        with self._begin(db=self._dbs["meta"]) as txn:
            return txn.get(key)

    def block(self, height: int) -> tuple[bytes, bytes] | None:
        """(block bytes, certificate bytes) of block `height`, or None."""
        if height < 1:
            return None
        with self._begin(db=self._dbs["blocks"]) as txn:
            raw = txn.get(_U64.pack(height))
        return None if raw is None else self._decode_block_record(height, raw)

    def block_by_hash(self, block_hash: bytes) -> tuple[bytes, bytes] | None:
        height = self.height_of(block_hash)
        return None if height is None else self.block(height)

    def height_of(self, block_hash: bytes) -> int | None:
        """Height of the block with hash `block_hash`, or None."""
        with self._begin(db=self._dbs["block_hashes"]) as txn:
            raw = txn.get(block_hash)
        return None if raw is None else _U64.unpack(raw)[0]

    def iter_blocks(self, start: int = 1, end: int | None = None
                    ) -> Iterator[tuple[int, bytes, bytes]]:
        """(height, block bytes, cert bytes) for heights in [start, end], in order.

        Reads one consistent snapshot; for replay on restart and block sync.
        """
        with self._begin(db=self._dbs["blocks"]) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(_U64.pack(max(start, 1))):
                return
            for key, raw in cursor:
                height = _U64.unpack(key)[0]
                if end is not None and height > end:
                    return
                block_bytes, cert_bytes = self._decode_block_record(height, raw)
                yield height, block_bytes, cert_bytes

    def tx(self, tx_hash: bytes) -> TxRecord | None:
        """Where the tx with hash `tx_hash` was committed, or None."""
        with self._begin(db=self._dbs["txs"]) as txn:
            raw = txn.get(tx_hash)
        return None if raw is None else TxRecord(*_TX_ENTRY.unpack(raw))

    def batch(self, digest: bytes) -> bytes | None:
        """The encoded batch with `digest`, or None."""
        with self._begin(db=self._dbs["batches"]) as txn:
            return txn.get(digest)

    def has_batch(self, digest: bytes) -> bool:
        return self.batch(digest) is not None

    def app_get(self, key: bytes) -> bytes | None:
        """A committed app-state value, or None."""
        with self.app_reader() as txn:
            return txn.get(key)

    def app_reader(self) -> lmdb.Transaction:
        """A read transaction on the app database (a context manager), for many reads."""
        return self._begin(db=self._dbs["app"])

    def _decode_block_record(self, height: int, raw: bytes) -> tuple[bytes, bytes]:
        if len(raw) < _U32.size or _U32.unpack_from(raw)[0] > len(raw) - _U32.size:
            raise StorageError(f"stored block {height} is corrupt")
        split = _U32.size + _U32.unpack_from(raw)[0]
        return raw[_U32.size:split], raw[split:]

    # --- safety state --------------------------------------------------------------

    def load_safety(self) -> bytes | None:
        """The saved safety state: from the safety environment, or where a store made
        before it existed keeps one, from the ``safety`` database (moved on the next
        save)."""
        env = self._safety()
        if env is not None:
            with self._begin(env) as txn:
                data = txn.get(_SAFETY_KEY)
            if data is not None:
                return data
        with self._begin(db=self._dbs["safety"]) as txn:
            return txn.get(_SAFETY_KEY)

    def save_safety(self, data: bytes) -> None:
        """Store the encoded safety state; durable on disk when this returns.

        Synced whatever `sync` says: ``sync=False`` skips the blocks' fsync only, so a
        validator never double-signs after a crash even then."""
        if self._readonly:
            raise StorageError(f"the store at {self.path} is open read-only")
        env = self._safety()
        assert env is not None   # opened (and created) on first use when writable
        self._write(lambda txn: txn.put(_SAFETY_KEY, data), env)
        if self._legacy_safety:
            # The state just saved supersedes the one the blocks' environment held: drop
            # that one, so that losing the new environment cannot bring an older back.
            self._write(lambda txn: txn.delete(_SAFETY_KEY, db=self._dbs["safety"]))
            if not self._sync:
                self._env.sync(True)
            self._legacy_safety = False

    def _safety(self) -> lmdb.Environment | None:
        """The safety environment, opened on first use (None: read-only, none yet)."""
        if self._safety_env is None:
            path = os.path.join(self.path, _SAFETY_DIR)
            if self._readonly and not os.path.isdir(path):
                return None
            if not self._readonly:
                os.makedirs(path, mode=0o700, exist_ok=True)
            try:
                self._safety_env = lmdb.open(
                    path, map_size=_SAFETY_MAP_SIZE, max_dbs=0, subdir=True,
                    readonly=self._readonly, sync=True, metasync=True, writemap=False,
                    map_async=False, lock=True, create=not self._readonly, mode=0o600)
            except lmdb.Error as exc:
                raise StorageError(f"cannot open the safety state at {path}: {exc}") from None
            with self._begin(db=self._dbs["safety"]) as txn:
                self._legacy_safety = txn.get(_SAFETY_KEY) is not None
        return self._safety_env


class StoredAppState:
    """`node.apps.AppState` over the store's ``app`` database.

    `apply` writes nothing: the block's writes were already stored by
    `Storage.commit_block`, in the block's own transaction, which is what makes
    block and app state atomic. Call `App.commit()` only after `commit_block`.
    """

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._txn: lmdb.Transaction | None = None

    def get(self, key: bytes) -> bytes | None:
        if self._txn is not None:
            return self._txn.get(key)
        return self._storage.app_get(key)

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """One read transaction for every `get` of a block's delivery: beginning one per
        get cost ~1.2 us of a node's ~13 us per tx in execution. Nothing writes the
        store meanwhile: the block's writes wait in the app's overlay until commit."""
        with self._storage.app_reader() as txn:
            self._txn = txn
            try:
                yield
            finally:
                self._txn = None

    def apply(self, writes: Sequence[tuple[bytes, bytes | None]]) -> None:
        return None


S = TypeVar("S")


class LmdbSafetyStore(Generic[S]):
    """The consensus `SafetyStore` protocol (load/save) on the node's store.

    `save` returns only once the state is on disk (a synced commit of the
    store's safety environment): SafetyRules saves *before* a vote leaves
    the node, so a crash right after sending can never let the restarted node
    sign a conflicting vote. `encode`/`decode` turn a SafetyState into bytes
    and back (by default ``state.encode()``), so this module does not import
    consensus types.
    """

    def __init__(self, storage: Storage, decode: Callable[[bytes], S],
                 encode: Callable[[S], bytes] | None = None) -> None:
        self._storage = storage
        self._decode = decode
        self._encode = encode if encode is not None else _encode_default

    def load(self) -> S | None:
        raw = self._storage.load_safety()
        return None if raw is None else self._decode(raw)

    def save(self, state: S) -> None:
        self._storage.save_safety(self._encode(state))


def _encode_default(state: object) -> bytes:
    encode = getattr(state, "encode", None)
    if encode is None:
        raise StorageError(f"{type(state).__name__} has no encode(); pass encode= to LmdbSafetyStore")
    return encode()


__all__ = [
    "DEFAULT_MAP_SIZE",
    "LmdbSafetyStore",
    "Storage",
    "StorageError",
    "StoredAppState",
    "TxRecord",
]
