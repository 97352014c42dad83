"""Engines for the three supported backends, configured for a log's durability needs.

URL forms:

- SQLite (the default): ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``; ``sqlite://`` or
  ``sqlite:///:memory:`` for a private in-memory database (tests). Every connection runs in WAL mode with
  ``synchronous=FULL``, foreign keys on and a busy timeout; SQLAlchemy, not the sqlite3 module, emits BEGIN, and
  write transactions use ``BEGIN IMMEDIATE`` so two writers queue instead of failing on a stale snapshot.
- PostgreSQL: ``postgresql+psycopg://user@host:5432/db`` (``postgresql://`` is taken to mean psycopg 3).
- MySQL family (MariaDB, and the dialect TiDB and OceanBase speak): ``mysql+pymysql://user:pw@host:3306/db``
  (``mysql://`` and ``mariadb://`` are taken to mean PyMySQL); the connection character set is utf8mb4.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "WRITE_OPTION", "is_memory_sqlite", "make_engine", "normalize_url"]

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


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An Engine for ``url`` (see the module docstring for the forms). Extra kwargs go to create_engine."""
    u = normalize_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(u, **kwargs)
    if backend in ("postgresql", "mysql", "mariadb"):
        kwargs.setdefault("pool_pre_ping", True)
        if backend != "postgresql":
            # Servers drop idle connections after wait_timeout (8 h by default).
            kwargs.setdefault("pool_recycle", 3600)
    return create_engine(u, **kwargs)


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
