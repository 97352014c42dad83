"""`consent-ledger demo`: a real server on a fresh SQLite file, and a short story told through the verifying
client, printing what was verified at each step.

The story is a list of small step functions (STORY) that share one DemoContext. A later story (access
decisions, say) adds its steps to the list or plays its own list with `play`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import os
import shlex
import shutil
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from consent_ledger_client import LedgerClient, SubmitReceipt

from consent_ledger import presentation as show
from consent_ledger.core import payloads
from consent_ledger.core.envelope import sign_envelope
from consent_ledger.core.note import Signer
from consent_ledger.keys import read_key, verifier_key_of, write_new_key
from consent_ledger.service import RunningService, ServiceConfig, start_service

DEMO_ORIGIN = "demo.consent-ledger.local/log"
DEFAULT_PORT = 50051
PORTS_TO_TRY = 50
MS_PER_DAY = 86_400_000

HOSPITAL = "org:hospital-1"
INSURER = "org:insurer-1"


@dataclass
class DemoContext:
    """What the steps share: where things are, the client, and what earlier steps produced."""

    workdir: Path
    target: str
    log_key_file: Path
    patient_key_file: Path
    state_file: Path
    patient: Signer
    client: LedgerClient
    write: Callable[[str], None] = print
    consent_ids: dict[str, str] = field(default_factory=dict)
    indices: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Path] = field(default_factory=dict)

    def say(self, text: str = "") -> None:
        for line in text.splitlines() or [""]:
            self.write(f"    {line}" if line else "")


Step = Callable[[DemoContext], None]


def _now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


def _submit(ctx: DemoContext, name: str, payload_type: str, payload: bytes) -> SubmitReceipt:
    """Sign with the patient's key, submit through the verifying client, and report what it checked."""
    previous = ctx.client.last_checkpoint
    receipt = ctx.client.submit(sign_envelope(payload_type, payload, [ctx.patient.private_key]))
    ctx.consent_ids[name] = payloads.consent_id(payload)
    ctx.indices[name] = receipt.index
    ctx.say(
        f"signed a {show.kind_name(payload_type)} with {ctx.patient.name}'s key and submitted it\n"
        f"index {receipt.index}, consent id {ctx.consent_ids[name]}, checkpoint size {receipt.entry.checkpoint.size}"
    )
    ctx.say(show.entry_verification(receipt.entry, previous))
    return receipt


def _save_note(ctx: DemoContext, name: str, note: bytes) -> Path:
    path = ctx.workdir / f"{name}.note"
    path.write_bytes(note)
    ctx.notes[name] = path
    return path


# -- the story ----------------------------------------------------------------------------------------------


def grant_hospital(ctx: DemoContext) -> None:
    """Alice grants Hospital One TREAT access to her laboratory results and imaging."""
    now = _now_ms()
    payload = payloads.build_grant(
        patient=ctx.patient.public_key,
        grantee=HOSPITAL,
        actions=["access"],
        purposes=["TREAT"],
        data_classes=["laboratory-results", "imaging"],
        validity=payloads.Period(now, now + 365 * MS_PER_DAY),
        legal_basis=payloads.LegalBasis(code="PIPL-29", text="consent of the individual"),
        issued_at_ms=now,
    )
    receipt = _submit(ctx, "hospital", payloads.CONSENT_GRANT, payload)
    path = _save_note(ctx, "checkpoint-first", receipt.note)
    ctx.say(f"kept this first signed checkpoint (size {receipt.entry.checkpoint.size}) in {_show_path(path)}")


def grant_insurer(ctx: DemoContext) -> None:
    """Alice grants Insurer One access to her billing records, for payment only, for 90 days."""
    now = _now_ms()
    payload = payloads.build_grant(
        patient=ctx.patient.public_key,
        grantee=INSURER,
        actions=["access", "use"],
        purposes=["HPAYMT"],
        data_classes=["coverage-and-billing"],
        validity=payloads.Period(now, now + 90 * MS_PER_DAY),
        issued_at_ms=now,
    )
    _submit(ctx, "insurer", payloads.CONSENT_GRANT, payload)


