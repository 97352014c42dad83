"""Inclusion and consistency proofs for RFC 6962 trees (RFC 9162 sections 2.1.3 and 2.1.4).

Trees are addressed by *nodes*: ``(level, index)`` is the complete subtree of ``2**level`` leaves starting at
leaf ``index * 2**level``. A complete subtree's hash never changes once it exists, so storage can hand them out
from immutable tiles. Proof generation first plans which nodes it needs (pure arithmetic), reads them all with
one call to a :class:`NodeReader`, then folds them; verification needs no storage at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from consent_ledger.core.errors import InvalidInput, VerificationError
from consent_ledger.core.rfc6962 import EMPTY_ROOT, HASH_SIZE, hash_children

Node = tuple[int, int]
Range = tuple[int, int]


class NodeReader(Protocol):
    """Reads hashes of complete subtrees."""

    def read_nodes(self, nodes: Sequence[Node]) -> list[bytes]:
        """Return the hash of each node, in order. Every node must be a complete subtree of the stored tree."""
        ...


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n. Requires n > 1."""
    return 1 << ((n - 1).bit_length() - 1)


def range_nodes(begin: int, end: int) -> list[Node]:
    """The complete subtrees that make up leaves [begin, end), left to right, largest first.

    Requires begin < end and begin aligned as RFC 6962 ranges are (a multiple of the largest power of two
    not exceeding end - begin), which holds for every range a proof uses.
    """
    nodes: list[Node] = []
    while begin < end:
        level = (end - begin).bit_length() - 1
        # Alignment limits the subtree size too.
        if begin:
            level = min(level, (begin & -begin).bit_length() - 1)
        nodes.append((level, begin >> level))
        begin += 1 << level
    return nodes


def fold_range(hashes: Sequence[bytes]) -> bytes:
    """The RFC 6962 hash of a range from its complete subtrees (as listed by :func:`range_nodes`)."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = hash_children(h, acc)
    return acc


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The leaf ranges whose hashes form the inclusion proof of ``index`` in a tree of ``size``, bottom-up.

    Requires 0 <= index < size.
    """
    if not 0 <= index < size:
        raise InvalidInput(f"index {index} is out of range for tree size {size}")
    out: list[Range] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo = lo + k
    out.reverse()
    return out


def consistency_ranges(size1: int, size2: int) -> list[Range]:
    """The leaf ranges whose hashes form the consistency proof from ``size1`` to ``size2``, bottom-up.

    Requires 0 <= size1 <= size2. The proof is empty when size1 is 0 or equals size2.
    """
    if not 0 <= size1 <= size2:
        raise InvalidInput(f"cannot prove consistency from tree size {size1} to {size2}")
    if size1 == 0 or size1 == size2:
        return []
    out: list[Range] = []
    lo, hi, m, complete = 0, size2, size1, True
    # RFC 9162 SUBPROOF(m, D[lo:hi], complete), unrolled.
    while m != hi:
        k = _split(hi - lo)
        if m - lo <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo = lo + k
            complete = False
    if not complete:
        out.append((lo, hi))
    out.reverse()
    return out


def _prove_many(proofs: Sequence[list[Range]], reader: NodeReader) -> list[list[bytes]]:
    """The hashes of each proof's ranges, with every node read in one read_nodes call and every range folded once
    however many proofs share it."""
    plans = {r: range_nodes(*r) for ranges in proofs for r in ranges}
    wanted = sorted({n for plan in plans.values() for n in plan})
    hashes = dict(zip(wanted, reader.read_nodes(wanted)))
    folded = {r: fold_range([hashes[n] for n in plan]) for r, plan in plans.items()}
    return [[folded[r] for r in ranges] for ranges in proofs]


def prove_inclusion(index: int, size: int, reader: NodeReader) -> list[bytes]:
    """The inclusion proof of leaf ``index`` in the tree of ``size`` leaves. Requires 0 <= index < size."""
    return _prove_many([inclusion_ranges(index, size)], reader)[0]


