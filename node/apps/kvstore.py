"""`kvstore`: signed set and delete of byte keys, for tests and benchmarks.

State layout (keys of the app-state database)::

    b"k/" + key      -> value
    b"n/" + address  -> u64be next nonce of that 20-byte sender address

A tx with the sender's next nonce is applied and bumps the nonce; any other
nonce is BAD_NONCE with no state change. Deleting an absent key succeeds.
"""

from __future__ import annotations

from node.apps import CODE_BAD_NONCE, CODE_OK, App, AppState, read_u64, u64
from node.tx import Tx

KEY_PREFIX = b"k/"
NONCE_PREFIX = b"n/"


class KVStore(App):
    """The key-value app (see the module docstring)."""

    name = "kvstore"

    def __init__(self, state: AppState, height: int = 0, app_hash: bytes | None = None) -> None:
        super().__init__(state, height=height, app_hash=app_hash)

    def get(self, key: bytes) -> bytes | None:
        """The committed value of `key`, or None."""
        return self._state.get(KEY_PREFIX + key)

    def next_nonce(self, address: bytes) -> int:
        raw = self._state.get(NONCE_PREFIX + address)
        return 0 if raw is None else read_u64(raw)

    def _genesis_encoding(self) -> bytes:
        return b""

    def _check(self, tx: Tx) -> tuple[int, str]:
        return CODE_OK, ""

    def _apply(self, tx: Tx) -> int:
        nonce_key = NONCE_PREFIX + tx.sender_address
        raw = self._get(nonce_key)
        expected = 0 if raw is None else read_u64(raw)
        if tx.nonce != expected:
            return CODE_BAD_NONCE
        self._put(nonce_key, u64(expected + 1))
        if tx.op[0] == "set":
            self._put(KEY_PREFIX + tx.op[1], tx.op[2])
        else:
            self._delete(KEY_PREFIX + tx.op[1])
        return CODE_OK
