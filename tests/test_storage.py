"""The SQL storage, run on every configured database (SQLite always; PostgreSQL and MariaDB by environment)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, LargeBinary, Table, event, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from consent_ledger.app.errors import CorruptStorage
from consent_ledger.app.ports import (
    ConcurrentIntegration,
    IntegrationBatch,
    NewEntry,
    StoredCheckpoint,
    StoredEntry,
)
from consent_ledger.core import tiles as tilemod
from consent_ledger.core.leaf import encode_leaf
from consent_ledger.core.merkle import tree_root
from consent_ledger.core.rfc6962 import EMPTY_ROOT, hash_leaf
from consent_ledger.storage import (
    MAX_READ_ENTRIES,
    BatchConflict,
    SqlLogStore,
    current_revision,
    head_revision,
    make_engine,
    migrate,
    open_store,
)
from consent_ledger.storage import schema

from .merkle_reference import mth

PAYLOAD_TYPE = "application/vnd.consent-ledger.test"
T0 = 1_700_000_000_000


class TileReader:
    """A NodeReader over a dict of tile rows."""

    def __init__(self, rows: Mapping[tilemod.TileId, bytes]) -> None:
        self.rows = rows

    def read_nodes(self, nodes):
        out = []
        for level, index in nodes:
            loc = tilemod.locate_node(level, index)
            out.append(tilemod.hash_from_tile(self.rows[loc.tile], loc))
        return out


class StoreReader:
    """A NodeReader that reads every tile it needs from the store, in one call."""

    def __init__(self, store: SqlLogStore) -> None:
        self.store = store

    def read_nodes(self, nodes):
        locs = [tilemod.locate_node(level, index) for level, index in nodes]
        rows = self.store.read_tiles({loc.tile for loc in locs})
        return [tilemod.hash_from_tile(rows[loc.tile], loc) for loc in locs]


class Model:
    """What the log should hold: builds batches the way the sequencer does and tracks them once committed."""

    def __init__(self) -> None:
        self.size = 0
        self.tiles: dict[tilemod.TileId, bytes] = {}
        self.entries: list[NewEntry] = []
        self.checkpoints: list[StoredCheckpoint] = []

    def copy(self) -> Model:
        m = Model()
        m.size, m.tiles = self.size, dict(self.tiles)
        m.entries, m.checkpoints = list(self.entries), list(self.checkpoints)
        return m

    def batch(self, n: int, tag: str = "a", extra: Mapping[str, Sequence[Mapping[str, object]]] | None = None,
              envelopes: Sequence[bytes] | None = None) -> IntegrationBatch:
        entries = []
        for i in range(n):
            index = self.size + i
            envelope = envelopes[i] if envelopes is not None else f"envelope {tag} {index}".encode()
            sha = hashlib.sha256(envelope).digest()
            ms = T0 + index
            leaf = encode_leaf(ms, PAYLOAD_TYPE, sha)
            entries.append(NewEntry(index, leaf, hash_leaf(leaf), envelope, sha, PAYLOAD_TYPE, ms))
        edge = {t: self.tiles[t] for t in tilemod.edge_tiles(self.size)}
        changed = tilemod.append_leaves(self.size, edge, [e.leaf_hash for e in entries])
        size = self.size + n
        root = tree_root(size, TileReader({**self.tiles, **changed}))
        note = f"consent-ledger.test\n{size}\n{tag}\n".encode()
        return IntegrationBatch(entries, changed, StoredCheckpoint(size, root, note, T0 + size), extra or {})

    def apply(self, batch: IntegrationBatch) -> None:
        self.entries.extend(batch.entries)
        self.tiles.update(batch.tiles)
        self.size = batch.checkpoint.size
        self.checkpoints.append(batch.checkpoint)


def commit(store: SqlLogStore, model: Model, batch: IntegrationBatch) -> None:
    store.integrate(batch)
    model.apply(batch)


def started(store: SqlLogStore) -> Model:
    """A model and store holding the empty checkpoint, as a new log's sequencer publishes it."""
    model = Model()
    commit(store, model, model.batch(0))
    return model


def snapshot(store: SqlLogStore) -> dict[str, list[tuple]]:
    with store.connect() as conn:
        return {
            t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
            for t in (schema.leaves, schema.bodies, schema.tiles, schema.checkpoints)
        }


