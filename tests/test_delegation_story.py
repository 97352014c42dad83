"""Delegation end to end over gRPC on every database: guardians and proxies sign for a patient while a delegation
is in force, organisations attest guardians for patients without a key, and clients verify all of it."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest

from consent_ledger.core import payloads
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.envelope import parse_envelope, sign_envelope
from consent_ledger.core.payloads import DataItem, Period
from consent_ledger.presentation import (
    consent_view_line,
    delegation_view_line,
    describe_entry,
)
from consent_ledger.v1 import payloads_pb2 as pb
from consent_ledger_client import (
    ConsentClient,
    DecisionMismatch,
    IncompleteEvidence,
)
from consent_ledger_client.audit import Auditor

from .server_support import OPERATOR, connect, log_signer, running_server
from .tamper_support import TamperProxy

PATIENT = Ed25519PrivateKey.from_seed(b"\x71" * 32)
CHILD = Ed25519PrivateKey.from_seed(b"\x72" * 32)  # a minor: the key exists, nobody holds it yet
GUARDIAN = Ed25519PrivateKey.from_seed(b"\x73" * 32)
PROXY = Ed25519PrivateKey.from_seed(b"\x74" * 32)
HOSPITAL = Ed25519PrivateKey.from_seed(b"\x75" * 32)
INSURER = Ed25519PrivateKey.from_seed(b"\x76" * 32)
STRANGER = Ed25519PrivateKey.from_seed(b"\x77" * 32)
LAB = DataItem("laboratory-results")
DAY = 24 * 3600 * 1000
GRANT = dict(grantee="org:insurer-1", actions=["access"], purposes=["HPAYMT"], data_classes=["laboratory-results"])


def client(server, party: str = OPERATOR) -> ConsentClient:
    """The operator's console by default (it submits every kind of entry and reads everything); an organisation
    by its party id. What a patient or a delegate may do alone is walked in tests/test_authorization.py."""
    return connect(server, party=party)


def register(c: ConsentClient) -> None:
    op = log_signer().private_key
    # The operator lets the hospital attest guardians (no organisation may by default).
    c.register_party(
        op, party_id="hospital-1", roles=["hospital"], public_keys=[HOSPITAL.public_key], display_name="H",
        capabilities=["attest-guardianship"],
    )
    c.register_party(op, party_id="insurer-1", roles=["insurer"], public_keys=[INSURER.public_key], display_name="I")


def refused(call: Callable[[], object], code: grpc.StatusCode, match: str = "") -> str:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    details = err.value.details() or ""
    assert match in details, details
    return details


@pytest.fixture
def ledger(database_url):
    with running_server(database_url) as server:
        yield server


def test_guardian_grants_and_everyone_sees_who_signed(ledger):
    c = client(ledger)
    register(c)
    p = PATIENT.public_key
    did, _ = c.delegate(PATIENT, delegate=GUARDIAN.public_key, relationship="guardian", scope=["*"])
    cid, receipt = c.grant(GUARDIAN, for_patient=p, **GRANT)
    assert receipt.entry.envelope is not None and receipt.entry.envelope.signers == (GUARDIAN.public_key,)
    assert any("signed by" in line and "delegate" in line for line in describe_entry(receipt.entry))

    # The insurer's verified check permits on the guardian's grant; the delegation is in the evidence.
    d = client(ledger, "insurer-1").check_access(p, action="access", purpose="HPAYMT", data=[LAB])
    assert d.permitted and d.decision.consent_ids == (cid,)
    kinds = [e.leaf.payload_type for e in d.evidence]
    assert payloads.DELEGATION in kinds

    # The patient's listing shows the delegation and who signed the grant.
    listing = c.list_consents(p)
    (view,) = listing.consents
    assert view.state == "active" and view.signed_by is not None
    assert (view.signed_by.delegate, view.signed_by.delegation_id, view.signed_by.relationship) == (GUARDIAN.public_key, did, "guardian")
    assert f"signed by delegate ed25519:{GUARDIAN.public_key.hex()[:16]}... (guardian, delegation {did[:12]}...)" in consent_view_line(view)
    (dv,) = listing.delegations
    assert dv.delegation_id == did and dv.state == "active" and "guardian" in delegation_view_line(dv)

    # The guardian revokes too (scope *); the patient's listing checks who signed the revocation.
    rv = c.revoke(GUARDIAN, cid, "moved", for_patient=p)
    listing = c.list_consents(p)
    assert listing.consents[0].state == "revoked"
    assert listing.revocation_signers and listing.revocation_signers[rv.index].delegate == GUARDIAN.public_key

    # The authorisation layer's question.
    now = int(time.time() * 1000)
    consents = ledger.service.consents
    assert consents.delegate_in_force(p, GUARDIAN.public_key, now)
    assert consents.delegate_in_force(p, GUARDIAN.public_key, now, "grant")
    assert not consents.delegate_in_force(p, PROXY.public_key, now)
    assert not consents.delegate_in_force(p, GUARDIAN.public_key, now - 3_600_000), "not yet in the log then"

    assert Auditor(c.ledger).run().ok


def test_a_proxy_outside_its_scope_is_refused(ledger):
    c = client(ledger)
    register(c)
    p = PATIENT.public_key
    gid, _ = c.grant(PATIENT, **GRANT)
    c.delegate(PATIENT, delegate=PROXY.public_key, relationship="proxy", scope=["revoke"])
    refused(lambda: c.grant(PROXY, for_patient=p, **{**GRANT, "data_classes": ["imaging"]}), grpc.StatusCode.PERMISSION_DENIED, "does not cover grant")
    refused(lambda: c.grant(PROXY, for_patient=p, **GRANT, supersedes=gid), grpc.StatusCode.PERMISSION_DENIED, "does not cover grant")
    refused(lambda: c.grant(STRANGER, for_patient=p, **GRANT), grpc.StatusCode.PERMISSION_DENIED, "holds no delegation")
    c.revoke(PROXY, gid, for_patient=p)
    assert c.list_consents(p).consents[0].state == "revoked"
    now = int(time.time() * 1000)
    assert ledger.service.consents.delegate_in_force(p, PROXY.public_key, now, "revoke")
    assert not ledger.service.consents.delegate_in_force(p, PROXY.public_key, now, "grant")


@pytest.mark.parametrize(
    ("terms", "why"),
    [
        ({"validity": Period(1_000, 2_000)}, "validity period has ended"),
        ({"validity": Period(4_000_000_000_000, 0)}, "had not started"),
        ({"majority_date_ms": 1_000_000}, "majority date"),
    ],
    ids=["expired", "not yet valid", "past the majority date"],
)
def test_a_delegate_outside_its_period_is_refused(ledger, terms, why):
    c = client(ledger)
    c.delegate(PATIENT, delegate=GUARDIAN.public_key, relationship="guardian", scope=["*"], **terms)
    refused(lambda: c.grant(GUARDIAN, for_patient=PATIENT.public_key, **GRANT), grpc.StatusCode.PERMISSION_DENIED, why)
    assert not ledger.service.consents.delegate_in_force(PATIENT.public_key, GUARDIAN.public_key, int(time.time() * 1000))


def test_a_revoked_delegation_is_refused_and_only_the_patient_revokes_it(ledger):
    c = client(ledger)
    p = PATIENT.public_key
    did, _ = c.delegate(PATIENT, delegate=GUARDIAN.public_key, relationship="guardian", scope=["*"])
    c.grant(GUARDIAN, for_patient=p, **GRANT)
    refused(lambda: c.revoke(GUARDIAN, did, for_patient=p), grpc.StatusCode.PERMISSION_DENIED, "only its patient may")
    refused(lambda: c.revoke(STRANGER, did), grpc.StatusCode.PERMISSION_DENIED, "another patient's")
    c.revoke(PATIENT, did, "no longer needed")
    refused(lambda: c.grant(GUARDIAN, for_patient=p, **{**GRANT, "grantee": "any"}), grpc.StatusCode.PERMISSION_DENIED, "revoked")
    assert not ledger.service.consents.delegate_in_force(p, GUARDIAN.public_key, int(time.time() * 1000))
    listing = c.list_consents(p)
    (dv,) = listing.delegations
    assert dv.state == "revoked" and dv.revoked_by_index is not None
    # The grant signed while the delegation was in force stands, and still shows who signed it.
    assert listing.consents[0].state == "active" and listing.consents[0].signed_by is not None
    assert Auditor(c.ledger).run().ok


def test_an_organisation_attests_a_guardian_for_a_patient_without_a_key(ledger):
    c = client(ledger)
    register(c)
    child = CHILD.public_key
    majority = int(time.time() * 1000) + 10 * 365 * DAY
    did, _ = c.delegate(
        HOSPITAL, patient=child, delegate=GUARDIAN.public_key, relationship="guardian", scope=["*"],
        majority_date_ms=majority, evidence_reference="birth register 2026/123", attested_by="hospital-1",
    )  # fmt: skip
    (dv,) = c.list_consents(child).delegations  # verified on its own: signed by a key of hospital-1
    assert dv.state == "active" and dv.delegation.attested_by == "hospital-1"
    cid, _ = c.grant(GUARDIAN, for_patient=child, **GRANT)
    d = client(ledger, "insurer-1").check_access(child, action="access", purpose="HPAYMT", data=[LAB])
    assert d.permitted and d.decision.consent_ids == (cid,)
    listing = c.list_consents(child)
    assert listing.consents[0].signed_by is not None and listing.consents[0].signed_by.delegation_id == did
    assert "attested by hospital-1" in delegation_view_line(listing.delegations[0])
    # The attesting organisation may end what it attested; then the guardian signs nothing more.
    c.revoke(HOSPITAL, did, "court order ended", for_patient=child)
    listing = c.list_consents(child)
    assert listing.delegations[0].state == "revoked" and listing.consents[0].state == "active"
    refused(lambda: c.grant(GUARDIAN, for_patient=child, **{**GRANT, "grantee": "any"}), grpc.StatusCode.PERMISSION_DENIED, "revoked")
    assert Auditor(c.ledger).run().ok


def test_attestations_and_delegations_signed_by_the_wrong_key_are_refused(ledger):
    c = client(ledger)
    register(c)
    child, g = CHILD.public_key, GUARDIAN.public_key
    attest = dict(patient=child, delegate=g, relationship="guardian", scope=["*"], evidence_reference="ref 1")
    refused(lambda: c.delegate(STRANGER, **attest, attested_by="clinic-9"), grpc.StatusCode.PERMISSION_DENIED, "not registered")
    refused(lambda: c.delegate(STRANGER, **attest, attested_by="hospital-1"), grpc.StatusCode.PERMISSION_DENIED, "not signed by a key of hospital-1")
    refused(lambda: c.delegate(GUARDIAN, patient=child, delegate=PROXY.public_key, relationship="proxy", scope=["*"]), grpc.StatusCode.PERMISSION_DENIED, "signed by the patient's own key")
    # Malformed attestations, signed and sent anyway: INVALID_ARGUMENT.
    base = dict(patient=child, delegate=g, relationship="guardian", scope=["*"], attested_by="hospital-1", issued_at_ms=1, nonce=b"\x00" * 16)
    for fields in ({**base}, {**base, "relationship": "proxy", "evidence_reference": "x"}):
        env = sign_envelope(payloads.DELEGATION, pb.Delegation(**fields).SerializeToString(deterministic=True), [HOSPITAL])
        refused(lambda env=env: c.ledger.submit(env), grpc.StatusCode.INVALID_ARGUMENT)


def test_client_notices_a_delegation_stripped_from_the_evidence(ledger):
    c = client(ledger)
    register(c)
    p = PATIENT.public_key
    c.delegate(PATIENT, delegate=GUARDIAN.public_key, relationship="guardian", scope=["grant"])
    c.grant(GUARDIAN, for_patient=p, **GRANT)

    def strip(resp):
        keep = [e for e in resp.evidence if parse_envelope(e.entry.envelope).payload_type != payloads.DELEGATION]
        assert len(keep) < len(resp.evidence), "no delegation in the evidence to strip"
        del resp.evidence[:]
        resp.evidence.extend(keep)

    with TamperProxy(ledger.target) as proxy:
        insurer = connect(proxy.target, party="insurer-1")
        ask = lambda: insurer.check_access(p, action="access", purpose="HPAYMT", data=[LAB])  # noqa: E731
        assert ask().permitted
        with proxy.tampering("CheckAccess", strip), pytest.raises((IncompleteEvidence, DecisionMismatch)):
            ask()
