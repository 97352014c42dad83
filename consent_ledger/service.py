"""Composition: open the store, build the ledger, start the gRPC server. Used by the CLI and the tests."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from consent_ledger.app.authorization import Authorizer
from consent_ledger.app.broker import Broker
from consent_ledger.app.consent_state import ConsentState, StatePolicy
from consent_ledger.app.consents import ConsentLedger
from consent_ledger.app.ledger import Ledger
from consent_ledger.core.decision import Policy
from consent_ledger.core.note import Signer
from consent_ledger.server.app import TlsFiles, create_server
from consent_ledger.server.limits import RateLimit
from consent_ledger.storage import open_store
from consent_ledger.storage.consent_index import SqlConsentIndex
from consent_ledger.storage.map_store import SqlMapStore

log = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite:///consent-ledger.db"
DEFAULT_LISTEN = "127.0.0.1:50051"


@dataclass(frozen=True)
class ServiceConfig:
    database_url: str = DEFAULT_DATABASE_URL
    listen: str = DEFAULT_LISTEN
    tls: TlsFiles | None = None
    insecure: bool = False
    max_batch: int = 4096
    policy: Policy = field(default_factory=Policy)
    state: StatePolicy = field(default_factory=StatePolicy)
    rate_limit: RateLimit = field(default_factory=RateLimit)
    operator_keys: tuple[bytes, ...] = ()
    # Configured identities (TLS client certificate common names; the party header on a development server).
    operators: tuple[str, ...] = ()
    auditors: tuple[str, ...] = ()


@dataclass
class RunningService:
    """A started service: stop() drains it (health NOT_SERVING, finish RPCs, stop the sequencer)."""

    server: grpc.aio.Server
    port: int
    ledger: Ledger
    consents: ConsentLedger
    health: HealthServicer
    stopped: bool = field(default=False)

    async def stop(self, grace: float = 2.0) -> None:
        if self.stopped:
            return
        self.stopped = True
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.ledger.stop()
        self.ledger.store.close()

    async def wait(self) -> None:
        await self.server.wait_for_termination()


async def start_service(config: ServiceConfig, signer: Signer) -> RunningService:
    """Open (and migrate) the database, load the log's right edge, and serve."""
    store = open_store(config.database_url)
    try:
        index = SqlConsentIndex(store)
        state = ConsentState(index, SqlMapStore(store), signer, config.state)
        consents = ConsentLedger(index, state, signer, policy=config.policy, operator_keys=config.operator_keys)
        ledger = Ledger(
            store,
            signer,
            check_payload=consents.check,
            prepare_batch=consents.prepare_batch,
            on_integrated=consents.on_integrated,
            admit=consents.admit,
            on_reset=consents.reset,
            heartbeat_s=config.state.heartbeat_s,
            max_batch=config.max_batch,
        )
        broker = Broker(asyncio.get_running_loop())
        consents.attach(ledger.reader, lambda: ledger.sequencer.latest, ledger.sequencer.append, broker)
        ledger.open()
        authorizer = Authorizer(
            consents,
            operators=frozenset(config.operators),
            auditors=frozenset(config.auditors),
        )
        server, port, health = await create_server(
            ledger,
            consents,
            config.listen,
            tls=config.tls,
            insecure=config.insecure,
            rate_limit=config.rate_limit,
            authorizer=authorizer,
        )
    except BaseException:
        store.close()
        raise
    await ledger.start()
    await server.start()
    cp = ledger.sequencer.latest
    log.info("serving log %s (tree size %d) on port %d", signer.name, cp.size, port)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    return RunningService(server, port, ledger, consents, health)
