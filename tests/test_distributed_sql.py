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
from sqlalchemy import Engine, event, select
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


@contextmanager
def client_bound_statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The statements sent through psycopg's client-side binding (``ClientCursor``: one simple-protocol Query
    message each), which SQLAlchemy's events do not see."""
    import psycopg

    seen: list[str] = []

    class Recording(psycopg.ClientCursor):  # type: ignore[type-arg]
        def execute(self, query, params=None, **kw):  # type: ignore[no-untyped-def, override]
            seen.append(str(query))
            return super().execute(query, params, **kw)

    monkeypatch.setattr(psycopg, "ClientCursor", Recording)
    yield seen


@POSTGRES_ONLY
def test_batches_go_in_as_one_statement_per_table_and_stay_atomic(database_url: str, monkeypatch) -> None:
    """On PostgreSQL's protocol (PostgreSQL, CockroachDB, YugabyteDB alike) a batch's rows go in as one INSERT per
    table with an array per column, sent as one Query message: no COPY (which YugabyteDB commits in parts and
    CockroachDB admitted only for its admin role) and no pipelined executemany (a session left waiting inside
    either cannot be ended by the server's idle timeout: tests/test_replicas.py). Read back whole, and a colliding
    batch writes nothing; an upsert batch holding one key twice keeps the last row, as an executemany did."""
    store = open_store(database_url)
    try:
        with statements() as seen, client_bound_statements(monkeypatch) as whole:
            model = started(store)
            commit(store, model, model.batch(700, tag="x"))
            commit(store, model, model.batch(3, envelopes=[b"a", b"b", b"c"]))
        assert not [s for s in seen if "COPY" in s or s.startswith("INSERT INTO leaves")]
        leaves = [s for s in whole if s.startswith("INSERT INTO leaves")]
        assert len(leaves) == 2 and all("unnest(" in s for s in leaves), leaves
        assert [s for s in whole if s.startswith("INSERT INTO tiles") and "ON CONFLICT" in s]
        check_matches(store, model)
        before = snapshot(store)
        with pytest.raises(BatchConflict) as info:
            store.integrate(model.batch(300, envelopes=[b"new %d" % i for i in range(299)] + [b"b"]))
        assert isinstance(info.value.__cause__, IntegrityError)
        assert snapshot(store) == before
        from consent_ledger.storage import schema

        with store.begin() as conn:
            sql_mod._upsert(conn, schema.tiles, [{"level": 9, "idx": 1, "hashes": b"first"},
                                                 {"level": 9, "idx": 1, "hashes": b"last"}])  # fmt: skip
            got = conn.execute(select(schema.tiles.c.hashes).where(schema.tiles.c.level == 9)).scalars().all()
        assert [bytes(g) for g in got] == [b"last"]
    finally:
        store.close()


_MIGRATE_AS_COCKROACHDB = """
import sys
from sqlalchemy import Engine, event, select
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
