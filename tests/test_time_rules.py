"""Decisions are made for now (docs/design.md section 4), and the checkpoint names the consent state (section 2).

A lying operator holds the log key (tests/tamper_support.py): it answers for another time and re-signs, dates its
StateCommits ahead, replays an answer proven against an older StateCommit after the client verified a newer one,
drops the access event it was asked to record, or proves the evidence against a checkpoint that names another
StateCommit. The client catches each with a typed error; the server refuses a request time off its clock.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from consent_ledger.app.consent_state import StatePolicy
from consent_ledger.core import payloads
from consent_ledger.cli import EXIT_OK, EXIT_VERIFICATION, main
from consent_ledger.core.checkpoint import Checkpoint, format_consent_state, parse_checkpoint, sign_checkpoint
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.envelope import sign_envelope
from consent_ledger.core.note import open_note, parse_verifier_key
from consent_ledger.core.payloads import DataItem, Period
from consent_ledger.v1 import access_pb2, consent_pb2, log_pb2
from consent_ledger_client import (
    ConsentClient,
    DecisionTimeMismatch,
    EntryFromTheFuture,
    ExpiredDecision,
    MissingAccessEvent,
    StateCommitNotNamed,
    StateFromTheFuture,
    StateRollback,
    VerificationError,
)
from consent_ledger_client.audit import Auditor
from consent_ledger_client.bundle import (
    export_consent_bundle,
    export_decision_receipt,
    verify_consent_bundle,
    verify_decision_receipt,
)

from .server_support import MTLS, AUDITOR, OPERATOR, connect, ledger_client, log_signer, log_verifier_key, running_server
from .tamper_support import TamperProxy, now_ms, redecide, restate, shift_clock

PATIENT = Ed25519PrivateKey.from_seed(b"\x5a" * 32)
DAY = 86_400_000
KEY = log_signer().private_key
HPAYMT = dict(action="access", purpose="HPAYMT")


def _grant(c: ConsentClient, grantee: str, data_class: str, *, deny: bool = False, validity: Period | None = None) -> str:
    cid, _ = c.grant(
        PATIENT, grantee=grantee, actions=["access"], purposes=["HPAYMT"], data_classes=[data_class], deny=deny,
        validity=validity,
    )  # fmt: skip
    return cid


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """One ledger (no heartbeats: the tree moves only when the test moves it) behind a proxy. The patient grants
    the insurer lab results; imaging from next month; medications, but a role:insurer DENY forbids them for 30
    days; and conditions, which it revokes after the insurer kept an answer (PERMIT) resting on the StateCommit
    before the revocation."""
    url = f"sqlite:///{tmp_path_factory.mktemp('timerules') / 'log.db'}"
    with running_server(url, state=StatePolicy(heartbeat_s=3600)) as server, TamperProxy(server.target) as proxy:
        op = connect(server, party=OPERATOR)
        op.register_party(KEY, party_id="insurer-1", roles=["insurer"], public_keys=[PATIENT.public_key], display_name="I")
        patient = connect(server, patient=PATIENT)
        t = now_ms()
        _grant(patient, "org:insurer-1", "laboratory-results")
        _grant(patient, "org:insurer-1", "imaging", validity=Period(t + 30 * DAY, t + 365 * DAY))
        _grant(patient, "role:insurer", "medications", deny=True, validity=Period(0, t + 30 * DAY))
        _grant(patient, "org:insurer-1", "medications")
        conditions = _grant(patient, "org:insurer-1", "conditions")
        kept: list[access_pb2.CheckAccessResponse] = []

        def keep(resp):
            kept.append(access_pb2.CheckAccessResponse.FromString(resp.SerializeToString()))

        with proxy.tampering("CheckAccess", keep):
            vd = _ask(_insurer(proxy.target), "conditions")
        assert vd.permitted
        server.old_answer, server.old_state = kept[0], vd.state_commit_index
        listings: list[consent_pb2.ListConsentsResponse] = []
        with proxy.tampering("ListConsents", lambda resp: listings.append(type(resp).FromString(resp.SerializeToString()))):
            connect(proxy.target, patient=PATIENT).list_consents(PATIENT.public_key)
        server.old_listing = listings[0]
        patient.revoke(PATIENT, conditions)
        yield server, proxy


def _insurer(target, **kw) -> ConsentClient:
    return connect(target, party="insurer-1", **kw)


def _ask(c: ConsentClient, data_class: str, **kw):
    return c.check_access(PATIENT.public_key, data=[DataItem(data_class)], **HPAYMT, **kw)


def test_honest_answers_pass_and_name_their_state(setup):
    server, proxy = setup
    c = _insurer(proxy.target)
    assert _ask(c, "laboratory-results").permitted
    assert not _ask(c, "imaging").permitted  # starts next month
    vd = _ask(c, "medications")
    assert vd.decision.decision == "DENY"  # the 30-day DENY
    assert vd.checkpoint.consent_state == vd.state_commit_index
    assert not _ask(c, "conditions").permitted  # revoked


# -- the server -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset_ms", [6_000, -6_000, 31 * DAY])
def test_the_server_refuses_a_request_time_off_its_clock(setup, offset_ms):
    server, _ = setup
    with pytest.raises(grpc.RpcError) as e:
        _ask(_insurer(server), "imaging", time_ms=now_ms() + offset_ms)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "decisions are made for now" in e.value.details() and "at most 5 s" in e.value.details()


def test_the_server_accepts_a_request_time_within_the_skew(setup):
    server, _ = setup
    t = now_ms() + 1_000
    assert _ask(_insurer(server), "laboratory-results", time_ms=t).decision.request.time_ms == t


# -- decisions for another time -----------------------------------------------------------------------------------


@pytest.mark.parametrize("data_class", ["imaging", "medications"], ids=["grant-starts-next-month", "deny-expired"])
def test_a_decision_the_server_made_for_next_month_is_refused(setup, data_class):
    """Asked for now (time 0), the lying server answers as of a month on: a PERMIT from a grant that starts next
    month, or one a 30-day DENY forbids today; evidence, map proofs and re-computation all agree with it."""
    server, proxy = setup
    later = now_ms() + 31 * DAY
    with proxy.tampering("CheckAccess", lambda resp: redecide(resp, later, KEY)):
        with pytest.raises(DecisionTimeMismatch) as e:
            _ask(_insurer(proxy.target), data_class)
    assert e.value.decision_time_ms == later and e.value.skew_ms == 5_000


def test_a_decision_for_the_time_asked_next_month_is_refused(setup):
    """The client itself asks for next month; the lying server (which would refuse it if honest) answers for it."""
    server, proxy = setup
    later = now_ms() + 31 * DAY

    def to_now(method: str, raw: bytes) -> bytes:
        req = access_pb2.CheckAccessRequest.FromString(raw)
        req.time_ms = 0
        return req.SerializeToString()

    proxy.rewrite_request = to_now
    try:
        with proxy.tampering("CheckAccess", lambda resp: redecide(resp, later, KEY)):
            with pytest.raises(DecisionTimeMismatch):
                _ask(_insurer(proxy.target), "imaging", time_ms=later)
    finally:
        proxy.rewrite_request = lambda method, raw: raw


def test_the_skew_is_configurable(setup):
    server, proxy = setup
    ahead = now_ms() + 3_000
    with proxy.tampering("CheckAccess", lambda resp: redecide(resp, ahead, KEY)):
        assert _ask(_insurer(proxy.target), "laboratory-results").permitted  # 3 s: within the default 5 s
        strict = ConsentClient(ledger_client(proxy.target, party="insurer-1"), max_clock_skew_ms=1_000)
        with pytest.raises(DecisionTimeMismatch):
            _ask(strict, "laboratory-results")


def test_a_decision_already_expired_is_refused(setup):
    """Made a millisecond ago under a 1 ms ttl (the policy travels in the decision, so re-computation agrees)."""
    server, proxy = setup
    with proxy.tampering("CheckAccess", lambda resp: redecide(resp, now_ms() - 1, KEY, decision_ttl_ms=1)):
        with pytest.raises(ExpiredDecision) as e:
            _ask(_insurer(proxy.target), "laboratory-results")
    assert e.value.valid_until_ms < e.value.clock_ms


# -- rollback ------------------------------------------------------------------------------------------------------


def _replay_old(server):
    """The answer kept before the revocation, re-decided for now: it rests on the older StateCommit and is proven
    against the older checkpoint (consistent with the newer one), both signed by the log key."""

    def lie(resp):
        resp.CopyFrom(server.old_answer)
        redecide(resp, now_ms(), KEY)

    return lie


def test_an_answer_from_an_older_state_is_refused_after_a_newer_one(setup, tmp_path: Path):
    server, proxy = setup
    state = tmp_path / "state.json"
    c = _insurer(proxy.target, state_path=state)
    newer = _ask(c, "conditions")
    assert not newer.permitted and newer.state_commit_index > server.old_state
    with proxy.tampering("CheckAccess", _replay_old(server)):
        with pytest.raises(StateRollback) as e:
            _ask(c, "conditions")
        assert (e.value.index, e.value.newest_index) == (server.old_state, newer.state_commit_index)
        # Across a restart: the newest StateCommit is kept in the state file beside the checkpoint.
        with pytest.raises(StateRollback):
            _ask(_insurer(proxy.target, state_path=state), "conditions")


def test_the_old_answer_alone_still_verifies(setup):
    """Without a newer StateCommit verified, the replayed answer is a consistent, fresh, signed answer: what
    the rollback mark is for."""
    server, proxy = setup
    with proxy.tampering("CheckAccess", _replay_old(server)):
        assert _ask(_insurer(proxy.target), "conditions").permitted


def _states(listing) -> dict[str, str]:
    return {v.grant.data_classes[0]: v.state for v in listing.consents if v.grant.decision == payloads.PERMIT}


def test_a_listing_from_before_the_newest_verified_state_is_refused(setup, tmp_path: Path):
    """The patient's listing kept from before the revocation (the conditions grant active), served after a client
    sharing the state file (as the CLI's default one is shared) verified a newer StateCommit."""
    server, proxy = setup
    state = tmp_path / "state.json"
    _ask(_insurer(proxy.target, state_path=state), "conditions")
    old = server.old_listing
    with proxy.tampering("ListConsents", lambda resp: resp.CopyFrom(old)):
        assert _states(connect(proxy.target, patient=PATIENT).list_consents(PATIENT.public_key))["conditions"] == "active"
        with pytest.raises(StateRollback):
            connect(proxy.target, patient=PATIENT, state_path=state).list_consents(PATIENT.public_key)


def test_a_listing_for_another_time_than_asked_is_refused(setup):
    """Asked for now, the server lists the states as of a month on (the imaging grant active already)."""
    server, proxy = setup
    later = now_ms() + 31 * DAY
    c = connect(proxy.target, patient=PATIENT)
    assert _states(c.list_consents(PATIENT.public_key))["imaging"] == "pending"

    with proxy.tampering("ListConsents", lambda resp: restate(resp, later)):
        with pytest.raises(DecisionTimeMismatch):
            c.list_consents(PATIENT.public_key)
        with pytest.raises(VerificationError, match="asked for the states at"):
            c.list_consents(PATIENT.public_key, time_ms=now_ms() - DAY)


# -- offline: receipts and bundles ----------------------------------------------------------------------------------


def test_offline_receipts_and_bundles_are_checked_against_the_clock(setup):
    """A receipt whose decision is dated after the verifier's clock, or a bundle whose entry is, is a lie."""
    server, _ = setup
    vd = _ask(_insurer(server), "laboratory-results")
    doc = export_decision_receipt(vd.receipt)
    assert verify_decision_receipt(doc, log_verifier_key()).valid_now
    later = lambda: vd.decision.valid_until_ms + 1  # noqa: E731
    assert not verify_decision_receipt(doc, log_verifier_key(), clock_ms=later).valid_now  # still evidence
    earlier = lambda: vd.decision.request.time_ms - 60_000  # noqa: E731
    with pytest.raises(DecisionTimeMismatch):
        verify_decision_receipt(doc, log_verifier_key(), clock_ms=earlier)
    grant = next(v for v in vd.evidence if v.leaf.payload_type == payloads.CONSENT_GRANT)
    entry, note = ledger_client(server, party=AUDITOR).get_entry_with_note(grant.index)
    bundle = export_consent_bundle(entry, note, log_verifier_key())
    assert verify_consent_bundle(bundle, log_verifier_key()).entry.index == grant.index
    with pytest.raises(EntryFromTheFuture) as e:
        verify_consent_bundle(bundle, log_verifier_key(), clock_ms=lambda: entry.leaf.integrated_time_ms - 60_000)
    assert e.value.index == grant.index


# -- the checkpoint names the state ----------------------------------------------------------------------------------


def test_evidence_from_a_state_the_checkpoint_does_not_name_is_refused(setup):
    """The old evidence re-proven against the latest checkpoint, whose consent-state line names the newer
    StateCommit: every proof holds, but the state is not the one the checkpoint names."""
    server, proxy = setup
    auditor = ledger_client(server, party=AUDITOR)
    old = server.old_answer
    proven = [auditor.get_entry_with_note(e.entry.index) for e in old.evidence]
    note = proven[0][1]
    assert all(n == note for _, n in proven)  # no heartbeats: one checkpoint

    def lie(resp):
        resp.CopyFrom(old)
        del resp.evidence[:]
        for v, _ in proven:
            resp.evidence.add(
                entry=log_pb2.Entry(index=v.index, leaf=v.leaf_bytes, envelope=v.envelope.raw), inclusion_proof=v.proof
            )
        redecide(resp, now_ms(), KEY, note)

    with proxy.tampering("CheckAccess", lie), pytest.raises(StateCommitNotNamed) as e:
        _ask(_insurer(proxy.target), "conditions")
    named = parse_checkpoint(open_note(note, [parse_verifier_key(log_verifier_key())]).text).consent_state
    assert named is not None and named > old.state_commit_index
    assert (e.value.index, e.value.named, e.value.checkpoint_note) == (old.state_commit_index, named, note)


# -- the access event --------------------------------------------------------------------------------------------------


def test_a_requested_access_event_that_is_missing_is_refused(setup):
    server, proxy = setup

    def drop(resp):
        assert resp.access_event_recorded
        resp.access_event_recorded = False
        resp.access_event_index = 0

    with proxy.tampering("CheckAccess", drop), pytest.raises(MissingAccessEvent) as e:
        _ask(_insurer(proxy.target), "laboratory-results", record=True)
    assert e.value.receipt


# -- a server dated a day ahead ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ahead(tmp_path_factory):
    """A ledger whose operator dates everything a day ahead: its StateCommits, entries and decisions."""
    url = f"sqlite:///{tmp_path_factory.mktemp('ahead') / 'log.db'}"
    with running_server(url, state=StatePolicy(heartbeat_s=3600)) as server, TamperProxy(server.target) as proxy:
        shift_clock(server, DAY)
        op = connect(server, party=OPERATOR)
        op.register_party(KEY, party_id="insurer-1", roles=["insurer"], public_keys=[PATIENT.public_key], display_name="I")
        _grant(connect(server, patient=PATIENT), "org:insurer-1", "laboratory-results")
        yield server, proxy


def test_a_state_commit_dated_a_day_ahead_is_refused(ahead):
    server, proxy = ahead
    with pytest.raises(StateFromTheFuture) as e:
        _ask(_insurer(server), "laboratory-results")
    assert e.value.batch_time_ms - e.value.clock_ms > DAY - 60_000
    # The decision re-dated to now does not help: the state it rests on is still from tomorrow.
    with proxy.tampering("CheckAccess", lambda resp: redecide(resp, now_ms(), KEY)):
        with pytest.raises(StateFromTheFuture):
            _ask(_insurer(proxy.target), "laboratory-results")


def test_the_audit_flags_a_state_commit_dated_ahead(ahead):
    server, _ = ahead
    report = Auditor(ledger_client(server, party=AUDITOR)).run()
    assert report.finding is not None, "the audit found nothing"
    f = report.finding
    assert "ahead of the auditor's clock" in f.problem
    assert int(f.evidence["batch_time_ms"]) - int(f.evidence["auditor_clock_ms"]) > DAY - 60_000
    assert f.evidence["leaf"]


def test_the_audit_flags_batch_times_that_decrease(tmp_path):
    """A StateCommit dated ahead of the entries it closes: the next entry the honest clock stamps is earlier."""
    with running_server(f"sqlite:///{tmp_path / 'l.db'}", state=StatePolicy(heartbeat_s=3600)) as server:
        op = connect(server, party=OPERATOR)
        op.register_party(KEY, party_id="a", roles=["insurer"], public_keys=[PATIENT.public_key], display_name="A")
        shift_clock(server, DAY)
        _grant(connect(server, patient=PATIENT), "org:a", "imaging")  # the grant and its StateCommit, a day on
        shift_clock(server, 0)
        server.service.ledger.sequencer._last_ms = 0  # the lying sequencer forgets it ran ahead
        op.register_party(KEY, party_id="b", roles=["insurer"], public_keys=[PATIENT.public_key], display_name="B")
        report = Auditor(ledger_client(server, party=AUDITOR), clock_ms=lambda: now_ms() + 2 * DAY).run()
    f = report.finding
    assert f is not None and "times decrease" in f.problem, report
    assert int(f.evidence["previous_integrated_time_ms"]) - int(f.evidence["integrated_time_ms"]) > DAY - 60_000


def test_the_audit_flags_a_checkpoint_naming_the_wrong_state(setup):
    """The operator re-signs its latest checkpoint (same size and root) with a consent-state line naming entry 0."""
    server, proxy = setup
    verifier = parse_verifier_key(log_verifier_key())

    def misname(resp):
        cp = parse_checkpoint(open_note(resp.checkpoint.note, [verifier]).text)
        resp.checkpoint.note = sign_checkpoint(Checkpoint(cp.origin, cp.size, cp.root_hash, (format_consent_state(0),)), log_signer())

    with proxy.tampering("GetCheckpoint", misname):
        report = Auditor(ledger_client(proxy.target, party=AUDITOR)).run()
    f = report.finding
    assert f is not None and "names consent state 0" in f.problem, report
    assert "consent-state 0" in f.evidence["checkpoint"]
    assert int(f.evidence["latest_state_commit"]) > 0


def test_the_audit_of_an_honest_ledger_checks_its_checkpoints(setup):
    server, _ = setup
    report = Auditor(ledger_client(server, party=AUDITOR)).run()
    assert report.ok, report.finding


# -- the CLI ------------------------------------------------------------------------------------------------------------


def _cli(target: str, tmp_path: Path, *extra: str) -> list[str]:
    key = tmp_path / "log.key.pub"
    key.write_text(log_verifier_key() + "\n")
    return [
        "check-access", "--as", "insurer-1", "--patient", PATIENT.public_key.hex(), "--action", "access",
        "--purpose", "HPAYMT", "--server", target, "--insecure", "--log-key-file", str(key),
        "--state", str(tmp_path / "state.json"), *extra,
    ]  # fmt: skip


@pytest.mark.skipif(MTLS, reason="the CLI speaks plaintext to the tampering proxy here")
@pytest.mark.parametrize("lie", ["next-month", "missing-event", "rollback"])
def test_cli_check_access_exits_3_on_a_lie(setup, tmp_path, capsys, lie):
    server, proxy = setup
    data = "imaging" if lie == "next-month" else "conditions"
    argv = _cli(proxy.target, tmp_path, "--data", data, *(["--record"] if lie == "missing-event" else []))
    if lie == "rollback":
        assert main(argv) == EXIT_OK  # verifies the newest StateCommit, kept in the state file
    mutation = {
        "next-month": lambda resp: redecide(resp, now_ms() + 31 * DAY, KEY),
        "missing-event": lambda resp: setattr(resp, "access_event_recorded", False),
        "rollback": _replay_old(server),
    }[lie]
    capsys.readouterr()
    with proxy.tampering("CheckAccess", mutation):
        assert main(argv) == EXIT_VERIFICATION
    assert "verification failed" in capsys.readouterr().err


@pytest.mark.skipif(MTLS, reason="the CLI speaks plaintext to the test server here")
def test_cli_check_access_exits_3_on_a_state_commit_dated_ahead(ahead, tmp_path, capsys):
    server, _ = ahead
    assert main(_cli(server.target, tmp_path, "--data", "laboratory-results")) == EXIT_VERIFICATION
    assert "ahead of this client's clock" in capsys.readouterr().err


# -- what signers claim: entries dated ahead of the ledger's clock ---------------------------------------------------


@pytest.mark.parametrize("ahead_ms", [payloads.MAX_CLAIMED_AHEAD_MS + 1_000, 40 * 86_400_000])
def test_an_entry_its_signer_dated_ahead_of_the_ledgers_clock_is_refused(tmp_path, ahead_ms):
    """Timestamps are sanity-checked (docs/design.md section 7): a grant issued, or an access event that happened,
    more than MAX_CLAIMED_AHEAD_MS after the ledger's clock is refused with INVALID_ARGUMENT and not logged; one a
    minute ahead (a drifting clock) is taken."""
    from .entries_support import grant_envelope

    patient = Ed25519PrivateKey.from_seed(b"\x5a" * 32)
    with running_server(f"sqlite:///{tmp_path / 'l.db'}") as server:
        ledger = ledger_client(server, party=OPERATOR)
        before = ledger.checkpoint().checkpoint.size
        with pytest.raises(grpc.RpcError) as e:
            ledger.submit(grant_envelope(patient, issued_at_ms=now_ms() + ahead_ms))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
        assert "ahead of the ledger's clock" in (e.value.details() or "")
        event = payloads.build_access_event(
            patient=patient.public_key, party_id="hospital-1", action="access", purpose="TREAT",
            data=[DataItem("laboratory-results")], decision="DENY", accessed_at_ms=now_ms() + ahead_ms,
            receipt_sha256=bytes(32),
        )  # fmt: skip
        with pytest.raises(grpc.RpcError) as e:
            ledger.submit(sign_envelope(payloads.ACCESS_EVENT, event, [log_signer().private_key]))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
        assert "accessed at" in (e.value.details() or ""), e.value.details()
        assert ledger.checkpoint().checkpoint.size == before
        taken = ledger.submit(grant_envelope(patient, issued_at_ms=now_ms() + 60_000))
        assert taken.entry.index >= before