def backend(url: str) -> str:
    return make_url(url).get_backend_name()


def check_matches(store: SqlLogStore, model: Model) -> None:
    assert store.latest_checkpoint() == model.checkpoints[-1]
    assert store.tree_size() == model.size
    assert store.read_tiles(model.tiles.keys()) == model.tiles
    assert store.read_tile_levels(model.tiles.keys()) == {t: tilemod.tile_levels(d) for t, d in model.tiles.items()}
    for start in range(0, model.size, MAX_READ_ENTRIES):
        end = min(start + MAX_READ_ENTRIES, model.size)
        assert store.read_entries(start, end) == [
            StoredEntry(e.index, e.leaf, e.envelope) for e in model.entries[start:end]
        ]
    assert tree_root(model.size, StoreReader(store)) == model.checkpoints[-1].root_hash


# Migrations.


def test_migrations_reach_head_and_match_the_schema(database_url):
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) is None
        migrate(engine)
        migrate(engine)  # a second run changes nothing
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), schema.metadata)
        assert diffs == []
    finally:
        engine.dispose()


def test_open_store_without_migrating_leaves_the_database_alone(database_url):
    s = open_store(database_url, migrate=False)
    try:
        assert current_revision(s.engine) is None
    finally:
        s.close()


def test_an_in_memory_url_cannot_be_migrated_apart_from_its_engine():
    with pytest.raises(ValueError, match="in-memory"):
        migrate("sqlite:///:memory:")


# Reads and writes.


def test_empty_log(store):
    assert store.latest_checkpoint() is None
    assert store.checkpoint_at(0) is None
    assert store.tree_size() == 0
    assert store.read_tiles([(0, 0), (1, 0)]) == {}
    assert store.read_tiles([]) == {}
    assert store.find_envelopes([bytes(32)]) == {}
    assert store.find_envelopes([]) == {}
    assert store.find_leaf(bytes(32)) is None
    assert store.read_entries(0, 10) == []


def test_first_checkpoint_of_an_empty_log(store):
    model = started(store)
    assert store.latest_checkpoint() == model.checkpoints[0]
    assert model.checkpoints[0].root_hash == EMPTY_ROOT
    assert store.tree_size() == 0


def test_integrate_then_read_everything_back(store):
    model = started(store)
    b1 = model.batch(5)
    commit(store, model, b1)
    b2 = model.batch(300)
    commit(store, model, b2)

    check_matches(store, model)
    assert store.checkpoint_at(0) == model.checkpoints[0]
    assert store.checkpoint_at(5) == b1.checkpoint
    assert store.checkpoint_at(305) == b2.checkpoint
    assert store.checkpoint_at(6) is None

    assert store.read_entries(3, 7) == [StoredEntry(e.index, e.leaf, e.envelope) for e in model.entries[3:7]]
    assert store.read_entries(300, 400) == [StoredEntry(e.index, e.leaf, e.envelope) for e in model.entries[300:]]
    assert store.read_entries(305, 400) == []
    assert store.read_entries(7, 7) == []
    with pytest.raises(ValueError, match="range"):
        store.read_entries(0, MAX_READ_ENTRIES + 1)
    with pytest.raises(ValueError, match="range"):
        store.read_entries(5, 4)

    wanted = [e.envelope_sha256 for e in model.entries[::7]]
    assert store.find_envelopes(wanted + [bytes(32)]) == {e.envelope_sha256: e.index for e in model.entries[::7]}
    every = store.find_envelopes([e.envelope_sha256 for e in model.entries])  # more than one IN chunk
    assert every == {e.envelope_sha256: e.index for e in model.entries}
    for e in model.entries[::13]:
        assert store.find_leaf(e.leaf_hash) == e.index
    assert store.find_leaf(hashlib.sha256(b"absent").digest()) is None


