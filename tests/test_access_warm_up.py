"""The start-up warm-up of the access path's caches (app/access.py WarmUp, app/tree.py): full tiles (upper levels
first) and the consent map breadth first, read in the background, within the caches' budgets."""

from __future__ import annotations

from consent_ledger.app.tree import TreeReader
from consent_ledger.core import tiles
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.rfc6962 import HASH_SIZE

from .server_support import OPERATOR, connect, log_signer, running_server

PATIENT = Ed25519PrivateKey.from_seed(b"\xd1" * 32)
FULL = b"\x07" * (tiles.TILE_WIDTH * HASH_SIZE)


def test_full_tiles_come_upper_levels_first_then_newest_first() -> None:
    size = tiles.TILE_WIDTH**2 * 2 + 3 * tiles.TILE_WIDTH + 5  # two full level-1 tiles, 515 full level-0 tiles
    chunks = list(TreeReader.full_tile_ids(size, 64))
    ids = [t for c in chunks for t in c]
    assert ids[:2] == [(1, 1), (1, 0)]
    assert ids[2] == (0, 514) and ids[-1] == (0, 0)
    assert len(ids) == len(set(ids)) == 2 + 515 and all(len(c) <= 64 for c in chunks)
    assert list(TreeReader.full_tile_ids(tiles.TILE_WIDTH - 1, 64)) == []


def test_warming_tiles_stops_at_the_budget() -> None:
    class Store:
        reads = 0

        def read_tile_levels(self, ids):
            Store.reads += 1
            return {t: tiles.tile_levels(FULL) for t in ids}

    reader = TreeReader(Store(), cache_bytes=40 * 17_000)  # room for about 40 expanded tiles
    assert reader.warm([(0, i) for i in range(30)])
    assert not reader.warm([(0, i) for i in range(30, 60)]), "the next chunk would evict warmed tiles"
    assert reader.read_cached([(0, 0)]) is not None and reader.read_cached([(8, 45 * 256)]) is None
    assert reader._cache._tiles.bytes <= reader._cache._tiles.max_bytes  # noqa: SLF001


def test_a_restarted_server_warms_the_map_in_the_background(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    with running_server(url) as server:
        op = connect(server, party=OPERATOR)
        op.register_party(log_signer().private_key, party_id="insurer-1", roles=["insurer"],
                          public_keys=[PATIENT.public_key], display_name="I")  # fmt: skip
        patient = connect(server, patient=PATIENT)
        for i in range(4):
            patient.grant(PATIENT, grantee=f"org:h-{i}", actions=["access"], purposes=["TREAT"], data_classes=["imaging"])
    with running_server(url) as server:
        warm = server.service.warm_up
        assert warm is not None
        assert warm.done.wait(60), "the warm-up did not finish"
        assert warm.map_nodes >= 5  # four consent keys and a party key, and the branches above them
        nodes = server.service.consents.state._nodes  # noqa: SLF001
        assert 0 < nodes.bytes <= server.config.cache.of("map_nodes")
