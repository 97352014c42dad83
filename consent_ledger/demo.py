"""`consent-ledger demo`: a real server on a fresh SQLite file, and the consent story of issue 3 told through the
verifying client, printing each step and what was verified.

The story is a list of small step functions (STORY) that share one DemoContext; each step's title is the first
line of its docstring. Every answer the steps print comes from the client library, which checks it first.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import os
import shlex
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from consent_ledger_client import (
    ConsentClient,
    LedgerClient,
    SubmitReceipt,
    VerifiedDecision,
    VerifiedEntry,
)
from consent_ledger_client.bundle import (
    export_consent_bundle,
    export_decision_receipt,
    verify_consent_bundle,
    verify_decision_receipt,
)

from consent_ledger import presentation as show
from consent_ledger.core import payloads
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.note import Signer
from consent_ledger.core.payloads import DataItem, Period
from consent_ledger.keys import read_key, verifier_key_of, write_new_key
from consent_ledger.core.vrf import VrfPrivateKey
from consent_ledger.app.witnessing import WitnessEndpoint
from consent_ledger.core.checkpoint import open_checkpoint
from consent_ledger.core.merkle import verify_consistency
from consent_ledger.core.note import open_note, parse_verifier_key
from consent_ledger.core.witness import WitnessKey
from consent_ledger.server.witness_http import RunningWitness, WitnessConfig
from consent_ledger.service import (
    RunningService,
    ServiceConfig,
    start_service,
    start_witness_service,
    wait_for_signal,
)
from consent_ledger.v1 import log_pb2, log_pb2_grpc

DEMO_ORIGIN = "demo.consent-ledger.local/log"
DEFAULT_PORT = 50051
PORTS_TO_TRY = 50
MS_PER_DAY = 86_400_000
WATCH_SECONDS = 10.0

LAB = DataItem("laboratory-results")
IMAGING = DataItem("imaging")
MH_NOTES = DataItem("clinical-notes", ("MH",))


@dataclass(frozen=True)
class Party:
    party_id: str
    display_name: str
    role: str


HOSPITAL = Party("hospital-1", "General Hospital", "hospital")
INSURER = Party("insurer-1", "Acme Insurance", "insurer")
ED = Party("ed-1", "City Emergency Department", "hospital")
PARTIES = (HOSPITAL, INSURER, ED)


@dataclass
class DemoContext:
    """What the steps share: where things are, one verifying client per actor, and what earlier steps produced."""

    workdir: Path
    target: str
    log_key_file: Path  # the public verifier key (log.key.pub)
    state_file: Path
    operator_key: Signer
    patient: Signer
    patient_client: ConsentClient  # Alice's app: signs each request with her key
    operator_client: ConsentClient  # the operator's console (it shares Alice's state file: one view of the log)
    orgs: dict[str, ConsentClient]  # party id -> that organisation's client
    watching: Callable[[str], bool] = lambda selector: True
    write: Callable[[str], None] = print
    consent_ids: dict[str, str] = field(default_factory=dict)
    indices: dict[str, int] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    receipts: dict[str, SubmitReceipt] = field(default_factory=dict)
    # The map VRF public key file (map-vrf.key.pub) the clients pin beside the log key.
    map_vrf_key_file: Path | None = None
    # The witnesses running beside the ledger (their cosignature keys).
    witnesses: list[WitnessKey] = field(default_factory=list)

    def say(self, text: str = "") -> None:
        for line in text.splitlines() or [""]:
            self.write(f"    {line}" if line else "")

    @property
    def log(self) -> LedgerClient:
        return self.patient_client.ledger


Step = Callable[[DemoContext], None]

# The demo server's configured identities (on its plaintext loopback port, the --as name says who is asking).
OPERATOR = "operator"
AUDITOR = "auditor"


def _now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


def _show_path(path: Path) -> str:
    """A path as the user should type it: relative to the current directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def _grant(ctx: DemoContext, name: str, grantee: Party, purposes: list[str], data: list[str], days: int) -> None:
    """Alice signs a grant with her key; the client submits it and proves it is in the log."""
    previous = ctx.log.last_checkpoint
    now = _now_ms()
    cid, receipt = ctx.patient_client.grant(
        ctx.patient.private_key,
        grantee=f"org:{grantee.party_id}",
        actions=["access"],
        purposes=purposes,
        data_classes=data,
        validity=Period(now, now + days * MS_PER_DAY),
    )
    ctx.consent_ids[name], ctx.indices[name], ctx.receipts[name] = cid, receipt.index, receipt
    ctx.say(
        f"consent {show.short_id(cid)} signed with Alice's key, appended as entry #{receipt.index}, "
        f"valid until {show.format_time(now + days * MS_PER_DAY)[:10]}"
    )
    ctx.say(show.entry_verification(receipt.entry, previous))
    _say_closing_commit(ctx, receipt.entry)


