"""SqlLogStore: the LogStore port (consent_ledger.app.ports) over SQLAlchemy 2 Core.

Every method takes its own pooled connection, so a store is safe to share between threads; an in-memory SQLite
database has a single connection, and the store serialises access to it.

Integration is one transaction. It first checks that the log is at the batch's start, the size of the latest
checkpoint, which must equal ``batch.entries[0].index`` or, for a batch without entries,
``batch.checkpoint.size``. A batch without entries publishes a checkpoint for the current tree: the first
checkpoint of an empty log (size 0), or a re-signed checkpoint that replaces the note stored for the current
size (the root must not change). Then it writes the leaves, bodies, tiles (inserted or overwritten), the extra
rows and the checkpoint. When another writer got there first the transaction writes nothing and
:class:`ConcurrentIntegration` is raised, whether the size check saw it or a unique key did.

``IntegrationBatch.extra`` is the hook for index tables added later: it maps the name of a table in
``schema.metadata`` (not one of the four core tables; created by its own migration) to the rows to write. They
are inserted in the batch's transaction, tables in foreign-key order; a table with ``info={schema.UPSERT: True}``
has its rows inserted or, where the primary key exists, overwritten. A unique-key collision there is a
:class:`BatchConflict` like any other.
"""

from __future__ import annotations

import contextlib
import threading
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, bindparam, delete, insert, select, tuple_, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.sql.compiler import SQLCompiler

from consent_ledger.app.errors import CorruptStorage, StorageUnavailable
from consent_ledger.app.ports import (
    ConcurrentIntegration,
    IntegrationBatch,
    StoredCheckpoint,
    StoredEntry,
)
from consent_ledger.core.errors import InvalidInput
from consent_ledger.core.tiles import TILE_WIDTH, TileId, levels_with_interior, tile_interior, tile_levels
from consent_ledger.storage import schema
from consent_ledger.storage.lease import check_fence
from consent_ledger.storage.engine import WRITE_OPTION, Timeouts, is_memory_sqlite, make_engine
from consent_ledger.storage.migration import migrate as migrate_schema

__all__ = ["MAX_READ_ENTRIES", "BatchConflict", "SqlLogStore", "open_store", "storage_unavailable"]

HASH_SIZE = 32
MAX_READ_ENTRIES = 1000
# Bound the parameters of one IN (...): SQLite allows 32,766 variables, but large lists plan poorly everywhere.
_IN_CHUNK = 500

_leaves, _bodies, _tiles, _checkpoints = schema.leaves, schema.bodies, schema.tiles, schema.checkpoints
_erasures = schema.erasures

# An entry as read: leaf, body (NULL once erased) and the Erasure entry that erased it, if any.
ENTRY_COLUMNS = (_leaves.c.idx, _leaves.c.leaf, _bodies.c.envelope, _erasures.c.erasure_idx)
ENTRY_FROM = _leaves.outerjoin(_bodies, _bodies.c.idx == _leaves.c.idx).outerjoin(
    _erasures, _erasures.c.idx == _leaves.c.idx
)


def stored_entry(idx: int, leaf: bytes, envelope: bytes | None, erased_by: int | None) -> StoredEntry:
    """A StoredEntry from a row of ENTRY_COLUMNS."""
    if envelope is not None:
        return StoredEntry(idx, bytes(leaf), bytes(envelope))
    return StoredEntry(idx, bytes(leaf), None, erased_by)


class BatchConflict(ValueError):
    """The batch collides with itself or with stored rows (a leaf or envelope hash already logged) although no
    other writer moved the log: the caller broke the batch's contract. Nothing was written."""


