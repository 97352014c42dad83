"""Merkle proofs: Go sumdb vectors, a naive reference for every size 1..64, and systematic mutations."""

from __future__ import annotations

import base64
import json
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consent_ledger.core import merkle
from consent_ledger.core.errors import InvalidInput, VerificationError
from consent_ledger.core.rfc6962 import EMPTY_ROOT, hash_leaf

from .merkle_reference import consistency, mth, path
from .merkle_support import MemoryTree

VECTORS = json.loads((pathlib.Path(__file__).parent / "data" / "tlog_vectors.json").read_text())
LEAVES = [base64.b64decode(x) for x in VECTORS["leaves_b64"]]
ROOTS = [base64.b64decode(x) for x in VECTORS["roots_b64"]]


def b64list(xs):
    return [base64.b64decode(x) for x in xs]


@pytest.fixture(scope="module")
def vector_tree() -> MemoryTree:
    tree = MemoryTree()
    tree.append(LEAVES)
    return tree


def test_roots_match_go(vector_tree):
    for size in range(1, len(LEAVES) + 1):
        assert merkle.tree_root(size, vector_tree) == ROOTS[size - 1], size
    assert merkle.tree_root(0, vector_tree) == EMPTY_ROOT


def test_inclusion_vectors(vector_tree):
    assert VECTORS["inclusion"]
    for v in VECTORS["inclusion"]:
        proof = b64list(v["proof"])
        assert merkle.prove_inclusion(v["index"], v["size"], vector_tree) == proof
        merkle.verify_inclusion(v["index"], v["size"], hash_leaf(LEAVES[v["index"]]), proof, ROOTS[v["size"] - 1])


def test_consistency_vectors(vector_tree):
    assert VECTORS["consistency"]
    for v in VECTORS["consistency"]:
        proof = b64list(v["proof"])
        old, new = v["old_size"], v["new_size"]
        assert merkle.prove_consistency(old, new, vector_tree) == proof
        merkle.verify_consistency(old, new, ROOTS[old - 1], ROOTS[new - 1], proof)


def test_exhaustive_against_naive_reference():
    leaves = [bytes([i]) * (i % 5) for i in range(64)]
    tree = MemoryTree()
    # Grow the tree in uneven batches so the tile code sees partial and completed rows.
    for chunk in (leaves[:1], leaves[1:3], leaves[3:40], leaves[40:41], leaves[41:]):
        tree.append(chunk)
    for n in range(1, 65):
        root = mth(leaves[:n])
        assert merkle.tree_root(n, tree) == root
        for m in range(n):
            proof = merkle.prove_inclusion(m, n, tree)
            assert proof == path(m, leaves[:n])
            merkle.verify_inclusion(m, n, hash_leaf(leaves[m]), proof, root)
        for m in range(0, n + 1):
            proof = merkle.prove_consistency(m, n, tree)
            assert proof == consistency(m, leaves[:n])
            if m:
                merkle.verify_consistency(m, n, mth(leaves[:m]), root, proof)


def test_large_tree_crosses_tile_levels():
    tree = MemoryTree()
    leaves = [i.to_bytes(4, "big") for i in range(256 * 256 + 300)]
    tree.append(leaves[:1000])
    tree.append(leaves[1000:])
    n = len(leaves)
    root = merkle.tree_root(n, tree)
    assert root == mth(leaves)
    for m in (0, 255, 256, 65535, 65536, n - 1):
        merkle.verify_inclusion(m, n, hash_leaf(leaves[m]), merkle.prove_inclusion(m, n, tree), root)
    for old in (1, 256, 65536, 65800, n):
        merkle.verify_consistency(old, n, mth(leaves[:old]), root, merkle.prove_consistency(old, n, tree))


