"""Database fixtures: one storage suite runs on SQLite, PostgreSQL and MariaDB.

PostgreSQL and MariaDB are used when their URLs are in the environment (CONSENT_LEDGER_TEST_POSTGRES_URL,
CONSENT_LEDGER_TEST_MYSQL_URL) and skipped otherwise, e.g.::

    export CONSENT_LEDGER_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test
    export CONSENT_LEDGER_TEST_MYSQL_URL=mysql+pymysql://root@127.0.0.1:3306/test

Each test gets an empty database: every table there (alembic_version included) is dropped first. Tests using
these databases must not run in parallel.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy import MetaData
from sqlalchemy.pool import NullPool

from consent_ledger.storage import SqlLogStore, make_engine, open_store

__all__ = ["BACKENDS", "MYSQL_ENV", "POSTGRES_ENV", "database_url", "reset_database", "store"]

POSTGRES_ENV = "CONSENT_LEDGER_TEST_POSTGRES_URL"
MYSQL_ENV = "CONSENT_LEDGER_TEST_MYSQL_URL"

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
]
_ENV = {"postgres": POSTGRES_ENV, "mysql": MYSQL_ENV}


def reset_database(url: str) -> None:
    """Drop every table of the database's default schema."""
    engine = make_engine(url, poolclass=NullPool)
    try:
        existing = MetaData()
        existing.reflect(engine)
        existing.drop_all(engine)
    finally:
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL of an empty database on each backend; skips a backend whose URL is not configured."""
    backend = request.param
    if backend == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'ledger.db'}"
    url = os.environ.get(_ENV[backend])
    if not url:
        pytest.skip(f"{_ENV[backend]} is not set")
    reset_database(url)
    return url


@pytest.fixture
def store(database_url: str) -> Iterator[SqlLogStore]:
    """An open, migrated store on ``database_url``."""
    s = open_store(database_url)
    try:
        yield s
    finally:
        s.close()