def test_tile_rows_are_overwritten_as_they_grow(store):
    model = started(store)
    commit(store, model, model.batch(3))
    assert store.read_tiles([(0, 0)]) == {(0, 0): b"".join(e.leaf_hash for e in model.entries)}
    commit(store, model, model.batch(300))  # completes tile (0, 0), starts (0, 1) and (1, 0)
    commit(store, model, model.batch(1))
    rows = store.read_tiles([(0, 0), (0, 1), (1, 0), (1, 1)])
    assert {t: len(d) // 32 for t, d in rows.items()} == {(0, 0): 256, (0, 1): 48, (1, 0): 1}
    assert rows[(0, 1)] == b"".join(e.leaf_hash for e in model.entries[256:])
    with store.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.tiles)).scalar() == 3
        t = schema.tiles.c
        interiors = {(lv, ix): it for lv, ix, it in conn.execute(select(t.level, t.idx, t.interior))}
    # Only the full tile keeps its interior (255 hashes), and it is the tile's own.
    assert bytes(interiors[(0, 0)]) == tilemod.tile_interior(rows[(0, 0)]) and len(interiors[(0, 0)]) == 255 * 32
    assert interiors[(0, 1)] is None and interiors[(1, 0)] is None
    check_matches(store, model)


def test_a_full_tile_stored_without_its_interior_is_hashed_when_read(store):
    """Tiles written before migration 0011 have no interior: they read back the same, hashed on the way."""
    model = started(store)
    commit(store, model, model.batch(2 * tilemod.TILE_WIDTH + 5))
    with store.begin() as conn:
        conn.execute(schema.tiles.update().where(schema.tiles.c.idx == 0).values(interior=None))
    check_matches(store, model)


def test_a_corrupt_interior_is_reported_not_served(store):
    model = started(store)
    commit(store, model, model.batch(tilemod.TILE_WIDTH + 1))
    with store.begin() as conn:
        conn.execute(schema.tiles.update().where(schema.tiles.c.level == 0, schema.tiles.c.idx == 0)
                     .values(interior=b"\x00" * 100))  # fmt: skip
    with pytest.raises(CorruptStorage, match=r"tile \(0, 0\)"):
        store.read_tile_levels([(0, 0)])


def test_a_batch_at_the_wrong_size_raises_and_writes_nothing(store):
    model = started(store)
    commit(store, model, model.batch(10))
    before = snapshot(store)

    stale = Model()
    stale_batch = stale.batch(3, "stale")  # starts at 0, the log is at 10
    with pytest.raises(ConcurrentIntegration, match="size 10"):
        store.integrate(stale_batch)

    ahead = model.copy()
    ahead.apply(ahead.batch(4, "skipped"))
    with pytest.raises(ConcurrentIntegration):
        store.integrate(ahead.batch(2, "ahead"))  # starts at 14

    with pytest.raises(ConcurrentIntegration):  # a checkpoint-only batch for a size the log is not at
        store.integrate(IntegrationBatch([], {}, StoredCheckpoint(3, EMPTY_ROOT, b"note\n", T0)))

    assert snapshot(store) == before


def test_malformed_batches_are_refused_before_writing(store):
    model = started(store)
    before = snapshot(store)
    good = model.batch(3)
    cases = [
        IntegrationBatch(good.entries, good.tiles, StoredCheckpoint(4, good.checkpoint.root_hash, b"n", 1)),
        IntegrationBatch([good.entries[0], good.entries[2]], good.tiles, good.checkpoint),
        IntegrationBatch(good.entries, {(0, 0): b"x" * 33}, good.checkpoint),
        IntegrationBatch(good.entries, good.tiles, good.checkpoint, {"no_such_table": [{"k": 1}]}),
        IntegrationBatch(good.entries, good.tiles, good.checkpoint, {"leaves": [{"idx": 9}]}),
    ]
    for bad in cases:
        with pytest.raises(ValueError):
            store.integrate(bad)
    assert snapshot(store) == before


def test_a_duplicate_envelope_in_a_batch_raises_and_writes_nothing(store):
    model = started(store)
    before = snapshot(store)
    with pytest.raises(BatchConflict, match="twice"):
        store.integrate(model.batch(3, envelopes=[b"same", b"other", b"same"]))
    assert snapshot(store) == before


def test_an_envelope_already_logged_raises_and_writes_nothing(store):
    model = started(store)
    commit(store, model, model.batch(4, envelopes=[b"a", b"b", b"c", b"d"]))
    before = snapshot(store)
    with pytest.raises(BatchConflict) as info:
        store.integrate(model.batch(2, envelopes=[b"e", b"c"]))  # the database's unique key catches this one
    assert isinstance(info.value.__cause__, IntegrityError)
    assert snapshot(store) == before
    commit(store, model, model.batch(2, envelopes=[b"e", b"f"]))
    check_matches(store, model)


