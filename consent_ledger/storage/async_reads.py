"""Tile reads on the event loop, for PostgreSQL: a proof whose tile is not cached awaits one round trip on an
asyncio connection of psycopg's instead of taking a worker thread.

At 10 million leaves most proofs need a level-0 tile that the tile cache does not hold (the cache keeps a share of
the tree, not the tree). Read on a worker thread, such a proof cost the tile read plus a thread hop, about 0.25 ms
on this project's 2-core machine, as much again as the read; awaited on the event loop the hop is gone
(docs/benchmarks.md, "10 million entries"). The connections are the engine's in all but the driver interface: the
same URL and the same timeouts (storage.engine.postgres_connect_args), autocommit, prepared statements. Other
backends read on a worker thread (app.tree.TreeReader.fetch), SQLite because its reads are in-process anyway.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Collection
from typing import Any

from sqlalchemy import Engine

from consent_ledger.app.errors import StorageUnavailable
from consent_ledger.core.tiles import TileId
from consent_ledger.storage import schema
from consent_ledger.storage.engine import Timeouts, postgres_connect_args
from consent_ledger.storage.sql import SqlLogStore, tile_levels_of_rows

__all__ = ["AsyncTileReads", "async_tile_reads"]

_READ = f"SELECT level, idx, hashes, interior FROM {schema.tiles.name} WHERE level = %s AND idx = ANY(%s)"


def async_tile_reads(store: SqlLogStore, timeouts: Timeouts, connections: int = 4) -> AsyncTileReads | None:
    """Event-loop tile reads over ``store``'s database when it is PostgreSQL, else None."""
    if store.engine.dialect.name != "postgresql":
        return None
    return AsyncTileReads(store.engine, timeouts, connections)


class AsyncTileReads:
    """The app.ports.AsyncTileSource port over PostgreSQL: at most ``connections`` asyncio connections, opened
    when first needed, kept while they work, dropped when one fails. Use on one event loop."""

    def __init__(self, engine: Engine, timeouts: Timeouts, connections: int = 4) -> None:
        import psycopg  # the postgres extra; only PostgreSQL deployments get here

        self._psycopg = psycopg
        _, params = engine.dialect.create_connect_args(engine.url)
        self._params = {**params, **postgres_connect_args(engine.url, timeouts)}
        self._deadline_s = timeouts.connect_s + timeouts.statement_s + 1.0
        self._slots = connections
        self._idle: list[Any] = []
        self._gate: asyncio.Semaphore | None = None
        self._closed = False

    async def read_tile_levels(self, ids: Collection[TileId]) -> dict[TileId, tuple[bytes, ...]]:
        """As SqlLogStore.read_tile_levels, awaited. Raises StorageUnavailable when the database cannot answer
        within the connect and statement timeouts."""
        by_level: dict[int, list[int]] = defaultdict(list)
        for level, index in set(ids):
            by_level[level].append(index)
        if self._gate is None:
            self._gate = asyncio.Semaphore(self._slots)
        async with self._gate:
            try:
                rows = await asyncio.wait_for(self._read(by_level), self._deadline_s)
            except (self._psycopg.Error, OSError, TimeoutError) as e:
                detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise StorageUnavailable(
                    f"the ledger's database is unavailable ({type(e).__name__}); try again later",
                    f"{type(e).__name__}: {detail}",
                ) from e
        return tile_levels_of_rows(rows)

    async def _read(self, by_level: dict[int, list[int]]) -> list[Any]:
        if self._closed:
            raise self._psycopg.OperationalError("the tile reader is closed")
        conn = self._idle.pop() if self._idle else None
        if conn is not None:
            try:
                rows = await self._on(conn, by_level)
            except self._psycopg.OperationalError:
                # A connection kept idle may have been cut meanwhile (a database restart): one fresh try, as the
                # engine's pool pings a connection that has been idle (storage.engine).
                conn = None
            else:
                return rows
        conn = await self._psycopg.AsyncConnection.connect(autocommit=True, **self._params)
        return await self._on(conn, by_level)

    async def _on(self, conn: Any, by_level: dict[int, list[int]]) -> list[Any]:
        """The rows, read on ``conn``; the connection is kept for the next read, or closed if the read failed."""
        try:
            rows: list[Any] = []
            for level, indices in sorted(by_level.items()):
                cur = await conn.execute(_READ, (level, sorted(indices)), prepare=True)
                rows.extend(await cur.fetchall())
        except BaseException:  # a failed or cancelled read leaves the connection in an unknown state: drop it
            await _close(conn)
            raise
        if self._closed:
            await _close(conn)
        else:
            self._idle.append(conn)
        return rows

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await _close(conn)


async def _close(conn: Any) -> None:
    try:
        await conn.close()
    except Exception:  # noqa: BLE001 - closing a broken connection
        pass
