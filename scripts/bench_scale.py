#!/usr/bin/env python3
"""Scale run: a log of 10 million entries and a consent index of 1 million patients, served (issue 14 item 5).

Not a test. Each step is its own command, so the long builds can run apart from the measurements (and the
measurements be repeated on a built log):

    build-log     a log of --leaves synthetic entries written straight through the storage layer, as the 1M
                  benchmark does (scripts/bench_log.build_log: SqlLogStore.integrate with IntegrationBatches of
                  --build-batch leaves, tiles from core.tiles, each batch's checkpoint signed by the log key);
                  prints progress with the rate and an estimate of the time left.
    measure-log   starts `consent-ledger serve` on a built log and measures: start-up to SERVING (a new process,
                  and the same start-up in this process without the interpreter's imports), GetInclusionProof and
                  GetConsistencyProof latency from one caller and the rate from --concurrency callers (random
                  indices and sizes over the whole log), the server's RSS after start, after the proofs and after
                  a sweep that touches every full tile once (the tile cache then holds all it may), under the
                  configured --cache-mb; and the database's bytes per entry.
    build-access  a consent ledger of --patients patients with one signed grant each, through the application
                  and storage layers (scripts/bench_access.build: sequencer batches with their consent-index rows,
                  the consent-state map bulk-written, a closing StateCommit).
    measure-access  CheckAccess (full evidence and a signed receipt) for random patients: latency from one caller
                  and the rate from --concurrency callers next to the trivial RPC (gRPC health Check).
    drop          deletes a built log (the SQLite file, or the PostgreSQL schema).

--database is `sqlite` (a file <workdir>/<name>.db) or a PostgreSQL URL (the log lives in the schema <name> of that
database, selected with search_path, so a 10k and a 10M log sit side by side in one database). Results are
appended as JSON lines to <workdir>/results.jsonl; `report` prints them as tables.

    .venv/bin/python scripts/bench_scale.py build-log --database sqlite --name log10m --leaves 10000000
    .venv/bin/python scripts/bench_scale.py measure-log --database sqlite --name log10m
    .venv/bin/python scripts/bench_scale.py build-access --database sqlite --name acc1m --patients 1000000
    .venv/bin/python scripts/bench_scale.py measure-access --database sqlite --name acc1m
    .venv/bin/python scripts/bench_scale.py report
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "clients"), str(ROOT / "scripts")]

import grpc  # noqa: E402
from bench_log import Result, build_log, closed_loop, machine  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from consent_ledger.core import tiles  # noqa: E402
from consent_ledger.keys import read_key, write_new_key  # noqa: E402
from consent_ledger.storage import open_store  # noqa: E402
from consent_ledger.storage.engine import make_engine  # noqa: E402
from consent_ledger.v1 import access_pb2_grpc, log_pb2, log_pb2_grpc  # noqa: E402
from tests.crash_support import ServerProcess  # noqa: E402

LOG_NAME = "bench.test/log"
OPERATOR = "bench-operator"


# -- where a log lives ------------------------------------------------------------------------------------------


def log_url(database: str, workdir: Path, name: str) -> str:
    """The database URL of the log ``name``: a SQLite file in ``workdir``, or a schema of a PostgreSQL database."""
    if database == "sqlite":
        return f"sqlite:///{workdir / (name + '.db')}"
    u = make_url(database)
    if u.get_backend_name() != "postgresql":
        raise SystemExit("--database is `sqlite` or a PostgreSQL URL")
    return u.update_query_dict({"options": f"-csearch_path={name}"}).render_as_string(hide_password=False)


def _admin_engine(database: str):  # type: ignore[no-untyped-def]
    return make_engine(database)


def create_schema(database: str, name: str) -> None:
    if database == "sqlite":
        return
    engine = _admin_engine(database)
    try:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
    finally:
        engine.dispose()


def drop(database: str, workdir: Path, name: str) -> None:
    if database == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            (workdir / f"{name}.db{suffix}").unlink(missing_ok=True)
        return
    engine = _admin_engine(database)
    try:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    finally:
        engine.dispose()


def database_bytes(database: str, workdir: Path, name: str) -> dict[str, int]:
    """Bytes the log takes: the SQLite file (and its WAL), or the tables, indexes and TOAST of the schema."""
    if database == "sqlite":
        return {
            s or "main": (workdir / f"{name}.db{s}").stat().st_size
            for s in ("", "-wal")
            if (workdir / f"{name}.db{s}").exists()
        }
    engine = _admin_engine(database)
    try:
        with engine.connect() as conn:
            conn.execute(text("CHECKPOINT"))
            rows = conn.execute(
                text(
                    "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relkind = 'r' "
                    "ORDER BY 2 DESC"
                ),
                {"s": name},
            ).all()
        return {r[0]: int(r[1]) for r in rows}
    finally:
        engine.dispose()


def key_file(workdir: Path) -> Path:
    path = workdir / "log.key"
    if not path.exists():
        write_new_key(path, LOG_NAME)
    return path


def record(workdir: Path, doc: dict[str, Any]) -> None:
    doc = {"at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "load_average": os.getloadavg(), **doc}
    with open(workdir / "results.jsonl", "a") as f:
        f.write(json.dumps(doc) + "\n")
    print(json.dumps(doc, indent=2), flush=True)


def progress_printer(total: int, what: str) -> Callable[[str], None]:
    """Wraps the builders' progress lines with the rate and the time left."""
    started = time.perf_counter()
    last = [0.0]

    def say(line: str) -> None:
        now = time.perf_counter()
        done = None
        for word in line.replace("/", " ").split():
            if word.replace(",", "").isdigit():
                done = int(word.replace(",", ""))
                break
        if done and "built" in line or done and "integrated" in line:
            if now - last[0] < 10 and done < total:
                return
            last[0] = now
            rate = done / (now - started)
            left = (total - done) / rate if rate else float("nan")
            la = "/".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"{line.strip()}: {rate:,.0f} {what}/s, about {left / 60:.1f} min left (load {la})", flush=True)
        else:
            print(line, flush=True)

    return say


