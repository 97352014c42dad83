"""Faults between the ledger and its database (issue 10): a COMMIT whose reply is lost, outages, stalls, latency,
a full disk.

The network faults run a real server against PostgreSQL or MariaDB through tests/fault_proxy.py (skipped without
their URLs, see tests/db_support.py); the full disk is SQLite's. Outcomes are checked through the verifying client
library and the audit.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import event

from consent_ledger.app.consent_state import StatePolicy
from consent_ledger.cli import main
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
        patient.grant(
            PATIENT, grantee="org:hospital-1", actions=["access"], purposes=["TREAT"], data_classes=["imaging"]
        )
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


def _health(server: ServerThread) -> int:
    stub = health_pb2_grpc.HealthStub(transport_channel(server.target))
    return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


def _wait_for(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _fresh_grant(i: int, key: Ed25519PrivateKey = PATIENT) -> bytes:
    payload = payloads.build_grant(
        patient=key.public_key, grantee=f"org:other-{i}", actions=["access"], purposes=["TREAT"],
        data_classes=["imaging"],
    )
    return sign_envelope(payloads.CONSENT_GRANT, payload, [key])


def test_outage_is_unavailable_and_health_follows_the_database(db: tuple[FaultProxy, str]) -> None:
    """While the database refuses every connection, Submit and GetEntry answer UNAVAILABLE (never INTERNAL) and
    health says NOT_SERVING; once it is back, health says SERVING and the ledger works (and audits) again."""
    proxy, url = db
    with running_server(url) as server:
        _register_hospital(server)
        patient = connect(server, patient=PATIENT)
        auditor = connect(server, party=AUDITOR)
        patient.ledger.submit(_fresh_grant(0))
        assert _health(server) == health_pb2.HealthCheckResponse.SERVING
        proxy.refuse(True)
        codes: list[grpc.StatusCode] = []
        for i in range(1, 6):
            for call in (lambda: patient.ledger.submit(_fresh_grant(i)), lambda: auditor.ledger.get_entry(0)):
                try:
                    call()
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as e:
                    codes.append(e.code())
        assert set(codes) == {grpc.StatusCode.UNAVAILABLE}, codes
        _wait_for(lambda: _health(server) == health_pb2.HealthCheckResponse.NOT_SERVING, 10, "health stayed SERVING")
        proxy.refuse(False)
        _wait_for(lambda: _health(server) == health_pb2.HealthCheckResponse.SERVING, 15, "health did not recover")
        patient.ledger.submit(_fresh_grant(99))
        report = Auditor(auditor.ledger).run()
        assert report.ok, report.finding


def test_start_with_a_stalled_database_fails_clearly_within_its_timeout(db: tuple[FaultProxy, str]) -> None:
    """The database accepts TCP connections but never answers: start-up gives up after the connect timeout with
    a message that names the database, instead of hanging."""
    from consent_ledger.service import ServiceConfig

    proxy, url = db
    proxy.stall(True)
    try:
        server = ServerThread(
            ServiceConfig(database_url=url, listen="127.0.0.1:0", insecure=True, db_connect_timeout_s=2.0),
            log_signer(),
        )
        started = time.monotonic()
        with pytest.raises(Exception, match="database") as err:
            server.start()
        elapsed = time.monotonic() - started
        assert elapsed < 10, f"start-up took {elapsed:.1f} s with a 2 s connect timeout"
        assert "timeout" in str(err.value).lower() or "timed out" in str(err.value).lower(), err.value
    finally:
        proxy.stall(False)


def _load(server: ServerThread, seconds: float, threads: int = 16) -> list[tuple[float, grpc.StatusCode]]:
    """``threads`` patients submitting fresh grants for ``seconds`` (client deadline 20 s): each call's duration
    and status."""
    out: list[tuple[float, grpc.StatusCode]] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run(t: int) -> None:
        key = Ed25519PrivateKey.from_seed(bytes([t + 1]) * 32)
        c = connect(server, patient=key, timeout=20.0)
        i = 0
        while time.monotonic() < stop:
            i += 1
            started = time.monotonic()
            try:
                c.ledger.submit(_fresh_grant(i, key))
                code = grpc.StatusCode.OK
            except grpc.RpcError as e:
                code = e.code()
            with lock:
                out.append((time.monotonic() - started, code))

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    return out


def test_acknowledgement_latency_is_bounded_on_a_slow_database(db: tuple[FaultProxy, str]) -> None:
    """With 200 ms added to every packet (a batch then takes longer than the bound), every caller is answered
    within the configured bound, UNAVAILABLE when its entry could not be integrated in time, instead of waiting
    until its own deadline; once the database is fast again, entries are acknowledged within the bound and the
    log audits clean."""
    proxy, url = db
    bound = 3.0
    with running_server(url, ack_timeout_s=bound) as server:
        _register_hospital(server)
        try:
            proxy.latency_s = 0.2
            slow = _load(server, 6.0)
        finally:
            proxy.latency_s = 0.0
        fast = _load(server, 3.0)
        for calls in (slow, fast):
            codes = {code for _, code in calls}
            slowest = max(d for d, _ in calls)
            assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
            assert slowest < bound + 2.0, f"a call took {slowest:.1f} s with a {bound:g} s acknowledgement bound"
        assert {code for _, code in fast} == {grpc.StatusCode.OK}, "the ledger did not recover from the slow phase"
        report = Auditor(connect(server, party=AUDITOR).ledger).run()
        assert report.ok, report.finding


def test_stalled_database_bounds_callers_and_health_then_recovers(db: tuple[FaultProxy, str]) -> None:
    """The database stops answering mid-load (connections stay open): callers get UNAVAILABLE within the bound,
    health goes NOT_SERVING; when it answers again, health is SERVING, entries are acknowledged, the log audits
    clean."""
    proxy, url = db
    bound = 2.0
    with running_server(url, ack_timeout_s=bound, db_connect_timeout_s=2.0) as server:
        _register_hospital(server)
        statuses: list[int] = []
        stalled = threading.Event()

        def stall() -> None:
            time.sleep(1.0)
            proxy.stall(True)
            stalled.set()
            try:
                _wait_for(lambda: _health(server) == health_pb2.HealthCheckResponse.NOT_SERVING, 10, "")
                statuses.append(health_pb2.HealthCheckResponse.NOT_SERVING)
            except AssertionError:
                statuses.append(health_pb2.HealthCheckResponse.SERVING)
            finally:
                proxy.stall(False)

        t = threading.Thread(target=stall)
        t.start()
        calls = _load(server, 6.0, threads=8)
        t.join(20)
        assert statuses == [health_pb2.HealthCheckResponse.NOT_SERVING], "health stayed SERVING during the stall"
        assert {code for _, code in calls} <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
        slowest = max(d for d, _ in calls)
        assert slowest < bound + 2.0, f"a call took {slowest:.1f} s with a {bound:g} s acknowledgement bound"
        _wait_for(lambda: _health(server) == health_pb2.HealthCheckResponse.SERVING, 15, "health did not recover")
        assert {code for _, code in _load(server, 2.0, threads=4)} == {grpc.StatusCode.OK}
        report = Auditor(connect(server, party=AUDITOR).ledger).run()
        assert report.ok, report.finding


def test_database_connections_are_pooled_under_load(db: tuple[FaultProxy, str]) -> None:
    """16 submitters do not make the server open new database connections all the time: the pool is as large
    as the number of threads that use it."""
    proxy, url = db
    with running_server(url) as server:
        _register_hospital(server)
        before = proxy.accepted
        calls = _load(server, 4.0)
        opened = proxy.accepted - before
        pool = server.service.ledger.store.engine.pool.size()  # type: ignore[attr-defined]
    assert {code for _, code in calls} == {grpc.StatusCode.OK}
    assert opened <= pool, f"{opened} new connections during the load with a pool of {pool}"


def test_full_disk_answers_unavailable_and_logs_a_line_per_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database that cannot grow (SQLite's max_page_count stands in for a full disk): submissions get
    UNAVAILABLE, the log has a rate-limited line per failed batch and no traceback; once there is room again the
    ledger appends and audits clean."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with running_server(url) as server:
        _register_hospital(server)
        patient = connect(server, patient=PATIENT)
        patient.ledger.submit(_fresh_grant(0))
        engine = server.service.ledger.store.engine

        def no_room(dbapi_conn: Any, _record: object) -> None:
            dbapi_conn.execute("PRAGMA max_page_count = 1")  # clamped to the current size: the file cannot grow

        event.listen(engine, "connect", no_room)
        engine.dispose()
        caplog.clear()
        codes = []
        with caplog.at_level(logging.INFO, logger="consent_ledger"):
            started = time.monotonic()
            for i in range(1, 40):
                try:
                    patient.ledger.submit(_fresh_grant(i))
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as e:
                    codes.append(e.code())
            elapsed = time.monotonic() - started
        assert grpc.StatusCode.UNAVAILABLE in codes, codes
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
        records = [r for r in caplog.records if r.name.startswith("consent_ledger")]
        assert not [r for r in records if r.exc_info], "an expected storage failure was logged with a traceback"
        failures = [r for r in records if "failed" in r.getMessage()]
        assert 1 <= len(failures) <= elapsed / 5 + 2, [r.getMessage() for r in failures]
        assert "full" in failures[0].getMessage(), failures[0].getMessage()
        # Reads still work, but appends fail: health says so.
        _wait_for(lambda: _health(server) == health_pb2.HealthCheckResponse.NOT_SERVING, 10, "health stayed SERVING")
        event.remove(engine, "connect", no_room)
        engine.dispose()
        patient.ledger.submit(_fresh_grant(100))
        _wait_for(lambda: _health(server) == health_pb2.HealthCheckResponse.SERVING, 10, "health did not recover")
        report = Auditor(connect(server, party=AUDITOR).ledger).run()
        assert report.ok, report.finding


def test_serve_with_an_unreachable_database_exits_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`consent-ledger serve` against a database nobody listens on: exit 1 and one line naming the database and
    the timeouts, not a traceback."""
    with socket.socket() as s:  # a loopback port that is free, so nothing answers there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = tmp_path / "log.key"
    assert main(["keygen", "log", "--name", "ledger.test/log", "--out", str(key)]) == 0
    capsys.readouterr()
    code = main([
        "serve", "--key-file", str(key), "--insecure", "--listen", "127.0.0.1:0", "--db-connect-timeout", "2",
        "--database-url", f"postgresql+psycopg://nobody@127.0.0.1:{port}/ledger",
    ])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "cannot open the database postgresql+psycopg://nobody@127.0.0.1" in err and "connect timeout 2 s" in err, err
    assert "Traceback" not in err
