"""The built-in apps: determinism, nonce rules, bank balances (node/apps)."""

from __future__ import annotations

import random

import pytest

from crypto import sha256, verify_batch
from node.apps import (
    CODE_BAD_NONCE,
    CODE_BAD_SIGNATURE,
    CODE_BALANCE_OVERFLOW,
    CODE_INSUFFICIENT_FUNDS,
    CODE_INVALID_OP,
    CODE_MALFORMED,
    CODE_OK,
    CODE_WRONG_APP,
    CODE_WRONG_CHAIN,
    AppError,
    MemoryState,
    chain_app_hash,
    execute_block,
    make_app,
)
from node.apps.bank import Bank
from node.apps.kvstore import KVStore
from node.tx import MAX_AMOUNT, Tx, decode_tx
from node.wallet import Wallet

CHAIN = "test-chain"


def wallets(n: int) -> list[Wallet]:
    return [Wallet.from_seed(sha256(bytes([i]))) for i in range(n)]


def run_block(app, height: int, txs: list[bytes], **kw) -> list[int]:
    codes = execute_block(app, height, txs, chain_id=CHAIN, **kw)
    app.commit()
    return codes


def test_kvstore_set_delete_and_nonces() -> None:
    (w,) = wallets(1)
    app = KVStore(MemoryState())
    codes = run_block(app, 1, [w.kv_set(CHAIN, b"a", b"1"), w.kv_set(CHAIN, b"b", b"2"),
                               w.kv_delete(CHAIN, b"a")])
    assert codes == [CODE_OK] * 3
    assert app.get(b"a") is None and app.get(b"b") == b"2"
    assert app.next_nonce(bytes.fromhex(w.address)) == 3


def test_wrong_nonce_changes_nothing_and_stays_in_block() -> None:
    (w,) = wallets(1)
    app = KVStore(MemoryState())
    replay = w.kv_set(CHAIN, b"a", b"1")
    skipped = Wallet.from_seed(w.seed, nonce=5).kv_set(CHAIN, b"b", b"x")
    codes = run_block(app, 1, [replay, replay, skipped])
    assert codes == [CODE_OK, CODE_BAD_NONCE, CODE_BAD_NONCE]
    assert app.get(b"b") is None
    assert app.next_nonce(bytes.fromhex(w.address)) == 1


def test_execute_block_codes_for_bad_entries() -> None:
    a, b = wallets(2)
    good = a.kv_set(CHAIN, b"k", b"v")
    tx = decode_tx(b.kv_set(CHAIN, b"k", b"evil"))
    forged = Tx(tx.chain_id, tx.app, tx.sender, tx.nonce, tx.op, bytes(64)).encode()
    other_chain = b.kv_set("other-chain", b"k", b"v")
    bank_tx = b.transfer(CHAIN, a.address, 1)
    app = KVStore(MemoryState())
    calls = []

    def verify(pks, msgs, sigs):
        calls.append(len(pks))
        return verify_batch(pks, msgs, sigs)

    codes = run_block(app, 1, [good, b"\x00junk", forged, other_chain, bank_tx], verify=verify)
    assert codes == [CODE_OK, CODE_MALFORMED, CODE_BAD_SIGNATURE, CODE_WRONG_CHAIN,
                     CODE_WRONG_APP]
    assert calls == [3]
    assert app.get(b"k") == b"v"


def test_invalid_op_reaching_the_app_is_refused() -> None:
    (w,) = wallets(1)
    app = KVStore(MemoryState())
    bogus = Tx(CHAIN, "kvstore", w.public_key, 0, ("set", b"", b"v"), bytes(64))
    assert app.deliver_block(1, [bogus]) == [CODE_INVALID_OP]
    assert app.pending_writes() == []
    assert app.check_tx(bogus)[0] == CODE_INVALID_OP


def test_decoded_txs_get_the_same_codes_and_app_hash_without_the_op_check_again() -> None:
    # deliver_block(decoded=True) skips validate_op for decode_tx's txs: same results,
    # WRONG_APP included, for both apps.
    a, b = wallets(2)
    raws = [a.kv_set(CHAIN, b"k", b"1"), a.kv_set(CHAIN, b"k", b"2"),
            a.kv_set(CHAIN, b"k", b"3"),                    # nonce 2: fine
            b.transfer(CHAIN, a.address, 5), b.kv_delete(CHAIN, b"k"),
            b.transfer(CHAIN, a.address, 10**6)]
    txs = [decode_tx(raw) for raw in raws]
    txs.insert(2, txs[0])                                  # a replayed nonce: BAD_NONCE
    for make in (lambda: KVStore(MemoryState()),
                 lambda: Bank(MemoryState(), genesis={b.address: 100})):
        checked, trusted = make(), make()
        codes = checked.deliver_block(1, txs)
        assert trusted.deliver_block(1, txs, decoded=True) == codes
        assert trusted.app_hash() == checked.app_hash()
        assert trusted.pending_writes() == checked.pending_writes()
        assert CODE_WRONG_APP in codes


