"""VerifierPool and VerifierWorker (node/actors/verifier_pool.py) as plain classes: real
Ed25519 signatures, verdicts in input order, splitting over workers. The Ray path (the
mempool actor calling worker actors) runs in tests/integration/test_ray_placement.py."""

from __future__ import annotations

import msgpack
import pytest

from crypto import PrivateKey, verifier_backend
from node.actors.verifier_pool import VerifierPool, VerifierWorker

KEYS = [PrivateKey.from_seed(bytes([i + 1]) * 32) for i in range(8)]


def signed_items(n: int, bad: set[int]) -> tuple[list[bytes], list[bytes], list[bytes], list[bool]]:
    """n (pk, msg, sig) triples; those at the indexes in `bad` fail in varied ways."""
    pks, msgs, sigs, expected = [], [], [], []
    for i in range(n):
        key = KEYS[i % len(KEYS)]
        msg = b"message %d" % i
        pk, sig = key.public_key, key.sign(msg)
        if i in bad:
            kind = i % 4
            if kind == 0:
                sig = bytes([sig[0] ^ 0x80]) + sig[1:]          # flipped bit
            elif kind == 1:
                pk = KEYS[(i + 1) % len(KEYS)].public_key        # another signer
            elif kind == 2:
                msg += b"!"                                      # another message
            else:
                sig = sig[:63]                                   # wrong length: False, no crash
        pks.append(pk)
        msgs.append(msg)
        sigs.append(sig)
        expected.append(i not in bad)
    return pks, msgs, sigs, expected


def spawn_pool(k: int) -> tuple[VerifierPool, list[VerifierWorker]]:
    workers = [VerifierWorker(1) for _ in range(k)]
    return VerifierPool(workers), workers


def bools(verdicts: bytes) -> list[bool]:
    return [b == 1 for b in verdicts]


def test_verdicts_in_order_for_valid_and_invalid_signatures():
    pool, workers = spawn_pool(2)
    pks, msgs, sigs, expected = signed_items(20, bad={0, 5, 6, 11, 19})
    assert bools(pool.verify(pks, msgs, sigs)) == expected
    assert pool.verified == 20
    # A small batch goes whole to one worker, the next one to the other.
    assert workers[0].stats()[0] == 20
    assert bools(pool.verify(pks[:3], msgs[:3], sigs[:3])) == expected[:3]
    assert [w.stats()[0] for w in workers] == [20, 3]
    assert workers[0].backend() == verifier_backend()


def test_a_large_batch_is_split_over_the_workers_and_joined_in_order():
    pool, workers = spawn_pool(2)
    n = 601  # >= 512 splits; odd, so the halves differ in size
    bad = {0, 1, 2, 3, 299, 300, 301, 302, 597, 598, 599, 600}
    pks, msgs, sigs, expected = signed_items(n, bad)
    assert bools(pool.verify(pks, msgs, sigs)) == expected
    assert [w.stats()[0] for w in workers] == [301, 300]
    assert pool.verified == n and pool.seconds > 0


def test_split_over_three_workers():
    pool, workers = spawn_pool(3)
    pks, msgs, sigs, expected = signed_items(512, bad={170, 171, 342, 511})
    assert bools(pool.verify(pks, msgs, sigs)) == expected
    assert [w.stats()[0] for w in workers] == [171, 171, 170]


def test_calls_are_started_on_every_worker_before_any_is_awaited():
    started: list[int] = []

    def submit(worker: VerifierWorker, packed: bytes) -> tuple[VerifierWorker, bytes]:
        started.append(id(worker))
        return worker, packed

    def gather(calls: list) -> list[bytes]:
        assert len(started) == len(calls) == 2   # both submitted first, as ray.get needs
        return [worker.verify(packed) for worker, packed in calls]

    workers = [VerifierWorker(1), VerifierWorker(1)]
    pool = VerifierPool(workers, submit, gather)
    pks, msgs, sigs, expected = signed_items(600, bad={7, 450})
    assert bools(pool.verify(pks, msgs, sigs)) == expected


def test_empty_input_calls_no_worker():
    pool, workers = spawn_pool(2)
    assert pool.verify([], [], []) == b""
    assert [w.stats()[0] for w in workers] == [0, 0]
    assert pool.verified == 0


def test_a_pool_needs_a_worker():
    with pytest.raises(ValueError, match="at least one worker"):
        VerifierPool([])


def test_worker_plain_class_answers_a_packed_bitmap():
    pks, msgs, sigs, expected = signed_items(6, bad={2, 3})
    worker = VerifierWorker(threads=1)
    assert worker.verify(msgpack.packb([pks, msgs, sigs])) == bytes(expected)
    assert worker.verify(msgpack.packb([[], [], []])) == b""
    assert worker.stats()[0] == 6
