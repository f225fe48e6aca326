"""Shared settings and strategies of the fuzz tests, and the live single-node target.

Bounded in CI, longer on demand:

    BFTNODE_FUZZ_EXAMPLES=N   examples per fuzz target (default 200)
    BFTNODE_FUZZ_RANDOM=1     explore afresh each run (default: derandomized, so a CI
                              run is reproducible; a failure prints its example)

Offline targets feed the sans-IO decoders directly; the live ones (test_fuzz_http,
test_fuzz_peer_link) drive one real in-process validator over 127.0.0.1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from node import localnet

EXAMPLES = int(os.environ.get("BFTNODE_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("BFTNODE_FUZZ_RANDOM", "") != "1",
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)
"""Every fuzz target runs under these settings."""
TIMEOUT_S = 120 + EXAMPLES // 2
"""Per-test bound: a hang fails the test instead of stalling the suite."""

# --- mutations ------------------------------------------------------------------------------

_EDIT = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "truncate", "duplicate"]),
    st.integers(0, 1 << 30),          # position, taken modulo the length
    st.integers(0, 255),              # a byte / bit index / length, as the edit needs
    st.binary(min_size=1, max_size=16),
)


def apply_edits(data: bytes, edits: list[tuple[str, int, int, bytes]]) -> bytes:
    """`data` after each edit in turn (every edit changes or shortens the bytes)."""
    out = bytearray(data)
    for op, pos, n, blob in edits:
        at = pos % (len(out) + 1)
        if op == "flip" and out:
            out[at % len(out)] ^= 1 << (n % 8)
        elif op == "set" and out:
            i = at % len(out)
            out[i] = n if out[i] != n else (n + 1) % 256
        elif op == "insert":
            out[at:at] = blob
        elif op == "delete" and out:
            del out[at:at + 1 + n % 8]
        elif op == "truncate":
            del out[at:]
        elif op == "duplicate" and out:
            out[at:at] = out[at:at + 1 + n]
    return bytes(out)


def mutated(seeds: st.SearchStrategy[bytes], max_edits: int = 4) -> st.SearchStrategy[bytes]:
    """Valid encodings from `seeds`, changed by 1..max_edits random edits."""
    return st.builds(apply_edits, seeds, st.lists(_EDIT, min_size=1, max_size=max_edits))


MSGPACK_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
    st.binary(max_size=80), st.text(max_size=40))
MSGPACK_VALUES = st.recursive(
    MSGPACK_SCALARS, lambda inner: st.lists(inner, max_size=6), max_leaves=24)
"""Plain values msgpack can carry (no maps: no wire message uses them)."""


def replace_node(obj: object, path: list[int], value: object) -> object:
    """A copy of nested lists `obj` with the node at `path` (indices taken modulo the
    list lengths; stops at the first non-list) replaced by `value`."""
    if not path or not isinstance(obj, list) or not obj:
        return value
    i = path[0] % len(obj)
    copy = list(obj)
    copy[i] = replace_node(obj[i], path[1:], value)
    return copy


# --- the live target -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def single_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localnet.Localnet]:
    """One in-process validator (it commits alone) that also allows the test peer key."""
    from tests.integration.harness import observer_key, up_with_overrides

    port = localnet.PortAllocator().take()
    peer = observer_key(b"fuzz-peer")
    net = up_with_overrides(tmp_path_factory.mktemp("fuzz-node"), 1, runtime="inprocess",
                            extra_peers={0: [f"{peer.public_key.hex()}@127.0.0.1:{port}"]})
    try:
        yield net
    finally:
        localnet.down(net)
