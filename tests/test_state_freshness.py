"""The sequencer keeps the consent state fresh: a StateCommit closes consent-changing batches, any batch when
the last one is too old, and an idle heartbeat."""

from __future__ import annotations

import time

from consent_ledger.app.consent_state import StatePolicy
from consent_ledger.core import payloads
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger_client import ConsentClient, LedgerClient

from .server_support import (
    AUDITOR,
    OPERATOR,
    connect,
    ledger_client,
    log_signer,
    running_server,
)

PATIENT = Ed25519PrivateKey.from_seed(b"\x71" * 32)


def _kinds(c: LedgerClient) -> list[str]:
    """The payload types of the whole log (reading ranges of the log: an auditor's or the operator's right)."""
    size = c.checkpoint().checkpoint.size
    return [e.leaf.payload_type for e in c.get_entries(0, size)]


def test_idle_heartbeat_writes_state_commits(tmp_path):
    with running_server(f"sqlite:///{tmp_path / 'l.db'}", state=StatePolicy(heartbeat_s=0.2)) as server:
        c = ledger_client(server, party=AUDITOR)
        time.sleep(1.0)
        kinds = _kinds(c)
    assert len(kinds) >= 3 and set(kinds) == {payloads.STATE_COMMIT}


def test_old_state_is_refreshed_by_any_batch(tmp_path):
    with running_server(f"sqlite:///{tmp_path / 'l.db'}", state=StatePolicy(max_age_ms=3000, heartbeat_s=3600)) as server:
        # Delegations do not change the map (registrations do: a party key holds each party's latest one).
        c = connect(server, patient=PATIENT)
        for name in (b"a", b"b"):
            c.delegate(PATIENT, delegate=Ed25519PrivateKey.from_seed(name * 32).public_key, relationship="proxy", scope=["revoke"])
        time.sleep(3.1)
        c.delegate(PATIENT, delegate=Ed25519PrivateKey.from_seed(b"c" * 32).public_key, relationship="proxy", scope=["revoke"])
        kinds = _kinds(ledger_client(server, party=AUDITOR))
    d, sc = payloads.DELEGATION, payloads.STATE_COMMIT
    # The first batch of a log gets one; the second (fresh state, no map change) does not; the third does.
    assert kinds == [d, sc, d, d, sc]


def test_a_registration_closes_its_batch(tmp_path):
    with running_server(f"sqlite:///{tmp_path / 'l.db'}", state=StatePolicy(max_age_ms=3000, heartbeat_s=3600)) as server:
        c = connect(server, party=OPERATOR)
        key = log_signer().private_key
        c.register_party(key, party_id="a", roles=["insurer"], public_keys=[PATIENT.public_key], display_name="A")
        c.register_party(key, party_id="b", roles=["insurer"], public_keys=[PATIENT.public_key], display_name="B")
        kinds = _kinds(c.ledger)
    reg, sc = payloads.PARTY_REGISTRATION, payloads.STATE_COMMIT
    assert kinds == [reg, sc, reg, sc]


def test_consent_changes_are_committed_in_their_batch(tmp_path):
    with running_server(f"sqlite:///{tmp_path / 'l.db'}", state=StatePolicy(heartbeat_s=3600)) as server:
        c: ConsentClient = connect(server, patient=PATIENT)
        cid, r = c.grant(PATIENT, grantee="any", actions=["access"], purposes=["TREAT"], data_classes=["imaging"])
        rv = c.revoke(PATIENT, cid)
        kinds = _kinds(ledger_client(server, party=AUDITOR))
        assert server.service.consents.state.latest.index == rv.index + 1
    assert kinds[r.index + 1] == payloads.STATE_COMMIT and kinds[rv.index + 1] == payloads.STATE_COMMIT
