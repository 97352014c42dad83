"""The tree reader over stored tiles: a proof whose nodes are not cached reads each tile once and expands each
full tile once (issue 14 item 5: at 10M entries most proofs miss the tile cache, and a proof wants up to eight
nodes of one tile; expanding the tile for each node cost eight expansions per proof). Counted, not timed."""

from __future__ import annotations

import pytest

from consent_ledger.app import tree as tree_mod
from consent_ledger.app.tree import TreeReader
from consent_ledger.core import tiles
from consent_ledger.core.merkle import prove_consistency, prove_inclusion, tree_root
from consent_ledger.storage import open_store

from .merkle_reference import mth
from .test_storage import Model, commit, started


@pytest.fixture
def log(tmp_path):  # type: ignore[no-untyped-def]
    store = open_store(f"sqlite:///{tmp_path / 'log.db'}")
    model = started(store)
    commit(store, model, model.batch(3 * tiles.TILE_WIDTH + 100))
    yield store, model
    store.close()


def test_a_cold_proof_expands_each_full_tile_once(log, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    store, model = log
    expansions: list[int] = []
    reads: list[set] = []
    real_expand, real_read = tree_mod.expand_tile, store.read_tiles
    monkeypatch.setattr(tree_mod, "expand_tile", lambda data: expansions.append(len(data)) or real_expand(data))
    monkeypatch.setattr(store, "read_tiles", lambda ids: reads.append(set(ids)) or real_read(ids))
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
    assert len([n for n in expansions if n == tiles.TILE_WIDTH * 32]) == 1, expansions
    assert proof == prove_inclusion(5, size, _reference(model))

    expansions.clear()
    reads.clear()
    assert prove_inclusion(200, size, reader) == prove_inclusion(200, size, _reference(model))
    assert reads == [] and expansions == [], "the tile is cached once expanded"

    expansions.clear()
    reads.clear()
    proof = prove_consistency(300, size, reader)  # nodes in full tiles (0, 1) and (0, 2)
    assert proof == prove_consistency(300, size, _reference(model))
    assert len(reads) == 1
    assert len([n for n in expansions if n == tiles.TILE_WIDTH * 32]) == len(reads[0] - set(tiles.edge_tiles(size)))


def _reference(model: Model):  # type: ignore[no-untyped-def]
    from .test_storage import TileReader

    return TileReader(model.tiles)
