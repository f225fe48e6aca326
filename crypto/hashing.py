"""SHA-256 helpers and the binary Merkle root used for payload and tx-list digests."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

DIGEST_SIZE = 32

# Leaf and inner nodes are hashed under different prefixes (RFC 6962) so that an
# inner node can never be passed off as a leaf.
_LEAF = b"\x00"
_INNER = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 Merkle tree hash of `leaves` (sha256 of b"" when empty)."""
    if not leaves:
        return EMPTY_ROOT
    level = [hashlib.sha256(_LEAF + leaf).digest() for leaf in leaves]
    while len(level) > 1:
        nxt = [hashlib.sha256(_INNER + level[i] + level[i + 1]).digest()
               for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def merkle_proof(leaves: Sequence[bytes], index: int) -> list[tuple[bool, bytes]]:
    """Audit path for leaf `index`: a list of (sibling_is_left, sibling_hash)."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf index {index} out of range for {len(leaves)} leaves")
    level = [hashlib.sha256(_LEAF + leaf).digest() for leaf in leaves]
    path: list[tuple[bool, bytes]] = []
    i = index
    while len(level) > 1:
        if i % 2 == 1:
            path.append((True, level[i - 1]))
        elif i + 1 < len(level):
            path.append((False, level[i + 1]))
        nxt = [hashlib.sha256(_INNER + level[j] + level[j + 1]).digest()
               for j in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        i //= 2
    return path


def verify_merkle_proof(leaf: bytes, proof: Sequence[tuple[bool, bytes]], root: bytes) -> bool:
    node = hashlib.sha256(_LEAF + leaf).digest()
    for sibling_is_left, sibling in proof:
        if sibling_is_left:
            node = hashlib.sha256(_INNER + sibling + node).digest()
        else:
            node = hashlib.sha256(_INNER + node + sibling).digest()
    return node == root
