#!/usr/bin/env python3
"""Benchmark the log server: appends and proofs next to the transport ceiling measured in the same run.

Not a test (docs/design.md section 10, issue 2 item 11). It runs `consent-ledger serve` as a separate process on a
fresh SQLite file and drives it from this process with grpc.aio callers (both on the same machine):

(a) transport ceiling: gRPC health Check, a trivial unary RPC, from 64 concurrent callers;
(b) appends: Submit of pre-signed envelopes (client signing is not measured; consent grants from --patients
    patient keys at random) from 1, 16 and 64 concurrent submitters: entries/s and acknowledgement latency
    p50/p99;
(c) proofs at a large tree: a log of --leaves synthetic leaves (default 1,000,000) is written straight through
    the storage layer (IntegrationBatches of leaves, tiles and a signed checkpoint, no RPCs), the server is
    started on it, and GetInclusionProof for random indices is measured from 64 callers, first with cold
    caches and then warm, next to the trivial RPC on that same server.

Each figure is measured in --rounds windows alternating with windows of the trivial RPC on the same server,
and its ratio is taken against the trivial RPC measured in those windows: other work on the machine then
weighs on a figure and its baseline alike. The run also prints the load average and how fast the disk does a
4 KiB append + fdatasync, since both move the figures.

Targets (issue 2): appends at 64 submitters >= 0.5x the trivial-RPC rate with p99 < 250 ms; proofs at 1M
leaves >= 0.5x the trivial-RPC rate.

    .venv/bin/python scripts/bench_log.py                 # the full run (about 5 minutes)
    .venv/bin/python scripts/bench_log.py --quick         # a smoke run with small sizes
    .venv/bin/python scripts/bench_log.py --json          # one JSON document instead of the table
    .venv/bin/python scripts/bench_log.py --profile DIR   # also py-spy the server during (b) and (c)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from consent_ledger.app.ports import IntegrationBatch, NewEntry, StoredCheckpoint
from consent_ledger.core import payloads, tiles
from consent_ledger.core.checkpoint import Checkpoint, sign_checkpoint
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.leaf import encode_leaf
from consent_ledger.core.merkle import Node, tree_root
from consent_ledger.core.note import Signer
from consent_ledger.core.rfc6962 import hash_leaf
from consent_ledger.keys import read_key, write_new_key
from consent_ledger.storage import open_store
from consent_ledger.v1 import log_pb2, log_pb2_grpc
from tests.crash_support import ServerProcess
from tests.entries_support import grant_envelope

LOG_NAME = "bench.test/log"


# -- measuring ----------------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    concurrency: int
    calls: int
    seconds: float
    errors: int
    latencies: list[float] = field(repr=False)  # seconds, sorted
    baseline: str | None = None
    baseline_rate: float | None = None
    target: str | None = None
    met: bool | None = None
    note: str = ""

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    @property
    def p50_ms(self) -> float:
        return _percentile(self.latencies, 0.50) * 1000

    @property
    def p99_ms(self) -> float:
        return _percentile(self.latencies, 0.99) * 1000

    @staticmethod
    def merge(parts: list[Result]) -> Result:
        """One result from several windows of the same measurement."""
        first = parts[0]
        return Result(
            first.name, first.concurrency, sum(p.calls for p in parts), sum(p.seconds for p in parts),
            sum(p.errors for p in parts), sorted(x for p in parts for x in p.latencies),
            note="; ".join(sorted({p.note for p in parts if p.note})),
        )  # fmt: skip

    @property
    def ratio(self) -> float | None:
        return self.rate / self.baseline_rate if self.baseline_rate else None

    def as_dict(self) -> dict[str, object]:
        d = {k: v for k, v in asdict(self).items() if k != "latencies"}
        return {
            **d,
            "rate": round(self.rate, 1),
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "ratio": None if self.ratio is None else round(self.ratio, 3),
        }


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def closed_loop(
    name: str,
    call: Callable[[], Awaitable[object]] | Callable[[], Awaitable[object] | None],
    concurrency: int,
    duration: float,
    warmup: float,
) -> Result:
    """``concurrency`` callers call back to back; counts calls that complete inside the measured window.

    ``call`` returns None when it has nothing left to send (the window then ends early).
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    window_start = start + warmup
    window_end = window_start + duration
    exhausted_at: list[float] = []
    latencies: list[float] = []
    errors = 0

    async def caller() -> None:
        nonlocal errors
        while True:
            t0 = loop.time()
            if t0 >= window_end:
                return
            pending = call()
            if pending is None:
                exhausted_at.append(t0)
                return
            try:
                await pending
            except grpc.RpcError:
                errors += 1
                continue
            t1 = loop.time()
            if window_start <= t0 and t1 <= window_end:
                latencies.append(t1 - t0)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    end = min([window_end, *exhausted_at])
    seconds = max(0.0, end - window_start)
    latencies.sort()
    note = "ran out of pre-signed envelopes: window shortened" if exhausted_at and end < window_end else ""
    return Result(name, concurrency, len(latencies), seconds, errors, latencies, note=note)


