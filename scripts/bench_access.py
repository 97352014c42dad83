#!/usr/bin/env python3
"""Benchmark access checks with full evidence, next to the transport ceiling measured in the same run.

Not a test (issue 3 item 7, issue 4 item 6, issue 12 items 5 and 6). It builds a ledger of --patients patients and
--entries signed grants (default 100,000 and 1,000,000) in a SQLite file through the application and storage
layers (no RPCs): grants go through the sequencer's batch integration with their consent-index rows, the
consent-state map is built in memory from the in-force sets and bulk-written, and a final batch closes the load with
a StateCommit (--workdir keeps it, and a later run with the same --workdir reuses it). Then it starts
`consent-ledger serve` on that file, from this script's source tree, and measures from this process:

(a) cold: CheckAccess from the moment the server is up, each call about a patient not asked about before, for
    --curve seconds: the rate over the whole time, and the warm-up curve (the rate per --bucket seconds);
(b) GetInclusionProof for random leaves in the first 10 s after a restart (the tile cache warming up);
(c) warm, in alternating windows: the trivial RPC (gRPC health Check), CheckAccess over a working set of 2,000
    patients (each answer carries the decision, the evidence with inclusion proofs, the map proofs and a signed
    receipt), GetInclusionProof for random leaves;
(d) client-side verification of one decision with its evidence (ConsentClient.verify_access) on one core, with
    the verified map keys cached and cold;
(e) in-process server cost of one access check (a first check about a patient, with and without map proofs; and
    a warm one answered from memory).

Targets: warm checks >= 1/3 of the trivial-RPC rate, cold >= 0.15x, inclusion proofs warm >= 0.5x; client
verification >= 1,000 decisions/s on one core. To measure an older commit in the same conditions, copy this
script into that commit's tree (git archive) and run it there with the same --workdir.

    .venv/bin/python scripts/bench_access.py --workdir /tmp/bench-1m   # the full run (building 1M grants: long)
    .venv/bin/python scripts/bench_access.py --quick                   # small sizes
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "clients" / "python"), str(ROOT / "scripts")]

import grpc  # noqa: E402
from bench_log import OPERATOR, Result, closed_loop, machine, table  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from consent_ledger.app.consent_state import ConsentState, StatePolicy  # noqa: E402
from consent_ledger.app.consents import ConsentLedger  # noqa: E402
from consent_ledger.app.ledger import Ledger  # noqa: E402
from consent_ledger.app.sequencer import PreparedBatch  # noqa: E402
from consent_ledger.core import payloads, smt, vrf  # noqa: E402
from consent_ledger.core.crypto import Ed25519PrivateKey  # noqa: E402
from consent_ledger.core.envelope import parse_envelope, sign_envelope  # noqa: E402
from consent_ledger.core.payloads import DataItem  # noqa: E402
from consent_ledger.keys import derived_map_vrf_key, read_key, verifier_key_of, write_new_key  # noqa: E402
from consent_ledger.storage import open_store, schema  # noqa: E402
from consent_ledger.storage.consent_index import SqlConsentIndex  # noqa: E402
from consent_ledger.storage.map_store import SqlMapStore, map_rows  # noqa: E402
from consent_ledger.v1 import access_pb2, access_pb2_grpc, log_pb2, log_pb2_grpc  # noqa: E402
from consent_ledger_client import ConsentClient, LedgerClient  # noqa: E402
from tests.crash_support import ServerProcess  # noqa: E402

REQUESTER = "insurer-1"
GRANTEES = (
    "org:insurer-1", "role:insurer", "any", "org:hospital-0", "org:hospital-1", "org:hospital-2",
    "role:hospital", "role:research", "org:lab-1", "org:pharmacy-1",
)  # fmt: skip
PURPOSES = {"org:insurer-1": "HPAYMT", "role:insurer": "HPAYMT"}


def patient_key(i: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_seed(hashlib.sha256(b"bench patient %d" % i).digest())


def build(url: str, signer, patients: int, entries: int, batch: int, say: Callable[[str], None]) -> float:  # type: ignore[no-untyped-def]
    """Load the ledger through the app and storage layers; returns the seconds it took."""
    started = time.perf_counter()
    store = open_store(url)
    index = SqlConsentIndex(store)
    # The served ledger derives its map VRF key from the log key (no --map-vrf-key-file): the same keys here.
    prover = vrf.MapKeyProver(derived_map_vrf_key(signer), capacity=1)
    consents = ConsentLedger(index, ConsentState(index, SqlMapStore(store), signer, StatePolicy(), prover), signer)

    def index_only(es, envs, now, closing, heartbeat):  # type: ignore[no-untyped-def]
        # The bulk load writes the index rows now and the map once at the end (below).
        return PreparedBatch(None, consents.index_rows(es, envs))

    ledger = Ledger(store, signer, check_payload=consents.check, prepare_batch=index_only)
    ledger.open()
    reg = payloads.build_party_registration(
        party_id=REQUESTER, roles=["insurer"], public_keys=[signer.public_key], display_name="Bench Insurer"
    )
    ledger.sequencer.integrate_batch([parse_envelope(sign_envelope(payloads.PARTY_REGISTRATION, reg, [signer.private_key]))], prove=False)
    per_patient = max(1, entries // patients)
    sets: dict[bytes, list[tuple[int, bytes]]] = {}
    done = 0
    pending = []
    for p in range(patients):
        key = patient_key(p)
        for g in range(per_patient):
            grantee = GRANTEES[g % len(GRANTEES)]
            payload = payloads.build_grant(
                patient=key.public_key, grantee=grantee, actions=["access"], purposes=[PURPOSES.get(grantee, "TREAT")],
                data_classes=["laboratory-results"] if g % 3 else ["laboratory-results", "imaging"],
                decision=payloads.DENY if (p + g) % 17 == 0 else payloads.PERMIT,
            )  # fmt: skip
            pending.append(parse_envelope(sign_envelope(payloads.CONSENT_GRANT, payload, [key])))
        if len(pending) >= batch or p == patients - 1:
            before = ledger.sequencer.latest.size
            ledger.sequencer.integrate_batch(pending, prove=False)
            for off, env in enumerate(pending):
                g = payloads.parse_payload(env.payload_type, env.payload)
                sets.setdefault(prover.consent_key(g.patient, g.grantee), []).append((before + off, b""))
            done += len(pending)
            pending = []
            say(f"  integrated {done:,}/{patients * per_patient:,} grants ({time.perf_counter() - started:.0f} s)")
    # The map from the in-force sets (every grant is in force: nothing was revoked), with real leaf hashes.
    say("  building the consent-state map in memory")
    leaf_hash = {}
    with store.connect() as conn:
        for i, h in conn.execute(schema.leaves.select().with_only_columns(schema.leaves.c.idx, schema.leaves.c.leaf_hash)):
            leaf_hash[i] = bytes(h)
    nodes = smt.MemoryMapNodes()
    updates = {k: smt.value_hash((i, leaf_hash[i]) for i, _ in v) for k, v in sets.items()}
    updates[prover.party_key(REQUESTER)] = smt.value_hash([(0, leaf_hash[0])])  # the registration, entry 0
    root, changed, _ = smt.apply_batch(nodes, updates)
    say(f"  writing {len(changed):,} map nodes")
    rows = map_rows(changed, ())
    with store.begin() as conn:
        for k in range(0, len(rows), 50_000):
            conn.execute(schema.map_nodes.insert(), rows[k : k + 50_000])
    # Close the load with a StateCommit through the real path (an idle heartbeat batch).
    state = ConsentState(index, SqlMapStore(store), signer, StatePolicy(), prover)
    closing = Ledger(store, signer, check_payload=consents.check, prepare_batch=ConsentLedger(index, state, signer).prepare_batch, on_integrated=lambda es, extra, cp: state.committed(extra))
    closing.open()
    closing.sequencer.integrate_batch([], heartbeat=True, prove=False)
    assert state.latest is not None and state.latest.map_root == root, "the bulk-built map and the StateCommit differ"
    store.close()
    return time.perf_counter() - started


def _request(patients: int, rng: random.Random) -> access_pb2.CheckAccessRequest:
    return _request_for(rng.randrange(patients))


def _request_for(p: int) -> access_pb2.CheckAccessRequest:
    return access_pb2.CheckAccessRequest(
        patient=patient_key(p).public_key,
        action="access",
        purpose="CLMATTCH",
        data=[payloads.data_item_to_pb(DataItem("laboratory-results")), payloads.data_item_to_pb(DataItem("imaging"))],
    )


MD = (("x-consent-ledger-party", REQUESTER),)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def counted(call: Callable[[], object], box: list[int]) -> Callable[[], object]:
    """``call`` that counts the calls that complete (warm-up included), for the server's CPU per call."""

    async def run() -> None:
        await call()  # type: ignore[misc]
        box[0] += 1

    return run