# -- measuring a served log ---------------------------------------------------------------------------------------


def rss_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1])
    return out


def start_server(
    workdir: Path, url: str, cache_mb: float | None, timeout: float = 600, verbose: bool = False,
    tile_cache_mb: float | None = None,
) -> tuple[ServerProcess, float]:
    extra = () if cache_mb is None else ("--cache-mb", f"{cache_mb:g}")
    if tile_cache_mb is not None:
        extra += ("--tile-cache-mb", f"{tile_cache_mb:g}")
    server = ServerProcess(workdir, key_file(workdir), url, operators=(OPERATOR,), extra_args=extra,
                           global_args=("--verbose",) if verbose else ())  # fmt: skip
    t0 = time.perf_counter()
    server.start(timeout=timeout)
    return server, time.perf_counter() - t0


async def in_process_start(url: str, workdir: Path, rounds: int) -> list[float]:
    """Seconds from start_service() to SERVING in this process (the interpreter and imports already loaded)."""
    from consent_ledger.service import ServiceConfig, start_service

    signer = read_key(key_file(workdir))
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        running = await start_service(ServiceConfig(database_url=url, listen="127.0.0.1:0", insecure=True), signer)
        out.append(time.perf_counter() - t0)
        await running.stop(0)
    return out


def import_seconds() -> float:
    """A new interpreter importing the CLI and exiting: the part of a process start-up that is not the log's."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import consent_ledger.cli, consent_ledger.service"], check=True)
    return time.perf_counter() - t0


async def sequential(name: str, call: Callable[[], Awaitable[object]], n: int) -> Result:
    """``n`` calls one after the other from one caller: the latency of one call with nothing queued."""
    lat = []
    t_start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        lat.append(time.perf_counter() - t0)
    lat.sort()
    return Result(name, 1, n, time.perf_counter() - t_start, 0, lat)


def summary(r: Result) -> dict[str, Any]:
    return {
        "name": r.name,
        "callers": r.concurrency,
        "calls": r.calls,
        "rate": round(r.rate, 1),
        "p50_ms": round(r.p50_ms, 3),
        "p99_ms": round(r.p99_ms, 3),
        "mean_ms": round(statistics.fmean(r.latencies) * 1000, 3) if r.latencies else None,
        "errors": r.errors,
    }


async def measure_served_log(target: str, pid: int, size: int, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"rss_kib_after_start": rss_kib(pid)}
    rng = random.Random(11)
    async with grpc.aio.insecure_channel(target) as ch:
        log = log_pb2_grpc.LogServiceStub(ch)
        health = health_pb2_grpc.HealthStub(ch)

        def inclusion() -> Awaitable[object]:
            return log.GetInclusionProof(log_pb2.GetInclusionProofRequest(index=rng.randrange(size)))

        def consistency() -> Awaitable[object]:
            return log.GetConsistencyProof(log_pb2.GetConsistencyProofRequest(first=rng.randrange(1, size), second=size))

        def trivial() -> Awaitable[object]:
            return health.Check(health_pb2.HealthCheckRequest())

        results = []
        # One caller first, with nothing queued: the latency a verifier sees. Random leaves over the whole log,
        # so at 10M most proofs need a tile that is not cached (the tile cache holds a fraction of the tree).
        for name, call in (("trivial RPC (health Check)", trivial), ("GetInclusionProof", inclusion),
                           ("GetConsistencyProof", consistency)):  # fmt: skip
            await sequential(name, call, 200)  # warm the connection and the code paths, not the tiles
            results.append(summary(await sequential(name, call, args.calls)))
        for name, call in (("trivial RPC (health Check)", trivial), ("GetInclusionProof", inclusion),
                           ("GetConsistencyProof", consistency)):  # fmt: skip
            r = await closed_loop(name, call, args.concurrency, args.duration, 1.0)
            results.append(summary(r))
        out["results"] = results
        out["rss_kib_after_proofs"] = rss_kib(pid)
        # Touch --sweep-tiles full tiles once each (one inclusion proof per 256 leaves, spread over the whole log):
        # the tile cache fills to its bound, and the RSS is read after each quarter of the sweep to show where it
        # levels off.
        full = size // tiles.TILE_WIDTH
        count = full if args.sweep_tiles <= 0 else min(full, args.sweep_tiles)
        step = max(1, full // max(1, count))
        todo = [t * tiles.TILE_WIDTH for t in range(0, full, step)][:count]
        out["tile_sweep_tiles"] = len(todo)
        out["rss_kib_during_tile_sweep"] = []
        t0 = time.perf_counter()
        for q in range(4):
            part = iter(todo[q * len(todo) // 4 : (q + 1) * len(todo) // 4])

            def each_tile(part=part) -> Awaitable[object] | None:  # type: ignore[no-untyped-def]
                i = next(part, None)
                return None if i is None else log.GetInclusionProof(log_pb2.GetInclusionProofRequest(index=i))

            await closed_loop("sweep", each_tile, args.concurrency, 24 * 3600, 0)
            out["rss_kib_during_tile_sweep"].append(rss_kib(pid)["VmRSS"])
        out["tile_sweep_seconds"] = round(time.perf_counter() - t0, 1)
        out["rss_kib_after_tile_sweep"] = rss_kib(pid)
        # The latency again once the cache is as full as it gets.
        out["after_sweep"] = [summary(await sequential("GetInclusionProof", inclusion, args.calls))]
    return out


def wait_for_warm_up(server: ServerProcess, timeout: float) -> dict[str, Any]:
    """Wait for the server's background cache warm-up to log that it is done (app.access.WarmUp)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        for line in server.log_path.read_text(errors="replace").splitlines():
            if "cache warm-up:" in line:
                return {"line": line.split("cache warm-up:", 1)[1].strip(), "waited_s": round(time.perf_counter() - t0, 1)}
        time.sleep(0.5)
    raise SystemExit(f"the server's cache warm-up did not finish within {timeout:g} s")