def _mutations(proof: list[bytes]):
    """Systematic mutations of a valid proof: flip bits, drop, add, reorder, truncate or extend hashes."""
    for i, h in enumerate(proof):
        for bit in (0, 7, 255):
            flipped = bytearray(h)
            flipped[bit // 8] ^= 1 << (bit % 8)
            yield f"flip {i}/{bit}", proof[:i] + [bytes(flipped)] + proof[i + 1 :]
        yield f"drop {i}", proof[:i] + proof[i + 1 :]
        yield f"short {i}", proof[:i] + [h[:31]] + proof[i + 1 :]
        yield f"long {i}", proof[:i] + [h + b"\x00"] + proof[i + 1 :]
    yield "append", proof + [b"\x00" * 32]
    yield "prepend", [b"\x00" * 32] + proof
    if len(proof) > 1:
        yield "swap", [proof[1], proof[0]] + proof[2:]


def test_inclusion_mutations_rejected():
    leaves = [bytes([i]) for i in range(23)]
    tree = MemoryTree()
    tree.append(leaves)
    for n in (1, 2, 7, 16, 23):
        root = mth(leaves[:n])
        for m in range(n):
            proof = merkle.prove_inclusion(m, n, tree)
            lh = hash_leaf(leaves[m])
            for name, bad in _mutations(proof):
                with pytest.raises(VerificationError):
                    merkle.verify_inclusion(m, n, lh, bad, root)
                    pytest.fail(name)
            # Only the index: a proof may also fit a neighbouring size; the size comes from the signed checkpoint.
            for wrong_m, wrong_n in ((m + 1, n), (m - 1, n)):
                if 0 <= wrong_m < wrong_n and (wrong_m, wrong_n) != (m, n):
                    with pytest.raises(VerificationError):
                        merkle.verify_inclusion(wrong_m, wrong_n, lh, proof, root)
            with pytest.raises(VerificationError):
                merkle.verify_inclusion(m, n, hash_leaf(b"other"), proof, root)


def test_consistency_mutations_rejected():
    leaves = [bytes([i]) for i in range(23)]
    tree = MemoryTree()
    tree.append(leaves)
    for n in (2, 7, 16, 23):
        for m in range(1, n):
            proof = merkle.prove_consistency(m, n, tree)
            r1, r2 = mth(leaves[:m]), mth(leaves[:n])
            for name, bad in _mutations(proof):
                with pytest.raises(VerificationError):
                    merkle.verify_consistency(m, n, r1, r2, bad)
                    pytest.fail(name)
            for wm, wn in ((m + 1, n), (m - 1, n)):
                if 0 < wm < wn and (wm, wn) != (m, n):
                    with pytest.raises(VerificationError):
                        merkle.verify_consistency(wm, wn, r1, r2, proof)
            with pytest.raises(VerificationError):
                merkle.verify_consistency(m, n, r2, r1, proof)


def test_preconditions():
    with pytest.raises(InvalidInput, match="out of range"):
        merkle.inclusion_ranges(5, 5)
    with pytest.raises(InvalidInput, match="cannot prove consistency"):
        merkle.consistency_ranges(6, 5)
    with pytest.raises(VerificationError, match="larger"):
        merkle.verify_consistency(6, 5, b"\x00" * 32, b"\x00" * 32, [])
    with pytest.raises(VerificationError, match="different roots"):
        merkle.verify_consistency(5, 5, b"\x00" * 32, b"\x01" * 32, [])


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000), st.data())
def test_proof_lengths_are_planned_consistently(n, data):
    m = data.draw(st.integers(0, n - 1))
    ranges = merkle.inclusion_ranges(m, n)
    assert len(ranges) <= n.bit_length()
    old = data.draw(st.integers(1, n))
    for b, e in merkle.consistency_ranges(old, n):
        assert 0 <= b < e <= n


def test_many_inclusion_proofs_at_once_match_go_and_read_once(vector_tree):
    """prove_inclusion_many (a batch's answers): the Go vectors, one read_nodes call, and each proof the same as
    prove_inclusion's."""
    by_size: dict[int, list[dict]] = {}
    for v in VECTORS["inclusion"]:
        by_size.setdefault(v["size"], []).append(v)
    reads: list[int] = []

    class Counting:
        def read_nodes(self, nodes):
            reads.append(len(nodes))
            return vector_tree.read_nodes(nodes)

    for size, vs in by_size.items():
        reads.clear()
        got = merkle.prove_inclusion_many([v["index"] for v in vs], size, Counting())
        assert got == [b64list(v["proof"]) for v in vs]
        assert len(reads) == 1


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 3000), st.data())
def test_many_inclusion_proofs_equal_one_at_a_time(n, data):
    tree = MemoryTree()
    tree.append([i.to_bytes(4, "big") for i in range(n)])
    indices = data.draw(st.lists(st.integers(0, n - 1), max_size=40))
    assert merkle.prove_inclusion_many(indices, n, tree) == [merkle.prove_inclusion(i, n, tree) for i in indices]