def random_kv_blocks(seed: int, heights: int) -> list[list[bytes]]:
    rng = random.Random(seed)
    ws = wallets(4)
    blocks = []
    for _ in range(heights):
        txs = []
        for _ in range(rng.randrange(0, 8)):
            w = rng.choice(ws)
            key = bytes([rng.randrange(6)])
            if rng.random() < 0.2:
                w.nonce += rng.choice((-1, 1))  # some bad nonces
                w.nonce = max(w.nonce, 0)
            if rng.random() < 0.3:
                txs.append(w.kv_delete(CHAIN, key))
            else:
                txs.append(w.kv_set(CHAIN, key, rng.randbytes(rng.randrange(4))))
        blocks.append(txs)
    return blocks


def test_same_blocks_same_app_hash_on_two_instances() -> None:
    blocks = random_kv_blocks(7, 25)
    apps = [KVStore(MemoryState()), KVStore(MemoryState())]
    hashes: list[list[bytes]] = [[], []]
    all_codes: list[list[list[int]]] = [[], []]
    for app, hs, cs in zip(apps, hashes, all_codes, strict=True):
        for height, txs in enumerate(blocks, start=1):
            cs.append(run_block(app, height, txs))
            hs.append(app.app_hash())
    assert hashes[0] == hashes[1]
    assert all_codes[0] == all_codes[1]
    assert apps[0]._state.items == apps[1]._state.items
    assert any(CODE_BAD_NONCE in c for c in all_codes[0])
    assert len(set(hashes[0])) == len(blocks)  # every height moves the chain, even empty blocks
    other = KVStore(MemoryState())
    for height, txs in enumerate(random_kv_blocks(8, 25), start=1):
        run_block(other, height, txs)
    assert other.app_hash() != hashes[0][-1]


def test_app_hash_formula() -> None:
    (w,) = wallets(1)
    app = KVStore(MemoryState())
    genesis = app.app_hash()
    assert genesis == sha256(b"bftnode/app-genesis/kvstore\x00")
    app.deliver_block(1, [decode_tx(w.kv_set(CHAIN, b"a", b"1"))])
    writes = app.pending_writes()
    assert writes == sorted(writes)
    assert app.app_hash() == chain_app_hash(genesis, 1, writes)
    # Pinned bytes: every validator must hash the same writes the same way, release to
    # release (computed by the formula as first written, lists of [key, value]).
    pinned = [(b"k/a", b"1"), (b"k/b", None), (b"n/" + bytes(20), (7).to_bytes(8, "big"))]
    assert chain_app_hash(b"\x11" * 32, 5, pinned).hex() == (
        "ba3ee13df91837dedc5615d254f9ea5435a01560a9daf9904ec18443c393ad7f")
    assert chain_app_hash(b"\x11" * 32, 5, [list(w) for w in pinned]) == chain_app_hash(
        b"\x11" * 32, 5, pinned)
    assert chain_app_hash(b"\x11" * 32, 6, []).hex() == (
        "fc1e920e8b3de1cb27512440b8aecbb7d1fe13fb5dfa4f8181ba41aac619afe1")


def test_delivery_order_is_enforced() -> None:
    app = KVStore(MemoryState())
    with pytest.raises(AppError, match="expected block 1, got block 2"):
        app.deliver_block(2, [])
    app.deliver_block(1, [])
    with pytest.raises(AppError, match="not committed"):
        app.deliver_block(2, [])
    app.discard()
    assert app.height == 0
    app.deliver_block(1, [])
    app.commit()
    assert app.height == 1
    with pytest.raises(AppError, match="no delivered block"):
        app.commit()


def test_pending_writes_invisible_until_commit() -> None:
    (w,) = wallets(1)
    state = MemoryState()
    app = KVStore(state)
    app.deliver_block(1, [decode_tx(w.kv_set(CHAIN, b"a", b"1"))])
    assert app.get(b"a") is None and state.items == {}
    app.commit()
    assert app.get(b"a") == b"1"


