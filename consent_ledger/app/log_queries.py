"""Read side of the log: entries, checkpoints and proofs, all against a published checkpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from consent_ledger.app.errors import NotFound, OutOfRange, WouldBlock
from consent_ledger.app.ports import LogStore, StoredCheckpoint, StoredEntry
from consent_ledger.app.tree import TreeReader
from consent_ledger.core.errors import InvalidInput
from consent_ledger.core.merkle import NodeReader, prove_consistency, prove_inclusion, prove_inclusion_many

MAX_ENTRIES_PER_CALL = 256


@dataclass(frozen=True)
class ProvenEntry:
    entry: StoredEntry
    proof: list[bytes]


class LogQueries:
    """Queries over one log. Methods named ``*_fast`` never touch storage and return None when they would."""

    def __init__(self, store: LogStore, reader: TreeReader, latest: Callable[[], StoredCheckpoint]) -> None:
        self._store = store
        self._reader = reader
        self._latest = latest
        self._cached = reader.memory_only()  # raises WouldBlock on a miss: served on the event loop or not at all

    def checkpoint(self) -> StoredCheckpoint:
        return self._latest()

    def _size(self, tree_size: int) -> int:
        latest = self._latest().size
        if tree_size == 0:
            return latest
        if tree_size > latest:
            raise OutOfRange(f"tree size {tree_size} is beyond the latest checkpoint's size {latest}")
        return tree_size

    @staticmethod
    def _check_index(index: int, size: int) -> None:
        if index >= size:
            raise InvalidInput(f"index {index} is not in a tree of size {size}")

    async def inclusion_on_loop(self, index: int, tree_size: int) -> tuple[int, list[bytes]]:
        """inclusion() for the event loop: from memory, else once the tiles it misses are fetched (awaited)."""
        size = self._size(tree_size)
        self._check_index(index, size)
        return size, await self._on_loop(lambda nodes: prove_inclusion(index, size, nodes))

    def inclusion(self, index: int, tree_size: int) -> tuple[int, list[bytes]]:
        """(tree size, proof) for leaf ``index``; tree_size 0 means the latest."""
        size = self._size(tree_size)
        self._check_index(index, size)
        return size, prove_inclusion(index, size, self._reader)

    def inclusion_by_hash(self, leaf_hash: bytes, tree_size: int) -> tuple[int, int, list[bytes]]:
        """(index, tree size, proof) for the leaf with this hash."""
        if len(leaf_hash) != 32:
            raise InvalidInput("leaf hash must be 32 bytes")
        size = self._size(tree_size)
        index = self._store.find_leaf(leaf_hash)
        if index is None:
            raise NotFound("no leaf with that hash")
        if index >= size:
            raise NotFound(f"the leaf is not in the tree of size {size} (it is at index {index})")
        return index, size, prove_inclusion(index, size, self._reader)

    async def consistency_on_loop(self, first: int, second: int) -> list[bytes]:
        """consistency() for the event loop: from memory, else once the tiles it misses are fetched (awaited)."""
        self._check_sizes(first, second)
        return await self._on_loop(lambda nodes: prove_consistency(first, second, nodes))

    async def _on_loop(self, prove: Callable[[NodeReader], list[bytes]]) -> list[bytes]:
        """``prove`` over the tree in memory; when it misses tiles and they can be read on the event loop
        (PostgreSQL), they are fetched into the cache (TreeReader.fetch) and it runs again. Otherwise (SQLite and
        MySQL: the read is on a worker thread anyway, so one hop for the whole proof is cheaper than a hop for the
        read and a second try), or should the cache not keep them (a tile cache smaller than one proof's tiles, a
        right edge not yet handed over), it runs on a worker thread over storage."""
        for _ in range(2):
            try:
                return prove(self._cached)
            except WouldBlock as e:
                if not e.tiles or not self._reader.fetches_on_loop:
                    break
                await self._reader.fetch(e.tiles)
        return await asyncio.to_thread(prove, self._reader)

    def consistency(self, first: int, second: int) -> list[bytes]:
        self._check_sizes(first, second)
        return prove_consistency(first, second, self._reader)

    def _check_sizes(self, first: int, second: int) -> None:
        if first > second:
            raise InvalidInput(f"first tree size {first} is larger than second {second}")
        latest = self._latest().size
        if second > latest:
            raise OutOfRange(f"tree size {second} is beyond the latest checkpoint's size {latest}")

    def entry(self, index: int) -> tuple[StoredCheckpoint, ProvenEntry]:
        cp = self._latest()
        if index >= cp.size:
            raise NotFound(f"no entry {index}: the log has {cp.size} entries")
        entries = self._store.read_entries(index, index + 1)
        if not entries:
            raise NotFound(f"no entry {index}")
        return cp, ProvenEntry(entries[0], prove_inclusion(index, cp.size, self._reader))

    def entries(self, start: int, end: int) -> tuple[StoredCheckpoint, list[ProvenEntry]]:
        if end <= start:
            raise InvalidInput(f"empty range [{start}, {end})")
        cp = self._latest()
        if start >= cp.size:
            raise OutOfRange(f"start {start} is beyond the log's {cp.size} entries")
        end = min(end, cp.size, start + MAX_ENTRIES_PER_CALL)
        stored = self._store.read_entries(start, end)
        proofs = prove_inclusion_many([e.index for e in stored], cp.size, self._reader)  # neighbours share nodes
        return cp, [ProvenEntry(e, proof) for e, proof in zip(stored, proofs, strict=True)]
