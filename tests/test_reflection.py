"""Server reflection lists the ledger's services (so grpcurl and friends work without the protos)."""

from __future__ import annotations

from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from .server_support import open_channel, running_server


def test_reflection_lists_every_service(tmp_path):
    with running_server(f"sqlite:///{tmp_path / 'l.db'}") as server:
        with open_channel(server.target) as ch:
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)
            req = reflection_pb2.ServerReflectionRequest(list_services="")
            resp = next(iter(stub.ServerReflectionInfo(iter([req]), timeout=10)))
            names = {s.name for s in resp.list_services_response.service}
            req = reflection_pb2.ServerReflectionRequest(file_containing_symbol="consent_ledger.v1.AccessService")
            described = next(iter(stub.ServerReflectionInfo(iter([req]), timeout=10)))
    assert {
        "consent_ledger.v1.LogService",
        "consent_ledger.v1.AccessService",
        "consent_ledger.v1.ConsentService",
        "grpc.health.v1.Health",
    } <= names
    assert described.file_descriptor_response.file_descriptor_proto
