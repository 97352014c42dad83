"""Every server cache is bounded by bytes, not entries (issue 9, item 7): inserting past the budget keeps the
estimated byte total under it, whatever the items' sizes; a tiny budget changes nothing a client can see."""

from __future__ import annotations

import random

import pytest

from consent_ledger.app.consent_state import NodeCache
from consent_ledger.app.lru import OVERHEAD, CacheBudget, Lru, estimate_size
from consent_ledger.app.tree import TileCache
from consent_ledger.core import smt, tiles
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.payloads import DataItem

from .server_support import OPERATOR, connect, log_signer, running_server

PATIENT = Ed25519PrivateKey.from_seed(b"\xc1" * 32)
HOSPITAL = Ed25519PrivateKey.from_seed(b"\xc2" * 32)


def test_estimate_size_grows_with_the_payload() -> None:
    assert estimate_size(b"x" * 1000) >= 1000
    assert estimate_size({"a" * 64: 1}) < estimate_size({str(i) * 64: i for i in range(100)})
    assert estimate_size(smt.MapProof((b"\x00" * 32,) * 10, None)) >= 320
    assert estimate_size(object()) == OVERHEAD


def test_lru_stays_under_its_byte_budget_with_items_of_any_size() -> None:
    budget = 64 * 1024
    lru: Lru[int, bytes] = Lru(budget)
    rng = random.Random(7)
    for i in range(5_000):
        lru.put(i, b"\x01" * rng.choice((1, 100, 5_000, 20_000)))
        assert lru.bytes <= budget
    assert len(lru) > 0 and lru.get(4_999) is not None, "the most recent item is kept"
    assert lru.get(0) is None, "the oldest went first"
    # An item larger than the whole budget is returned but not kept, and evicts nothing.
    before = lru.bytes
    big = b"\x02" * (2 * budget)
    assert lru.put(-1, big) is big and lru.get(-1) is None and lru.bytes == before
    # Replacing and discarding keep the count right.
    lru.put(4_999, b"")
    lru.discard(4_999)
    assert lru.get(4_999) is None and lru.bytes == sum(
        estimate_size(k) + estimate_size(v) + OVERHEAD for k, v in ((k, lru.get(k)) for k in range(5_000)) if v is not None
    )


def test_a_custom_size_counts() -> None:
    lru: Lru[str, list[int]] = Lru(1_000, lambda k, v: 100 * len(v))
    lru.put("a", [1] * 8)  # 800 + OVERHEAD
    lru.put("b", [1] * 2)  # 200 + OVERHEAD: "a" goes
    assert lru.get("a") is None and lru.get("b") == [1, 1] and lru.bytes <= 1_000


def test_tile_and_map_node_caches_stay_under_budget() -> None:
    cache = TileCache(100_000)
    full = bytes(range(256)) * (tiles.TILE_WIDTH * 32 // 256)
    for i in range(50):
        cache.put((0, i), tiles.tile_levels(full))
        assert cache._tiles.bytes <= 100_000  # noqa: SLF001
    assert cache.get((0, 49)) is not None

    class Store:
        def read(self, paths):
            return {}

    nodes = NodeCache(Store(), 50_000)  # type: ignore[arg-type]
    for start in range(0, 2_000, 100):
        nodes.apply({i.to_bytes(4, "big"): smt.MapLeaf(i.to_bytes(32, "big"), b"\x09" * 32) for i in range(start, start + 100)}, [])
        assert nodes.bytes <= 50_000
    nodes.read([i.to_bytes(8, "big") for i in range(3_000)])  # absent positions are remembered, and counted
    assert 0 < nodes.bytes <= 50_000


def test_budget_shares_and_the_server_under_a_tiny_budget(database_url) -> None:
    assert sum(CacheBudget.SHARES.values()) == pytest.approx(1.0)
    tiny = CacheBudget(32 * 1024)
    with running_server(database_url, cache=tiny) as server:
        op = connect(server, party=OPERATOR)
        op.register_party(log_signer().private_key, party_id="hospital-1", roles=["hospital"],
                          public_keys=[HOSPITAL.public_key], display_name="H")  # fmt: skip
        patient = connect(server, patient=PATIENT)
        for _ in range(40):
            patient.grant(PATIENT, grantee="org:hospital-1", actions=["access"], purposes=["TREAT"],
                          data_classes=["laboratory-results"])  # fmt: skip
        hospital = connect(server, party="hospital-1")
        for _ in range(3):
            assert hospital.check_access(PATIENT.public_key, action="access", purpose="TREAT", data=[DataItem("laboratory-results")]).permitted
        assert len(patient.list_consents(PATIENT.public_key).consents) == 40
        consents = server.service.consents
        state = consents.state
        caches = {
            "entries": consents._entry_cache,  # noqa: SLF001
            "in_force_by_root": consents._live_cache,  # noqa: SLF001
            "in_force": state._sets._sets,  # noqa: SLF001
            "map_proofs": state._proofs,  # noqa: SLF001
        }
        for name, cache in caches.items():
            assert cache.max_bytes == tiny.of(name)
            assert cache.bytes <= tiny.of(name), name
        assert state._nodes.bytes <= tiny.of("map_nodes")  # noqa: SLF001


def test_caches_keep_the_configured_budget_after_a_reset(database_url) -> None:
    """After a batch whose outcome was unknown the sequencer drops the caches written through on commit
    (ConsentLedger.reset); the fresh ones are bounded by the configured budget, not the default one (--cache-mb
    bounds the server's memory for its whole life, not until the first failed COMMIT)."""
    tiny = CacheBudget(32 * 1024)
    with running_server(database_url, cache=tiny) as server:
        consents = server.service.consents
        consents.reset()
        state = consents.state
        assert consents._entry_cache.max_bytes == tiny.of("entries")  # noqa: SLF001
        assert state._sets._sets.max_bytes == tiny.of("in_force")  # noqa: SLF001
        assert state._nodes._max_bytes == tiny.of("map_nodes")  # noqa: SLF001


def test_the_tile_cache_can_have_its_own_budget(tmp_path, monkeypatch) -> None:
    """--tile-cache-mb: a large log's tiles get their own memory (docs/benchmarks.md, 10M entries) without raising
    every other cache's budget with them."""
    from consent_ledger.cli import build_parser

    budget = CacheBudget.megabytes(1, tile_mb=5)
    assert budget.of("tiles") == 5 * 2**20 and budget.of("entries") == CacheBudget.megabytes(1).of("entries")
    assert CacheBudget.megabytes(1).of("tiles") == 2**20 // 4
    with pytest.raises(ValueError):
        CacheBudget.megabytes(1, tile_mb=-1)
    with running_server(f"sqlite:///{tmp_path / 'l.db'}", cache=budget) as server:
        assert server.service.ledger.reader._cache._tiles.max_bytes == 5 * 2**20  # noqa: SLF001
        assert server.service.consents._entry_cache.max_bytes == budget.of("entries")  # noqa: SLF001
    args = build_parser().parse_args(["serve", "--tile-cache-mb", "700"])
    assert args.tile_cache_mb == 700.0
    monkeypatch.setenv("CONSENT_LEDGER_TILE_CACHE_MB", "64")
    assert build_parser().parse_args(["serve"]).tile_cache_mb == 64.0
    monkeypatch.delenv("CONSENT_LEDGER_TILE_CACHE_MB")
    assert build_parser().parse_args(["serve"]).tile_cache_mb is None
