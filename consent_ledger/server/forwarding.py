"""Forwarding submissions from a follower replica to the sequencer lease holder (app/replica.py), over gRPC.

The follower already authenticated and authorised its caller and validated the entry; it then submits the exact
envelope bytes through the leader's ``LogService.Submit`` as the operator (replicas hold the log's key, which is
the operator's, so that is who they are): under mutual TLS with a client certificate naming a configured operator
(``serve --peer-cert/--peer-key``, trusting ``--peer-ca``), on a development server (``--insecure``) with the party
header. The leader validates the entry again (its checks are the ones that count) and answers; the follower
returns that answer unchanged: the same index, leaf, checkpoint note and inclusion proof.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from consent_ledger.app.errors import AlreadyExists, FailedPrecondition, NotFound, PermissionDenied, Unavailable
from consent_ledger.app.ports import StoredCheckpoint
from consent_ledger.app.sequencer import Appended
from consent_ledger.core.checkpoint import parse_checkpoint
from consent_ledger.core.envelope import ParsedEnvelope
from consent_ledger.core.errors import InvalidInput
from consent_ledger.core.request_auth import PARTY_HEADER
from consent_ledger.v1 import log_pb2, log_pb2_grpc

__all__ = ["Forwarder", "PeerTls"]

_ERRORS: dict[grpc.StatusCode, type[Exception]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.NOT_FOUND: NotFound,
}


@dataclass(frozen=True)
class PeerTls:
    """How a replica reaches the others under TLS: the CA their server certificates chain to, and its own client
    certificate (whose common name is a configured operator) and key."""

    ca: Path
    cert: Path
    key: Path
    server_name: str | None = None


class Forwarder:
    """Sends envelopes to the leader's Submit; one channel per leader address, kept."""

    def __init__(self, *, operator: str, tls: PeerTls | None = None, timeout_s: float = 10.0) -> None:
        self._operator = operator
        self._tls = tls
        self._timeout_s = timeout_s
        self._channels: dict[str, tuple[grpc.aio.Channel, log_pb2_grpc.LogServiceStub]] = {}

    def _stub(self, address: str) -> log_pb2_grpc.LogServiceStub:
        got = self._channels.get(address)
        if got is None:
            if self._tls is None:
                channel = grpc.aio.insecure_channel(address)
            else:
                creds = grpc.ssl_channel_credentials(
                    self._tls.ca.read_bytes(), self._tls.key.read_bytes(), self._tls.cert.read_bytes()
                )
                options = [("grpc.ssl_target_name_override", self._tls.server_name)] if self._tls.server_name else []
                channel = grpc.aio.secure_channel(address, creds, options=options)
            got = self._channels[address] = (channel, log_pb2_grpc.LogServiceStub(channel))
        return got[1]

    async def __call__(self, address: str, envelope: ParsedEnvelope) -> Appended:
        metadata = () if self._tls is not None else ((PARTY_HEADER, self._operator),)
        try:
            resp = await self._stub(address).Submit(
                log_pb2.SubmitRequest(envelope=envelope.raw), metadata=metadata, timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as e:
            err = _ERRORS.get(e.code())
            if err is not None:
                raise err(e.details() or e.code().name) from None
            raise Unavailable(f"the sequencer replica at {address} did not take the entry: {e.code().name}") from None
        note = bytes(resp.checkpoint.note)
        cp = parse_checkpoint(note.split(b"\n\n", 1)[0].decode() + "\n")
        return Appended(
            resp.index,
            bytes(resp.leaf),
            resp.duplicate,
            StoredCheckpoint(cp.size, cp.root_hash, note, time.time_ns() // 1_000_000),
            [bytes(h) for h in resp.inclusion_proof],
        )

    async def close(self) -> None:
        for channel, _ in self._channels.values():
            await channel.close()
        self._channels.clear()
