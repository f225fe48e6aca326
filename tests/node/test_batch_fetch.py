"""DeferredFetches (node/batch_fetch.py): a fetch for batches a proposal names waits
for the peer batches queued before it, and asks only for what is still missing."""

from __future__ import annotations

from node.batch_fetch import DeferredFetches

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32
PEER = b"p" * 32


def test_nothing_queued_ahead_means_due_at_once() -> None:
    f = DeferredFetches()
    f.add([A, B], PEER)
    assert f.due() == [([A, B], PEER)]
    assert f.due() == [] and len(f) == 0


def test_waits_for_the_batches_received_before_it() -> None:
    f = DeferredFetches()
    f.received += 2                 # two peer batches queued for the mempool
    f.add([A, B], PEER)
    f.received += 1                 # one more after the fetch: not waited for
    assert f.due() == []
    f.processed += 1
    assert f.due() == [], "one batch queued before the fetch is not through yet"
    f.processed += 1
    assert f.due() == [([A, B], PEER)]


def test_asks_only_for_what_is_still_missing() -> None:
    f = DeferredFetches()
    f.received += 3
    f.add([A, B], PEER)
    f.add([C], None)
    f.arrived([A])                  # the mempool stored A meanwhile
    f.processed += 3
    assert f.due() == [([B], PEER), ([C], None)]


def test_nothing_sent_when_everything_arrived() -> None:
    f = DeferredFetches()
    f.received += 1
    f.add([A], PEER)
    f.arrived([A])
    f.processed += 1
    assert f.due() == [] and len(f) == 0


def test_fetches_are_due_in_order() -> None:
    f = DeferredFetches()
    f.add([A], PEER)                # nothing ahead of it
    f.received += 1
    f.add([B], PEER)                # one batch ahead of it
    assert f.due() == [([A], PEER)]
    f.processed += 1
    assert f.due() == [([B], PEER)]
