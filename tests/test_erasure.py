"""Body erasure, end to end over gRPC on each database: the operator erases a body that is no longer evidence, the
body goes in the batch's transaction, every proof still verifies, every reader copes; refused cases append nothing;
a client and an auditor notice a body withheld as "erased" without an Erasure entry recording it."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import delete, insert, select, update

from consent_ledger.core import payloads
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.envelope import sign_envelope
from consent_ledger.core.errors import InvalidInput
from consent_ledger.core.payloads import DataItem
from consent_ledger.storage import schema
from consent_ledger_client import ConsentClient, UnrecordedErasure
from consent_ledger_client.audit import Auditor
from consent_ledger_client.bundle import export_consent_bundle

from .server_support import OPERATOR as OPERATOR_NAME
from .server_support import connect, log_signer, log_verifier_key, running_server

PATIENT = Ed25519PrivateKey.from_seed(b"\x81" * 32)
HOSPITAL = Ed25519PrivateKey.from_seed(b"\x82" * 32)
OPERATOR = log_signer().private_key
LAB = DataItem("laboratory-results")


def client(server, party: str = OPERATOR_NAME) -> ConsentClient:
    """The operator's console by default; an organisation by party id."""
    return connect(server, party=party)


@pytest.fixture
def ledger(database_url):
    with running_server(database_url) as server:
        client(server).register_party(OPERATOR, party_id="hospital-1", roles=["hospital"], public_keys=[HOSPITAL.public_key], display_name="General")
        yield server


def _grant(c: ConsentClient) -> tuple[str, int]:
    cid, receipt = c.grant(PATIENT, grantee="org:hospital-1", actions=["access"], purposes=["TREAT"], data_classes=["laboratory-results"])
    return cid, receipt.index


