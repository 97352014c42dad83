"""Build the gRPC server: ledger servicers, health checking, reflection, telemetry, size limits, TLS."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from consent_ledger.app.authentication import Authenticator
from consent_ledger.app.authorization import Authorizer
from consent_ledger.app.consents import ConsentLedger
from consent_ledger.app.ledger import Ledger
from consent_ledger.app.ports import NonceStore
from consent_ledger.server.consent_servicers import AccessServicer, ConsentServicer
from consent_ledger.server.auth import AuthInterceptor
from consent_ledger.server.limits import RateLimit, RateLimitInterceptor
from consent_ledger.server.log_servicer import LogServicer
from consent_ledger.v1 import access_pb2, access_pb2_grpc, consent_pb2, consent_pb2_grpc, log_pb2, log_pb2_grpc

log = logging.getLogger(__name__)

MAX_RECEIVE_BYTES = 256 * 1024
MAX_SEND_BYTES = 32 * 1024 * 1024
MAX_STREAMS_PER_CONNECTION = 256


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS; with ``client_ca`` set, clients must present a certificate it signed (mTLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        ca = self.client_ca.read_bytes() if self.client_ca else None
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=ca,
            require_client_auth=ca is not None,
        )


def is_loopback(address: str) -> bool:
    """True when a listen address ("host:port") is on the loopback interface."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def service_names() -> list[str]:
    """The full names of the ledger's gRPC services (health reports each, and "" for the whole server)."""
    return [
        log_pb2.DESCRIPTOR.services_by_name["LogService"].full_name,
        access_pb2.DESCRIPTOR.services_by_name["AccessService"].full_name,
        consent_pb2.DESCRIPTOR.services_by_name["ConsentService"].full_name,
    ]


async def create_server(
    ledger: Ledger,
    consents: ConsentLedger,
    address: str = "127.0.0.1:0",
    *,
    nonces: NonceStore,
    tls: TlsFiles | None = None,
    insecure: bool = False,
    rate_limit: RateLimit = RateLimit(),
    authorizer: Authorizer | None = None,
) -> tuple[grpc.aio.Server, int, HealthServicer]:
    """A started-ready (not yet started) server bound to ``address``; returns (server, port, health).

    Plaintext needs ``insecure=True`` and a loopback address; anything else needs ``tls``. ``authorizer`` holds
    the configured operator and auditor identities (default: none configured); ``nonces`` keeps the nonces of
    signed requests (the log's database, shared with every other server process on it).
    """
    if tls is None:
        if not insecure:
            raise ValueError("refusing to serve without TLS: pass TLS files or insecure=True (loopback only)")
        if not is_loopback(address):
            raise ValueError(f"plaintext is only allowed on loopback, not on {address}")
        log.warning("serving WITHOUT TLS on %s (development only)", address)
    authorizer = authorizer or Authorizer(consents)
    # Without TLS there are no client certificates: the development-only party header stands in (loopback).
    # A signed call waits for its nonce no longer than an entry waits for its acknowledgement.
    authenticator = Authenticator(
        authorizer, origin=ledger.signer.name, nonces=nonces, timeout_s=ledger.ack_timeout_s
    )
    auth = AuthInterceptor(authenticator, authorizer, trust_party_header=tls is None)
    server = grpc.aio.server(
        interceptors=[aio_server_interceptor(), RateLimitInterceptor(rate_limit, authenticator.verify), auth],
        options=[
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
            ("grpc.so_reuseport", 0),
            # No bandwidth-delay probing: a stream's receive window stays at HTTP/2's 64 KiB instead of growing to
            # megabytes, so a client streaming faster than the server reads (SubmitStream) is held back by flow
            # control instead of being buffered in the server's transport.
            ("grpc.http2.bdp_probe", 0),
            # Per connection: a caller flooding over one connection waits for its own streams instead of filling
            # the server's queue of pending calls, from which gRPC cancels other callers' calls.
            ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
        ],
    )
    log_pb2_grpc.add_LogServiceServicer_to_server(
        LogServicer(ledger, consents.map_vrf_proof, authorizer=authorizer, limit=rate_limit), server
    )
    access_pb2_grpc.add_AccessServiceServicer_to_server(AccessServicer(ledger, consents), server)
    consent_pb2_grpc.add_ConsentServiceServicer_to_server(ConsentServicer(consents), server)
    names = service_names()
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in ["", *names]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection([*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server)
    port = server.add_secure_port(address, tls.credentials()) if tls else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
    return server, port, health
