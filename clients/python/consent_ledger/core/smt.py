"""The consent-state map: a compressed sparse Merkle tree over 256-bit keys (docs/design.md section 5).

Hashing, for the set S of (key, value_hash) pairs whose keys share their first d bits::

    H(S, d) = 32 zero bytes                                if S is empty
            = SHA-256(0x02 || key || value_hash)           if S holds one pair (at every depth)
            = SHA-256(0x03 || H(S0, d+1) || H(S1, d+1))    otherwise; S0 / S1: the pairs whose bit d is 0 / 1

Bit d of a key counts from the most significant bit of byte 0. The root is ``H(all pairs, 0)``.

Stored form. The map is kept as *nodes* addressed by their position, the first ``depth`` bits of the keys
below them (see :func:`node_path`). A position holds a node exactly when its subtree is not empty and its
parent holds a :class:`MapBranch` (the root position always qualifies):

- :class:`MapBranch` ``(left, right)``: a subtree of two or more pairs, with the hashes of its two children
  (either may be 32 zero bytes); its hash is ``SHA-256(0x03 || left || right)``.
- :class:`MapLeaf` ``(key, value_hash)``: a subtree of exactly one pair, stored once, at the highest
  position where the pair is alone; nothing is stored below it.

So a map of n random keys has n leaves and about 1.44 n branches, a key's path is about log2(n) nodes, and a
batch rewrites the nodes on the paths of the keys it touches and nothing else. Inserting next to a leaf pushes
it down below a new branch; a deletion that leaves a single pair under a branch moves that pair's leaf up to
the branch's position (and the positions it leaves are deleted). Storage reaches the tree through
:class:`MapNodeReader`, one batched ``read`` per round: a walk reads a window of positions along each key's
path at once, so a proof at a million keys costs one read of about 24 positions.

Verification needs no storage: :func:`verify_map_proof` folds a :class:`MapProof` by the key's bits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from consent_ledger.core.errors import ConsentLedgerError, InvalidInput, VerificationError

__all__ = [
    "DEFAULT_WINDOW",
    "EMPTY_HASH",
    "HASH_SIZE",
    "KEY_BITS",
    "ROOT_PATH",
    "InconsistentMapNodes",
    "MapBranch",
    "MapLeaf",
    "MapNode",
    "MapNodeReader",
    "MapProof",
    "MemoryMapNodes",
    "apply_batch",
    "hash_leaf",
    "hash_children",
    "map_key",
    "map_root_from_proof",
    "node_path",
    "prove",
    "prove_many",
    "root",
    "value_hash",
    "verify_map_proof",
]

HASH_SIZE = 32
KEY_BITS = 256
LEAF_PREFIX = b"\x02"
NODE_PREFIX = b"\x03"
# The hash of an empty subtree, at every depth.
EMPTY_HASH = bytes(HASH_SIZE)

# Positions read per key and round when walking down: a map of a million random keys is about 21 levels deep.
DEFAULT_WINDOW = 24
# At most this many positions per round: a batch of many keys walks fewer levels per round (an empty or small
# map ends most walks at once, and the top levels are shared by every key anyway).
_ROUND_BUDGET = 1 << 16

_sha256 = hashlib.sha256


class InconsistentMapNodes(ConsentLedgerError):
    """The stored nodes do not form one tree: a child is missing or its hash is not what its parent holds.

    Either storage is corrupt or the map changed between two reads of one walk (a reader without a snapshot
    racing the sequencer); in the second case reading again succeeds. ``path`` is the position in question.
    """

    def __init__(self, path: bytes, what: str) -> None:
        super().__init__(f"map node {path.hex()}: {what}")
        self.path = path


# Hashing and derivations.


def hash_leaf(key: bytes, value_hash: bytes) -> bytes:
    """SHA-256(0x02 || key || value_hash)."""
    return _sha256(LEAF_PREFIX + key + value_hash).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x03 || left || right)."""
    return _sha256(NODE_PREFIX + left + right).digest()