def _say_closing_commit(ctx: DemoContext, entry: VerifiedEntry) -> None:
    """Show the StateCommit that closed the batch of a consent change (the entry right after it), verified."""
    if entry.index + 1 >= entry.checkpoint.size:
        return
    after = ctx.log.get_entry(entry.index + 1)
    commit = show.state_commit_of(after, ctx.log.log_public_key)
    if commit is not None:
        ctx.say(show.closing_commit_line(after, commit))


def _check(
    ctx: DemoContext, party: Party, purpose: str, data: list[DataItem], *, reason: str = "", record: bool = True
) -> VerifiedDecision:
    """An organisation asks; the client proves the evidence, re-computes the decision and checks the receipt."""
    vd = ctx.orgs[party.party_id].check_access(
        ctx.patient.public_key,
        action="access",
        purpose=purpose,
        data=data,
        break_glass=bool(reason),
        break_glass_reason=reason,
        record=record,
    )
    ctx.say("\n".join(show.decision_lines(vd.decision)))
    ctx.say(show.decision_verification(vd, with_previous=False, now_ms=_now_ms()))
    return vd


# -- the story ----------------------------------------------------------------------------------------------


def register_parties(ctx: DemoContext) -> None:
    """The operator registers a hospital, an insurer and an emergency department."""
    width = max(len(p.display_name) for p in PARTIES)
    for party in PARTIES:
        org_key = read_key(ctx.workdir / f"{party.party_id}.key")
        receipt = ctx.operator_client.register_party(
            ctx.operator_key.private_key,
            party_id=party.party_id,
            roles=[party.role],
            public_keys=[org_key.public_key],
            display_name=party.display_name,
        )
        ctx.indices[party.party_id] = receipt.index
        ctx.receipts[party.party_id] = receipt
        ctx.say(f"{party.party_id:<10}  {party.display_name:<{width}}  role {party.role:<8}  entry #{receipt.index}")
    last = ctx.receipts[PARTIES[-1].party_id]
    cp = last.entry.checkpoint
    ctx.say(
        f"verified: each registration is included in the log (checkpoint of size {cp.size} signed by {cp.origin}), "
        "its body matches its leaf, and its signature by the operator's key (the log key) verifies"
    )
    operator = ctx.operator_client.ledger
    commits = [e.index for e in operator.get_entries(0, cp.size) if show.state_commit_of(e, operator.log_public_key)]
    if commits:
        ctx.say(
            f"entry #{commits[0]} is the ledger's own StateCommit: the signed root of its consent-state map, written "
            "after the log's first batch and after every batch that changes the map (consents, registrations: each "
            "party's key holds its latest registration)"
        )
    path = ctx.workdir / "checkpoint-first.note"
    path.write_bytes(last.note)
    ctx.files["first-checkpoint"] = path
    ctx.say(f"kept this signed checkpoint (size {cp.size}) in {_show_path(path)}, to compare later ones with")


def grant_hospital(ctx: DemoContext) -> None:
    """Alice grants General Hospital TREAT access to her laboratory results and imaging for a year."""
    _grant(ctx, "hospital", HOSPITAL, ["TREAT"], ["laboratory-results", "imaging"], 365)


