"""VerifierPool and VerifierWorker (node/actors/verifier_pool.py) hosted by the in-process
runtime: real Ed25519 signatures, verdicts in input order, splitting over workers."""

from __future__ import annotations

import msgpack
import pytest

from crypto import PrivateKey, verifier_backend
from node.actors.verifier_pool import VerifierPool, VerifierWorker
from node.runtime import InProcessRuntime

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


@pytest.fixture
async def runtime():
    rt = InProcessRuntime()
    yield rt
    await rt.shutdown()


def spawn_pool(rt: InProcessRuntime, k: int) -> tuple[VerifierPool, list]:
    workers = [rt.spawn(f"verifier-{i}", VerifierWorker, 1) for i in range(k)]
    return VerifierPool(workers), workers


async def test_verdicts_in_order_for_valid_and_invalid_signatures(runtime):
    pool, workers = spawn_pool(runtime, 2)
    pks, msgs, sigs, expected = signed_items(20, bad={0, 5, 6, 11, 19})
    assert await pool.verify(pks, msgs, sigs) == expected
    assert pool.verified == 20
    # A small batch goes whole to one worker, the next one to the other.
    assert [await w.call("stats") for w in workers][0][0] == 20
    assert await pool.verify(pks[:3], msgs[:3], sigs[:3]) == expected[:3]
    assert [(await w.call("stats"))[0] for w in workers] == [20, 3]
    assert await workers[0].call("backend") == verifier_backend()


async def test_a_large_batch_is_split_over_the_workers_and_joined_in_order(runtime):
    pool, workers = spawn_pool(runtime, 2)
    n = 601  # >= 512 splits; odd, so the halves differ in size
    bad = {0, 1, 2, 3, 299, 300, 301, 302, 597, 598, 599, 600}
    pks, msgs, sigs, expected = signed_items(n, bad)
    assert await pool.verify(pks, msgs, sigs) == expected
    assert [(await w.call("stats"))[0] for w in workers] == [301, 300]
    assert pool.verified == n and pool.seconds > 0


async def test_split_over_three_workers(runtime):
    pool, workers = spawn_pool(runtime, 3)
    pks, msgs, sigs, expected = signed_items(512, bad={170, 171, 342, 511})
    assert await pool.verify(pks, msgs, sigs) == expected
    assert [(await w.call("stats"))[0] for w in workers] == [171, 171, 170]


async def test_empty_input_calls_no_worker(runtime):
    pool, workers = spawn_pool(runtime, 2)
    assert await pool.verify([], [], []) == []
    assert [(await w.call("stats"))[0] for w in workers] == [0, 0]
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
