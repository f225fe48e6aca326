"""PeerNetwork over real TCP on 127.0.0.1: links, identities, queues, faults."""

from __future__ import annotations

import asyncio

import pytest

import node.p2p
from crypto.keys import PrivateKey
from node.p2p import REJECTION_REASONS, NetworkConfig, PeerAddress, PeerNetwork, transport

pytestmark = pytest.mark.timeout(20)


def test_public_api_is_reexported():
    for name in node.p2p.__all__:
        assert getattr(node.p2p, name) is not None
    assert {"PeerNetwork", "NetworkConfig", "PeerAddress"} <= set(node.p2p.__all__)


async def test_listener_binds_loopback_only_by_default(cluster):
    a = await cluster.node()
    host, port = a.net.listen_address
    assert host == "127.0.0.1" and port > 0
    assert a.net.config.host == "127.0.0.1"


async def test_link_comes_up_with_both_identities_and_carries_messages(cluster, until):
    ka, kb = PrivateKey.generate(), PrivateKey.generate()
    b = await cluster.node(kb, allowed={ka.public_key})
    a = await cluster.node(ka, peers=(b.address,))
    await until(lambda: a.net.connected_peers() == [kb.public_key]
                and b.net.connected_peers() == [ka.public_key], what="link a<->b")
    [la], [lb] = a.net.links(), b.net.links()
    assert la.outbound and not lb.outbound
    assert la.local == lb.remote and la.remote == lb.local
    assert a.net.send(b.pk, b"ping") and b.net.send(a.pk, b"pong")
    await until(lambda: b.received() == [b"ping"] and a.received() == [b"pong"])
    assert b.inbox == [(a.pk, b"ping")]
    assert all(v == 0 for v in a.net.rejections().values())
    assert set(a.net.rejections()) == set(REJECTION_REASONS)


async def test_async_on_message_is_awaited_in_order(cluster, until):
    got: list[bytes] = []

    async def slow_handler(pk: bytes, payload: bytes) -> None:
        await asyncio.sleep(0.001)
        got.append(payload)

    ka = PrivateKey.generate()
    b = await cluster.node(allowed={ka.public_key}, start=False)
    b.net._on_message = slow_handler
    await b.net.start()
    a = await cluster.node(ka, peers=(b.address,))
    for i in range(50):
        a.net.send(b.pk, b"%d" % i)
    await until(lambda: len(got) == 50)
    assert got == [b"%d" % i for i in range(50)]


async def test_listener_refuses_an_identity_it_does_not_know(cluster, until):
    stranger = PrivateKey.generate()
    b = await cluster.node(allowed=set())
    a = await cluster.node(stranger, peers=(b.address,), allowed={b.pk})
    await until(lambda: b.net.rejections()["unknown_peer"] >= 1, what="listener refusal")
    # The dialer learns it was refused during the handshake, not as a live link.
    await until(lambda: a.net.rejections()["bad_handshake"] >= 1, what="dialer notices")
    assert a.net.connected_peers() == [] and b.net.connected_peers() == []


async def test_dialer_refuses_a_listener_it_does_not_know(cluster, until):
    ka = PrivateKey.generate()
    impostor = await cluster.node(allowed={ka.public_key})
    # a expects some validator at that address, but an unknown key answers.
    a = await cluster.node(ka, peers=(impostor.address,), allowed=set())
    await until(lambda: a.net.rejections()["unknown_peer"] >= 1, what="dialer refusal")
    assert a.net.connected_peers() == [] and impostor.net.connected_peers() == []


async def test_send_to_a_peer_outside_the_allow_list_is_refused(cluster):
    a = await cluster.node()
    assert a.net.send(PrivateKey.generate().public_key, b"x") is False
    with pytest.raises(ValueError, match="exceeds"):
        a.net.send(a.pk, b"x" * (a.net.max_payload_bytes + 1))


async def test_redials_after_the_remote_restarts(cluster, until):
    kb = PrivateKey.generate()
    ka = PrivateKey.generate()
    b1 = await cluster.node(kb, allowed={ka.public_key})
    address_b = b1.address
    a = await cluster.node(ka, peers=(address_b,))
    await until(lambda: a.net.connected_peers() == [kb.public_key], what="first link")
    await b1.net.close()
    await until(lambda: a.net.connected_peers() == [], what="link loss noticed")
    a.net.send(kb.public_key, b"queued while b was down")
    b2 = await cluster.node(kb, allowed={ka.public_key}, port=address_b.port)
    await until(lambda: a.net.connected_peers() == [kb.public_key], what="redial")
    await until(lambda: b2.received() == [b"queued while b was down"])
    assert a.net.stats()["links_opened"] == 2


