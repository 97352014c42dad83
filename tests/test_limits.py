"""Hostile callers: per-caller rate limits answer RESOURCE_EXHAUSTED; health checks are never limited; deadlines
end calls on both sides."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.server.limits import RateLimit, TokenBuckets
from consent_ledger.service import ServiceConfig
from consent_ledger.v1 import consent_pb2, consent_pb2_grpc, log_pb2, log_pb2_grpc

from .server_support import ServerThread, connect, log_signer, running_server


def test_rate_limit_answers_resource_exhausted(tmp_path):
    t = [0.0]
    buckets = TokenBuckets(RateLimit(per_second=2, burst=3), clock=lambda: t[0])
    assert [buckets.take("a") for _ in range(4)] == [True, True, True, False]
    assert buckets.take("b")  # callers have their own buckets
    t[0] += 1.0
    assert [buckets.take("a") for _ in range(3)] == [True, True, False]

    config = ServiceConfig(
        database_url=f"sqlite:///{tmp_path / 'l.db'}", listen="127.0.0.1:0", insecure=True,
        rate_limit=RateLimit(per_second=1, burst=5),
    )  # fmt: skip
    server = ServerThread(config, log_signer())
    server.start()
    try:
        with grpc.insecure_channel(server.target) as ch:
            log = log_pb2_grpc.LogServiceStub(ch)
            codes = []
            for _ in range(10):
                try:
                    log.GetCheckpoint(log_pb2.GetCheckpointRequest(), timeout=5)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as e:
                    codes.append(e.code())
                    assert "rate limit" in (e.details() or "")
            assert codes[:5] == [grpc.StatusCode.OK] * 5
            assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes[5:]
            health = health_pb2_grpc.HealthStub(ch)
            for _ in range(10):  # never limited
                assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop()


def test_deadlines_are_honoured_and_leave_nothing_behind(tmp_path):
    """A caller's deadline ends its call on both sides: a watch is unsubscribed, the server goes on serving."""
    patient = Ed25519PrivateKey.from_seed(b"\x5d" * 32)
    with running_server(f"sqlite:///{tmp_path / 'l.db'}") as server:
        c = connect(server, patient=patient)
        broker = server.service.consents.broker
        key = ("patient", patient.public_key)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            for _ in c.watch_patient(patient.public_key, timeout=0.3):
                pass
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 5
        deadline = time.monotonic() + 5
        while broker.subscribers(key):
            assert time.monotonic() < deadline, "the server kept the expired watch subscribed"
            time.sleep(0.02)
        stub = consent_pb2_grpc.ConsentServiceStub(c.ledger.channel)
        with pytest.raises(grpc.RpcError) as err:
            # A deadline already past when the call starts: gRPC ends it before sending, so this cannot race (a
            # 1 us timeout could, and sometimes did, let the call finish first).
            stub.ListConsents(consent_pb2.ListConsentsRequest(patient=patient.public_key), timeout=-1)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert c.list_consents(patient.public_key).consents == ()