async def paired(
    item: tuple[str, Callable[[], Awaitable[object] | None], int],
    baseline: tuple[str, Callable[[], Awaitable[object] | None], int],
    settings: Settings,
) -> tuple[Result, Result]:
    """Measure ``item`` and ``baseline`` in alternating windows (``settings.rounds`` of each, the measured time
    split between them), so that load from outside the benchmark skews both alike. Returns (item, baseline)."""
    item_parts: list[Result] = []
    base_parts: list[Result] = []
    per = settings.duration / settings.rounds
    for r in range(settings.rounds):
        warmup = settings.warmup if r == 0 else min(settings.warmup, 0.25)
        base_parts.append(await closed_loop(baseline[0], baseline[1], baseline[2], per, warmup))
        item_parts.append(await closed_loop(item[0], item[1], item[2], per, warmup))
        if item_parts[-1].note:  # ran out of input
            break
    it, base = Result.merge(item_parts), Result.merge(base_parts)
    it.baseline, it.baseline_rate = base.name, base.rate
    return it, base


# -- building a large log through the storage layer ----------------------------------------------------------


class _TileReader:
    """Node hashes from tiles held in memory (used to compute the roots of the synthetic log)."""

    def __init__(self, all_tiles: dict[tiles.TileId, bytes]) -> None:
        self._tiles = all_tiles

    def read_nodes(self, nodes: list[Node]) -> list[bytes]:
        out = []
        for level, index in nodes:
            loc = tiles.locate_node(level, index)
            out.append(tiles.hash_from_tile(self._tiles[loc.tile], loc))
        return out


def build_log(database_url: str, signer: Signer, leaves: int, batch: int, progress: Callable[[str], None]) -> float:
    """Write ``leaves`` synthetic entries in IntegrationBatches of ``batch``; returns the seconds it took.

    Each body is a short byte string and each leaf commits to its SHA-256 as an envelope would, so the stored
    log is consistent; the bodies are not signed envelopes (GetInclusionProof never reads them).
    """
    started = time.perf_counter()
    store = open_store(database_url)
    try:
        now_ms = time.time_ns() // 1_000_000
        size = 0
        edge: dict[tiles.TileId, bytes] = {}
        all_tiles: dict[tiles.TileId, bytes] = {}
        ptype = payloads.CONSENT_GRANT
        while size < leaves:
            entries = []
            for i in range(size, min(leaves, size + batch)):
                body = b"bench synthetic entry %d" % i
                sha = hashlib.sha256(body).digest()
                leaf = encode_leaf(now_ms, ptype, sha)
                entries.append(NewEntry(i, leaf, hash_leaf(leaf), body, sha, ptype, now_ms))
            changed = tiles.append_leaves(size, edge, [e.leaf_hash for e in entries])
            all_tiles.update(changed)
            size += len(entries)
            edge = {t: all_tiles[t] for t in tiles.edge_tiles(size)}
            root = tree_root(size, _TileReader(all_tiles))
            note = sign_checkpoint(Checkpoint(signer.name, size, root), signer)
            store.integrate(IntegrationBatch(entries, changed, StoredCheckpoint(size, root, note, now_ms)))
            progress(f"  built {size:,}/{leaves:,} leaves ({time.perf_counter() - started:.0f} s)")
    finally:
        store.close()
    return time.perf_counter() - started


# -- the plain-storage baseline and the database of (a)/(b) -------------------------------------------------

_PLAIN_TABLES = ("bench_plain_leaves", "bench_plain_bodies", "bench_plain_consents")