async def test_simultaneous_dial_ends_with_one_link_on_the_same_connection(cluster, until):
    for _ in range(3):
        ka, kb = PrivateKey.generate(), PrivateKey.generate()
        a = await cluster.node(ka, allowed={kb.public_key})
        b = await cluster.node(kb, allowed={ka.public_key})
        a.net.add_peer(b.address)
        b.net.add_peer(a.address)  # both dial at once
        await until(lambda a=a, b=b: len(a.net.links()) == 1 and len(b.net.links()) == 1
                    and a.net.links()[0].local == b.net.links()[0].remote,
                    what="one shared link")
        await asyncio.sleep(0.3)  # stays settled: no flapping
        [la], [lb] = a.net.links(), b.net.links()
        assert la.local == lb.remote and la.remote == lb.local
        # Both dials completed: each side saw two links and kept (adopted) the same one.
        seen = sum(n.net.stats()["links_opened"] + n.net.rejections()["duplicate_link"]
                   for n in (a, b))
        assert seen >= 4
        lower_dialed = la.outbound if ka.public_key < kb.public_key else lb.outbound
        assert lower_dialed, "the tie-break keeps the link dialed by the lower key"
        assert a.net.send(b.pk, b"hi") and b.net.send(a.pk, b"ho")
        await until(lambda a=a, b=b: b.received() == [b"hi"] and a.received() == [b"ho"])


async def test_payloads_sent_while_links_race_are_all_delivered_once(cluster, until):
    """Everyone dials everyone at once and sends at once: the tie-break loses nothing."""
    keys = [PrivateKey.generate() for _ in range(4)]
    everyone = frozenset(k.public_key for k in keys)
    nodes = [await cluster.node(k, allowed=everyone) for k in keys]
    for a in nodes:
        for b in nodes:
            a.net.add_peer(b.address)
    for a in nodes:
        for b in nodes:
            for i in range(20):
                if a is not b:
                    assert a.net.send(b.pk, b"%s:%d" % (a.pk.hex()[:8].encode(), i))
    await until(lambda: all(len(n.inbox) == 60 for n in nodes), what="all 240 payloads")
    for n in nodes:
        for a in nodes:
            if a is not n:
                got = n.received(a.pk)
                assert sorted(got) == sorted(b"%s:%d" % (a.pk.hex()[:8].encode(), i)
                                             for i in range(20))
    await asyncio.sleep(0.1)
    assert all(len(n.inbox) == 60 for n in nodes)  # and nothing twice


async def test_keepalives_hold_an_idle_link_open(cluster):
    a, b = await cluster.mesh(2, keepalive_interval=0.1, idle_timeout=0.4)
    await asyncio.sleep(0.2)  # let the simultaneous-dial tie-break settle
    opened = [a.net.stats()["links_opened"], b.net.stats()["links_opened"]]
    await asyncio.sleep(1.0)  # more than twice the idle timeout with no payloads
    assert a.net.connected_peers() == [b.pk]
    assert [a.net.stats()["links_opened"], b.net.stats()["links_opened"]] == opened
    assert a.net.stats()["idle_timeouts"] == b.net.stats()["idle_timeouts"] == 0


async def test_a_slow_handler_does_not_make_a_live_peer_look_idle(cluster, until):
    # Handling one payload (a block-sync answer, say) may take longer than the idle
    # timeout while the peer's keepalives wait unread in the socket: that is our
    # backpressure, not a silent peer, and must not close the link.
    ka = PrivateKey.generate()
    done: list[bytes] = []

    async def slow_handler(pk: bytes, payload: bytes) -> None:
        await asyncio.sleep(1.0)
        done.append(payload)

    b = await cluster.node(allowed={ka.public_key}, start=False, keepalive_interval=0.1,
                           idle_timeout=0.4)
    b.net._on_message = slow_handler
    await b.net.start()
    a = await cluster.node(ka, peers=(b.address,), keepalive_interval=0.1, idle_timeout=0.4)
    await until(lambda: b.net.connected_peers() == [a.pk])
    for i in range(3):
        a.net.send(b.pk, b"%d" % i)
    await until(lambda: len(done) == 3, timeout=10)
    assert done == [b"0", b"1", b"2"]
    assert b.net.stats()["idle_timeouts"] == 0 and b.net.connected_peers() == [a.pk]


