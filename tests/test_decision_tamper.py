"""check_access verifies, not trusts: altered evidence, omitted evidence, a flipped decision or a bad receipt
are all caught; honest answers through the same proxy pass."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from consent_ledger.core import payloads
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.envelope import parse_envelope
from consent_ledger.core.payloads import DataItem
from consent_ledger.core.receipt import decision_from_pb, receipt_body, sign_receipt
from consent_ledger.v1 import access_pb2, log_pb2, payloads_pb2
from consent_ledger_client import (
    ConsentClient,
    DecisionMismatch,
    IncompleteEvidence,
    StaleEvidence,
    VerificationError,
)

from .server_support import OPERATOR, connect, ledger_client, log_signer, running_server
from .tamper_support import TamperProxy

PATIENT = Ed25519PrivateKey.from_seed(b"\x41" * 32)
LAB, IMAGING = DataItem("laboratory-results"), DataItem("imaging")


def _kind(e: access_pb2.EvidenceEntry) -> str:
    return parse_envelope(e.entry.envelope).payload_type


def _is_deny(e: access_pb2.EvidenceEntry) -> bool:
    env = parse_envelope(e.entry.envelope)
    p = payloads.parse_payload(env.payload_type, env.payload)
    return isinstance(p, payloads.ConsentGrantPayload) and p.decision == payloads.DENY


def _drop(kind: str) -> Callable[[access_pb2.CheckAccessResponse], None]:
    def m(resp):
        keep = [e for e in resp.evidence if _kind(e) != kind]
        assert len(keep) < len(resp.evidence), f"no {kind} in the evidence to drop"
        del resp.evidence[:]
        resp.evidence.extend(keep)

    return m


def _flip_decision(resp) -> None:
    resp.decision.decision = (
        payloads_pb2.ACCESS_DECISION_DENY if resp.decision.decision == payloads_pb2.ACCESS_DECISION_PERMIT
        else payloads_pb2.ACCESS_DECISION_PERMIT
    )


def _flip_byte(field: str, i: int = -1) -> Callable[[access_pb2.CheckAccessResponse], None]:
    def m(resp):
        obj, attr = (resp.evidence[0].entry, field) if field in ("leaf", "envelope") else (resp, field)
        b = bytearray(getattr(obj, attr))
        b[i] ^= 1
        setattr(obj, attr, bytes(b))

    return m


def _flip_proof(resp) -> None:
    e = next(e for e in resp.evidence if e.inclusion_proof)
    e.inclusion_proof[0] = bytes([e.inclusion_proof[0][0] ^ 1]) + e.inclusion_proof[0][1:]


def _flip_map_proof(resp) -> None:
    p = next(p for p in resp.selector_proofs if p.siblings)
    p.siblings[0] = bytes([p.siblings[0][0] ^ 1]) + p.siblings[0][1:]


def _drop_map_proof(resp) -> None:
    del resp.selector_proofs[0]


def _swap_roles(resp) -> None:
    resp.decision.request.requester_roles[:] = ["hospital"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('dtamper') / 'log.db'}"
    with running_server(url) as server, TamperProxy(server.target) as proxy:
        op = connect(server, party=OPERATOR)
        op.register_party(log_signer().private_key, party_id="insurer-1", roles=["insurer"], public_keys=[PATIENT.public_key], display_name="I")
        # A permit for lab results, a revoked permit for imaging, and an in-force DENY for medications.
        patient = connect(server, patient=PATIENT)
        patient.grant(PATIENT, grantee="org:insurer-1", actions=["access"], purposes=["HPAYMT"], data_classes=["laboratory-results"])
        img, _ = patient.grant(PATIENT, grantee="role:insurer", actions=["access"], purposes=["HPAYMT"], data_classes=["imaging"])
        revoked = patient.revoke(PATIENT, img)
        patient.grant(PATIENT, grantee="any", actions=["access"], purposes=["HPAYMT"], data_classes=["medications"], deny=True)
        patient.grant(PATIENT, grantee="org:insurer-1", actions=["access"], purposes=["HPAYMT"], data_classes=["medications"])
        time.sleep(0.01)
        # The revoked imaging grant with its proof against the final checkpoint, for the "added" case.
        server.revoked_grant = patient.ledger.get_entry_with_note(revoked.index - 2)  # grant, its StateCommit, revocation
        assert payloads.consent_id(server.revoked_grant[0].envelope.payload) == img
        yield server, proxy


CASES = [
    ("flipped decision", "lab", _flip_decision, VerificationError),
    ("altered evidence body", "lab", _flip_byte("envelope", 60), VerificationError),
    ("altered evidence leaf", "lab", _flip_byte("leaf"), VerificationError),
    ("altered proof", "lab", _flip_proof, VerificationError),
    ("receipt signature", "lab", _flip_byte("receipt"), VerificationError),
    ("roles changed", "lab", _swap_roles, VerificationError),
    ("grant omitted", "lab", _drop(payloads.CONSENT_GRANT), IncompleteEvidence),
    ("registration omitted", "lab", _drop(payloads.PARTY_REGISTRATION), VerificationError),
    ("state commit omitted", "lab", _drop(payloads.STATE_COMMIT), IncompleteEvidence),
    ("map proof sibling flipped", "lab", _flip_map_proof, VerificationError),
    ("map proof dropped", "lab", _drop_map_proof, IncompleteEvidence),
]


def _insurer(target: str) -> ConsentClient:
    """The insurer, through the proxy (its header or, under mTLS, its certificate's name is carried through)."""
    return connect(target, party="insurer-1")


def _ask(c: ConsentClient, what: str):
    data = {"lab": [LAB], "imaging": [IMAGING], "meds": [DataItem("medications")]}[what]
    return c.check_access(PATIENT.public_key, action="access", purpose="HPAYMT", data=data)


@pytest.mark.parametrize("name,what,mutation,error", CASES, ids=[c[0] for c in CASES])
def test_tampered_decisions_are_caught(setup, name, what, mutation, error):
    server, proxy = setup
    c = _insurer(proxy.target)
    with proxy.tampering("CheckAccess", mutation), pytest.raises(error):
        _ask(c, what)


def test_an_omitted_in_force_deny_is_caught(setup):
    server, proxy = setup
    c = _insurer(proxy.target)
    assert _ask(c, "meds").decision.decision == "DENY"

    def drop_deny(resp):
        keep = [e for e in resp.evidence if not _is_deny(e)]
        assert len(keep) < len(resp.evidence)
        del resp.evidence[:]
        resp.evidence.extend(keep)

    with proxy.tampering("CheckAccess", drop_deny), pytest.raises(IncompleteEvidence):
        _ask(c, "meds")


def test_a_receipt_from_another_decision_is_caught(setup):
    server, proxy = setup
    c = _insurer(proxy.target)
    old = _ask(c, "imaging").receipt
    with proxy.tampering("CheckAccess", lambda resp: setattr(resp, "receipt", old)), pytest.raises(VerificationError):
        _ask(c, "lab")


@pytest.mark.parametrize("what,expected", [("lab", "PERMIT"), ("imaging", "DENY"), ("meds", "DENY")])
def test_honest_answers_pass(setup, what, expected):
    server, proxy = setup
    c = _insurer(proxy.target)
    assert _ask(c, what).decision.decision == expected


def test_a_revoked_grant_added_to_the_evidence_is_caught(setup):
    server, proxy = setup
    c = _insurer(proxy.target)
    entry, _ = server.revoked_grant
    assert entry.leaf.payload_type == payloads.CONSENT_GRANT

    def add(resp):
        resp.evidence.add(
            entry=log_pb2.Entry(index=entry.index, leaf=entry.leaf_bytes, envelope=entry.envelope.raw),
            inclusion_proof=list(entry.proof),
        )

    with proxy.tampering("CheckAccess", add), pytest.raises(IncompleteEvidence):
        _ask(c, "imaging")


def test_a_lying_server_that_signs_a_wrong_decision_is_caught(setup):
    """Complete evidence but a flipped decision, re-signed with the ledger's own key: the re-evaluation differs."""
    server, proxy = setup
    key = log_signer().private_key

    def lie(resp):
        _flip_decision(resp)
        d = decision_from_pb(resp.decision)
        resp.receipt = sign_receipt(receipt_body(d, resp.checkpoint.note), key)

    c = _insurer(proxy.target)
    with proxy.tampering("CheckAccess", lie), pytest.raises(DecisionMismatch):
        _ask(c, "lab")


def test_stale_consent_state_is_refused(setup):
    server, proxy = setup
    later = lambda: int(time.time() * 1000) + 10 * 60 * 1000  # noqa: E731 - the client's clock, 10 minutes on
    c = ConsentClient(
        ledger_client(server, party="insurer-1"),
        max_state_age_ms=60_000,
        clock_ms=later,
    )
    with pytest.raises(StaleEvidence):
        _ask(c, "lab")
