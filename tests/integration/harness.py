"""Helpers for the fault, limit and fuzz tests that drive a real localnet from outside.

- `up_with_overrides`: a localnet whose nodes get their own config overrides
  (written with node.config.write_config into the generated homes before start);
- `RawPeer`: a peer that runs the real secure-channel handshake over a plain
  socket and then sends whatever it likes (frames of any size, any payload);
- `metrics` / `metric`: read a node's Prometheus counters;
- `tree_memory`: RSS and PSS summed over a node's whole process tree (/proc);
- `inprocess_node`: one started validator in this process (in-process runtime), for
  tests that call the Node's own methods as well as its listeners.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Any

from crypto import PrivateKey
from crypto.secure_channel import AUTH_SIZE, HELLO_SIZE, Handshake, SecureChannel
from node import localnet
from node.config import apply_overrides, load_config, write_config
from node.genesis import load_genesis
from node.p2p.framing import LENGTH_PREFIX_SIZE
from node.p2p.transport import FRAME_DATA, FRAME_OVERHEAD, FRAME_READY
from node.supervisor import Node


def up_with_overrides(directory: str | os.PathLike[str], validators: int, *,
                      runtime: str = "inprocess", app: str = "kvstore",
                      overrides: Mapping[int, Mapping[str, Mapping[str, Any]]] | None = None,
                      extra_peers: Mapping[int, list[str]] | None = None,
                      timeout: float = 90.0) -> localnet.Localnet:
    """Like `localnet.up`, with per-node config overrides and extra allowed peers.

    `overrides[i]` is applied to node i's generated config (same shape as the
    TOML); `extra_peers[i]` are ``"<pubkey hex>@host:port"`` entries appended to
    node i's ``[p2p] peers`` (a key listed there may connect to it).
    """
    net = localnet.generate(directory, validators, app=app, runtime=runtime)
    for i, node in enumerate(net.nodes):
        cfg = load_config(node.home)
        if overrides and i in overrides:
            cfg = apply_overrides(cfg, overrides[i], source=f"node{i} test overrides")
        if extra_peers and i in extra_peers:
            cfg = apply_overrides(cfg, {"p2p": {"peers": cfg.p2p.peers + extra_peers[i]}})
        write_config(node.home, cfg)
    try:
        for node in net.nodes:
            localnet.spawn(node)
        net.save()
        failed = localnet.wait_ready(net.nodes, timeout)
    except BaseException:
        localnet.down(net)
        raise
    if failed:
        localnet.down(net)
        raise AssertionError(f"nodes did not start: {failed}")
    return net


# --- metrics ------------------------------------------------------------------------------


def metrics(rpc: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(rpc + "/metrics", timeout=timeout) as resp:
        return resp.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric_name, _, label_text = head.partition("{")
        if metric_name != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


# --- memory ---------------------------------------------------------------------------------


def tree_memory(node: localnet.LocalnetNode) -> dict[str, int]:
    """{"processes", "rss", "anon", "pss"} of every process of `node` now, in bytes.

    RSS overcounts pages shared by several processes; PSS shares them out, so it
    can be summed. "anon" is the anonymous part of RSS (the heap): the rest is
    file-backed, mostly LMDB's memory map, which the kernel reclaims at will.
    """
    rss = anon = pss = count = 0
    for pid in localnet.node_tree(node):
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("RssAnon:"):
                        anon += int(line.split()[1]) * 1024
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
            count += 1
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return {"processes": count, "rss": rss, "anon": anon, "pss": pss}


# --- a raw peer -------------------------------------------------------------------------------


def p2p_address(node: localnet.LocalnetNode) -> tuple[str, int]:
    host, _, port = node.p2p.rpartition(":")
    return host, int(port)


class RawPeer:
    """A TCP client that runs the real handshake as `key`, then sends anything.

    Blocking sockets with a timeout on every read: nothing here can hang a test.
    """

    def __init__(self, address: tuple[str, int], timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.timeout = timeout
        self.channel: SecureChannel | None = None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def recv_exactly(self, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            chunk = self.sock.recv(size - len(out))
            if not chunk:
                raise ConnectionError(f"closed after {len(out)} of {size} bytes")
            out += chunk
        return bytes(out)

    def handshake(self, key: PrivateKey, chain_id: str, node_public_key: bytes) -> None:
        hs = Handshake(key, chain_id, {node_public_key}, expected_peer=node_public_key)
        self.sock.sendall(hs.hello())
        self.sock.sendall(hs.receive_hello(self.recv_exactly(HELLO_SIZE)))
        self.channel = hs.receive_auth(self.recv_exactly(AUTH_SIZE))
        self.send_frame(FRAME_READY)
        ready = self.recv_exactly(LENGTH_PREFIX_SIZE + FRAME_OVERHEAD)
        if self.channel.decrypt(ready[LENGTH_PREFIX_SIZE:]) != bytes([FRAME_READY]):
            raise ConnectionError("the node's first frame is not READY")

    def sealed_frame(self, kind: int, body: bytes = b"") -> bytes:
        assert self.channel is not None, "handshake first"
        ciphertext = self.channel.encrypt(bytes([kind]) + body)
        return len(ciphertext).to_bytes(LENGTH_PREFIX_SIZE, "big") + ciphertext

    def send_frame(self, kind: int, body: bytes = b"") -> None:
        self.sock.sendall(self.sealed_frame(kind, body))

    def send_payloads(self, payloads: list[bytes]) -> None:
        """DATA frames, written in one go (one syscall for many small frames)."""
        self.sock.sendall(b"".join(self.sealed_frame(FRAME_DATA, p) for p in payloads))

    def closed_by_remote(self, timeout: float = 5.0) -> bool:
        """Whether the node closes the connection within `timeout` (what it sends is
        read and dropped)."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                if not self.sock.recv(1 << 16):
                    return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        finally:
            self.sock.settimeout(self.timeout)
        return False


def observer_key(tag: bytes = b"observer") -> PrivateKey:
    """A deterministic non-validator key for tests (allowed only where configured)."""
    from crypto import sha256

    return PrivateKey(sha256(b"bftnode-test-" + tag))


__all__ = ["RawPeer", "metric", "metrics", "observer_key", "p2p_address", "tree_memory",
           "up_with_overrides"]


@contextlib.asynccontextmanager
async def inprocess_node(directory: str | os.PathLike[str]) -> AsyncIterator[Node]:
    """A one-validator network generated in `directory`, its node started here."""
    net = localnet.generate(directory, 1, runtime="inprocess")
    cfg = load_config(net.nodes[0].home)
    node = Node(cfg, load_genesis(cfg.genesis_path))
    await node.start()
    try:
        yield node
    finally:
        await node.stop()
