"""Mempool (node/actors/mempool.py) as a plain class: admission with real signed txs and the
real batch verifier, rejections and their reasons, sealing, peer batches, commit."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

import msgpack

from crypto import merkle_root, sha256, verify_batch
from node.actors.mempool import Mempool, MempoolLimits
from node.actors.verifier_pool import VerifierPool, VerifierWorker
from node.tx import DEFAULT_MAX_BATCH_BYTES, Batch, decode_batch, decode_tx
from node.wallet import Wallet

CHAIN = "mempool-chain"


def wallet(i: int) -> Wallet:
    return Wallet.from_seed(bytes([i + 1]) * 32)


_serial = iter(range(1 << 30))


def kv_txs(w: Wallet, n: int, chain: str = CHAIN, size: int = 8) -> list[bytes]:
    """n signed kvstore txs from `w`, each with distinct content (no accidental replays)."""
    return [w.kv_set(chain, b"k%d" % next(_serial), b"v" * size) for _ in range(n)]


def forged(raw: bytes) -> bytes:
    """`raw` with a well-formed signature that does not verify."""
    tx = decode_tx(raw)
    return replace(tx, signature=bytes([tx.signature[0] ^ 1]) + tx.signature[1:]).encode()


def prepare(mp: Mempool, txs: list) -> tuple[int, list, dict[int, tuple[bytes | None, str]]]:
    ticket, items, rejected = msgpack.unpackb(mp.prepare(msgpack.packb(txs)), raw=False)
    return ticket, items, {i: (h, reason) for i, h, reason in rejected}


def verdicts(items: list) -> bytes:
    pks, msgs, sigs = items
    return bytes(verify_batch(pks, msgs, sigs))


def admit(mp: Mempool, txs: list) -> tuple[dict, list, bool]:
    """prepare -> real batch verification -> admit: (rejected by prepare, admit results, full)."""
    ticket, items, rejected = prepare(mp, txs)
    results, full = msgpack.unpackb(mp.admit(ticket, verdicts(items)), raw=False)
    return rejected, results, full


def seal(mp: Mempool, force: bool = True) -> list[tuple[bytes, bytes]]:
    out = msgpack.unpackb(mp.seal(force), raw=False)
    assert all(n == len(decode_batch(e).txs) for _d, e, n in out)  # each with its tx count
    return [(d, e) for d, e, _n in out]


def committed(mp: Mempool, digests: list[bytes], hashes: list[bytes],
              nonces: list[tuple[bytes, int]]) -> int:
    return mp.committed(msgpack.packb([digests, hashes, [list(n) for n in nonces]]))


def peer_batch(txs: list[bytes]) -> tuple[bytes, bytes]:
    batch = Batch(tuple(txs))
    return batch.digest(), batch.encode()


def forged_batch(w: Wallet, n: int, bad: int) -> tuple[bytes, bytes]:
    """`peer_batch` of n txs from `w`, tx `bad` with a forged signature."""
    txs = kv_txs(w, n)
    txs[bad] = forged(txs[bad])
    return peer_batch(txs)


def receive(mp: Mempool, items: list[tuple[bytes, bool]], fetching: Sequence[bytes] = ()
            ) -> list[list]:
    """`Mempool.receive_batches` of [(encoded, requested), ...], unpacked."""
    return msgpack.unpackb(mp.receive_batches(msgpack.packb(
        [[list(i) for i in items], list(fetching)])), raw=False)


# --- admission ---------------------------------------------------------------------------


def test_prepare_and_admit_round_trip_with_real_signatures():
    mp = Mempool(CHAIN, "kvstore")
    txs = kv_txs(wallet(0), 3) + kv_txs(wallet(1), 2)
    ticket, items, rejected = prepare(mp, txs)
    assert rejected == {}
    pks, msgs, sigs = items
    assert len(pks) == len(msgs) == len(sigs) == 5
    assert pks[0] == wallet(0).public_key and pks[4] == wallet(1).public_key
    assert msgs[0] == decode_tx(txs[0]).sign_bytes()
    assert mp.size() == (0, 0)  # nothing is in the pool before admit
    results, full = msgpack.unpackb(mp.admit(ticket, verdicts(items)), raw=False)
    assert results == [[sha256(t), None] for t in txs]
    assert full is False
    assert all(mp.contains(sha256(t)) for t in txs)
    assert mp.size() == (5, sum(len(t) for t in txs))
    assert mp.stats["admitted"] == 5


def test_prepare_rejects_with_reasons():
    mp = Mempool(CHAIN, "kvstore")
    w = wallet(0)
    good = kv_txs(w, 1)
    assert admit(mp, good)[1] == [[sha256(good[0]), None]]
    other_chain = kv_txs(wallet(1), 1, chain="other-chain")[0]
    bank_tx = wallet(2).transfer(CHAIN, wallet(3).address, 5)
    fresh = kv_txs(w, 1)[0]
    inputs = [b"\x93\x01\x02", 7, other_chain, bank_tx, good[0], fresh, fresh]
    _, items, rejected = prepare(mp, inputs)
    assert len(items[0]) == 1  # only `fresh` goes on to signature verification
    assert rejected[0][0] is None and rejected[0][1].startswith("malformed transaction:")
    assert rejected[1] == (None, "malformed")
    assert rejected[2] == (sha256(other_chain),
                           "wrong chain id 'other-chain' (this chain is 'mempool-chain')")
    assert rejected[3] == (sha256(bank_tx), "wrong app 'bank' (this chain runs 'kvstore')")
    assert rejected[4] == (sha256(good[0]), "duplicate: transaction already in the mempool")
    assert 5 not in rejected
    assert rejected[6] == (sha256(fresh), "duplicate: transaction already in the mempool")
    assert mp.stats["rejected"] == 6


def test_duplicate_of_a_committed_tx_and_stale_nonce_are_refused():
    mp = Mempool(CHAIN, "kvstore")
    w = wallet(0)
    txs = kv_txs(w, 2)
    admit(mp, txs)
    [(digest, _)] = seal(mp)
    w_pk = w.public_key
    remaining = committed(mp, [digest], [sha256(t) for t in txs], [(w_pk, 0), (w_pk, 1)])
    assert remaining == 0
    # The same signed bytes again: a replay.
    _, _, rejected = prepare(mp, [txs[1]])
    assert rejected[0] == (sha256(txs[1]), "duplicate: transaction already committed")
    # A different tx reusing a consumed nonce.
    w.nonce = 1
    reused = kv_txs(w, 1)[0]
    _, _, rejected = prepare(mp, [reused])
    assert rejected[0] == (sha256(reused), "stale nonce 1: the sender's next nonce is 2")
    # The next nonce, and a nonce ahead of it (earlier txs may still be in flight), pass.
    w.nonce = 2
    ok = kv_txs(w, 1)
    w.nonce = 5
    ahead = kv_txs(w, 1)
    assert admit(mp, ok + ahead)[1] == [[sha256(ok[0]), None], [sha256(ahead[0]), None]]


def test_mempool_full_by_count_counts_prepared_but_not_admitted_txs():
    mp = Mempool(CHAIN, "kvstore", MempoolLimits(max_txs=3))
    txs = kv_txs(wallet(0), 5)
    admit(mp, txs[:2])
    ticket, items, _ = prepare(mp, [txs[2]])   # reserved, verification in flight
    _, _, rejected = prepare(mp, [txs[3], txs[4]])
    # The reservation counts in bytes too: the report says what admission would reach.
    assert rejected[0] == (sha256(txs[3]), f"mempool full (3 txs, {len(txs[0]) * 3} bytes)")
    assert rejected[1][1].startswith("mempool full")
    msgpack.unpackb(mp.admit(ticket, verdicts(items)), raw=False)
    assert mp.size()[0] == 3


def test_mempool_full_by_bytes():
    txs = kv_txs(wallet(0), 3)
    mp = Mempool(CHAIN, "kvstore", MempoolLimits(max_bytes=2 * len(txs[0]) + 1))
    rejected, results, _ = admit(mp, txs)
    assert [r[1] for r in results] == [None, None]
    assert rejected == {2: (sha256(txs[2]), f"mempool full (2 txs, {2 * len(txs[0])} bytes)")}


def test_prepared_txs_reserve_their_bytes_until_admitted():
    txs = kv_txs(wallet(0), 3)
    mp = Mempool(CHAIN, "kvstore", MempoolLimits(max_bytes=2 * len(txs[0]) + 1))
    ticket, items, rejected = prepare(mp, txs[:2])
    assert rejected == {}
    assert prepare(mp, [txs[2]])[2][0][1].startswith("mempool full (2 txs")
    # A refused signature frees its reservation.
    mp.admit(ticket, b"\x00\x00")
    assert mp.size() == (0, 0)
    assert admit(mp, [txs[2]])[1] == [[sha256(txs[2]), None]]


def test_sealed_batches_still_count_against_the_byte_limit():
    txs = kv_txs(wallet(0), 3)
    mp = Mempool(CHAIN, "kvstore", MempoolLimits(max_bytes=2 * len(txs[0]) + 1))
    admit(mp, txs[:2])
    [(digest, encoded)] = seal(mp)
    assert mp.size() == (2, len(txs[0]) * 2)
    _, _, rejected = prepare(mp, [txs[2]])
    assert rejected[0][1].startswith("mempool full (2 txs")
    committed(mp, [digest], [sha256(t) for t in txs[:2]], [])
    assert mp.size() == (0, 0)
    assert admit(mp, [txs[2]])[1] == [[sha256(txs[2]), None]]


def test_invalid_signature_is_refused_at_admit():
    mp = Mempool(CHAIN, "kvstore")
    w = wallet(0)
    good, bad_sig = kv_txs(w, 2)
    bad = forged(bad_sig)
    rejected, results, _ = admit(mp, [good, bad])
    assert rejected == {}
    assert results == [[sha256(good), None],
                       [sha256(bad), f"invalid signature for sender {w.public_key.hex()}"]]
    assert not mp.contains(sha256(bad))
    # A verdict of 0 from the pool is final whatever the tx looks like.
    other = kv_txs(wallet(1), 1)[0]
    ticket, _, _ = prepare(mp, [other])
    results, _ = msgpack.unpackb(mp.admit(ticket, b"\x00"), raw=False)
    assert results[0][1].startswith("invalid signature")
    assert mp.size()[0] == 1


def test_admit_refuses_a_verdict_count_that_does_not_match():
    mp = Mempool(CHAIN, "kvstore")
    ticket, _, _ = prepare(mp, kv_txs(wallet(0), 2))
    try:
        mp.admit(ticket, b"\x01")
    except ValueError as exc:
        assert "1 verdicts for 2 txs" in str(exc)
    else:
        raise AssertionError("admit accepted 1 verdict for 2 txs")


# --- sealing -----------------------------------------------------------------------------


def test_seal_by_size_and_by_force():
    mp = Mempool(CHAIN, "kvstore", MempoolLimits(batch_max_txs=3))
    txs = kv_txs(wallet(0), 4) + kv_txs(wallet(1), 3)
    _, _, full = admit(mp, txs)
    assert full is True
    sealed = seal(mp, force=False)
    assert len(sealed) == 2           # two full batches; one tx waits for the timer
    assert mp.size()[0] == 7
    rest = seal(mp, force=False)
    assert rest == []
    forced = seal(mp, force=True)
    assert len(forced) == 1
    batches = [decode_batch(e) for _, e in sealed + forced]
    assert [list(b.txs) for b in batches] == [txs[0:3], txs[3:6], txs[6:7]]
    for (digest, encoded), batch in zip(sealed + forced, batches, strict=True):
        assert digest == Batch(batch.txs).digest() == merkle_root([sha256(t) for t in batch.txs])
        assert encoded == batch.encode()
    assert seal(mp, force=True) == []
    got = msgpack.unpackb(mp.get_batches([d for d, _ in sealed + forced]), raw=False)
    assert got == [[e, b"\x01" * len(b.txs)] for (_, e), b in zip(sealed + forced, batches,
                                                                 strict=True)]
    assert mp.uncommitted_digests() == [d for d, _ in sealed + forced]
    assert mp.stats["sealed_batches"] == 3


def test_seal_splits_by_bytes():
    txs = kv_txs(wallet(0), 5, size=100)
    # batch_max_bytes counts each tx as encoded in the batch, msgpack header included.
    mp = Mempool(CHAIN, "kvstore", MempoolLimits(batch_max_bytes=2 * len(msgpack.packb(txs[0]))))
    admit(mp, txs)
    sizes = [len(decode_batch(e).txs) for _, e in seal(mp)]
    assert sizes == [2, 2, 1]


def test_sealed_batch_of_small_txs_stays_within_batch_max_bytes():
    # Raw sizes alone would let 10 txs in; their msgpack headers push the tenth out, and
    # a batch of many small txs would otherwise outgrow the frame room the config leaves.
    txs = kv_txs(wallet(0), 30, size=1)
    limit = 10 * len(txs[0])
    mp = Mempool(CHAIN, "kvstore", MempoolLimits(batch_max_bytes=limit))
    admit(mp, txs)
    batches = [decode_batch(e).txs for _, e in seal(mp)]
    assert sum(len(b) for b in batches) == 30
    assert all(sum(len(msgpack.packb(t)) for t in b) <= limit for b in batches)
    assert len(batches[0]) == 9


def test_peer_batch_over_the_protocol_limit_is_refused_whatever_the_frame_size():
    # A node with larger frames still refuses what every executor would refuse.
    mp = Mempool(CHAIN, "kvstore", MempoolLimits(max_batch_bytes=2 * DEFAULT_MAX_BATCH_BYTES))
    assert mp.limits.max_batch_bytes == DEFAULT_MAX_BATCH_BYTES
    huge = Batch((b"\x01" * (DEFAULT_MAX_BATCH_BYTES + 1),)).encode()
    ticket, _digest, _items, reason = prepare_batch(mp, huge)
    assert ticket is None and reason.startswith("malformed batch")


# --- peer batches ------------------------------------------------------------------------


def prepare_batch(mp: Mempool, encoded: bytes) -> tuple[int | None, bytes | None, list, str | None]:
    ticket, digest, items, reason = msgpack.unpackb(mp.prepare_batch(encoded), raw=False)
    return ticket, digest, items, reason


def test_peer_batch_is_verified_stored_and_served_in_order():
    peer = Mempool(CHAIN, "kvstore")
    txs = kv_txs(wallet(0), 3)
    admit(peer, txs)
    [(digest, encoded)] = seal(peer)
    mp = Mempool(CHAIN, "kvstore")
    own = kv_txs(wallet(1), 1)
    admit(mp, own)
    [(own_digest, own_encoded)] = seal(mp)
    ticket, d, items, reason = prepare_batch(mp, encoded)
    assert (d, reason) == (digest, None) and ticket is not None
    assert items[0] == [wallet(0).public_key] * 3
    assert mp.admit_batch(ticket, verdicts(items)) == digest
    assert mp.has_batches([digest, own_digest, bytes(32)]) == [True, True, False]
    got = msgpack.unpackb(mp.get_batches([bytes(32), digest, own_digest]), raw=False)
    assert got == [None, [encoded, b"\x01\x01\x01"], [own_encoded, b"\x01"]]
    assert all(mp.contains(sha256(t)) for t in txs)
    assert mp.size()[0] == 4
    assert mp.stats["remote_batches"] == 1
    # Known now: nothing to verify a second time.
    assert prepare_batch(mp, encoded) == (None, digest, [[], [], []], None)


def test_peer_batch_with_a_bad_signature_keeps_the_tx_and_stores_its_verdict():
    w = wallet(0)
    txs = kv_txs(w, 3)
    txs[1] = forged(txs[1])
    other_chain = kv_txs(wallet(1), 1, chain="other-chain")[0]
    digest, encoded = peer_batch(txs + [other_chain])
    mp = Mempool(CHAIN, "kvstore")
    ticket, _, items, _ = prepare_batch(mp, encoded)
    # Sign bytes are built for THIS chain: a tx signed for another chain fails too.
    v = verdicts(items)
    assert v == b"\x01\x00\x01\x00"
    mp.admit_batch(ticket, v)
    [[stored, stored_verdicts]] = msgpack.unpackb(mp.get_batches([digest]), raw=False)
    assert stored == encoded and stored_verdicts == v


def test_malformed_peer_batches_are_refused_with_a_reason():
    mp = Mempool(CHAIN, "kvstore")
    ticket, digest, items, reason = prepare_batch(mp, b"\xc1not msgpack")
    assert ticket is None and digest is None and reason.startswith("malformed batch:")
    ticket, digest, _, reason = prepare_batch(mp, Batch((b"\x01\x02",)).encode())
    assert ticket is None and digest is not None
    assert reason.startswith("batch tx 0 is malformed:")
    ticket, _, _, reason = prepare_batch(mp, msgpack.packb([65, []]))
    assert ticket is None and "no transactions" in reason
    assert mp.size() == (0, 0)


def test_peer_batch_replaces_our_pending_copies_of_its_txs():
    w = wallet(0)
    txs = kv_txs(w, 2)
    mp = Mempool(CHAIN, "kvstore")
    admit(mp, txs)
    _, encoded = peer_batch([txs[0]])
    ticket, _, items, _ = prepare_batch(mp, encoded)
    mp.admit_batch(ticket, verdicts(items))
    [(_, mine)] = seal(mp)
    assert list(decode_batch(mine).txs) == [txs[1]]   # txs[0] is not included twice
    assert mp.size() == (2, len(txs[0]) + len(txs[1]))


def test_a_peer_batch_committed_while_being_verified_is_not_stored_again():
    _, encoded = peer_batch(kv_txs(wallet(0), 2))
    mp = Mempool(CHAIN, "kvstore")
    # The same batch arrives twice (gossip and a fetch answer) before either is verified.
    first = prepare_batch(mp, encoded)
    second = prepare_batch(mp, encoded)
    assert first[0] is not None and second[0] is not None
    digest = mp.admit_batch(first[0], verdicts(first[2]))
    hashes = decode_batch(encoded).tx_hashes()
    committed(mp, [digest], hashes, [(wallet(0).public_key, 0), (wallet(0).public_key, 1)])
    assert mp.admit_batch(second[0], verdicts(second[2])) == digest
    assert mp.has_batches([digest]) == [False]
    assert mp.uncommitted_digests() == []
    assert mp.size() == (0, 0)
    assert not any(mp.contains(h) for h in hashes)


# --- commit ------------------------------------------------------------------------------


def test_committed_forgets_txs_and_batches_and_advances_nonces():
    a, b = wallet(0), wallet(1)
    mp = Mempool(CHAIN, "kvstore", MempoolLimits(batch_max_txs=2))
    a_txs = kv_txs(a, 2)
    b_txs = kv_txs(b, 2)
    admit(mp, a_txs + b_txs)
    (d1, _), (d2, _) = seal(mp)
    late = kv_txs(a, 1)
    admit(mp, late)
    assert mp.size()[0] == 5
    remaining = committed(mp, [d1], [sha256(t) for t in a_txs],
                          [(a.public_key, 0), (a.public_key, 1)])
    assert remaining == 3 == mp.size()[0]
    assert mp.has_batches([d1, d2]) == [False, True]
    assert msgpack.unpackb(mp.get_batches([d1]), raw=False) == [None]
    assert not mp.contains(sha256(a_txs[0])) and mp.contains(sha256(b_txs[0]))
    assert mp.contains(sha256(late[0]))
    assert mp.uncommitted_digests() == [d2]
    # A committed batch is known: a peer re-sending it is not verified again.
    _, encoded = peer_batch(a_txs)
    assert prepare_batch(mp, encoded)[0] is None
    # Nonces only move forward, whatever order the reports come in.
    committed(mp, [], [], [(a.public_key, 0)])
    a.nonce = 1
    stale = kv_txs(a, 1)[0]
    assert prepare(mp, [stale])[2][0][1] == "stale nonce 1: the sender's next nonce is 2"
    # A pending (unsealed) tx named by a block is dropped from the pending queue too.
    remaining = committed(mp, [], [sha256(late[0])], [(a.public_key, 2)])
    assert remaining == 2 and not mp.contains(sha256(late[0]))
    assert seal(mp) == []


def test_contains_and_size_track_every_stage():
    mp = Mempool(CHAIN, "kvstore")
    txs = kv_txs(wallet(0), 2)
    h = sha256(txs[0])
    assert not mp.contains(h) and mp.size() == (0, 0)
    ticket, items, _ = prepare(mp, txs)
    assert not mp.contains(h)
    mp.admit(ticket, verdicts(items))
    assert mp.contains(h)
    [(digest, _)] = seal(mp)
    assert mp.contains(h) and mp.size()[0] == 2
    committed(mp, [digest], [sha256(t) for t in txs], [])
    assert not mp.contains(h) and mp.size() == (0, 0)


def test_many_peer_batches_are_received_in_one_call():
    good_digest, good = peer_batch(kv_txs(wallet(0), 2))
    bad_digest, bad = forged_batch(wallet(1), 2, 0)
    mp = Mempool(CHAIN, "kvstore")
    admit(mp, kv_txs(wallet(2), 1))
    [(own_digest, own)] = seal(mp)
    outcomes = receive(mp, [(good, False), (b"\xc1junk", False), (own, False), (bad, False)])
    # One outcome per input, in order. The gossiped bad batch is refused.
    assert [o[0] for o in outcomes] == [good_digest, None, own_digest, bad_digest]
    assert outcomes[0][1] == "stored" and outcomes[2][1] == "known"
    assert outcomes[1][1].startswith("malformed: malformed batch:")
    assert outcomes[3][1] == "bad_signature"
    # Each with the tx count of the batch this mempool now holds (0: none held).
    assert [o[2] for o in outcomes] == [2, 0, 1, 0]
    # One verification for the two batches still to verify, none for the known one.
    assert mp.verify_stats()[0] == 4
    assert mp.has_batches([good_digest, bad_digest]) == [True, False]
    # Named by a proposal (fetching), the same bad batch is held, never proposed.
    outcomes = receive(mp, [(bad, False)], [bad_digest])
    assert outcomes == [[bad_digest, "held", 2]]
    [[_encoded, verdicts]] = msgpack.unpackb(mp.get_batches([bad_digest]), raw=False)
    assert verdicts == b"\x00\x01"


def test_copies_of_a_batch_in_one_call_are_verified_once():
    digest, encoded = peer_batch(kv_txs(wallet(0), 3))
    mp = Mempool(CHAIN, "kvstore")
    outcomes = receive(mp, [(encoded, False), (encoded, True), (encoded, False)])
    assert outcomes == [[digest, "stored", 3], [digest, "known", 3], [digest, "known", 3]]
    assert mp.verify_stats()[0] == 3
    assert mp.size()[0] == 3


def test_a_requested_copy_stores_a_batch_its_gossiped_copy_in_the_same_call_would_not():
    # The gossiped copy comes first and has a failed signature: alone it is refused. The
    # copy a proposal asked for, later in the same call, makes it held (verified once).
    digest, encoded = forged_batch(wallet(0), 2, 1)
    mp = Mempool(CHAIN, "kvstore")
    outcomes = receive(mp, [(encoded, False), (encoded, True)])
    assert outcomes == [[digest, "held", 2], [digest, "held", 2]]
    assert mp.verify_stats()[0] == 2
    # Gossiped twice and asked for by no one: refused, each copy alike, verified once more.
    other_digest, other = forged_batch(wallet(1), 2, 0)
    outcomes = receive(mp, [(other, False), (other, False)])
    assert outcomes == [[other_digest, "bad_signature", 0], [other_digest, "bad_signature", 0]]
    assert mp.verify_stats()[0] == 4


def test_a_later_copy_of_a_held_batch_stays_held():
    # A held batch (a failed signature, stored because a proposal named it) must never
    # become proposable: a gossiped copy arriving later is answered "held", not "known",
    # which the supervisor would hand to consensus as ready to propose.
    digest, encoded = forged_batch(wallet(0), 2, 0)
    mp = Mempool(CHAIN, "kvstore")
    first = receive(mp, [(encoded, True)])
    again = receive(mp, [(encoded, False)])
    assert first == again == [[digest, "held", 2]]
    assert mp.verify_stats()[0] == 2   # the later copy is not verified again


def test_a_peer_batch_is_not_held_to_this_nodes_client_tx_limit():
    # [mempool] max_tx_bytes is a node's admission setting: a validator with a smaller one
    # must still store (and so be able to vote on and execute) a batch a peer admitted.
    big = kv_txs(wallet(0), 1, size=2000)
    digest, encoded = peer_batch(big)
    mp = Mempool(CHAIN, "kvstore", MempoolLimits(max_tx_bytes=1000))
    assert msgpack.unpackb(mp.prepare(msgpack.packb(big)), raw=False)[2][0][2].startswith(
        "malformed transaction:")
    ticket, d, items, reason = prepare_batch(mp, encoded)
    assert reason is None and d == digest
    assert mp.admit_batch(ticket, verdicts(items)) == digest


def test_intake_verifies_txs_and_peer_batches_together_and_seals_the_round():
    peer_digest, peer_encoded = peer_batch(kv_txs(wallet(0), 2))
    mine = kv_txs(wallet(1), 3)
    mine[1] = forged(mine[1])
    mp = Mempool(CHAIN, "kvstore")
    answers, sealed, outcomes = msgpack.unpackb(mp.intake(msgpack.packb(
        [mine + [b"junk"], [[peer_encoded, False], [b"\xc1", False]], []])), raw=False)
    assert [reason for _h, reason in answers][0] is None
    assert answers[1][1].startswith("invalid signature")
    assert answers[2][1] is None and answers[3][1].startswith("malformed")
    # The round's admitted txs are one sealed batch; the peer's batch is stored.
    [(digest, encoded, count)] = sealed
    assert list(decode_batch(encoded).txs) == [mine[0], mine[2]] and count == 2
    assert outcomes[0] == [peer_digest, "stored", 2]
    assert outcomes[1][0] is None and outcomes[1][1].startswith("malformed")
    assert mp.has_batches([digest, peer_digest]) == [True, True]
    assert mp.verify_stats()[0] == 3 + 2
    # Nothing left pending; an empty round is harmless.
    assert msgpack.unpackb(mp.intake(msgpack.packb([[], [], []])), raw=False) == [[], [], []]


class _GatedWorker(VerifierWorker):
    """A real verifier that holds each call until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def verify(self, packed: bytes) -> bytes:
        self.entered.set()
        assert self.gate.wait(10), "the test never opened the gate"
        return super().verify(packed)