def insurer_refused(ctx: DemoContext) -> None:
    """Acme Insurance asks for HPAYMT (payment) access to the laboratory results: refused."""
    vd = _check(ctx, INSURER, "HPAYMT", [LAB])
    assert vd.decision.decision == "DENY"
    state = show.consent_state(vd)
    complete = state is not None and not any(state.in_force.values())
    cites_none = not vd.decision.consent_ids and all(
        v.leaf.payload_type in (payloads.PARTY_REGISTRATION, payloads.STATE_COMMIT) for v in vd.evidence
    )
    if complete and cites_none:
        ctx.say(
            "so the refusal is provably complete, and it cites no consent: its only entries are the insurer's "
            "registration and the StateCommit"
        )


def grant_insurer(ctx: DemoContext) -> None:
    """Alice grants Acme Insurance HPAYMT access to her laboratory results only, for 90 days."""
    _grant(ctx, "insurer", INSURER, ["HPAYMT"], ["laboratory-results"], 90)


def insurer_partial(ctx: DemoContext) -> None:
    """Acme Insurance asks for laboratory results and mental-health notes in one request."""
    vd = _check(ctx, INSURER, "HPAYMT", [LAB, MH_NOTES])
    ctx.say("per-category outcome: the insurer may use the lab results and must filter out the notes")
    path = ctx.workdir / "receipt-insurer.json"
    path.write_text(json.dumps(export_decision_receipt(vd.receipt), indent=2) + "\n")
    ctx.files["receipt"] = path
    ctx.say(f"the insurer keeps the signed receipt as evidence: {_show_path(path)}")


def revoke_insurer(ctx: DemoContext) -> None:
    """Alice revokes the insurer's consent: the insurer's watch hears of it, and its next check is refused."""
    insurer = ctx.orgs[INSURER.party_id]
    pushed: list[tuple[VerifiedEntry, float]] = []
    errors: list[BaseException] = []

    def watch() -> None:
        try:
            for v in insurer.watch_revocations(timeout=WATCH_SECONDS):
                pushed.append((v, time.monotonic()))
                return
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    watcher = threading.Thread(target=watch, name="insurer-watch", daemon=True)
    watcher.start()
    deadline = time.monotonic() + 5
    while not ctx.watching(f"org:{INSURER.party_id}") and time.monotonic() < deadline:
        time.sleep(0.01)
    ctx.say("Acme Insurance is watching for revocations of consents granted to it")

    previous = ctx.log.last_checkpoint
    started = time.monotonic()
    receipt = ctx.patient_client.revoke(ctx.patient.private_key, ctx.consent_ids["insurer"], "I changed insurer")
    ctx.indices["revocation"] = receipt.index
    ctx.say(f"Alice's revocation of consent {show.short_id(ctx.consent_ids['insurer'])} appended as entry #{receipt.index}")
    ctx.say(show.entry_verification(receipt.entry, previous))
    _say_closing_commit(ctx, receipt.entry)
    watcher.join(WATCH_SECONDS)
    if pushed:
        v, at = pushed[0]
        ctx.say(
            f"the insurer's watch received the revocation (entry #{v.index}) {max(0, round((at - started) * 1000))} ms "
            f"after Alice submitted it; verified: inclusion in checkpoint of size {v.checkpoint.size}"
        )
    else:
        ctx.say(f"the insurer's watch received nothing ({errors[0] if errors else 'timed out'})")
    ctx.say("the insurer asks again:")
    vd = _check(ctx, INSURER, "HPAYMT", [LAB])
    state = show.consent_state(vd)
    selector = f"org:{INSURER.party_id}"
    if state is not None and ctx.consent_ids["insurer"] not in state.in_force.get(selector, ()):
        ctx.say(
            f"the revoked consent left the in-force set: the map proof for {selector} against StateCommit "
            f"#{state.entry.index} shows it is gone"
        )


def break_glass(ctx: DemoContext) -> None:
    """City Emergency Department breaks the glass for an unconscious patient."""
    _check(ctx, ED, "ETREAT", [LAB, MH_NOTES], reason="unconscious on arrival, suspected overdose")
    ctx.say("no consent names the ED: the permit comes from break-glass, for a bounded window, with obligations")