def test_check_tx() -> None:
    a, b = wallets(2)
    bank = Bank(MemoryState(), {a.address: 100})
    ok = decode_tx(a.transfer(CHAIN, b.address, 60))
    ahead = decode_tx(a.transfer(CHAIN, b.address, 1))  # nonce 1 while 0 is pending
    assert bank.check_tx(ok) == (CODE_OK, "")
    assert bank.check_tx(ahead) == (CODE_OK, "")
    assert bank.check_tx(decode_tx(a.transfer(CHAIN, b.address, 101)))[0] == CODE_INSUFFICIENT_FUNDS
    assert bank.check_tx(decode_tx(b.kv_set(CHAIN, b"k", b"v")))[0] == CODE_WRONG_APP
    run_block(bank, 1, [ok.encode()])
    code, reason = bank.check_tx(ok)
    assert code == CODE_BAD_NONCE and "next nonce is 1" in reason


def test_bank_transfers_genesis_and_insufficient_funds() -> None:
    a, b, c = wallets(3)
    bank = Bank(MemoryState(), {a.address: 100, bytes.fromhex(b.address): 5})
    assert bank.balance(a.address) == 100 and bank.balance(c.address) == 0
    codes = run_block(bank, 1, [
        a.transfer(CHAIN, b.address, 30),
        b.transfer(CHAIN, c.address, 36),   # 35 available: fails, nonce consumed
        b.transfer(CHAIN, c.address, 35),
        c.transfer(CHAIN, a.address, 1),    # c has 0 before this tx... but got 35 above
        a.transfer(CHAIN, a.address, 70),   # to self: only the nonce moves
    ])
    assert codes == [CODE_OK, CODE_INSUFFICIENT_FUNDS, CODE_OK, CODE_OK, CODE_OK]
    assert (bank.balance(a.address), bank.balance(b.address), bank.balance(c.address)) == (71, 0, 34)
    assert (bank.nonce(a.address), bank.nonce(b.address), bank.nonce(c.address)) == (2, 2, 1)
    # an emptied account stays empty: it does not fall back to its genesis allocation
    assert bank.balance(b.address) == 0


def test_bank_overflow() -> None:
    a, b = wallets(2)
    bank = Bank(MemoryState(), {a.address: MAX_AMOUNT, b.address: 1})
    codes = run_block(bank, 1, [b.transfer(CHAIN, a.address, 1)])
    assert codes == [CODE_BALANCE_OVERFLOW]
    assert bank.balance(a.address) == MAX_AMOUNT and bank.balance(b.address) == 1
    assert bank.nonce(b.address) == 1


def test_bank_genesis_validation_and_hash() -> None:
    a, b = wallets(2)
    with pytest.raises(AppError, match="genesis balance"):
        Bank(MemoryState(), {a.address: -1})
    with pytest.raises(AppError, match="20 bytes"):
        Bank(MemoryState(), {"abcd": 1})
    one = Bank(MemoryState(), {a.address: 1, b.address: 2}).app_hash()
    same = Bank(MemoryState(), {b.address: 2, a.address: 1}).app_hash()
    other = Bank(MemoryState(), {a.address: 2, b.address: 2}).app_hash()
    assert one == same != other


def test_bank_determinism_random() -> None:
    ws = wallets(5)
    genesis = {w.address: 1000 for w in ws}
    rng = random.Random(3)
    blocks = []
    for _ in range(20):
        blocks.append([rng.choice(ws).transfer(CHAIN, rng.choice(ws).address, rng.randrange(1, 400))
                       for _ in range(rng.randrange(6))])
    results = []
    for _ in range(2):
        bank = Bank(MemoryState(), genesis)
        codes = [run_block(bank, h, txs) for h, txs in enumerate(blocks, start=1)]
        results.append((bank.app_hash(), codes, [bank.balance(w.address) for w in ws]))
    assert results[0] == results[1]
    assert sum(results[0][2]) == 5000


def test_restart_from_stored_hash_continues_the_chain() -> None:
    (w,) = wallets(1)
    state = MemoryState()
    app = make_app("kvstore", state)
    run_block(app, 1, [w.kv_set(CHAIN, b"a", b"1")])
    copy = MemoryState(state.items)
    reopened = make_app("kvstore", copy, height=1, app_hash=app.app_hash())
    tx = w.kv_set(CHAIN, b"b", b"2")
    run_block(app, 2, [tx])
    run_block(reopened, 2, [tx])
    assert reopened.app_hash() == app.app_hash()
    assert copy.items == state.items
    with pytest.raises(AppError, match="unknown app"):
        make_app("nft", state)
