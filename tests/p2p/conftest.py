"""Fixtures for the p2p tests: real TCP on 127.0.0.1, free ports, fast timings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from crypto.keys import PrivateKey
from node.p2p import NetworkConfig, PeerAddress, PeerNetwork

CHAIN_ID = "p2p-test-chain"

# Timings scaled down so that redials and timeouts happen within a test's budget.
FAST = {
    "handshake_timeout": 2.0,
    "keepalive_interval": 1.0,
    "idle_timeout": 3.0,
    "backoff_initial": 0.02,
    "backoff_max": 0.25,
}


@dataclass
class Node:
    """A started PeerNetwork with the key it runs under and what it received."""

    key: PrivateKey
    net: PeerNetwork
    inbox: list[tuple[bytes, bytes]] = field(default_factory=list)

    @property
    def pk(self) -> bytes:
        return self.key.public_key

    @property
    def address(self) -> PeerAddress:
        host, port = self.net.listen_address
        return PeerAddress(self.pk, host, port)

    def received(self, sender: bytes | None = None) -> list[bytes]:
        return [p for pk, p in self.inbox if sender is None or pk == sender]


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0,
                     what: str = "condition") -> None:
    """Poll `predicate` until true; fail the test after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.01)


class Cluster:
    """Makes nodes and closes them all at the end of the test."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []

    async def node(self, key: PrivateKey | None = None, *, peers: tuple[PeerAddress, ...] = (),
                   allowed: object = None, start: bool = True, **config: object) -> Node:
        key = key or PrivateKey.generate()
        inbox: list[tuple[bytes, bytes]] = []
        settings = {**FAST, **config}
        net = PeerNetwork(key, NetworkConfig(CHAIN_ID, **settings), peers=peers,
                          allowed=allowed,  # type: ignore[arg-type]
                          on_message=lambda pk, payload: inbox.append((pk, payload)))
        node = Node(key, net, inbox)
        self.nodes.append(node)
        if start:
            await net.start()
        return node

    async def mesh(self, n: int, **config: object) -> list[Node]:
        """n nodes, each allowing and dialing all others; returns once fully connected."""
        keys = [PrivateKey.generate() for _ in range(n)]
        everyone = frozenset(k.public_key for k in keys)
        nodes = [await self.node(k, allowed=everyone, **config) for k in keys]
        for a in nodes:
            for b in nodes:
                a.net.add_peer(b.address)
        await wait_until(lambda: all(len(x.net.connected_peers()) == n - 1 for x in nodes),
                         what=f"full {n}-node mesh")
        return nodes

    async def close(self) -> None:
        await asyncio.gather(*(node.net.close() for node in self.nodes))


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    c = Cluster()
    try:
        yield c
    finally:
        await asyncio.wait_for(c.close(), 10)


@pytest.fixture
def until() -> Callable[..., object]:
    return wait_until