def storage_unavailable(e: BaseException) -> StorageUnavailable | None:
    """The app's StorageUnavailable for a database error that means "the database cannot do this now" (the
    connection refused, lost or timed out, a statement timeout, a full disk: the driver's OperationalError and
    InterfaceError, a connection SQLAlchemy invalidated, the pool's timeout); None for anything else (a
    constraint, a bug). The one place where storage errors become UNAVAILABLE for callers."""
    if isinstance(e, DBAPIError) and (
        isinstance(e, sa_exc.OperationalError | sa_exc.InterfaceError) or e.connection_invalidated
    ):
        cause = e.orig if e.orig is not None else e
        detail = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        return StorageUnavailable(
            f"the ledger's database is unavailable ({type(cause).__name__}); try again later",
            f"{type(cause).__name__}: {detail}",
        )
    if isinstance(e, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return StorageUnavailable(f"the ledger's database is unavailable ({type(e).__name__}); try again later", str(e))
    return None


@contextlib.contextmanager
def _storage_errors() -> Iterator[None]:
    try:
        yield
    except (DBAPIError, sa_exc.TimeoutError, sa_exc.DisconnectionError) as e:
        if isinstance(e, DBAPIError) and _is_lock_conflict(e):
            raise  # integrate() tells a racing writer from a failure
        mapped = storage_unavailable(e)
        if mapped is None:
            raise
        raise mapped from e


def open_store(
    url: str | URL, *, migrate: bool = True, timeouts: Timeouts = Timeouts(), pool_size: int | None = None
) -> SqlLogStore:
    """Open the log stored at ``url`` (forms in consent_ledger.storage.engine), upgrading its schema first
    unless ``migrate`` is False. Raises StorageUnavailable, naming the database, when it cannot be reached
    within ``timeouts``."""
    engine = make_engine(url, timeouts=timeouts, pool_size=pool_size)
    try:
        if migrate:
            migrate_schema(engine)
    except BaseException as e:
        engine.dispose()
        mapped = storage_unavailable(e)
        if mapped is None:
            raise
        where = engine.url.render_as_string(hide_password=True)
        raise StorageUnavailable(
            f"cannot open the database {where}: {mapped.detail} (connect timeout {timeouts.connect_s:g} s, "
            f"statement timeout {timeouts.statement_s:g} s)"
        ) from e
    return SqlLogStore(engine)


class SqlLogStore:
    """A log's durable state in a SQL database. Implements consent_ledger.app.ports.LogStore."""

    def __init__(self, engine: Engine) -> None:
        """Use ``engine`` (see make_engine), whose schema must be migrated. The store disposes it on close()."""
        self._engine = engine
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if is_memory_sqlite(engine.url) else contextlib.nullcontext()
        )
        # The connection of the transaction() open on a thread, if any.
        self._local = threading.local()
        # PostgreSQL reads run without a transaction: at READ COMMITTED every statement takes its own snapshot
        # anyway, so a read transaction adds only a BEGIN and a ROLLBACK, two round trips (320 us of a 700 us tile
        # read). A read that needs one snapshot asks for it (MapStore.snapshot: REPEATABLE READ). MySQL and MariaDB
        # read at REPEATABLE READ, where a transaction is a snapshot, and SQLite's are in-process: both keep theirs.
        self._read_options = {"isolation_level": "AUTOCOMMIT"} if engine.dialect.name == "postgresql" else {}

    @property
    def engine(self) -> Engine:
        return self._engine

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection for reading, never for writing: its transaction is rolled back at the end (on PostgreSQL
        each statement runs on its own, see __init__). A database that cannot be reached raises StorageUnavailable
        (see storage_unavailable). Inside :meth:`transaction`, on its thread: the transaction's connection (the
        read sees the transaction's own writes)."""
        current = self._local.__dict__.get("conn")
        if current is not None:
            with _storage_errors():
                yield current
            return
        with _storage_errors(), self._lock, self._engine.connect() as conn:
            if self._read_options:
                conn.execution_options(**self._read_options)
            yield conn

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection in a write transaction, committed at the end unless an exception escapes. A failure to
        reach the database raises StorageUnavailable; during the COMMIT its outcome is then unknown. Inside
        :meth:`transaction`, on its thread: that transaction (committed when it ends)."""
        current = self._local.__dict__.get("conn")
        if current is not None:
            with _storage_errors():
                yield current
            return
        with _storage_errors(), self._lock, self._engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                yield conn

    def in_transaction(self) -> bool:
        """Whether this thread is inside :meth:`transaction`."""
        return self._local.__dict__.get("conn") is not None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (BEGIN IMMEDIATE on SQLite) for everything this thread does with the store until
        the block ends: the sequencer's batch, whose admission reads, index look-ups and ``integrate`` then see one
        state and commit together, on one pooled connection. Committed at the end unless an exception escapes
        (then rolled back; a failed ``integrate`` is explained as it is outside a transaction)."""
        if self.in_transaction():
            raise RuntimeError("SqlLogStore.transaction() does not nest")
        self._local.start = None
        try:
            with self.begin() as conn:
                self._local.conn = conn
                try:
                    yield
                finally:
                    self._local.conn = None
        except DBAPIError as e:
            start = self._local.__dict__.get("start")
            failure = e if start is None else self._failed_write(start, e)
            if failure is e:
                raise
            raise failure from e
        finally:
            self._local.start = None

    def ping(self) -> None:
        """A cheap round trip to the database (health). Raises StorageUnavailable when it cannot be reached."""
        with self.connect() as conn:
            conn.exec_driver_sql("SELECT 1").scalar()

    def close(self) -> None:
        self._engine.dispose()

    # Reads.

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """The checkpoint with the largest tree size, or None for an empty log."""
        with self.connect() as conn:
            row = conn.execute(select(_checkpoints).order_by(_checkpoints.c.size.desc()).limit(1)).first()
        return _checkpoint(row) if row is not None else None

    def checkpoint_at(self, size: int) -> StoredCheckpoint | None:
        """The checkpoint published for tree size ``size``, if any."""
        with self.connect() as conn:
            row = conn.execute(select(_checkpoints).where(_checkpoints.c.size == size)).first()
        return _checkpoint(row) if row is not None else None

    def tree_size(self) -> int:
        """The size of the latest checkpoint; 0 for an empty log."""
        with self.connect() as conn:
            return _current_size(conn)

    def read_tiles(self, ids: Collection[TileId]) -> dict[TileId, bytes]:
        """The stored rows of the given tiles; missing tiles are absent from the result."""
        return {(lv, idx): bytes(data) for lv, idx, data, _ in self._tile_rows(ids)}

    def read_tile_levels(self, ids: Collection[TileId]) -> dict[TileId, tuple[bytes, ...]]:
        """Every complete level of each stored tile's subtree (core.tiles.tile_levels): a full tile's from the
        interior hashes stored with it, without hashing; a partial tile's, or one stored before its interior
        was (migration 0011), hashed here. Missing tiles are absent from the result."""
        return tile_levels_of_rows(self._tile_rows(ids))

    def _tile_rows(self, ids: Collection[TileId]) -> list[Any]:
        """(level, idx, hashes, interior or None) of the stored tiles among ``ids``: one prepared statement per
        tile level on one connection (a cold proof reads one level-0 tile: one statement)."""
        by_level: dict[int, list[int]] = defaultdict(list)
        for level, index in set(ids):
            by_level[level].append(index)
        rows: list[Any] = []
        with self.connect() as conn:
            for level, indices in sorted(by_level.items()):
                for chunk in _chunks(sorted(indices)):
                    rows.extend(conn.execute(_READ_TILES, {"level": level, "ids": list(chunk)}))
        return rows

    def find_envelopes(self, sha256s: Collection[bytes]) -> dict[bytes, int]:
        """Index of each already-logged envelope, by the SHA-256 of its exact bytes."""
        wanted = sorted({bytes(h) for h in sha256s})
        out: dict[bytes, int] = {}
        if not wanted:
            return out
        with self.connect() as conn:
            for chunk in _chunks(wanted):
                rows = conn.execute(
                    select(_leaves.c.envelope_sha256, _leaves.c.idx).where(_leaves.c.envelope_sha256.in_(chunk))
                )
                out.update((bytes(h), i) for h, i in rows)
        return out

    def find_leaf(self, leaf_hash: bytes) -> int | None:
        """Index of the leaf with this RFC 6962 leaf hash, if any."""
        with self.connect() as conn:
            return conn.execute(select(_leaves.c.idx).where(_leaves.c.leaf_hash == bytes(leaf_hash))).scalar()

    def read_entries(self, start: int, end: int) -> list[StoredEntry]:
        """Entries with start <= index < end, in index order (fewer if the log is shorter).

        Requires 0 <= start <= end <= start + MAX_READ_ENTRIES; raises ValueError otherwise.
        """
        if not 0 <= start <= end or end - start > MAX_READ_ENTRIES:
            raise ValueError(f"entry range [{start}, {end}) is not 0 <= start <= end <= start + {MAX_READ_ENTRIES}")
        if start == end:
            return []
        query = (
            select(*ENTRY_COLUMNS)
            .select_from(ENTRY_FROM)
            .where(_leaves.c.idx >= start, _leaves.c.idx < end)
            .order_by(_leaves.c.idx)
        )
        with self.connect() as conn:
            return [stored_entry(*row) for row in conn.execute(query)]

    # Writes.

    def integrate(self, batch: IntegrationBatch) -> None:
        """Write a batch atomically (see the module docstring for the rules).

        Raises ConcurrentIntegration if the log is not at the batch's start, BatchConflict if the batch repeats a
        leaf or envelope hash, ValueError if the batch is malformed. Nothing is written in any of these cases.
        """
        start = _check_batch(batch)
        if self.in_transaction():
            # Inside the sequencer's transaction(): it explains a failure once the transaction is rolled back.
            self._local.start = start
            with self.begin() as conn:
                self._write(conn, batch, start)
            return
        try:
            with self.begin() as conn:
                self._write(conn, batch, start)
        except DBAPIError as e:
            failure = self._failed_write(start, e)
            if failure is e:
                raise
            raise failure from e

    def _failed_write(self, start: int, e: DBAPIError) -> Exception:
        """What a failed batch write raises: ConcurrentIntegration or BatchConflict (_explain_conflict) for a
        constraint or a lock conflict, StorageUnavailable for a database that cannot do it now, else ``e``."""
        if isinstance(e, IntegrityError):
            return self._explain_conflict(start, e)
        if not _is_lock_conflict(e):
            return e
        explained = self._explain_conflict(start, e)
        if explained is e:
            mapped = storage_unavailable(e)
            return e if mapped is None else mapped
        return explained

    def _write(self, conn: Connection, batch: IntegrationBatch, start: int) -> None:
        """The batch's writes, in the open transaction of ``conn``. The log must be at ``start``: this is where a
        check that this writer still holds the log (a lease, a fencing token) belongs, before anything is
        written."""
        if batch.fence is not None:  # replicas: before any write, so a lease taken over fails the batch here
            check_fence(conn, batch.fence)
        cp = batch.checkpoint
        latest = conn.execute(
            select(_checkpoints.c.size, _checkpoints.c.root_hash)
            .order_by(_checkpoints.c.size.desc())
            .limit(1)
        ).first()
        size = latest.size if latest is not None else 0
        if size != start:
            raise ConcurrentIntegration(f"the log is at size {size}, the batch starts at {start}")
        if batch.entries:
            # Leaves first: a concurrent writer at the same start collides here, before anything else.
            _insert_many(
                conn,
                _leaves,
                ("idx", "leaf_hash", "leaf", "envelope_sha256", "payload_type", "integrated_ms"),
                [
                    (
                        e.index,
                        bytes(e.leaf_hash),
                        bytes(e.leaf),
                        bytes(e.envelope_sha256),
                        e.payload_type,
                        e.integrated_ms,
                    )
                    for e in batch.entries
                ],
            )
            bodies = [(e.index, bytes(e.envelope)) for e in batch.entries]
            _insert_many(conn, _bodies, ("idx", "envelope"), bodies)
        if batch.tiles:
            _upsert(
                conn,
                _tiles,
                [
                    {
                        "level": lv,
                        "idx": ix,
                        "hashes": bytes(data),
                        "interior": tile_interior(data) if len(data) == TILE_WIDTH * HASH_SIZE else None,
                    }
                    for (lv, ix), data in batch.tiles.items()
                ],
            )
        for table in _extra_tables(batch.extra):
            rows = [dict(r) for r in batch.extra[table.name]]
            if not rows:
                continue
            if table.info.get(schema.UPSERT):
                _upsert(conn, table, rows)
            else:
                columns = [c.name for c in table.columns if any(c.name in r for r in rows)]
                _insert_many(conn, table, columns, [tuple(r.get(c) for c in columns) for r in rows])
        for index, reason in sorted(batch.erasures.items()):
            # Only a body still there: erasing twice would replace the reason the first erasure gave.
            conn.execute(
                update(_bodies)
                .where(_bodies.c.idx == index, _bodies.c.envelope.is_not(None))
                .values(envelope=None, erased_reason=reason)
            )
        if latest is not None and latest.size == cp.size:
            if bytes(latest.root_hash) != bytes(cp.root_hash):
                raise ValueError(f"a checkpoint for size {cp.size} with another root is already stored")
            conn.execute(
                update(_checkpoints)
                .where(_checkpoints.c.size == cp.size)
                .values(note=bytes(cp.note), created_ms=cp.created_ms)
            )
        else:
            conn.execute(
                insert(_checkpoints).values(
                    size=cp.size, root_hash=bytes(cp.root_hash), note=bytes(cp.note), created_ms=cp.created_ms
                )
            )

    def erase_body(self, index: int, reason: str) -> None:
        """Erase the body of entry ``index`` (its leaf, and so every proof, stays). Raises LookupError if there is
        no such entry. Erasing again replaces the reason."""
        if not reason:
            raise ValueError("an erasure needs a reason")
        with self.begin() as conn:
            result = conn.execute(
                update(_bodies).where(_bodies.c.idx == index).values(envelope=None, erased_reason=reason)
            )
            if result.rowcount != 1:
                raise LookupError(f"no entry {index}")

    def _explain_conflict(self, start: int, error: Exception) -> Exception:
        """What a failed write means: another writer moved the log, or the batch itself is at fault."""
        size = self.tree_size()
        if size != start:
            return ConcurrentIntegration(f"another writer integrated first: the log is at size {size}, not {start}")
        if isinstance(error, IntegrityError):
            return BatchConflict(f"the batch collides with stored rows: {error.orig}")
        return error