def patient_view(ctx: DemoContext) -> None:
    """Alice looks at who asked about her, and at her consents."""
    p = ctx.patient.public_key
    events = ctx.patient_client.list_access_events(p).events
    ctx.say(f"who asked ({show.plural(len(events), 'access event', 'access events')}, each recorded by the ledger with its "
            "decision):")
    for view in events:
        ctx.say("  " + show.access_event_view_line(view, ctx.log.log_public_key))
    listing = ctx.patient_client.list_consents(p)
    ctx.say("her consents and their states now:")
    for c in listing.consents:
        ctx.say("  " + show.consent_view_line(c))
    cp = listing.checkpoint
    ctx.say(
        f"verified: every event and consent proven in checkpoint of size {cp.size} signed by {cp.origin}; "
        "every consent's state re-computed from the entries and equal to the server's"
    )


def privacy_review(ctx: DemoContext) -> None:
    """The privacy officer reviews the emergency access, and Alice sees the review."""
    queue = ctx.operator_client.break_glass_queue(unreviewed_only=True).items
    ctx.say(
        f"the review queue holds {show.plural(len(queue), 'break-glass access', 'break-glass accesses')} awaiting review: "
        + ", ".join(f"#{v.index} by {v.event.party_id if v.event else '?'}" for v in queue)
    )
    for view in queue:
        receipt = ctx.operator_client.review_break_glass(
            ctx.operator_key.private_key, view.index, outcome="justified",
            notes="unconscious on arrival; overdose confirmed by toxicology",
        )  # fmt: skip
        ctx.say(f"review of #{view.index} signed with the operator's key, appended as entry #{receipt.index}")
    for view in ctx.patient_client.list_access_events(ctx.patient.public_key).events:
        if view.break_glass:
            ctx.say("Alice sees: " + show.access_event_view_line(view, ctx.log.log_public_key))
    ctx.say(
        "verified: each review is in the log, signed by an operator key, and about that very event (that no other "
        "event awaits review is the server's word: a log proves presence, not absence)"
    )


def offline_checks(ctx: DemoContext) -> None:
    """A witness checks the log grew append-only; anyone checks a consent bundle and a receipt offline."""
    latest = ctx.log.checkpoint().checkpoint
    first = ctx.log.accept_checkpoint(ctx.files["first-checkpoint"].read_bytes())
    root = base64.b64encode(latest.root_hash).decode("ascii")
    ctx.say(f"latest checkpoint: size {latest.size}, root hash {root[:16]}..., signature by {latest.origin} verified")
    ctx.say(
        f"verified: the consistency proof from the first checkpoint (size {first.size}) to size {latest.size} holds: "
        "nothing was changed or removed, only appended"
    )

    if ctx.witnesses:
        _witnessed(ctx, latest.size)

    vkey = verifier_key_of(ctx.operator_key)
    grant = ctx.receipts["hospital"]
    bundle_path = ctx.workdir / "consent-hospital.json"
    bundle_path.write_text(json.dumps(export_consent_bundle(grant.entry, grant.note, vkey), indent=2) + "\n")
    ctx.files["bundle"] = bundle_path
    b = verify_consent_bundle(bundle_path.read_text(), vkey)
    ctx.say(f"exported Alice's consent to General Hospital with its proof: {_show_path(bundle_path)}")
    ctx.say(
        f"verified offline, with only the log key: checkpoint (size {b.checkpoint.size}) signature, inclusion of leaf "
        f"#{b.entry.index}, body matches leaf, Alice's signature, consent record matches the signed consent"
    )
    r = verify_decision_receipt(ctx.files["receipt"].read_text(), vkey)
    ctx.say(
        f"verified offline: {_show_path(ctx.files['receipt'])} carries the log's signature on the "
        f"{r.decision.decision} decision for {r.decision.request.requester_id}, bound to checkpoint of size "
        f"{r.checkpoint.size}"
    )