def prove_inclusion_many(indices: Sequence[int], size: int, reader: NodeReader) -> list[list[bytes]]:
    """prove_inclusion of each of ``indices`` in the tree of ``size`` leaves, together: a batch's consecutive
    entries share most of their proofs (the ranges right of them up the tree). Requires 0 <= index < size for
    each."""
    return _prove_many([inclusion_ranges(i, size) for i in indices], reader)


def prove_consistency(size1: int, size2: int, reader: NodeReader) -> list[bytes]:
    """The consistency proof from tree ``size1`` to tree ``size2``. Requires 0 <= size1 <= size2."""
    return _prove_many([consistency_ranges(size1, size2)], reader)[0]


def tree_root(size: int, reader: NodeReader) -> bytes:
    """The root hash of the first ``size`` leaves. Requires size >= 0."""
    if size == 0:
        return EMPTY_ROOT
    nodes = range_nodes(0, size)
    return fold_range(reader.read_nodes(nodes))


def _check_hashes(proof: Sequence[bytes], expected: int, what: str) -> None:
    if len(proof) != expected:
        raise VerificationError(f"{what} proof has {len(proof)} hashes, expected {expected}")
    for h in proof:
        if not isinstance(h, bytes | bytearray) or len(h) != HASH_SIZE:
            raise VerificationError(f"{what} proof holds a hash that is not {HASH_SIZE} bytes")


def root_from_inclusion_proof(index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof. Requires 0 <= index < size; raises VerificationError otherwise."""
    if not 0 <= index < size:
        raise VerificationError(f"index {index} is out of range for tree size {size}")
    if len(leaf_hash) != HASH_SIZE:
        raise VerificationError("leaf hash is not 32 bytes")
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    _check_hashes(proof, inner + border, "inclusion")
    fn, sn, r = index, size - 1, bytes(leaf_hash)
    for p in proof:
        if fn & 1 or fn == sn:
            r = hash_children(p, r)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            r = hash_children(r, p)
        fn >>= 1
        sn >>= 1
    return r


def verify_inclusion(index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    Requires 0 <= index < size. Raises VerificationError when the proof does not hold.
    """
    if root_from_inclusion_proof(index, size, leaf_hash, proof) != root:
        raise VerificationError(f"inclusion proof for index {index} does not match the root of tree size {size}")


def roots_from_consistency_proof(
    size1: int, size2: int, root1: bytes, proof: Sequence[bytes]
) -> tuple[bytes, bytes]:
    """The roots (of size1, of size2) a consistency proof implies. Requires 0 < size1 < size2.

    When size1 is a power of two the proof holds no hash of the smaller tree (RFC 9162 2.1.4.2 seeds it with
    ``root1``), so the first root returned is ``root1`` itself; otherwise ``root1`` is not used. Raises
    VerificationError for a proof of the wrong shape. A proof that implies ``root2`` of a signed checkpoint of
    size2 commits to the root at size1 of that tree: a different root1 signed for size1 is a split view.
    """
    if not 0 < size1 < size2:
        raise VerificationError(f"no consistency proof from tree size {size1} to {size2}")
    _check_hashes(proof, len(consistency_ranges(size1, size2)), "consistency")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # size1 is a power of two: its root is the first node of the path
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            sr = hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError(f"consistency proof from tree size {size1} to {size2} has the wrong shape")
    return fr, sr


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> None:
    """Check that the tree of ``size1`` with ``root1`` is a prefix of the tree of ``size2`` with ``root2``.

    Requires 0 <= size1 <= size2. Raises VerificationError when the proof does not hold.
    """
    if not 0 <= size1 <= size2:
        raise VerificationError(f"tree size {size1} is larger than {size2}")
    if size1 == size2 or size1 == 0:
        _check_hashes(proof, 0, "consistency")
        if size1 == size2 and root1 != root2:
            raise VerificationError(f"two different roots for tree size {size1}")
        return
    try:
        fr, sr = roots_from_consistency_proof(size1, size2, root1, proof)
    except VerificationError as e:
        if "wrong shape" in str(e):
            raise VerificationError(f"consistency proof from tree size {size1} to {size2} does not hold") from None
        raise
    if fr != root1 or sr != root2:
        raise VerificationError(f"consistency proof from tree size {size1} to {size2} does not hold")
