#!/usr/bin/env python3
"""The crash test, many times: load `consent-ledger serve`, SIGKILL it, restart it, check the log; repeat.

Each cycle is the one tests/test_crash.py runs three times (the rules are in tests/crash_support.py). This
is the long run, kept out of the test suite:

    .venv/bin/python scripts/crash_loop.py --cycles 100
    .venv/bin/python scripts/crash_loop.py --cycles 100 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/crashtest --reset-database

Without --database-url it uses a fresh SQLite file in the work directory. A database that already holds tables
is refused unless --reset-database is given (which drops every table in it). Every --full-check-every cycles,
and at the end, every checkpoint any client ever saw is proven consistent with the current tree directly
(between those, each cycle proves the checkpoints it saw, which covers the older ones by transitivity).
Exit status 0 when every cycle passed, 1 at the first broken rule (the message lists them all).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import MetaData, inspect
from sqlalchemy.pool import NullPool

from consent_ledger.storage import make_engine
from tests.crash_support import CrashCheckFailed, CrashHarness


def prepare_database(url: str, reset: bool) -> None:
    """Make sure the database is empty: drop its tables with ``reset``, else refuse a non-empty one."""
    engine = make_engine(url, poolclass=NullPool)
    try:
        tables = inspect(engine).get_table_names()
        if tables and not reset:
            raise SystemExit(f"{url} already holds tables ({', '.join(sorted(tables))}); pass --reset-database")
        if tables:
            existing = MetaData()
            existing.reflect(engine)
            existing.drop_all(engine)
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cycles", type=int, default=100, help="kill/restart cycles (default: %(default)s)")
    p.add_argument("--database-url", help="SQLAlchemy URL of an empty database (default: a new SQLite file)")
    p.add_argument("--reset-database", action="store_true", help="drop every table of --database-url first")
    p.add_argument("--submitters", type=int, default=16, help="concurrent submitting clients (default: %(default)s)")
    p.add_argument("--readers", type=int, default=1, help="concurrent reading clients (default: %(default)s)")
    p.add_argument("--max-kill-delay", type=float, default=2.0,
                   help="kill at a random moment up to this many seconds into the load (default: %(default)s)")
    p.add_argument("--max-batch", type=int, help="pass --max-batch to the server")
    p.add_argument("--full-check-every", type=int, default=10,
                   help="prove every checkpoint ever seen directly every N cycles (default: %(default)s; 0: only at the end)")
    p.add_argument("--seed", type=int, help="seed for kill delays and samples (timing is not reproducible)")
    p.add_argument("--workdir", type=Path, help="keep key, SQLite file and server logs here (default: a temp dir)")
    args = p.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="crash-loop-"))
    if args.database_url:
        prepare_database(args.database_url, args.reset_database)
    started = time.monotonic()
    totals = {"acked": 0, "unacked": 0, "unacked_present": 0, "checkpoints": 0, "entries": 0}
    passed = False
    try:
        with CrashHarness(
            workdir,
            args.database_url,
            submitters=args.submitters,
            readers=args.readers,
            max_kill_delay=args.max_kill_delay,
            max_batch=args.max_batch,
            seed=args.seed,
        ) as harness:
            print(
                f"crash loop: {args.cycles} cycles, {args.submitters} submitters, database "
                f"{harness.database_url}, seed {harness.seed}, work dir {workdir}",
                flush=True,
            )
            for i in range(1, args.cycles + 1):
                report = harness.run_cycle()
                totals["acked"] += report.acked
                totals["unacked"] += report.unacked
                totals["unacked_present"] += report.unacked_present
                totals["checkpoints"] += report.checkpoints_checked
                totals["entries"] += report.entries_verified
                print(f"[{i}/{args.cycles} {time.monotonic() - started:7.1f} s] {report.line()}", flush=True)
                if args.full_check_every and i % args.full_check_every == 0 and i != args.cycles:
                    n = harness.check_all_checkpoints()
                    print(f"    every checkpoint seen so far ({n}) proven consistent with the current tree", flush=True)
            n = harness.check_all_checkpoints(
                lambda done, total: print(f"    final check: {done}/{total} checkpoints", flush=True)
            )
            status = harness.stop()
            if status != 0:
                raise CrashCheckFailed(f"the server did not stop cleanly after the last cycle (status {status})")
        passed = True
    except CrashCheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        if passed and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"PASSED {args.cycles} cycles in {time.monotonic() - started:.0f} s: {totals['acked']} acknowledged entries, "
        f"none lost; {totals['unacked']} unacknowledged ({totals['unacked_present']} found whole, the rest absent); "
        f"{totals['entries']} entries read back and verified; {totals['checkpoints']} checkpoint consistency proofs "
        f"verified after the restarts, and all {n} distinct checkpoints re-proven against the final tree",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
