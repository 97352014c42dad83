"""A local replica set to try: N `consent-ledger serve --replica` processes on one PostgreSQL database, and a
client that spreads calls over them. Run through scripts/cluster (which makes the environment first).

    scripts/cluster --database-url postgresql+psycopg://postgres@127.0.0.1:5432/ledger
    scripts/cluster --start-postgres            # initdb + pg_ctl a throwaway PostgreSQL in --dir (not as root)
    scripts/cluster ... --kill-leader-after 10  # SIGKILL the leader after 10 s, to watch the failover

Every replica serves every RPC; the one holding the sequencer lease integrates (health service
``consent_ledger.replica.Sequencer`` SERVING), the others forward submissions to it. The client submits a signed
consent grant through each replica in turn, verifies every answer, and prints which replica answered, its role,
the index and the verified checkpoint. Kill the leader (the pid is printed) and watch another one take over.
Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from consent_ledger.core import payloads  # noqa: E402
from consent_ledger.core.crypto import Ed25519PrivateKey  # noqa: E402
from consent_ledger.core.envelope import sign_envelope  # noqa: E402
from consent_ledger_client import LedgerClient  # noqa: E402

SEQUENCER_HEALTH = "consent_ledger.replica.Sequencer"
OPERATOR = "operator"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_postgres(d: Path) -> tuple[str, subprocess.Popen[bytes] | None]:
    """A throwaway PostgreSQL cluster in ``d`` (initdb, pg_ctl): its URL."""
    if os.geteuid() == 0:
        raise SystemExit("PostgreSQL does not run as root: pass --database-url of a running server instead")
    for tool in ("initdb", "pg_ctl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not on PATH: pass --database-url of a running PostgreSQL instead")
    data = d / "pgdata"
    if not data.exists():
        subprocess.run(["initdb", "-D", str(data), "-U", "postgres", "--auth=trust"], check=True, stdout=subprocess.DEVNULL)
    port = _free_port()
    subprocess.run(
        ["pg_ctl", "-D", str(data), "-l", str(d / "postgres.log"), "-o", f"-p {port} -k {d} -h 127.0.0.1", "-w", "start"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", None


def stop_postgres(d: Path) -> None:
    subprocess.run(["pg_ctl", "-D", str(d / "pgdata"), "-m", "fast", "stop"], stdout=subprocess.DEVNULL, check=False)


class Replica:
    def __init__(self, n: int, d: Path, cli: str, key: Path, url: str, ttl: float) -> None:
        self.n, self.d, self.cli, self.key, self.url, self.ttl = n, d, cli, key, url, ttl
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.d / f"replica-{self.n}.log", "ab")
        self.proc = subprocess.Popen(
            [self.cli, "serve", "--replica", "--insecure", "--key-file", str(self.key), "--database-url", self.url,
             "--listen", self.target, "--operator", OPERATOR, "--auditor", "auditor", "--lease-ttl", str(self.ttl)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def role(self) -> str:
        if not self.alive():
            return "down"
        with grpc.insecure_channel(self.target) as ch:
            try:
                r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=SEQUENCER_HEALTH), timeout=1)
            except grpc.RpcError:
                return "starting"
        return "leader" if r.status == health_pb2.HealthCheckResponse.SERVING else "follower"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database-url", default=os.environ.get("CONSENT_LEDGER_CLUSTER_DATABASE_URL"),
                   help="a PostgreSQL database for the log (or $CONSENT_LEDGER_CLUSTER_DATABASE_URL)")
    p.add_argument("--start-postgres", action="store_true", help="start a throwaway PostgreSQL in --dir instead")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--dir", default=".consent-ledger/cluster", help="keys, logs (default: %(default)s)")
    p.add_argument("--lease-ttl", type=float, default=2.0)
    p.add_argument("--interval", type=float, default=0.5, help="seconds between the client's calls")
    p.add_argument("--kill-leader-after", type=float, metavar="SECONDS", help="SIGKILL the leader once, after this long")
    p.add_argument("--restart", action="store_true", help="restart a replica that died (as a follower)")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    args = p.parse_args(argv)
    d = Path(args.dir).resolve()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    cli = str(Path(sys.executable).with_name("consent-ledger"))
    url = args.database_url
    if args.start_postgres:
        url, _ = start_postgres(d)
    if not url:
        raise SystemExit("give --database-url (PostgreSQL) or --start-postgres")
    key = d / "log.key"
    if not key.exists():
        subprocess.run([cli, "keygen", "log", "--name", "cluster.example/log", "--out", str(key)], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    verifier = key.with_name("log.key.pub").read_text().strip()
    replicas = [Replica(i, d, cli, key, url, args.lease_ttl) for i in range(args.replicas)]
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for r in replicas:
            r.start()
            time.sleep(0.5)
        deadline = time.monotonic() + 60
        while any(r.role() in ("starting",) for r in replicas) and time.monotonic() < deadline:
            time.sleep(0.2)
        print(f"{len(replicas)} replicas on {url.split('@')[-1]} (logs in {d}):")
        for r in replicas:
            print(f"  replica {r.n}  {r.target}  pid {r.proc.pid if r.proc else '-'}  {r.role()}")
        print("the client submits a signed grant through each replica in turn; kill the leader's pid to watch the "
              "failover (Ctrl-C stops everything)\n", flush=True)  # fmt: skip
        started = time.monotonic()
        killed = False
        patient = Ed25519PrivateKey.generate()
        n = 0
        last_leader = None
        while not stop and (args.duration is None or time.monotonic() - started < args.duration):
            roles = {r.n: r.role() for r in replicas}
            leader = next((i for i, role in roles.items() if role == "leader"), None)
            if leader != last_leader:
                print(f"[{time.monotonic() - started:6.1f}s] leader: "
                      f"{'none' if leader is None else f'replica {leader}'}", flush=True)  # fmt: skip
                last_leader = leader
            if args.kill_leader_after and not killed and leader is not None and time.monotonic() - started >= args.kill_leader_after:
                victim = replicas[leader]
                assert victim.proc is not None
                print(f"[{time.monotonic() - started:6.1f}s] kill -9 {victim.proc.pid} (replica {leader}, the leader)", flush=True)
                victim.proc.kill()
                killed = True
            if args.restart:
                for r in replicas:
                    if r.proc is not None and r.proc.poll() is not None:
                        print(f"[{time.monotonic() - started:6.1f}s] restarting replica {r.n}", flush=True)
                        r.start()
            r = replicas[n % len(replicas)]
            n += 1
            if r.alive():
                payload = payloads.build_grant(patient=patient.public_key, grantee=f"org:hospital-{n}", actions=["access"],
                                               purposes=["TREAT"], data_classes=["laboratory-results"])  # fmt: skip
                env = sign_envelope(payloads.CONSENT_GRANT, payload, [patient])
                t0 = time.monotonic()
                with grpc.insecure_channel(r.target) as ch:
                    client = LedgerClient(channel=ch, verifier_key=verifier, party_id=OPERATOR, timeout=15)
                    try:
                        receipt = client.submit(env)
                        print(f"[{t0 - started:6.1f}s] via replica {r.n} ({roles[r.n]:8}): index {receipt.entry.index}, "
                              f"checkpoint of size {receipt.entry.checkpoint.size} verified, "
                              f"{(time.monotonic() - t0) * 1000:.0f} ms", flush=True)  # fmt: skip
                    except grpc.RpcError as e:
                        print(f"[{t0 - started:6.1f}s] via replica {r.n}: {e.code().name}: {e.details()}", flush=True)
            time.sleep(args.interval)
    finally:
        for r in replicas:
            if r.alive() and r.proc is not None:
                r.proc.send_signal(signal.SIGTERM)
        for r in replicas:
            if r.proc is not None:
                try:
                    r.proc.wait(15)
                except subprocess.TimeoutExpired:
                    r.proc.kill()
        if args.start_postgres:
            stop_postgres(d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
