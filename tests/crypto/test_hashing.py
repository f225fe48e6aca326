"""SHA-256 helpers and the RFC 6962 Merkle tree: roots, audit paths, and their verification."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.hashing import (
    EMPTY_ROOT,
    merkle_proof,
    merkle_root,
    sha256,
    sha256_hex,
    verify_merkle_proof,
)


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def rfc6962_root(leaves: list[bytes]) -> bytes:
    """MTH from RFC 6962 section 2.1, written as the RFC states it (recursive split)."""
    n = len(leaves)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + leaves[0])
    k = 1 << ((n - 1).bit_length() - 1)  # largest power of two < n
    return _h(b"\x01" + rfc6962_root(leaves[:k]) + rfc6962_root(leaves[k:]))


def _leaves(n: int) -> list[bytes]:
    return [b"leaf %d" % i for i in range(n)]


def test_sha256_helpers() -> None:
    assert sha256(b"abc").hex() == sha256_hex(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_empty_and_single_leaf_roots() -> None:
    assert merkle_root([]) == EMPTY_ROOT == _h(b"")
    assert merkle_root([b"a"]) == _h(b"\x00a")
    assert merkle_root([b"a", b"b"]) == _h(b"\x01" + _h(b"\x00a") + _h(b"\x00b"))


def test_rfc6962_reference_vector() -> None:
    # The 8-leaf tree of RFC 6962's reference tests (certificate-transparency
    # merkle_tree_test): leaves "", 00, 10, 2021, 3031, 40414243, 5051..57, 6061..6f.
    leaves = [bytes.fromhex(h) for h in (
        "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )]
    assert merkle_root(leaves).hex() == (
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    )


@pytest.mark.parametrize("n", range(0, 34))
def test_root_matches_the_rfc_definition(n: int) -> None:
    assert merkle_root(_leaves(n)) == rfc6962_root(_leaves(n))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 33])
def test_every_leaf_has_a_valid_proof(n: int) -> None:
    leaves = _leaves(n)
    root = merkle_root(leaves)
    for i, leaf in enumerate(leaves):
        proof = merkle_proof(leaves, i)
        assert verify_merkle_proof(leaf, proof, root)
        # The path is as long as the leaf's depth: at most ceil(log2 n).
        assert len(proof) <= max(0, (n - 1).bit_length())


@pytest.mark.parametrize("n", [2, 3, 5, 8, 13])
def test_proofs_fail_for_other_leaves_roots_and_tampered_paths(n: int) -> None:
    leaves = _leaves(n)
    root = merkle_root(leaves)
    other_root = merkle_root(_leaves(n + 1))
    for i, leaf in enumerate(leaves):
        proof = merkle_proof(leaves, i)
        assert not verify_merkle_proof(leaf + b"x", proof, root)
        assert not verify_merkle_proof(leaf, proof, other_root)
        for j, (is_left, sibling) in enumerate(proof):
            flipped = proof[:j] + [(not is_left, sibling)] + proof[j + 1:]
            assert not verify_merkle_proof(leaf, flipped, root)
            changed = proof[:j] + [(is_left, bytes([sibling[0] ^ 1]) + sibling[1:])] + proof[j + 1:]
            assert not verify_merkle_proof(leaf, changed, root)
        if proof:
            assert not verify_merkle_proof(leaf, proof[:-1], root)
        # A leaf's proof does not prove another leaf.
        other = leaves[(i + 1) % n]
        assert not verify_merkle_proof(other, proof, root)


def test_an_inner_node_cannot_pass_as_a_leaf() -> None:
    # Domain separation (0x00 leaves, 0x01 inner nodes): the concatenation of two
    # children is not a leaf of the tree.
    leaves = _leaves(4)
    root = merkle_root(leaves)
    left = _h(b"\x01" + _h(b"\x00" + leaves[0]) + _h(b"\x00" + leaves[1]))
    right = _h(b"\x01" + _h(b"\x00" + leaves[2]) + _h(b"\x00" + leaves[3]))
    assert root == _h(b"\x01" + left + right)
    fake_leaf = _h(b"\x00" + leaves[0]) + _h(b"\x00" + leaves[1])
    assert not verify_merkle_proof(fake_leaf, [(False, right)], root)


def test_duplicate_last_leaf_changes_the_root() -> None:
    # The odd node is promoted, not duplicated (the Bitcoin CVE-2012-2459 pitfall):
    # [a, b, c] and [a, b, c, c] have different roots.
    assert merkle_root([b"a", b"b", b"c"]) != merkle_root([b"a", b"b", b"c", b"c"])


@pytest.mark.parametrize("index", [-1, 3, 100])
def test_proof_index_out_of_range(index: int) -> None:
    with pytest.raises(IndexError, match="out of range"):
        merkle_proof(_leaves(3), index)


def test_proof_for_an_empty_tree_is_refused() -> None:
    with pytest.raises(IndexError):
        merkle_proof([], 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=40), st.data())
def test_random_trees(leaves: list[bytes], data: st.DataObject) -> None:
    root = merkle_root(leaves)
    assert root == rfc6962_root(leaves)
    i = data.draw(st.integers(0, len(leaves) - 1))
    assert verify_merkle_proof(leaves[i], merkle_proof(leaves, i), root)