def _checkpoint(row: Any) -> StoredCheckpoint:
    return StoredCheckpoint(row.size, bytes(row.root_hash), bytes(row.note), row.created_ms)


def _current_size(conn: Connection) -> int:
    size = conn.execute(select(_checkpoints.c.size).order_by(_checkpoints.c.size.desc()).limit(1)).scalar()
    return 0 if size is None else size


def tile_levels_of_rows(rows: Iterable[Any]) -> dict[TileId, tuple[bytes, ...]]:
    """{tile: its levels} from (level, idx, hashes, interior or None) rows of the tiles table: a full tile's from
    its stored interior, any other's hashed (core.tiles.tile_levels). Raises CorruptStorage for a malformed row."""
    out: dict[TileId, tuple[bytes, ...]] = {}
    for lv, idx, data, interior in rows:
        data = bytes(data)
        try:
            out[(lv, idx)] = (
                tile_levels(data)
                if interior is None or len(data) != TILE_WIDTH * HASH_SIZE
                else levels_with_interior(data, bytes(interior))
            )
        except InvalidInput as e:
            raise CorruptStorage(f"tile {(lv, idx)}: {e}") from e
    return out


# Built once (the statements a cold proof sends: building a select per call cost 170 us of 500 on PostgreSQL).
_READ_TILES = select(_tiles.c.level, _tiles.c.idx, _tiles.c.hashes, _tiles.c.interior).where(
    _tiles.c.level == bindparam("level"), _tiles.c.idx.in_(bindparam("ids", expanding=True))
)


