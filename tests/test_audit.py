"""The audit replays the log, recomputes every StateCommit, and finds corruption of the stored map or of a
StateCommit; it resumes from a saved point."""

from __future__ import annotations

from sqlalchemy import update

from consent_ledger.app.consent_state import StatePolicy
from consent_ledger.core import payloads
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.storage import schema
from consent_ledger_client import ConsentClient
from consent_ledger_client.audit import Auditor

from .server_support import AUDITOR, OPERATOR, connect, log_signer, running_server

PATIENT = Ed25519PrivateKey.from_seed(b"\x61" * 32)


def _populate(c: ConsentClient, n: int = 6) -> list[str]:
    ids = []
    for i in range(n):
        cid, _ = c.grant(PATIENT, grantee=f"org:org-{i % 3}", actions=["access"], purposes=["TREAT"], data_classes=["imaging"])
        ids.append(cid)
    c.revoke(PATIENT, ids[0])
    c.grant(PATIENT, grantee="org:org-1", actions=["access"], purposes=["TREAT"], data_classes=["imaging"], supersedes=ids[1])
    return ids


def _patient(server) -> ConsentClient:
    return connect(server, patient=PATIENT)


def _auditor(server) -> ConsentClient:
    """The audit reads whole ranges of the log: an auditor's right."""
    return connect(server, party=AUDITOR)


def test_honest_log_passes_and_resumes(database_url, tmp_path):
    with running_server(database_url) as server:
        _populate(_patient(server))
        c = _auditor(server)
        resume = tmp_path / "audit.json"
        first = Auditor(c.ledger, resume_file=resume).run(end=5)
        assert first.ok and first.end == 5
        report = Auditor(c.ledger, resume_file=resume).run()
        assert report.ok, report.finding
        # It resumes right after the last StateCommit the first run verified.
        assert 0 < report.start <= 5 and report.end == report.checkpoint_size
        assert report.state_commits >= 1 and report.by_kind[payloads.CONSENT_REVOCATION] == 1
        whole = Auditor(c.ledger).run()
        assert whole.ok and whole.entries == whole.checkpoint_size
        assert whole.state_commits >= report.state_commits


def test_corrupted_map_node_is_found(database_url):
    with running_server(database_url, state=StatePolicy(max_age_ms=0)) as server:
        _populate(_patient(server))
        with server.service.ledger.store.begin() as conn:
            conn.execute(update(schema.map_nodes).where(schema.map_nodes.c.path == b"\x80").values(left_hash=b"\x07" * 32))
    # The server keeps committed map nodes in memory; after a restart it reads the corrupted node, and the next
    # batch closes with a StateCommit whose root comes from it.
    with running_server(database_url, state=StatePolicy(max_age_ms=0)) as server:
        connect(server, party=OPERATOR).register_party(
            log_signer().private_key, party_id="late", roles=["insurer"], public_keys=[PATIENT.public_key], display_name="L"
        )
        report = Auditor(_auditor(server).ledger).run()
    assert not report.ok
    assert "map root differs" in report.finding.problem
    assert report.finding.evidence["claimed_root"] != report.finding.evidence["recomputed_root"]


def test_corrupted_state_commit_is_found(database_url):
    with running_server(database_url) as server:
        _populate(_patient(server))
        store = server.service.ledger.store
        sc_index = server.service.consents.state.latest.index
        with store.begin() as conn:
            body = conn.execute(schema.bodies.select().where(schema.bodies.c.idx == sc_index)).one().envelope
            tampered = bytearray(body)
            tampered[10] ^= 1
            conn.execute(update(schema.bodies).where(schema.bodies.c.idx == sc_index).values(envelope=bytes(tampered)))
        report = Auditor(_auditor(server).ledger).run()
    assert not report.ok and report.finding.index <= sc_index
    assert "verification failed" in report.finding.problem
