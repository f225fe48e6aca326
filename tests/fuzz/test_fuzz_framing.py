"""The peer frame decoder (node.p2p.framing.FrameDecoder) against valid streams cut
anywhere, mutated streams and hostile length prefixes.

tests/p2p/test_fuzz.py feeds it random chunks; these targets start from valid
streams, so that the interesting paths (frames split across reads, a bad prefix
after good frames, the dead decoder) are reached on every example.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.p2p.framing import (
    FrameDecoder,
    FrameError,
    MalformedFrameError,
    OversizedFrameError,
    encode_frame,
)

from .conftest import FUZZ, TIMEOUT_S, apply_edits, mutated

pytestmark = pytest.mark.timeout(TIMEOUT_S)
MAX = 512
MIN = 17

bodies = st.lists(st.binary(min_size=MIN, max_size=MAX), max_size=12)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """`data` split at `points` (taken modulo its length), in order."""
    marks = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in zip(marks, marks[1:], strict=False)]


def decode_all(chunks: list[bytes]) -> tuple[list[bytes], FrameError | None, FrameDecoder]:
    """Feed chunk by chunk, taking frames one at a time as the link does (`frames()`
    would drop the good frames of a chunk that also holds a bad prefix)."""
    decoder = FrameDecoder(MAX, MIN)
    out: list[bytes] = []
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            while (frame := decoder.next_frame()) is not None:
                out.append(frame)
            assert decoder.buffered < 4 + MAX
    except FrameError as exc:
        return out, exc, decoder
    return out, None, decoder


@FUZZ
@given(bodies, st.lists(st.integers(0, 10_000), max_size=20))
def test_valid_stream_cut_anywhere_comes_out_whole(frames, points):
    stream = b"".join(encode_frame(f, MAX) for f in frames)
    out, error, decoder = decode_all(cut(stream, points))
    assert error is None and out == frames and decoder.buffered == 0


@FUZZ
@given(bodies, st.integers(0, 12), st.integers(MAX + 1, 2**32 - 1),
       st.lists(st.integers(0, 10_000), max_size=10))
def test_oversized_prefix_fails_after_the_frames_before_it(frames, where, length, points):
    where = min(where, len(frames))
    stream = b"".join(encode_frame(f, MAX) for f in frames[:where]) + length.to_bytes(4, "big")
    out, error, decoder = decode_all(cut(stream, points))
    assert out == frames[:where]
    assert isinstance(error, OversizedFrameError), error
    with pytest.raises(OversizedFrameError):  # dead: the stream is out of sync
        decoder.frames(b"\x00" * 8)


@FUZZ
@given(mutated(bodies.map(lambda fs: b"".join(encode_frame(f, MAX) for f in fs))),
       st.lists(st.integers(0, 10_000), max_size=10))
def test_mutated_stream_yields_bounded_frames_or_one_frame_error(stream, points):
    out, error, decoder = decode_all(cut(stream, points))
    assert all(MIN <= len(f) <= MAX for f in out)
    assert error is None or isinstance(error, (OversizedFrameError, MalformedFrameError))
    if error is not None:
        with pytest.raises(type(error)):
            decoder.next_frame()


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate",
                                            "duplicate"]),
                          st.integers(0, 1 << 20), st.integers(0, 255),
                          st.binary(min_size=1, max_size=8)), max_size=3),
       st.integers(0, 2**32 - 1))
def test_any_length_prefix_is_decided_from_four_bytes(edits, length):
    decoder = FrameDecoder(MAX, MIN)
    prefix = apply_edits(length.to_bytes(4, "big"), edits)[:4]
    try:
        decoder.feed(prefix)
        frame = decoder.next_frame()
    except OversizedFrameError:
        assert len(prefix) == 4 and int.from_bytes(prefix, "big") > MAX
        return
    except MalformedFrameError:
        assert len(prefix) == 4 and int.from_bytes(prefix, "big") < MIN
        return
    assert frame is None  # a complete, in-window prefix waits for its body