def tree_size_of(url: str) -> int:
    store = open_store(url)
    try:
        return store.tree_size()
    finally:
        store.close()


# -- commands -----------------------------------------------------------------------------------------------------


def cmd_build_log(args: argparse.Namespace) -> None:
    url = log_url(args.database, args.workdir, args.name)
    drop(args.database, args.workdir, args.name)
    create_schema(args.database, args.name)
    signer = read_key(key_file(args.workdir))
    print(f"building {args.leaves:,} leaves in {url} (batches of {args.build_batch:,})", flush=True)
    seconds = build_log(url, signer, args.leaves, args.build_batch, progress_printer(args.leaves, "leaves"))
    sizes = database_bytes(args.database, args.workdir, args.name)
    record(args.workdir, {
        "step": "build-log", "database": args.database.split("@")[-1], "name": args.name, "leaves": args.leaves,
        "build_batch": args.build_batch, "build_seconds": round(seconds, 1),
        "leaves_per_s": round(args.leaves / seconds), "bytes": sizes,
        "bytes_per_entry": round(sum(sizes.values()) / args.leaves, 1),
    })  # fmt: skip


def resume_log(url: str, signer, leaves: int, batch: int, progress: Callable[[str], None], sqlite_cache_mb: int = 0) -> float:  # type: ignore[no-untyped-def]
    """Continue a log built by bench_log.build_log (same synthetic entries) from its latest checkpoint to ``leaves``,
    in IntegrationBatches of ``batch``: the right edge comes from the stored tiles and each root from the store's
    tiles plus the batch's (app.tree.OverlayReader), so nothing but the edge is held in memory."""
    from consent_ledger.app.ports import IntegrationBatch, NewEntry, StoredCheckpoint
    from consent_ledger.app.tree import OverlayReader, TreeReader
    from consent_ledger.core import payloads
    from consent_ledger.core.checkpoint import Checkpoint, sign_checkpoint
    from consent_ledger.core.leaf import encode_leaf
    from consent_ledger.core.merkle import tree_root
    from consent_ledger.core.rfc6962 import hash_leaf
    import hashlib

    started = time.perf_counter()
    store = open_store(url)
    if store.engine.dialect.name == "sqlite" and sqlite_cache_mb:
        # The build only: a page cache that holds the hash indexes, so a large batch does not spill dirty pages to
        # the WAL again and again (the server keeps SQLite's default, see docs/benchmarks.md).
        from sqlalchemy import event

        event.listen(store.engine, "connect", lambda c, _r: c.execute(f"PRAGMA cache_size=-{sqlite_cache_mb * 1024}"))
        store.engine.dispose()
    try:
        latest = store.latest_checkpoint()
        size = latest.size if latest else 0
        edge = store.read_tiles(tiles.edge_tiles(size))
        reader = TreeReader(store, cache_bytes=0)
        reader.set_edge(edge)
        now_ms = time.time_ns() // 1_000_000
        ptype = payloads.CONSENT_GRANT
        progress(f"  resuming at {size:,} leaves")
        while size < leaves:
            entries = []
            for i in range(size, min(leaves, size + batch)):
                body = b"bench synthetic entry %d" % i
                sha = hashlib.sha256(body).digest()
                leaf = encode_leaf(now_ms, ptype, sha)
                entries.append(NewEntry(i, leaf, hash_leaf(leaf), body, sha, ptype, now_ms))
            changed = tiles.append_leaves(size, edge, [e.leaf_hash for e in entries])
            new_size = size + len(entries)
            root = tree_root(new_size, OverlayReader(reader, changed))
            note = sign_checkpoint(Checkpoint(signer.name, new_size, root), signer)
            store.integrate(IntegrationBatch(entries, changed, StoredCheckpoint(new_size, root, note, now_ms)))
            size = new_size
            merged = {**edge, **changed}
            edge = {t: merged[t] for t in tiles.edge_tiles(size)}
            reader.set_edge(edge)
            progress(f"  built {size:,}/{leaves:,} leaves ({time.perf_counter() - started:.0f} s)")
    finally:
        store.close()
    return time.perf_counter() - started


