"""Engines for the three supported backends, configured for a log's durability needs.

URL forms:

- SQLite (the default): ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``; ``sqlite://`` or
  ``sqlite:///:memory:`` for a private in-memory database (tests). Every connection runs in WAL mode with
  ``synchronous=FULL``, foreign keys on and a busy timeout; SQLAlchemy, not the sqlite3 module, emits BEGIN, and
  write transactions use ``BEGIN IMMEDIATE`` so two writers queue instead of failing on a stale snapshot.
- PostgreSQL: ``postgresql+psycopg://user@host:5432/db`` (``postgresql://`` is taken to mean psycopg 3).
- MySQL family (MariaDB, and the dialect TiDB and OceanBase speak): ``mysql+pymysql://user:pw@host:3306/db``
  (``mysql://`` and ``mariadb://`` are taken to mean PyMySQL); the connection character set is utf8mb4.

Every backend bounds the time to connect and to run a statement (``Timeouts``), so a database that is down or
stalled fails calls instead of hanging them: PostgreSQL gets libpq's ``connect_timeout`` and a server-side
``statement_timeout``; MySQL/MariaDB PyMySQL's connect timeout (for the handshake too), client-side read and
write timeouts and, where the server has it, ``max_statement_time``; SQLite its busy timeout. The pool of a
networked backend holds ``pool_size`` connections and never opens overflow connections (a connection opened
and closed per call under load): size it to the threads that use the store. It checks a pooled connection with a
ping before handing it out only when the connection has been idle for ``PING_IDLE_S`` or longer (HikariCP's
"alive bypass window"): a ping is a round trip (150 us on loopback PostgreSQL, a third of a proof that reads a
tile), and a connection used less than a second ago is alive but for a cut in that second, which then shows as a
cut during a statement does, and is handled the same way (the call fails with UNAVAILABLE, SQLAlchemy invalidates
the pool, the next checkout connects afresh).
"""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "WRITE_OPTION",
    "Timeouts",
    "is_memory_sqlite",
    "make_engine",
    "normalize_url",
    "server_flavour",
    "unbounded_statements",
]

SQLITE_BUSY_TIMEOUT_MS = 10_000

# Execution option marking a connection whose next transaction writes (BEGIN IMMEDIATE on SQLite).
WRITE_OPTION = "consent_ledger_write"

_DEFAULT_DRIVERS = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql"}


def normalize_url(url: str | URL) -> URL:
    """The URL with the project's default driver filled in for PostgreSQL and MySQL/MariaDB."""
    u = make_url(url)
    if u.drivername in _DEFAULT_DRIVERS:
        u = u.set(drivername=_DEFAULT_DRIVERS[u.drivername])
    if u.get_backend_name() in ("mysql", "mariadb") and "charset" not in u.query:
        u = u.update_query_dict({"charset": "utf8mb4"})
    return u


def is_memory_sqlite(url: str | URL) -> bool:
    u = make_url(url)
    return u.get_backend_name() == "sqlite" and u.database in (None, "", ":memory:")


@dataclass(frozen=True)
class Timeouts:
    """How long to wait for the database: to connect (handshake included), and for one statement."""

    connect_s: float = 5.0
    statement_s: float = 30.0

    def __post_init__(self) -> None:
        if not (self.connect_s > 0 and self.statement_s > 0):
            raise ValueError("database timeouts must be positive")