def map_key(patient_public_key: bytes, selector: str) -> bytes:
    """SHA-256(patient || 0x00 || selector): the map key derivation of smt_vectors.json's examples, which the
    ledger no longer uses (anyone knowing a patient's key could test selectors against it): its map keys are map
    VRF outputs (core.vrf, docs/design.md section 5). Kept so the vectors' derivation example stays checked.

    Requires a 32-byte (Ed25519) public key and a non-empty selector; raises InvalidInput otherwise.
    """
    if not isinstance(patient_public_key, bytes | bytearray) or len(patient_public_key) != 32:
        raise InvalidInput("a patient public key is 32 bytes")
    if not isinstance(selector, str) or not selector:
        raise InvalidInput("a selector is a non-empty string")
    return _sha256(bytes(patient_public_key) + b"\x00" + selector.encode("utf-8")).digest()


_MAX_INDEX = (1 << 64) - 1


def value_hash(entries: Iterable[tuple[int, bytes]]) -> bytes:
    """The value of a key: SHA-256 over (8-byte big-endian leaf index || leaf hash), in increasing index order.

    ``entries`` are the in-force entries for the key as (leaf index, RFC 6962 leaf hash), in any order.
    Requires at least one entry (a key without in-force entries is absent from the map), distinct indices in
    0 .. 2**64-1 and 32-byte hashes; raises InvalidInput otherwise.
    """
    items = list(entries)
    if not items:
        raise InvalidInput("a key with no in-force entries is absent from the map and has no value hash")
    for index, leaf_hash in items:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= _MAX_INDEX:
            raise InvalidInput(f"leaf index {index!r} is not in 0 .. 2**64-1")
        if not isinstance(leaf_hash, bytes | bytearray) or len(leaf_hash) != HASH_SIZE:
            raise InvalidInput(f"the leaf hash of index {index} is not {HASH_SIZE} bytes")
    items.sort(key=lambda e: e[0])
    h = _sha256()
    previous = -1
    for index, leaf_hash in items:
        if index == previous:
            raise InvalidInput(f"leaf index {index} appears twice")
        h.update(index.to_bytes(8, "big"))
        h.update(leaf_hash)
        previous = index
    return h.digest()


def _bit(key: bytes, depth: int) -> int:
    return (key[depth >> 3] >> (7 - (depth & 7))) & 1


def _shares_prefix(a: bytes, b: bytes, bits: int) -> bool:
    """Whether a and b agree on their first ``bits`` bits."""
    whole, rest = divmod(bits, 8)
    if a[:whole] != b[:whole]:
        return False
    return rest == 0 or (a[whole] ^ b[whole]) >> (8 - rest) == 0


def node_path(depth: int, key: bytes) -> bytes:
    """The position at ``depth`` on ``key``'s path: the key's first ``depth`` bits, then a 1 bit, then 0 bits
    to the end of the byte (``depth // 8 + 1`` bytes; the root is ``b"\\x80"``). Requires 0 <= depth <= 256.

    The marker bit makes the encoding unambiguous across depths, so a position fits one binary column.
    """
    whole = depth >> 3
    if whole == 32:
        return key + b"\x80"
    rest = depth & 7
    return key[:whole] + _MARKED[rest][key[whole]]


# _MARKED[r][b]: byte b cut to its first r bits, then the marker bit.
_MARKED = [[bytes([(b & (0xFF00 >> r) & 0xFF) | (0x80 >> r)]) for b in range(256)] for r in range(8)]
ROOT_PATH = node_path(0, EMPTY_HASH)


def _check_key(key: object, what: str = "map key") -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) != HASH_SIZE:
        raise InvalidInput(f"a {what} is {HASH_SIZE} bytes")
    return bytes(key)


# The map from its pairs (no storage).


def root(pairs: Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]]) -> bytes:
    """The root of the map holding ``pairs`` (key -> value hash). Raises InvalidInput for a repeated key or a
    key or value hash that is not 32 bytes."""
    items = _sorted_pairs(pairs)
    return _subtree_hash([k for k, _ in items], [v for _, v in items], 0, len(items), 0)


