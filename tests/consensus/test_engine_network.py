"""Whole runs of a few engines over the in-test pump: the happy path, a crashed proposer,
a lossy network, missing payloads, weighted power, and the speed budget."""

from __future__ import annotations

import random
import time

from consensus_harness import CHAIN, Net, Solo, sent, sent_votes

from consensus import BlockCheck, Decide, FetchPayload, Proposal, Step, VoteKind

PV = VoteKind.PREVOTE


def assert_agreement(net: Net, nodes: list[int] | None = None) -> None:
    nodes = nodes if nodes is not None else list(range(len(net.engines)))
    chains = [[b.hash() for b in net.decided[i]] for i in nodes]
    shortest = min(len(c) for c in chains)
    assert shortest > 0
    assert all(c[:shortest] == chains[0][:shortest] for c in chains)
    for i in nodes:
        prev = bytes(32)
        for height, block in enumerate(net.decided[i], start=1):
            assert block.header.height == height and block.header.prev_block_hash == prev
            prev = block.hash()


def test_four_validators_decide_ten_heights_in_round_zero():
    net = Net(4)
    net.start()
    net.run(11)
    assert_agreement(net)
    for i in range(4):
        decides = net.outputs(i, Decide)
        assert all(d.certificate.round == 0 for d in decides)
        for d in decides:
            d.certificate.verify(CHAIN, net.vset)
    # proposers rotate: heights 1..4 were proposed by validators 1, 2, 3, 0
    assert [net.vset.index_of(b.header.proposer) for b in net.decided[0][:4]] == [1, 2, 3, 0]


def test_crashed_proposer_costs_one_round():
    net = Net(4)
    net.down = {1}                             # proposer of height 1 round 0
    net.start([0, 2, 3])
    net.run(2)
    for i in (0, 2, 3):
        (first, *_) = net.outputs(i, Decide)
        assert first.certificate.round == 1
    assert_agreement(net, [0, 2, 3])
    assert net.now >= 1000                     # it waited for the propose timeout


def test_lossy_network_still_decides_with_agreement():
    rng = random.Random(7)
    net = Net(4)
    net.drop = lambda src, dst, msg: rng.random() < 0.3
    net.start()
    net.run(6, max_events=200_000)
    assert_agreement(net)


def test_network_that_loses_everything_for_a_while_recovers():
    net = Net(4)
    net.drop = lambda src, dst, msg: True
    net.start()
    for _ in range(12):                        # several rounds of silence
        net.deliver_all()
        net.fire_next_timer()
    assert all(e.height == 1 for e in net.engines)
    net.drop = None
    net.run(4)
    assert_agreement(net)


def test_weighted_power_decides():
    net = Net(4, powers=[1, 1, 1, 4])          # quorum 5: validator 3 plus any other
    net.down = {0, 1}
    net.start([2, 3])
    net.run(4)
    assert_agreement(net, [2, 3])


def test_missing_payload_is_fetched_and_blocks_the_prevote_until_it_arrives():
    s = Solo()
    s.start()
    b = s.block()
    s.source.default = BlockCheck.MISSING
    outs = s.propose(0, b)
    assert [o.block for o in outs if isinstance(o, FetchPayload)] == [b]
    assert sent_votes(outs, PV) == []
    assert s.engine.on_payload_available() == [FetchPayload(b)]  # still missing: ask again
    s.source.default = BlockCheck.VALID
    outs = s.engine.on_payload_available()
    assert sent_votes(outs, PV) == [(1, 0, b.hash())]


def test_timers_keep_running_while_a_payload_is_missing():
    s = Solo()
    s.start()
    s.source.default = BlockCheck.MISSING
    b = s.block()
    s.propose(0, b)
    outs = s.timeout(0, Step.PROPOSE)
    assert sent_votes(outs, PV) == [(1, 0, None)]
    # once the block matters again (a polka for it), the fetch is asked for again
    outs = s.votes(PV, 0, b.hash(), [1, 2, 3])
    assert [o.block for o in outs if isinstance(o, FetchPayload)] == [b]


def test_missing_payload_blocks_the_decision_until_it_arrives():
    net = Net(4)
    net.sources[0].default = BlockCheck.MISSING
    net.start()
    net.run(2, nodes=[1, 2, 3])
    assert net.engines[0].height == 1 and net.outputs(0, FetchPayload)
    net.sources[0].default = BlockCheck.VALID
    net.handle(0, net.engines[0].on_payload_available())
    assert net.engines[0].height == 2
    assert_agreement(net)


def test_simulated_throughput_with_real_signatures():
    """The simulator needs >= 300 heights/s for 4 validators on one core; the engine's
    share must leave room for it. Loose bound here: the machine is shared."""
    net = Net(4)
    net.start()
    t0 = time.process_time()  # CPU time: other work on a shared machine does not count
    net.run(101)
    rate = 100 / (time.process_time() - t0)
    assert_agreement(net)
    assert rate > 150, f"{rate:.0f} heights/s"
    assert len(sent(net.log[0], Proposal)) == 25
