"""Peer-to-peer links between validators: authenticated, encrypted, framed TCP.

A `PeerNetwork` listens for and dials the other validators, runs the
`crypto.secure_channel` handshake on every connection (X25519 + Ed25519
identities checked against the validator set, ChaCha20-Poly1305 frames), keeps
one link per peer, queues outgoing payloads per peer (bounded, drop-oldest),
and calls ``on_message(peer_public_key, payload)`` for every payload received.
Payloads are opaque bytes; what they mean is the caller's business. Refusals
are counted by reason (`PeerNetwork.rejections`) for ``/metrics``, and
`PeerNetwork.isolate` / `heal` cut and restore all links for fault injection.

Modules: `framing` (sans-IO length-prefixed frames), `transport` (one link over
asyncio streams), `send_queue`, `backoff`, `network` (`PeerNetwork`).
"""

from node.p2p.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    FrameDecoder,
    FrameError,
    MalformedFrameError,
    OversizedFrameError,
)
from node.p2p.network import (
    REJECTION_REASONS,
    STAT_NAMES,
    LinkInfo,
    NetworkConfig,
    OnMessage,
    PeerAddress,
    PeerNetwork,
)
from node.p2p.send_queue import SendQueue
from node.p2p.transport import LinkIdleError, PeerLink, open_link

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "REJECTION_REASONS",
    "STAT_NAMES",
    "FrameDecoder",
    "FrameError",
    "LinkIdleError",
    "LinkInfo",
    "MalformedFrameError",
    "NetworkConfig",
    "OnMessage",
    "OversizedFrameError",
    "PeerAddress",
    "PeerLink",
    "PeerNetwork",
    "SendQueue",
    "open_link",
]