def test_commit_pipeline_calls_do_not_wait_for_an_intake_verifying():
    """The lock is let go during verification: get_batches and committed answer at once,
    and a peer batch committed meanwhile is not stored again when its check ends."""
    assert Mempool.CONCURRENCY > 1
    mp = Mempool(CHAIN, "kvstore")
    first = kv_txs(wallet(0), 3)
    [(sealed_digest, _, _)] = msgpack.unpackb(mp.intake(msgpack.packb([first, [], []])),
                                              raw=False)[1]
    worker = _GatedWorker()
    mp._pool = VerifierPool([worker])
    peer_digest, peer_encoded = peer_batch(kv_txs(wallet(1), 2))
    later = kv_txs(wallet(2), 2)
    out: list = []
    t = threading.Thread(target=lambda: out.append(msgpack.unpackb(mp.intake(msgpack.packb(
        [later, [[peer_encoded, False]], []])), raw=False)))
    t.start()
    try:
        assert worker.entered.wait(10)
        # The intake is inside its verification, holding no lock.
        [got] = msgpack.unpackb(mp.get_batches([sealed_digest]), raw=False)
        assert got is not None and list(decode_batch(got[0]).txs) == first
        hashes = [sha256(raw) for raw in first] + decode_batch(peer_encoded).tx_hashes()
        assert committed(mp, [sealed_digest, peer_digest], hashes, []) == 0
        assert not worker.gate.is_set() and t.is_alive()
    finally:
        worker.gate.set()
        t.join(10)
    answers, sealed, outcomes = out[0]
    assert [reason for _h, reason in answers] == [None, None]
    assert len(sealed) == 1 and list(decode_batch(sealed[0][1]).txs) == later
    # Committed while it was being verified: not resurrected in the mempool.
    assert outcomes[0][0] == peer_digest
    assert mp.has_batches([peer_digest, sealed_digest]) == [False, False]
    assert mp.size()[0] == 2
