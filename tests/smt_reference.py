"""A deliberately naive consent-state map, written straight from docs/design.md section 5, for cross-checking.

Keys are handled as strings of 256 '0'/'1' characters and sets as lists, and ``h(S, d)`` recurses by the
definition; nothing is shared with consent_ledger.core.smt. Slow on purpose: keep sets to a few thousand.
"""

from __future__ import annotations

import functools
import hashlib

ZERO = bytes(32)


@functools.lru_cache(maxsize=1 << 16)
def bits(key: bytes) -> str:
    assert len(key) == 32
    return format(int.from_bytes(key, "big"), "0256b")


def leaf_hash(key: bytes, value: bytes) -> bytes:
    return hashlib.sha256(b"\x02" + key + value).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x03" + left + right).digest()


def h(pairs: list[tuple[bytes, bytes]], d: int) -> bytes:
    """H(S, d) for S = pairs (whose keys share their first d bits)."""
    if not pairs:
        return ZERO
    if len(pairs) == 1:
        return leaf_hash(*pairs[0])
    assert d < 256, "two pairs with the same key"
    zeros = [p for p in pairs if bits(p[0])[d] == "0"]
    ones = [p for p in pairs if bits(p[0])[d] == "1"]
    return node_hash(h(zeros, d + 1), h(ones, d + 1))


def ref_root(pairs: dict[bytes, bytes]) -> bytes:
    return h(list(pairs.items()), 0)


def ref_prove(pairs: dict[bytes, bytes], key: bytes) -> tuple[list[bytes], tuple[bytes, bytes] | None]:
    """(siblings bottom-up, the pair found or None): walk down while the subtree holds two pairs or more."""
    k = bits(key)
    s = list(pairs.items())
    top_down: list[bytes] = []
    d = 0
    while len(s) > 1:
        same = [p for p in s if bits(p[0])[d] == k[d]]
        other = [p for p in s if bits(p[0])[d] != k[d]]
        top_down.append(h(other, d + 1))
        s = same
        d += 1
    return top_down[::-1], (s[0] if s else None)


def ref_verify(root: bytes, key: bytes, siblings: list[bytes], leaf: tuple[bytes, bytes] | None) -> bytes | None:
    """The value hash (present) or None (absent); raises AssertionError when the proof does not hold."""
    k = bits(key)
    n = len(siblings)
    assert n <= 256 and all(len(s) == 32 for s in siblings)
    if leaf is None:
        acc = ZERO
    else:
        assert bits(leaf[0])[:n] == k[:n], "found pair is not on the key's path"
        acc = leaf_hash(*leaf)
    for i, s in enumerate(siblings):
        d = n - 1 - i
        acc = node_hash(s, acc) if k[d] == "1" else node_hash(acc, s)
    assert acc == root, "proof does not fold to the root"
    return leaf[1] if leaf is not None and leaf[0] == key else None