def test_republishing_the_current_checkpoint_replaces_its_note(store):
    model = started(store)
    commit(store, model, model.batch(3))
    cp = model.checkpoints[-1]
    resigned = StoredCheckpoint(cp.size, cp.root_hash, cp.note + b"\n- cosigned\n", cp.created_ms + 5)
    store.integrate(IntegrationBatch([], {}, resigned))
    assert store.latest_checkpoint() == resigned
    before = snapshot(store)
    with pytest.raises(ValueError, match="another root"):
        store.integrate(IntegrationBatch([], {}, StoredCheckpoint(cp.size, EMPTY_ROOT, b"forged\n", 1)))
    assert snapshot(store) == before


def test_an_erased_body_reads_back_as_none_and_the_leaf_stays(store):
    model = started(store)
    commit(store, model, model.batch(3))
    store.erase_body(1, "entered in error")
    got = store.read_entries(0, 3)
    assert [e.envelope for e in got] == [model.entries[0].envelope, None, model.entries[2].envelope]
    assert [e.leaf for e in got] == [e.leaf for e in model.entries]
    assert store.find_envelopes([model.entries[1].envelope_sha256]) == {model.entries[1].envelope_sha256: 1}
    assert store.find_leaf(model.entries[1].leaf_hash) == 1
    with store.connect() as conn:
        reason = conn.execute(select(schema.bodies.c.erased_reason).where(schema.bodies.c.idx == 1)).scalar()
    assert reason == "entered in error"
    store.erase_body(1, "entered in error")  # erasing again is harmless
    assert tree_root(3, StoreReader(store)) == model.checkpoints[-1].root_hash
    with pytest.raises(LookupError):
        store.erase_body(3, "no such entry")
    with pytest.raises(ValueError):
        store.erase_body(0, "")


# Concurrency.


