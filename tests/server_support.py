"""A real ledger server on port 0, run in its own thread and event loop so tests can use the sync client.

Transport: plaintext on loopback with the development party header (the default), or mutual TLS when
CONSENT_LEDGER_TEST_TRANSPORT=mtls: every server then gets a certificate from a throwaway CA, and every client
a certificate whose common name is the identity it speaks for (`connect(server, party=...)`), so the same
tests run with the identities the certificates prove. `scripts/test` runs the suite both ways.
"""

from __future__ import annotations

import asyncio
import functools
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.note import Signer, format_verifier_key
from consent_ledger.server.app import TlsFiles
from consent_ledger.service import RunningService, ServiceConfig, start_service
from consent_ledger_client import ConsentClient, LedgerClient
from consent_ledger_client.client import CallerIdentity

from .tls_support import ThrowawayCA

TRANSPORT_ENV = "CONSENT_LEDGER_TEST_TRANSPORT"
MTLS = os.environ.get(TRANSPORT_ENV, "").strip().lower() == "mtls"
# The certificate a client without an organisation identity presents under mTLS (a patient app, a witness).
APP_CN = "patient-app"

LOG_NAME = "ledger.test/log"
# The identities every test server is configured with (development header names; certificate CNs under mTLS).
OPERATOR = "operator"
AUDITOR = "auditor"
LOG_SEED = bytes(range(32))


def log_signer() -> Signer:
    return Signer(LOG_NAME, Ed25519PrivateKey.from_seed(LOG_SEED))


def log_verifier_key() -> str:
    s = log_signer()
    return format_verifier_key(s.name, s.public_key)


class ServerThread:
    def __init__(self, config: ServiceConfig, signer: Signer, map_vrf_key: object = None) -> None:
        self.config = config
        self.signer = signer
        self.map_vrf_key = map_vrf_key  # a core.vrf.VrfPrivateKey; None: the one derived from the log key
        self.loop = asyncio.new_event_loop()
        self.service: RunningService | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="ledger-server", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            self.service = await start_service(self.config, self.signer, self.map_vrf_key)  # type: ignore[arg-type]
        except BaseException as e:  # noqa: BLE001 - reported to the starting thread
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.service.stop(grace=0.5)

    def start(self) -> int:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        assert self.service is not None
        return self.service.port

    @property
    def target(self) -> str:
        assert self.service is not None
        return f"127.0.0.1:{self.service.port}"

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)


@functools.cache
def session_ca() -> ThrowawayCA:
    """One throwaway CA for the test session, with the server's certificate."""
    ca = ThrowawayCA(Path(tempfile.mkdtemp(prefix="consent-ledger-tls-")))
    ca.issue("localhost", server=True)
    return ca


@functools.cache
def client_credentials(cn: str) -> grpc.ChannelCredentials:
    ca = session_ca()
    pem = ca.issue(cn, server=False)
    return grpc.ssl_channel_credentials(ca.ca_file.read_bytes(), pem.key.read_bytes(), pem.cert.read_bytes())


def transport_config() -> dict[str, object]:
    """The ServiceConfig fields for the suite's transport."""
    if not MTLS:
        return {"insecure": True}
    ca = session_ca()
    return {"tls": TlsFiles(ca.dir / "localhost.pem", ca.dir / "localhost.key", ca.ca_file), "insecure": False}


def transport_channel(target: str, party: str | None = None) -> grpc.Channel:
    """A channel to a test server in the suite's transport; under mTLS with a certificate naming ``party``."""
    if not MTLS:
        return grpc.insecure_channel(target)
    host, port = target.rsplit(":", 1)
    return grpc.secure_channel(
        f"localhost:{port}" if host in ("127.0.0.1", "localhost") else target, client_credentials(party or APP_CN)
    )


def open_channel(
    target: str, party: str | None = None, patient: Ed25519PrivateKey | None = None
) -> grpc.Channel:
    """A channel for raw stubs whose every call comes from ``party`` (its certificate under mTLS, else the
    development header) or from ``patient`` (signed requests), as the client library would send them."""
    channel = transport_channel(target, party)
    if (party and not MTLS) or patient is not None:
        channel = grpc.intercept_channel(channel, CallerIdentity(party=None if MTLS else party, key=patient, origin=LOG_NAME))
    return channel


def ledger_client(
    server: ServerThread | str, *, party: str | None = None, patient: Ed25519PrivateKey | None = None, **kw: object
) -> LedgerClient:
    """A verifying LedgerClient for a test server: an organisation, operator or auditor by ``party``, a patient
    (or delegate) by ``patient``, anonymous with neither (a certificate without a known name under mTLS)."""
    target = server if isinstance(server, str) else server.target
    return LedgerClient(
        channel=transport_channel(target, party),
        verifier_key=str(kw.pop("verifier_key", log_verifier_key())),
        party_id=party,
        patient_key=patient,
        **kw,  # type: ignore[arg-type]
    )


def connect(
    server: ServerThread | str, *, party: str | None = None, patient: Ed25519PrivateKey | None = None, **kw: object
) -> ConsentClient:
    """A ConsentClient for a test server (see ledger_client)."""
    return ConsentClient(ledger_client(server, party=party, patient=patient, **kw))


@contextmanager
def running_server(database_url: str, map_vrf_key: object = None, **config: object) -> Iterator[ServerThread]:
    server = ServerThread(
        ServiceConfig(  # type: ignore[arg-type]
            database_url=database_url,
            listen="127.0.0.1:0",
            **{"operators": (OPERATOR,), "auditors": (AUDITOR,), **transport_config(), **config},
        ),
        log_signer(),
        map_vrf_key,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
