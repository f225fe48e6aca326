"""One `Storage` per LMDB home per process.

LMDB allows a process to open an environment only once. Under Ray each actor
is its own process and opens the node's store itself; in the in-process runtime
the executor, block store and consensus host share one process, so they must
share one `Storage` object. `open_storage` makes both cases the same call.
"""

from __future__ import annotations

import os
import threading

from node.storage import Storage

_open: dict[str, Storage] = {}
_lock = threading.Lock()


def open_storage(path: str, *, map_size: int, sync: bool = True) -> Storage:
    key = os.path.realpath(path)
    with _lock:
        storage = _open.get(key)
        if storage is None:
            storage = Storage(path, map_size=map_size, sync=sync)
            _open[key] = storage
        return storage


def close_storage(path: str) -> None:
    key = os.path.realpath(path)
    with _lock:
        storage = _open.pop(key, None)
    if storage is not None:
        storage.close()