def race(calls: Sequence[Callable[[], None]]) -> list[BaseException | None]:
    barrier = threading.Barrier(len(calls))
    outcomes: list[BaseException | None] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            calls[i]()
        except BaseException as e:  # noqa: BLE001 - reported to the test
            outcomes[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return outcomes


def test_two_stores_racing_at_the_same_start_exactly_one_wins(database_url):
    a, b = open_store(database_url), open_store(database_url)
    try:
        model = started(a)
        for round_ in range(6):
            batches = [model.batch(50, f"a{round_}"), model.batch(50, f"b{round_}")]
            outcomes = race([lambda: a.integrate(batches[0]), lambda: b.integrate(batches[1])])
            winners = [i for i, o in enumerate(outcomes) if o is None]
            assert len(winners) == 1, outcomes
            loser = outcomes[1 - winners[0]]
            assert isinstance(loser, ConcurrentIntegration), repr(loser)
            model.apply(batches[winners[0]])
            check_matches(a, model)
            check_matches(b, model)
    finally:
        a.close()
        b.close()


def _wait_until_blocked(store: SqlLogStore, name: str) -> None:
    """Wait until a transaction waits for a row lock (on SQLite, for the write lock: give it time)."""
    queries = {
        "postgresql": "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
        "mysql": "SELECT count(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'",
    }
    if name not in queries:
        time.sleep(0.3)
        return
    deadline = time.monotonic() + 10
    with store.engine.connect() as conn:
        while time.monotonic() < deadline:
            if conn.execute(text(queries[name])).scalar():
                return
            conn.rollback()
            time.sleep(0.02)
    raise AssertionError("the second writer never waited for the first")


def test_a_writer_that_commits_first_while_we_write_makes_us_raise(database_url):
    """The size check passes on a snapshot taken before the other writer commits: the unique key decides."""
    a, b = open_store(database_url), open_store(database_url)
    try:
        model = started(a)
        theirs, ours = model.batch(2, "theirs"), model.batch(3, "ours")
        outcome: list[BaseException | None] = []
        with a.begin() as conn:
            e = theirs.entries[0]
            conn.execute(insert(schema.leaves).values(
                idx=e.index, leaf_hash=e.leaf_hash, leaf=e.leaf, envelope_sha256=e.envelope_sha256,
                payload_type=e.payload_type, integrated_ms=e.integrated_ms))
            cp = theirs.checkpoint
            conn.execute(insert(schema.checkpoints).values(
                size=cp.size, root_hash=cp.root_hash, note=cp.note, created_ms=cp.created_ms))

            def ours_integrate() -> None:
                try:
                    b.integrate(ours)
                    outcome.append(None)
                except BaseException as exc:  # noqa: BLE001
                    outcome.append(exc)

            t = threading.Thread(target=ours_integrate)
            t.start()
            name = backend(database_url)
            _wait_until_blocked(a, "mysql" if name == "mariadb" else name)
        t.join(30)
        assert len(outcome) == 1 and isinstance(outcome[0], ConcurrentIntegration), outcome
        if backend(database_url) != "sqlite":  # SQLite queues writers, so there the size check decides
            assert isinstance(outcome[0].__cause__, IntegrityError)
        assert b.find_envelopes([x.envelope_sha256 for x in ours.entries]) == {}
        assert b.latest_checkpoint() == theirs.checkpoint
    finally:
        a.close()
        b.close()


def test_an_in_memory_store_is_shared_by_threads():
    s = open_store("sqlite:///:memory:")
    try:
        model = started(s)
        commit(s, model, model.batch(20))
        errors = race([lambda: check_matches(s, model) for _ in range(8)])
        assert errors == [None] * 8
    finally:
        s.close()


# Extra tables written with the batch.


@pytest.fixture(params=[False, True], ids=["insert", "upsert"])
def extra_table(request, store):
    table = Table(
        "test_extra_rows",
        schema.metadata,
        Column("k", Integer, primary_key=True, autoincrement=False),
        Column("v", LargeBinary, nullable=False),
        info={schema.UPSERT: True} if request.param else {},
    )
    try:
        table.create(store.engine)
        yield table
    finally:
        table.drop(store.engine, checkfirst=True)
        schema.metadata.remove(table)


def test_extra_rows_are_written_in_the_same_transaction(store, extra_table):
    model = started(store)
    commit(store, model, model.batch(2, extra={extra_table.name: [{"k": 1, "v": b"one"}, {"k": 2, "v": b"two"}]}))

    stale = Model().batch(2, "stale", extra={extra_table.name: [{"k": 3, "v": b"three"}]})
    with pytest.raises(ConcurrentIntegration):
        store.integrate(stale)

    update = model.batch(1, extra={extra_table.name: [{"k": 2, "v": b"deux"}, {"k": 4, "v": b"four"}]})
    if extra_table.info.get(schema.UPSERT):
        commit(store, model, update)
        expected = [(1, b"one"), (2, b"deux"), (4, b"four")]
    else:
        before = snapshot(store)
        with pytest.raises(BatchConflict):
            store.integrate(update)
        assert snapshot(store) == before
        expected = [(1, b"one"), (2, b"two")]
    with store.connect() as conn:
        assert [tuple(r) for r in conn.execute(select(extra_table).order_by(extra_table.c.k))] == expected
    check_matches(store, model)


# Scale.


def test_a_10000_entry_batch(store, database_url):
    model = started(store)
    batch = model.batch(10_000)
    statements = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    # No timed assertion (benchmarks time things, tests do not): what would make a large batch slow is a
    # statement per entry, so count the statements the database is sent. insertmanyvalues may page a bulk
    # insert, so a few statements per table are fine; one per entry is not.
    event.listen(store.engine, "before_cursor_execute", count)
    try:
        t = time.perf_counter()
        store.integrate(batch)
        elapsed = time.perf_counter() - t
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    model.apply(batch)
    print(f"\n{backend(database_url)}: integrated 10,000 entries in {elapsed * 1000:.0f} ms, {len(statements)} statements")
    assert len(statements) < 50
    leaves = [e.leaf for e in model.entries]
    assert tree_root(10_000, StoreReader(store)) == mth(leaves) == batch.checkpoint.root_hash
    follow = model.batch(300)
    commit(store, model, follow)
    leaves += [e.leaf for e in follow.entries]
    assert tree_root(10_300, StoreReader(store)) == mth(leaves)
    check_matches(store, model)
