"""Hostile callers and local attackers (issue 10): floods, stream hoarding, undecodable requests, replayed and
misdirected signed requests, and file modes. Every test runs a real server (or the real CLI / store)."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import grpc
import pytest

from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.note import Signer, format_signer_key
from consent_ledger.core.request_auth import HEADER
from consent_ledger.server.limits import RateLimit
from consent_ledger.service import ServiceConfig
from consent_ledger.v1 import consent_pb2, consent_pb2_grpc
from consent_ledger_client.client import CallerIdentity

from .server_support import LOG_NAME, LOG_SEED, ServerThread, open_channel, running_server

# Loopback plaintext: the caller of an unsigned call is its peer address; a signed call's caller is its key.
PLAIN = {"insecure": True, "tls": None}
LIST = "/consent_ledger.v1.ConsentService/ListConsents"


def _code(fn, *args, **kw):  # type: ignore[no-untyped-def]
    try:
        fn(*args, **kw)
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


# -- floods -----------------------------------------------------------------------------------------------------

_FLOOD = textwrap.dedent(
    """
    import asyncio, json, sys, grpc
    from consent_ledger.v1 import log_pb2, log_pb2_grpc

    async def main(target, n):
        async with grpc.aio.insecure_channel(target) as ch:
            stub = log_pb2_grpc.LogServiceStub(ch)
            await ch.channel_ready()
            async def one():
                try:
                    await stub.GetCheckpoint(log_pb2.GetCheckpointRequest(), timeout=30)
                    return "OK"
                except grpc.aio.AioRpcError as e:
                    return e.code().name + ": " + (e.details() or "")[:60]
            codes = await asyncio.gather(*(one() for _ in range(n)))
        print(json.dumps({c: codes.count(c) for c in set(codes)}))

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)

_VICTIMS = textwrap.dedent(
    """
    import asyncio, json, sys, time, grpc
    from consent_ledger.core.crypto import Ed25519PrivateKey
    from consent_ledger.core.request_auth import HEADER, sign_request
    from consent_ledger.v1 import consent_pb2, consent_pb2_grpc

    METHOD = "/consent_ledger.v1.ConsentService/ListConsents"

    async def caller(target, origin, seed, n):
        key = Ed25519PrivateKey.from_seed(bytes([seed]) * 32)
        codes = []
        # A connection of its own, as separate callers have (channels in one process would share one).
        async with grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            stub = consent_pb2_grpc.ConsentServiceStub(ch)
            await ch.channel_ready()
            async def one():
                req = consent_pb2.ListConsentsRequest(patient=key.public_key)
                sig = sign_request(key, origin, METHOD, req.SerializeToString(deterministic=True),
                                   timestamp_ms=time.time_ns() // 1_000_000)
                try:
                    await stub.ListConsents(req, timeout=30, metadata=[(HEADER, sig.header_value())])
                    return "OK"
                except grpc.aio.AioRpcError as e:
                    return e.code().name + ": " + (e.details() or "")
            return await asyncio.gather(*(one() for _ in range(n)))

    async def main(target, origin, callers, n):
        await asyncio.sleep(0.3)  # let the flood start first
        results = await asyncio.gather(*(caller(target, origin, 100 + i, n) for i in range(callers)))
        codes = [c for r in results for c in r]
        print(json.dumps({c: codes.count(c) for c in set(codes)}))

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    """
)


def _python(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, int]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_one_callers_flood_is_refused_and_never_cancels_other_callers(tmp_path):
    """10,000 concurrent calls from one process (one organisation's address) are mostly refused
    RESOURCE_EXHAUSTED; meanwhile ten patients in another process, each within its budget, all succeed."""
    limit = RateLimit(per_second=50, burst=100)
    with running_server(f"sqlite:///{tmp_path / 'l.db'}", rate_limit=limit, **PLAIN) as server:
        flood = _python(_FLOOD, server.target, "10000")
        victims = _python(_VICTIMS, server.target, LOG_NAME, "10", "60")
        victim_codes = _result(victims)
        flood_codes = _result(flood)
    assert victim_codes == {"OK": 600}, (victim_codes, flood_codes)
    # The flood is refused: by the rate limit, or (UNAVAILABLE, retryable) beyond the streams one connection may
    # have in flight; the few that pass are within its budget.
    assert sum(n for c, n in flood_codes.items() if not c.startswith("OK")) > 9000, flood_codes
    assert {c.split(":")[0] for c in flood_codes} <= {"OK", "RESOURCE_EXHAUSTED", "UNAVAILABLE"}, flood_codes


def _watch(channel: grpc.Channel, patient: bytes, timeout: float = 20):  # type: ignore[no-untyped-def]
    return consent_pb2_grpc.ConsentServiceStub(channel).WatchPatient(
        consent_pb2.WatchPatientRequest(patient=patient), timeout=timeout
    )


