"""The bounded queue of payloads waiting to be written to one peer.

When it is full it drops the *oldest* payloads. A peer that falls behind is
best served by what is newest: consensus messages for past rounds are stale
(and the protocol repairs gaps by retransmission and block sync), whereas
dropping the newest would keep a slow peer permanently behind on exactly the
messages that could let it catch up. Every drop is counted.

Bounds are on both the number of payloads and their total bytes, so that a
burst of maximum-size frames cannot hold gigabytes for one slow peer.
"""

from __future__ import annotations

import asyncio
from collections import deque


class SendQueue:
    """A FIFO with drop-oldest overflow, one consumer, and an awaitable `get`."""

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError("a send queue must hold at least one message and one byte")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._items: deque[bytes] = deque()
        self._bytes = 0
        self._nonempty = asyncio.Event()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    def put(self, payload: bytes) -> int:
        """Append `payload`, dropping the oldest to make room; return how many were dropped.

        A payload larger than `max_bytes` on its own is refused (ValueError):
        the owner sizes `max_bytes` to hold at least one maximum frame.
        """
        size = len(payload)
        if size > self.max_bytes:
            raise ValueError(f"payload of {size} bytes exceeds the queue's {self.max_bytes} bytes")
        dropped = 0
        while self._items and (len(self._items) >= self.max_messages
                               or self._bytes + size > self.max_bytes):
            self._bytes -= len(self._items.popleft())
            dropped += 1
        self._items.append(payload)
        self._bytes += size
        self._nonempty.set()
        self.dropped += dropped
        return dropped

    def get_nowait(self) -> bytes | None:
        """The oldest payload, or None when empty."""
        if not self._items:
            self._nonempty.clear()
            return None
        payload = self._items.popleft()
        self._bytes -= len(payload)
        if not self._items:
            self._nonempty.clear()
        return payload

    async def get(self) -> bytes:
        """Wait for and remove the oldest payload."""
        while True:
            payload = self.get_nowait()
            if payload is not None:
                return payload
            await self._nonempty.wait()

    def clear(self) -> int:
        """Drop everything queued (not counted as overflow); return how many."""
        count = len(self._items)
        self._items.clear()
        self._bytes = 0
        self._nonempty.clear()
        return count