def make_engine(
    url: str | URL, *, timeouts: Timeouts = Timeouts(), pool_size: int | None = None, **kwargs: Any
) -> Engine:
    """An Engine for ``url`` (see the module docstring for the forms), with ``timeouts`` applied; ``pool_size``
    connections (networked backends; default SQLAlchemy's 5). Extra kwargs go to create_engine."""
    u = normalize_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(u, **kwargs)
    if backend in ("postgresql", "mysql", "mariadb"):
        ping_idle = not kwargs.get("pool_pre_ping", False)  # pool_pre_ping=True: ping on every checkout instead
        if pool_size is not None and "poolclass" not in kwargs:
            kwargs.setdefault("pool_size", pool_size)
            kwargs.setdefault("max_overflow", 0)
            kwargs.setdefault("pool_timeout", timeouts.statement_s)
        connect_args = dict(kwargs.pop("connect_args", {}))
        if backend == "postgresql":
            engine = create_engine(u, connect_args=postgres_connect_args(u, timeouts, connect_args), **kwargs)
            if ping_idle:
                _ping_when_idle(engine, PING_IDLE_S)
            return engine
        # Servers drop idle connections after wait_timeout (8 h by default).
        kwargs.setdefault("pool_recycle", 3600)
        # PyMySQL reads the handshake with the read timeout: the connect timeout until connected (see _on_connect).
        connect_args.setdefault("connect_timeout", max(1, math.ceil(timeouts.connect_s)))
        connect_args.setdefault("read_timeout", max(1, math.ceil(timeouts.connect_s)))
        connect_args.setdefault("write_timeout", max(1, math.ceil(timeouts.connect_s)))
        engine = create_engine(u, connect_args=connect_args, **kwargs)
        if ping_idle:
            _ping_when_idle(engine, PING_IDLE_S)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # A statement may take up to the statement timeout, client side (a stalled server included)...
            io_s = max(1, math.ceil(timeouts.statement_s)) + 1
            dbapi_conn._read_timeout = io_s
            dbapi_conn._write_timeout = io_s
            cur = dbapi_conn.cursor()
            try:  # ...and server side where the server knows how (MariaDB; MySQL bounds SELECTs only).
                cur.execute(f"SET SESSION max_statement_time = {timeouts.statement_s:.3f}")
            except Exception:  # noqa: BLE001 - MySQL, TiDB: no such variable
                try:
                    cur.execute(f"SET SESSION max_execution_time = {math.ceil(timeouts.statement_s * 1000)}")
                except Exception:  # noqa: BLE001
                    pass
            finally:
                cur.close()

        return engine
    return create_engine(u, **kwargs)


def postgres_connect_args(u: URL, timeouts: Timeouts, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """libpq connection parameters that apply ``timeouts`` to a PostgreSQL connection of ``u`` (the engine's, and
    storage.async_reads' connections on the event loop): ``given`` ones win, the URL's ``options`` are kept."""
    connect_args = dict(given or {})
    connect_args.setdefault("connect_timeout", max(2, math.ceil(timeouts.connect_s)))
    statement_ms = math.ceil(timeouts.statement_s * 1000)
    # A peer that vanished (no RST: a partition, a failed-over host) is noticed while waiting for a reply
    # (keepalives) or while sent data stays unacknowledged (tcp_user_timeout), within about the statement
    # timeout; the server-side statement_timeout cannot answer through a dead network.
    probe_s = max(1, math.ceil(timeouts.statement_s / 4))
    for name, value in (
        ("keepalives", 1),
        ("keepalives_idle", probe_s),
        ("keepalives_interval", probe_s),
        ("keepalives_count", 3),
        ("tcp_user_timeout", statement_ms),
    ):
        connect_args.setdefault(name, value)
    options = connect_args.get("options", u.query.get("options", ""))
    connect_args["options"] = f"{options} -c statement_timeout={statement_ms}".strip()
    return connect_args


# A pooled connection idle this long is pinged before it is handed out (see the module docstring).
PING_IDLE_S = 1.0


def _ping_when_idle(engine: Engine, idle_s: float) -> None:
    """Ping a pooled connection on checkout when it has been idle for ``idle_s`` or more; one that fails the ping
    with a disconnect is replaced (the pool retries the checkout on DisconnectionError), as pool_pre_ping does."""
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < idle_s:  # just connected, or used a moment ago
            return
        try:
            dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error as e:
            if dialect.is_disconnect(e, dbapi_conn, None):
                raise sa_exc.DisconnectionError(f"a pooled connection failed its ping: {e}") from e
            raise


def _create_private(path: pathlib.Path) -> None:
    """Create a database file that does not exist yet with mode 0600, and its missing directories with 0700.

    SQLite creates the -wal and -shm files with the database file's mode, so consent bodies are never readable by
    other local users. Existing files and directories are left as they are."""
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)  # whatever the umask
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return
def server_flavour(conn: Connection) -> str:
    """Which server a connection of the PostgreSQL dialect reached: "postgresql", "cockroachdb" or "yugabytedb"
    (both speak the PostgreSQL protocol, so SQLAlchemy's dialect is "postgresql" for them too); the dialect's name
    for any other backend. Read from what the server announced at connect time (no query): CockroachDB reports a
    ``crdb_version`` parameter, YugabyteDB a ``server_version`` with "-YB-" in it (docs/storage.md)."""
    if conn.dialect.name != "postgresql":
        return conn.dialect.name
    info = getattr(conn.connection.dbapi_connection, "info", None)
    status = getattr(info, "parameter_status", None)
    if status is None:  # not psycopg 3
        return "postgresql"
    if status("crdb_version") is not None:
        return "cockroachdb"
    if "-YB-" in (status("server_version") or ""):
        return "yugabytedb"
    return "postgresql"


