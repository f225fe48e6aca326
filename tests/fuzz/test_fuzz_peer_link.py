"""A connected peer sends random and mutated peer messages to a real node over an
authenticated link: the node neither crashes nor drops the link for bad content,
keeps committing, and counts every message its decoder refuses, exactly.

The peer is a non-validator key the node allows (tests/fuzz/conftest.py), so it
reaches the node's message routing (node.supervisor) like any peer would, with
payloads built from valid messages of every type (tests/fuzz/test_fuzz_peer_messages).
"""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.codec import CodecError, Limits, pack, unpack
from crypto import address
from node import localnet
from node.config import NodeConfig
from node.wire import PEER_MESSAGES
from tests.integration.harness import RawPeer, metric, metrics, observer_key, p2p_address

from .conftest import FUZZ, MSGPACK_VALUES, TIMEOUT_S, mutated, replace_node
from .test_fuzz_peer_messages import VALID

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300 + TIMEOUT_S)]
LIMITS = Limits(max_bytes=NodeConfig().p2p.max_frame_bytes)


def structural(data: bytes, path: list[int], value: object) -> bytes:
    try:
        return pack(replace_node(unpack(data), path, value))
    except CodecError:
        return data


payloads = st.one_of(
    st.binary(max_size=300),
    mutated(st.sampled_from(VALID), max_edits=4),
    st.builds(structural, st.sampled_from(VALID),
              st.lists(st.integers(0, 64), min_size=1, max_size=4), MSGPACK_VALUES),
    st.sampled_from(VALID),
)


def refused_by_decoder(payload: bytes) -> bool:
    try:
        PEER_MESSAGES.decode(payload, LIMITS)
    except CodecError:
        return True
    return False


def test_fuzzed_peer_messages_are_refused_and_counted(single_node):
    node = single_node.nodes[0]
    key = observer_key(b"fuzz-peer")
    start_height = localnet.fetch_status(node.rpc)["height"]
    before = metric(metrics(node.rpc), "bftnode_messages_rejected_total", reason="malformed")
    peer = RawPeer(p2p_address(node), timeout=30)
    peer.handshake(key, single_node.chain_id, bytes.fromhex(node.public_key))
    stop = threading.Event()

    def drain() -> None:  # the node answers sync and batch requests: read them away
        while not stop.is_set():
            try:
                if not peer.sock.recv(1 << 16):
                    return
            except OSError:
                return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    sent = {"payloads": 0, "malformed": 0}
    try:
        @FUZZ
        @given(st.lists(payloads, min_size=1, max_size=8))
        def one(batch):
            peer.send_payloads(batch)
            sent["payloads"] += len(batch)
            sent["malformed"] += sum(refused_by_decoder(p) for p in batch)

        one()
        expected = before + sent["malformed"]
        deadline = time.monotonic() + 30
        while metric(metrics(node.rpc), "bftnode_messages_rejected_total",
                     reason="malformed") < expected:
            assert time.monotonic() < deadline, "the node did not count every bad message"
            time.sleep(0.2)
        status = localnet.fetch_status(node.rpc)
        assert address(key.public_key) in status["peers"], "the node dropped the link"
    finally:
        stop.set()
        peer.close()
        reader.join(5)
    print(f"\n{sent['payloads']} payloads, {sent['malformed']} refused by the decoder")
    assert metric(metrics(node.rpc), "bftnode_messages_rejected_total",
                  reason="malformed") == expected
    deadline = time.monotonic() + 20
    while localnet.fetch_status(node.rpc)["height"] < start_height + 2:
        assert time.monotonic() < deadline, "the node stopped committing"
        time.sleep(0.2)
    assert localnet.fetch_status(node.rpc)["halted"] is None
