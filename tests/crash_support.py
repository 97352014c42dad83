"""Crash testing: run `consent-ledger serve` as a process, load it, SIGKILL it, restart it, check the log.

Used by tests/test_crash.py (a few cycles) and scripts/crash_loop.py (many). Nothing here needs pytest.

The server is a development server (``--insecure``, loopback) configured with an operator and an auditor
(``--operator``, ``--auditor``); the clients name themselves in the development party header. Submitting
clients (and the checks, which resubmit) call as the operator, which may submit any patient's signed entries and
read every entry; the reader calls as the auditor, which reads every entry.

What one cycle does (docs/design.md section 2, issue 2 item 4):

1. ``submitters`` threads, each with its own verifying client (LedgerClient), submit fresh signed consent
   grants (from a pool of ``patients`` keys) while a reader thread fetches checkpoints and acknowledged
   entries. A client interceptor records every Submit the server answered (index, leaf bytes, envelope)
   *before* the client verifies it, and every signed checkpoint note any answer carried, so an
   acknowledgement that arrives just before the kill still counts.
2. After a random delay under load the server gets SIGKILL; then it is restarted on the same database.
3. Checks against the restarted server, through the verifying client:
   - no published checkpoint is larger than the restarted tree (nothing published was rolled back);
   - the tree is consistent with every checkpoint seen since the last check (consistency proofs verified by
     the client; checkpoints of earlier cycles were already proven to be prefixes of the last anchor, so by
     transitivity they are covered too; ``check_all_checkpoints`` re-proves every one of them directly);
   - every entry appended since the last check is read back and verified (inclusion and body), each is an
     envelope we sent, none twice; every acknowledged one sits at its acknowledged index with identical
     leaf bytes and body; a sample of older acknowledged entries is re-read too;
   - an unacknowledged envelope is either absent or present whole (leaf and matching body);
   - resubmitting acknowledged envelopes returns their original index as a duplicate; resubmitting the
     unacknowledged ones returns the index where they are, or a new one if they were absent.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import grpc

from consent_ledger.core import payloads
from consent_ledger.core.checkpoint import open_checkpoint
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.errors import ConsentLedgerError
from consent_ledger.core.note import parse_verifier_key
from consent_ledger_client import LedgerClient, VerifiedEntry
from tests.entries_support import grant_envelope

__all__ = [
    "CrashCheckFailed",
    "CrashHarness",
    "CycleReport",
    "ServerProcess",
    "cli_command",
]

SUBMIT_METHOD = "/consent_ledger.v1.LogService/Submit"
# The identities the harness's server is configured with (`serve --operator/--auditor`, the party header).
OPERATOR = "crash-operator"
AUDITOR = "crash-auditor"
PAGE = 256  # the server's most entries per GetEntries


class CrashCheckFailed(AssertionError):
    """The restarted log broke a durability or consistency rule; the message lists every problem found."""


def cli_command() -> list[str]:
    """How to run the `consent-ledger` command of this environment."""
    script = Path(sys.executable).with_name("consent-ledger")
    if script.exists():
        return [str(script)]
    found = shutil.which("consent-ledger")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from consent_ledger.cli import main; sys.exit(main())"]


# -- the server process -------------------------------------------------------------------------------------


class ServerProcess:
    """`consent-ledger serve` on a loopback port chosen by the kernel; its output goes to ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        key_file: Path,
        database_url: str,
        *,
        max_batch: int | None = None,
        env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
        operators: tuple[str, ...] = (),
        auditors: tuple[str, ...] = (),
        global_args: tuple[str, ...] = (),
    ) -> None:
        self.workdir = workdir
        self.global_args = global_args  # options of the command itself, before `serve` (e.g. --verbose)
        self.key_file = key_file
        self.database_url = database_url
        self.max_batch = max_batch
        self.env = env
        self.extra_args = extra_args
        self.operators = operators
        self.auditors = auditors
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.starts = 0

    @property
    def target(self) -> str:
        assert self.port is not None, "the server is not running"
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"server-{self.starts}.log"

    def start(self, timeout: float = 60.0) -> int:
        """Start the server and wait until it has written its port (it is serving by then)."""
        assert self.proc is None or self.proc.poll() is not None, "the server is already running"
        self.starts += 1
        port_file = self.workdir / "port"
        port_file.unlink(missing_ok=True)
        cmd = [
            *cli_command(),
            *self.global_args,
            "serve",
            "--key-file", str(self.key_file),
            "--database-url", self.database_url,
            "--listen", "127.0.0.1:0",
            "--insecure",
            "--port-file", str(port_file),
        ]  # fmt: skip
        for name in self.operators:
            cmd += ["--operator", name]
        for name in self.auditors:
            cmd += ["--auditor", name]
        cmd += list(self.extra_args)
        if self.max_batch is not None:
            cmd += ["--max-batch", str(self.max_batch)]
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env, cwd=self.workdir
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = port_file.read_text() if port_file.exists() else ""
            if text.endswith("\n"):  # written in one go, but not atomically: wait for the whole line
                self.port = int(text)
                return self.port
            if self.proc.poll() is not None:
                raise CrashCheckFailed(
                    f"the server exited with status {self.proc.returncode} while starting "
                    f"(start {self.starts}):\n{self.log_path.read_text(errors='replace')[-4000:]}"
                )
            time.sleep(0.02)
        self.kill()
        raise CrashCheckFailed(f"the server did not start within {timeout} s (see {self.log_path})")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a power cut of the process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.port = None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait for a graceful exit (SIGKILL after ``timeout``). Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.port = None
        return self.proc.returncode