def _chunks(items: Sequence[Any], n: int = _IN_CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _is_hash(h: object) -> bool:
    return isinstance(h, bytes | bytearray | memoryview) and len(h) == HASH_SIZE


def _check_batch(batch: IntegrationBatch) -> int:
    """The batch's start. Raises ValueError (or BatchConflict) for a malformed batch."""
    cp = batch.checkpoint
    if cp.size < 0 or not _is_hash(cp.root_hash) or not cp.note:
        raise ValueError("the batch's checkpoint needs a size >= 0, a 32-byte root and a note")
    entries = batch.entries
    start = entries[0].index if entries else cp.size
    if start < 0 or cp.size != start + len(entries):
        raise ValueError(f"a checkpoint of size {cp.size} does not follow {len(entries)} entries from {start}")
    leaf_hashes: set[bytes] = set()
    envelope_hashes: set[bytes] = set()
    for i, e in enumerate(entries):
        if e.index != start + i:
            raise ValueError(f"entry {i} of the batch has index {e.index}, expected {start + i}")
        if not _is_hash(e.leaf_hash) or not _is_hash(e.envelope_sha256):
            raise ValueError(f"entry {e.index} needs a 32-byte leaf hash and envelope hash")
        leaf_hashes.add(bytes(e.leaf_hash))
        envelope_hashes.add(bytes(e.envelope_sha256))
    if len(leaf_hashes) != len(entries) or len(envelope_hashes) != len(entries):
        raise BatchConflict("the batch holds the same leaf or envelope twice")
    for (level, index), data in batch.tiles.items():
        if level < 0 or index < 0 or not data or len(data) % HASH_SIZE or len(data) > TILE_WIDTH * HASH_SIZE:
            raise ValueError(f"tile {(level, index)} is malformed ({len(data)} bytes)")
    _extra_tables(batch.extra)
    for index, reason in batch.erasures.items():
        if not 0 <= index < start or not reason:
            raise ValueError(f"erasure of entry {index}: needs an entry before the batch and a reason")
    return start


def _extra_tables(extra: Mapping[str, Sequence[Mapping[str, object]]]) -> list[Table]:
    """The tables named by ``extra``, in dependency order. Raises ValueError for an unknown or core table."""
    for name in extra:
        if name not in schema.metadata.tables or name in schema.CORE_TABLES:
            raise ValueError(f"{name!r} is not an extra table of the schema")
    return [t for t in schema.metadata.sorted_tables if t.name in extra]


def _insert_many(conn: Connection, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    """Insert many rows of plain Python values (bytes, int, str, None) straight through the driver.

    SQLAlchemy's per-row parameter processing costs more than the database's own work on large batches, and these
    columns need none. PostgreSQL's protocol (PostgreSQL, CockroachDB, YugabyteDB) gets one statement with an
    array per column (``_insert_arrays``); the others one executemany (PyMySQL turns it into multi-row INSERTs).
    """
    if conn.dialect.name == "postgresql":
        _insert_arrays(conn, table, columns, rows, upsert=False)
        return
    _execute_many(conn, ("insert", table.name), lambda: insert(table), columns, rows)


def _insert_arrays(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]], *, upsert: bool
) -> None:
    """PostgreSQL's protocol: ``rows`` as one array per column in ONE statement, ``INSERT INTO t (columns) SELECT *
    FROM unnest($1::type[], ...)``, with ``ON CONFLICT (primary key) DO UPDATE`` when ``upsert`` (rows with the same
    key: the last one wins, as an executemany would leave it).

    The statement goes as ONE protocol message: psycopg's client-side binding (``ClientCursor``), which sends a
    simple-protocol Query with the values inlined. Not COPY, not psycopg's executemany (a pipeline) and not even
    one server-bound statement (Parse, Bind, Execute, Sync: separate messages): in each of those the server reads
    the rest of the batch after it has started on it, its session stays "active", and neither
    ``idle_in_transaction_session_timeout`` nor ``statement_timeout`` ends it. A leader stopped there (SIGSTOP, a
    network partition) kept the lease row locked for as long as it stayed stopped, and no other replica could
    take over (storage/lease.py, ``bound_lock_holding``). A Query message stopped before or halfway through is
    read while the session is idle in its transaction, and the server ends the session after the lease's time
    to live.
    """
    if not rows:
        return
    keys = [c.name for c in table.primary_key.columns]
    if upsert:
        at = [columns.index(k) for k in keys]
        last = {tuple(row[i] for i in at): row for row in rows}
        rows = list(last.values())
    cache_key = ("arrays", conn.dialect.name, table.name, tuple(columns), upsert)
    hit = _COMPILED.get(cache_key)
    if hit is None:
        quote = conn.dialect.identifier_preparer.quote
        arrays = ", ".join(f"%s::{table.c[c].type.compile(dialect=conn.dialect)}[]" for c in columns)
        sql = f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) SELECT * FROM unnest({arrays})"
        if upsert:
            others = [c for c in columns if c not in keys]
            action = (
                "DO UPDATE SET " + ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in others)
                if others
                else "DO NOTHING"
            )
            sql += f" ON CONFLICT ({', '.join(quote(k) for k in keys)}) {action}"
        hit = _COMPILED[cache_key] = (sql, None)
    sql = hit[0]
    dbapi = conn.dialect.loaded_dbapi
    raw = conn.connection.dbapi_connection
    try:
        with dbapi.ClientCursor(raw) as cursor:
            cursor.execute(sql, tuple(list(column) for column in zip(*rows, strict=True)))
    except dbapi.Error as e:
        # Raised by the driver, not through SQLAlchemy: wrap it as SQLAlchemy would (IntegrityError, ...).
        raise DBAPIError.instance(sql, None, e, dbapi.Error) from e


