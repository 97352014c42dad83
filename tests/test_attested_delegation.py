"""Attested delegations (docs/design.md section 3) through a real server: only an organisation whose current registration
carries the capability attest-guardianship may attest a guardian, only for a patient whose key never signed an
entry; the patient sees and is pushed every attested delegation, and may revoke it once she signs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc
import pytest

from consent_ledger.app.consents import ConsentLedger
from consent_ledger.core import payloads
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.payloads import DataItem
from consent_ledger.presentation import entry_summary
from consent_ledger_client import ConsentClient
from consent_ledger_client.audit import Auditor

from .server_support import AUDITOR, OPERATOR, connect, log_signer, running_server

ALICE = Ed25519PrivateKey.from_seed(b"\xa1" * 32)
NEWBORN = Ed25519PrivateKey.from_seed(b"\xa2" * 32)  # the key exists, nobody has signed with it yet
D = Ed25519PrivateKey.from_seed(b"\xa3" * 32)
HOSPITAL = Ed25519PrivateKey.from_seed(b"\xa4" * 32)
INSURER = Ed25519PrivateKey.from_seed(b"\xa5" * 32)
INSURER2 = Ed25519PrivateKey.from_seed(b"\xa6" * 32)
LAB = DataItem("laboratory-results")
ATTEST = "attest-guardianship"
GRANT = dict(actions=["access"], purposes=["HPAYMT"], data_classes=["laboratory-results"])
COURT = dict(relationship="guardian", scope=["*"], evidence_reference="court order")


def refused(call: Callable[[], object], code: grpc.StatusCode, match: str = "") -> str:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    details = err.value.details() or ""
    assert match in details, details
    return details


def register(c: ConsentClient, party_id: str, role: str, key: Ed25519PrivateKey, **kw: object) -> None:
    c.register_party(
        log_signer().private_key, party_id=party_id, roles=[role], public_keys=[key.public_key], display_name=party_id, **kw  # type: ignore[arg-type]
    )


@pytest.fixture
def ledger(database_url):
    with running_server(database_url) as server:
        yield server


def size(c: ConsentClient) -> int:
    return c.ledger.checkpoint().checkpoint.size


def test_an_insurer_cannot_make_itself_a_patients_guardian(ledger):
    """Issue 9, hole 1: a registered organisation attested a guardian for a patient who signs her own entries,
    signed with its own key, and the guardian key then read her consents and signed grants and revocations."""
    op = connect(ledger, party=OPERATOR)
    register(op, "insurer-1", "insurer", INSURER)
    register(op, "insurer-2", "insurer", INSURER2)
    alice = connect(ledger, patient=ALICE)
    real, _ = alice.grant(ALICE, grantee="org:insurer-2", **GRANT)
    insurer = connect(ledger, party="insurer-1")
    before = size(op)
    refused(
        lambda: insurer.delegate(INSURER, patient=ALICE.public_key, delegate=D.public_key, attested_by="insurer-1", **COURT),
        grpc.StatusCode.PERMISSION_DENIED,
        "does not carry the capability attest-guardianship",
    )
    assert size(op) == before, "nothing was appended"
    # So D is nobody's delegate: it cannot read Alice's view, grant for her, or revoke her grant.
    d = connect(ledger, patient=D)
    refused(lambda: d.list_consents(ALICE.public_key), grpc.StatusCode.PERMISSION_DENIED)
    refused(lambda: d.grant(D, for_patient=ALICE.public_key, grantee="org:insurer-1", **GRANT), grpc.StatusCode.PERMISSION_DENIED)
    refused(lambda: d.revoke(D, real, for_patient=ALICE.public_key), grpc.StatusCode.PERMISSION_DENIED)
    assert not insurer.check_access(ALICE.public_key, action="access", purpose="HPAYMT", data=[LAB]).permitted
    assert size(op) == before
    assert connect(ledger, party="insurer-2").check_access(ALICE.public_key, action="access", purpose="HPAYMT", data=[LAB]).permitted
    # Even with the capability, an organisation cannot attest for a patient who has signed: she delegates herself.
    register(op, "insurer-1", "insurer", INSURER, capabilities=[ATTEST])
    refused(
        lambda: insurer.delegate(INSURER, patient=ALICE.public_key, delegate=D.public_key, attested_by="insurer-1", **COURT),
        grpc.StatusCode.PERMISSION_DENIED,
        "already signed an entry",
    )


def test_the_capability_is_the_operators_and_the_current_registration_counts(ledger):
    op = connect(ledger, party=OPERATOR)
    register(op, "hospital-1", "hospital", HOSPITAL, capabilities=[ATTEST])
    register(op, "insurer-1", "insurer", INSURER)
    hospital = connect(ledger, party="hospital-1")
    did, receipt = hospital.delegate(HOSPITAL, patient=NEWBORN.public_key, delegate=D.public_key, attested_by="hospital-1", **COURT)
    assert receipt.entry.index > 0
    # The guardian signs for the newborn; the insurer's verified check permits on it (the client checked the
    # registration in the evidence carries the capability).
    cid, _ = connect(ledger, patient=D).grant(D, for_patient=NEWBORN.public_key, grantee="org:insurer-1", **GRANT)
    decision = connect(ledger, party="insurer-1").check_access(NEWBORN.public_key, action="access", purpose="HPAYMT", data=[LAB])
    assert decision.permitted and decision.decision.consent_ids == (cid,)

    # A newer registration without the capability takes it away: the next attestation is refused, the earlier
    # one stands (it was checked against the registration current when it was logged).
    register(op, "hospital-1", "hospital", HOSPITAL)
    before = size(op)
    other = Ed25519PrivateKey.from_seed(b"\xa7" * 32)
    refused(
        lambda: hospital.delegate(HOSPITAL, patient=other.public_key, delegate=D.public_key, attested_by="hospital-1", **COURT),
        grpc.StatusCode.PERMISSION_DENIED,
        "does not carry the capability",
    )
    assert size(op) == before
    assert connect(ledger, party="insurer-1").check_access(NEWBORN.public_key, action="access", purpose="HPAYMT", data=[LAB]).permitted
    (dv,) = connect(ledger, patient=NEWBORN).list_consents(NEWBORN.public_key).delegations
    assert dv.delegation_id == did and dv.state == "active"
    # The registration shows its capabilities.
    regs = [v for v in connect(ledger, party=AUDITOR).ledger.get_entries(0, size(op)) if v.leaf.payload_type == payloads.PARTY_REGISTRATION]
    assert "capabilities attest-guardianship" in entry_summary(regs[0]) and "capabilities" not in entry_summary(regs[-1])
    assert Auditor(connect(ledger, party=AUDITOR).ledger).run().ok


def test_the_patient_is_pushed_and_shown_the_attestation_and_may_revoke_it_once_she_signs(ledger):
    op = connect(ledger, party=OPERATOR)
    register(op, "hospital-1", "hospital", HOSPITAL, capabilities=[ATTEST])
    newborn = connect(ledger, patient=NEWBORN)
    p = NEWBORN.public_key
    pushed: list = []
    ready = threading.Event()

    def watch() -> None:
        ready.set()
        for v in newborn.watch_patient(p, timeout=10):
            pushed.append(v)
            return

    t = threading.Thread(target=watch)
    t.start()
    ready.wait()
    time.sleep(0.3)
    did, receipt = connect(ledger, party="hospital-1").delegate(HOSPITAL, patient=p, delegate=D.public_key, attested_by="hospital-1", **COURT)
    t.join(10)
    assert [v.index for v in pushed] == [receipt.entry.index]
    assert pushed[0].envelope.payload_type == payloads.DELEGATION and payloads.consent_id(pushed[0].envelope.payload) == did

    (dv,) = newborn.list_consents(p).delegations
    assert dv.delegation_id == did and dv.delegation.attested_by == "hospital-1" and dv.state == "active"

    # Grown up, she signs: she revokes what was attested for her.
    newborn.revoke(NEWBORN, did, "I sign for myself now")
    (dv,) = newborn.list_consents(p).delegations
    assert dv.state == "revoked"
    refused(lambda: connect(ledger, patient=D).grant(D, for_patient=p, grantee="org:hospital-1", **GRANT), grpc.StatusCode.PERMISSION_DENIED, "revoked")
    # And no organisation can attest a guardian for her any more.
    refused(
        lambda: connect(ledger, party="hospital-1").delegate(HOSPITAL, patient=p, delegate=D.public_key, attested_by="hospital-1", **{**COURT, "evidence_reference": "another order"}),
        grpc.StatusCode.PERMISSION_DENIED,
        "already signed an entry",
    )
    assert Auditor(connect(ledger, party=AUDITOR).ledger).run().ok


def test_concurrent_attestation_and_patient_entry_in_one_batch(ledger):
    """The rule is checked again atomically with the batch: of a patient's own entry and an attestation for her
    racing in, the attestation is logged only if it comes first."""
    op = connect(ledger, party=OPERATOR)
    register(op, "hospital-1", "hospital", HOSPITAL, capabilities=[ATTEST])
    consents = ledger.service.consents
    p = NEWBORN.public_key
    own = payloads.build_delegation(patient=p, delegate=D.public_key, relationship="proxy", scope=["grant"])
    attested = payloads.build_delegation(patient=p, delegate=D.public_key, attested_by="hospital-1", **COURT)  # type: ignore[arg-type]
    from consent_ledger.core.envelope import parse_envelope, sign_envelope

    envs = [
        parse_envelope(sign_envelope(payloads.DELEGATION, own, [NEWBORN])),
        parse_envelope(sign_envelope(payloads.DELEGATION, attested, [HOSPITAL])),
    ]
    refused_ = consents.admit(envs)
    assert list(refused_) == [envs[1].sha256] and "already signed an entry" in str(refused_[envs[1].sha256])
    assert consents.admit(list(reversed(envs))) == {}


def test_the_auditor_flags_an_attestation_that_breaks_the_rule(ledger, monkeypatch):
    """A dishonest (or buggy) ledger logs an attestation by an organisation without the capability: the audit
    replays the log and names it."""
    op = connect(ledger, party=OPERATOR)
    register(op, "insurer-1", "insurer", INSURER)
    monkeypatch.setattr(ConsentLedger, "_check_attestation", lambda self, env, p, *, signed_before: None)
    _, receipt = connect(ledger, party="insurer-1").delegate(
        INSURER, patient=ALICE.public_key, delegate=D.public_key, attested_by="insurer-1", **COURT
    )
    report = Auditor(connect(ledger, party=AUDITOR).ledger).run()
    assert not report.ok and report.finding is not None
    assert report.finding.index == receipt.entry.index
    assert "attestation rule" in report.finding.problem and "capability" in report.finding.problem


def test_the_signers_migration_indexes_an_existing_log(database_url):
    """Migration 0008 builds the signers index from the bodies of a log written before it."""
    from alembic import command
    from sqlalchemy import select

    from consent_ledger.storage import schema
    from consent_ledger.storage.engine import make_engine
    from consent_ledger.storage.migration import alembic_config

    with running_server(database_url) as server:
        op = connect(server, party=OPERATOR)
        register(op, "hospital-1", "hospital", HOSPITAL, capabilities=[ATTEST])
        connect(server, patient=ALICE).grant(ALICE, grantee="org:hospital-1", **GRANT)
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            first = dict(conn.execute(select(schema.signers.c.signer, schema.signers.c.idx)).all())
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0007")
            conn.commit()
    finally:
        engine.dispose()
    with running_server(database_url) as server:  # migrates to the head again, indexing the existing bodies
        with server.service.ledger.store.connect() as conn:
            again = {bytes(k): i for k, i in conn.execute(select(schema.signers.c.signer, schema.signers.c.idx)).all()}
        assert again == {bytes(k): i for k, i in first.items()}
        assert ALICE.public_key in again and log_signer().public_key in again
        refused(
            lambda: connect(server, party="hospital-1").delegate(HOSPITAL, patient=ALICE.public_key, delegate=D.public_key, attested_by="hospital-1", **COURT),
            grpc.StatusCode.PERMISSION_DENIED,
            "already signed an entry",
        )