def make_log_key(workdir: Path, name: str = "crash.test/log") -> tuple[Path, str]:
    """A log key made by `consent-ledger keygen log`; returns (key file, verifier key)."""
    key = workdir / "log.key"
    subprocess.run(
        [*cli_command(), "keygen", "log", "--name", name, "--out", str(key), "--force"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return key, key.with_name(key.name + ".pub").read_text().strip()


# -- what the clients saw -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ack:
    index: int
    leaf: bytes
    envelope: bytes


class Record:
    """Everything the clients sent and every answer the server committed to. Thread-safe.

    Recording checks two rules on the spot: a signed checkpoint for a size must always carry the same root,
    and an envelope, once acknowledged, must always be acknowledged at the same index.
    """

    def __init__(self, verifier_key: str) -> None:
        self._verifier = parse_verifier_key(verifier_key)
        self._lock = threading.Lock()
        self.sent: dict[bytes, bytes] = {}  # envelope sha256 -> envelope
        self.acked: dict[bytes, Ack] = {}  # envelope sha256 -> first acknowledgement
        self._ack_list: list[Ack] = []
        self.notes: dict[int, bytes] = {}  # tree size -> a signed checkpoint note of that size
        self.roots: dict[int, bytes] = {}
        self.unchecked_sizes: set[int] = set()  # sizes not yet proven consistent with a later anchor
        self.problems: list[str] = []

    def problem(self, text: str) -> None:
        with self._lock:
            self.problems.append(text)

    def send(self, envelope: bytes) -> bytes:
        sha = hashlib.sha256(envelope).digest()
        with self._lock:
            self.sent[sha] = envelope
        return sha

    def ack(self, envelope: bytes, index: int, leaf: bytes) -> None:
        sha = hashlib.sha256(envelope).digest()
        with self._lock:
            self.sent.setdefault(sha, envelope)
            old = self.acked.get(sha)
            if old is None:
                self.acked[sha] = Ack(index, leaf, envelope)
                self._ack_list.append(self.acked[sha])
            elif (old.index, old.leaf) != (index, leaf):
                self.problems.append(
                    f"envelope {sha.hex()[:16]} acknowledged at index {old.index}, later at {index}"
                    + ("" if old.leaf == leaf else " with other leaf bytes")
                )

    def note(self, note: bytes) -> None:
        try:
            cp = open_checkpoint(note, self._verifier)
        except ConsentLedgerError as e:
            self.problem(f"the server sent a checkpoint that does not verify: {e}")
            return
        with self._lock:
            root = self.roots.get(cp.size)
            if root is None:
                self.roots[cp.size] = cp.root_hash
                self.notes[cp.size] = note
                self.unchecked_sizes.add(cp.size)
            elif root != cp.root_hash:
                self.problems.append(f"two signed checkpoints for size {cp.size} with different roots (a fork)")

    def random_ack(self, rng: random.Random) -> Ack | None:
        with self._lock:
            return rng.choice(self._ack_list) if self._ack_list else None

    def max_size(self) -> int:
        with self._lock:
            return max(self.notes, default=0)

    def take_unchecked(self) -> dict[int, bytes]:
        with self._lock:
            out = {s: self.notes[s] for s in self.unchecked_sizes}
            self.unchecked_sizes.clear()
            return out


class _Recorder(grpc.UnaryUnaryClientInterceptor):
    """Records acknowledgements and checkpoint notes as they arrive, before the client verifies them."""

    def __init__(self, record: Record) -> None:
        self._record = record

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        outcome = continuation(client_call_details, request)
        if outcome.exception() is not None:
            return outcome
        response = outcome.result()
        method = client_call_details.method
        if isinstance(method, bytes):
            method = method.decode()
        if method == SUBMIT_METHOD:
            self._record.ack(request.envelope, response.index, response.leaf)
        if hasattr(response, "checkpoint") and response.HasField("checkpoint"):
            self._record.note(response.checkpoint.note)
        return outcome


# -- one cycle ----------------------------------------------------------------------------------------------


@dataclass
class CycleReport:
    cycle: int
    load_s: float = 0.0  # from the start of the load to the kill
    acked: int = 0  # acknowledged in this cycle
    unacked: int = 0  # sent in this cycle and never acknowledged
    unacked_present: int = 0  # ... found whole in the log after the restart
    unacked_absent: int = 0
    published_size: int = 0  # largest checkpoint any client saw before the restart
    restarted_size: int = 0
    checkpoints_checked: int = 0
    entries_verified: int = 0
    resubmitted: int = 0
    restart_s: float = 0.0
    check_s: float = 0.0

    def line(self) -> str:
        return (
            f"cycle {self.cycle}: killed after {self.load_s:.2f} s; acked {self.acked}, unacked {self.unacked} "
            f"({self.unacked_present} present, {self.unacked_absent} absent); published size "
            f"{self.published_size} -> restarted size {self.restarted_size}; {self.checkpoints_checked} "
            f"checkpoints proven consistent, {self.entries_verified} entries verified, {self.resubmitted} "
            f"resubmitted; restart {self.restart_s:.2f} s, checks {self.check_s:.2f} s"
        )


@dataclass
class CrashHarness:
    """A server process on one database, and the record of everything its clients were told."""

    workdir: Path
    database_url: str | None = None  # default: a SQLite file in workdir
    submitters: int = 16
    readers: int = 1
    max_kill_delay: float = 1.5
    seed: int | None = None
    max_batch: int | None = None
    old_sample: int = 100  # acknowledged entries of earlier cycles re-read after each restart
    resubmit_sample: int = 200  # acknowledged entries of this cycle resubmitted after each restart
    timeout: float = 15.0  # per RPC
    patients: int = 256  # grants come from this many patient keys, so the per-patient consent state stays small
    server: ServerProcess = field(init=False)
    record: Record = field(init=False)
    verifier_key: str = field(init=False)
    rng: random.Random = field(init=False)
    verified_size: int = field(init=False, default=0)  # entries [0, verified_size) were read back and checked
    cycles: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.workdir / 'ledger.db'}"
        if self.seed is None:
            self.seed = int.from_bytes(os.urandom(4), "big")
        self.rng = random.Random(self.seed)
        self._patient_keys = [Ed25519PrivateKey.from_seed(self.rng.randbytes(32)) for _ in range(self.patients)]
        key_file, self.verifier_key = make_log_key(self.workdir)
        self.record = Record(self.verifier_key)
        self.server = ServerProcess(
            self.workdir, key_file, self.database_url, max_batch=self.max_batch, operators=(OPERATOR,), auditors=(AUDITOR,)
        )

    def __enter__(self) -> Self:
        self.server.start()
        with self._client() as client:
            first = client.checkpoint()
        self.verified_size = first.checkpoint.size
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.kill()

    # clients

    @contextmanager
    def _client(self, party: str = OPERATOR) -> Iterator[LedgerClient]:
        """A verifying client calling as ``party`` (the operator: submits and reads; the auditor: reads)."""
        channel = grpc.intercept_channel(grpc.insecure_channel(self.server.target), _Recorder(self.record))
        try:
            yield LedgerClient(channel=channel, verifier_key=self.verifier_key, timeout=self.timeout, party_id=party)
        finally:
            channel.close()

    def _fail_if_problems(self, report: CycleReport | None = None) -> None:
        if self.record.problems:
            where = f"cycle {report.cycle}" if report else "final check"
            raise CrashCheckFailed(
                f"{where} failed (seed {self.seed}, server logs in {self.workdir}):\n- "
                + "\n- ".join(self.record.problems[:50])
                + (f"\n- ... and {len(self.record.problems) - 50} more" if len(self.record.problems) > 50 else "")
            )

    # the cycle

    def run_cycle(self) -> CycleReport:
        """Load, SIGKILL, restart, check. Raises CrashCheckFailed listing every broken rule."""
        self.cycles += 1
        report = CycleReport(self.cycles)
        sent_before, acked_before = set(self.record.sent), set(self.record.acked)
        killed, stop = threading.Event(), threading.Event()
        acked_this_cycle = threading.Semaphore(0)

        def submitter() -> None:
            rng = random.Random()
            with self._client() as client:
                while not stop.is_set():
                    env = grant_envelope(rng.choice(self._patient_keys))
                    sha = self.record.send(env)
                    try:
                        receipt = client.submit(env)
                    except grpc.RpcError as e:
                        if not killed.is_set():
                            self.record.problem(f"Submit failed before the kill: {e.code()} {e.details()}")
                            stop.set()
                        return
                    except ConsentLedgerError as e:
                        self.record.problem(f"the client rejected a Submit answer: {type(e).__name__}: {e}")
                        stop.set()
                        return
                    ack = self.record.acked.get(sha)
                    if receipt.duplicate or ack is None or ack.index != receipt.index:
                        self.record.problem(f"fresh envelope answered as duplicate={receipt.duplicate}")
                    acked_this_cycle.release()

        def reader() -> None:
            rng = random.Random()
            with self._client(AUDITOR) as client:
                while not stop.is_set():
                    try:
                        client.checkpoint()
                        ack = self.record.random_ack(rng)
                        if ack is not None:
                            got = client.get_entry(ack.index)
                            if got.leaf_bytes != ack.leaf:
                                self.record.problem(f"entry {ack.index} read back with other leaf bytes")
                    except grpc.RpcError as e:
                        if not killed.is_set():
                            self.record.problem(f"a read failed before the kill: {e.code()} {e.details()}")
                            stop.set()
                        return
                    except ConsentLedgerError as e:
                        self.record.problem(f"the client rejected a read: {type(e).__name__}: {e}")
                        stop.set()
                        return
                    time.sleep(0.01)

        threads = [threading.Thread(target=submitter, name=f"submitter-{i}") for i in range(self.submitters)]
        threads += [threading.Thread(target=reader, name=f"reader-{i}") for i in range(self.readers)]
        started = time.monotonic()
        for t in threads:
            t.start()
        try:
            # Under load first: wait for an acknowledgement, then kill at a random moment.
            deadline = time.monotonic() + 30
            while not acked_this_cycle.acquire(timeout=0.05):
                if stop.is_set():
                    break
                if time.monotonic() > deadline:
                    self.record.problem("no submission was acknowledged within 30 s")
                    break
            stop.wait(self.rng.uniform(0, self.max_kill_delay))
        finally:
            killed.set()
            self.server.kill()
            report.load_s = time.monotonic() - started
            stop.set()
            for t in threads:
                t.join(60)
        self._fail_if_problems(report)

        t0 = time.monotonic()
        self.server.start()
        report.restart_s = time.monotonic() - t0
        t0 = time.monotonic()
        new_sent = {sha: self.record.sent[sha] for sha in set(self.record.sent) - sent_before}
        new_acked = {sha: self.record.acked[sha] for sha in set(self.record.acked) - acked_before}
        report.acked = len(new_acked)
        report.published_size = self.record.max_size()
        self._check_restarted(report, new_sent, new_acked)
        report.check_s = time.monotonic() - t0
        self._fail_if_problems(report)
        return report

    def _check_restarted(self, report: CycleReport, new_sent: dict[bytes, bytes], new_acked: dict[bytes, Ack]) -> None:
        rec = self.record
        with self._client() as client:
            latest = client.checkpoint()
            size = latest.checkpoint.size
            report.restarted_size = size
            if report.published_size > size:
                rec.problem(
                    f"a checkpoint of size {report.published_size} was published, but the restarted log "
                    f"has only {size} entries: published entries were lost"
                )
                return
            report.checkpoints_checked = self._prove_consistent(rec.take_unchecked(), latest.note)

            # Entries appended since the last check: read back (the client verifies each), all ours, no repeats.
            found: dict[bytes, VerifiedEntry] = {}
            for entry in self._read_range(client, self.verified_size, size):
                sha = entry.leaf.envelope_sha256
                if entry.envelope is None:
                    rec.problem(f"entry {entry.index} has no body (erased?)")
                elif entry.leaf.payload_type == payloads.STATE_COMMIT:
                    # The sequencer's own entry closing a batch: it must be signed by the log's key.
                    if client.log_public_key not in entry.envelope.signers:
                        rec.problem(f"entry {entry.index} is a StateCommit not signed by the log's key")
                    report.entries_verified += 1
                    continue
                elif sha not in rec.sent:
                    rec.problem(f"entry {entry.index} holds an envelope no client sent")
                elif sha in found:
                    rec.problem(f"envelope {sha.hex()[:16]} is logged twice: at {found[sha].index} and {entry.index}")
                elif entry.envelope.raw != rec.sent[sha]:
                    rec.problem(f"entry {entry.index}: body differs from the envelope sent")
                found[sha] = entry
                report.entries_verified += 1

            for sha, ack in new_acked.items():
                entry = found.get(sha)
                if entry is None:
                    rec.problem(f"acknowledged entry {ack.index} ({sha.hex()[:16]}) is missing after the restart")
                elif entry.index != ack.index:
                    rec.problem(f"acknowledged entry {ack.index} moved to {entry.index}")
                elif entry.leaf_bytes != ack.leaf:
                    rec.problem(f"acknowledged entry {ack.index} has other leaf bytes after the restart")

            # A sample of entries acknowledged in earlier cycles: still there, byte for byte.
            older = [a for s, a in rec.acked.items() if s not in new_acked and a.index < self.verified_size]
            for ack in self.rng.sample(older, min(self.old_sample, len(older))):
                got = client.get_entry(ack.index)
                if got.leaf_bytes != ack.leaf or got.envelope is None or got.envelope.raw != ack.envelope:
                    rec.problem(f"entry {ack.index} of an earlier cycle changed after the restart")
                report.entries_verified += 1

            unacked = {sha: env for sha, env in new_sent.items() if sha not in new_acked}
            report.unacked = len(unacked)
            report.unacked_present = sum(1 for sha in unacked if sha in found)
            report.unacked_absent = report.unacked - report.unacked_present

            # Resubmit: every unacknowledged envelope, and a sample of acknowledged ones (the last ones first).
            by_index = sorted(new_acked.values(), key=lambda a: a.index)
            tail = by_index[-self.resubmit_sample // 2 :] if self.resubmit_sample else []
            rest = by_index[: len(by_index) - len(tail)]
            sample = tail + self.rng.sample(rest, min(len(rest), self.resubmit_sample - len(tail)))
            expected: list[tuple[bytes, int | None]] = [(a.envelope, a.index) for a in sample]
            expected += [(env, found[sha].index if sha in found else None) for sha, env in unacked.items()]
            self.rng.shuffle(expected)

            def resubmit(item: tuple[bytes, int | None]) -> None:
                env, index = item
                try:
                    receipt = client.submit(env)
                except (grpc.RpcError, ConsentLedgerError) as e:
                    rec.problem(f"resubmitting failed: {type(e).__name__}: {e}")
                    return
                if index is None:
                    if receipt.duplicate or receipt.index < size:
                        rec.problem(
                            f"an envelope absent after the restart was resubmitted and answered with index "
                            f"{receipt.index}, duplicate={receipt.duplicate} (log size was {size})"
                        )
                elif receipt.index != index or not receipt.duplicate:
                    rec.problem(
                        f"resubmitting the envelope at index {index} answered index {receipt.index}, "
                        f"duplicate={receipt.duplicate}"
                    )

            with ThreadPoolExecutor(max(1, self.submitters)) as pool:
                list(pool.map(resubmit, expected))
            report.resubmitted = len(expected)

            # The anchor for the next cycle: everything so far is consistent with it.
            anchor = client.checkpoint()
            report.checkpoints_checked += self._prove_consistent(rec.take_unchecked(), anchor.note)
            self.verified_size = anchor.checkpoint.size

    def _read_range(self, client: LedgerClient, start: int, end: int) -> Iterator[VerifiedEntry]:
        while start < end:
            got = client.get_entries(start, min(end, start + PAGE))
            if not got:
                self.record.problem(f"no entries returned from {start} although the log has {end}")
                return
            yield from got
            start += len(got)

    def _prove_consistent(self, notes: dict[int, bytes], latest_note: bytes) -> int:
        """Have the verifying client prove each note consistent with ``latest_note``; returns how many."""
        if not notes:
            return 0
        channel = grpc.insecure_channel(self.server.target)
        try:

            def check(item: tuple[int, bytes]) -> None:
                size, note = item
                fresh = LedgerClient(channel=channel, verifier_key=self.verifier_key, timeout=self.timeout)
                try:
                    fresh.accept_checkpoint(note)
                    fresh.accept_checkpoint(latest_note)  # fetches and verifies the consistency proof
                except (grpc.RpcError, ConsentLedgerError) as e:
                    self.record.problem(
                        f"the restarted log is not consistent with the published checkpoint of size {size}: "
                        f"{type(e).__name__}: {e}"
                    )

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(check, sorted(notes.items())))
        finally:
            channel.close()
        return len(notes)

    def check_all_checkpoints(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Prove every checkpoint any client ever saw consistent with the current one (not just by transitivity)."""
        with self._client() as client:
            latest = client.checkpoint()
        notes = dict(self.record.notes)
        items = sorted(notes.items())
        step = 2000
        for i in range(0, len(items), step):
            self._prove_consistent(dict(items[i : i + step]), latest.note)
            if progress:
                progress(min(i + step, len(items)), len(items))
        self._fail_if_problems()
        return len(items)

    def stop(self) -> int | None:
        """Stop the server gracefully; returns its exit status."""
        return self.server.stop()
