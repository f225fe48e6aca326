"""Sans-IO pieces of node.p2p: frame decoder, send queue, backoff."""

from __future__ import annotations

import asyncio
import random

import pytest

from node.p2p.backoff import Backoff
from node.p2p.framing import (
    FrameDecoder,
    MalformedFrameError,
    OversizedFrameError,
    encode_frame,
)
from node.p2p.send_queue import SendQueue


def test_frames_split_anywhere_come_out_whole_and_in_order():
    bodies = [b"", b"a", b"bc" * 100, bytes(range(256))]
    stream = b"".join(encode_frame(b) for b in bodies)
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder(1024)
        assert decoder.frames(stream[:cut]) + decoder.frames(stream[cut:]) == bodies
        assert decoder.buffered == 0


def test_oversized_announcement_is_refused_from_the_header_alone():
    decoder = FrameDecoder(max_frame_bytes=1024)
    with pytest.raises(OversizedFrameError, match="2147483648 bytes"):
        decoder.frames((2**31).to_bytes(4, "big"))  # no body follows: nothing is awaited
    assert decoder.buffered == 0
    with pytest.raises(OversizedFrameError, match="already failed"):
        decoder.feed(b"\x00\x00\x00\x01x")


def test_frames_before_a_bad_one_still_come_out():
    decoder = FrameDecoder(max_frame_bytes=8)
    decoder.feed(encode_frame(b"ok") + (9).to_bytes(4, "big") + b"123456789")
    assert decoder.next_frame() == b"ok"
    with pytest.raises(OversizedFrameError):
        decoder.next_frame()


def test_short_frame_is_malformed():
    decoder = FrameDecoder(max_frame_bytes=1024, min_frame_bytes=17)
    with pytest.raises(MalformedFrameError):
        decoder.frames(encode_frame(b"x" * 16))


def test_encode_refuses_oversized_body():
    with pytest.raises(OversizedFrameError):
        encode_frame(b"x" * 11, max_frame_bytes=10)


def test_send_queue_drops_oldest_by_count_and_by_bytes():
    queue = SendQueue(max_messages=3, max_bytes=10)
    assert [queue.put(p) for p in (b"1", b"2", b"3", b"4")] == [0, 0, 0, 1]
    assert queue.put(b"x" * 9) == 2  # 9 + 3 queued bytes > 10: the two oldest go
    assert queue.dropped == 3 and queue.bytes == 10
    assert [queue.get_nowait(), queue.get_nowait(), queue.get_nowait()] == [b"4", b"x" * 9, None]
    with pytest.raises(ValueError):
        queue.put(b"y" * 11)


async def test_send_queue_get_waits_for_a_put():
    queue = SendQueue(4, 100)
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.put(b"hello")
    assert await asyncio.wait_for(getter, 1) == b"hello"


def test_backoff_grows_is_jittered_and_bounded():
    backoff = Backoff(0.1, 2.0, random.Random(7))
    delays = [backoff.next_delay() for _ in range(100)]
    assert 0.05 <= delays[0] <= 0.1
    assert 0.1 <= delays[1] <= 0.2
    assert all(1.0 <= d <= 2.0 for d in delays[5:])
    assert len(set(delays)) == len(delays)  # jittered
    backoff.reset()
    assert backoff.next_delay() <= 0.1
