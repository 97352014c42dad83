"""The tree reader over stored tiles: a proof whose nodes are not cached reads each tile once, in one read, and
hashes nothing to expand a full tile, whose interior is stored with it (issue 14 item 5: at 10M entries most
proofs miss the tile cache; a proof wants up to eight nodes of one tile, and expanding the tile for each node once
cost eight expansions per proof, then hashing its 255 interior nodes 0.3 ms a proof). Counted, not timed."""

from __future__ import annotations

import pytest

from consent_ledger.app.tree import TreeReader
from consent_ledger.core import tiles
from consent_ledger.core.merkle import prove_consistency, prove_inclusion, tree_root
from consent_ledger.storage import open_store
from consent_ledger.storage import sql as sql_mod

from .merkle_reference import mth
from .test_storage import Model, commit, started


@pytest.fixture
def log(tmp_path):  # type: ignore[no-untyped-def]
    store = open_store(f"sqlite:///{tmp_path / 'log.db'}")
    model = started(store)
    commit(store, model, model.batch(3 * tiles.TILE_WIDTH + 100))
    yield store, model
    store.close()


def test_a_cold_proof_reads_each_tile_once_and_hashes_nothing(log, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    store, model = log
    expansions: list[int] = []  # tiles hashed into their levels, by their length in bytes
    reads: list[set] = []
    real_expand, real_read = tiles.tile_levels, store.read_tile_levels
    counted = lambda data: expansions.append(len(data)) or real_expand(data)  # noqa: E731
    monkeypatch.setattr(tiles, "tile_levels", counted)
    monkeypatch.setattr(sql_mod, "tile_levels", counted)  # storage hashes a tile stored without its interior
    monkeypatch.setattr(store, "read_tile_levels", lambda ids: reads.append(set(ids)) or real_read(ids))
    size = model.size
    reader = TreeReader(store)
    reader.set_edge(store.read_tiles(tiles.edge_tiles(size)))
    reads.clear()
    leaves = [e.leaf for e in model.entries]
    root = mth(leaves)
    assert tree_root(size, reader) == root

    expansions.clear()
    reads.clear()
    proof = prove_inclusion(5, size, reader)  # eight of its nodes are in full tile (0, 0)
    assert reads == [{(0, 0)}]
    assert expansions == [], "a full tile read from storage comes with its interior: nothing to hash"
    assert proof == prove_inclusion(5, size, _reference(model))

    expansions.clear()
    reads.clear()
    assert prove_inclusion(200, size, reader) == prove_inclusion(200, size, _reference(model))
    assert reads == [] and expansions == [], "the tile is cached once expanded"

    expansions.clear()
    reads.clear()
    proof = prove_consistency(300, size, reader)  # nodes in full tiles (0, 1) and (0, 2)
    assert proof == prove_consistency(300, size, _reference(model))
    assert len(reads) == 1 and (0, 1) in reads[0]
    assert [n for n in expansions if n == tiles.TILE_WIDTH * 32] == []


def test_tiles_stored_without_their_interior_are_hashed_once_per_read(log, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Tiles written before migration 0011: the proof is the same, each tile hashed once however many nodes."""
    from consent_ledger.storage import schema

    store, model = log
    with store.begin() as conn:
        conn.execute(schema.tiles.update().values(interior=None))
    expansions: list[int] = []
    real_expand = tiles.tile_levels
    counted = lambda data: expansions.append(len(data)) or real_expand(data)  # noqa: E731
    monkeypatch.setattr(tiles, "tile_levels", counted)
    monkeypatch.setattr(sql_mod, "tile_levels", counted)  # storage hashes a tile stored without its interior
    reader = TreeReader(store)
    reader.set_edge(store.read_tiles(tiles.edge_tiles(model.size)))
    assert prove_inclusion(5, model.size, reader) == prove_inclusion(5, model.size, _reference(model))
    assert [n for n in expansions if n == tiles.TILE_WIDTH * 32] == [tiles.TILE_WIDTH * 32]  # the rest: the edge


def _reference(model: Model):  # type: ignore[no-untyped-def]
    from .test_storage import TileReader

    return TileReader(model.tiles)
