"""`PeerNetwork`: this node's links to the other validators.

It listens for peers, dials the configured ones (redialing with bounded,
jittered exponential backoff), keeps exactly one link per peer identity, queues
outgoing payloads per peer, and hands every received payload to `on_message`.
Payloads are opaque bytes: decoding and validating them is the caller's job.

One link per peer
-----------------
When two nodes dial each other at once, each ends up with two links to the
other. Both keep the one dialed by the node with the lower public key and
retire the other: the rule depends only on the two keys and the direction, so
both sides choose the same TCP connection without talking about it. Between
two links dialed by the same node the newer wins: a node only dials a peer it
has no link to, so its older link is one it already saw die.

The two sides may see the links complete in different orders, so one side
may already have sent payloads on the link that loses. A retired link
therefore stops sending, half-closes, and keeps delivering what the peer sent
on it until the peer closes it too (`PeerLink.retire`): the tie-break loses
no payload. Payloads from one peer arrive in order on one link; across a
switch-over of links they may be reordered.

Isolation
---------
`isolate()` is the fault-injection switch behind ``bftnode localnet isolate``:
it closes every link, empties the send queues (a cut-off node's messages are
lost, not delayed), refuses inbound connections and stops dialing, until
`heal()`.

Threading: every method must be called on the event loop that ran `start`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from crypto.errors import ChannelError, HandshakeError
from crypto.keys import PUBLIC_KEY_SIZE, PrivateKey, address
from crypto.secure_channel import AllowList, UnknownPeerError, is_allowed
from node.p2p.backoff import Backoff
from node.p2p.framing import DEFAULT_MAX_FRAME_BYTES, FrameError, OversizedFrameError
from node.p2p.send_queue import SendQueue
from node.p2p.transport import FRAME_OVERHEAD, LinkIdleError, PeerLink, open_link, within

log = logging.getLogger(__name__)

OnMessage = Callable[[bytes, bytes], "Awaitable[None] | None"]
"""``on_message(peer_public_key, payload)``; may be a plain or an async function."""

REJECTION_REASONS = (
    "unknown_peer",       # authenticated, but not in the validator set / allow-list
    "bad_handshake",      # any other handshake failure (bad magic, chain, signature, replay)
    "handshake_timeout",  # the handshake did not finish in time
    "oversized_frame",    # a frame announced more than max_frame_bytes
    "bad_frame",          # a frame too short, or of a kind not allowed
    "auth_failure",       # a frame failed AEAD authentication (tampered or out of order)
    "queue_full",         # payloads dropped (oldest first) from a full send queue
    "duplicate_link",     # a second link to a connected peer, closed by the tie-break
    "isolated",           # inbound connections refused while isolated
    "too_many_pending",   # inbound connections refused: too many handshakes in progress
)

STAT_NAMES = (
    "links_opened", "links_closed", "idle_timeouts", "dial_failures",
    "messages_sent", "messages_received", "bytes_sent", "bytes_received",
)


@dataclass(frozen=True)
class PeerAddress:
    """A peer to dial: where it listens and the Ed25519 public key it must prove."""

    public_key: bytes
    host: str
    port: int

    def __post_init__(self) -> None:
        if len(self.public_key) != PUBLIC_KEY_SIZE:
            raise ValueError(f"peer public key must be {PUBLIC_KEY_SIZE} bytes, "
                             f"got {len(self.public_key)}")
        if not 0 < self.port < 65536:
            raise ValueError(f"peer port {self.port} is outside 1..65535")

    @property
    def address(self) -> str:
        return address(self.public_key)


@dataclass(frozen=True)
class NetworkConfig:
    """Tunables of a `PeerNetwork`; only `chain_id` has no default.

    `host` defaults to loopback: listening on other interfaces is a deliberate
    operator choice. Port 0 picks a free port (see `PeerNetwork.listen_address`).
    """

    chain_id: str
    host: str = "127.0.0.1"
    port: int = 0
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    handshake_timeout: float = 5.0
    keepalive_interval: float = 5.0
    idle_timeout: float = 20.0
    send_queue_messages: int = 1024
    send_queue_bytes: int = 64 * 1024 * 1024
    backoff_initial: float = 0.1
    backoff_max: float = 10.0
    max_pending_handshakes: int = 64

    def __post_init__(self) -> None:
        if self.max_frame_bytes <= FRAME_OVERHEAD or self.max_frame_bytes >= 2**32:
            raise ValueError(f"max_frame_bytes {self.max_frame_bytes} is outside "
                             f"({FRAME_OVERHEAD}, 2**32)")
        if self.send_queue_bytes < self.max_frame_bytes - FRAME_OVERHEAD:
            raise ValueError("send_queue_bytes must hold at least one maximum-size payload")
        if self.idle_timeout <= self.keepalive_interval:
            raise ValueError("idle_timeout must be longer than keepalive_interval")
        if not 0 <= self.port < 65536:
            raise ValueError(f"port {self.port} is outside 0..65535")


@dataclass(frozen=True)
class LinkInfo:
    """A snapshot of one live link, for status pages and logs."""

    public_key: bytes
    address: str
    outbound: bool
    remote: tuple[str, int]
    local: tuple[str, int]
    connected_for_s: float


class PeerNetwork:
    """The authenticated, encrypted links of one node to its peers.

    Args:
        identity: this node's Ed25519 key; peers must have our public key in
            their allow-list.
        config: listen address, limits and timings.
        peers: whom to dial and keep dialing; our own key is skipped.
        allowed: who may connect (keys, or a predicate on a key); defaults to
            the peers configured at the time (`peers`, `add_peer`, `remove_peer`).
            A callable lets the validator set change.
        on_message: called as ``on_message(peer_public_key, payload)`` for each
            payload received, in order per peer; if it returns an awaitable,
            that peer's link reads nothing more until it completes (that is the
            backpressure). Exceptions it raises are logged, never fatal to the link.
        rng: the source of backoff jitter (tests pass a seeded one).
    """

    def __init__(self, identity: PrivateKey, config: NetworkConfig,
                 peers: Iterable[PeerAddress] = (), allowed: AllowList | None = None,
                 on_message: OnMessage | None = None, rng: random.Random | None = None) -> None:
        self._identity = identity
        self.public_key = identity.public_key
        self.config = config
        self._peers = {p.public_key: p for p in peers if p.public_key != self.public_key}
        self._allowed: AllowList = allowed if allowed is not None else self._peers.__contains__
        self._on_message = on_message
        self._rng = rng or random.Random()
        self._links: dict[bytes, PeerLink] = {}
        self._queues: dict[bytes, SendQueue] = {pk: self._new_queue() for pk in self._peers}
        self._dial_wanted: dict[bytes, asyncio.Event] = {}
        self._dialers: dict[bytes, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.AbstractServer | None = None
        self._isolated = False
        self._closing = False
        self._pending_handshakes = 0
        self._rejections = dict.fromkeys(REJECTION_REASONS, 0)
        self._stats = dict.fromkeys(STAT_NAMES, 0)

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on ``config.host:config.port`` and start dialing the configured peers."""
        if self._server is not None:
            raise RuntimeError("PeerNetwork.start() called twice")
        self._server = await asyncio.start_server(
            self._accept, self.config.host, self.config.port)
        host, port = self.listen_address
        log.info("p2p node %s listening on %s:%d", address(self.public_key), host, port)
        for peer in self._peers.values():
            self._start_dialing(peer)

    async def close(self) -> None:
        """Close every link, stop listening and dialing; safe to call more than once."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        for link in list(self._links.values()):
            link.close("node shutting down")
        self._links.clear()
        pending = set(self._tasks)
        while pending:  # cancel again any task that swallowed a cancellation
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> PeerNetwork:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def listen_address(self) -> tuple[str, int]:
        """The (host, port) actually bound; valid after `start`."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("PeerNetwork is not listening (call start() first)")
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    def add_peer(self, peer: PeerAddress) -> None:
        """Dial `peer` from now on (or update its address); our own key is ignored."""
        if peer.public_key == self.public_key:
            return
        known = peer.public_key in self._peers
        self._peers[peer.public_key] = peer  # the dial loop reads the address on each try
        self._queue_for(peer.public_key)
        if not known and self._server is not None and not self._closing:
            self._start_dialing(peer)

    def remove_peer(self, public_key: bytes) -> None:
        """Stop dialing the peer, drop its queue and close its link."""
        self._peers.pop(public_key, None)
        self._dial_wanted.pop(public_key, None)
        dialer = self._dialers.pop(public_key, None)
        if dialer is not None:
            dialer.cancel()
        self._queues.pop(public_key, None)
        link = self._links.pop(public_key, None)
        if link is not None:
            link.close("peer removed from the configuration")

    # --- sending -----------------------------------------------------------------------

    @property
    def max_payload_bytes(self) -> int:
        """Largest payload `send` accepts: the frame limit less the kind byte and tag."""
        return self.config.max_frame_bytes - FRAME_OVERHEAD

    def send(self, peer_public_key: bytes, payload: bytes) -> bool:
        """Queue `payload` for one peer; return whether it was queued.

        Queued for a peer that is allowed, even while it is disconnected (it is
        sent when the link comes up); refused (False) for a peer that is not
        allowed, and for every peer while isolated or closing. A full queue
        drops its oldest payloads (counted in ``rejections()["queue_full"]``).
        Raises ValueError when `payload` exceeds `max_payload_bytes`.
        """
        if len(payload) > self.max_payload_bytes:
            raise ValueError(f"payload of {len(payload)} bytes exceeds the "
                             f"{self.max_payload_bytes}-byte limit of one frame")
        if self._isolated or self._closing:
            return False
        queue = self._queue_for(peer_public_key)
        if queue is None:
            return False
        dropped = queue.put(bytes(payload))
        if dropped:
            self._rejections["queue_full"] += dropped
            log.debug("send queue to %s is full: dropped %d oldest payload(s)",
                      address(peer_public_key), dropped)
        return True

    def broadcast(self, payload: bytes) -> int:
        """`send` to every configured peer and every peer linked so far; return how many took it."""
        targets = set(self._queues) | set(self._links)
        return sum(self.send(pk, payload) for pk in sorted(targets))

    # --- introspection -----------------------------------------------------------------

    def connected_peers(self) -> list[bytes]:
        """Public keys of the peers with a live link, sorted."""
        return sorted(self._links)

    def links(self) -> list[LinkInfo]:
        now = time.monotonic()
        return [LinkInfo(pk, link.peer_address, link.outbound, link.remote_address,
                         link.local_address, now - link.opened_at)
                for pk, link in sorted(self._links.items())]

    def rejections(self) -> dict[str, int]:
        """Counts of refused connections, frames and payloads by reason (see REJECTION_REASONS)."""
        return dict(self._rejections)

    def stats(self) -> dict[str, int]:
        """Traffic and link counters since start (see STAT_NAMES), live links included."""
        stats = dict(self._stats)
        for link in self._links.values():
            self._add_link_traffic(stats, link)
        return stats

    @property
    def isolated(self) -> bool:
        return self._isolated

    # --- fault injection ---------------------------------------------------------------

    def isolate(self) -> None:
        """Cut every link and refuse all traffic until `heal`."""
        if self._isolated:
            return
        self._isolated = True
        for link in list(self._links.values()):
            link.close("node isolated")
        self._links.clear()
        for queue in self._queues.values():
            queue.clear()
        for pk in self._dial_wanted:
            self._refresh_dialing(pk)
        log.warning("p2p node %s isolated: all links closed", address(self.public_key))

    def heal(self) -> None:
        """Undo `isolate`: accept inbound links and dial the configured peers again."""
        if not self._isolated:
            return
        self._isolated = False
        for pk in self._dial_wanted:
            self._refresh_dialing(pk)
        log.warning("p2p node %s healed: reconnecting", address(self.public_key))

    # --- internals ---------------------------------------------------------------------

    def _new_queue(self) -> SendQueue:
        return SendQueue(self.config.send_queue_messages, self.config.send_queue_bytes)

    def _queue_for(self, pk: bytes) -> SendQueue | None:
        queue = self._queues.get(pk)
        if queue is None and pk != self.public_key and len(pk) == PUBLIC_KEY_SIZE \
                and is_allowed(self._allowed, pk):
            queue = self._queues[pk] = self._new_queue()
        return queue

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _start_dialing(self, peer: PeerAddress) -> None:
        pk = peer.public_key
        if not is_allowed(self._allowed, pk):
            log.warning("configured peer %s is not in the allow-list; links to it "
                        "will be refused", peer.address)
        self._dial_wanted[pk] = asyncio.Event()
        self._refresh_dialing(pk)
        self._dialers[pk] = self._spawn(self._dial_loop(pk), f"dial {peer.address}")

    def _refresh_dialing(self, pk: bytes) -> None:
        event = self._dial_wanted.get(pk)
        if event is None:
            return
        if self._isolated or self._closing or pk in self._links:
            event.clear()
        else:
            event.set()

    def _reject(self, reason: str, message: str, *args: object) -> None:
        self._rejections[reason] += 1
        log.warning(message, *args)

    def _handshake_failed(self, exc: BaseException, remote: object) -> None:
        if isinstance(exc, UnknownPeerError):
            self._reject("unknown_peer", "refused link with %s: %s", remote, exc)
        elif isinstance(exc, HandshakeError):
            self._reject("bad_handshake", "handshake with %s failed: %s", remote, exc)
        elif isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
            self._reject("handshake_timeout", "handshake with %s: %s", remote, exc)
        elif isinstance(exc, OSError):
            log.debug("connection with %s failed during the handshake: %s", remote, exc)
        else:
            self._reject("bad_handshake", "handshake with %s failed: %r", remote, exc)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback that spawns a tracked task: close() cancels it, and the
        # server never sees the cancellation (Python 3.11 logs it as an error).
        remote = writer.get_extra_info("peername")
        if self._closing:
            writer.transport.abort()
        elif self._isolated:
            writer.transport.abort()
            self._reject("isolated", "refused inbound connection from %s: node is isolated",
                         remote)
        elif self._pending_handshakes >= self.config.max_pending_handshakes:
            writer.transport.abort()
            self._reject("too_many_pending", "refused inbound connection from %s: %d "
                         "handshakes already in progress", remote, self._pending_handshakes)
        else:
            self._pending_handshakes += 1
            self._spawn(self._serve_inbound(reader, writer, remote), f"inbound {remote}")

    async def _serve_inbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             remote: object) -> None:
        try:
            link = await self._open(reader, writer, outbound=False, expected_peer=None)
        except Exception as exc:
            self._handshake_failed(exc, remote)
            return
        finally:
            self._pending_handshakes -= 1
        await self._run_link(link)

    def _open(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
              outbound: bool, expected_peer: bytes | None) -> Awaitable[PeerLink]:
        c = self.config
        return open_link(reader, writer, self._identity, c.chain_id, self._allowed,
                         outbound=outbound, expected_peer=expected_peer,
                         max_frame_bytes=c.max_frame_bytes, handshake_timeout=c.handshake_timeout,
                         keepalive_interval=c.keepalive_interval, idle_timeout=c.idle_timeout)

    async def _dial_loop(self, pk: bytes) -> None:
        backoff = Backoff(self.config.backoff_initial, self.config.backoff_max, self._rng)
        wanted = self._dial_wanted[pk]
        while not self._closing:
            await wanted.wait()
            peer = self._peers[pk]
            where = f"{peer.address} at {peer.host}:{peer.port}"
            try:
                reader, writer = await within(self.config.handshake_timeout,
                                              asyncio.open_connection(peer.host, peer.port))
            except OSError as exc:  # TimeoutError included
                self._stats["dial_failures"] += 1
                log.debug("dialing %s failed: %r", where, exc)
                await asyncio.sleep(backoff.next_delay())
                continue
            try:
                link = await self._open(reader, writer, outbound=True, expected_peer=pk)
            except Exception as exc:
                self._stats["dial_failures"] += 1
                self._handshake_failed(exc, where)
                await asyncio.sleep(backoff.next_delay())
                continue
            await self._run_link(link)
            if time.monotonic() - link.opened_at >= backoff.maximum:
                backoff.reset()  # the link was healthy; start over from the short delay
            await asyncio.sleep(backoff.next_delay())

    def _prefer(self, new: PeerLink, old: PeerLink) -> bool:
        """Whether `new` should replace `old` (both to the same peer); see the module doc."""
        lower = min(self.public_key, new.peer_public_key)

        def dialed_by_lower(link: PeerLink) -> bool:
            return (self.public_key if link.outbound else link.peer_public_key) == lower

        if dialed_by_lower(new) != dialed_by_lower(old):
            return dialed_by_lower(new)
        return True

    def _adopt(self, link: PeerLink) -> bool:
        """Make `link` the peer's link, or refuse it; a refused link is closed or retired."""
        pk = link.peer_public_key
        if self._closing or self._isolated:
            link.close("node isolated" if self._isolated else "node shutting down")
            return False
        current = self._links.get(pk)
        if current is not None:
            if not self._prefer(link, current):
                self._rejections["duplicate_link"] += 1
                log.info("retiring duplicate link %r: keeping %r", link, current)
                link.retire("duplicate link (the tie-break kept the other one)")
                return False
            log.info("replacing link %r with %r", current, link)
            current.retire("replaced by the link the tie-break prefers")
        self._links[pk] = link
        self._queue_for(pk)
        self._refresh_dialing(pk)
        self._stats["links_opened"] += 1
        log.info("link up: %r", link)
        return True

    async def _run_link(self, link: PeerLink) -> None:
        adopted = self._adopt(link)
        pk = link.peer_public_key
        queue = self._queue_for(pk)
        if queue is None:  # removed from the allow-list meanwhile
            link.close("peer no longer allowed")
            queue = self._new_queue()
        try:
            await link.run(queue, functools.partial(self._deliver, pk))
        except OversizedFrameError as exc:
            self._reject("oversized_frame", "closed %r: %s", link, exc)
        except FrameError as exc:
            self._reject("bad_frame", "closed %r: %s", link, exc)
        except ChannelError as exc:
            self._reject("auth_failure", "closed %r: %s", link, exc)
        except LinkIdleError as exc:
            self._stats["idle_timeouts"] += 1
            log.warning("closed %r: %s", link, exc)
        except OSError as exc:
            log.info("link %r failed: %s", link, exc)
        finally:
            if self._links.get(pk) is link:
                del self._links[pk]
                self._refresh_dialing(pk)
            self._add_link_traffic(self._stats, link)
            if adopted:
                self._stats["links_closed"] += 1
                log.info("link down: %r (%s)", link, link.close_reason)

    @staticmethod
    def _add_link_traffic(stats: dict[str, int], link: PeerLink) -> None:
        stats["messages_sent"] += link.messages_sent
        stats["messages_received"] += link.messages_received
        stats["bytes_sent"] += link.bytes_sent
        stats["bytes_received"] += link.bytes_received

    async def _deliver(self, pk: bytes, payload: bytes) -> None:
        if self._on_message is None:
            return
        try:
            result = self._on_message(pk, payload)
            if inspect.isawaitable(result):
                # Shielded: closing the link must not cancel a handler half-way.
                await asyncio.shield(result)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("on_message failed for a payload from %s", address(pk))