def cmd_resume_log(args: argparse.Namespace) -> None:
    url = log_url(args.database, args.workdir, args.name)
    signer = read_key(key_file(args.workdir))
    seconds = resume_log(url, signer, args.leaves, args.build_batch, progress_printer(args.leaves, "leaves"),
                         args.sqlite_cache_mb)
    sizes = database_bytes(args.database, args.workdir, args.name)
    record(args.workdir, {
        "step": "resume-log", "database": args.database.split("@")[-1], "name": args.name, "leaves": args.leaves,
        "build_batch": args.build_batch, "build_seconds": round(seconds, 1), "bytes": sizes,
        "bytes_per_entry": round(sum(sizes.values()) / args.leaves, 1),
    })  # fmt: skip


def cmd_measure_log(args: argparse.Namespace) -> None:
    url = log_url(args.database, args.workdir, args.name)
    size = tree_size_of(url)
    doc: dict[str, Any] = {"step": "measure-log", "database": args.database.split("@")[-1], "name": args.name,
                           "tree_size": size, "cache_mb": args.cache_mb,
                           "tile_cache_mb": args.tile_cache_mb}  # fmt: skip
    doc["import_seconds"] = round(min(import_seconds() for _ in range(3)), 3)
    starts = []
    for _ in range(3):
        server, secs = start_server(args.workdir, url, args.cache_mb, verbose=args.wait_warm_up,
                                    tile_cache_mb=args.tile_cache_mb)
        starts.append(round(secs, 3))
        if len(starts) < 3:
            server.stop()
    doc["process_start_to_serving_s"] = starts
    doc["in_process_start_to_serving_s"] = [round(x, 3) for x in asyncio.run(in_process_start(url, args.workdir, 3))]
    try:
        assert server.proc is not None
        if args.wait_warm_up:
            doc["warm_up"] = wait_for_warm_up(server, 1800)
            print(f"  {doc['warm_up']['line']} (waited {doc['warm_up']['waited_s']} s)", flush=True)
            doc["rss_kib_after_warm_up"] = rss_kib(server.proc.pid)
        doc.update(asyncio.run(measure_served_log(server.target, server.proc.pid, size, args)))
    finally:
        server.stop()
    sizes = database_bytes(args.database, args.workdir, args.name)
    doc["bytes"] = sizes
    doc["bytes_per_entry"] = round(sum(sizes.values()) / size, 1)
    record(args.workdir, doc)


