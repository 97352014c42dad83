"""The consent story of the README demo, end to end over gRPC on a real database, every answer verified."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest

from consent_ledger.app.errors import AlreadyExists
from consent_ledger.app.sequencer import Appended
from consent_ledger.core import payloads
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.envelope import sign_envelope
from consent_ledger.core.payloads import DataItem, Period
from consent_ledger.v1 import payloads_pb2 as pb
from consent_ledger_client import ConsentClient

from .server_support import OPERATOR, connect, log_signer, running_server

PATIENT = Ed25519PrivateKey.from_seed(b"\x31" * 32)
HOSPITAL = Ed25519PrivateKey.from_seed(b"\x32" * 32)
INSURER = Ed25519PrivateKey.from_seed(b"\x33" * 32)
ED = Ed25519PrivateKey.from_seed(b"\x34" * 32)
LAB = DataItem("laboratory-results")
MH_NOTES = DataItem("clinical-notes", ("MH",))
YEAR_MS = 365 * 24 * 3600 * 1000


@pytest.fixture
def ledger(database_url):
    with running_server(database_url) as server:
        yield server


def client(server, party: str | None = None, patient: Ed25519PrivateKey | None = None) -> ConsentClient:
    return connect(server, party=party, patient=patient)


def test_the_story(ledger):
    operator = client(ledger, OPERATOR)
    operator.register_party(log_signer().private_key, party_id="hospital-1", roles=["hospital"], public_keys=[HOSPITAL.public_key], display_name="General Hospital")
    operator.register_party(log_signer().private_key, party_id="insurer-1", roles=["insurer"], public_keys=[INSURER.public_key], display_name="Acme Insurance")
    operator.register_party(log_signer().private_key, party_id="ed-1", roles=["hospital"], public_keys=[ED.public_key], display_name="City ED")
    patient = client(ledger, patient=PATIENT)
    hospital, insurer, ed = client(ledger, "hospital-1"), client(ledger, "insurer-1"), client(ledger, "ed-1")
    now = int(time.time() * 1000)
    p = PATIENT.public_key

    treat_id, _ = patient.grant(
        PATIENT, grantee="org:hospital-1", actions=["access"], purposes=["TREAT"],
        data_classes=["laboratory-results", "imaging"], validity=Period(now - 1000, now + YEAR_MS),
    )
    d = hospital.check_access(p, action="access", purpose="TREAT", data=[LAB, DataItem("imaging")])
    assert d.permitted and d.decision.consent_ids == (treat_id,)

    refused = insurer.check_access(p, action="access", purpose="HPAYMT", data=[LAB])
    assert refused.decision.decision == "DENY"
    assert not refused.decision.consent_ids, "a refusal must not reveal the hospital's consent"
    assert all("hospital" not in r.text for o in refused.decision.outcomes for r in o.reasons)

    pay_id, _ = patient.grant(PATIENT, grantee="org:insurer-1", actions=["access"], purposes=["HPAYMT"], data_classes=["laboratory-results"])
    mixed = insurer.check_access(p, action="access", purpose="CLMATTCH", data=[LAB, MH_NOTES], record=True)
    assert mixed.decision.decision == "PARTIAL"
    assert [o.decision for o in mixed.decision.outcomes] == ["PERMIT", "DENY"]
    assert mixed.access_event_index is not None
    # The insurer also records, with its own key, that it read the permitted lab results.
    recorded = insurer.record_access(INSURER, mixed)
    assert recorded.entry.envelope is not None and recorded.entry.envelope.signers == (INSURER.public_key,)
    # Nobody else may record an access in the insurer's name.
    with pytest.raises(grpc.RpcError) as err:
        insurer.record_access(HOSPITAL, mixed)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not signed by a key of organisation insurer-1" in (err.value.details() or "")

    # The insurer watches revocations that concern it; the revocation must arrive promptly.
    seen: list[int] = []
    ready = threading.Event()

    def watch() -> None:
        ready.set()
        for v in insurer.watch_revocations(timeout=10):
            seen.append(v.index)
            return

    t = threading.Thread(target=watch)
    t.start()
    ready.wait()
    time.sleep(0.3)
    revoked = patient.revoke(PATIENT, pay_id, "I changed insurer")
    t.join(10)
    assert seen == [revoked.index]
    after = insurer.check_access(p, action="access", purpose="HPAYMT", data=[LAB])
    assert after.decision.decision == "DENY"

    glass = ed.check_access(p, action="access", purpose="ETREAT", data=[MH_NOTES], break_glass=True, break_glass_reason="unconscious patient, suspected overdose", record=True)
    assert glass.permitted
    assert glass.decision.break_glass_until_ms > glass.decision.request.time_ms
    assert {o.code for o in glass.decision.obligations} >= {"record-access-event", "notify-patient", "review-queue"}

    events, _ = patient.access_events(p)
    assert [(e.party_id, e.decision, [d.data_class for d in e.data]) for _, e in events] == [
        ("insurer-1", "PARTIAL", ["laboratory-results", "clinical-notes"]),  # recorded by the ledger with the check
        ("insurer-1", "PARTIAL", ["laboratory-results"]),  # recorded by the insurer: only what it accessed
        ("ed-1", "PERMIT", ["clinical-notes"]),
    ]
    listing = patient.list_consents(p)
    assert {c.consent_id: c.state for c in listing.consents} == {treat_id: "active", pay_id: "revoked"}


def test_unregistered_organisation_is_refused(ledger):
    with pytest.raises(grpc.RpcError) as err:
        client(ledger, "nobody").check_access(PATIENT.public_key, action="access", purpose="TREAT", data=[LAB])
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_validation_errors_append_nothing(ledger):
    c = client(ledger, OPERATOR)
    other = Ed25519PrivateKey.from_seed(b"\x35" * 32)
    before = c.ledger.checkpoint().note
    cases = [
        (lambda: c.revoke(PATIENT, "ab" * 32), grpc.StatusCode.NOT_FOUND),
        (lambda: c.register_party(PATIENT, party_id="x", roles=["hospital"], public_keys=[PATIENT.public_key], display_name="X"), grpc.StatusCode.PERMISSION_DENIED),
    ]
    gid, _ = c.grant(PATIENT, grantee="any", actions=["access"], purposes=["TREAT"], data_classes=["imaging"])
    before = c.ledger.checkpoint().note
    cases.append((lambda: c.revoke(other, gid), grpc.StatusCode.PERMISSION_DENIED))
    cases.append((lambda: c.grant(PATIENT, grantee="any", actions=["access"], purposes=["TREAT"], data_classes=["imaging"], supersedes=gid), None))
    # Payloads the builders would refuse, signed and sent anyway: the server refuses them the same way.
    base = dict(patient=PATIENT.public_key, grantee="org:h", decision=pb.CONSENT_DECISION_PERMIT, actions=["access"],
                purposes=["TREAT"], data_classes=["imaging"], issued_at_ms=1, nonce=b"\x00" * 16)  # fmt: skip
    bad_grants = {
        "validity ends before it starts": {**base, "validity": pb.Period(start_ms=2000, end_ms=1000)},
        "unknown purpose": {**base, "purposes": ["NOTAPURPOSE"]},
        "empty grantee": {**base, "grantee": ""},
        "unknown data class": {**base, "data_classes": ["x-rays-of-the-soul"]},
        "oversized list": {**base, "purposes": ["TREAT"] * 40},
        "retired label": {**base, "sensitivity_labels": ["SICKLE"]},
    }
    for fields in bad_grants.values():
        payload = pb.ConsentGrant(**fields).SerializeToString(deterministic=True)
        env = sign_envelope(payloads.CONSENT_GRANT, payload, [PATIENT])
        cases.append((lambda env=env: c.ledger.submit(env), grpc.StatusCode.INVALID_ARGUMENT))
    for call, code in cases:
        if code is None:
            call()  # a valid superseding grant: it moves the log on, so take the new checkpoint as the baseline
            before = c.ledger.checkpoint().note
            continue
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == code, err.value.details()
        assert err.value.details()
    assert c.ledger.checkpoint().note == before


def test_two_envelopes_of_one_consent_racing_in_are_logged_once(ledger):
    """Validation refuses a consent already logged, but two different envelopes of one payload can both pass it
    before either is logged; the sequencer refuses the second atomically with its batch."""
    payload = payloads.build_grant(patient=PATIENT.public_key, grantee="org:h", actions=["access"],
                                   purposes=["TREAT"], data_classes=["imaging"])  # fmt: skip
    other = Ed25519PrivateKey.from_seed(b"\x36" * 32)
    first = sign_envelope(payloads.CONSENT_GRANT, payload, [PATIENT])
    second = sign_envelope(payloads.CONSENT_GRANT, payload, [PATIENT, other])  # another envelope, same consent id
    service = ledger.service.ledger
    parsed = [service.validate(first), service.validate(second)]  # both pass: neither is in the log yet

    async def both():  # type: ignore[no-untyped-def]
        return await asyncio.gather(*(service.sequencer.append(p) for p in parsed), return_exceptions=True)

    done, refused = asyncio.run_coroutine_threadsafe(both(), ledger.loop).result(10)
    assert isinstance(done, Appended) and not done.duplicate
    assert isinstance(refused, AlreadyExists) and payloads.consent_id(payload) in str(refused)
    c = client(ledger, patient=PATIENT)
    assert [v.consent_id for v in c.list_consents(PATIENT.public_key).consents] == [payloads.consent_id(payload)]
    with pytest.raises(grpc.RpcError) as err:  # and later on, validation refuses it
        c.ledger.submit(second)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