def show_checkpoint(ctx: DemoContext) -> None:
    """Anyone (a witness, an auditor) fetches the latest checkpoint."""
    previous = ctx.client.last_checkpoint
    verified = ctx.client.checkpoint()
    cp = verified.checkpoint
    ctx.say("the signed note, as served:")
    ctx.say("  " + verified.note.decode("utf-8").rstrip("\n").replace("\n", "\n  "))
    ctx.say(
        f"verified: signature by {cp.origin} with the pinned log key; {show.consistency_phrase(previous, cp)}\n"
        f"root hash {base64.b64encode(cp.root_hash).decode('ascii')} commits to all {cp.size} entries"
    )


def fetch_entry(ctx: DemoContext) -> None:
    """Hospital One fetches entry 0 (Alice's consent for it) and checks it against the log."""
    previous = ctx.client.last_checkpoint
    entry = ctx.client.get_entry(ctx.indices["hospital"])
    ctx.say("\n".join(show.describe_entry(entry)))
    ctx.say(show.entry_verification(entry, previous))


def revoke_insurer(ctx: DemoContext) -> None:
    """Alice changes her mind and revokes the insurer's consent."""
    payload = payloads.build_revocation(
        patient=ctx.patient.public_key, consent_id=ctx.consent_ids["insurer"], reason="changed insurer"
    )
    _submit(ctx, "revocation", payloads.CONSENT_REVOCATION, payload)
    ctx.say("the grant stays in the log (nothing is ever deleted); the revocation ends it from now on")


def check_consistency(ctx: DemoContext) -> None:
    """A witness holding the first checkpoint checks that the log only grew since."""
    latest = ctx.client.checkpoint().checkpoint
    first_note = ctx.notes["checkpoint-first"].read_bytes()
    # The client verifies the old note's signature and a consistency proof from its size to the latest.
    first = ctx.client.accept_checkpoint(first_note)
    ctx.say(
        f"first checkpoint: size {first.size}; latest checkpoint: size {latest.size}\n"
        f"verified: both signed by {latest.origin}; the consistency proof from size {first.size} to size "
        f"{latest.size} holds, so the log of size {latest.size} is an append-only extension of the one of size "
        f"{first.size}: nothing was changed or removed"
    )


STORY: list[Step] = [grant_hospital, grant_insurer, show_checkpoint, fetch_entry, revoke_insurer, check_consistency]


def play(ctx: DemoContext, steps: Sequence[Step] = STORY) -> None:
    """Run the steps in order, each under a numbered heading taken from its docstring."""
    for number, step in enumerate(steps, 1):
        title = (step.__doc__ or step.__name__).strip().splitlines()[0].rstrip(".")
        ctx.write("")
        ctx.write(f"[{number}/{len(steps)}] {title}")
        step(ctx)


# -- around the story ---------------------------------------------------------------------------------------


def _show_path(path: Path) -> str:
    """A path as the user should type it: relative to the current directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def cli_command() -> str:
    """How to invoke the CLI from the user's shell (it may not be on PATH when run through scripts/demo)."""
    exe = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    on_path = shutil.which("consent-ledger")
    if exe is not None and exe.name == "consent-ledger" and exe.exists():
        if on_path and Path(on_path).resolve() == exe.resolve():
            return "consent-ledger"
        return shlex.quote(_show_path(exe))
    if on_path:
        return "consent-ledger"
    return f"{shlex.quote(sys.executable)} -m consent_ledger.cli"


def try_it_commands(ctx: DemoContext) -> list[str]:
    """Copy-pasteable commands against the running demo server."""
    q = shlex.quote
    base = cli_command()
    conn = (
        f"--server {ctx.target} --insecure --log-key-file {q(_show_path(ctx.log_key_file))} "
        f"--state {q(_show_path(ctx.state_file))}"
    )
    key = f"--key {q(_show_path(ctx.patient_key_file))}"
    first = ctx.notes.get("checkpoint-first")
    cmds = [
        f"{base} checkpoint {conn}",
        f"{base} entries 0 10 {conn}",
        f"{base} get {ctx.indices.get('hospital', 0)} {conn}",
        (
            f"{base} grant {key} --grantee role:research --action use --purpose HRESCH "
            f"--data-class laboratory-results --valid-days 30 {conn}"
        ),
        (
            f"{base} revoke {key} --consent-id {ctx.consent_ids.get('hospital', '<consent id>')} "
            f"--reason 'moved to another hospital' {conn}"
        ),
    ]
    if first is not None:
        cmds.append(f"{base} consistency --old-note {q(_show_path(first))} {conn}")
    cmds += [f"{base} consistency {conn}", f"{base} get 0 {conn} --json", f"{base} health --server {ctx.target} --insecure"]
    return cmds


