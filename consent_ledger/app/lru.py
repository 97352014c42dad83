"""A thread-safe LRU map bounded by bytes, for caches of values that never change once stored.

Every cache the server keeps is bounded by an estimate of the memory it holds, not by a count of entries: an
entry's cost varies by orders of magnitude (an in-force set of one grant or of 256), and a count lets a few big
entries take all the memory. Sizes are estimated cheaply (``estimate_size``: lengths of bytes and strings plus a
fixed overhead per object), and the budget is configurable (``ServiceConfig.cache_mb``, ``serve --cache-mb``).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import ClassVar, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

# What one Python object costs beyond its payload, roughly (a small object header, a dict slot, a pointer).
OVERHEAD = 64
# How deep estimate_size looks into nested values; deeper parts count as OVERHEAD each.
_MAX_DEPTH = 6


def estimate_size(value: object, _depth: int = 0) -> int:
    """A cheap estimate of the bytes ``value`` holds: bytes and strings by length, containers and dataclasses by
    their parts, each object with a fixed OVERHEAD. Not exact; proportional to the real size, and never zero."""
    if isinstance(value, bytes | bytearray | str):
        return OVERHEAD + len(value)
    if value is None or isinstance(value, bool | int | float):
        return OVERHEAD // 2
    if _depth >= _MAX_DEPTH:
        return OVERHEAD
    d = _depth + 1
    if isinstance(value, Mapping):
        return OVERHEAD + sum(estimate_size(k, d) + estimate_size(v, d) for k, v in value.items())
    if isinstance(value, tuple | list | set | frozenset):
        return OVERHEAD + sum(estimate_size(x, d) for x in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return OVERHEAD + sum(estimate_size(getattr(value, f.name), d) for f in dataclasses.fields(value))
    return OVERHEAD


class Lru(Generic[K, V]):
    """A thread-safe LRU map for values that never change once stored, holding at most ``max_bytes`` as
    ``size(key, value)`` estimates them (default: ``estimate_size`` of both). An item larger than the whole budget
    is not kept (``put`` still returns it)."""

    def __init__(self, max_bytes: int, size: Callable[[K, V], int] | None = None) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        self._max_bytes = max_bytes
        self._size = size or (lambda k, v: estimate_size(k) + estimate_size(v))
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def bytes(self) -> int:
        """The estimated bytes held now (at most ``max_bytes``)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
            return hit[0]

    def discard(self, key: K) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]

    def put(self, key: K, value: V) -> V:
        cost = self._size(key, value) + OVERHEAD
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if cost > self._max_bytes:
                return value
            self._items[key] = (value, cost)
            self._bytes += cost
            while self._bytes > self._max_bytes:
                _, (_, evicted) = self._items.popitem(last=False)
                self._bytes -= evicted
        return value


@dataclasses.dataclass(frozen=True)
class CacheBudget:
    """The memory the server's caches may hold together, in bytes, and how it is split between them; ``tile_bytes``,
    when set, is the tile cache's own budget instead of its share (a large log's proofs read no storage once the
    cache holds its full tiles: about 64 MiB per million entries)."""

    total_bytes: int = 384 * 2**20
    tile_bytes: int | None = None

    # Shares of the total, by cache. They sum to 1. An expanded full tile holds about 16 KiB, so the tiles' share
    # (96 MiB by default) keeps every full tile of a 1.5M-leaf log in memory: proofs then read no storage.
    SHARES: ClassVar[dict[str, float]] = {
        "entries": 0.22,  # stored and parsed entries by index (consents.ConsentLedger)
        "in_force_by_root": 0.05,  # in-force sets by (patient, selector, map root) (consents.ConsentLedger)
        "tiles": 0.25,  # expanded full tiles of the log (tree.TileCache)
        "map_nodes": 0.22,  # committed consent-map nodes (consent_state.NodeCache)
        "in_force": 0.10,  # the sequencer's committed in-force sets (consent_state.InForceCache)
        "map_proofs": 0.02,  # map proofs by (key, root) (consent_state.ConsentState; read on an evidence miss)
        "inclusion_proofs": 0.05,  # inclusion proofs by (index, tree size) (access.InclusionProofs)
        "access_evidence": 0.06,  # an access check's evidence by (patient, requester, StateCommit) (access.AccessPath)
        "access_wire": 0.03,  # that evidence as sent, by (patient, requester, StateCommit, tree size) (access.AccessPath)
    }

    def __post_init__(self) -> None:
        if self.total_bytes < 0 or (self.tile_bytes is not None and self.tile_bytes < 0):
            raise ValueError("the cache budget must not be negative")

    @classmethod
    def megabytes(cls, mb: float, tile_mb: float | None = None) -> CacheBudget:
        return cls(int(mb * 2**20), None if tile_mb is None else int(tile_mb * 2**20))

    def of(self, cache: str) -> int:
        """The bytes ``cache`` (a key of SHARES) may hold."""
        if cache == "tiles" and self.tile_bytes is not None:
            return self.tile_bytes
        return int(self.total_bytes * self.SHARES[cache])