async def curve(target: str, pid: int, requests: list[access_pb2.CheckAccessRequest], seconds: float, bucket: float, concurrency: int) -> tuple[Result, list[float]]:
    """From the moment the server is up: CheckAccess for patients never asked about before (each request a new
    random patient), back to back from ``concurrency`` callers for ``seconds``; the rate in each ``bucket``."""
    done: list[float] = []
    latencies: list[float] = []
    errors = 0
    it = iter(requests)
    async with grpc.aio.insecure_channel(target) as ch:
        access = access_pb2_grpc.AccessServiceStub(ch)
        loop = asyncio.get_running_loop()
        start = loop.time()
        c0 = cpu_seconds(pid)

        async def caller() -> None:
            nonlocal errors
            while loop.time() - start < seconds:
                req = next(it, None)
                if req is None:
                    return
                t0 = loop.time()
                try:
                    await access.CheckAccess(req, metadata=MD)
                except grpc.RpcError:
                    errors += 1
                    continue
                t1 = loop.time()
                if t1 - start <= seconds:
                    done.append(t1 - start)
                    latencies.append(t1 - t0)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        cpu = cpu_seconds(pid) - c0
    rates = [0.0] * int(seconds / bucket)
    for t in done:
        k = int(t / bucket)
        if k < len(rates):
            rates[k] += 1 / bucket
    latencies.sort()
    r = Result(f"CheckAccess, cold: a new patient each call, first {seconds:g} s after start-up", concurrency, len(done), seconds, errors, latencies)
    r.note = f"server CPU {cpu / max(len(done), 1) * 1e6:,.0f} us/call (warm-up thread included)"
    return r, rates


