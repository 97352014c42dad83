"""Tiles: the tree's hashes stored 256 to a row, as C2SP tlog-tiles and Go's sumdb/tlog.

A tile at tile level ``L`` and index ``N`` holds the hashes of tree level ``8*L`` with indices
``N*256 .. N*256+255`` (fewer in the rightmost, partial tile). Any complete subtree ``(level, index)`` can be
computed from one tile row: the ``2**(level % 8)`` hashes below it at level ``8*(level//8)``. Appending a
batch rewrites only the right edge: the partial tile of each level and the tiles the batch completes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from consent_ledger.core.errors import InvalidInput
from consent_ledger.core.rfc6962 import HASH_SIZE, hash_children

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT

TileId = tuple[int, int]


@dataclass(frozen=True)
class NodeLocation:
    """Where a node's hash comes from: ``count`` hashes from ``start`` in tile ``tile``."""

    tile: TileId
    start: int
    count: int


def locate_node(level: int, index: int) -> NodeLocation:
    """The tile slice whose subtree hash is node ``(level, index)``. Requires level >= 0, index >= 0."""
    tile_level, sub = divmod(level, TILE_HEIGHT)
    first = index << sub
    return NodeLocation((tile_level, first // TILE_WIDTH), first % TILE_WIDTH, 1 << sub)


def subtree_hash(hashes: Sequence[bytes]) -> bytes:
    """The root of a complete subtree from its bottom hashes. Requires len(hashes) to be a power of two."""
    row = list(hashes)
    while len(row) > 1:
        row = [hash_children(row[i], row[i + 1]) for i in range(0, len(row), 2)]
    return row[0]


def split_tile(data: bytes) -> list[bytes]:
    """The hashes of a stored tile row. Raises InvalidInput when the row is malformed."""
    if len(data) % HASH_SIZE or len(data) > TILE_WIDTH * HASH_SIZE:
        raise InvalidInput(f"tile data of {len(data)} bytes is not a whole number of hashes")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def hash_from_tile(data: bytes, loc: NodeLocation) -> bytes:
    """Node hash from the tile row ``data`` at ``loc``. Raises InvalidInput if the row is too short."""
    end = (loc.start + loc.count) * HASH_SIZE
    if len(data) < end:
        raise InvalidInput(f"tile {loc.tile} holds {len(data) // HASH_SIZE} hashes, node needs {loc.start + loc.count}")
    return subtree_hash(split_tile(data[loc.start * HASH_SIZE : end]))


def tile_levels(data: bytes) -> tuple[bytes, ...]:
    """Every complete level of a tile's subtree: level k holds the hashes of its complete 2**k-leaf subtrees
    (256 >> k of them for a full tile; a partial tile's odd hash at the end of a level has no parent yet)."""
    levels = [data]
    row = data
    while len(row) >= 2 * HASH_SIZE:
        pairs = len(row) // (2 * HASH_SIZE)
        row = b"".join(
            hash_children(row[i : i + HASH_SIZE], row[i + HASH_SIZE : i + 2 * HASH_SIZE])
            for i in range(0, pairs * 2 * HASH_SIZE, 2 * HASH_SIZE)
        )
        levels.append(row)
    return tuple(levels)


# A full tile's interior: levels 1..8 of its subtree, 128 + 64 + ... + 1 = 255 hashes, concatenated.
INTERIOR_SIZE = (TILE_WIDTH - 1) * HASH_SIZE


def tile_interior(data: bytes) -> bytes:
    """The interior hashes of the full tile ``data`` (levels 1..8 of tile_levels, concatenated), stored beside a
    full tile so that reading it back needs no hashing. Requires a full tile."""
    if len(data) != TILE_WIDTH * HASH_SIZE:
        raise InvalidInput(f"only a full tile has a stored interior, not one of {len(data)} bytes")
    return b"".join(tile_levels(data)[1:])


def levels_with_interior(data: bytes, interior: bytes) -> tuple[bytes, ...]:
    """tile_levels of the full tile ``data`` from its stored ``interior`` (tile_interior), without hashing.
    Raises InvalidInput when either is the wrong size."""
    if len(data) != TILE_WIDTH * HASH_SIZE or len(interior) != INTERIOR_SIZE:
        raise InvalidInput(f"a full tile and its interior are {TILE_WIDTH * HASH_SIZE} and {INTERIOR_SIZE} bytes")
    levels = [data]
    at, width = 0, TILE_WIDTH // 2
    while width:
        levels.append(interior[at : at + width * HASH_SIZE])
        at += width * HASH_SIZE
        width //= 2
    return tuple(levels)


def edge_tiles(size: int) -> list[TileId]:
    """The partial tile (if any) of each tile level for a tree of ``size`` leaves: the right edge."""
    out: list[TileId] = []
    level, count = 0, size
    while count:
        if count % TILE_WIDTH:
            out.append((level, count // TILE_WIDTH))
        level += 1
        count //= TILE_WIDTH
    return out


def append_leaves(size: int, edge: dict[TileId, bytes], leaf_hashes: Sequence[bytes]) -> dict[TileId, bytes]:
    """Tiles changed by appending ``leaf_hashes`` to a tree of ``size`` leaves.

    ``edge`` must hold the tiles listed by ``edge_tiles(size)``. Returns every tile that is new or grew, full
    or partial, keyed by tile id; the new right edge is ``edge_tiles(size + len(leaf_hashes))`` of
    ``{**edge, **result}``.
    """
    changed: dict[TileId, bytes] = {}
    level, count, new = 0, size, list(leaf_hashes)
    while new:
        index = count // TILE_WIDTH
        row = split_tile(edge.get((level, index), b"")) if count % TILE_WIDTH else []
        if len(row) != count % TILE_WIDTH:
            raise InvalidInput(f"edge tile {(level, index)} holds {len(row)} hashes, expected {count % TILE_WIDTH}")
        completed: list[bytes] = []
        for h in new:
            row.append(h)
            if len(row) == TILE_WIDTH:
                changed[(level, index)] = b"".join(row)
                completed.append(subtree_hash(row))
                index += 1
                row = []
        if row:
            changed[(level, index)] = b"".join(row)
        level, count, new = level + 1, count // TILE_WIDTH, completed
    return changed