def _witnessed(ctx: DemoContext, size: int) -> None:
    """Fetch the witnessed checkpoint (waiting a little for the witnesses) and verify every cosignature."""
    log_verifier = parse_verifier_key(verifier_key_of(ctx.operator_key))
    deadline = time.monotonic() + 15
    with grpc.insecure_channel(ctx.target) as ch:
        stub = log_pb2_grpc.LogServiceStub(ch)
        while True:
            resp = stub.GetCheckpoint(log_pb2.GetCheckpointRequest(), timeout=10)
            if resp.HasField("witnessed_checkpoint"):
                wcp = open_checkpoint(resp.witnessed_checkpoint.note, log_verifier)
                if wcp.size >= size or time.monotonic() > deadline:
                    break
            elif time.monotonic() > deadline:
                ctx.say("no checkpoint was cosigned by the witnesses yet")
                return
            time.sleep(0.1)
    note = open_note(resp.witnessed_checkpoint.note, [log_verifier])
    latest = open_checkpoint(resp.checkpoint.note, log_verifier)
    verify_consistency(wcp.size, latest.size, wcp.root_hash, latest.root_hash, list(resp.witnessed_consistency))
    names = []
    for w in ctx.witnesses:
        sig = next(s for s in note.unverified_sigs if s.name == w.name and s.key_hash == w.key_hash)
        t = w.verify(note.text, sig)
        names.append(f"{w.name} (at {dt.datetime.fromtimestamp(t, dt.UTC):%H:%M:%S} UTC)")
    ctx.say(
        f"witnessed checkpoint: size {wcp.size}, cosigned by {' and '.join(names)}; verified: each C2SP "
        f"tlog-cosignature/v1 with its witness key, the log's signature, and consistency with size {latest.size}"
    )


STORY: list[Step] = [
    register_parties,
    grant_hospital,
    insurer_refused,
    grant_insurer,
    insurer_partial,
    revoke_insurer,
    break_glass,
    patient_view,
    privacy_review,
    offline_checks,
]


def play(ctx: DemoContext, steps: Sequence[Step] = STORY) -> None:
    """Run the steps in order, each under a numbered heading taken from its docstring."""
    for number, step in enumerate(steps, 1):
        title = (step.__doc__ or step.__name__).strip().splitlines()[0].rstrip(".")
        ctx.write("")
        ctx.write(f"[{number}/{len(steps)}] {title}")
        step(ctx)


# -- around the story ---------------------------------------------------------------------------------------


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


def environment_line(ctx: DemoContext) -> str:
    """One `export` line that points every CLI command at the demo server (the CLI reads these variables)."""
    q = shlex.quote
    return (
        f"export CONSENT_LEDGER_SERVER={ctx.target} CONSENT_LEDGER_INSECURE=1 "
        f"CONSENT_LEDGER_LOG_KEY_FILE={q(_show_path(ctx.log_key_file))} "
        + (
            f"CONSENT_LEDGER_MAP_VRF_PUBLIC_KEY_FILE={q(_show_path(ctx.map_vrf_key_file))} "
            if ctx.map_vrf_key_file is not None
            else ""
        )
        + f"CONSENT_LEDGER_STATE={q(_show_path(ctx.state_file))}"
    )


# The organisation the suggested commands register (its key file is removed by prepare_workdir on each run).
TRY_IT_ORG = "lab-1"


def try_it_commands(ctx: DemoContext) -> list[str]:
    """Copy-pasteable commands against the running demo server, in groups headed by a comment line."""
    q = shlex.quote
    cl = cli_command()
    d = ctx.workdir

    def f(name: str) -> str:
        return q(_show_path(d / name))

    alice = f"--patient-key-file {f('alice.key.pub')}"
    # Alice's own commands sign each request with her private key: that is how the ledger knows it is her.
    as_alice = f"--patient-key-file {f('alice.key')}"
    hospital_id = ctx.consent_ids.get("hospital", "CONSENT_ID")
    return [
        "# as General Hospital: ask, keep the signed receipt, check it offline",
        f"{cl} check-access --as hospital-1 {alice} --action access --purpose TREAT --data laboratory-results "
        f"--data imaging --receipt-out {f('receipt.json')}",
        f"{cl} verify-receipt {f('receipt.json')}",
        "# as the emergency department: break the glass and record the access",
        f"{cl} check-access --as ed-1 {alice} --action access --purpose ETREAT --data clinical-notes:MH "
        "--break-glass --reason 'unconscious on arrival' --record",
        "# as Alice (each request signed with her key): her consents, who asked about her",
        f"{cl} consents {as_alice}",
        f"{cl} who-asked {as_alice}",
        "# as General Hospital: watch for revocations (leave it running; revoke from a second shell)",
        f"{cl} watch --revocations --as hospital-1 --count 1",
        f"{cl} revoke --key {f('alice.key')} --consent-id {hospital_id} --reason 'moved away'",
        "# as Alice: export her consent with its proof; anyone verifies it with only the log key",
        f"{cl} export-consent {ctx.indices.get('hospital', 0)} --sign-with {f('alice.key')} --out {f('consent.json')}",
        f"{cl} verify-bundle {f('consent.json')}",
        "# as the operator: register another organisation",
        f"{cl} keygen org --out {f(TRY_IT_ORG + '.key')}",
        f"{cl} register-party --as {OPERATOR} --operator-key {f('log.key')} --party-id {TRY_IT_ORG} --role hospital "
        f"--party-key-file {f(TRY_IT_ORG + '.key.pub')} --display-name 'City Lab'",
        "# as a witness: the log only grows",
        f"{cl} checkpoint",
        f"{cl} consistency --old-note {f('checkpoint-first.note')}",
        f"# as the auditor '{AUDITOR}': read every entry; replay the log, re-verify everything, recompute each StateCommit",
        f"{cl} entries 0 30 --as {AUDITOR}",
        f"{cl} audit --as {AUDITOR}",
    ]


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


