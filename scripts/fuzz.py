#!/usr/bin/env python3
"""The long fuzz run, kept out of the test suite: the hypothesis fuzz tests with many examples, then atheris.

    .venv/bin/python scripts/fuzz.py                       # the defaults below: well over 100,000 inputs
    .venv/bin/python scripts/fuzz.py --examples 500 --rpc-examples 200 --atheris-runs 2000   # a quick one

Three parts, each counted from what the tools themselves report (test cases hypothesis ran, runs libFuzzer did):
1. tests/test_parser_fuzz.py (parsers and verifiers of the core and the client's offline documents) with
   CONSENT_LEDGER_FUZZ_EXAMPLES=--examples per test;
2. tests/test_rpc_fuzz.py (hostile requests to a real server: never INTERNAL or UNKNOWN, the log's checkpoint
   unchanged after every rejected input) with --rpc-examples per test;
3. if atheris is installed (`pip install -e '.[fuzz]'`), scripts/fuzz_atheris.py for --atheris-runs runs per
   target, coverage-guided (--atheris-jobs targets at a time).
Prints progress and a summary table; exit status 0 when nothing failed. How to reproduce a failure is in
docs/fuzzing.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_STATS_TEST = re.compile(r"^(tests/\S+::\S+):$")
_STATS_COUNT = re.compile(r"- (\d+) passing, (\d+) failing")
_ATHERIS_DONE = re.compile(r"Done (\d+) runs in (\d+) second")


@dataclass
class Part:
    name: str
    inputs: int
    seconds: float
    ok: bool
    detail: str = ""


def _hypothesis(name: str, test_file: str, examples: int, extra: Sequence[str]) -> list[Part]:
    """Run one hypothesis test file; one Part per test, counted from --hypothesis-show-statistics."""
    print(f"==> {name}: {test_file}, {examples} examples per test", flush=True)
    env = {**os.environ, "CONSENT_LEDGER_FUZZ_EXAMPLES": str(examples)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--hypothesis-show-statistics",
           test_file, *extra]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - start
    counts: dict[str, int] = {}
    current = None
    for line in proc.stdout.splitlines():
        if m := _STATS_TEST.match(line.strip()):
            current = m.group(1)
        elif (m := _STATS_COUNT.search(line)) and current:
            counts[current] = counts.get(current, 0) + int(m.group(1)) + int(m.group(2))
    failed = {line.split(" ")[1] for line in proc.stdout.splitlines() if line.startswith("FAILED ")}
    if proc.returncode != 0:
        print(proc.stdout[-20000:], proc.stderr[-5000:], sep="\n", flush=True)
    parts = [
        Part(f"{name} {test.split('::', 1)[1]}", n, 0.0, test not in failed) for test, n in sorted(counts.items())
    ]
    if proc.returncode != 0 and not failed:
        parts.append(Part(f"{name} (pytest exit {proc.returncode})", 0, 0.0, False, "see the output above"))
    total = sum(p.inputs for p in parts)
    print(f"    {len(parts)} tests, {total:,} inputs in {seconds:.0f} s, "
          f"{'ok' if proc.returncode == 0 else 'FAILED'}", flush=True)  # fmt: skip
    if parts:
        parts[0].seconds = seconds  # the file's time, reported once
    return parts


def _atheris_target(target: str, runs: int) -> Part:
    cmd = [sys.executable, str(ROOT / "scripts" / "fuzz_atheris.py"), target, f"-runs={runs}", "-print_final_stats=1"]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.monotonic() - start
    m = _ATHERIS_DONE.search(proc.stderr)
    done = int(m.group(1)) if m else 0
    ok = proc.returncode == 0 and m is not None
    detail = ""
    if not ok:
        crash = re.search(r"Test unit written to (\S+)", proc.stderr)
        detail = crash.group(1) if crash else f"exit {proc.returncode}"
        print(f"--- atheris {target} failed ---\n{proc.stderr[-8000:]}", flush=True)
    cov = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)", proc.stderr)
    reached = f" (coverage: {cov[-1][0]} edges, {cov[-1][1]} features, corpus {cov[-1][2]})" if cov else ""
    print(f"    atheris {target}: {done:,} runs in {seconds:.0f} s{reached}, {'ok' if ok else 'FAILED ' + detail}",
          flush=True)  # fmt: skip
    return Part(f"atheris {target}", done, seconds, ok, detail)


def _atheris(runs: int, jobs: int, targets: Sequence[str]) -> list[Part]:
    print(f"==> atheris: {len(targets)} targets, {runs:,} runs each, {jobs} at a time", flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda t: _atheris_target(t, runs), targets))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=3000, help="hypothesis examples per parser fuzz test")
    ap.add_argument("--rpc-examples", type=int, default=5000, help="hypothesis examples per RPC fuzz test")
    ap.add_argument("--atheris-runs", type=int, default=50_000, help="atheris runs per target (0: skip)")
    ap.add_argument("--atheris-jobs", type=int, default=2, help="atheris targets run at the same time")
    ap.add_argument("--targets", nargs="*", help="atheris targets (default: all)")
    ap.add_argument("--skip-parsers", action="store_true")
    ap.add_argument("--skip-rpc", action="store_true")
    args = ap.parse_args()

    from tests.fuzz_support import TARGETS

    start = time.monotonic()
    parts: list[Part] = []
    if not args.skip_parsers:
        parts += _hypothesis("parsers", "tests/test_parser_fuzz.py", args.examples, [])
    if not args.skip_rpc:
        # Only the generated tests: the fixed page-token cases are not fuzzing.
        parts += _hypothesis("rpc", "tests/test_rpc_fuzz.py", args.rpc_examples, ["-k", "fuzz"])
    if args.atheris_runs > 0:
        if importlib.util.find_spec("atheris") is None:
            print("==> atheris: not installed (pip install -e '.[fuzz]'), skipped", flush=True)
        else:
            parts += _atheris(args.atheris_runs, args.atheris_jobs, args.targets or sorted(TARGETS))
    elapsed = time.monotonic() - start

    print("\n==> summary")
    width = max((len(p.name) for p in parts), default=10)
    for p in parts:
        print(f"  {p.name:{width}}  {p.inputs:>10,}  {'ok' if p.ok else 'FAILED ' + p.detail}")
    by_kind: dict[str, int] = {}
    for p in parts:
        kind = p.name.split(" ", 1)[0]
        by_kind[kind] = by_kind.get(kind, 0) + p.inputs
    failures = [p for p in parts if not p.ok]
    print("  " + ", ".join(f"{k}: {n:,}" for k, n in by_kind.items()))
    print(f"  total: {sum(by_kind.values()):,} generated inputs in {elapsed:.0f} s; "
          f"{len(failures)} failing part(s)")  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