async def alternate(target: str, pid: int, patients: int, duration: float, warmup: float, concurrency: int, rounds: int, leaves: int) -> list[Result]:
    """Warm figures in alternating windows: the trivial RPC, CheckAccess over a working set of 2,000 patients
    (each asked about once before measuring), GetInclusionProof for random leaves of the whole log."""
    rng = random.Random(7)
    requests = [_request(patients, rng) for _ in range(min(patients, 2000))]
    async with grpc.aio.insecure_channel(target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        access = access_pb2_grpc.AccessServiceStub(ch)
        logs = log_pb2_grpc.LogServiceStub(ch)
        # Every patient of the working set once, so the measured windows are warm.
        for k in range(0, len(requests), concurrency):
            # (main at 7ae2e94 sometimes fails a check racing a heartbeat batch: counted below, not fatal here)
            await asyncio.gather(*(access.CheckAccess(r, metadata=MD) for r in requests[k : k + concurrency]), return_exceptions=True)
        calls = {
            "trivial RPC (health Check)": lambda: health.Check(health_pb2.HealthCheckRequest()),
            "CheckAccess, warm, full evidence + receipt": lambda: access.CheckAccess(requests[rng.randrange(len(requests))], metadata=MD),
            f"GetInclusionProof at {leaves:,} leaves, warm": lambda: logs.GetInclusionProof(log_pb2.GetInclusionProofRequest(index=rng.randrange(leaves))),
        }
        parts: dict[str, list[Result]] = {name: [] for name in calls}
        cpu = {name: [0.0, 0] for name in calls}  # server CPU seconds, completed calls
        for r in range(rounds):
            for name, call in calls.items():
                box = [0]
                c0 = cpu_seconds(pid)
                parts[name].append(await closed_loop(name, counted(call, box), concurrency, duration / rounds, warmup if r == 0 else 0.5))
                cpu[name][0] += cpu_seconds(pid) - c0
                cpu[name][1] += box[0]
    merged = [Result.merge(p) for p in parts.values()]
    for res, (seconds, n) in zip(merged, cpu.values()):
        res.note = f"server CPU {seconds / max(n, 1) * 1e6:,.0f} us/call"
    trivial, *rest = merged
    for res, (target_ratio, label) in zip(rest, ((1 / 3, ">= 0.33x"), (0.5, ">= 0.5x"))):
        res.baseline, res.baseline_rate = trivial.name, trivial.rate
        res.target, res.met = label, res.rate >= trivial.rate * target_ratio
    return [trivial, *rest]


async def cold_proofs(target: str, leaves: int, seconds: float, concurrency: int) -> Result:
    rng = random.Random(11)
    async with grpc.aio.insecure_channel(target) as ch:
        logs = log_pb2_grpc.LogServiceStub(ch)
        return await closed_loop(
            f"GetInclusionProof at {leaves:,} leaves, first {seconds:g} s after start-up", lambda: logs.GetInclusionProof(log_pb2.GetInclusionProofRequest(index=rng.randrange(leaves))), concurrency, seconds, 0
        )


def client_verification(target: str, verifier_key: str, patients: int, seconds: float) -> list[Result]:
    """Verify one stored answer over and over on this thread: evidence, map proofs (with their VRF proofs),
    re-evaluation, receipt; with the verified map keys cached, and cold (a fresh key cache for every decision).
    Rates are per second of this process's CPU time (the machine is shared: wall-clock time counts other work)."""
    ledger = LedgerClient.connect(target, verifier_key=verifier_key, insecure=True, party_id=REQUESTER)
    # The stored answer is verified as of the moment it was asked for (decisions are made for now).
    asked_ms = time.time_ns() // 1_000_000
    client = ConsentClient(ledger, max_state_age_ms=24 * 3600 * 1000, clock_ms=lambda: asked_ms)
    req = _request(patients, random.Random(1))
    resp = ledger.call(client._access.CheckAccess, req)
    out = []
    for name, cold in (("client verification of one decision, VRF keys cached (1 core)", False),
                       ("client verification of one decision, VRF keys cold (1 core)", True)):  # fmt: skip
        n, t0 = 0, time.process_time()
        while time.process_time() - t0 < seconds:
            if cold:
                ledger.map_keys = vrf.VerifiedMapKeys()
            client.verify_access(req, resp)
            n += 1
        elapsed = time.process_time() - t0
        r = Result(name, 1, n, elapsed, 0, [elapsed / n])
        r.note = f"{len(resp.evidence)} evidence entries, {len(resp.selector_proofs)} map proofs + the party key's"
        out.append(r)
    ledger.close()
    out[0].target, out[0].met = ">= 1,000/s", out[0].rate >= 1000
    out[1].baseline, out[1].baseline_rate = out[0].name, out[0].rate
    return out


def server_cost(url: str, signer, patients: int, n: int) -> list[Result]:  # type: ignore[no-untyped-def]
    """In-process: the server's work for a first check about a patient (evidence gathered from storage and the
    caches as they are), and for a warm one answered from memory where the code has that path. Rates are per
    second of this process's CPU time."""
    store = open_store(url)
    index = SqlConsentIndex(store)
    state = ConsentState(index, SqlMapStore(store), signer, StatePolicy(), vrf.MapKeyProver(derived_map_vrf_key(signer)))
    consents = ConsentLedger(index, state, signer)
    ledger = Ledger(store, signer, check_payload=consents.check)
    ledger.open()
    consents.attach(ledger.reader, lambda: ledger.sequencer.latest, ledger.sequencer.append, None)
    rng = random.Random(3)
    data = [DataItem("laboratory-results"), DataItem("imaging")]
    first = rng.sample(range(patients), min(n, patients))
    t0 = time.process_time()
    for p in first:
        consents.check_access(REQUESTER, patient=patient_key(p).public_key, action="access", purpose="CLMATTCH", data=data)
    elapsed = time.process_time() - t0
    out = [Result("server: first check about a patient (in process)", 1, len(first), elapsed, 0, [elapsed / len(first)])]
    again = [patient_key(p).public_key for p in first[:200]]
    t0 = time.process_time()
    for k in range(n):
        consents.check_access(REQUESTER, patient=again[k % len(again)], action="access", purpose="CLMATTCH", data=data)
    elapsed = time.process_time() - t0
    out.append(Result("server: a repeated check (in process, ConsentLedger.check_access)", 1, n, elapsed, 0, [elapsed / n]))
    access = getattr(consents, "access", None)
    if access is not None:  # the access path answers warm checks from memory (app/access.py)
        warm = again
        t0 = time.process_time()
        for k in range(n):
            access.check_access(REQUESTER, patient=warm[k % len(warm)], action="access", purpose="CLMATTCH", data=data, io=False)
        elapsed = time.process_time() - t0
        out.append(Result("server: warm check from memory (io=False, in process)", 1, n, elapsed, 0, [elapsed / n]))
    store.close()
    return out


def start(workdir: Path, key_file: Path, url: str) -> ServerProcess:
    """`consent-ledger serve` from this script's source tree (PYTHONPATH), whichever checkout the venv installed:
    the same script measures an older commit when copied into its tree."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "clients")])}
    server = ServerProcess(workdir, key_file, url, operators=(OPERATOR,), env=env)
    server.start(timeout=300)
    return server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--duration", type=float, default=12.0, help="measured seconds per warm figure, split into --rounds")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--curve", type=float, default=60.0, help="seconds of cold CheckAccess after start-up")
    ap.add_argument("--bucket", type=float, default=5.0, help="seconds per point of the warm-up curve")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="1,000 patients, 10,000 entries, short windows")
    ap.add_argument("--workdir", type=Path, help="build here, or reuse the ledger already built here (kept)")
    ap.add_argument("--no-server-cost", action="store_true", help="skip the in-process server cost")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.patients, args.entries, args.duration, args.warmup, args.curve = 1000, 10_000, 6.0, 1.0, 15.0
    say = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else (lambda s: print(s, flush=True))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-access-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        key_file = workdir / "log.key"
        if not key_file.exists():
            write_new_key(key_file, "bench.test/log")
        signer = read_key(key_file)
        url = f"sqlite:///{workdir / 'ledger.db'}"
        build_s = 0.0
        if (workdir / "ledger.db").exists():
            say(f"reusing the ledger in {workdir}")
        else:
            say(f"building {args.patients:,} patients / {args.entries:,} grants in {workdir}")
            build_s = build(url, signer, args.patients, args.entries, args.batch, say)
        leaves = open_store(url).latest_checkpoint().size  # type: ignore[union-attr]
        say(f"source tree {ROOT}, commit {_commit()}, {leaves:,} leaves; load average {os.getloadavg()}")
        rng = random.Random(5)
        order = rng.sample(range(args.patients), min(args.patients, 100_000))
        cold_requests = [_request_for(p) for p in order]
        server = start(workdir, key_file, url)
        try:
            say(f"(a) cold CheckAccess from start-up, {args.curve:g} s")
            assert server.proc is not None
            cold, rates = asyncio.run(curve(server.target, server.proc.pid, cold_requests, args.curve, args.bucket, args.concurrency))
        finally:
            server.stop()
        server = start(workdir, key_file, url)
        try:
            say("(b) cold GetInclusionProof from start-up, 10 s")
            cold_p = asyncio.run(cold_proofs(server.target, leaves, 10.0, args.concurrency))
            say(f"(c) warm figures, alternating windows, {args.rounds} rounds")
            assert server.proc is not None
            results = asyncio.run(alternate(server.target, server.proc.pid, args.patients, args.duration, args.warmup, args.concurrency, args.rounds, leaves))
            trivial = results[0]
            for r, label, target in ((cold, ">= 0.15x", 0.15), (cold_p, "", None)):
                r.baseline, r.baseline_rate = trivial.name, trivial.rate
                if target is not None:
                    r.target, r.met = label, r.rate >= trivial.rate * target
            results += [cold, cold_p]
            say("(d) client verification")
            results += client_verification(server.target, verifier_key_of(signer), args.patients, 4.0)
        finally:
            server.stop()
        if not args.no_server_cost:
            results += server_cost(url, signer, args.patients, 300 if args.quick else 2000)
        points = [
            {"from_s": k * args.bucket, "to_s": (k + 1) * args.bucket, "rate": round(r, 1), "ratio": round(r / trivial.rate, 3)}
            for k, r in enumerate(rates)
        ]
        if args.json:
            print(json.dumps({"machine": machine(), "commit": _commit(), "build_seconds": build_s, "load_average": os.getloadavg(),
                              "results": [r.as_dict() for r in results], "warm_up_curve": points}, indent=2))  # fmt: skip
        else:
            print(f"\nmachine: {json.dumps(machine())}\ncommit: {_commit()}  load average: {os.getloadavg()}\n")
            print(table(results))
            print("\nwarm-up curve: cold CheckAccess (a new patient each call) after start-up")
            for pt in points:
                print(f"  {pt['from_s']:>5g}-{pt['to_s']:<5g} s  {pt['rate']:>8,.0f}/s  {pt['ratio']:.2f}x")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return (ROOT / "COMMIT").read_text().strip() if (ROOT / "COMMIT").exists() else "unknown"


if __name__ == "__main__":
    sys.exit(main())