DEMO_WITNESSES = ("witness-1", "witness-2")


async def _start_witnesses(workdir: Path, log_signer: Signer) -> list[RunningWitness]:
    """Two C2SP tlog-witnesses beside the ledger, on loopback ports chosen by the system, each with its database."""
    started: list[RunningWitness] = []
    for name in DEMO_WITNESSES:
        config = WitnessConfig(read_key(workdir / f"{name}.key"), {log_signer.name: [log_signer.verifier()]})
        started.append(await start_witness_service(config, f"sqlite:///{(workdir / f'{name}.db').resolve()}"))
    return started


def prepare_workdir(workdir: Path) -> tuple[Path, Path, Path, Path]:
    """A fresh start in ``workdir``: new keys (log, Alice, each organisation), no database, no client state, none
    of the files an earlier run wrote. Returns (database, state file, log key, patient key)."""
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o700)
    db = workdir / "ledger.db"
    state = workdir / "client-state.json"
    stale = [db, db.with_name("ledger.db-wal"), db.with_name("ledger.db-shm"), state]
    stale += [workdir / f"{name}.db{suffix}" for name in DEMO_WITNESSES for suffix in ("", "-wal", "-shm")]
    stale += [*workdir.glob("*.note"), *workdir.glob("*.json")]
    # Keys the suggested commands create (try_it_commands), so that they work again after a new run.
    stale += [workdir / f"{TRY_IT_ORG}.key", workdir / f"{TRY_IT_ORG}.key.pub"]
    for path in stale:
        path.unlink(missing_ok=True)
    log_key, patient_key = workdir / "log.key", workdir / "alice.key"
    write_new_key(log_key, DEMO_ORIGIN, overwrite=True)
    write_new_key(patient_key, "alice", overwrite=True)
    write_new_key(workdir / "map-vrf.key", "map-vrf", overwrite=True)
    for name in DEMO_WITNESSES:
        write_new_key(workdir / f"{name}.key", name, overwrite=True)
    for party in PARTIES:
        write_new_key(workdir / f"{party.party_id}.key", party.party_id, overwrite=True)
    return db, state, log_key, patient_key


def _watcher_probe(service: RunningService) -> Callable[[str], bool]:
    """Whether a revocation watch for a grantee selector is subscribed yet (so the demo's push is not a race)."""

    def watching(selector: str) -> bool:
        broker = service.consents.broker
        return broker is not None and broker.subscribers(("grantee", selector)) > 0

    return watching