def _plain_ddl(backend: str) -> list[str]:
    blob = "BYTEA" if backend == "postgresql" else "BLOB"
    return [
        f"CREATE TABLE bench_plain_leaves (idx BIGINT PRIMARY KEY, leaf_hash {blob} NOT NULL UNIQUE, leaf {blob} NOT NULL,"
        f" envelope_sha256 {blob} NOT NULL UNIQUE, payload_type VARCHAR(128) NOT NULL, integrated_ms BIGINT NOT NULL)",
        f"CREATE TABLE bench_plain_bodies (idx BIGINT PRIMARY KEY, envelope {blob})",
        f"CREATE TABLE bench_plain_consents (idx BIGINT PRIMARY KEY, patient {blob} NOT NULL, kind VARCHAR(16) NOT NULL,"
        " consent_id VARCHAR(64) NOT NULL, grantee VARCHAR(300), target VARCHAR(64), integrated_ms BIGINT NOT NULL)",
        "CREATE INDEX bench_plain_consents_key ON bench_plain_consents (patient, grantee)",
        "CREATE INDEX bench_plain_consents_id ON bench_plain_consents (consent_id)",
    ]


def plain_storage(url: str, envelopes: list[bytes], batch: int, duration: float) -> Result:
    """The floor under an append: the rows a grant needs (leaf, body, consent-index row) inserted with the DBAPI's
    own executemany, ``batch`` entries per transaction, for ``duration`` seconds (or until ``envelopes`` run out).
    No parsing, signing, tree or map: what the database and driver cost. Counts entries/s; a "latency" is one
    transaction."""
    from sqlalchemy import create_engine

    engine = create_engine(url)
    backend = engine.dialect.name
    if backend == "sqlite":
        from sqlalchemy import event

        @event.listens_for(engine, "connect")
        def _pragmas(conn: object, _: object) -> None:
            cur = conn.cursor()  # type: ignore[attr-defined]
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"

    def sql(table: str, n: int) -> str:
        return f"INSERT INTO {table} VALUES ({', '.join([mark] * n)})"

    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for t in _PLAIN_TABLES:
            cur.execute(f"DROP TABLE IF EXISTS {t}")
        for ddl in _plain_ddl(backend):
            cur.execute(ddl)
        raw.commit()
        now = time.time_ns() // 1_000_000
        rows = []
        for i, env in enumerate(envelopes):
            sha = hashlib.sha256(env).digest()
            leaf = encode_leaf(now, payloads.CONSENT_GRANT, sha)
            rows.append((i, hash_leaf(leaf), leaf, sha, env, hashlib.sha256(env[-200:]).hexdigest()))
        latencies: list[float] = []
        t0 = time.perf_counter()
        done = 0
        while done < len(rows) and time.perf_counter() - t0 < duration:
            chunk = rows[done : done + batch]
            s0 = time.perf_counter()
            cur.executemany(sql("bench_plain_leaves", 6), [(i, h, lf, sh, payloads.CONSENT_GRANT, now) for i, h, lf, sh, _, _ in chunk])
            cur.executemany(sql("bench_plain_bodies", 2), [(i, e) for i, _, _, _, e, _ in chunk])
            cur.executemany(
                sql("bench_plain_consents", 7),
                [(i, sh, "grant", cid, "org:hospital-1", None, now) for i, _, _, sh, _, cid in chunk],
            )
            raw.commit()
            latencies.append(time.perf_counter() - s0)
            done += len(chunk)
        seconds = time.perf_counter() - t0
        for t in _PLAIN_TABLES:
            cur.execute(f"DROP TABLE IF EXISTS {t}")
        raw.commit()
    finally:
        raw.close()
        engine.dispose()
    r = Result(f"plain storage (leaf, body, index row; raw executemany, {batch}/transaction)", 1, done, seconds, 0,
               sorted(latencies))  # fmt: skip
    r.note = "entries/s; latency = one transaction"
    return r


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cpu_per_call(
    server: ServerProcess, name: str, call: Callable[[], Awaitable[object] | None], concurrency: int, seconds: float
) -> Result:
    """One window of ``call`` with the server's CPU time per completed call (µs, in ``note``): a figure other
    load on a shared machine moves far less than rates do."""
    assert server.proc is not None
    before = process_cpu_s(server.proc.pid)
    r = await closed_loop(name, call, concurrency, seconds, 0.25)
    used = process_cpu_s(server.proc.pid) - before
    r.note = f"server CPU {used / max(1, r.calls) * 1e6:,.0f} us/call"
    return r


