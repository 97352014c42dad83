"""Replicas as real processes: N `consent-ledger serve --replica` over one database, load spread over them, the
leader killed (SIGKILL) or paused (SIGSTOP) under that load, and the log checked afterwards.

Used by tests/test_replicas.py (a few cycles), scripts/failover_loop.py (many), scripts/cluster and
scripts/bench_replicas.py. Nothing here needs pytest.

What is checked (issue 14, item 2), through the verifying client:
- every answer's checkpoint verifies, and two checkpoints of one size never have different roots (a fork);
- an envelope is acknowledged at one index only, and no index is acknowledged for two envelopes;
- at the end, as of the largest tree any client was shown (the replica read is waited for until it follows that
  far), every acknowledged envelope is read back at its index with the same leaf and body, no envelope is
  in the log twice, and every checkpoint any client saw is proven consistent with the final tree.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.errors import ConsentLedgerError
from consent_ledger_client import LedgerClient
from tests.crash_support import AUDITOR, OPERATOR, CrashCheckFailed, Record, ServerProcess, _Recorder, make_log_key
from tests.entries_support import grant_envelope

__all__ = ["FailoverReport", "ReplicaCluster", "SEQUENCER_HEALTH", "OPERATOR", "AUDITOR"]

# service.SEQUENCER_HEALTH (not imported: the harness talks to processes only).
SEQUENCER_HEALTH = "consent_ledger.replica.Sequencer"
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


@dataclass
class FailoverReport:
    cycle: int
    how: str  # "kill" or "pause"
    old_leader: int
    new_leader: int
    failover_s: float  # from the signal to another replica reporting itself leader
    acked: int = 0
    unavailable: int = 0
    old_leader_fenced: int = 0  # batches of the paused leader that failed to commit once it resumed
    old_leader_stepped_down: bool = False

    def line(self) -> str:
        extra = (
            f", resumed old leader: {self.old_leader_fenced} batch(es) failed to commit, stepped down {self.old_leader_stepped_down}"
            if self.how == "pause"
            else ""
        )
        return (
            f"cycle {self.cycle} ({self.how}): replica {self.old_leader} -> {self.new_leader} in "
            f"{self.failover_s * 1000:.0f} ms; {self.acked} acknowledged, {self.unavailable} retried{extra}"
        )


@dataclass
class ReplicaCluster:
    """``replicas`` serve processes on ``database_url`` (an empty database), and the record of what clients saw."""

    workdir: Path
    database_url: str
    replicas: int = 3
    lease_ttl: float = 2.0
    timeout: float = 15.0  # per RPC
    follow_timeout: float = 30.0  # how long check_log waits for the replica it reads to follow the log
    patients: int = 256
    seed: int | None = None
    extra_args: tuple[str, ...] = ()
    procs: list[ServerProcess] = field(init=False)
    record: Record = field(init=False)
    verifier_key: str = field(init=False)
    cycles: int = field(init=False, default=0)
    stopped: set[int] = field(init=False, default_factory=set)  # replicas paused with SIGSTOP now

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.seed is None:
            self.seed = int.from_bytes(os.urandom(4), "big")
        self.rng = random.Random(self.seed)
        self._patient_keys = [Ed25519PrivateKey.from_seed(self.rng.randbytes(32)) for _ in range(self.patients)]
        key_file, self.verifier_key = make_log_key(self.workdir, "replicas.test/log")
        self.key_file = key_file
        self.record = Record(self.verifier_key)
        args = ("--replica", "--lease-ttl", str(self.lease_ttl), *self.extra_args)
        self.procs = []
        for i in range(self.replicas):
            d = self.workdir / f"replica-{i}"
            d.mkdir(exist_ok=True)
            self.procs.append(
                ServerProcess(d, key_file, self.database_url, operators=(OPERATOR,), auditors=(AUDITOR,), extra_args=args)
            )

    def origin(self) -> str:
        return self.verifier_key.split("+", 1)[0]

    # processes

    def start(self) -> None:
        for p in self.procs:  # one after the other: the first takes the lease and opens the log
            p.start()
        self.wait_for_leader()

    def __enter__(self) -> ReplicaCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            if p.proc is not None and p.proc.poll() is None:
                try:
                    p.proc.send_signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
            p.kill()

    def _port(self, i: int) -> int | None:
        """Replica ``i``'s port while it runs (read once: another thread may be killing it)."""
        p = self.procs[i]
        port, proc = p.port, p.proc
        return port if port and proc is not None and proc.poll() is None else None

    def running(self) -> list[int]:
        return [i for i in range(len(self.procs)) if self._port(i) is not None]

    def targets(self) -> list[str]:
        """Where the load sends new calls: every running replica but a stopped one (SIGSTOP), as a load balancer's
        health checks take a replica that stopped answering out of rotation. Calls already sent to it wait."""
        return [
            f"127.0.0.1:{port}"
            for i in range(len(self.procs))
            if i not in self.stopped and (port := self._port(i)) is not None
        ]

    def is_leader(self, i: int, timeout: float = 0.5) -> bool | None:
        """Replica ``i``'s role by its health (None: it does not answer)."""
        port = self._port(i)
        if port is None:
            return None
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            try:
                resp = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=SEQUENCER_HEALTH), timeout=timeout
                )
            except grpc.RpcError:
                return None
        return resp.status == health_pb2.HealthCheckResponse.SERVING

    def wait_for_leader(self, among: Callable[[int], bool] = lambda i: True, timeout: float = 30.0) -> int:
        """The one replica (of those ``among`` allows) that reports itself leader; waits for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leaders = [i for i in self.running() if among(i) and self.is_leader(i)]
            if len(leaders) == 1:
                return leaders[0]
            time.sleep(0.02)
        raise CrashCheckFailed(f"no single leader within {timeout} s (logs in {self.workdir})")

    def wait_until_follower(self, i: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_leader(i, timeout=2.0) is False:
                return
            time.sleep(0.05)
        raise CrashCheckFailed(f"replica {i} did not step down within {timeout} s")

    # clients

    @contextmanager
    def client(self, i: int | None = None, party: str = OPERATOR, record: bool = True) -> Iterator[LedgerClient]:
        target = self.procs[i].target if i is not None else random.choice(self.targets())
        channel: grpc.Channel = grpc.insecure_channel(target)
        if record:
            channel = grpc.intercept_channel(channel, _Recorder(self.record))
        try:
            yield LedgerClient(channel=channel, verifier_key=self.verifier_key, timeout=self.timeout, party_id=party)
        finally:
            channel.close()

    def envelope(self, rng: random.Random) -> bytes:
        return grant_envelope(rng.choice(self._patient_keys))

    @contextmanager
    def load(self, submitters: int = 8) -> Iterator[dict[str, int]]:
        """Submitters spreading fresh grants over every running replica (a new replica per call) until the block
        ends. Failures with UNAVAILABLE or a deadline (a failover) are counted; anything else is a problem."""
        stop = threading.Event()
        counts = {"acked": 0, "unavailable": 0}
        lock = threading.Lock()

        def submitter(n: int) -> None:
            rng = random.Random(f"{self.seed}-{self.cycles}-{n}")
            while not stop.is_set():
                targets = self.targets()
                if not targets:
                    time.sleep(0.05)
                    continue
                env = self.envelope(rng)
                self.record.send(env)
                channel = grpc.intercept_channel(grpc.insecure_channel(rng.choice(targets)), _Recorder(self.record))
                try:
                    LedgerClient(channel=channel, verifier_key=self.verifier_key, timeout=self.timeout,
                                 party_id=OPERATOR).submit(env)  # fmt: skip
                    with lock:
                        counts["acked"] += 1
                except grpc.RpcError as e:
                    if e.code() not in RETRYABLE:
                        self.record.problem(f"Submit failed: {e.code()} {e.details()}")
                    with lock:
                        counts["unavailable"] += 1
                except ConsentLedgerError as e:
                    self.record.problem(f"an answer did not verify: {type(e).__name__}: {e}")
                finally:
                    channel.close()

        with ThreadPoolExecutor(submitters) as pool:
            futures = [pool.submit(submitter, n) for n in range(submitters)]
            try:
                yield counts
            finally:
                stop.set()
                for f in futures:
                    f.result()

    def wait_for_acks(self, counts: dict[str, int], more: int, timeout: float = 30.0) -> None:
        target = counts["acked"] + more
        deadline = time.monotonic() + timeout
        while counts["acked"] < target:
            if time.monotonic() > deadline:
                raise CrashCheckFailed(
                    f"fewer than {more} acknowledgements within {timeout} s ({counts}); the replicas' logs end:\n"
                    + _log_tails(self.procs)
                )
            time.sleep(0.02)

    # failover cycles

    def kill_cycle(self, submitters: int = 8, settle: int = 20) -> FailoverReport:
        """Under load: SIGKILL the leader, measure until another replica is leader, restart the killed one (as a
        follower), and load on until ``settle`` more acknowledgements."""
        self.cycles += 1
        old = self.wait_for_leader()
        with self.load(submitters) as counts:
            self.wait_for_acks(counts, settle)
            t0 = time.monotonic()
            self.procs[old].kill()
            new = self.wait_for_leader(lambda i: i != old)
            failover = time.monotonic() - t0
            self.wait_for_acks(counts, settle)
            self.procs[old].start()
            self.wait_for_acks(counts, settle)
        self._fail_if_problems()
        return FailoverReport(self.cycles, "kill", old, new, failover, counts["acked"], counts["unavailable"])

    def pause_cycle(self, submitters: int = 8, settle: int = 20) -> FailoverReport:
        """Under load: SIGSTOP the leader, measure until another one is leader, load on through it, SIGCONT the
        old leader and wait until it reports itself a follower (its batches refused by the fencing token)."""
        self.cycles += 1
        old = self.wait_for_leader()
        proc = self.procs[old]
        assert proc.proc is not None
        before = _fence_lines(proc.log_path)
        with self.load(submitters) as counts:
            self.wait_for_acks(counts, settle)
            t0 = time.monotonic()
            self.stopped.add(old)
            proc.proc.send_signal(signal.SIGSTOP)
            new = self.wait_for_leader(lambda i: i != old)
            failover = time.monotonic() - t0
            self.wait_for_acks(counts, settle)
            proc.proc.send_signal(signal.SIGCONT)
            self.stopped.discard(old)
            self.wait_until_follower(old)
            # Calls that went to the paused replica were waiting (up to their 15 s timeout): give the load time.
            self.wait_for_acks(counts, settle, timeout=60)
        self._fail_if_problems()
        fenced, stepped = _fence_lines(proc.log_path)
        return FailoverReport(
            self.cycles, "pause", old, new, failover, counts["acked"], counts["unavailable"],
            fenced - before[0], stepped > before[1],
        )  # fmt: skip

    # checks

    def _fail_if_problems(self) -> None:
        if self.record.problems:
            raise CrashCheckFailed(
                f"seed {self.seed}, logs in {self.workdir}:\n- " + "\n- ".join(self.record.problems[:50])
            )

    def check_log(self, reader: int | None = None) -> int:
        """Read the whole log back through a verifying client, through replica ``reader`` (default: one at
        random), and check it against every acknowledgement and checkpoint the clients saw (see the module
        docstring). Returns the tree size checked."""
        by_index: dict[int, bytes] = {}
        for sha, ack in self.record.acked.items():
            other = by_index.setdefault(ack.index, sha)
            if other != sha:
                self.record.problem(f"index {ack.index} acknowledged for two envelopes")
        # The log is read through one replica, a follower as likely as the leader. A follower's view trails the
        # database by its poll interval (and more under load): read at once after the load, it may not hold the
        # last batches yet, and an acknowledged entry past its view would look lost although it is in the
        # database. So the log is read as of the largest tree any client was shown (checkpoint or acknowledged
        # index), waiting for the replica to follow that far; one that never does is a problem of its own.
        needed = max([0, *self.record.notes, *(ack.index + 1 for ack in self.record.acked.values())])
        if reader is None:
            reader = random.choice(self.running())
        with self.client(reader, record=False, party=AUDITOR) as c:
            latest = c.checkpoint()
            first = latest.checkpoint.size
            deadline = time.monotonic() + self.follow_timeout
            while latest.checkpoint.size < needed and time.monotonic() < deadline:
                time.sleep(0.05)
                latest = c.checkpoint()
            size = latest.checkpoint.size
            print(f"check_log: read through replica {reader} (leader: {self.is_leader(reader)}), which served "
                  f"{first} entries at first; clients were shown {needed}; read {size}")  # fmt: skip
            if size < needed:
                self.record.problem(
                    f"replica {reader} still serves a log of {size} entries {self.follow_timeout:g} s after clients "
                    f"were shown one of {needed}: it does not follow the log"
                )
            seen: dict[bytes, int] = {}
            start = 0
            while start < size:
                got = c.get_entries(start, min(size, start + 256))
                for e in got:
                    if e.envelope is None:
                        continue
                    sha = e.leaf.envelope_sha256
                    if sha in seen:
                        self.record.problem(f"envelope {sha.hex()[:16]} is in the log twice ({seen[sha]}, {e.index})")
                    seen[sha] = e.index
                    ack = self.record.acked.get(sha)
                    if ack is not None and (ack.index, ack.leaf) != (e.index, e.leaf_bytes):
                        self.record.problem(f"envelope acknowledged at {ack.index} is at {e.index}")
                start += len(got)
            for sha, ack in self.record.acked.items():
                if sha not in seen:
                    self.record.problem(f"acknowledged entry {ack.index} is missing from the final log")
        notes = dict(self.record.notes)
        channel = grpc.insecure_channel(self.procs[reader].target)  # a replica known to hold the whole tree
        try:

            def check(item: tuple[int, bytes]) -> None:
                n, note = item
                fresh = LedgerClient(channel=channel, verifier_key=self.verifier_key, timeout=self.timeout)
                try:
                    fresh.accept_checkpoint(note)
                    fresh.accept_checkpoint(latest.note)
                except (grpc.RpcError, ConsentLedgerError) as e:
                    self.record.problem(f"checkpoint of size {n} is not consistent with the final tree: {e}")

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(check, sorted(notes.items())))
        finally:
            channel.close()
        self._fail_if_problems()
        return size


def _fence_lines(log: Path) -> tuple[int, int]:
    """(batches that failed to commit, step-downs) in a replica's log. A batch of a paused leader fails either on
    the fence (the lease row's token moved) or because the database ended its transaction, left idle past the
    lease's time to live, while the process was stopped."""
    text = log.read_text(errors="replace") if log.exists() else ""
    failed = text.count("the database refused a batch") + text.count("submissions failed")
    return failed, text.count("steps down as sequencer")


def _log_tails(procs: list[ServerProcess], lines: int = 15) -> str:
    out = []
    for i, p in enumerate(procs):
        text = p.log_path.read_text(errors="replace") if p.log_path.exists() else ""
        tail = [x for x in text.splitlines() if "WITHOUT TLS" not in x][-lines:]
        out.append(f"replica {i} ({p.log_path}):\n  " + "\n  ".join(tail))
    return "\n".join(out)
