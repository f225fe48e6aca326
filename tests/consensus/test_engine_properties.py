"""Property tests: whatever the delivery order, loss and timer interleaving, correct
validators never decide different blocks, and with eventual delivery they all decide."""

from __future__ import annotations

import random

from consensus_harness import CHAIN, Net, signed_vote
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus import Broadcast, EvidenceFound, Vote

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def run_shuffled(net: Net, rng: random.Random, height: int, max_events: int = 20_000,
                 loss: float = 0.0, early_timer: float = 0.05, gst: int = 3_000) -> None:
    """Deliver queued messages in random order until every live node reached `height`.

    Before `gst` events, some messages are lost and timers fire now and then even while
    messages are pending (arbitrary delays); after it, nothing is lost and a timer fires
    only once the queue is empty (the network is synchronous again).
    """
    live = [i for i in range(len(net.engines)) if i not in net.down]
    for event in range(max_events):
        if all(net.engines[i].height >= height for i in live):
            return
        stable = event >= gst
        if net.queue and (stable or rng.random() >= early_timer):
            index = rng.randrange(len(net.queue))
            if not stable and rng.random() < loss:
                del net.queue[index]
            else:
                net.deliver_one(index)
        elif not net.fire_next_timer() and not net.queue:
            break
    raise AssertionError(f"no progress: heights {[e.height for e in net.engines]}")


def decided_chains(net: Net, nodes: list[int]) -> list[list[bytes]]:
    return [[b.hash() for b in net.decided[i]] for i in nodes]


def assert_same_prefix(chains: list[list[bytes]]) -> None:
    for a in chains:
        for b in chains:
            n = min(len(a), len(b))
            assert a[:n] == b[:n]


@SETTINGS
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_any_delivery_order_decides_the_same_blocks(seed):
    rng = random.Random(seed)
    net = Net(4)
    net.start()
    run_shuffled(net, rng, height=3)
    chains = decided_chains(net, [0, 1, 2, 3])
    assert all(len(c) >= 2 for c in chains)
    assert_same_prefix(chains)
    for i in range(4):
        block, cert = net.engines[i].decided(1)
        cert.verify(CHAIN, net.vset)


@SETTINGS
@given(seed=st.integers(min_value=0, max_value=2**32 - 1),
       loss=st.sampled_from([0.1, 0.3]))
def test_loss_and_reordering_keep_agreement_and_progress(seed, loss):
    rng = random.Random(seed)
    net = Net(4)
    net.start()
    run_shuffled(net, rng, height=3, loss=loss, max_events=60_000)
    assert_same_prefix(decided_chains(net, [0, 1, 2, 3]))


@SETTINGS
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_an_equivocating_validator_cannot_split_the_others(seed):
    """Validator 3 sends a different vote to each peer (its own, one for nil, and one
    for a made-up block); the three correct ones still agree and report evidence."""
    rng = random.Random(seed)
    net = Net(4)
    byz = 3
    key = net.keys[byz]
    both: set[int] = set()

    def drop(src: int, dst: int, msg) -> bool:
        if src != byz or not isinstance(msg, Vote) or msg.validator != key.public_key:
            return False  # (validator 3 also relays others' votes: those pass untouched)
        if dst == 1:
            alt = signed_vote(key, msg.kind, msg.height, msg.round, None)
        elif dst == 2:
            alt = signed_vote(key, msg.kind, msg.height, msg.round, b"\x0b" * 32)
        else:
            return False
        net.handle(dst, net.engines[dst].on_message(alt))
        if rng.random() < 0.5:  # and sometimes the real one too: equivocation seen
            e = net.engines[dst]
            if (alt.block_hash != msg.block_hash and e.height == msg.height
                    and e.round >= msg.round):  # a real conflict, not a bounded future round
                both.add(dst)
            return False
        return True

    net.drop = drop
    net.start()
    run_shuffled(net, rng, height=3, max_events=40_000)
    assert_same_prefix(decided_chains(net, [0, 1, 2]))
    for i in both:
        found = [o.evidence for o in net.log[i] if isinstance(o, EvidenceFound)]
        assert found and all(e.validator == key.public_key for e in found)
        found[0].verify(CHAIN, net.vset)
    for i in (0, 1, 2):  # correct validators never sign two values (they may relay others')
        signed: dict[tuple, bytes | None] = {}
        for o in net.log[i]:
            if isinstance(o, Broadcast) and isinstance(o.message, Vote):
                v = o.message
                if v.validator == net.keys[i].public_key:
                    assert signed.setdefault((v.kind, v.height, v.round), v.block_hash) == v.block_hash
