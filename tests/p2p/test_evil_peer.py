"""A hostile peer speaking raw bytes to a PeerNetwork: every abuse closes the link,
is counted under its reason, and leaves the node serving honest peers."""

from __future__ import annotations

import asyncio

import pytest

from crypto.keys import PrivateKey
from crypto.secure_channel import AUTH_SIZE, HELLO_SIZE, Handshake, SecureChannel
from node.p2p.framing import encode_frame
from node.p2p.transport import FRAME_DATA, FRAME_OVERHEAD, FRAME_READY

pytestmark = pytest.mark.timeout(20)


class EvilPeer:
    """A raw TCP client that can run the real handshake, then send anything it likes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.sent = bytearray()  # everything written, for replay
        self.channel: SecureChannel | None = None

    @classmethod
    async def connect(cls, target) -> EvilPeer:
        host, port = target.net.listen_address
        return cls(*await asyncio.open_connection(host, port))

    def write(self, data: bytes) -> None:
        self.sent += data
        self.writer.write(data)

    async def handshake(self, key: PrivateKey, target) -> None:
        hs = Handshake(key, target.net.config.chain_id, {target.pk})
        self.write(hs.hello())
        self.write(hs.receive_hello(await self.reader.readexactly(HELLO_SIZE)))
        self.channel = hs.receive_auth(await self.reader.readexactly(AUTH_SIZE))
        self.send_frame(FRAME_READY)
        ready = await self.reader.readexactly(4 + FRAME_OVERHEAD)
        assert self.channel.decrypt(ready[4:]) == bytes([FRAME_READY])

    def seal(self, kind: int, body: bytes = b"") -> bytes:
        assert self.channel is not None
        return self.channel.encrypt(bytes([kind]) + body)

    def send_frame(self, kind: int, body: bytes = b"") -> None:
        self.write(encode_frame(self.seal(kind, body), 2**32 - 1))

    async def closed_by_remote(self, timeout: float = 3.0) -> bool:
        """Whether the remote closes the connection within `timeout` (data is drained)."""
        async def drain_until_eof() -> None:
            try:
                while await self.reader.read(65536):
                    pass
            except ConnectionError:
                pass
        try:
            await asyncio.wait_for(drain_until_eof(), timeout)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.writer.transport.abort()


@pytest.fixture
async def target(cluster):
    """A node that allows `target.insider` (the evil peer's key) to connect."""
    insider = PrivateKey.generate()
    node = await cluster.node(allowed={insider.public_key}, handshake_timeout=0.5)
    node.insider = insider
    return node


async def test_tampered_ciphertext_closes_the_link_and_is_counted(target, until):
    evil = await EvilPeer.connect(target)
    await evil.handshake(target.insider, target)
    evil.send_frame(FRAME_DATA, b"honest first")
    frame = bytearray(encode_frame(evil.seal(FRAME_DATA, b"then tampered"), 2**32 - 1))
    frame[10] ^= 0x40
    evil.write(bytes(frame))
    assert await evil.closed_by_remote()
    assert target.net.rejections()["auth_failure"] == 1
    assert target.received() == [b"honest first"]
    await until(lambda: target.net.connected_peers() == [])


async def test_oversized_frame_is_refused_from_its_length_alone(target, until):
    evil = await EvilPeer.connect(target)
    await evil.handshake(target.insider, target)
    # Announce 4 GiB - 1 and send no body: the node must not wait for (or allocate) it.
    evil.write((2**32 - 1).to_bytes(4, "big"))
    assert await evil.closed_by_remote(timeout=2.0)
    assert target.net.rejections()["oversized_frame"] == 1


async def test_frame_just_over_the_configured_limit_is_refused(cluster):
    insider = PrivateKey.generate()
    node = await cluster.node(allowed={insider.public_key}, max_frame_bytes=1024,
                              send_queue_bytes=4096)
    evil = await EvilPeer.connect(node)
    await evil.handshake(insider, node)
    evil.send_frame(FRAME_DATA, b"x" * (1024 - FRAME_OVERHEAD))  # exactly the limit: fine
    evil.send_frame(FRAME_DATA, b"x" * (1024 - FRAME_OVERHEAD + 1))
    assert await evil.closed_by_remote()
    assert node.net.rejections()["oversized_frame"] == 1
    assert len(node.received()) == 1


async def test_unknown_frame_kind_is_a_bad_frame(target):
    evil = await EvilPeer.connect(target)
    await evil.handshake(target.insider, target)
    evil.send_frame(7, b"?")
    assert await evil.closed_by_remote()
    assert target.net.rejections()["bad_frame"] == 1


async def test_replayed_handshake_bytes_are_refused(target, until):
    genuine = await EvilPeer.connect(target)
    await genuine.handshake(target.insider, target)
    recording = bytes(genuine.sent)  # hello + auth + READY of a session that worked
    genuine.close()
    await until(lambda: target.net.connected_peers() == [])

    replay = await EvilPeer.connect(target)
    replay.write(recording)
    assert await replay.closed_by_remote()
    assert target.net.rejections()["bad_handshake"] == 1
    assert target.net.connected_peers() == []


async def test_garbage_instead_of_a_hello_is_a_bad_handshake(target):
    evil = await EvilPeer.connect(target)
    evil.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(HELLO_SIZE))
    assert await evil.closed_by_remote()
    assert target.net.rejections()["bad_handshake"] == 1


async def test_silent_connection_times_out(target):
    evil = await EvilPeer.connect(target)
    evil.write(b"BFTN")  # a few bytes, then nothing
    assert await evil.closed_by_remote(timeout=3.0)
    assert target.net.rejections()["handshake_timeout"] == 1


async def test_silent_peer_after_the_handshake_is_dropped_as_idle(cluster, until):
    insider = PrivateKey.generate()
    node = await cluster.node(allowed={insider.public_key}, keepalive_interval=0.1,
                              idle_timeout=0.4)
    evil = await EvilPeer.connect(node)
    await evil.handshake(insider, node)  # then sends nothing, not even keepalives
    assert await evil.closed_by_remote(timeout=2.0)
    assert node.net.stats()["idle_timeouts"] == 1


async def test_too_many_pending_handshakes_are_refused(cluster, until):
    node = await cluster.node(max_pending_handshakes=2)
    squatters = [await EvilPeer.connect(node) for _ in range(3)]
    await until(lambda: node.net.rejections()["too_many_pending"] == 1)
    for s in squatters:
        s.close()


async def test_node_still_serves_honest_peers_after_abuse(target, until):
    for _ in range(3):
        evil = await EvilPeer.connect(target)
        evil.write(bytes(2 * HELLO_SIZE))
        await evil.closed_by_remote()
    honest = await EvilPeer.connect(target)
    await honest.handshake(target.insider, target)
    honest.send_frame(FRAME_DATA, b"hello")
    await until(lambda: target.received() == [b"hello"])
    assert target.net.connected_peers() == [target.insider.public_key]
    honest.close()
