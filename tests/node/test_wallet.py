"""The client-side Wallet (node/wallet.py)."""

from __future__ import annotations

import pytest

from crypto import address, sha256
from node.tx import decode_tx, verify_txs
from node.wallet import Wallet, tx_hash

CHAIN = "wallet-chain"


def test_generate_and_from_seed() -> None:
    a, b = Wallet.generate(), Wallet.generate()
    assert a.address != b.address and len(a.address) == 40
    seed = sha256(b"seed")
    w = Wallet.from_seed(seed)
    assert w.address == Wallet.from_seed(seed).address == address(w.public_key)
    assert w.seed == seed and w.nonce == 0
    assert w.address in repr(w)


def test_signed_txs_decode_verify_and_count_nonces() -> None:
    w = Wallet.from_seed(sha256(b"w"))
    to = Wallet.from_seed(sha256(b"to"))
    raws = [w.kv_set(CHAIN, b"k", b"v"), w.kv_delete(CHAIN, b"k"),
            w.transfer(CHAIN, to.address, 5), w.transfer(CHAIN, to.address.upper(), 6),
            w.transfer(CHAIN, bytes.fromhex(to.address), 7)]
    txs = [decode_tx(r) for r in raws]
    assert [t.nonce for t in txs] == [0, 1, 2, 3, 4] and w.nonce == 5
    assert [t.app for t in txs] == ["kvstore", "kvstore", "bank", "bank", "bank"]
    assert txs[0].op == ("set", b"k", b"v") and txs[1].op == ("del", b"k")
    assert txs[2].op == ("transfer", bytes.fromhex(to.address), 5)
    assert all(t.sender == w.public_key and t.chain_id == CHAIN for t in txs)
    assert verify_txs(txs, CHAIN) == [True] * 5
    assert tx_hash(raws[0]) == sha256(raws[0]).hex() == txs[0].hash().hex()


def test_invalid_tx_raises_and_keeps_the_nonce() -> None:
    w = Wallet.generate()
    for bad in (lambda: w.kv_set(CHAIN, b"", b"v"),
                lambda: w.kv_set(CHAIN, b"k" * 300, b"v"),
                lambda: w.transfer(CHAIN, "nothex", 1),
                lambda: w.transfer(CHAIN, Wallet.generate().address, 0),
                lambda: w.kv_set("", b"k", b"v")):
        with pytest.raises(ValueError):
            bad()
    assert w.nonce == 0


def test_nonce_can_be_resynchronised() -> None:
    w = Wallet.from_seed(sha256(b"w"), nonce=7)
    assert decode_tx(w.kv_set(CHAIN, b"k", b"v")).nonce == 7
    w.nonce = 2
    assert decode_tx(w.kv_set(CHAIN, b"k", b"v")).nonce == 2
