"""Proofs that miss the tile cache (issue 14 item 5: at 10M leaves most do): on PostgreSQL the server awaits the
tile on the event loop (storage.async_reads) instead of taking a worker thread, the proof verifies, and a database
that fails or stalls under that read gives UNAVAILABLE in bounded time and is used again once it is back. Counted
and checked, not timed (the time is in docs/benchmarks.md)."""

from __future__ import annotations

import time

import grpc
import pytest

from consent_ledger.app.lru import CacheBudget
from consent_ledger.core import tiles
from consent_ledger.core.checkpoint import Checkpoint, open_checkpoint
from consent_ledger.core.merkle import verify_consistency, verify_inclusion
from consent_ledger.core.note import Verifier
from consent_ledger.core.rfc6962 import hash_leaf
from consent_ledger.storage.async_reads import AsyncTileReads
from consent_ledger.storage.sql import SqlLogStore
from consent_ledger.v1 import log_pb2, log_pb2_grpc

from .entries_support import grant_envelope
from .fault_proxy import proxied
from consent_ledger_client import SubmitReceipt

from .server_support import ledger_client, log_signer, running_server, transport_channel
from .test_bulk_submit import _patient

# Room for about one full tile: every proof below needs a level-0 tile the cache does not hold.
ONE_TILE = CacheBudget(80_000)
ENTRIES = 2 * tiles.TILE_WIDTH + 40


def _build(server, tmp_path) -> tuple[dict[int, bytes], Checkpoint]:  # type: ignore[no-untyped-def]
    """The log's leaves by index, and a checkpoint of an early batch (verified by the client)."""
    envelopes = [grant_envelope(_patient(i)) for i in range(ENTRIES)]
    with ledger_client(server, patient=_patient(0), state_path=tmp_path / "state.json") as client:
        out = client.submit_many(envelopes, via="batch", per_message=200)
    assert all(isinstance(r, SubmitReceipt) for r in out), out[:3]
    receipts = [r for r in out if isinstance(r, SubmitReceipt)]
    early = min((r.entry.checkpoint for r in receipts), key=lambda cp: cp.size)
    return {r.index: r.entry.leaf_bytes for r in receipts}, early


def _counting(monkeypatch) -> dict[str, int]:  # type: ignore[no-untyped-def]
    counts = {"awaited": 0, "thread": 0}
    real_async, real_sync = AsyncTileReads.read_tile_levels, SqlLogStore.read_tile_levels

    async def awaited(self, ids):  # type: ignore[no-untyped-def]
        counts["awaited"] += 1
        return await real_async(self, ids)

    def on_thread(self, ids):  # type: ignore[no-untyped-def]
        counts["thread"] += 1
        return real_sync(self, ids)

    monkeypatch.setattr(AsyncTileReads, "read_tile_levels", awaited)
    monkeypatch.setattr(SqlLogStore, "read_tile_levels", on_thread)
    return counts


def _verified_proofs(target: str, built: tuple[dict[int, bytes], Checkpoint], rounds: int) -> None:
    """Inclusion proofs of leaves in two different full tiles, alternately, and consistency proofs from an early
    checkpoint, each checked against the signed checkpoint."""
    leaves, early = built
    signer = log_signer()
    verifier = Verifier.from_public_key(signer.name, signer.public_key)
    with transport_channel(target, None) as channel:
        log = log_pb2_grpc.LogServiceStub(channel)
        cp = open_checkpoint(log.GetCheckpoint(log_pb2.GetCheckpointRequest()).checkpoint.note, verifier)
        for i in range(rounds):
            index = 5 + i if i % 2 == 0 else tiles.TILE_WIDTH + 7 + i
            got = log.GetInclusionProof(log_pb2.GetInclusionProofRequest(index=index, tree_size=cp.size))
            verify_inclusion(index, cp.size, hash_leaf(leaves[index]), list(got.hashes), cp.root_hash)
            proof = log.GetConsistencyProof(log_pb2.GetConsistencyProofRequest(first=early.size, second=cp.size))
            verify_consistency(early.size, cp.size, early.root_hash, cp.root_hash, list(proof.hashes))


def test_a_proof_that_misses_the_tile_cache_reads_its_tile_on_the_event_loop(database_url, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    with running_server(database_url, cache=ONE_TILE, warm_up=False) as server:
        built = _build(server, tmp_path)
        counts = _counting(monkeypatch)
        _verified_proofs(server.target, built, rounds=6)
    if database_url.startswith("postgresql"):
        assert counts["awaited"] >= 6, counts  # every inclusion proof of the alternating leaves missed its tile
        assert counts["thread"] == 0, "no proof took a worker thread to read a tile"
    else:
        assert counts["awaited"] == 0 and counts["thread"] >= 6, counts


@pytest.mark.postgres
def test_tile_reads_on_the_event_loop_survive_a_cut_and_fail_fast_in_an_outage(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import os

    from .db_support import POSTGRES_ENV, reset_database

    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    reset_database(url)
    with proxied(url) as (proxy, through), running_server(
        through, cache=ONE_TILE, warm_up=False, db_connect_timeout_s=1.0, db_statement_timeout_s=1.0
    ) as server:
        built = _build(server, tmp_path)
        counts = _counting(monkeypatch)
        _verified_proofs(server.target, built, rounds=2)
        assert counts["awaited"] >= 2

        # Every connection cut (a database restart): the kept connection fails, a fresh one answers.
        proxy.refuse(True)
        proxy.refuse(False)
        _verified_proofs(server.target, built, rounds=2)

        # An outage: the read fails with UNAVAILABLE within the timeouts, not after a hang...
        with transport_channel(server.target, None) as channel:
            log = log_pb2_grpc.LogServiceStub(channel)
            size = max(built[0]) + 1
            for fault in (proxy.refuse, proxy.stall):
                fault(True)
                t0 = time.monotonic()
                with pytest.raises(grpc.RpcError) as err:
                    log.GetInclusionProof(log_pb2.GetInclusionProofRequest(index=9, tree_size=size), timeout=30)
                    log.GetInclusionProof(log_pb2.GetInclusionProofRequest(index=tiles.TILE_WIDTH + 9, tree_size=size), timeout=30)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
                assert "database" in (err.value.details() or "")
                assert time.monotonic() - t0 < 10
                fault(False)
        # ...and once the database is back, proofs are served again.
        _verified_proofs(server.target, built, rounds=2)
