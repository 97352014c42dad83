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
from consent_ledger.app.lru import CacheBudget
from consent_ledger.core import payloads
from consent_ledger.core.decision import Policy
from consent_ledger.core.envelope import parse_envelope
from consent_ledger.core.rfc6962 import hash_leaf
from consent_ledger.core.state_rules import ErasureFacts, InForceSets
from consent_ledger.core.note import Signer
from consent_ledger.core.vrf import MapKeyProver, VrfPrivateKey
from consent_ledger.keys import derived_map_vrf_key
from consent_ledger.server.app import TlsFiles, create_server
from consent_ledger.server.limits import RateLimit
from consent_ledger.storage import open_store
from consent_ledger.storage.consent_index import SqlConsentIndex
from consent_ledger.storage.map_store import SqlMapStore
from consent_ledger.storage.nonces import SqlNonceStore

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
    # What the server's caches may hold together (app.lru.CacheBudget; serve --cache-mb).
    cache: CacheBudget = field(default_factory=CacheBudget)


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


async def start_service(
    config: ServiceConfig, signer: Signer, map_vrf_key: VrfPrivateKey | None = None
) -> RunningService:
    """Open (and migrate) the database, load the log's right edge, and serve. Without ``map_vrf_key``, the map
    VRF key is derived from the log key (keys.derived_map_vrf_key)."""
    store = open_store(config.database_url)
    try:
        index = SqlConsentIndex(store)
        vrf_key = map_vrf_key or derived_map_vrf_key(signer)
        state = ConsentState(index, SqlMapStore(store), signer, config.state, MapKeyProver(vrf_key), config.cache)
        consents = ConsentLedger(
            index, state, signer, policy=config.policy, operator_keys=config.operator_keys, cache=config.cache
        )
        ledger = Ledger(
            store,
            signer,
            check_payload=consents.check,
            prepare_batch=consents.prepare_batch,
            on_integrated=consents.on_integrated,
            admit=consents.admit,
            heartbeat_s=config.state.heartbeat_s,
            max_batch=config.max_batch,
            cache=config.cache,
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
            nonces=SqlNonceStore(store),
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


REBUILD_PAGE = 1000


@dataclass(frozen=True)
class RebuiltMap:
    state_commit_index: int
    map_root: bytes
    keys: int
    entries: int


def rebuild_map(database_url: str, signer: Signer, map_vrf_key: VrfPrivateKey | None = None) -> RebuiltMap:
    """Rebuild the consent-state map with the map VRF key's keys (DESIGN section 5), for a log written before map
    keys were VRF outputs (or to move to another VRF key): replay the log's consent entries and registrations
    through core.state_rules.InForceSets (erased bodies through their Erasure records), delete the stored map
    nodes, write the whole map afresh in one batch and close it with a StateCommit naming the VRF key and the
    new root. Run it with the server stopped; if it is interrupted, run it again."""
    store = open_store(database_url)
    try:
        vrf_key = map_vrf_key or derived_map_vrf_key(signer)
        prover = MapKeyProver(vrf_key)
        index = SqlConsentIndex(store)
        cmap = SqlMapStore(store)
        state = ConsentState(index, cmap, signer, StatePolicy(), prover)
        consents = ConsentLedger(index, state, signer)
        ledger = Ledger(store, signer, check_payload=consents.check, prepare_batch=consents.prepare_batch,
                        on_integrated=consents.on_integrated, admit=consents.admit)
        consents.attach(ledger.reader, lambda: ledger.sequencer.latest, ledger.sequencer.append, None)
        ledger.open()
        size = ledger.sequencer.latest.size
        sets = InForceSets(prover)
        for start in range(0, size, REBUILD_PAGE):
            page = index.read_indices(range(start, min(size, start + REBUILD_PAGE)))
            records = {e.erased_by for e in page if e.envelope is None and e.erased_by is not None}
            erasures = {r.index: r for r in index.read_indices(records)} if records else {}
            for e in page:
                leaf_hash = hash_leaf(e.leaf)
                if e.envelope is None:
                    record = erasures.get(e.erased_by) if e.erased_by is not None else None
                    if record is not None and record.envelope is not None:
                        env = parse_envelope(record.envelope)
                        p = payloads.parse_payload(env.payload_type, env.payload)
                        if isinstance(p, payloads.ErasurePayload):
                            sets.add_erased(e.index, leaf_hash, ErasureFacts(p.consent_id, p.map_key, p.ends))
                    continue
                env = parse_envelope(e.envelope)
                p = payloads.parse_payload(env.payload_type, env.payload)
                sets.add(e.index, leaf_hash, payloads.consent_id(env.payload), p)
        values = sets.all_values()
        cmap.clear()
        # A fresh ConsentState: nothing cached from the map that was just deleted.
        state = ConsentState(index, cmap, signer, StatePolicy(), prover)
        consents.state = state
        state.rebuild_next(values)
        ledger.sequencer.integrate_batch([], heartbeat=True, prove=False)
        latest = state.latest
        assert latest is not None
        log.info("rebuilt the consent-state map: %d keys, StateCommit #%d", len(values), latest.index)
        return RebuiltMap(latest.index, latest.map_root, len(values), size)
    finally:
        store.close()
