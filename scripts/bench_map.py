#!/usr/bin/env python3
"""Benchmark the consent-state map (docs/design.md section 5, issue 4 item 6): batch updates and proofs at a large map.

Not a test. On a fresh SQLite file (WAL, synchronous=FULL, as the server runs it):

(a) build: --keys random (key, value hash) pairs (default 1,000,000) are built into nodes in memory by the core
    (core.smt.apply_batch on an empty map) and bulk-inserted into map_nodes through the storage layer;
(b) batch updates: batches of --batch-sizes updates (half inserts, three in ten new values for present keys,
    two in ten deletions), each computed against the stored map (SqlMapStore.update: reads + hashing) and
    written as IntegrationBatch.extra in an integration transaction, as the sequencer does; median of --runs;
(c) proofs: SqlMapStore.prove for random keys (half present, half absent), one after another, and the same
    from the in-memory nodes (no database) and verify_map_proof, with the proof size in hashes.

    .venv/bin/python scripts/bench_map.py               # 1,000,000 keys (about 3 minutes)
    .venv/bin/python scripts/bench_map.py --keys 100000 # a smaller map
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert  # noqa: E402

from consent_ledger.app.ports import IntegrationBatch, StoredCheckpoint  # noqa: E402
from consent_ledger.core import smt  # noqa: E402
from consent_ledger.core.rfc6962 import EMPTY_ROOT  # noqa: E402
from consent_ledger.storage import SqlLogStore, open_store, schema  # noqa: E402
from consent_ledger.storage.map_store import SqlMapStore, map_rows  # noqa: E402

_note = 0


def integrate_rows(store: SqlLogStore, extra: dict[str, list[dict[str, bytes | None]]]) -> None:
    """Write map rows the way the sequencer does: in an integration transaction (one that re-signs the empty
    log's checkpoint, so no log entries are needed)."""
    global _note
    _note += 1
    cp = StoredCheckpoint(0, EMPTY_ROOT, f"bench {_note}".encode(), _note)
    store.integrate(IntegrationBatch(entries=[], tiles={}, checkpoint=cp, extra=extra))


def build(store: SqlLogStore, pairs: dict[bytes, bytes], say) -> tuple[bytes, float, float, int]:
    """(root, seconds to compute the nodes, seconds to insert them, node count)."""
    t0 = time.perf_counter()
    root, changed, deleted = smt.apply_batch(smt.MemoryMapNodes(), pairs)
    t1 = time.perf_counter()
    rows = map_rows(changed, deleted)
    count = len(rows)
    del changed
    say(f"  {count:,} nodes computed in {t1 - t0:.1f} s; inserting")
    t2 = time.perf_counter()
    chunk = 50_000
    with store.begin() as conn:
        for i in range(0, len(rows), chunk):
            conn.execute(insert(schema.map_nodes), rows[i : i + chunk])
    integrate_rows(store, {})
    t3 = time.perf_counter()
    return root, t1 - t0, t3 - t2, count


def make_updates(rng: random.Random, model: dict[bytes, bytes], keys: list[bytes], size: int) -> dict:
    updates: dict[bytes, bytes | None] = {}
    while len(updates) < size:
        x = rng.random()
        if x < 0.5:
            updates[rng.randbytes(32)] = rng.randbytes(32)
        else:
            k = keys[rng.randrange(len(keys))]
            if k in model:
                updates[k] = rng.randbytes(32) if x < 0.8 else None
    return updates


def apply_model(model: dict[bytes, bytes], keys: list[bytes], updates: dict) -> None:
    for k, v in updates.items():
        if v is None:
            model.pop(k, None)
        else:
            if k not in model:
                keys.append(k)
            model[k] = v


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keys", type=int, default=1_000_000, help="keys in the map (default 1,000,000)")
    p.add_argument("--batch-sizes", default="64,1000", help="updates per batch, comma-separated")
    p.add_argument("--runs", type=int, default=7, help="batches per size (median reported)")
    p.add_argument("--proofs", type=int, default=3000, help="proofs to time")
    p.add_argument("--db", help="SQLite file to use (default: a temporary one)")
    p.add_argument("--url", help="another database instead (its map_nodes table must be empty), e.g. PostgreSQL")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)

    def say(text: str) -> None:
        print(text, flush=True)

    rng = random.Random(args.seed)
    tmp = tempfile.TemporaryDirectory(prefix="bench_map_")
    url = args.url or f"sqlite:///{args.db or Path(tmp.name) / 'map.db'}"
    store = open_store(url)
    maps = SqlMapStore(store)
    say(f"map of {args.keys:,} keys on {url}")
    model = {rng.randbytes(32): rng.randbytes(32) for _ in range(args.keys)}
    keys = list(model)
    gc.collect()
    root, t_compute, t_insert, nodes = build(store, model, say)
    assert maps.current_root() == root
    gc.collect()
    rows: list[tuple[str, str, str]] = [
        ("build: compute nodes in memory (core)", f"{t_compute:.1f} s", f"{args.keys / t_compute:,.0f} keys/s"),
        ("build: bulk insert into SQLite", f"{t_insert:.1f} s", f"{nodes / t_insert:,.0f} rows/s ({nodes:,} rows)"),
    ]

    for size in [int(s) for s in args.batch_sizes.split(",")]:
        compute, write, written, per_round = [], [], [], []
        for _ in range(args.runs):
            updates = make_updates(rng, model, keys, size)
            t0 = time.perf_counter()
            result = maps.update(updates)
            t1 = time.perf_counter()
            integrate_rows(store, result.extra)
            t2 = time.perf_counter()
            apply_model(model, keys, updates)
            compute.append(t1 - t0)
            write.append(t2 - t1)
            written.append(len(result.rows))
            per_round.append((t2 - t0) / size)
        assert maps.current_root() == result.root
        c, w = statistics.median(compute), statistics.median(write)
        rows.append(
            (
                f"batch of {size:,} updates: compute (read paths + hash)",
                f"{c * 1e3:.0f} ms",
                f"{statistics.median(written):,.0f} rows to write",
            )
        )
        rows.append((f"batch of {size:,} updates: write rows in the batch transaction", f"{w * 1e3:.0f} ms", ""))
        rows.append(
            (
                f"batch of {size:,} updates: total",
                f"{(c + w) * 1e3:.0f} ms",
                f"{statistics.median(per_round) * 1e6:,.0f} us/update, {size / (c + w):,.0f} updates/s",
            )
        )
    say(f"  {args.runs} batches per size done; map now {len(model):,} keys")

    probes = [keys[rng.randrange(len(keys))] if i % 2 else rng.randbytes(32) for i in range(args.proofs)]
    sizes = []
    t0 = time.perf_counter()
    proofs = []
    for k in probes:
        r, proof = maps.prove(k)
        proofs.append((r, k, proof))
        sizes.append(len(proof.siblings))
    t_sql = time.perf_counter() - t0
    t0 = time.perf_counter()
    for r, k, proof in proofs:
        smt.verify_map_proof(r, k, proof)
    t_verify = time.perf_counter() - t0
    present = sum(1 for r, k, proof in proofs if proof.leaf is not None and proof.leaf[0] == k)
    rows.append(("proofs from SQLite (one query each)", f"{len(probes) / t_sql:,.0f} /s",
                 f"{t_sql / len(probes) * 1e3:.2f} ms each; {present} present, {len(probes) - present} absent"))
    rows.append(("proof verification (core)", f"{len(probes) / t_verify:,.0f} /s", ""))
    rows.append((
        "proof size in hashes",
        f"median {statistics.median(sizes):g}",
        f"mean {statistics.mean(sizes):.1f}, max {max(sizes)}; log2({len(model):,}) = {math.log2(len(model)):.1f}",
    ))

    # The same proofs from nodes in memory: the database's share.
    with store.connect() as conn:
        mem = smt.MemoryMapNodes(
            {
                bytes(r.path): n
                for r in conn.execute(schema.map_nodes.select())
                if (n := _node_or_none(r)) is not None
            }
        )
    t0 = time.perf_counter()
    for k in probes:
        smt.prove(mem, k)
    t_mem = time.perf_counter() - t0
    rows.append(("proofs from nodes in memory (core only)", f"{len(probes) / t_mem:,.0f} /s", ""))
    store.close()
    tmp.cleanup()

    print()
    backend = "SQLite WAL synchronous=FULL" if url.startswith("sqlite") else url.split(":", 1)[0]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {backend}")
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'figure':>12}  note")
    print(f"{'-' * width}  {'-' * 12}  {'-' * 40}")
    for what, figure, note in rows:
        print(f"{what:<{width}}  {figure:>12}  {note}")
    return 0


def _node_or_none(row) -> smt.MapNode | None:
    if row.left_hash is not None:
        return smt.MapBranch(bytes(row.left_hash), bytes(row.right_hash))
    if row.leaf_key is not None:
        return smt.MapLeaf(bytes(row.leaf_key), bytes(row.value_hash))
    return None


if __name__ == "__main__":
    sys.exit(main())
