"""What ends a grant is one rule (DESIGN section 5), the same in decide, in the consent-state map (the server's
and the audit's replay) and at admission: a revocation or superseding grant of the SAME patient, validly signed.

A dishonest operator is simulated by appending envelopes straight to the sequencer, bypassing admission (it
holds the log key): the entries reach the log, the server's map and its StateCommits as an operator would put
them there. The audit must flag each such entry, and the map must still follow the rule, so the forged entry
cannot turn a permit into a verified deny.
"""

from __future__ import annotations

import asyncio
import time

from consent_ledger.app.consent_state import StatePolicy
from consent_ledger.app.sequencer import Appended
from consent_ledger.core import payloads
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.envelope import ParsedEnvelope, parse_envelope, sign_envelope, verify_envelope
from consent_ledger.core.payloads import DataItem
from consent_ledger_client.audit import Auditor

from .server_support import AUDITOR, OPERATOR, connect, log_signer, running_server

A = Ed25519PrivateKey.from_seed(b"\x71" * 32)
B = Ed25519PrivateKey.from_seed(b"\x72" * 32)
HOSPITAL = Ed25519PrivateKey.from_seed(b"\x73" * 32)
LAB = DataItem("laboratory-results")
GRANT = dict(actions=["access"], purposes=["TREAT"], data_classes=["laboratory-results"])


def forge(server, raw: bytes) -> Appended:
    """Append an envelope as a dishonest operator would: verified signatures, but no admission check."""
    env: ParsedEnvelope = parse_envelope(raw)
    verify_envelope(env)
    fut = asyncio.run_coroutine_threadsafe(server.service.ledger.sequencer.append(env), server.loop)
    return fut.result(10)


def _setup(server):
    connect(server, party=OPERATOR).register_party(
        log_signer().private_key, party_id="hosp-1", roles=["hospital"], public_keys=[HOSPITAL.public_key],
        display_name="H",
    )
    cid, _ = connect(server, patient=A).grant(A, grantee="org:hosp-1", **GRANT)
    return cid


def test_forged_cross_patient_revocation_is_flagged_and_does_not_end_the_grant(database_url):
    with running_server(database_url, state=StatePolicy(max_age_ms=0)) as server:
        cid = _setup(server)
        hospital = connect(server, party="hosp-1")
        assert hospital.check_access(A.public_key, action="access", purpose="TREAT", data=[LAB]).permitted
        # Patient B "revokes" patient A's grant: an honest server refuses this at admission.
        rev = payloads.build_revocation(patient=B.public_key, consent_id=cid, reason="forged")
        forged = forge(server, sign_envelope(payloads.CONSENT_REVOCATION, rev, [B]))
        # decide keeps A's grant in force (the revocation is another patient's), so the map must keep it too:
        # the client re-checks the map proofs and gets the grant honoured, not a verified DENY.
        d = hospital.check_access(A.public_key, action="access", purpose="TREAT", data=[LAB])
        assert d.permitted and d.decision.consent_ids == (cid,)
        report = Auditor(connect(server, party=AUDITOR).ledger).run()
    assert not report.ok
    assert report.finding is not None and report.finding.index == forged.index
    assert report.finding.evidence["rule"] == "same-patient"
    assert report.finding.evidence["entry"]


def test_forged_cross_patient_supersession_is_flagged_and_does_not_end_the_grant(database_url):
    with running_server(database_url, state=StatePolicy(max_age_ms=0)) as server:
        cid = _setup(server)
        g = payloads.build_grant(patient=B.public_key, grantee="org:other", supersedes=cid, **GRANT)
        forged = forge(server, sign_envelope(payloads.CONSENT_GRANT, g, [B]))
        d = connect(server, party="hosp-1").check_access(A.public_key, action="access", purpose="TREAT", data=[LAB])
        assert d.permitted and d.decision.consent_ids == (cid,)
        report = Auditor(connect(server, party=AUDITOR).ledger).run()
    assert report.finding is not None and report.finding.index == forged.index
    assert report.finding.evidence["rule"] == "same-patient"


def test_forged_revocation_by_a_stranger_is_flagged_and_does_not_end_the_grant(database_url):
    """Signed by neither the patient nor a delegate in force: the revocation ends nothing."""
    with running_server(database_url, state=StatePolicy(max_age_ms=0)) as server:
        cid = _setup(server)
        rev = payloads.build_revocation(patient=A.public_key, consent_id=cid, reason="forged")
        forged = forge(server, sign_envelope(payloads.CONSENT_REVOCATION, rev, [B]))
        d = connect(server, party="hosp-1").check_access(A.public_key, action="access", purpose="TREAT", data=[LAB])
        assert d.permitted and d.decision.consent_ids == (cid,)
        report = Auditor(connect(server, party=AUDITOR).ledger).run()
    assert report.finding is not None and report.finding.index == forged.index
    assert report.finding.evidence["rule"] == "signer"


def test_honest_revocation_still_ends_the_grant(database_url):
    with running_server(database_url, state=StatePolicy(max_age_ms=0)) as server:
        cid = _setup(server)
        connect(server, patient=A).revoke(A, cid)
        time.sleep(0.01)
        d = connect(server, party="hosp-1").check_access(A.public_key, action="access", purpose="TREAT", data=[LAB])
        assert not d.permitted
        assert Auditor(connect(server, party=AUDITOR).ledger).run().ok
