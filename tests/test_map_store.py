"""The stored consent-state map (storage.map_store) on every configured database, against the in-memory core."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import event, select, update

from consent_ledger.app.ports import IntegrationBatch, StoredCheckpoint
from consent_ledger.core import smt
from consent_ledger.core.rfc6962 import EMPTY_ROOT
from consent_ledger.storage import schema
from consent_ledger.storage.map_store import SqlMapStore, map_rows

_m = schema.map_nodes


def commit(store, extra, n: int) -> None:
    """Write extra rows the way the sequencer does: in an integration batch (here one that re-signs the
    checkpoint of the empty log, the only batch without entries a test can make)."""
    cp = StoredCheckpoint(0, EMPTY_ROOT, f"note {n}".encode(), n)
    store.integrate(IntegrationBatch(entries=[], tiles={}, checkpoint=cp, extra=extra))


def all_rows(store) -> dict[bytes, tuple]:
    with store.connect() as conn:
        return {
            bytes(r.path): tuple(None if x is None else bytes(x) for x in r[1:])
            for r in conn.execute(select(_m.c.path, _m.c.left_hash, _m.c.right_hash, _m.c.leaf_key, _m.c.value_hash))
        }


def batches(rng: random.Random, count: int):
    """Random batches: inserts, updates and deletions, some keys sharing long prefixes, and one batch that
    deletes everything."""
    keys: list[bytes] = []
    for i in range(count):
        updates: dict[bytes, bytes | None] = {}
        if i == count // 2:
            updates = dict.fromkeys(keys)
        else:
            for _ in range(rng.randint(1, 40)):
                if keys and rng.random() < 0.4:
                    k = rng.choice(keys)
                elif keys and rng.random() < 0.2:
                    base = int.from_bytes(rng.choice(keys), "big")
                    k = (base ^ (1 << rng.choice([0, 40, 95]))).to_bytes(32, "big")
                else:
                    k = rng.randbytes(32)
                updates[k] = None if rng.random() < 0.3 else rng.randbytes(32)
        keys = sorted((set(keys) | set(updates)) - {k for k, v in updates.items() if v is None})
        yield updates


def test_batches_through_the_store_match_the_core(store):
    maps = SqlMapStore(store)
    assert maps.current_root() == smt.EMPTY_HASH
    assert maps.read([]) == {}
    mem = smt.MemoryMapNodes()
    model: dict[bytes, bytes] = {}
    rng = random.Random(1)
    for n, updates in enumerate(batches(rng, 14)):
        result = maps.update(updates)
        root, changed, deleted = smt.apply_batch(mem, updates)
        assert result.root == root
        assert result.rows == map_rows(changed, deleted)
        commit(store, result.extra, n)
        mem.apply(changed, deleted)
        for k, v in updates.items():
            if v is None:
                model.pop(k, None)
            else:
                model[k] = v
        assert maps.current_root() == root == smt.root(model)
        assert maps.node_count() == len(mem.nodes)
        probes = sorted(model)[:6] + [rng.randbytes(32) for _ in range(3)] + [k for k in updates if k not in model][:3]
        stored_root, proofs = maps.prove_many(probes)
        assert stored_root == root
        for key in probes:
            assert proofs[key] == smt.prove(mem, key)
            assert smt.verify_map_proof(root, key, proofs[key]) == model.get(key)
    # What is stored is the core's node set; cleared positions are rows of NULLs.
    live = {p: r for p, r in all_rows(store).items() if any(x is not None for x in r)}
    assert set(live) == set(mem.nodes)
    assert maps.read(list(mem.nodes)) == mem.nodes


def test_a_proof_is_one_small_query(store):
    maps = SqlMapStore(store)
    rng = random.Random(2)
    pairs = {rng.randbytes(32): rng.randbytes(32) for _ in range(3000)}
    commit(store, maps.update(pairs).extra, 0)
    statements: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "map_nodes" in statement:
            statements.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        key = sorted(pairs)[17]
        root, proof = maps.prove(key)
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    assert smt.verify_map_proof(root, key, proof) == pairs[key]
    assert len(statements) == 1
    params = statements[0][1]
    assert len(params if isinstance(params, list | tuple) else params.values()) <= smt.DEFAULT_WINDOW


def test_a_batch_writes_only_its_paths(store):
    maps = SqlMapStore(store)
    rng = random.Random(3)
    pairs = {rng.randbytes(32): rng.randbytes(32) for _ in range(2000)}
    commit(store, maps.update(pairs).extra, 0)
    before = all_rows(store)
    keys = sorted(pairs)
    updates = {keys[5]: None, keys[900]: rng.randbytes(32), rng.randbytes(32): rng.randbytes(32)}
    result = maps.update(updates)
    assert 0 < len(result.rows) <= 3 * 20
    commit(store, result.extra, 1)
    after = all_rows(store)
    touched = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    assert touched == {r["path"] for r in result.rows}


def test_tampered_nodes_are_detected(store):
    maps = SqlMapStore(store)
    rng = random.Random(4)
    pairs = {rng.randbytes(32): rng.randbytes(32) for _ in range(200)}
    commit(store, maps.update(pairs).extra, 0)
    key = sorted(pairs)[3]
    _, proof = maps.prove(key)
    leaf_path = smt.node_path(len(proof.siblings), key)
    with store.begin() as conn:
        conn.execute(update(_m).where(_m.c.path == leaf_path).values(value_hash=bytes(32)))
    with pytest.raises(smt.InconsistentMapNodes, match="not the one its parent holds"):
        maps.prove(key)
    with pytest.raises(smt.InconsistentMapNodes):
        maps.update({key: None})
    with store.begin() as conn:
        conn.execute(update(_m).where(_m.c.path == leaf_path).values(left_hash=bytes(32)))
    with pytest.raises(smt.InconsistentMapNodes, match="neither a branch nor a leaf"):
        maps.prove(key)
    with store.begin() as conn:
        conn.execute(update(_m).where(_m.c.path == leaf_path).values(left_hash=None, leaf_key=None, value_hash=None))
    with pytest.raises(smt.InconsistentMapNodes, match="missing"):
        maps.prove(key)


def test_map_rows():
    branch = smt.MapBranch(b"\x01" * 32, b"\x02" * 32)
    leaf = smt.MapLeaf(b"\x03" * 32, b"\x04" * 32)
    assert map_rows({b"\x80": branch, b"\xc0": leaf}, {b"\x40"}) == [
        {"path": b"\x40", "left_hash": None, "right_hash": None, "leaf_key": None, "value_hash": None},
        {"path": b"\x80", "left_hash": b"\x01" * 32, "right_hash": b"\x02" * 32, "leaf_key": None, "value_hash": None},
        {"path": b"\xc0", "left_hash": None, "right_hash": None, "leaf_key": b"\x03" * 32, "value_hash": b"\x04" * 32},
    ]
    with pytest.raises(ValueError, match="both changed and deleted"):
        map_rows({b"\x80": branch}, {b"\x80"})