# Compiled statements by (dialect and server version, kind, table, columns): building and compiling a statement costs more than
# running it for a batch of a few dozen rows.
_COMPILED: dict[tuple[object, ...], tuple[str, list[int] | None]] = {}


def _execute_many(
    conn: Connection, key: tuple[str, str], build: Any, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """One DBAPI executemany of the statement ``build()`` (an INSERT, or an upsert) for ``rows`` of plain values in
    ``columns`` order, compiled once per dialect and columns; no per-row SQLAlchemy parameter processing."""
    d = conn.dialect
    cache_key = (d.name, d.driver, d.paramstyle, getattr(d, "server_version_info", None), *key, tuple(columns))
    hit = _COMPILED.get(cache_key)
    if hit is None:
        compiled = cast(SQLCompiler, build().compile(dialect=conn.dialect, column_keys=list(columns)))
        order = [list(columns).index(name) for name in compiled.positiontup or ()] if compiled.positional else None
        hit = _COMPILED[cache_key] = (compiled.string, order)
    sql, order = hit
    params: list[Any]
    if order is not None:
        params = [tuple(row[i] for i in order) for row in rows]
    else:
        params = [dict(zip(columns, row, strict=True)) for row in rows]
    conn.exec_driver_sql(sql, params)


def _upsert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows, replacing any row with the same primary key. One executemany where the dialect allows."""
    keys = [c.name for c in table.primary_key.columns]
    others = [c.name for c in table.columns if c.name not in keys]
    backend = conn.dialect.name
    columns = [c.name for c in table.columns if any(c.name in r for r in rows)]
    values = [tuple(r.get(c) for c in columns) for r in rows]
    if backend == "postgresql":
        _insert_arrays(conn, table, columns, values, upsert=True)
    elif backend == "sqlite":

        def build() -> Any:
            ins = sqlite_dialect.insert(table)
            others_ = [c for c in others if c in columns]
            return (
                ins.on_conflict_do_update(index_elements=keys, set_={c: ins.excluded[c] for c in others_})
                if others_
                else ins.on_conflict_do_nothing(index_elements=keys)
            )

        _execute_many(conn, ("upsert", table.name), build, columns, values)
    elif backend in ("mysql", "mariadb"):

        def build_mysql() -> Any:
            mins = mysql_dialect.insert(table)
            names = [c for c in others if c in columns] or keys  # with nothing else to update, "update" a key to itself
            return mins.on_duplicate_key_update({c: mins.inserted[c] for c in names})

        _execute_many(conn, ("upsert", table.name), build_mysql, columns, values)
    else:
        for chunk in _chunks(rows):
            key_values = [tuple(r[k] for k in keys) for r in chunk]
            cols = [table.c[k] for k in keys]
            where = (
                tuple_(*cols).in_(key_values)
                if len(cols) > 1
                else cols[0].in_([v[0] for v in key_values])
            )
            conn.execute(delete(table).where(where))
        conn.execute(insert(table), rows)


def _is_lock_conflict(e: DBAPIError) -> bool:
    """A deadlock or serialization failure: the database rolled back one of two racing writers."""
    orig = e.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in ("40001", "40P01"):
        return True
    args = getattr(orig, "args", ())
    # MySQL: deadlock, lock wait timeout; TiDB: a write conflict (optimistic transactions: 9007, 8005) or one it
    # cannot retry (8002), each rolled back whole (docs/storage.md).
    return bool(args) and args[0] in (1213, 1205, 9007, 8005, 8002)
