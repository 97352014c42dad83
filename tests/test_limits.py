"""Hostile callers: per-caller rate limits answer RESOURCE_EXHAUSTED; health checks are never limited."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from consent_ledger.server.limits import RateLimit, TokenBuckets
from consent_ledger.service import ServiceConfig
from consent_ledger.v1 import log_pb2, log_pb2_grpc

from .server_support import ServerThread, log_signer


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