def _status(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def test_erasure_blanks_the_body_and_every_proof_still_verifies(ledger):
    c, hospital = client(ledger), client(ledger, "hospital-1")
    p = PATIENT.public_key
    cid, g = _grant(c)
    # The access check caches the grant's entry; the erasure must drop it.
    assert hospital.check_access(p, action="access", purpose="TREAT", data=[LAB]).permitted
    assert ledger.service.consents._entry_cache.get(g) is not None
    revocation = c.revoke(PATIENT, cid, "moved away").index
    leaf_before = c.ledger.get_entry(g).leaf_bytes

    erasure = c.erase(OPERATOR, g, reason="entered in error")
    assert erasure.entry.index > revocation
    assert ledger.service.consents._entry_cache.get(g) is None
    with ledger.service.ledger.store.connect() as conn:
        row = conn.execute(select(schema.bodies).where(schema.bodies.c.idx == g)).one()
    assert row.envelope is None and row.erased_reason == "entered in error"

    # GetEntry and GetEntries: the leaf, proven, with its verified Erasure record; no body.
    got = c.ledger.get_entry(g)
    assert got.envelope is None and got.erased_by == erasure.entry.index and got.leaf_bytes == leaf_before
    ranged = {e.index: e for e in c.ledger.get_entries(0, erasure.entry.index + 1)}
    assert ranged[g].envelope is None and ranged[g].erased_by == erasure.entry.index
    assert ranged[revocation].envelope is not None

    # Readers cope: the patient's listing shows the erased entry apart, the revocation stays; bundles refuse it.
    listing = c.list_consents(p)
    assert [v.index for v in listing.erased] == [g] and listing.consents == ()
    assert [v.index for v in listing.revocations] == [revocation]
    with pytest.raises(InvalidInput, match="erased"):
        export_consent_bundle(got, b"", log_verifier_key())
    # The revocation could not go before its grant; now it may.
    erased_revocation = c.erase(OPERATOR, revocation, reason="retention period over")
    assert c.list_consents(p).revocations == ()
    # Access checks go on (nothing in force was touched), and the audit passes, counting the erased bodies.
    assert not hospital.check_access(p, action="access", purpose="TREAT", data=[LAB]).permitted
    report = Auditor(c.ledger).run()
    assert report.ok, report.finding
    assert report.erased == 2 and report.by_kind[payloads.ERASURE] == 2
    assert erased_revocation.entry.index in {e.index for e in c.ledger.get_entries(0, 100)}


def test_erasure_refusals_append_nothing(ledger):
    c, hospital = client(ledger), client(ledger, "hospital-1")
    cid, g = _grant(c)
    sc = ledger.service.consents.state.latest.index
    cid2, g2 = _grant(c)
    r2 = c.revoke(PATIENT, cid2).index
    before = c.ledger.checkpoint().note
    cases = [
        (lambda: c.erase(HOSPITAL, g, reason="x"), grpc.StatusCode.PERMISSION_DENIED, "only the ledger operator"),
        (lambda: c.erase(PATIENT, g, reason="x"), grpc.StatusCode.PERMISSION_DENIED, "only the ledger operator"),
        # Signed and sent as is (the client library would not build it: it reads the body it erases first).
        (lambda: c.ledger.submit(sign_envelope(payloads.ERASURE, payloads.build_erasure(index=10_000, reason="x"), [OPERATOR])),
         grpc.StatusCode.FAILED_PRECONDITION, "cannot erase entry 10000: the log has"),
        (lambda: c.erase(OPERATOR, 0, reason="x"), grpc.StatusCode.FAILED_PRECONDITION, "party registration"),
        (lambda: c.erase(OPERATOR, sc, reason="x"), grpc.StatusCode.FAILED_PRECONDITION, "state commit"),
        (lambda: c.erase(OPERATOR, g, reason="x"), grpc.StatusCode.FAILED_PRECONDITION, "still in force"),
        (lambda: c.erase(OPERATOR, r2, reason="x"), grpc.StatusCode.FAILED_PRECONDITION, f"erase entry {g2} first"),
    ]
    for call, code, words in cases:
        err = _status(call)
        assert err.code() == code and words in err.details(), err.details()
    assert c.ledger.checkpoint().note == before

    # An erasure, and the very same envelope again (deduplicated); another erasure of it is refused.
    envelope = sign_envelope(payloads.ERASURE, c.erasure_payload(g2, "entered in error"), [OPERATOR])
    first = c.ledger.submit(envelope)
    again = c.ledger.submit(envelope)
    assert again.duplicate and again.index == first.index
    err = _status(lambda: c.erase(OPERATOR, g2, reason="again"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "already erased" in err.details()
    err = _status(lambda: c.erase(OPERATOR, first.index, reason="x"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "an erasure" in err.details()
    # The revocation may go now, but only with the facts an auditor replays the consent state from.
    bare = sign_envelope(payloads.ERASURE, payloads.build_erasure(index=r2, reason="x"), [OPERATOR])
    err = _status(lambda: c.ledger.submit(bare))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and f"ends {cid2}" in err.details()
    c.erase(OPERATOR, r2, reason="retention period over")

    # A break-glass access is evidence until it is reviewed; then its body may go, and the review stays.
    glass = hospital.check_access(PATIENT.public_key, action="access", purpose="ETREAT", data=[DataItem("imaging")], break_glass=True, break_glass_reason="trauma")
    assert glass.decision.break_glass_until_ms > 0
    event = glass.access_event_index
    err = _status(lambda: c.erase(OPERATOR, event, reason="x"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "review it first" in err.details()
    review = c.review_break_glass(OPERATOR, event, outcome="justified").entry.index
    c.erase(OPERATOR, event, reason="retention period over")
    view = {v.index: v for v in c.list_access_events(PATIENT.public_key).events}[event]
    assert view.event is None and view.review_state == "justified" and view.review.entry.index == review
    (item,) = c.break_glass_queue().items
    assert item.index == event and item.event is None and item.entry.erased_by is not None
    assert Auditor(c.ledger).run().ok


def test_a_body_withheld_without_an_erasure_entry_is_noticed(ledger):
    c = client(ledger)
    cid, g = _grant(c)
    c.revoke(PATIENT, cid)
    store = ledger.service.ledger.store
    # Storage loses (or the server hides) a body with no Erasure entry: the client refuses "erased" on its word.
    with store.begin() as conn:
        conn.execute(update(schema.bodies).where(schema.bodies.c.idx == g).values(envelope=None))
    with pytest.raises(UnrecordedErasure, match=f"entry {g}: the server says its body was erased, but it names no"):
        client(ledger).ledger.get_entry(g)
    with pytest.raises(UnrecordedErasure):
        client(ledger).list_consents(PATIENT.public_key)
    report = Auditor(client(ledger).ledger).run()
    assert not report.ok and report.finding.index == g
    assert "erased body without an Erasure entry" in report.finding.problem

    # Naming some other entry as the record does not help: it must be an operator's Erasure of this entry.
    with store.begin() as conn:
        conn.execute(insert(schema.erasures).values(idx=g, erasure_idx=g + 1))
    with pytest.raises(UnrecordedErasure, match=f"entry {g + 1}, named as the record, is not an Erasure entry"):
        client(ledger).ledger.get_entry(g)
    report = Auditor(client(ledger).ledger).run()
    assert not report.ok and report.finding.index == g and report.finding.evidence == {"erased_by_index": str(g + 1)}


def test_an_erasure_whose_body_is_still_served_is_found(ledger):
    c = client(ledger)
    cid, g = _grant(c)
    c.revoke(PATIENT, cid)
    store = ledger.service.ledger.store
    with store.connect() as conn:
        body = conn.execute(select(schema.bodies.c.envelope).where(schema.bodies.c.idx == g)).scalar()
    erasure = c.erase(OPERATOR, g, reason="entered in error").entry.index
    # The operator records the erasure but keeps serving the body.
    with store.begin() as conn:
        conn.execute(update(schema.bodies).where(schema.bodies.c.idx == g).values(envelope=body))
        conn.execute(delete(schema.erasures).where(schema.erasures.c.idx == g))
    report = Auditor(client(ledger).ledger).run()
    assert not report.ok and report.finding.index == erasure
    assert "still serves its body" in report.finding.problem