def test_concurrent_streams_are_capped_per_caller(tmp_path):
    """A caller holds at most max_streams streams; the next is RESOURCE_EXHAUSTED, other callers are unaffected,
    and a closed stream frees its place."""
    a, b = Ed25519PrivateKey.from_seed(b"\xa1" * 32), Ed25519PrivateKey.from_seed(b"\xb1" * 32)
    limit = RateLimit(max_streams=3)
    with running_server(f"sqlite:///{tmp_path / 'l.db'}", rate_limit=limit) as server:
        broker = server.service.consents.broker
        ch_a, ch_b = open_channel(server.target, patient=a), open_channel(server.target, patient=b)
        held = [_watch(ch_a, a.public_key) for _ in range(3)]
        deadline = time.monotonic() + 10
        while broker.subscribers(("patient", a.public_key)) < 3:
            assert time.monotonic() < deadline, "the watches did not start"
            time.sleep(0.02)
        extra = _watch(ch_a, a.public_key, timeout=5)
        with pytest.raises(grpc.RpcError) as err:
            next(extra)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value
        assert "streams" in (err.value.details() or "")
        other = _watch(ch_b, b.public_key)  # another caller still may
        held[0].cancel()
        deadline = time.monotonic() + 10
        while broker.subscribers(("patient", a.public_key)) > 2:
            assert time.monotonic() < deadline, "the cancelled watch stayed"
            time.sleep(0.02)
        again = _watch(ch_a, a.public_key)
        deadline = time.monotonic() + 10
        while broker.subscribers(("patient", a.public_key)) < 3:
            assert time.monotonic() < deadline, "a freed place was not given back"
            time.sleep(0.02)
        for call in [*held, other, again]:
            call.cancel()
        ch_a.close()
        ch_b.close()


# -- undecodable requests ---------------------------------------------------------------------------------------


def test_undecodable_requests_are_invalid_argument_logged_once_and_rate_limited(tmp_path, caplog):
    limit = RateLimit(per_second=1, burst=5)
    with running_server(f"sqlite:///{tmp_path / 'l.db'}", rate_limit=limit, **PLAIN) as server:
        with grpc.insecure_channel(server.target) as ch:
            call = ch.unary_unary("/consent_ledger.v1.LogService/GetCheckpoint")
            caplog.clear()
            with caplog.at_level(logging.INFO):
                codes = [_code(call, b"\xff\xff\xff", timeout=10) for _ in range(8)]
            assert codes[0][0] == grpc.StatusCode.INVALID_ARGUMENT, codes
            assert "could not be decoded" in codes[0][1]
            assert [c for c, _ in codes[:5]] == [grpc.StatusCode.INVALID_ARGUMENT] * 5, codes
            assert grpc.StatusCode.RESOURCE_EXHAUSTED in [c for c, _ in codes[5:]], codes
            decode_logs = [r for r in caplog.records if "decode" in r.getMessage().lower()]
            assert len(decode_logs) == 5, [r.getMessage() for r in caplog.records]
            assert all(r.exc_info is None and "\n" not in r.getMessage() for r in decode_logs)
            assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


# -- signed requests --------------------------------------------------------------------------------------------


class _Recorder(grpc.UnaryUnaryClientInterceptor):
    """Keeps the metadata of every call it sees (placed after CallerIdentity: the signed headers)."""

    def __init__(self) -> None:
        self.metadata: list[tuple[tuple[str, str], ...]] = []

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        self.metadata.append(tuple(details.metadata or ()))
        return continuation(details, request)


def _signed_call(target: str, patient: Ed25519PrivateKey) -> tuple[consent_pb2.ListConsentsRequest, tuple]:
    """Make one signed ListConsents call as the client library does; returns the request and its metadata."""
    recorder = _Recorder()  # inside CallerIdentity, so it sees the signed headers
    ch = grpc.intercept_channel(grpc.insecure_channel(target), CallerIdentity(key=patient, origin=LOG_NAME), recorder)
    try:
        req = consent_pb2.ListConsentsRequest(patient=patient.public_key)
        consent_pb2_grpc.ConsentServiceStub(ch).ListConsents(req, timeout=10)
    finally:
        ch.close()
    (metadata,) = recorder.metadata
    assert any(k == HEADER for k, _ in metadata)
    return req, metadata


def _replay(target: str, req: consent_pb2.ListConsentsRequest, metadata: tuple) -> tuple[grpc.StatusCode, str]:
    with grpc.insecure_channel(target) as ch:
        return _code(consent_pb2_grpc.ConsentServiceStub(ch).ListConsents, req, metadata=metadata, timeout=10)


PATIENT = Ed25519PrivateKey.from_seed(b"\x5e" * 32)


def test_a_replay_after_a_restart_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    with running_server(url, **PLAIN) as server:
        req, metadata = _signed_call(server.target, PATIENT)
        code, details = _replay(server.target, req, metadata)
        assert code == grpc.StatusCode.UNAUTHENTICATED and "already used" in details
    with running_server(url, **PLAIN) as server:
        code, details = _replay(server.target, req, metadata)
    assert code == grpc.StatusCode.UNAUTHENTICATED, (code, details)
    assert "already used" in details


