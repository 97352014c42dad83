#!/usr/bin/env python3
"""Failover, many times: N `consent-ledger serve --replica` processes on one database, load spread over all of
them, the leader killed (SIGKILL, then restarted as a follower) or paused (SIGSTOP, then SIGCONT: it must be
fenced and step down); repeat, then check the whole log.

Each cycle is the one tests/test_replicas.py runs once (the rules are in tests/replica_support.py):

    .venv/bin/python scripts/failover_loop.py --cycles 50 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/failover --reset-database

Cycles alternate kill and pause (``--mode kill`` or ``--mode pause`` for one kind only). The failover time of a
cycle runs from the signal to another replica reporting itself the sequencer (its health,
``consent_ledger.replica.Sequencer`` SERVING). At the end: the distribution of failover times, and the whole log
read back: every acknowledged entry at its index, none twice, every checkpoint any client saw consistent with the
final tree. Exit status 0 when everything passed, 1 at the first broken rule.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.crash_loop import prepare_database  # noqa: E402
from tests.crash_support import CrashCheckFailed  # noqa: E402
from tests.replica_support import ReplicaCluster  # noqa: E402


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cycles", type=int, default=50, help="failovers (default: %(default)s)")
    p.add_argument("--database-url", required=True, help="SQLAlchemy URL of an empty PostgreSQL (or MariaDB) database")
    p.add_argument("--reset-database", action="store_true", help="drop every table of --database-url first")
    p.add_argument("--replicas", type=int, default=3, help="replica processes (default: %(default)s)")
    p.add_argument("--lease-ttl", type=float, default=2.0, help="serve --lease-ttl (default: %(default)s)")
    p.add_argument("--submitters", type=int, default=8, help="concurrent submitting clients (default: %(default)s)")
    p.add_argument("--mode", choices=("both", "kill", "pause"), default="both")
    p.add_argument("--workdir", help="where keys and server logs go (default: a new temporary directory)")
    p.add_argument("--json", help="write every cycle's figures to this file")
    args = p.parse_args(argv)
    prepare_database(args.database_url, args.reset_database)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="consent-ledger-failover-"))
    reports = []
    started = time.monotonic()
    try:
        with ReplicaCluster(workdir, args.database_url, replicas=args.replicas, lease_ttl=args.lease_ttl) as cluster:
            for n in range(args.cycles):
                kill = args.mode == "kill" or (args.mode == "both" and n % 2 == 0)
                r = cluster.kill_cycle(args.submitters) if kill else cluster.pause_cycle(args.submitters)
                reports.append(r)
                print(r.line(), flush=True)
            size = cluster.check_log()
            acked = len(cluster.record.acked)
            notes = len(cluster.record.notes)
    except CrashCheckFailed as e:
        print(f"FAILED after {len(reports)} cycles: {e}", file=sys.stderr)
        return 1
    times = [r.failover_s * 1000 for r in reports]
    pauses = [r for r in reports if r.how == "pause"]
    print(
        f"\n{len(reports)} failovers of {args.replicas} replicas (lease TTL {args.lease_ttl:g} s) in "
        f"{time.monotonic() - started:.0f} s; log of {size} entries checked: {acked} acknowledged entries in place, "
        f"{notes} checkpoints consistent with the final tree"
    )
    print(
        f"failover time ms: min {min(times):.0f}, median {statistics.median(times):.0f}, p90 {_pct(times, 90):.0f}, "
        f"max {max(times):.0f}; over 5 s: {sum(1 for t in times if t > 5000)}"
    )
    if pauses:
        print(
            f"paused leaders: {len(pauses)}, all stepped down: {all(r.old_leader_stepped_down for r in pauses)}, "
            f"batches that failed to commit on resuming: {sum(r.old_leader_fenced for r in pauses)} "
            f"(in {sum(1 for r in pauses if r.old_leader_fenced)} of them)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in reports], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