async def _run(workdir: Path, port: int | None, serve: bool, write: Callable[[str], None]) -> int:
    db, state, log_key_file, patient_key_file = prepare_workdir(workdir)
    # The banner below says the demo serves plaintext on loopback; the server's own warning would repeat it.
    logging.getLogger("consent_ledger.server.app").setLevel(logging.ERROR)
    signer = read_key(log_key_file)
    witnesses = await _start_witnesses(workdir, signer)
    witness_keys = [WitnessKey(n, read_key(workdir / f"{n}.key").public_key) for n in DEMO_WITNESSES]
    config = ServiceConfig(
        witnesses=tuple(
            WitnessEndpoint(f"http://127.0.0.1:{w.port}", k) for w, k in zip(witnesses, witness_keys, strict=True)
        ),
        witness_quorum=len(witnesses),
        database_url=f"sqlite:///{db.resolve()}",
        listen=f"127.0.0.1:{choose_port(port)}",
        insecure=True,
        operators=(OPERATOR,),
        auditors=(AUDITOR,),
    )
    map_vrf_key_file = workdir / "map-vrf.key"
    map_vrf_key = VrfPrivateKey.from_seed(read_key(map_vrf_key_file).private_key.seed)
    service: RunningService = await start_service(config, signer, map_vrf_key)
    target = f"127.0.0.1:{service.port}"
    vkey = verifier_key_of(signer)
    patient = read_key(patient_key_file)
    keys = ", ".join(
        [
            "log.key (the log and its operator)",
            "map-vrf.key (derives the consent-state map's keys)",
            f"alice.key (the patient, {show.short_key(patient.public_key)})",
            *(f"{p.party_id}.key" for p in PARTIES),
        ]
    )
    write(f"consent-ledger demo: log {signer.name} serving on {target} (plaintext, loopback only)")
    write(f"  database  {_show_path(db)} (a fresh SQLite file)")
    write("  witnesses " + ", ".join(f"{k.name} on 127.0.0.1:{w.port}" for w, k in zip(witnesses, witness_keys, strict=True))
          + " (C2SP tlog-witness; each cosigns the log's checkpoints)")
    write(f"  keys      in {_show_path(workdir)}/: {keys}")
    write("  every answer below is verified by the client library against the log's public key before it is shown")
    clients: list[LedgerClient] = []

    def connect(
        party: str | None = None, state_path: Path | None = None, patient_key: Ed25519PrivateKey | None = None
    ) -> ConsentClient:
        c = LedgerClient.connect(
            target, verifier_key=vkey, state_path=state_path, insecure=True, party_id=party, patient_key=patient_key,
            map_vrf_key=map_vrf_key.public_key,
        )
        clients.append(c)
        return ConsentClient(c)

    try:
        ctx = DemoContext(
            workdir=workdir,
            target=target,
            log_key_file=log_key_file.with_name(log_key_file.name + ".pub"),
            state_file=state,
            operator_key=signer,
            patient=patient,
            patient_client=connect(state_path=state, patient_key=patient.private_key),
            operator_client=connect(OPERATOR, state_path=state),
            orgs={p.party_id: connect(p.party_id) for p in PARTIES},
            watching=_watcher_probe(service),
            write=write,
            map_vrf_key_file=map_vrf_key_file.with_name(map_vrf_key_file.name + ".pub"),
            witnesses=witness_keys,
        )
        # The client is synchronous; the server runs on this event loop, so the story runs in a thread.
        await asyncio.to_thread(play, ctx)
        for c in clients:
            c.close()
        clients.clear()
        write("")
        if serve:
            write("The story is over. Try the CLI against the same server; first point it there (bash, zsh):")
        else:
            write("The story is over and the server has stopped (--no-serve). To try the CLI, run the demo without "
                  "--no-serve (it keeps serving), then point the CLI at it (bash, zsh) and run, for example:")
        write("")
        write(f"  {environment_line(ctx)}")
        for n, command in enumerate(try_it_commands(ctx)):
            if command.startswith("#") and n:
                write("")
            write(f"  {command}")
        if serve:
            write("")
            write(f"serving on {target} until Ctrl-C")
            await wait_for_signal()
            write("stopping")
    finally:
        for c in clients:
            c.close()
        await service.stop()
        for w in witnesses:
            await w.stop()
    return 0


def run_demo(
    workdir: Path, *, port: int | None = None, serve: bool = True, write: Callable[[str], None] | None = None
) -> int:
    """Start the demo server in ``workdir``, play STORY, print CLI commands, and serve until Ctrl-C unless
    ``serve`` is false. ``port`` None means 50051 or the next free port; 0 means any."""

    def out(line: str) -> None:
        print(line, flush=True)

    return asyncio.run(_run(workdir, port, serve, write or out))
