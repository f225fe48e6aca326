"""One authenticated, encrypted TCP link to a peer, over asyncio streams.

`open_link` runs the `crypto.secure_channel` handshake over a connected
stream, then a *ready* exchange, and returns a `PeerLink`; `PeerLink.run`
pumps frames both ways until the link fails or is closed.

On the wire, after the fixed-size handshake messages, every frame is
``length (4 bytes, big endian) || ChaCha20-Poly1305(kind (1 byte) || body)``.
Kinds:

- ``READY`` (empty body): the first frame each side sends once it has
  verified the other. A link counts as up only after the peer's READY
  arrives, so a side that the peer refused (e.g. not in its validator set)
  learns it during the handshake, not as a link that dies at once.
- ``DATA``: an opaque application payload.
- ``KEEPALIVE`` (empty body): sent when nothing else was sent for
  `keepalive_interval`, so that a silent peer (paused, cut off, half-open TCP)
  is detected after `idle_timeout` and the link can be redialed. Time this side
  spends handling the peer's payloads (reading nothing meanwhile) is not silence.

Frame order is nonce order: `PeerLink` seals and writes each frame in one
synchronous step (no await in between), so frames from the writer and the
keepalive tasks can never reach the socket out of nonce order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from crypto.errors import ChannelError, HandshakeError
from crypto.keys import PrivateKey, address
from crypto.secure_channel import (
    AUTH_SIZE,
    HELLO_SIZE,
    TAG_SIZE,
    AllowList,
    Handshake,
    SecureChannel,
)
from node.p2p.framing import (
    LENGTH_PREFIX_SIZE,
    FrameDecoder,
    MalformedFrameError,
    frame_header,
)
from node.p2p.send_queue import SendQueue

FRAME_DATA = 0
FRAME_KEEPALIVE = 1
FRAME_READY = 2
FRAME_OVERHEAD = TAG_SIZE + 1
"""Bytes a frame adds to its payload inside the length prefix: kind byte and AEAD tag."""
READ_CHUNK = 64 * 1024
# What one write may gather from the send queue: the messages queued by the time the
# write loop runs (a consensus call's proposal and votes, an intake round's batch) go
# out in one send instead of one each; the bounds keep one write from holding the loop.
WRITE_MAX_FRAMES = 64
WRITE_MAX_BYTES = 1024 * 1024
T = TypeVar("T")


class LinkIdleError(ConnectionError):
    """Nothing arrived from the peer for longer than the idle timeout."""


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """Await with a deadline; raise TimeoutError when it passes.

    Uses `asyncio.timeout` where it exists: `asyncio.wait_for` before Python
    3.12 can swallow a cancellation that races with the inner result, which
    would leave a task running after `PeerNetwork.close` cancelled it.
    """
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await awaitable
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        raise TimeoutError(f"timed out after {seconds} s") from None


async def _read_exactly(reader: asyncio.StreamReader, size: int, what: str) -> bytes:
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial and what == "hello":
            # Nothing at all: a port probe, or a node that refuses connections
            # (e.g. isolated). A dial failure, not a protocol violation.
            raise ConnectionResetError("peer closed the connection before its hello") from None
        raise HandshakeError(
            f"peer closed the connection during the handshake ({len(exc.partial)} of "
            f"{size} bytes of its {what})"
        ) from None


async def _handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     handshake: Handshake, max_frame_bytes: int) -> SecureChannel:
    writer.write(handshake.hello())
    hello = await _read_exactly(reader, HELLO_SIZE, "hello")
    writer.write(handshake.receive_hello(hello))
    await writer.drain()
    channel = handshake.receive_auth(await _read_exactly(reader, AUTH_SIZE, "auth message"))
    ready = channel.encrypt(bytes([FRAME_READY]))
    writer.writelines((frame_header(len(ready), max_frame_bytes), ready))
    size = LENGTH_PREFIX_SIZE + FRAME_OVERHEAD
    try:
        frame = await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        raise HandshakeError(
            f"peer {channel.peer_address} closed the connection instead of accepting us "
            "(are we in its validator set?)"
        ) from None
    try:
        [body] = FrameDecoder(FRAME_OVERHEAD, FRAME_OVERHEAD).frames(frame)
        if channel.decrypt(body) != bytes([FRAME_READY]):
            raise ChannelError("first frame after the handshake is not READY")
    except ChannelError as exc:
        raise HandshakeError(f"peer {channel.peer_address}: {exc}") from None
    return channel


class PeerLink:
    """An established link: the streams, the channel, and per-link counters.

    Made by `open_link`. `run` owns the streams until it returns; `close` and
    `retire` may be called at any time, from any task, any number of times.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 channel: SecureChannel, *, outbound: bool, max_frame_bytes: int,
                 keepalive_interval: float, idle_timeout: float) -> None:
        self._reader = reader
        self._writer = writer
        self._channel = channel
        self.peer_public_key = channel.peer_public_key
        self.outbound = outbound
        self.max_frame_bytes = max_frame_bytes
        self.keepalive_interval = keepalive_interval
        self.idle_timeout = idle_timeout
        self.remote_address: tuple[str, int] = tuple(writer.get_extra_info("peername")[:2])
        self.local_address: tuple[str, int] = tuple(writer.get_extra_info("sockname")[:2])
        self.opened_at = time.monotonic()
        self.last_received = self.opened_at
        self.last_sent = self.opened_at
        # While a payload is being handled nothing more is read, so the peer's frames
        # (keepalives included) wait in the socket: that time does not count as the
        # peer's silence. `_listening_since` is when we last went back to reading.
        self._handling = False
        self._listening_since = self.opened_at
        self.close_reason: str | None = None
        self._closed = asyncio.Event()
        self._retiring = asyncio.Event()
        self.messages_sent = 0
        self.messages_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0

    @property
    def peer_address(self) -> str:
        return address(self.peer_public_key)

    @property
    def max_payload_bytes(self) -> int:
        return self.max_frame_bytes - FRAME_OVERHEAD

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __repr__(self) -> str:
        way = "to" if self.outbound else "from"
        host, port = self.remote_address
        return f"PeerLink({way} {self.peer_address} at {host}:{port})"

    def close(self, reason: str) -> None:
        """Stop the link now; `run` returns soon after. The first reason given is kept.

        Data still buffered for the peer is discarded (the socket is aborted if
        needed): a close is for errors, isolation and shutdown.
        """
        if self.close_reason is None:
            self.close_reason = reason
        self._closed.set()
        self._shut_transport()

    def retire(self, reason: str) -> None:
        """Stop sending on the link but deliver what the peer still sends on it.

        Used when another link to the same peer wins the tie-break: this side
        flushes what it wrote and half-closes (FIN), and keeps reading until the
        peer closes its side too (at most `idle_timeout`). Frames the peer sent
        before it switched over are therefore delivered, not lost.
        """
        if self.close_reason is None:
            self.close_reason = reason
        self._retiring.set()

    def _shut_transport(self) -> None:
        transport = self._writer.transport
        if transport.get_write_buffer_size():
            transport.abort()  # a peer that stopped reading must not pin the socket
        else:
            transport.close()

    def _close_gracefully(self) -> None:
        transport = self._writer.transport
        transport.close()  # flushes what is buffered, then closes
        # ...unless the peer stops reading: then give up after the idle timeout.
        asyncio.get_running_loop().call_later(self.idle_timeout, transport.abort)

    def _write_frame(self, kind: int, body: bytes = b"") -> None:
        self._write_frames(kind, [body])

    def _write_frames(self, kind: int, bodies: list[bytes]) -> None:
        """Seal each body into a frame and write them all at once. No await between
        sealing and writing: frame order is nonce order."""
        parts: list[bytes] = []
        sent = 0
        for body in bodies:
            ciphertext = self._channel.encrypt(bytes([kind]) + body)
            parts.append(frame_header(len(ciphertext), self.max_frame_bytes))
            parts.append(ciphertext)
            sent += LENGTH_PREFIX_SIZE + len(ciphertext)
        self._writer.writelines(parts)
        self.last_sent = time.monotonic()
        self.bytes_sent += sent

    async def run(self, outgoing: SendQueue,
                  deliver: Callable[[bytes], Awaitable[None]]) -> None:
        """Send what `outgoing` yields and hand each received payload to `deliver`.

        Returns when the peer closes the connection, when `close` is called, or
        when a retired link (see `retire`) has drained. Raises `ChannelError`
        subclasses for frames that break the rules, `LinkIdleError` for a
        silent peer, `OSError` for socket failures. The transport is closed
        when it returns or raises.
        """
        reading = asyncio.create_task(self._read_loop(deliver))
        closed = asyncio.create_task(self._closed.wait())
        retiring = asyncio.create_task(self._retiring.wait())
        sending: set[asyncio.Task[None]] = set()
        if not self._retiring.is_set():
            sending = {asyncio.create_task(self._write_loop(outgoing)),
                       asyncio.create_task(self._keepalive_loop())}
        stop = {reading, closed, *sending}
        clean = False
        try:
            done, _ = await asyncio.wait(stop | {retiring}, return_when=asyncio.FIRST_COMPLETED)
            if not done & stop:  # retired: stop sending, half-close, drain what arrives
                for task in sending:
                    task.cancel()
                await asyncio.gather(*sending, return_exceptions=True)
                if self._writer.can_write_eof() and not self._writer.transport.is_closing():
                    self._writer.write_eof()
                done, _ = await asyncio.wait({reading, closed}, timeout=self.idle_timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
            clean = reading in done and not reading.cancelled() and reading.exception() is None
        finally:
            tasks = {reading, closed, retiring, *sending}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._channel.close("link closed")
            self._closed.set()
            if clean:
                self._close_gracefully()
            else:
                self._shut_transport()
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                if self.close_reason is None:
                    self.close_reason = str(exc)
                raise exc

    async def _read_loop(self, deliver: Callable[[bytes], Awaitable[None]]) -> None:
        decoder = FrameDecoder(self.max_frame_bytes, FRAME_OVERHEAD)
        while True:
            data = await self._reader.read(READ_CHUNK)
            if not data:
                if self.close_reason is None:
                    self.close_reason = "peer closed the connection"
                return
            self.last_received = time.monotonic()
            self.bytes_received += len(data)
            decoder.feed(data)
            while (frame := decoder.next_frame()) is not None:
                plaintext = self._channel.decrypt(frame)
                kind = plaintext[0]
                if kind == FRAME_DATA:
                    self.messages_received += 1
                    self._handling = True
                    try:
                        await deliver(plaintext[1:])
                    finally:
                        self._handling = False
                        self._listening_since = time.monotonic()
                elif kind == FRAME_KEEPALIVE and len(plaintext) == 1:
                    continue
                else:
                    raise MalformedFrameError(
                        f"frame of kind {kind} with {len(plaintext) - 1} body bytes is not "
                        "allowed on an established link"
                    )

    async def _write_loop(self, outgoing: SendQueue) -> None:
        while True:
            payload: bytes | None = await outgoing.get()
            batch: list[bytes] = []
            size = 0
            while payload is not None:
                batch.append(payload)
                size += len(payload)
                if len(batch) >= WRITE_MAX_FRAMES or size >= WRITE_MAX_BYTES:
                    break
                payload = outgoing.get_nowait()
            self._write_frames(FRAME_DATA, batch)
            self.messages_sent += len(batch)
            await self._writer.drain()

    async def _keepalive_loop(self) -> None:
        tick = min(self.keepalive_interval, self.idle_timeout / 2)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            silent = now - max(self.last_received, self._listening_since)
            if silent > self.idle_timeout and not self._handling:
                raise LinkIdleError(
                    f"nothing received from peer {self.peer_address} for {silent:.1f} s "
                    f"(idle timeout {self.idle_timeout} s)"
                )
            if now - self.last_sent >= self.keepalive_interval:
                self._write_frame(FRAME_KEEPALIVE)


async def open_link(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    identity: PrivateKey, chain_id: str, allowed: AllowList, *,
                    outbound: bool, expected_peer: bytes | None = None,
                    max_frame_bytes: int, handshake_timeout: float,
                    keepalive_interval: float, idle_timeout: float) -> PeerLink:
    """Authenticate a freshly connected stream and return the link.

    Raises `HandshakeError` (`UnknownPeerError` for a peer not allowed),
    `TimeoutError` when the handshake takes longer than `handshake_timeout`,
    or `OSError` when the connection fails; on any error the stream is closed.
    """
    handshake = Handshake(identity, chain_id, allowed, expected_peer=expected_peer)
    try:
        channel = await within(handshake_timeout,
                               _handshake(reader, writer, handshake, max_frame_bytes))
    except TimeoutError:
        writer.transport.abort()
        raise TimeoutError(f"handshake did not finish within {handshake_timeout} s") from None
    except BaseException:
        writer.transport.abort()
        raise
    return PeerLink(reader, writer, channel, outbound=outbound, max_frame_bytes=max_frame_bytes,
                    keepalive_interval=keepalive_interval, idle_timeout=idle_timeout)