def cmd_build_access(args: argparse.Namespace) -> None:
    from bench_access import build

    url = log_url(args.database, args.workdir, args.name)
    drop(args.database, args.workdir, args.name)
    create_schema(args.database, args.name)
    signer = read_key(key_file(args.workdir))
    print(f"building {args.patients:,} patients with one grant each in {url}", flush=True)
    seconds = build(url, signer, args.patients, args.patients, args.build_batch, progress_printer(args.patients, "grants"))
    sizes = database_bytes(args.database, args.workdir, args.name)
    record(args.workdir, {
        "step": "build-access", "database": args.database.split("@")[-1], "name": args.name,
        "patients": args.patients, "build_seconds": round(seconds, 1), "bytes": sizes,
        "bytes_per_entry": round(sum(sizes.values()) / tree_size_of(url), 1),
    })  # fmt: skip


def cmd_measure_access(args: argparse.Namespace) -> None:
    from bench_access import REQUESTER, _request

    url = log_url(args.database, args.workdir, args.name)
    size = tree_size_of(url)
    patients = args.patients
    server, secs = start_server(args.workdir, url, args.cache_mb, verbose=args.wait_warm_up,
                                tile_cache_mb=args.tile_cache_mb)
    doc: dict[str, Any] = {"step": "measure-access", "database": args.database.split("@")[-1], "name": args.name,
                           "tree_size": size, "patients": patients, "process_start_to_serving_s": round(secs, 3)}  # fmt: skip
    if args.wait_warm_up:
        doc["warm_up"] = wait_for_warm_up(server, 1800)
        print(f"  {doc['warm_up']['line']} (waited {doc['warm_up']['waited_s']} s)", flush=True)
    md = (("x-consent-ledger-party", REQUESTER),)
    rng = random.Random(5)

    async def run() -> list[dict[str, Any]]:
        out = []
        async with grpc.aio.insecure_channel(server.target) as ch:
            access = access_pb2_grpc.AccessServiceStub(ch)
            health = health_pb2_grpc.HealthStub(ch)

            def check() -> Awaitable[object]:
                # A new random patient each time: at 1M patients almost every check is the first for its patient.
                return access.CheckAccess(_request(patients, rng), metadata=md)

            def trivial() -> Awaitable[object]:
                return health.Check(health_pb2.HealthCheckRequest())

            await sequential("warm-up", check, 50)
            out.append(summary(await sequential("CheckAccess (random patient)", check, args.calls)))
            out.append(summary(await closed_loop("trivial RPC (health Check)", trivial, args.concurrency, args.duration, 1.0)))
            out.append(summary(await closed_loop("CheckAccess (random patient)", check, args.concurrency, args.duration, 1.0)))
        return out

    try:
        assert server.proc is not None
        doc["results"] = asyncio.run(run())
        doc["rss_kib"] = rss_kib(server.proc.pid)
    finally:
        server.stop()
    record(args.workdir, doc)