def reset_database(url: str) -> None:
    """Empty the (PostgreSQL or MySQL) database of (a)/(b) so the server migrates it from scratch: every table
    of its schema is dropped. Only for a database given to the benchmark (--postgres)."""
    from sqlalchemy import MetaData, create_engine

    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        meta.drop_all(engine)
    finally:
        engine.dispose()


# -- the server and profiling -------------------------------------------------------------------------------


@dataclass
class Profiler:
    """py-spy on the server process for one phase (optional): samples of the thread holding the GIL, which is
    where a CPython server spends its one core of Python."""

    directory: Path | None
    files: list[str] = field(default_factory=list)

    def start(self, server: ServerProcess, phase: str, seconds: float) -> subprocess.Popen[bytes] | None:
        if self.directory is None or server.proc is None:
            return None
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(exe).exists():
            raise SystemExit("--profile needs py-spy (pip install py-spy)")
        self.directory.mkdir(parents=True, exist_ok=True)
        out = self.directory / f"{phase}.txt"
        self.files.append(str(out))
        return subprocess.Popen(
            [exe, "record", "--pid", str(server.proc.pid), "--duration", str(max(1, int(seconds))),
             "--rate", "250", "--format", "raw", "--threads", "--gil", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip


def fsync_rate(directory: Path, n: int = 300) -> float:
    """Appends of 4 KiB followed by fdatasync, per second: how fast this disk commits right now."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        block = b"\0" * 4096
        t0 = time.perf_counter()
        for _ in range(n):
            os.write(fd, block)
            os.fdatasync(fd)
        return n / (time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()


# The benchmark's submitters call as the server's configured operator (the development header, plaintext on
# loopback): the cost of authorization is in the figures, an organisation's or a patient's would be similar.
OPERATOR = "bench-operator"
OPERATOR_MD = (("x-consent-ledger-party", OPERATOR),)


def start_server(workdir: Path, key_file: Path, url: str) -> ServerProcess:
    server = ServerProcess(workdir, key_file, url, operators=(OPERATOR,))
    server.start(timeout=300)
    return server


# -- the run ------------------------------------------------------------------------------------------------


@dataclass
class Settings:
    duration: float
    warmup: float
    rounds: int
    leaves: int
    build_batch: int
    concurrency: int
    submitter_counts: tuple[int, ...]
    channels: int
    patients: int
    appends_url: str = ""  # (a)/(b) on this database (--postgres); "" = a fresh SQLite file
    proofs: bool = True  # run (c)
    plain_batch: int = 32


def _envelopes(count: int, patients: list[Ed25519PrivateKey], rng: random.Random) -> Iterator[bytes]:
    return iter([grant_envelope(rng.choice(patients)) for _ in range(count)])


class Callers:
    """Stubs over ``channels`` connections to one server, used round robin."""

    def __init__(self, target: str, channels: int) -> None:
        self.channels = [grpc.aio.insecure_channel(target) for _ in range(channels)]
        self.health = [health_pb2_grpc.HealthStub(c) for c in self.channels]
        self.logs = [log_pb2_grpc.LogServiceStub(c) for c in self.channels]
        self._next = 0
        self._check = health_pb2.HealthCheckRequest()

    def log(self) -> log_pb2_grpc.LogServiceStub:
        self._next += 1
        return self.logs[self._next % len(self.logs)]

    def trivial(self) -> Awaitable[object]:
        self._next += 1
        return self.health[self._next % len(self.health)].Check(self._check)

    async def close(self) -> None:
        for c in self.channels:
            await c.close()


async def run(settings: Settings, workdir: Path, profiler: Profiler, say: Callable[[str], None]) -> dict[str, object]:
    key_file = workdir / "log.key"
    write_new_key(key_file, LOG_NAME)
    signer = read_key(key_file)
    results: list[Result] = []
    info: dict[str, object] = {"fsync_per_s_before": round(fsync_rate(workdir))}
    n_calls = settings.concurrency
    rng = random.Random(0)
    patients = [Ed25519PrivateKey.from_seed(rng.randbytes(32)) for _ in range(settings.patients)]
    trivial_name = "trivial RPC (health Check)"

    # (a) and (b): a fresh log; the trivial RPC is measured in windows alternating with each Submit run.
    appends_url = settings.appends_url or f"sqlite:///{workdir / 'appends.db'}"
    if settings.appends_url:
        reset_database(settings.appends_url)
    info["appends_database"] = appends_url.split("://", 1)[0]
    server = start_server(workdir, key_file, appends_url)
    try:
        callers = Callers(server.target, settings.channels)
        say(f"(a) trivial RPC (health Check), {n_calls} callers")
        ceiling = await closed_loop(trivial_name, callers.trivial, n_calls, settings.duration / 2, settings.warmup)
        say(f"    {ceiling.rate:,.0f}/s")
        if server.proc is not None and Path(f"/proc/{server.proc.pid}/stat").exists():
            cpu = await cpu_per_call(server, "trivial (server CPU)", callers.trivial, n_calls, settings.duration)
            info["trivial_server_cpu"] = cpu.note
            say(f"    {cpu.note}")
        baselines: list[Result] = [ceiling]
        submit_results: list[Result] = []
        for n in settings.submitter_counts:
            # Enough pre-signed envelopes for the run at the transport ceiling, which appends cannot beat by much.
            budget = int(max(500, ceiling.rate * 1.3) * (settings.duration * 2 + settings.warmup * 2))
            if profiler.directory and n == max(settings.submitter_counts):
                budget *= 2
            say(f"(b) signing {budget:,} envelopes for {n} submitter(s)")
            envs = _envelopes(budget, patients, rng)

            def submit(envs: Iterator[bytes] = envs) -> Awaitable[object] | None:
                env = next(envs, None)
                if env is None:
                    return None
                return callers.log().Submit(log_pb2.SubmitRequest(envelope=env), metadata=OPERATOR_MD)

            say(f"(b) Submit, {n} submitter(s), alternating with the trivial RPC, {settings.rounds} rounds")
            r, base = await paired(
                ("Submit (signed entries)", submit, n), (trivial_name, callers.trivial, n_calls), settings
            )
            baselines.append(base)
            if n == max(settings.submitter_counts):
                r.target = ">= 0.5x trivial, p99 < 250 ms"
                r.met = r.ratio is not None and r.ratio >= 0.5 and r.p99_ms < 250
                prof = profiler.start(server, f"submit-{n}", settings.duration)
                if prof:
                    say(f"(b) profiling Submit, {n} submitters (py-spy on the server), {settings.duration} s")
                    await closed_loop("profiled", submit, n, settings.duration, 0)
                    prof.wait()
            submit_results.append(r)
            say(f"    {r.rate:,.0f}/s, p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms; trivial RPC meanwhile {base.rate:,.0f}/s")
            if server.proc is not None and Path(f"/proc/{server.proc.pid}/stat").exists():
                cpu = await cpu_per_call(server, "Submit (server CPU)", submit, n, settings.duration)
                info[f"submit_{n}_server_cpu"] = cpu.note
                say(f"    {cpu.note} ({cpu.calls} calls)")
        info["fsync_per_s_after_appends"] = round(fsync_rate(workdir))
        plain = await plain_baseline(settings, workdir, patients, rng, say)
        note = (await callers.log().GetCheckpoint(log_pb2.GetCheckpointRequest())).checkpoint.note
        info["append_log_size"] = int(note.split(b"\n")[1])
        results.append(Result.merge(baselines))
        results[-1].note = "all windows of (a) and (b)"
        results += submit_results
        results.append(plain)
        await callers.close()
    finally:
        server.stop()
    if not settings.proofs:
        return {"results": results, "info": info}

    # (c) a large log built through the storage layer, then served.
    url = f"sqlite:///{workdir / 'large.db'}"
    say(f"(c) building a log of {settings.leaves:,} leaves through the storage layer")
    info["build_seconds"] = round(
        await asyncio.to_thread(build_log, url, signer, settings.leaves, settings.build_batch, say), 1
    )
    info["large_db_bytes"] = (workdir / "large.db").stat().st_size
    t0 = time.perf_counter()
    server = start_server(workdir, key_file, url)
    info["large_start_seconds"] = round(time.perf_counter() - t0, 2)
    try:
        callers = Callers(server.target, settings.channels)
        rng = random.Random(1)
        leaves = settings.leaves

        def prove() -> Awaitable[object]:
            req = log_pb2.GetInclusionProofRequest(index=rng.randrange(leaves), tree_size=0)
            return callers.log().GetInclusionProof(req)

        # The very first proofs fill the tile cache: this window is reported as "cold".
        say(f"(c) GetInclusionProof at {leaves:,} leaves, {n_calls} callers, cold caches, {settings.duration / 2:g} s")
        cold = await closed_loop(f"GetInclusionProof at {leaves:,} (cold cache)", prove, n_calls, settings.duration / 2, 0)
        say(f"    {cold.rate:,.0f}/s")
        # Then touch every tile once (one proof per 256 leaves), so the warm windows measure a steady state:
        # the server's tile cache (4096 tiles) holds a 1M-leaf tree whole.
        sweep = iter(range(0, leaves, tiles.TILE_WIDTH))

        def prove_each_tile() -> Awaitable[object] | None:
            i = next(sweep, None)
            if i is None:
                return None
            return callers.log().GetInclusionProof(log_pb2.GetInclusionProofRequest(index=i))

        t0 = time.perf_counter()
        await closed_loop("sweep", prove_each_tile, n_calls, 3600, 0)
        info["tile_sweep_seconds"] = round(time.perf_counter() - t0, 1)
        say(f"    touched every tile in {info['tile_sweep_seconds']} s")
        say(f"(c) GetInclusionProof at {leaves:,} leaves, warm, alternating with the trivial RPC, {settings.rounds} rounds")
        warm, base = await paired(
            (f"GetInclusionProof at {leaves:,} (warm)", prove, n_calls),
            (f"trivial RPC at {leaves:,} leaves", callers.trivial, n_calls),
            settings,
        )
        say(f"    {warm.rate:,.0f}/s; trivial RPC meanwhile {base.rate:,.0f}/s")
        cold.baseline, cold.baseline_rate = base.name, base.rate
        warm.target = ">= 0.5x trivial"
        warm.met = warm.ratio is not None and warm.ratio >= 0.5
        results += [base, cold, warm]
        prof = profiler.start(server, "proofs-warm", settings.duration)
        if prof:
            say(f"(c) profiling GetInclusionProof (py-spy on the server), {settings.duration} s")
            await closed_loop("profiled", prove, n_calls, settings.duration, 0)
            prof.wait()
        await callers.close()
    finally:
        server.stop()
    return {"results": results, "info": info}


async def plain_baseline(
    settings: Settings, workdir: Path, patients: list[Ed25519PrivateKey], rng: random.Random, say: Callable[[str], None]
) -> Result:
    """The plain-storage baseline, in the same run, on the same kind of database as (b) (a table set of its own)."""
    url = settings.appends_url or f"sqlite:///{workdir / 'plain.db'}"
    envs = list(_envelopes(max(2000, int(20_000 * settings.duration / 10)), patients, rng))
    say(f"(b') plain storage: the same rows with raw executemany, {settings.plain_batch} entries per transaction")
    r = await asyncio.to_thread(plain_storage, url, envs, settings.plain_batch, settings.duration / 2)
    say(f"    {r.rate:,.0f} entries/s")
    return r


def machine() -> dict[str, object]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import grpc as _grpc
    import sqlalchemy

    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "grpcio": _grpc.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "platform": platform.platform(),
    }


def table(results: list[Result]) -> str:
    head = ["measurement", "callers", "rate/s", "p50 ms", "p99 ms", "baseline rate/s", "ratio", "target", "met"]
    rows = [head]
    for r in results:
        rows.append([
            r.name + (f" [{r.note}]" if r.note else "") + (f" [{r.errors} errors]" if r.errors else ""),
            str(r.concurrency),
            f"{r.rate:,.0f}",
            f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}",
            "" if r.baseline_rate is None else f"{r.baseline_rate:,.0f}",
            "" if r.ratio is None else f"{r.ratio:.2f}x",
            r.target or "",
            "" if r.met is None else ("yes" if r.met else "NO"),
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = []
    for k, row in enumerate(rows):
        cells = [c.ljust(w) if i == 0 or i == 7 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 2 s windows, 20,000 leaves")
    p.add_argument("--leaves", type=int, help="leaves of the large log (default: 1,000,000; --quick: 20,000)")
    p.add_argument("--duration", type=float, help="seconds measured per figure, split into --rounds windows (default: 10; --quick: 2)")
    p.add_argument("--warmup", type=float, help="seconds before each window (default: 2; --quick: 0.5)")
    p.add_argument("--rounds", type=int, default=5,
                   help="alternating windows of a figure and its trivial-RPC baseline (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=64, help="callers for (a) and (c) (default: %(default)s)")
    p.add_argument("--submitters", default="1,16,64", help="submitter counts for (b) (default: %(default)s)")
    p.add_argument("--patients", type=int, default=10_000,
                   help="the grants of (b) come from this many patient keys, at random (default: %(default)s)")
    p.add_argument("--channels", type=int, default=1, help="client channels (connections) to spread calls over")
    p.add_argument("--build-batch", type=int, default=50_000, help="leaves per IntegrationBatch when building (c)")
    p.add_argument("--postgres", metavar="URL", default="",
                   help="run (a) and (b) on this PostgreSQL database (emptied first!) instead of a fresh SQLite file")
    p.add_argument("--no-proofs", action="store_true", help="skip (c), the proofs at a large tree")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    p.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the server (raw stacks into DIR)")
    p.add_argument("--workdir", type=Path, help="keep databases and server logs here (default: a temp dir)")
    args = p.parse_args(argv)

    settings = Settings(
        duration=args.duration or (2.0 if args.quick else 10.0),
        warmup=args.warmup if args.warmup is not None else (0.5 if args.quick else 2.0),
        rounds=args.rounds,
        leaves=args.leaves or (20_000 if args.quick else 1_000_000),
        build_batch=args.build_batch,
        concurrency=args.concurrency,
        submitter_counts=tuple(int(n) for n in args.submitters.split(",")),
        channels=args.channels,
        patients=args.patients,
        appends_url=args.postgres,
        proofs=not args.no_proofs,
    )
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-log-"))
    workdir.mkdir(parents=True, exist_ok=True)

    def say(text: str) -> None:
        print(text, file=sys.stderr if args.json else sys.stdout, flush=True)

    profiler = Profiler(args.profile)
    load_before = os.getloadavg()
    started = time.perf_counter()
    try:
        out = asyncio.run(run(settings, workdir, profiler, say))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    results: list[Result] = out["results"]  # type: ignore[assignment]
    doc = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "settings": asdict(settings),
        "info": out["info"],
        "results": [r.as_dict() for r in results],
        "profiles": profiler.files,
        "seconds": round(time.perf_counter() - started),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "note": "client and server share the machine",
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        m = doc["machine"]
        print()
        print(f"machine: {m['cpus']} CPUs ({m['cpu']}), Python {m['python']}, grpcio {m['grpcio']}; "
              "client and server share the machine")  # fmt: skip
        la = doc["load_average"]
        print(f"load average (1/5/15 min) before: {'/'.join(f'{x:.1f}' for x in la['before'])}, "  # type: ignore[index]
              f"after: {'/'.join(f'{x:.1f}' for x in la['after'])} (other work on the machine skews the figures)")  # type: ignore[index]
        print(f"disk: 4 KiB append + fdatasync {out['info']['fsync_per_s_before']:,}/s before (b), "  # type: ignore[index]
              f"{out['info']['fsync_per_s_after_appends']:,}/s after")  # type: ignore[index]
        print(f"settings: {settings.duration:g} s per figure in {settings.rounds} windows after {settings.warmup:g} s "
              f"warm-up; grants from {settings.patients:,} patients; {settings.leaves:,} leaves for (c); "
              f"{settings.channels} client channel(s)")  # fmt: skip
        if settings.proofs:
            print(f"(c) built in {out['info']['build_seconds']} s, server started on it in "  # type: ignore[index]
                  f"{out['info']['large_start_seconds']} s; one proof per tile to warm its cache took "  # type: ignore[index]
                  f"{out['info']['tile_sweep_seconds']} s")  # type: ignore[index]
        print(f"(a)/(b) database: {out['info']['appends_database']}")  # type: ignore[index]
        for k, v in out["info"].items():  # type: ignore[union-attr]
            if k.endswith("_server_cpu"):
                print(f"{k.removesuffix('_server_cpu').replace('_', ' ')}: {v}")
        print()
        print(table(results))
        if profiler.files:
            print("\nprofiles (py-spy raw stacks):", *profiler.files, sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
