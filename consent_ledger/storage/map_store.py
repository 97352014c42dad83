"""The consent-state map's nodes in the ``map_nodes`` table (docs/design.md section 5; the tree is in core.smt).

Reads go by primary key, a few hundred positions per query, so a proof or a batch reads the paths it needs and
nothing loads the whole map. Writes are not done here: :meth:`SqlMapStore.update` computes the batch and
returns the rows, and the sequencer writes them as ``IntegrationBatch.extra["map_nodes"]`` in the batch's
transaction, beside the StateCommit leaf that carries the new root. The table is an upsert table; a position
that no longer holds a node gets a row with every column NULL (read back as "nothing here"), so a batch never
deletes and the existing extra-row path is all it needs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, select

from consent_ledger.core.smt import (
    DEFAULT_WINDOW,
    EMPTY_HASH,
    ROOT_PATH,
    InconsistentMapNodes,
    MapBranch,
    MapLeaf,
    MapNode,
    MapProof,
    apply_batch,
    prove_many,
)
from consent_ledger.storage import schema
from consent_ledger.storage.sql import SqlLogStore

__all__ = ["MapUpdate", "SqlMapStore", "map_rows"]

_m = schema.map_nodes
_IN_CHUNK = 500


@dataclass(frozen=True)
class MapUpdate:
    """A computed batch of map updates: the root after it and the ``map_nodes`` rows that make it so."""

    root: bytes
    rows: list[dict[str, bytes | None]]

    @property
    def extra(self) -> dict[str, list[dict[str, bytes | None]]]:
        """The rows as IntegrationBatch.extra wants them (empty when nothing changed)."""
        return {_m.name: self.rows} if self.rows else {}


def map_rows(changed: Mapping[bytes, MapNode], deleted: Collection[bytes]) -> list[dict[str, bytes | None]]:
    """The ``map_nodes`` rows that write the result of core.smt.apply_batch: one per position, in path order."""
    rows: dict[bytes, dict[str, bytes | None]] = {p: _row(p, None, None, None, None) for p in deleted}
    for p, node in changed.items():
        if p in rows:
            raise ValueError(f"map node {p.hex()} is both changed and deleted")
        if isinstance(node, MapBranch):
            rows[p] = _row(p, node.left, node.right, None, None)
        else:
            rows[p] = _row(p, None, None, node.key, node.value_hash)
    return [rows[p] for p in sorted(rows)]


def _row(
    path: bytes, left: bytes | None, right: bytes | None, key: bytes | None, value: bytes | None
) -> dict[str, bytes | None]:
    return {"path": path, "left_hash": left, "right_hash": right, "leaf_key": key, "value_hash": value}


def _node(path: bytes, left: Any, right: Any, key: Any, value: Any) -> MapNode | None:
    """The node a row holds; None for a cleared position. Raises InconsistentMapNodes for a malformed row."""
    if left is not None and right is not None and key is None and value is None:
        node: MapNode = MapBranch(bytes(left), bytes(right))
        if len(node.left) == len(node.right) == 32:
            return node
    elif key is not None and value is not None and left is None and right is None:
        node = MapLeaf(bytes(key), bytes(value))
        if len(node.key) == len(node.value_hash) == 32:
            return node
    elif left is None and right is None and key is None and value is None:
        return None
    raise InconsistentMapNodes(path, "the row is neither a branch nor a leaf of 32-byte hashes")




def _select_sql(conn: Connection, n: int) -> str:
    """SELECT of the nodes at ``n`` paths, in the driver's own parameter style: a batch's read of a few hundred
    positions costs SQLAlchemy more (an expanding IN, processed per parameter) than the database."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return (
        "SELECT path, left_hash, right_hash, leaf_key, value_hash FROM map_nodes WHERE path IN "
        f"({', '.join([mark] * n)})"
    )


