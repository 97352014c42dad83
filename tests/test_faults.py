"""Faults between the ledger and its database (issue 10): a COMMIT whose reply is lost, outages, stalls, latency.

Every test runs a real server against PostgreSQL or MariaDB through tests/fault_proxy.py (skipped without their
URLs, see tests/db_support.py) and checks the outcome through the verifying client library.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from consent_ledger.app.consent_state import StatePolicy
from consent_ledger.core import payloads
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.envelope import sign_envelope
from consent_ledger.core.payloads import DataItem
from consent_ledger_client.audit import Auditor

from .db_support import MYSQL_ENV, POSTGRES_ENV, reset_database
from .fault_proxy import FaultProxy, proxied
from .server_support import AUDITOR, OPERATOR, ServerThread, connect, log_signer, running_server, transport_channel

PATIENT = Ed25519PrivateKey.from_seed(b"\x91" * 32)
HOSPITAL = Ed25519PrivateKey.from_seed(b"\x92" * 32)

PROXIED = [
    pytest.param(POSTGRES_ENV, id="postgres", marks=pytest.mark.postgres),
    pytest.param(MYSQL_ENV, id="mysql", marks=pytest.mark.mysql),
]


@pytest.fixture(params=PROXIED)
def db(request: pytest.FixtureRequest) -> Iterator[tuple[FaultProxy, str]]:
    """An empty PostgreSQL or MariaDB database behind a fault proxy: (proxy, URL through the proxy)."""
    url = os.environ.get(request.param)
    if not url:
        pytest.skip(f"{request.param} is not set")
    reset_database(url)
    with proxied(url) as pair:
        yield pair


def _register_hospital(server: ServerThread) -> None:
    connect(server, party=OPERATOR).register_party(
        log_signer().private_key, party_id="hospital-1", roles=["hospital"], public_keys=[HOSPITAL.public_key],
        display_name="General Hospital",
    )


def _watch(server: ServerThread, seen: list[int]) -> threading.Thread:
    """A WatchPatient stream for PATIENT in a thread, appending each pushed index to ``seen``; returns once live."""
    patient = connect(server, patient=PATIENT)

    def run() -> None:
        try:
            for v in patient.watch_patient(PATIENT.public_key, timeout=30):
                seen.append(v.index)
        except grpc.RpcError:
            pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    broker = server.service.consents.broker
    deadline = time.monotonic() + 10
    while not broker.subscribers(("patient", PATIENT.public_key)):
        assert time.monotonic() < deadline, "the watch did not start"
        time.sleep(0.02)
    return t


def _check_state(server: ServerThread, consent_id: str) -> None:
    """CheckAccess for PATIENT verifies (map proofs against the latest StateCommit, complete evidence) and rests
    on ``consent_id``; the audit's replay of the whole log equals every StateCommit."""
    d = connect(server, party="hospital-1").check_access(
        PATIENT.public_key, action="access", purpose="TREAT", data=[DataItem("laboratory-results")]
    )
    assert d.permitted and consent_id in d.decision.consent_ids
    report = Auditor(connect(server, party=AUDITOR).ledger).run()
    assert report.ok, report.finding


@pytest.mark.parametrize("when", ["after", "before"])
def test_commit_with_lost_outcome_is_reconciled(db: tuple[FaultProxy, str], when: str) -> None:
    """The connection breaks just before or just after the COMMIT of the batch holding grant G. Whatever the
    database did, the ledger reads it back before integrating anything else: the caller's answer is true (G's
    index if it committed, UNAVAILABLE if not), the retry returns G's index, the watcher receives G, later
    StateCommits equal the audit's replay and CheckAccess verifies, also after a restart."""
    proxy, url = db

    with running_server(url, state=StatePolicy(max_age_ms=0)) as server:
        _register_hospital(server)
        patient = connect(server, patient=PATIENT)
        patient.grant(PATIENT, grantee="org:hospital-1", actions=["access"], purposes=["TREAT"], data_classes=["imaging"])
        seen: list[int] = []
        watcher = _watch(server, seen)
        payload = payloads.build_grant(
            patient=PATIENT.public_key, grantee="org:hospital-1", actions=["access"], purposes=["TREAT"],
            data_classes=["laboratory-results"],
        )
        env, g_id = sign_envelope(payloads.CONSENT_GRANT, payload, [PATIENT]), payloads.consent_id(payload)
        fired = proxy.arm(when)
        first: int | None
        try:
            first = patient.ledger.submit(env).entry.index
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e
            first = None
        assert fired.is_set(), "the fault did not fire"
        if when == "before":
            assert first is None, "a batch rolled back was acknowledged"
        else:
            assert first is not None, "the batch committed: its caller must get its index, not an error"
        retry = patient.ledger.submit(env)
        g = retry.entry.index
        if first is not None:
            assert g == first and retry.duplicate
        # Later batches: another grant of the same patient (its StateCommit must start from the stored map).
        patient.grant(
            PATIENT, grantee="org:hospital-1", actions=["access"], purposes=["TREAT"], data_classes=["allergies"]
        )
        deadline = time.monotonic() + 10
        while g not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert g in seen, f"the watcher never received G (#{g}); it saw {seen}"
        _check_state(server, g_id)
        watcher.join(0)
    with running_server(url) as server:
        _check_state(server, g_id)
