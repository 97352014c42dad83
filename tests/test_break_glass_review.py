"""Break-glass review, end to end over gRPC on each database: a break-glass permit is recorded in the same call and
pushed to the patient, enters the review queue, and leaves it once an operator reviews it; the patient sees the
review state; every review the client accepts is proven and an operator's."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from sqlalchemy import update

from consent_ledger.core import payloads
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.envelope import sign_envelope
from consent_ledger.core.errors import VerificationError
from consent_ledger.core.payloads import DataItem
from consent_ledger.storage import schema
from consent_ledger_client import ConsentClient
from consent_ledger_client.audit import Auditor

from .server_support import OPERATOR, ledger_client, log_signer, running_server

PATIENT = Ed25519PrivateKey.from_seed(b"\x71" * 32)
ED = Ed25519PrivateKey.from_seed(b"\x72" * 32)
INSURER = Ed25519PrivateKey.from_seed(b"\x73" * 32)
OFFICER = Ed25519PrivateKey.from_seed(b"\x74" * 32)  # a privacy officer: an operator key besides the log key
MH_NOTES = DataItem("clinical-notes", ("MH",))
LAB = DataItem("laboratory-results")


def client(
    server, party: str | None = None, *, patient: Ed25519PrivateKey | None = None, officer: bool = True
) -> ConsentClient:
    """The operator's console by default (the privacy officer's); an organisation by party id; a patient by key."""
    ledger = ledger_client(server, party=party or (None if patient else OPERATOR), patient=patient)
    return ConsentClient(ledger, operator_keys=[OFFICER.public_key] if officer else [])


@pytest.fixture
def ledger(database_url):
    with running_server(database_url, operator_keys=(OFFICER.public_key,)) as server:
        op = client(server)
        op.register_party(log_signer().private_key, party_id="ed-1", roles=["hospital"], public_keys=[ED.public_key], display_name="City ED")
        op.register_party(log_signer().private_key, party_id="insurer-1", roles=["insurer"], public_keys=[INSURER.public_key], display_name="Acme")
        yield server


def _break_glass(ed: ConsentClient, reason: str = "unconscious patient, suspected overdose"):
    return ed.check_access(
        PATIENT.public_key, action="access", purpose="ETREAT", data=[MH_NOTES], break_glass=True, break_glass_reason=reason
    )


def _status(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def test_break_glass_permit_is_recorded_pushed_and_queued(ledger):
    patient, ed, officer = client(ledger, patient=PATIENT), client(ledger, "ed-1"), client(ledger)
    p = PATIENT.public_key
    pushed: list = []
    ready = threading.Event()

    def watch() -> None:
        ready.set()
        for v in patient.watch_patient(p, timeout=10):
            pushed.append(v)
            return

    t = threading.Thread(target=watch)
    t.start()
    ready.wait()
    time.sleep(0.3)
    # record_access_event not asked: a break-glass permit is recorded all the same, in the same call.
    glass = _break_glass(ed)
    t.join(10)
    assert glass.permitted and glass.decision.break_glass_until_ms > 0
    assert glass.access_event_index is not None
    event_index = glass.access_event_index

    # The patient is notified through the watch: the pushed entry is that AccessEvent, verified.
    assert [v.index for v in pushed] == [event_index]
    event = payloads.parse_payload(pushed[0].envelope.payload_type, pushed[0].envelope.payload)
    assert isinstance(event, payloads.AccessEventPayload) and event.break_glass_access
    assert event.break_glass_reason == "unconscious patient, suspected overdose"
    assert log_signer().public_key in pushed[0].envelope.signers

    # It is in the unreviewed queue, and the patient sees it as unreviewed.
    queue = officer.break_glass_queue(unreviewed_only=True)
    assert [(v.index, v.review_state) for v in queue.items] == [(event_index, "unreviewed")]
    listing = patient.list_access_events(p)
    assert [(v.index, v.break_glass, v.review_state) for v in listing.events] == [(event_index, True, "unreviewed")]

    # An ordinary check records nothing unless asked; a recorded refusal is no break-glass access.
    ordinary = client(ledger, "insurer-1").check_access(p, action="access", purpose="HPAYMT", data=[LAB])
    assert ordinary.access_event_index is None
    refused = client(ledger, "insurer-1").check_access(p, action="access", purpose="HPAYMT", data=[LAB], record=True)
    assert refused.access_event_index is not None
    states = {v.index: v.review_state for v in patient.list_access_events(p).events}
    assert states == {event_index: "unreviewed", refused.access_event_index: "not-required"}
    assert [v.index for v in officer.break_glass_queue().items] == [event_index]


def test_review_by_an_operator_leaves_the_queue_and_shows_to_the_patient(ledger):
    patient, ed, officer = client(ledger, patient=PATIENT), client(ledger, "ed-1"), client(ledger)
    p = PATIENT.public_key
    first, second = _break_glass(ed).access_event_index, _break_glass(ed, "cardiac arrest").access_event_index
    assert first is not None and second is not None

    done = officer.review_break_glass(OFFICER, first, outcome="justified", notes="ED chart confirms the overdose")
    assert done.entry.index > first
    assert [v.index for v in officer.break_glass_queue(unreviewed_only=True).items] == [second]
    full = officer.break_glass_queue()
    assert [(v.index, v.review_state) for v in full.items] == [(first, "justified"), (second, "unreviewed")]
    assert full.items[0].review.entry.index == done.entry.index
    assert full.items[0].review.review.notes == "ED chart confirms the overdose"
    views = {v.index: v for v in patient.list_access_events(p).events}
    assert views[first].review_state == "justified" and views[first].review.entry.index == done.entry.index
    assert views[second].review_state == "unreviewed"

    # The log key is an operator key too; a page of one still pairs reviews with their events.
    officer.review_break_glass(log_signer().private_key, second, outcome="unjustified", notes="no emergency")
    page = officer.break_glass_queue(page_size=1)
    assert [v.review_state for v in page.items] == ["justified"] and page.next_page_token
    page2 = officer.break_glass_queue(page_size=1, page_token=page.next_page_token)
    assert [(v.index, v.review_state) for v in page2.items] == [(second, "unjustified")]
    assert officer.break_glass_queue(unreviewed_only=True).items == ()
    assert Auditor(officer.ledger).run().ok


def test_review_refusals(ledger):
    ed, officer = client(ledger, "ed-1"), client(ledger)
    event_index = _break_glass(ed).access_event_index
    assert event_index is not None
    before = officer.ledger.checkpoint().note

    # Only an operator key may review: not the hospital's, not the patient's.
    for key in (ED, PATIENT):
        err = _status(lambda key=key: officer.review_break_glass(key, event_index, outcome="justified"))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "only the ledger operator" in err.details()
    # Only a break-glass access event: not an index beyond the tree, not a grant, not an ordinary access event.
    err = _status(lambda: officer.review_break_glass(OFFICER, 10_000, outcome="justified"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert _status(lambda: officer.review_break_glass(OFFICER, 0, outcome="justified")).code() == grpc.StatusCode.FAILED_PRECONDITION
    assert officer.ledger.checkpoint().note == before
    ordinary = client(ledger, "insurer-1").check_access(PATIENT.public_key, action="access", purpose="HPAYMT", data=[LAB], record=True)
    err = _status(lambda: officer.review_break_glass(OFFICER, ordinary.access_event_index, outcome="justified"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "not a break-glass access event" in err.details()

    # At most one review per event; the very same envelope again is deduplicated.
    payload = payloads.build_break_glass_review(event_index=event_index, outcome="justified", notes="ok")
    envelope = sign_envelope(payloads.BREAK_GLASS_REVIEW, payload, [OFFICER])
    first = officer.ledger.submit(envelope)
    again = officer.ledger.submit(envelope)
    assert again.duplicate and again.index == first.index
    err = _status(lambda: officer.review_break_glass(OFFICER, event_index, outcome="unjustified"))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS and f"entry {first.index}" in err.details()
    # A review is evidence: it cannot be erased.
    err = _status(lambda: officer.erase(OFFICER, first.index, reason="tidy up"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "break-glass review" in err.details()


def test_the_client_checks_every_review_it_is_shown(ledger):
    ed, officer = client(ledger, "ed-1"), client(ledger)
    first, second = _break_glass(ed).access_event_index, _break_glass(ed, "stroke").access_event_index
    review = officer.review_break_glass(OFFICER, first, outcome="justified").entry.index

    # A client that does not trust the officer's key refuses the officer's review.
    with pytest.raises(VerificationError, match="not signed by an operator key"):
        client(ledger, officer=False).break_glass_queue()

    store = ledger.service.ledger.store
    # The index pairs the review with another event: the client sees the review names a different one.
    with store.begin() as conn:
        conn.execute(update(schema.break_glass_reviews).values(event_idx=second))
    with pytest.raises(VerificationError, match=f"not a review of event {second}"):
        officer.break_glass_queue()
    # The patient's listing pairs reviews with events by what the review says, not by the server's index.
    states = {v.index: v.review_state for v in client(ledger).list_access_events(PATIENT.public_key).events}
    assert states == {first: "justified", second: "unreviewed"}
    with store.begin() as conn:
        conn.execute(update(schema.break_glass_reviews).values(event_idx=first))
    assert [v.review_state for v in officer.break_glass_queue().items] == ["justified", "unreviewed"]

    # A tampered review body (say, the outcome flipped) no longer hashes to its leaf.
    with store.begin() as conn:
        body = conn.execute(schema.bodies.select().where(schema.bodies.c.idx == review)).one().envelope
        conn.execute(
            update(schema.bodies).where(schema.bodies.c.idx == review).values(envelope=body.replace(b"justified", b"unjustifie"))
        )
    with pytest.raises(VerificationError, match="does not hash to the leaf's commitment"):
        officer.break_glass_queue()
    with pytest.raises(VerificationError, match="does not hash to the leaf's commitment"):
        client(ledger).list_access_events(PATIENT.public_key)
