"""The tree as the ledger sees it: node hashes from tiles, with the right edge and full tiles kept in memory.

Full tiles never change, so they are cached expanded (every level of their subtree), and a node hash is then a
slice; storage keeps a full tile's interior levels beside it, so one read from storage expands it without
hashing. The right edge (the partial tile of each level) is handed over by the sequencer after each commit, so
no request reads a tile that is still growing from the database unless another process writes the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterator, Mapping, Sequence

from consent_ledger.app.errors import CorruptStorage, WouldBlock
from consent_ledger.app.lru import OVERHEAD, CacheBudget, Lru
from consent_ledger.app.ports import AsyncTileSource, LogStore
from consent_ledger.core import tiles
from consent_ledger.core.merkle import Node
from consent_ledger.core.rfc6962 import HASH_SIZE


class TileCache:
    """An LRU of expanded full tiles (full tiles never change), bounded by bytes. Thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self._tiles: Lru[tiles.TileId, tuple[bytes, ...]] = Lru(
            max_bytes, lambda tile, levels: OVERHEAD * (2 + len(levels)) + sum(len(x) for x in levels)
        )

    def get(self, tile: tiles.TileId) -> tuple[bytes, ...] | None:
        return self._tiles.get(tile)

    def put(self, tile: tiles.TileId, levels: tuple[bytes, ...]) -> tuple[bytes, ...]:
        """Cache the levels of a full tile (tiles.tile_levels)."""
        return self._tiles.put(tile, levels)

    def room(self, tiles_count: int) -> bool:
        """Whether ``tiles_count`` more full tiles fit in the budget without evicting any."""
        return self._tiles.bytes + tiles_count * _FULL_TILE_COST <= self._tiles.max_bytes


_FULL = tiles.TILE_WIDTH * HASH_SIZE
# What an expanded full tile costs in the TileCache (the levels of a 256-hash tile: 511 hashes).
_FULL_TILE_COST = OVERHEAD * (3 + tiles.TILE_HEIGHT + 1) + (2 * tiles.TILE_WIDTH - 1) * HASH_SIZE


def _node_from_levels(levels: Sequence[bytes], loc: tiles.NodeLocation) -> bytes | None:
    sub = loc.count.bit_length() - 1
    i = (loc.start >> sub) * HASH_SIZE
    if sub >= len(levels) or len(levels[sub]) < i + HASH_SIZE:
        return None
    return levels[sub][i : i + HASH_SIZE]