def _sorted_pairs(pairs: Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    seq = list(pairs.items()) if isinstance(pairs, Mapping) else list(pairs)
    out = sorted((_check_key(k), _check_key(v, "value hash")) for k, v in seq)
    for (a, _), (b, _) in zip(out, out[1:], strict=False):
        if a == b:
            raise InvalidInput(f"map key {a.hex()} appears twice")
    return out


def _split(keys: Sequence[bytes], lo: int, hi: int, depth: int) -> int:
    """The first index in keys[lo:hi] (sorted, sharing their first ``depth`` bits) whose bit ``depth`` is 1."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if _bit(keys[mid], depth):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _subtree_hash(keys: Sequence[bytes], values: Sequence[bytes], lo: int, hi: int, depth: int) -> bytes:
    if hi == lo:
        return EMPTY_HASH
    if hi - lo == 1:
        return hash_leaf(keys[lo], values[lo])
    mid = _split(keys, lo, hi, depth)
    return hash_children(
        _subtree_hash(keys, values, lo, mid, depth + 1), _subtree_hash(keys, values, mid, hi, depth + 1)
    )


# Proofs and their verification.


@dataclass(frozen=True)
class MapProof:
    """The proof for one key: the sibling hashes from the first subtree on the key's path that holds at most
    one pair up to the root, deepest first, and that subtree's pair if it has one."""

    siblings: tuple[bytes, ...]
    leaf: tuple[bytes, bytes] | None


def map_root_from_proof(key: bytes, proof: MapProof) -> bytes:
    """The root implied by ``proof`` for ``key``. Raises VerificationError when the proof is malformed: more
    than 256 siblings, a hash that is not 32 bytes, a pair whose key does not share ``key``'s first
    len(siblings) bits, or a deepest sibling that is empty (the walk would have stopped one level higher)."""
    if not isinstance(key, bytes | bytearray) or len(key) != HASH_SIZE:
        raise VerificationError(f"a map key is {HASH_SIZE} bytes")
    siblings = proof.siblings
    n = len(siblings)
    if n > KEY_BITS:
        raise VerificationError(f"map proof has {n} siblings, at most {KEY_BITS} are possible")
    for s in siblings:
        if not isinstance(s, bytes | bytearray) or len(s) != HASH_SIZE:
            raise VerificationError("map proof holds a sibling that is not 32 bytes")
    # A subtree holding at most one pair has a sibling that holds at least one: it is where the walk stopped.
    if n and siblings[0] == EMPTY_HASH:
        raise VerificationError("map proof does not stop at the first subtree holding at most one pair")
    leaf = proof.leaf
    if leaf is None:
        h = EMPTY_HASH
    else:
        if not isinstance(leaf, tuple) or len(leaf) != 2:
            raise VerificationError("map proof leaf is not a (key, value hash) pair")
        leaf_key, leaf_value = leaf
        for part in leaf:
            if not isinstance(part, bytes | bytearray) or len(part) != HASH_SIZE:
                raise VerificationError("map proof leaf holds a key or value hash that is not 32 bytes")
        if not _shares_prefix(bytes(leaf_key), bytes(key), n):
            raise VerificationError(f"map proof leaf does not share the key's first {n} bits")
        h = hash_leaf(bytes(leaf_key), bytes(leaf_value))
    for i, s in enumerate(siblings):
        h = hash_children(s, h) if _bit(key, n - 1 - i) else hash_children(h, s)
    return h


def verify_map_proof(root: bytes, key: bytes, proof: MapProof) -> bytes | None:
    """Check ``proof`` for ``key`` against the map ``root``; return the key's value hash, or None when the
    proof shows the key absent. Raises VerificationError when the proof does not hold."""
    if not isinstance(root, bytes | bytearray) or len(root) != HASH_SIZE:
        raise VerificationError(f"a map root is {HASH_SIZE} bytes")
    if map_root_from_proof(key, proof) != root:
        raise VerificationError("map proof does not match the root")
    if proof.leaf is not None and proof.leaf[0] == key:
        return bytes(proof.leaf[1])
    return None


# The stored map.


@dataclass(frozen=True, slots=True)
class MapBranch:
    """A stored subtree of two or more pairs: the hashes of its children (32 zero bytes for an empty one)."""

    left: bytes
    right: bytes

    def hash(self) -> bytes:
        return hash_children(self.left, self.right)


@dataclass(frozen=True, slots=True)
class MapLeaf:
    """A stored subtree of exactly one pair."""

    key: bytes
    value_hash: bytes

    def hash(self) -> bytes:
        return hash_leaf(self.key, self.value_hash)


MapNode = MapBranch | MapLeaf


class MapNodeReader(Protocol):
    """Reads stored map nodes by position (see :func:`node_path`)."""

    def read(self, paths: Collection[bytes]) -> Mapping[bytes, MapNode]:
        """The nodes stored at ``paths``; positions holding nothing are absent from the result."""
        ...


class MemoryMapNodes:
    """A MapNodeReader over a dict, for tests and for building a map in memory before a bulk load."""

    def __init__(self, nodes: Mapping[bytes, MapNode] | None = None) -> None:
        self.nodes: dict[bytes, MapNode] = dict(nodes or {})
        self.reads = 0

    def read(self, paths: Collection[bytes]) -> dict[bytes, MapNode]:
        self.reads += 1
        return {p: self.nodes[p] for p in paths if p in self.nodes}

    def apply(self, changed: Mapping[bytes, MapNode], deleted: Collection[bytes]) -> None:
        """Write the result of :func:`apply_batch`."""
        for p in deleted:
            self.nodes.pop(p, None)
        self.nodes.update(changed)

    def root(self) -> bytes:
        node = self.nodes.get(ROOT_PATH)
        return EMPTY_HASH if node is None else node.hash()


class _Nodes:
    """Nodes read so far by one walk; positions read and found empty are remembered too."""

    def __init__(self, reader: MapNodeReader, window: int) -> None:
        if window < 1:
            raise InvalidInput("the read window is at least 1")
        self.reader = reader
        self.window = window
        self.found: dict[bytes, MapNode] = {}
        self.empty: set[bytes] = set()

    def fetch(self, paths: Iterable[bytes]) -> None:
        wanted = {p for p in paths if p not in self.found and p not in self.empty}
        if not wanted:
            return
        got = self.reader.read(wanted)
        for p in wanted:
            node = got.get(p)
            if node is None:
                self.empty.add(p)
            else:
                self.found[p] = node

    def child(self, path: bytes, expected: bytes) -> MapNode | None:
        """The node at ``path`` (already fetched), checked against the hash its parent holds for it."""
        if expected == EMPTY_HASH:
            return None
        node = self.found.get(path)
        if node is None:
            raise InconsistentMapNodes(path, "missing, but its parent holds a hash for it")
        if node.hash() != expected:
            raise InconsistentMapNodes(path, "its hash is not the one its parent holds")
        return node

    def walk(self, keys: Iterable[bytes]) -> None:
        """Fetch every node on the paths of ``keys``, down to the leaf or empty subtree each ends in: a window
        of positions per key and round, one read per round."""
        active = {k: 0 for k in keys}
        while active:
            window = max(1, min(self.window, _ROUND_BUDGET // len(active)))
            self.fetch(
                node_path(d, k)
                for k, start in active.items()
                for d in range(start, min(start + window, KEY_BITS + 1))
            )
            still: dict[bytes, int] = {}
            for k, start in active.items():
                d = start
                while True:
                    path = node_path(d, k)
                    if path in self.empty:
                        break
                    if path not in self.found:
                        still[k] = d
                        break
                    node = self.found[path]
                    if isinstance(node, MapLeaf):
                        break
                    if d == KEY_BITS:
                        raise InconsistentMapNodes(path, "a branch below the last key bit")
                    if (node.right if _bit(k, d) else node.left) == EMPTY_HASH:
                        break
                    d += 1
            active = still


def prove_many(
    reader: MapNodeReader, keys: Iterable[bytes], *, window: int = DEFAULT_WINDOW
) -> tuple[bytes, dict[bytes, MapProof]]:
    """The map root and a proof for each key, all read in the same rounds.

    The root is the one the proofs are checked against as they are built; with a reader that may see writes
    between two of its reads, compare it with the root you publish. Raises InconsistentMapNodes when the
    stored nodes do not form one tree, InvalidInput for a key that is not 32 bytes.
    """
    wanted = sorted({_check_key(k) for k in keys})
    nodes = _Nodes(reader, window)
    if wanted:
        nodes.walk(wanted)  # the root is the first position of every path
    else:
        nodes.fetch([ROOT_PATH])
    top = nodes.found.get(ROOT_PATH)
    root_hash = EMPTY_HASH if top is None else top.hash()
    proofs: dict[bytes, MapProof] = {}
    for key in wanted:
        siblings: list[bytes] = []
        node: MapNode | None = top
        depth = 0
        while isinstance(node, MapBranch):
            if depth == KEY_BITS:
                raise InconsistentMapNodes(node_path(depth, key), "a branch below the last key bit")
            if _bit(key, depth):
                siblings.append(node.left)
                node = nodes.child(node_path(depth + 1, key), node.right)
            else:
                siblings.append(node.right)
                node = nodes.child(node_path(depth + 1, key), node.left)
            depth += 1
        siblings.reverse()
        leaf = None if node is None else (node.key, node.value_hash)
        proofs[key] = MapProof(tuple(siblings), leaf)
    return root_hash, proofs


def prove(reader: MapNodeReader, key: bytes, *, window: int = DEFAULT_WINDOW) -> MapProof:
    """The proof for one key (see :func:`prove_many`)."""
    return prove_many(reader, [key], window=window)[1][_check_key(key)]


# Batch updates.

# A subtree after the batch, as _Batch computes it: its kind, its hash and what its parent needs to store it.
_EMPTY, _SINGLE, _MULTI, _KEPT, _UNKNOWN = range(5)
_Result = tuple[int, bytes, MapNode | None]
_EMPTY_RESULT: _Result = (_EMPTY, EMPTY_HASH, None)
_UNKNOWN_RESULT: _Result = (_UNKNOWN, EMPTY_HASH, None)


class _Batch:
    """One pass of apply_batch over the nodes fetched so far.

    A pass records the node each touched position must hold afterwards (None for nothing) in ``out``, and the
    positions it still needs in ``missing``; apply_batch fetches those and runs another pass (only the sibling
    of a subtree that became empty can be missing, so at most two passes run).
    """

    def __init__(self, nodes: _Nodes, keys: list[bytes], updates: Mapping[bytes, bytes | None]) -> None:
        self.nodes = nodes
        self.keys = keys
        self.updates = updates
        self.out: dict[bytes, MapNode | None] = {}
        self.missing: set[bytes] = set()

    def run(self) -> _Result:
        old = self.nodes.found.get(ROOT_PATH)
        result = self._update(0, old, 0, len(self.keys))
        if result[0] != _UNKNOWN:
            self.out[ROOT_PATH] = result[2]
        return result

    def _update(self, depth: int, old: MapNode | None, lo: int, hi: int) -> _Result:
        """The subtree at ``depth`` holding ``old`` (fetched and checked), with keys[lo:hi] (non-empty) updated."""
        if not isinstance(old, MapBranch):
            pairs: dict[bytes, bytes] = {} if old is None else {old.key: old.value_hash}
            for k in self.keys[lo:hi]:
                v = self.updates[k]
                if v is None:
                    pairs.pop(k, None)
                else:
                    pairs[k] = v
            ordered = sorted(pairs)
            return self._build(depth, ordered, [pairs[k] for k in ordered], 0, len(ordered))
        if depth == KEY_BITS:
            raise InconsistentMapNodes(node_path(depth, self.keys[lo]), "a branch below the last key bit")
        mid = _split(self.keys, lo, hi, depth)
        left = self._side(depth, lo, mid, old.left)
        right = self._side(depth, mid, hi, old.right)
        if left[0] == _UNKNOWN or right[0] == _UNKNOWN:
            return _UNKNOWN_RESULT
        kept_sibling = None
        if left[0] == _EMPTY and right[0] == _KEPT:
            kept_sibling = 1
        elif right[0] == _EMPTY and left[0] == _KEPT:
            kept_sibling = 0
        if kept_sibling is not None:
            # The updated side emptied: the result hinges on whether the untouched side is one pair.
            sib_path = node_path(depth + 1, _flip(self.keys[lo], depth))
            if sib_path not in self.nodes.found and sib_path not in self.nodes.empty:
                self.missing.add(sib_path)
                return _UNKNOWN_RESULT
            sib = self.nodes.child(sib_path, (left, right)[kept_sibling][1])
            self._record_children(depth, lo, hi, None, None)
            if isinstance(sib, MapLeaf):
                self.out[sib_path] = None
                return (_SINGLE, sib.hash(), sib)
        kinds = (left[0], right[0])
        if _MULTI not in kinds and _KEPT not in kinds and (left[0] == _EMPTY or right[0] == _EMPTY):
            # At most one pair remains: it moves up here, and nothing stays below.
            self._record_children(depth, lo, hi, None, None)
            return right if left[0] == _EMPTY else left
        self._record_children(depth, lo, hi, left, right)
        branch = MapBranch(left[1], right[1])
        return (_MULTI, branch.hash(), branch)

    def _side(self, depth: int, lo: int, hi: int, child_hash: bytes) -> _Result:
        if lo == hi:
            return _EMPTY_RESULT if child_hash == EMPTY_HASH else (_KEPT, child_hash, None)
        path = node_path(depth + 1, self.keys[lo])
        if child_hash != EMPTY_HASH and path not in self.nodes.found and path not in self.nodes.empty:
            self.missing.add(path)
            return _UNKNOWN_RESULT
        return self._update(depth + 1, self.nodes.child(path, child_hash), lo, hi)

    def _record_children(
        self, depth: int, lo: int, hi: int, left: _Result | None, right: _Result | None
    ) -> None:
        """Record what the updated children of a node hold afterwards (None: they hold nothing)."""
        mid = _split(self.keys, lo, hi, depth)
        for a, b, result in ((lo, mid, left), (mid, hi, right)):
            if a == b:
                continue
            path = node_path(depth + 1, self.keys[a])
            if result is None:
                self.out[path] = None
            elif result[0] != _KEPT:
                self.out[path] = result[2]

    def _build(self, depth: int, keys: list[bytes], values: list[bytes], lo: int, hi: int) -> _Result:
        """A subtree made afresh from the pairs keys[lo:hi] (sorted); records the nodes below its top."""
        if hi == lo:
            return _EMPTY_RESULT
        if hi - lo == 1:
            leaf = MapLeaf(keys[lo], values[lo])
            return (_SINGLE, leaf.hash(), leaf)
        mid = _split(keys, lo, hi, depth)
        children = []
        for a, b in ((lo, mid), (mid, hi)):
            result = self._build(depth + 1, keys, values, a, b)
            if a < b:
                self.out[node_path(depth + 1, keys[a])] = result[2]
            children.append(result[1])
        branch = MapBranch(children[0], children[1])
        return (_MULTI, branch.hash(), branch)


def _flip(key: bytes, depth: int) -> bytes:
    i = depth >> 3
    return key[:i] + bytes([key[i] ^ (0x80 >> (depth & 7))]) + key[i + 1 :]


def apply_batch(
    reader: MapNodeReader, updates: Mapping[bytes, bytes | None], *, window: int = DEFAULT_WINDOW
) -> tuple[bytes, dict[bytes, MapNode], frozenset[bytes]]:
    """Apply ``updates`` (key -> new value hash, or None to remove the key) to the stored map.

    Reads only the nodes on the updated keys' paths (and, where a deletion empties one side of a branch, the
    other side's top node). Returns the new root, the nodes to write (position -> node: new or changed) and
    the positions to clear. Writing both gives the stored map after the batch; removing an absent key and
    setting a key to its current value change nothing. Raises InvalidInput for a key or value hash that is not
    32 bytes, InconsistentMapNodes when the stored nodes do not form one tree.
    """
    clean: dict[bytes, bytes | None] = {}
    for k, v in updates.items():
        clean[_check_key(k)] = None if v is None else _check_key(v, "value hash")
    nodes = _Nodes(reader, window)
    if not clean:
        nodes.fetch([ROOT_PATH])
        top = nodes.found.get(ROOT_PATH)
        return (EMPTY_HASH if top is None else top.hash()), {}, frozenset()
    keys = sorted(clean)
    nodes.walk(keys)
    while True:
        batch = _Batch(nodes, keys, clean)
        result = batch.run()
        if not batch.missing:
            break
        nodes.fetch(batch.missing)
    changed: dict[bytes, MapNode] = {}
    deleted: set[bytes] = set()
    for path, node in batch.out.items():
        before = nodes.found.get(path)
        if node is None:
            if before is not None:
                deleted.add(path)
        elif node != before:
            changed[path] = node
    return result[1], changed, frozenset(deleted)