def test_links_work_on_uvloop():
    uvloop = pytest.importorskip("uvloop")

    async def exchange() -> list[tuple[bytes, bytes]]:
        ka, kb = PrivateKey.generate(), PrivateKey.generate()
        got: list[tuple[bytes, bytes]] = []
        config = NetworkConfig("uvloop-test")
        async with PeerNetwork(kb, config, allowed={ka.public_key},
                               on_message=lambda pk, p: got.append((pk, p))) as b:
            peer = PeerAddress(kb.public_key, *b.listen_address)
            async with PeerNetwork(ka, config, peers=(peer,)) as a:
                a.send(kb.public_key, b"over uvloop")
                for _ in range(500):
                    if got:
                        break
                    await asyncio.sleep(0.01)
        return got

    loop = uvloop.new_event_loop()
    try:
        got = loop.run_until_complete(asyncio.wait_for(exchange(), 10))
    finally:
        loop.close()
    assert [p for _, p in got] == [b"over uvloop"]


async def test_messages_queued_together_go_out_in_few_writes_and_in_order(cluster, until,
                                                                          monkeypatch):
    ka, kb = PrivateKey.generate(), PrivateKey.generate()
    b = await cluster.node(kb, allowed={ka.public_key})
    a = await cluster.node(ka, peers=(b.address,))
    await until(lambda: a.net.connected_peers() == [kb.public_key], what="link a->b")
    writes: list[int] = []
    real = transport.PeerLink._write_frames

    def counting(self, kind, bodies):
        if kind == transport.FRAME_DATA:
            writes.append(len(bodies))
        return real(self, kind, bodies)

    monkeypatch.setattr(transport.PeerLink, "_write_frames", counting)
    burst = [b"m%d" % i for i in range(200)]
    for payload in burst:          # no await in between: all queued before a write
        assert a.net.send(kb.public_key, payload)
    await until(lambda: len(b.received()) == 200)
    assert b.received() == burst
    assert sum(writes) == 200
    assert len(writes) == -(-200 // transport.WRITE_MAX_FRAMES)   # 64, 64, 64, 8
    assert max(writes) == transport.WRITE_MAX_FRAMES


async def test_full_queue_drops_oldest_and_counts(cluster, until):
    kb = PrivateKey.generate()
    a = await cluster.node(allowed={kb.public_key}, send_queue_messages=4)
    for i in range(10):
        assert a.net.send(kb.public_key, b"m%d" % i)  # b is not connected yet
    assert a.net.rejections()["queue_full"] == 6
    b = await cluster.node(kb, peers=(a.address,))
    await until(lambda: len(b.received()) == 4)
    assert b.received() == [b"m6", b"m7", b"m8", b"m9"]


async def test_isolate_cuts_links_refuses_inbound_and_heal_restores(cluster, until):
    a, b, c = await cluster.mesh(3)
    a.net.isolate()
    assert a.net.connected_peers() == [] and a.net.isolated
    await until(lambda: b.net.connected_peers() == [c.pk] and c.net.connected_peers() == [b.pk],
                what="peers notice isolation")
    await until(lambda: a.net.rejections()["isolated"] >= 2, what="redials refused")
    assert a.net.connected_peers() == []
    assert a.net.send(b.pk, b"lost") is False and a.net.broadcast(b"lost") == 0
    b.net.send(a.pk, b"while isolated")
    a.net.heal()
    await until(lambda: len(a.net.connected_peers()) == 2 and len(b.net.connected_peers()) == 2
                and len(c.net.connected_peers()) == 2, what="healed mesh")
    assert a.net.send(c.pk, b"back")
    await until(lambda: c.received(a.pk) == [b"back"])


async def test_broadcast_reaches_the_three_other_nodes_of_a_mesh(cluster, until):
    nodes = await cluster.mesh(4)
    sender, others = nodes[0], nodes[1:]
    assert sender.net.broadcast(b"to all") == 3
    await until(lambda: all(o.received(sender.pk) == [b"to all"] for o in others))
    assert sender.received() == []


async def test_close_is_clean_and_idempotent(cluster, until):
    a, b = await cluster.mesh(2)
    await a.net.close()
    await a.net.close()
    await until(lambda: b.net.connected_peers() == [], what="peer sees the close")
    assert a.net.send(b.pk, b"x") is False
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("dial ")
                and not t.done() and t in a.net._tasks]


async def test_network_as_async_context_manager():
    async with PeerNetwork(PrivateKey.generate(), NetworkConfig("ctx")) as net:
        assert net.listen_address[0] == "127.0.0.1"
    with pytest.raises(RuntimeError):
        net.listen_address  # noqa: B018
