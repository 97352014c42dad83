#!/usr/bin/env python3
"""Benchmark access checks with full evidence, next to the transport ceiling measured in the same run.

Not a test (issue 3 item 7, issue 4 item 6). It builds a ledger of --patients patients and --entries signed
grants (default 100,000 and 1,000,000) in a SQLite file through the application and storage layers (no RPCs):
grants go through the sequencer's batch integration with their consent-index rows, the consent-state map is
built in memory from the in-force sets and bulk-written, and a final batch closes the load with a StateCommit.
Then it starts `consent-ledger serve` on that file and measures from this process (same machine):

(a) the transport ceiling: gRPC health Check (a trivial unary RPC) from 64 concurrent callers;
(b) CheckAccess for random patients from 64 concurrent callers: each answer carries the decision, the evidence
    (in-force grants per selector, the registration, the StateCommit, inclusion proofs, map proofs) and a
    signed receipt;
(c) client-side verification of one decision with its evidence (ConsentClient.verify_access) on one core, with
    the verified map keys cached (the usual case: a key never changes for a log) and cold (every VRF proof of the
    answer verified again: one per selector and the party key, about 0.9 ms each);
(d) in-process server cost of one access check with and without the map proofs (the state evidence).

Targets: checks >= 1/3 of the trivial-RPC rate; client verification >= 1,000 decisions/s on one core.

    .venv/bin/python scripts/bench_access.py            # the full run (several minutes: signing 1M grants)
    .venv/bin/python scripts/bench_access.py --quick    # small sizes
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "clients" / "python"), str(ROOT / "scripts")]

import grpc  # noqa: E402
from bench_log import Result, closed_loop, machine, start_server, table  # noqa: E402
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
from consent_ledger.v1 import access_pb2, access_pb2_grpc  # noqa: E402
from consent_ledger_client import ConsentClient, LedgerClient  # noqa: E402

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
    return access_pb2.CheckAccessRequest(
        patient=patient_key(rng.randrange(patients)).public_key,
        action="access",
        purpose="CLMATTCH",
        data=[payloads.data_item_to_pb(DataItem("laboratory-results")), payloads.data_item_to_pb(DataItem("imaging"))],
    )


async def measure(target: str, patients: int, duration: float, warmup: float, concurrency: int) -> list[Result]:
    md = (("x-consent-ledger-party", REQUESTER),)
    rng = random.Random(7)
    requests = [_request(patients, rng) for _ in range(min(patients, 2000))]
    async with grpc.aio.insecure_channel(target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        access = access_pb2_grpc.AccessServiceStub(ch)
        trivial = await closed_loop("trivial RPC (health Check)", lambda: health.Check(health_pb2.HealthCheckRequest()), concurrency, duration, warmup)
        checks = await closed_loop(
            "CheckAccess, full evidence + receipt",
            lambda: access.CheckAccess(requests[rng.randrange(len(requests))], metadata=md),
            concurrency, duration, warmup,
        )  # fmt: skip
    checks.baseline, checks.baseline_rate = trivial.name, trivial.rate
    checks.target, checks.met = ">= 0.33x", checks.rate >= trivial.rate / 3
    return [trivial, checks]


def client_verification(target: str, verifier_key: str, patients: int, seconds: float) -> list[Result]:
    """Verify one stored answer over and over on this thread: evidence, map proofs (with their VRF proofs),
    re-evaluation, receipt; with the verified map keys cached, and cold (a fresh key cache for every decision)."""
    ledger = LedgerClient.connect(target, verifier_key=verifier_key, insecure=True, party_id=REQUESTER)
    # The stored answer is verified as of the moment it was asked for (decisions are made for now).
    asked_ms = time.time_ns() // 1_000_000
    client = ConsentClient(ledger, max_state_age_ms=24 * 3600 * 1000, clock_ms=lambda: asked_ms)
    req = _request(patients, random.Random(1))
    resp = ledger.call(client._access.CheckAccess, req)
    out = []
    for name, cold in (("client verification of one decision, VRF keys cached (1 core)", False),
                       ("client verification of one decision, VRF keys cold (1 core)", True)):  # fmt: skip
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            if cold:
                ledger.map_keys = vrf.VerifiedMapKeys()
            client.verify_access(req, resp)
            n += 1
        elapsed = time.perf_counter() - t0
        r = Result(name, 1, n, elapsed, 0, [elapsed / n])
        r.note = f"{len(resp.evidence)} evidence entries, {len(resp.selector_proofs)} map proofs + the party key's"
        out.append(r)
    ledger.close()
    out[0].target, out[0].met = ">= 1,000/s", out[0].rate >= 1000
    out[1].baseline, out[1].baseline_rate = out[0].name, out[0].rate
    return out


def server_cost(url: str, signer, patients: int, n: int) -> list[Result]:  # type: ignore[no-untyped-def]
    """In-process: the server's work for one check, with the map proofs and without them (evidence only)."""
    store = open_store(url)
    index = SqlConsentIndex(store)
    state = ConsentState(index, SqlMapStore(store), signer, StatePolicy(), vrf.MapKeyProver(derived_map_vrf_key(signer)))
    consents = ConsentLedger(index, state, signer)
    ledger = Ledger(store, signer, check_payload=consents.check)
    ledger.open()
    consents.attach(ledger.reader, lambda: ledger.sequencer.latest, ledger.sequencer.append, None)
    rng = random.Random(3)
    data = [DataItem("laboratory-results"), DataItem("imaging")]
    out = []
    real_proofs = state.proofs
    def party_proof_only(keys):  # type: ignore[no-untyped-def]
        keys = list(keys)  # the requester's party key comes last: its proof decides which registration is used
        return state.latest, {**{k: None for k in keys}, **real_proofs(keys[-1:])[1]}

    for name, proofs in (("server: check with map proofs", real_proofs), ("server: check, evidence only (no consent map proofs)", party_proof_only)):
        state.proofs = proofs  # type: ignore[method-assign]
        t0 = time.perf_counter()
        for _ in range(n):
            consents.check_access(REQUESTER, patient=patient_key(rng.randrange(patients)).public_key, action="access", purpose="CLMATTCH", data=data)
        elapsed = time.perf_counter() - t0
        out.append(Result(name, 1, n, elapsed, 0, [elapsed / n]))
    out[0].baseline, out[0].baseline_rate = out[1].name, out[1].rate
    store.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="1,000 patients, 10,000 entries, 3 s windows")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.patients, args.entries, args.duration, args.warmup = 1000, 10_000, 3.0, 1.0
    say = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else (lambda s: print(s, flush=True))
    workdir = Path(tempfile.mkdtemp(prefix="bench-access-"))
    try:
        key_file = workdir / "log.key"
        write_new_key(key_file, "bench.test/log")
        signer = read_key(key_file)
        url = f"sqlite:///{workdir / 'ledger.db'}"
        say(f"building {args.patients:,} patients / {args.entries:,} grants in {workdir}")
        build_s = build(url, signer, args.patients, args.entries, args.batch, say)
        say(f"built in {build_s:.0f} s; measuring the server's own cost")
        results = server_cost(url, signer, args.patients, 300 if args.quick else 2000)
        server = start_server(workdir, key_file, url)
        try:
            results += asyncio.run(measure(server.target, args.patients, args.duration, args.warmup, args.concurrency))
            results += client_verification(server.target, verifier_key_of(signer), args.patients, args.duration / 2)
        finally:
            server.stop()
        if args.json:
            print(json.dumps({"machine": machine(), "build_seconds": build_s, "results": [r.as_dict() for r in results]}, indent=2))
        else:
            print(f"\nmachine: {json.dumps(machine())}\nbuild: {build_s:.0f} s for {args.entries:,} grants\n")
            print(table(results))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