class TreeReader:
    """A NodeReader over a LogStore: right edge in memory, full tiles from an LRU, the rest from storage."""

    def __init__(
        self, store: LogStore, *, cache_bytes: int = CacheBudget().of("tiles"), source: AsyncTileSource | None = None
    ) -> None:
        self._store = store
        self._source = source
        self._cache = TileCache(cache_bytes)
        self._edge: Mapping[tiles.TileId, bytes] = {}
        # The right edge's partial tiles, expanded on first use (replaced with the edge, never mutated).
        self._edge_levels: dict[tiles.TileId, tuple[bytes, ...]] = {}

    def set_edge(self, edge: Mapping[tiles.TileId, bytes]) -> None:
        """Replace the in-memory right edge (the partial tiles of the current tree)."""
        self._edge, self._edge_levels = dict(edge), {}

    def remember_full(self, tile: tiles.TileId, data: bytes) -> None:
        """Cache a full tile that was just written."""
        if len(data) == _FULL:
            self._cache.put(tile, tiles.tile_levels(data))

    def _cached(
        self, loc: tiles.NodeLocation, edge: Mapping[tiles.TileId, bytes], edge_levels: dict[tiles.TileId, tuple[bytes, ...]]
    ) -> bytes | None:
        levels = self._cache.get(loc.tile)
        if levels is not None:
            return _node_from_levels(levels, loc)
        levels = edge_levels.get(loc.tile)
        if levels is None:
            data = edge.get(loc.tile)
            if data is None:
                return None
            levels = edge_levels[loc.tile] = tiles.tile_levels(data)
        return _node_from_levels(levels, loc)

    def read_cached(self, nodes: Sequence[Node]) -> list[bytes] | None:
        """The node hashes if every one is in memory, else None (then call read_nodes off the event loop)."""
        edge, edge_levels = self._edge, self._edge_levels
        out = []
        for node in nodes:
            h = self._cached(tiles.locate_node(*node), edge, edge_levels)
            if h is None:
                return None
            out.append(h)
        return out

    def missing_tiles(self, nodes: Sequence[Node]) -> frozenset[tiles.TileId]:
        """The tiles that hold those of ``nodes`` whose hashes are not in memory."""
        edge, edge_levels = self._edge, self._edge_levels
        locs = (tiles.locate_node(*node) for node in nodes)
        return frozenset(loc.tile for loc in locs if self._cached(loc, edge, edge_levels) is None)

    @property
    def fetches_on_loop(self) -> bool:
        """Whether fetch() reads on the event loop (an AsyncTileSource), not on a worker thread."""
        return self._source is not None

    async def fetch(self, ids: Collection[tiles.TileId]) -> None:
        """Read tiles ``ids`` into the cache from the event loop: awaited on the AsyncTileSource when there is one
        (no worker thread), else read on a worker thread. Only full tiles are cached (see _keep_full)."""
        if self._source is not None:
            rows = await self._source.read_tile_levels(ids)
        else:
            rows = await asyncio.to_thread(self._store.read_tile_levels, ids)
        self._keep_full(rows)

    def memory_only(self) -> MemoryOnlyReader:
        """A NodeReader over this reader's memory (right edge, cached full tiles) that raises WouldBlock instead
        of reading storage: for requests answered on the event loop."""
        return MemoryOnlyReader(self)

    @staticmethod
    def full_tile_ids(size: int, chunk: int) -> Iterator[list[tiles.TileId]]:
        """The full tiles of a tree of ``size`` leaves in chunks: the upper levels first (every proof reads them),
        then each level from its newest tile back."""
        counts = []
        level, count = 0, size
        while count >= tiles.TILE_WIDTH:
            counts.append((level, count // tiles.TILE_WIDTH))
            level, count = level + 1, count // tiles.TILE_WIDTH
        for level, full in reversed(counts):
            for end in range(full, 0, -chunk):
                yield [(level, i) for i in range(end - 1, max(end - chunk, 0) - 1, -1)]

    def warm(self, ids: Sequence[tiles.TileId]) -> bool:
        """Read full tiles ``ids`` into the cache unless that would evict cached ones; returns whether it did."""
        ids = [t for t in ids if self._cache.get(t) is None]
        if not self._cache.room(len(ids)):
            return False
        self._keep_full(self._store.read_tile_levels(ids))
        return True

    def _keep_full(self, rows: Mapping[tiles.TileId, tuple[bytes, ...]]) -> None:
        """Cache the full tiles among tiles read from storage (a partial one is the right edge's, which the
        sequencer hands over)."""
        for tile, levels in rows.items():
            if len(levels[0]) == _FULL:
                self._cache.put(tile, levels)

    def read_nodes(self, nodes: Sequence[Node]) -> list[bytes]:
        edge, edge_levels = self._edge, self._edge_levels
        locs = [tiles.locate_node(*n) for n in nodes]
        out: list[bytes | None] = [self._cached(loc, edge, edge_levels) for loc in locs]
        missing = {loc.tile for loc, h in zip(locs, out) if h is None}
        if missing:
            # One read for all of them; a full tile comes back with its stored interior (no hashing: at 10M leaves
            # most proofs read one level-0 tile, and hashing its 255 interior nodes cost 0.3 ms a proof).
            rows = self._store.read_tile_levels(missing)
            self._keep_full(rows)
            for i, loc in enumerate(locs):
                if out[i] is not None:
                    continue
                read = rows.get(loc.tile)
                if read is None:
                    raise CorruptStorage(f"tile {loc.tile} is missing from storage")
                out[i] = _node_from_levels(read, loc)
                if out[i] is None:
                    raise CorruptStorage(f"tile {loc.tile} of {len(read[0]) // HASH_SIZE} hashes has no node {loc}")
        return [h for h in out if h is not None]


class MemoryOnlyReader:
    """Node hashes from a TreeReader's memory only; WouldBlock when one would be read from storage."""

    def __init__(self, reader: TreeReader) -> None:
        self._reader = reader

    def read_nodes(self, nodes: Sequence[Node]) -> list[bytes]:
        hashes = self._reader.read_cached(nodes)
        if hashes is None:
            raise WouldBlock("a tile is not in memory", self._reader.missing_tiles(nodes))
        return hashes


class OverlayReader:
    """Node reads over a reader plus tiles not yet committed (used to compute a batch's new root)."""

    def __init__(self, base: TreeReader, overlay: Mapping[tiles.TileId, bytes]) -> None:
        self._base = base
        self._overlay = overlay

    def read_nodes(self, nodes: Sequence[Node]) -> list[bytes]:
        out: list[bytes] = []
        rest: list[tuple[int, Node]] = []
        for i, node in enumerate(nodes):
            loc = tiles.locate_node(*node)
            data = self._overlay.get(loc.tile)
            if data is not None and len(data) >= (loc.start + loc.count) * HASH_SIZE:
                out.append(tiles.hash_from_tile(data, loc))
            else:
                out.append(b"")
                rest.append((i, node))
        if rest:
            for (i, _), h in zip(rest, self._base.read_nodes([n for _, n in rest])):
                out[i] = h
        return out