def _port_is_free(port: int) -> bool:
    # A plain socket (no SO_REUSEPORT) cannot bind a port a gRPC server holds, so this finds a truly free one.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def choose_port(port: int | None) -> int:
    """The requested port, or 50051 or the first free port after it."""
    if port is not None:
        return port
    for candidate in range(DEFAULT_PORT, DEFAULT_PORT + PORTS_TO_TRY):
        if _port_is_free(candidate):
            return candidate
    return 0


def prepare_workdir(workdir: Path) -> tuple[Path, Path, Path, Path]:
    """A fresh start in ``workdir``: new keys, no database, no client state. Returns the four paths."""
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o700)
    db = workdir / "ledger.db"
    state = workdir / "client-state.json"
    for stale in (db, db.with_name("ledger.db-wal"), db.with_name("ledger.db-shm"), state, *workdir.glob("*.note")):
        stale.unlink(missing_ok=True)
    log_key, patient_key = workdir / "log.key", workdir / "alice.key"
    write_new_key(log_key, DEMO_ORIGIN, overwrite=True)
    write_new_key(patient_key, "alice", overwrite=True)
    return db, state, log_key, patient_key


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _run(workdir: Path, port: int | None, serve: bool, write: Callable[[str], None]) -> int:
    db, state, log_key_file, patient_key_file = prepare_workdir(workdir)
    # The banner below says the demo serves plaintext on loopback; the server's own warning would repeat it.
    logging.getLogger("consent_ledger.server.app").setLevel(logging.ERROR)
    signer = read_key(log_key_file)
    config = ServiceConfig(
        database_url=f"sqlite:///{db.resolve()}", listen=f"127.0.0.1:{choose_port(port)}", insecure=True
    )
    service: RunningService = await start_service(config, signer)
    target = f"127.0.0.1:{service.port}"
    write(f"consent-ledger demo: log {signer.name} serving on {target} (plaintext, loopback only)")
    write(f"  database      {_show_path(db)} (fresh SQLite file)")
    write(f"  log key       {_show_path(log_key_file)}; verifier key {verifier_key_of(signer)}")
    write(f"  patient key   {_show_path(patient_key_file)} (Alice)")
    write("  every answer below is checked by the client library against the pinned log key")
    try:
        with LedgerClient.connect(target, verifier_key=verifier_key_of(signer), state_path=state, insecure=True) as client:
            ctx = DemoContext(
                workdir=workdir,
                target=target,
                log_key_file=log_key_file.with_name(log_key_file.name + ".pub"),
                patient_key_file=patient_key_file,
                state_file=state,
                patient=read_key(patient_key_file),
                client=client,
                write=write,
            )
            # The client is synchronous; the server runs on this event loop, so the story runs in a thread.
            await asyncio.to_thread(play, ctx)
        write("")
        write("The story is over. Try the CLI yourself against the same server:")
        write("")
        for command in try_it_commands(ctx):
            write(f"  {command}")
        if serve:
            write("")
            write(f"serving on {target} until Ctrl-C")
            await _wait_for_signal()
            write("stopping")
    finally:
        await service.stop()
    return 0


def run_demo(
    workdir: Path, *, port: int | None = None, serve: bool = True, write: Callable[[str], None] | None = None
) -> int:
    """Start the demo server in ``workdir``, play STORY, print CLI commands, and serve until Ctrl-C unless
    ``serve`` is false. ``port`` None means 50051 or the next free port; 0 means any."""

    def out(line: str) -> None:
        print(line, flush=True)

    return asyncio.run(_run(workdir, port, serve, write or out))
