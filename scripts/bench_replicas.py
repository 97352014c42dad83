#!/usr/bin/env python3
"""Benchmark appends through 1, 2 and 3 replicas, next to the trivial RPC measured in the same run.

Not a test (issue 14). For each N in --replicas (default 1,2,3) it empties the database, starts N
`consent-ledger serve --replica` processes on it (one takes the sequencer lease, the others forward Submit to it
and follow the log from the database) and drives them from this process with grpc.aio callers:

- Submit of pre-signed consent grants from --submitters concurrent callers spread round robin over the N
  replicas (so with N = 3, two thirds of the calls are forwarded by a follower to the leader);
- the trivial RPC (gRPC health Check on one replica, 64 callers), in windows alternating with the Submit
  windows, as bench_log.py does, so load from outside the benchmark weighs on both alike.

    .venv/bin/python scripts/bench_replicas.py \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench --reset-database
    .venv/bin/python scripts/bench_replicas.py --database-url ... --reset-database --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
from collections.abc import Awaitable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from consent_ledger.core.crypto import Ed25519PrivateKey  # noqa: E402
from consent_ledger.core.request_auth import PARTY_HEADER  # noqa: E402
from consent_ledger.v1 import log_pb2, log_pb2_grpc  # noqa: E402
from scripts.bench_log import Result, Settings, machine, paired, table  # noqa: E402
from scripts.crash_loop import prepare_database  # noqa: E402
from tests.entries_support import grant_envelope  # noqa: E402
from tests.replica_support import OPERATOR, ReplicaCluster  # noqa: E402

TRIVIAL = "trivial RPC (health Check)"


class Spread:
    """Submit stubs over every replica (round robin), and the trivial RPC on the first one."""

    def __init__(self, targets: list[str], envelopes: Iterator[bytes]) -> None:
        self.channels = [grpc.aio.insecure_channel(t) for t in targets for _ in range(2)]
        self.logs = [log_pb2_grpc.LogServiceStub(c) for c in self.channels]
        self.health = health_pb2_grpc.HealthStub(self.channels[0])
        self._n = 0
        self._envs = envelopes
        self._md = ((PARTY_HEADER, OPERATOR),)

    def submit(self) -> Awaitable[object] | None:
        env = next(self._envs, None)
        if env is None:
            return None
        self._n += 1
        return self.logs[self._n % len(self.logs)].Submit(log_pb2.SubmitRequest(envelope=env), metadata=self._md)

    def trivial(self) -> Awaitable[object]:
        return self.health.Check(health_pb2.HealthCheckRequest())

    async def close(self) -> None:
        for c in self.channels:
            await c.close()


async def measure(cluster: ReplicaCluster, settings: Settings, submitters: int, envelopes: list[bytes]) -> tuple[Result, Result]:
    spread = Spread(cluster.targets(), iter(envelopes))
    try:
        n = len(cluster.targets())
        return await paired(
            (f"Submit through {n} replica{'s' if n > 1 else ''}", spread.submit, submitters),
            (TRIVIAL, spread.trivial, settings.concurrency),
            settings,
        )
    finally:
        await spread.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database-url", required=True, help="SQLAlchemy URL of a PostgreSQL database (emptied each run)")
    p.add_argument("--reset-database", action="store_true", help="drop every table of --database-url first")
    p.add_argument("--replicas", default="1,2,3", help="replica counts (default: %(default)s)")
    p.add_argument("--submitters", type=int, default=64, help="concurrent submitters (default: %(default)s)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds measured per figure (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=4, help="alternating windows (default: %(default)s)")
    p.add_argument("--warmup", type=float, default=1.5)
    p.add_argument("--envelopes", type=int, default=40_000, help="pre-signed grants per replica count")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = p.parse_args(argv)
    counts = [int(x) for x in args.replicas.split(",")]
    settings = Settings(args.duration, args.warmup, args.rounds, 0, 0, 64, (args.submitters,), 2, 1024)
    rng = random.Random(14)
    patients = [Ed25519PrivateKey.from_seed(rng.randbytes(32)) for _ in range(1024)]
    workdir = Path(tempfile.mkdtemp(prefix="consent-ledger-bench-replicas-"))
    results: list[Result] = []
    prepare_database(args.database_url, args.reset_database)
    for n in counts:
        prepare_database(args.database_url, True)
        envelopes = [grant_envelope(rng.choice(patients)) for _ in range(args.envelopes)]
        if not args.json:
            print(f"{n} replica(s): starting", flush=True)
        with ReplicaCluster(workdir / f"n{n}", args.database_url, replicas=n) as cluster:
            item, base = asyncio.run(measure(cluster, settings, args.submitters, envelopes))
        results += [item, base]
        if not args.json:
            print(f"    {item.rate:,.0f}/s (p50 {item.p50_ms:.0f} ms, p99 {item.p99_ms:.0f} ms); trivial RPC meanwhile "
                  f"{base.rate:,.0f}/s", flush=True)  # fmt: skip
    if args.json:
        print(json.dumps({"machine": machine(), "results": [r.as_dict() for r in results]}, indent=1))
    else:
        print()
        print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
