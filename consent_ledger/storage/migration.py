"""Schema migrations, run from code: the Alembic scripts ship inside the package and need no alembic.ini.

Developers add a revision with::

    python -c "from alembic import command; from consent_ledger.storage.migration import alembic_config; \
command.revision(alembic_config(), message='what it does', rev_id='0002')"

then write its upgrade by hand (spelling out names and types) and add the new tables to schema.py; the storage
test-suite checks that the migrated database and schema.py agree on every backend.
"""

from __future__ import annotations

import pathlib
import time

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.engine import URL

from consent_ledger.storage.engine import (
    WRITE_OPTION,
    is_memory_sqlite,
    make_engine,
    server_flavour,
    unbounded_statements,
)

__all__ = ["MIGRATIONS_DIR", "alembic_config", "current_revision", "head_revision", "migrate"]

MIGRATIONS_DIR = pathlib.Path(__file__).resolve().parent / "migrations"

_LOCK_NAME = "consent_ledger_migrate"
_MYSQL_LOCK_TIMEOUT_S = 120
# Attempts of a migration without a lock (CockroachDB, YugabyteDB) that failed while another process migrated.
_UNLOCKED_ATTEMPTS = 5


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic Config for the package's migrations, optionally with a database URL."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        rendered = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest revision the package knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine_or_url: Engine | str | URL, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` (the newest by default). Safe to run from several processes at once.

    An in-memory SQLite database exists only inside its engine: pass the engine, not the URL.
    """
    if isinstance(engine_or_url, Engine):
        _upgrade(engine_or_url, revision)
        return
    if is_memory_sqlite(engine_or_url):
        raise ValueError("migrating an in-memory SQLite URL would migrate a throwaway database; pass the engine")
    engine = make_engine(engine_or_url)
    try:
        _upgrade(engine, revision)
    finally:
        engine.dispose()


def _upgrade(engine: Engine, revision: str) -> None:
    with engine.connect() as conn, unbounded_statements(conn):
        conn.execution_options(**{WRITE_OPTION: True})
        backend = conn.dialect.name
        if backend in ("mysql", "mariadb"):
            # DDL commits implicitly on MySQL, so the lock is a session lock rather than a transaction's.
            got = conn.execute(text("SELECT GET_LOCK(:n, :t)"), {"n": _LOCK_NAME, "t": _MYSQL_LOCK_TIMEOUT_S}).scalar()
            if got != 1:
                raise RuntimeError("timed out waiting for another process's migration")
            try:
                _run(conn, revision)
            finally:
                conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": _LOCK_NAME})
                conn.commit()
            return
        if backend == "postgresql" and server_flavour(conn) != "postgresql":
            # CockroachDB and YugabyteDB (PostgreSQL protocol) have no usable advisory lock (none, no-op stubs, or
            # only behind a flag; docs/storage.md). Two processes migrating at once are told apart afterwards: the
            # loser's transaction fails, and that is no failure when the database is at the wanted revision.
            for attempt in range(_UNLOCKED_ATTEMPTS):
                try:
                    with conn.begin():
                        _run(conn, revision)
                    return
                except DBAPIError:
                    if _at_revision(conn, revision):
                        return
                    if attempt == _UNLOCKED_ATTEMPTS - 1:
                        raise
                time.sleep(0.2 * (attempt + 1))  # the other migration may still be running: try again after it
            return
        with conn.begin():
            if backend == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:n))"), {"n": _LOCK_NAME})
            # On SQLite the write transaction (BEGIN IMMEDIATE) already excludes other migrations.
            _run(conn, revision)


def _at_revision(conn: Connection, revision: str) -> bool:
    conn.rollback()
    current = MigrationContext.configure(conn).get_current_revision()
    conn.rollback()
    return current is not None and current == (head_revision() if revision == "head" else revision)


def _run(conn: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)