@contextlib.contextmanager
def unbounded_statements(conn: Connection) -> Iterator[None]:
    """Lift the statement timeout on ``conn`` for a while (schema migrations: DDL on a large table, or waiting
    for another process's migration, may take longer); restored before the connection goes back to the pool."""
    backend = conn.dialect.name
    dbapi_conn: Any = conn.connection.dbapi_connection
    if backend == "postgresql":
        conn.exec_driver_sql("SET statement_timeout = 0")
        conn.commit()
        try:
            yield
        finally:
            conn.rollback()
            conn.exec_driver_sql("RESET statement_timeout")  # to the connection's configured value
            conn.commit()
    elif backend in ("mysql", "mariadb"):
        saved = getattr(dbapi_conn, "_read_timeout", None), getattr(dbapi_conn, "_write_timeout", None)
        dbapi_conn._read_timeout = dbapi_conn._write_timeout = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute("SELECT @@max_statement_time")
            server_limit = cur.fetchone()[0]
            cur.execute("SET SESSION max_statement_time = 0")
        except Exception:  # noqa: BLE001 - MySQL, TiDB: no such variable (their limit covers SELECTs only)
            server_limit = None
        finally:
            cur.close()
        try:
            yield
        finally:
            dbapi_conn._read_timeout, dbapi_conn._write_timeout = saved
            if server_limit is not None:
                cur = dbapi_conn.cursor()
                try:
                    cur.execute(f"SET SESSION max_statement_time = {float(server_limit):.3f}")
                finally:
                    cur.close()
    else:
        yield


def _sqlite_engine(u: URL, **kwargs: Any) -> Engine:
    memory = is_memory_sqlite(u)
    connect_args = dict(kwargs.pop("connect_args", {}))
    # Pooled connections move between threads; each is used by one thread at a time (the store serialises
    # access to the single connection of an in-memory database).
    connect_args.setdefault("check_same_thread", False)
    if memory:
        # One shared connection: each new connection would be a new, empty database.
        kwargs.setdefault("poolclass", StaticPool)
    elif u.database and not u.database.startswith("file:"):
        _create_private(pathlib.Path(u.database).expanduser())
    engine = create_engine(u, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN (below): the sqlite3 module's own transaction handling skips it for
        # SELECT and DDL, which breaks repeatable reads and transactional migrations.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred transaction that reads and then writes fails at once (SQLITE_BUSY_SNAPSHOT) if another
        # writer committed in between; IMMEDIATE takes the write lock first, waiting up to busy_timeout.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE_OPTION) else "BEGIN")

    return engine