def _read(conn: Connection, paths: Iterable[bytes]) -> dict[bytes, MapNode]:
    wanted = sorted({bytes(p) for p in paths})
    out: dict[bytes, MapNode] = {}
    for i in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[i : i + _IN_CHUNK]
        rows = conn.exec_driver_sql(_select_sql(conn, len(chunk)), tuple(chunk)).all()
        for path, left, right, key, value in rows:
            path = bytes(path)
            node = _node(path, left, right, key, value)
            if node is not None:
                out[path] = node
    return out


class _ConnectionReader:
    """A MapNodeReader on one open connection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def read(self, paths: Collection[bytes]) -> dict[bytes, MapNode]:
        return _read(self._conn, paths)


class SqlMapStore:
    """The stored consent-state map of a log. Implements core.smt.MapNodeReader; safe to share between threads.

    Each ``read`` uses its own pooled connection. A proof at a million keys is one read; a walk that needs
    more rounds may see a batch commit between two of them, which the walk detects (InconsistentMapNodes).
    Use :meth:`snapshot` for reads that must agree with each other.
    """

    def __init__(self, store: SqlLogStore, *, window: int = DEFAULT_WINDOW) -> None:
        self._store = store
        self._window = window

    def read(self, paths: Collection[bytes]) -> dict[bytes, MapNode]:
        """The nodes at ``paths``; empty or cleared positions are absent from the result."""
        if not paths:
            return {}
        with self._store.connect() as conn:
            return _read(conn, paths)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[_ConnectionReader]:
        """A reader whose reads all see the same committed state (one repeatable-read transaction)."""
        with self._store.connect() as conn:
            if conn.dialect.name in ("postgresql", "mysql", "mariadb"):
                conn.execution_options(isolation_level="REPEATABLE READ")
            # SQLite: the store's BEGIN (deferred) already gives one snapshot per transaction in WAL mode.
            yield _ConnectionReader(conn)

    def current_root(self) -> bytes:
        """The root of the stored map (32 zero bytes for an empty map)."""
        node = self.read([ROOT_PATH]).get(ROOT_PATH)
        return EMPTY_HASH if node is None else node.hash()

    def prove(self, key: bytes) -> tuple[bytes, MapProof]:
        """The current root and the proof for ``key`` against it (one snapshot)."""
        root, proofs = self.prove_many([key])
        return root, proofs[bytes(key)]

    def prove_many(self, keys: Iterable[bytes]) -> tuple[bytes, dict[bytes, MapProof]]:
        """The current root and a proof for each key against it, read in one snapshot."""
        with self.snapshot() as reader:
            return prove_many(reader, keys, window=self._window)

    def rows(self, changed: Mapping[bytes, MapNode], deleted: Collection[bytes]) -> dict[str, list[dict[str, bytes | None]]]:
        """The IntegrationBatch.extra rows that write a change computed by core.smt.apply_batch."""
        return MapUpdate(EMPTY_HASH, map_rows(changed, deleted)).extra

    def update(self, updates: Mapping[bytes, bytes | None]) -> MapUpdate:
        """Compute a batch (key -> new value hash, None to remove) against the stored map; writes nothing.

        The caller writes ``MapUpdate.extra`` with the batch. Requires that no other batch commits between
        this call and that write (the one sequencer of the log).
        """
        root, changed, deleted = apply_batch(self, updates, window=self._window)
        return MapUpdate(root, map_rows(changed, deleted))

    def clear(self) -> None:
        """Delete every stored node (rebuilding the map with new keys, see service.rebuild_map)."""
        with self._store.begin() as conn:
            conn.execute(delete(_m))

    def node_count(self) -> int:
        """The number of stored nodes (cleared positions not counted). Scans the table: for tools and tests."""
        q = select(func.count()).select_from(_m).where(_m.c.left_hash.is_not(None) | _m.c.leaf_key.is_not(None))
        with self._store.connect() as conn:
            return int(conn.execute(q).scalar_one())