def cmd_drop(args: argparse.Namespace) -> None:
    drop(args.database, args.workdir, args.name)
    print(f"dropped {args.name}")


def cmd_report(args: argparse.Namespace) -> None:
    print(json.dumps(machine()))
    for line in (args.workdir / "results.jsonl").read_text().splitlines():
        doc = json.loads(line)
        print(f"\n{doc['at']} {doc['step']} {doc['database']} {doc['name']} load {doc['load_average']}")
        for k, v in doc.items():
            if k not in ("results", "after_sweep", "at", "step", "database", "name", "load_average"):
                print(f"  {k}: {v}")
        for r in doc.get("results", []) + doc.get("after_sweep", []):
            print(f"  {r['name']:<34} {r['callers']:>3} callers {r['rate']:>9,.0f}/s  p50 {r['p50_ms']:>8.2f} ms  "
                  f"p99 {r['p99_ms']:>8.2f} ms  mean {r['mean_ms']} ms  errors {r['errors']}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, fn in (("build-log", cmd_build_log), ("resume-log", cmd_resume_log), ("measure-log", cmd_measure_log), ("build-access", cmd_build_access),
                     ("measure-access", cmd_measure_access), ("drop", cmd_drop), ("report", cmd_report)):  # fmt: skip
        s = sub.add_parser(name)
        s.set_defaults(fn=fn)
        s.add_argument("--workdir", type=Path, default=Path("/tmp/bench-scale"), help="files, keys and results.jsonl")
        if name == "report":
            continue
        s.add_argument("--database", default="sqlite", help="`sqlite` or a PostgreSQL URL (default: sqlite)")
        s.add_argument("--name", required=True, help="the SQLite file's name or the PostgreSQL schema")
        s.add_argument("--leaves", type=int, default=10_000_000)
        s.add_argument("--patients", type=int, default=1_000_000)
        s.add_argument("--build-batch", type=int, default=50_000)
        s.add_argument("--cache-mb", type=float, default=None, help="serve --cache-mb (default: the server's)")
        s.add_argument("--tile-cache-mb", type=float, default=None, help="serve --tile-cache-mb (default: none)")
        s.add_argument("--calls", type=int, default=2000, help="calls measured one after the other")
        s.add_argument("--duration", type=float, default=10.0, help="seconds of each concurrent measurement")
        s.add_argument("--concurrency", type=int, default=64)
        s.add_argument("--sqlite-cache-mb", type=int, default=0, help="resume-log: SQLite page cache while building")
        s.add_argument("--wait-warm-up", action="store_true",
                       help="measure-log: measure once the server's background cache warm-up has finished")  # fmt: skip
        s.add_argument("--sweep-tiles", type=int, default=12_000,
                       help="full tiles the cache sweep touches, spread over the log (0: all of them)")
    args = p.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.fn(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