def test_a_request_signed_for_another_ledger_is_refused(tmp_path):
    """The signature covers the log's origin: a request made to one ledger is refused by another."""
    other = Signer("other.test/log", Ed25519PrivateKey.from_seed(b"\x0f" * 32))
    with running_server(f"sqlite:///{tmp_path / 'a.db'}", **PLAIN) as server:
        req, metadata = _signed_call(server.target, PATIENT)
    b = ServerThread(ServiceConfig(database_url=f"sqlite:///{tmp_path / 'b.db'}", listen="127.0.0.1:0", insecure=True), other)
    b.start()
    try:
        code, details = _replay(b.target, req, metadata)
    finally:
        b.stop()
    assert code == grpc.StatusCode.UNAUTHENTICATED, (code, details)
    assert "request signature refused" in details


def _serve_process(tmp_path: Path, url: str) -> tuple[subprocess.Popen[str], str]:
    """`consent-ledger serve` in another process on the same database, with the same log key."""
    key = tmp_path / "log.key"
    if not key.exists():
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(format_signer_key(LOG_NAME, Ed25519PrivateKey.from_seed(LOG_SEED)) + "\n")
    port_file = tmp_path / f"port-{time.monotonic_ns()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "consent_ledger.cli", "serve", "--database-url", url, "--listen", "127.0.0.1:0",
         "--insecure", "--key-file", str(key), "--port-file", str(port_file), "--state-heartbeat", "86400"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (port_file.exists() and port_file.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the second server did not start: {proc.communicate()}")
        time.sleep(0.05)
    return proc, f"127.0.0.1:{int(port_file.read_text())}"


def test_two_servers_on_one_database_refuse_a_replay_sent_to_the_other(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    with running_server(url, **PLAIN) as server:
        proc, other = _serve_process(tmp_path, url)
        try:
            req, metadata = _signed_call(server.target, PATIENT)
            code, details = _replay(other, req, metadata)
            req2, metadata2 = _signed_call(other, PATIENT)
            code2, details2 = _replay(server.target, req2, metadata2)
        finally:
            proc.terminate()
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
    assert (code, code2) == (grpc.StatusCode.UNAUTHENTICATED,) * 2, (details, details2)
    assert "already used" in details and "already used" in details2


# -- files ------------------------------------------------------------------------------------------------------


def test_database_files_and_directories_are_private(tmp_path):
    from consent_ledger.storage import open_store

    db = tmp_path / "new" / "deeper" / "l.db"
    store = open_store(f"sqlite:///{db}")
    try:
        with store.begin() as conn:  # a write, so the WAL exists
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
        for f in (db, db.with_name("l.db-wal"), db.with_name("l.db-shm")):
            assert f.exists(), f
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, (f, oct(f.stat().st_mode))
        for d in (db.parent, db.parent.parent):
            assert stat.S_IMODE(d.stat().st_mode) == 0o700, (d, oct(d.stat().st_mode))
    finally:
        store.close()


def test_keygen_force_writes_a_new_file_and_never_rewrites_the_old_one(tmp_path, capsys):
    from consent_ledger.cli import main

    key = tmp_path / "log.key"
    assert main(["keygen", "log", "--name", "ledger.test/log", "--out", str(key)]) == 0
    old_text = key.read_text()
    os.chmod(key, 0o644)  # a key left readable, as an older version or a careless copy did
    held = open(key)  # noqa: SIM115 - a reader that opened the file before the new key was written
    try:
        assert main(["keygen", "log", "--name", "ledger.test/log", "--out", str(key), "--force"]) == 0
        assert held.read() == old_text, "a descriptor opened on the old file reads the new private key"
    finally:
        held.close()
    assert key.read_text() != old_text
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name not in ("log.key", "log.key.pub")], "a temporary file was left"


def test_a_forged_signature_cannot_spend_anothers_budget(tmp_path):
    """A patient's bucket is charged only by requests its key really signed: calls that name the patient's key
    with a bad signature are charged to the sender's address, so they cannot starve the patient."""
    victim = Ed25519PrivateKey.from_seed(b"\x7a" * 32)
    limit = RateLimit(per_second=0.001, burst=3)
    with running_server(f"sqlite:///{tmp_path / 'l.db'}", rate_limit=limit, **PLAIN) as server:
        req, metadata = _signed_call(server.target, victim)  # one of the victim's three
        forged = tuple(
            (k, v.replace("sig=", "sig=" + "0" * 128 + "x")[: len(v)] if k == HEADER else v) for k, v in metadata
        )
        codes = [_replay(server.target, req, forged)[0] for _ in range(5)]
        assert codes[:3] == [grpc.StatusCode.UNAUTHENTICATED] * 3, codes
        assert codes[3:] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2, codes
        for _ in range(2):
            _signed_call(server.target, victim)
        with pytest.raises(grpc.RpcError) as err:
            _signed_call(server.target, victim)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
