"""An in-memory NodeReader over a list of leaves, built through the tile code (so tests exercise it too)."""

from __future__ import annotations

from collections.abc import Sequence

from consent_ledger.core import tiles
from consent_ledger.core.rfc6962 import hash_leaf


class MemoryTree:
    def __init__(self) -> None:
        self.size = 0
        self.tiles: dict[tiles.TileId, bytes] = {}

    def append(self, leaves: Sequence[bytes]) -> None:
        edge = {t: self.tiles[t] for t in tiles.edge_tiles(self.size)}
        self.tiles.update(tiles.append_leaves(self.size, edge, [hash_leaf(x) for x in leaves]))
        self.size += len(leaves)

    def read_nodes(self, nodes):
        out = []
        for level, index in nodes:
            loc = tiles.locate_node(level, index)
            out.append(tiles.hash_from_tile(self.tiles[loc.tile], loc))
        return out
