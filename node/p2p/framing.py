"""Length-prefixed frames: a 4-byte big-endian length, then that many bytes.

`FrameDecoder` is sans-IO: it is fed whatever bytes arrived and hands out
the complete frames among them, one at a time. It checks an announced length against the limits
as soon as the 4-byte prefix is in, so a peer announcing a huge frame is
refused before a single byte of the body is read or any memory is set aside
for it (DESIGN section 4: a larger frame closes the link with a logged reason).

Errors are `ChannelError` subclasses, so one `except ChannelError` at the link
covers framing and decryption alike; the subclass names the counter to bump.
"""

from __future__ import annotations

from crypto.errors import ChannelError

LENGTH_PREFIX_SIZE = 4
DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024
MAX_LENGTH_PREFIX = 2**32 - 1


class FrameError(ChannelError):
    """A frame broke a framing rule (as opposed to failing authentication)."""


class OversizedFrameError(FrameError):
    """A frame's announced or actual length is over the configured maximum."""


class MalformedFrameError(FrameError):
    """A frame is too short, or its decrypted content is not a known frame kind."""


def encode_frame(body: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """``len(body)`` as 4 big-endian bytes followed by `body`."""
    if len(body) > max_frame_bytes:
        raise OversizedFrameError(
            f"frame of {len(body)} bytes exceeds the {max_frame_bytes}-byte limit"
        )
    return len(body).to_bytes(LENGTH_PREFIX_SIZE, "big") + body


def frame_header(length: int, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """Only the length prefix, for writers that send the body separately (no copy)."""
    if length > max_frame_bytes:
        raise OversizedFrameError(
            f"frame of {length} bytes exceeds the {max_frame_bytes}-byte limit"
        )
    return length.to_bytes(LENGTH_PREFIX_SIZE, "big")


class FrameDecoder:
    """Incremental decoder of length-prefixed frames with a size window.

    `feed` the bytes that arrived, then take frames with `next_frame` until it
    returns None. Frames come out one at a time, so every frame that precedes a
    bad one in the stream is still delivered, and the error is raised exactly
    when the bad frame's prefix is reached. A prefix announcing more than
    `max_frame_bytes` raises `OversizedFrameError`, less than `min_frame_bytes`
    `MalformedFrameError`. After an error the decoder is dead (the stream is out
    of sync): every later call raises again. Memory held is at most one partial
    frame plus the bytes fed since the last complete frame.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 min_frame_bytes: int = 0) -> None:
        if not 0 <= min_frame_bytes <= max_frame_bytes <= MAX_LENGTH_PREFIX:
            raise ValueError(
                f"need 0 <= min_frame_bytes ({min_frame_bytes}) <= max_frame_bytes "
                f"({max_frame_bytes}) <= {MAX_LENGTH_PREFIX}"
            )
        self.max_frame_bytes = max_frame_bytes
        self.min_frame_bytes = min_frame_bytes
        self._buffer = bytearray()
        self._pos = 0
        self._failed: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes fed and not yet returned as frames."""
        return len(self._buffer) - self._pos

    def _check_alive(self) -> None:
        if self._failed is not None:
            raise type(self._failed)(f"frame stream already failed: {self._failed}")

    def _fail(self, error: FrameError) -> FrameError:
        self._failed = error
        self._buffer = bytearray()
        self._pos = 0
        return error

    def feed(self, data: bytes) -> None:
        """Append bytes received from the stream."""
        self._check_alive()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise self._fail(MalformedFrameError(f"expected bytes, got {type(data).__name__}"))
        if self._pos:
            del self._buffer[:self._pos]
            self._pos = 0
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next complete frame body, or None until more bytes are fed."""
        self._check_alive()
        buf, pos = self._buffer, self._pos
        if len(buf) - pos < LENGTH_PREFIX_SIZE:
            return None
        length = int.from_bytes(buf[pos:pos + LENGTH_PREFIX_SIZE], "big")
        if length > self.max_frame_bytes:
            raise self._fail(OversizedFrameError(
                f"peer announced a frame of {length} bytes; the limit is {self.max_frame_bytes}"
            ))
        if length < self.min_frame_bytes:
            raise self._fail(MalformedFrameError(
                f"peer sent a frame of {length} bytes; the minimum is {self.min_frame_bytes}"
            ))
        start = pos + LENGTH_PREFIX_SIZE
        if len(buf) - start < length:
            return None
        self._pos = start + length
        return bytes(buf[start:self._pos])

    def frames(self, data: bytes = b"") -> list[bytes]:
        """Feed `data` and return every frame now complete (raises at the first bad one)."""
        self.feed(data)
        out = []
        while (frame := self.next_frame()) is not None:
            out.append(frame)
        return out
