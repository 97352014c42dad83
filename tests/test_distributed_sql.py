"""The storage layer on distributed SQL engines that speak PostgreSQL's protocol (CockroachDB, YugabyteDB) or
MySQL's (TiDB): docs/storage.md lists what the ledger relies on. None of them can be installed here, so these tests
drive the code paths those engines take on the PostgreSQL (and SQLite/MariaDB) servers the suite has: the server
is taken to be CockroachDB or YugabyteDB where the code asks which one it reached (``server_flavour``)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.exc import DBAPIError, IntegrityError

from consent_ledger.storage import BatchConflict, current_revision, head_revision, make_engine, open_store
from consent_ledger.storage import engine as engine_mod
from consent_ledger.storage import sql as sql_mod
from consent_ledger.storage.engine import server_flavour

from .test_storage import check_matches, commit, snapshot, started


# The tests of the PostgreSQL protocol's code paths run on PostgreSQL only (not skipped on the other backends: CI
# fails a database test that skips).
POSTGRES_ONLY = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)], indirect=True
)


@contextmanager
def statements() -> Iterator[list[str]]:
    seen: list[str] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", capture)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", capture)


def _fake_conn(params: dict[str, str]) -> SimpleNamespace:
    info = SimpleNamespace(parameter_status=params.get)
    return SimpleNamespace(
        dialect=SimpleNamespace(name="postgresql"), connection=SimpleNamespace(dbapi_connection=SimpleNamespace(info=info))
    )


def test_the_server_flavour_is_what_the_server_announced(database_url: str) -> None:
    assert server_flavour(_fake_conn({"server_version": "13.0.0", "crdb_version": "CockroachDB CCL v24.1.0"})) == "cockroachdb"  # type: ignore[arg-type]
    assert server_flavour(_fake_conn({"server_version": "11.2-YB-2.20.1.0-b0"})) == "yugabytedb"  # type: ignore[arg-type]
    assert server_flavour(_fake_conn({"server_version": "15.2-YB-2025.1.0.0-b0"})) == "yugabytedb"  # type: ignore[arg-type]
    assert server_flavour(_fake_conn({"server_version": "15.10 (Debian 15.10-0+deb12u1)"})) == "postgresql"  # type: ignore[arg-type]
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            expected = {"postgresql": "postgresql", "sqlite": "sqlite"}.get(conn.dialect.name, conn.dialect.name)
            assert server_flavour(conn) == expected
    finally:
        engine.dispose()


@pytest.mark.parametrize("flavour", ["cockroachdb", "yugabytedb"])
@POSTGRES_ONLY
def test_batches_are_written_without_copy_and_stay_atomic(database_url: str, monkeypatch, flavour: str) -> None:
    """On the engines that speak PostgreSQL's protocol but whose COPY is not one all-or-nothing statement for any
    role, a batch goes in as INSERTs in its transaction: read back whole, and a colliding batch writes nothing."""
    monkeypatch.setattr(sql_mod, "server_flavour", lambda conn: flavour)
    store = open_store(database_url)
    try:
        with statements() as seen:
            model = started(store)
            commit(store, model, model.batch(700, tag="x"))
            commit(store, model, model.batch(3, envelopes=[b"a", b"b", b"c"]))
        assert [s for s in seen if s.startswith("INSERT INTO leaves")], "the leaves went in as INSERTs"
        check_matches(store, model)
        before = snapshot(store)
        with pytest.raises(BatchConflict) as info:
            store.integrate(model.batch(300, envelopes=[b"new %d" % i for i in range(299)] + [b"b"]))
        assert isinstance(info.value.__cause__, IntegrityError)
        assert snapshot(store) == before
    finally:
        store.close()


@POSTGRES_ONLY
def test_postgresql_itself_still_gets_copy(database_url: str) -> None:
    store = open_store(database_url)
    try:
        with statements() as seen:
            model = started(store)
            commit(store, model, model.batch(10))
        # COPY goes through the driver's own cursor, unseen by SQLAlchemy: no INSERT of leaves went through it.
        assert not [s for s in seen if s.startswith("INSERT INTO leaves")]
    finally:
        store.close()


_MIGRATE_AS_COCKROACHDB = """
import sys
from sqlalchemy import Engine, event
from consent_ledger.storage import migration

def refuse(conn, cursor, statement, parameters, context, executemany):
    assert "advisory" not in statement, statement

event.listen(Engine, "before_cursor_execute", refuse)
migration.server_flavour = lambda conn: "cockroachdb"
migration.migrate(sys.argv[1])
"""


@POSTGRES_ONLY
def test_migrating_without_advisory_locks_from_several_processes_at_once(database_url: str) -> None:
    """CockroachDB and YugabyteDB have no usable pg_advisory_xact_lock: the migration does not ask for it, and
    replicas migrating a new database at the same moment all start (the losers find the database migrated)."""
    procs = [
        subprocess.Popen([sys.executable, "-c", _MIGRATE_AS_COCKROACHDB, database_url], stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    outcomes = [(p.wait(180), p.stderr.read().decode() if p.stderr else "") for p in procs]
    assert all(code == 0 for code, _ in outcomes), outcomes
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


@pytest.mark.parametrize("code", [1213, 1205, 9007, 8005, 8002])
def test_tidb_write_conflicts_are_lock_conflicts(code: int) -> None:
    """A transaction TiDB rolled back for a write conflict is a racing writer (integrate tells it apart from a
    failure), as MySQL's deadlock and lock wait timeout are."""
    orig = Exception(code, "Write conflict")
    assert sql_mod._is_lock_conflict(DBAPIError("INSERT", None, orig))  # noqa: SLF001
    assert not sql_mod._is_lock_conflict(DBAPIError("INSERT", None, Exception(1062, "Duplicate entry")))  # noqa: SLF001


def test_server_flavour_is_exported() -> None:
    assert "server_flavour" in engine_mod.__all__
