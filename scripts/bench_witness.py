#!/usr/bin/env python3
"""Benchmark the ledger with two local witnesses against none, in one run (issue 11).

Not a test. For each configuration it loads a small ledger (bench_access.build: a registered requester and
--entries grants), starts `consent-ledger serve` on it (with two `consent-ledger witness` processes and
`--witness ... --witness-quorum 2`, or without witnesses) and measures from this process:

- Submit of pre-signed grants from --submitters concurrent callers: acknowledgements/s, p50/p99 latency;
- CheckAccess from 64 callers (full evidence and receipt): checks/s;
- with witnesses: how long after its acknowledgement an entry is covered by a witnessed checkpoint (GetCheckpoint
  polled every 20 ms, in both configurations; p50/p99).

Targets: Submit not slower by more than 10% with witnesses; coverage p99 under 1 s.

    .venv/bin/python scripts/bench_witness.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "clients" / "python"), str(ROOT / "scripts")]

import grpc  # noqa: E402
from bench_access import build, measure  # noqa: E402
from bench_log import Result, closed_loop, machine, table  # noqa: E402

from consent_ledger.core.checkpoint import parse_checkpoint  # noqa: E402
from consent_ledger.keys import read_key, verifier_key_of, write_new_key  # noqa: E402
from consent_ledger.v1 import log_pb2, log_pb2_grpc  # noqa: E402
from tests.crash_support import ServerProcess  # noqa: E402
from tests.entries_support import grant_envelope  # noqa: E402


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def start_witness(workdir: Path, name: str, log_vkey: str, origin: str) -> tuple[subprocess.Popen[bytes], str, str]:
    key = workdir / f"{name}.key"
    out = subprocess.run([sys.executable, "-m", "consent_ledger.cli", "keygen", "witness", "--name", name,
                          "--out", str(key), "--json"], check=True, capture_output=True, text=True)
    vkey = json.loads(out.stdout)["verifier_key"]
    port_file = workdir / f"{name}.port"
    log = (workdir / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "consent_ledger.cli", "witness", "--listen", "127.0.0.1:0", "--key-file", str(key),
         "--database-url", f"sqlite:///{workdir / (name + '.db')}", "--log", f"{origin}={log_vkey}",
         "--port-file", str(port_file)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while not port_file.exists() or not port_file.read_text().strip():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"witness {name} did not start; see {workdir / (name + '.log')}")
        time.sleep(0.1)
    return proc, f"http://127.0.0.1:{int(port_file.read_text())}", vkey


class Submitter:
    """Pre-signed grants submitted to one server; acknowledgement times and indices; GetCheckpoint polled every
    20 ms for the witnessed size (on both servers, so that its cost weighs on both alike)."""

    def __init__(self, target: str, count: int, seed: int) -> None:
        from bench_access import patient_key

        rng = random.Random(seed)
        keys = [patient_key(1_000_000 + i) for i in range(1000)]
        self.envs = iter([grant_envelope(rng.choice(keys)) for _ in range(count)])
        self.channel = grpc.aio.insecure_channel(target)
        self.stub = log_pb2_grpc.LogServiceStub(self.channel)
        self.acks: list[tuple[float, int]] = []
        self.polls: list[tuple[float, int]] = []

    def call(self):  # type: ignore[no-untyped-def]
        env = next(self.envs, None)
        return None if env is None else self._one(env)

    async def _one(self, env: bytes) -> None:
        resp = await self.stub.Submit(log_pb2.SubmitRequest(envelope=env), metadata=(("x-consent-ledger-party", "operator"),))
        self.acks.append((asyncio.get_running_loop().time(), resp.index))

    async def poll(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            resp = await self.stub.GetCheckpoint(log_pb2.GetCheckpointRequest())
            if resp.HasField("witnessed_checkpoint"):
                body = resp.witnessed_checkpoint.note.split(b"\n\n")[0] + b"\n"
                self.polls.append((loop.time(), parse_checkpoint(body.decode()).size))
            await asyncio.sleep(0.02)

    def coverage(self) -> list[float]:
        out = []
        for t_ack, index in self.acks:
            covered = next((t for t, size in self.polls if t >= t_ack and size > index), None)
            if covered is not None:
                out.append(covered - t_ack)
        return out


async def paired_submit(targets: tuple[str, str], submitters: int, duration: float, warmup: float, rounds: int,
                        count: int) -> tuple[Result, Result, list[float]]:
    """Submit to the server without witnesses and the one with, in alternating windows."""
    plain, witnessed = Submitter(targets[0], count, 1), Submitter(targets[1], count, 2)
    stop = asyncio.Event()
    pollers = [asyncio.create_task(s.poll(stop)) for s in (plain, witnessed)]
    parts: dict[int, list[Result]] = {0: [], 1: []}
    per = duration / rounds
    for r in range(rounds):
        w = warmup if r == 0 else 0.25
        parts[0].append(await closed_loop("Submit (no witnesses)", plain.call, submitters, per, w))
        parts[1].append(await closed_loop("Submit (two witnesses, quorum 2)", witnessed.call, submitters, per, w))
    loop = asyncio.get_running_loop()
    last = max(i for _, i in witnessed.acks) if witnessed.acks else 0
    t_end = loop.time() + 10
    while (not witnessed.polls or witnessed.polls[-1][1] <= last) and loop.time() < t_end:
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*pollers)
    for s in (plain, witnessed):
        await s.channel.close()
    return Result.merge(parts[0]), Result.merge(parts[1]), witnessed.coverage()


async def paired_checks(targets: tuple[str, str], patients: int, duration: float, warmup: float,
                        rounds: int) -> tuple[Result, Result]:
    parts: dict[int, list[Result]] = {0: [], 1: []}
    for r in range(rounds):
        for k in (0, 1):
            res = (await measure(targets[k], patients, duration / rounds / 2, warmup if r == 0 else 0.25, 64))[1]
            res.name += " (two witnesses)" if k else " (no witnesses)"
            parts[k].append(res)
    return Result.merge(parts[0]), Result.merge(parts[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--submitters", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=4, help="alternating windows per figure (default: %(default)s)")
    ap.add_argument("--quick", action="store_true", help="3 s windows")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 3.0, 0.5
    say = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else (lambda s: print(s, flush=True))
    workdir = Path(tempfile.mkdtemp(prefix="bench-witness-"))
    results: list[Result] = []
    coverage_ms: dict[str, float] = {}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        key_file = workdir / "log.key"
        write_new_key(key_file, "bench.test/log")
        signer = read_key(key_file)
        servers = []
        for witnessed in (False, True):
            sub = workdir / ("with" if witnessed else "without")
            sub.mkdir()
            url = f"sqlite:///{sub / 'ledger.db'}"
            say(f"building {args.entries:,} grants ({'with' if witnessed else 'without'} witnesses)")
            build(url, signer, args.patients, args.entries, 5000, lambda s: None)
            extra: list[str] = []
            if witnessed:
                for n in ("bench-witness-1", "bench-witness-2"):
                    proc, wurl, vkey = start_witness(sub, n, verifier_key_of(signer), signer.name)
                    procs.append(proc)
                    extra += ["--witness", f"{wurl}={vkey}"]
                extra += ["--witness-quorum", "2"]
            server = ServerProcess(sub, key_file, url, operators=("operator",), extra_args=tuple(extra))
            server.start(timeout=300)
            servers.append(server)
        try:
            targets = (servers[0].target, servers[1].target)
            count = 20_000 if args.quick else 60_000
            say("Submit, alternating windows between the two servers")
            plain, wit_submit, coverage = asyncio.run(
                paired_submit(targets, args.submitters, args.duration, args.warmup, args.rounds, count)
            )
            say("CheckAccess, alternating windows between the two servers")
            plain_checks, wit_checks = asyncio.run(
                paired_checks(targets, args.patients, args.duration, args.warmup, args.rounds)
            )
            results = [plain, wit_submit, plain_checks, wit_checks]
            coverage_ms = {"p50_ms": _percentile(coverage, 0.5) * 1000, "p99_ms": _percentile(coverage, 0.99) * 1000,
                           "entries": len(coverage), "acks": wit_submit.calls}
        finally:
            for server in servers:
                server.stop()
        for base, wit in ((results[0], results[1]), (results[2], results[3])):
            wit.baseline, wit.baseline_rate = base.name, base.rate
            wit.target, wit.met = ">= 0.9x", wit.rate >= 0.9 * base.rate
        if args.json:
            print(json.dumps({"machine": machine(), "results": [r.as_dict() for r in results],
                              "coverage": coverage_ms}, indent=2))
        else:
            print(f"\nmachine: {json.dumps(machine())}\n")
            print(table(results))
            print(f"\nwitnessed-checkpoint coverage after acknowledgement: p50 {coverage_ms.get('p50_ms', float('nan')):.0f} ms, "
                  f"p99 {coverage_ms.get('p99_ms', float('nan')):.0f} ms over {coverage_ms.get('entries', 0):,} entries "
                  "(target p99 < 1000 ms)")
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
