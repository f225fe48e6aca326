"""`Wallet`: an Ed25519 account that builds and signs transactions for the built-in apps.

Re-exported as `node.client.Wallet` (DESIGN section 8)::

    w = Wallet.generate()
    tx = w.kv_set(chain_id, b"key", b"value")     # signed, encoded bytes
    tx = w.transfer(chain_id, to_address, 10)     # bank app
    tx_hash(tx)                                   # hex id, as the node's API reports it

The wallet counts nonces locally: each signed tx uses `w.nonce` and then
increments it, so a sequence of txs can be submitted without a round trip per
tx. A tx the node rejects (or never commits) leaves a gap that blocks the later
ones; set `w.nonce` to the chain's value to resynchronise. A tx that fails
validation here raises ValueError and does not consume a nonce.
"""

from __future__ import annotations

from typing import Any

from crypto import PrivateKey, sha256_hex
from node.tx import Tx, recipient


class Wallet:
    """One account: key, hex address and next nonce."""

    def __init__(self, key: PrivateKey, nonce: int = 0) -> None:
        self._key = key
        self.nonce = nonce

    @classmethod
    def generate(cls) -> Wallet:
        """A wallet with a fresh random key."""
        return cls(PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes, nonce: int = 0) -> Wallet:
        """The wallet of a 32-byte Ed25519 seed (deterministic: tests, localnet accounts)."""
        return cls(PrivateKey.from_seed(seed), nonce)

    @property
    def public_key(self) -> bytes:
        return self._key.public_key

    @property
    def address(self) -> str:
        """40 lowercase hex characters: `crypto.address(public_key)`."""
        return self._key.address

    @property
    def seed(self) -> bytes:
        return self._key.seed

    def sign_tx(self, chain_id: str, app: str, op: list[Any]) -> bytes:
        """Sign `op` for `app` on `chain_id` with the next nonce; the encoded tx."""
        tx = Tx(chain_id, app, self.public_key, self.nonce, tuple(op), bytes(64))
        tx.validate()
        encoded = tx.signed(self._key).encode()
        self.nonce += 1
        return encoded

    def kv_set(self, chain_id: str, key: bytes, value: bytes) -> bytes:
        """A signed kvstore tx setting `key` to `value`."""
        return self.sign_tx(chain_id, "kvstore", ["set", key, value])

    def kv_delete(self, chain_id: str, key: bytes) -> bytes:
        """A signed kvstore tx deleting `key`."""
        return self.sign_tx(chain_id, "kvstore", ["del", key])

    def transfer(self, chain_id: str, to_address: str | bytes, amount: int) -> bytes:
        """A signed bank transfer of `amount` (> 0) to `to_address` (hex or 20 bytes)."""
        if isinstance(to_address, str):
            to_address = to_address.lower()
        to = recipient(["transfer", to_address])
        return self.sign_tx(chain_id, "bank", ["transfer", to, amount])

    def __repr__(self) -> str:
        return f"Wallet(address={self.address}, nonce={self.nonce})"


def tx_hash(tx_bytes: bytes) -> str:
    """The hex id of an encoded tx, as `POST /v1/txs` answers and `GET /v1/txs/{hash}` takes."""
    return sha256_hex(tx_bytes)


__all__ = ["Wallet", "tx_hash"]
