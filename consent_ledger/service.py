"""Composition: open the store, build the ledger, start the gRPC server. Used by the CLI and the tests."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from consent_ledger.app import instruments
from consent_ledger.app.access import WarmUp
from consent_ledger.app.authorization import Authorizer
from consent_ledger.app.broker import Broker
from consent_ledger.app.consent_state import ConsentState, StatePolicy
from consent_ledger.app.consents import ConsentLedger
from consent_ledger.app.errors import Unavailable
from consent_ledger.app.ledger import Ledger
from consent_ledger.app.lru import CacheBudget
from consent_ledger.app.replica import FencedStore, ReplicaRole
from consent_ledger.app.witnessing import WitnessEndpoint, Witnessing
from consent_ledger.core import delegation, payloads
from consent_ledger.core.decision import Policy
from consent_ledger.core.envelope import parse_envelope
from consent_ledger.core.leaf import parse_leaf
from consent_ledger.core.rfc6962 import hash_leaf
from consent_ledger.core.state_rules import ErasureFacts, InForceSets
from consent_ledger.core.note import Signer
from consent_ledger.core.vrf import MapKeyProver, VrfPrivateKey
from consent_ledger.keys import derived_map_vrf_key
from consent_ledger.server.app import TlsFiles, create_server, service_names
from consent_ledger.server.forwarding import Forwarder, PeerTls
from consent_ledger.server.limits import RateLimit
from consent_ledger.server.witness_http import RunningWitness, WitnessConfig, start_witness
from consent_ledger.storage import open_store
from consent_ledger.storage.async_reads import AsyncTileReads, async_tile_reads
from consent_ledger.storage.engine import Timeouts
from consent_ledger.storage.lease import SqlFollowerRows, SqlLease, bound_lock_holding
from consent_ledger.storage.consent_index import SqlConsentIndex
from consent_ledger.storage.map_store import SqlMapStore
from consent_ledger.storage.nonces import SqlNonceStore
from consent_ledger.storage.witness_store import WitnessStore
from consent_ledger.storage.witnessed import SqlWitnessedCheckpoint

log = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite:///consent-ledger.db"
DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_WITNESS_DATABASE_URL = "sqlite:///consent-ledger-witness.db"
DEFAULT_WITNESS_LISTEN = "127.0.0.1:8380"
# Threads that run blocking work (storage reads, validation) for the event loop: asyncio's default count.
DEFAULT_IO_THREADS = min(32, (os.cpu_count() or 1) + 4)


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
    # Read full tiles and the top of the consent map into the caches in the background after start-up
    # (app.access.WarmUp); serving does not wait for it.
    warm_up: bool = True
    # The database: connect and statement timeouts; how often health probes it.
    db_connect_timeout_s: float = 5.0
    db_statement_timeout_s: float = 30.0
    health_probe_s: float = 1.0
    # A submission not acknowledged within this long is answered UNAVAILABLE (None: wait for the batch).
    ack_timeout_s: float | None = 10.0
    # Worker threads for blocking calls; the database pool holds one connection for each, plus the integration
    # thread's and the health probe's.
    io_threads: int = DEFAULT_IO_THREADS
    # C2SP tlog-witness witnesses to send checkpoints to (serve --witness URL=KEY), and how many must cosign a
    # checkpoint for it to be served as witnessed (--witness-quorum; 0: all of them).
    witnesses: tuple[WitnessEndpoint, ...] = ()
    witness_quorum: int = 0
    # CA certificate file for HTTPS witnesses (serve --witness-ca); None: the system's roots.
    witness_ca: str | None = None
    # Replicas (app/replica.py, serve --replica): take part in the sequencer election over the shared database;
    # forward submissions to the lease holder when not holding it. ``advertise``: the address other replicas reach
    # this one at (default: the listen host and bound port). ``replica_count``: how many replicas share the
    # per-caller rate limit (each enforces its share: rate_limit / replica_count).
    replica: bool = False
    advertise: str | None = None
    lease_ttl_s: float = 2.0
    replica_poll_s: float = 0.1
    replica_count: int = 1
    peer_tls: PeerTls | None = None


@dataclass
class RunningService:
    """A started service: stop() drains it (health NOT_SERVING, finish RPCs, stop the sequencer)."""

    server: grpc.aio.Server
    port: int
    ledger: Ledger
    consents: ConsentLedger
    health: HealthServicer
    stopped: bool = field(default=False)
    probe: asyncio.Task[None] | None = None
    witnessing: Witnessing | None = None
    role: ReplicaRole | None = None
    forwarder: Forwarder | None = None
    warm_up: WarmUp | None = None
    warm_thread: threading.Thread | None = None
    tile_reads: AsyncTileReads | None = None

    async def stop(self, grace: float = 2.0) -> None:
        if self.stopped:
            return
        self.stopped = True
        if self.probe is not None:
            self.probe.cancel()
        if self.warm_up is not None:
            self.warm_up.stop()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.role is not None:  # let the lease go now: another replica takes over at once
            await self.role.stop()
        if self.forwarder is not None:
            await self.forwarder.close()
        if self.witnessing is not None:
            await self.witnessing.stop()
        await self.ledger.stop()
        if self.warm_thread is not None:
            await asyncio.to_thread(self.warm_thread.join, 30)
        if self.tile_reads is not None:
            await self.tile_reads.close()
        self.ledger.store.close()

    async def wait(self) -> None:
        await self.server.wait_for_termination()


async def start_service(
    config: ServiceConfig, signer: Signer, map_vrf_key: VrfPrivateKey | None = None
) -> RunningService:
    """Open (and migrate) the database, load the log's right edge, and serve. Without ``map_vrf_key``, the map
    VRF key is derived from the log key (keys.derived_map_vrf_key). Raises StorageUnavailable (naming the
    database) when it cannot be reached within the connect timeout."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=config.io_threads, thread_name_prefix="ledger-io")
    )
    timeouts = Timeouts(config.db_connect_timeout_s, config.db_statement_timeout_s)
    store = await asyncio.to_thread(
        open_store, config.database_url, timeouts=timeouts, pool_size=config.io_threads + 2
    )
    role: ReplicaRole | None = None
    forwarder: Forwarder | None = None
    rate_limit = config.rate_limit
    if config.replica:
        if not config.operators:
            store.close()
            raise ValueError("replicas forward submissions as the operator: configure --operator")
        bound_lock_holding(store, config.lease_ttl_s)
        role = ReplicaRole(
            SqlLease(store), SqlFollowerRows(store), store, holder=replica_id(), address="",
            ttl_s=config.lease_ttl_s, poll_s=config.replica_poll_s,
        )  # fmt: skip
        # A leader that does not answer within a few lease lifetimes is likely paused or gone: the forwarded entry
        # is sent again to whoever holds the lease then (a duplicate is answered with its first index).
        forwarder = Forwarder(operator=config.operators[0], tls=config.peer_tls, timeout_s=max(2.0, 3 * config.lease_ttl_s))
        rate_limit = per_replica(config.rate_limit, config.replica_count)
    tile_reads = async_tile_reads(store, timeouts)
    try:
        index = SqlConsentIndex(store)
        vrf_key = map_vrf_key or derived_map_vrf_key(signer)
        state = ConsentState(index, SqlMapStore(store), signer, config.state, MapKeyProver(vrf_key), config.cache)
        consents = ConsentLedger(
            index, state, signer, policy=config.policy, operator_keys=config.operator_keys, cache=config.cache
        )
        ledger = Ledger(
            store if role is None else FencedStore(store, role),  # type: ignore[arg-type]
            signer,
            check_payload=consents.check,
            prepare_batch=consents.prepare_batch,
            on_integrated=consents.on_integrated,
            admit=consents.admit,
            on_reset=consents.reset,
            heartbeat_s=config.state.heartbeat_s,
            max_batch=config.max_batch,
            cache=config.cache,
            ack_timeout_s=config.ack_timeout_s,
            role=role,
            tile_source=tile_reads,
        )
        broker = Broker(asyncio.get_running_loop())
        consents.attach(ledger.reader, lambda: ledger.sequencer.latest, ledger.sequencer.append, broker)
        if role is None:
            await asyncio.to_thread(ledger.open)
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
            rate_limit=rate_limit,
            authorizer=authorizer,
            nonces=SqlNonceStore(store),
        )
        if role is not None:
            role.address = config.advertise or f"{config.listen.rsplit(':', 1)[0]}:{port}"
            await open_replica(role, ledger, config.db_connect_timeout_s + config.lease_ttl_s * 5)
    except BaseException:
        store.close()
        raise
    await ledger.start()
    witnessing = None
    if config.witnesses:
        saved = SqlWitnessedCheckpoint(store)
        witnessing = Witnessing(
            list(config.witnesses),
            config.witness_quorum or len(config.witnesses),
            lambda: ledger.sequencer.latest,
            ledger.queries.consistency,
            save=saved.save,
            witnessed=await asyncio.to_thread(saved.load),
            ca_file=config.witness_ca,
            # Replicas: the lease holder sends; the others serve what it saved.
            leading=role.leading if role is not None else None,
            load=saved.load,
        )
        ledger.witnessing = witnessing
        await witnessing.start()
    await server.start()
    cp = ledger.sequencer.latest
    log.info("serving log %s (tree size %d) on port %d", signer.name, cp.size, port)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    running = RunningService(server, port, ledger, consents, health, witnessing=witnessing, tile_reads=tile_reads)
    if role is not None and forwarder is not None:
        running.role, running.forwarder = role, forwarder

        async def on_role(leading: bool) -> None:
            status = health_pb2.HealthCheckResponse.SERVING if leading else health_pb2.HealthCheckResponse.NOT_SERVING
            await health.set(SEQUENCER_HEALTH, status)

        role.attach(ledger.sequencer, consents, forwarder, on_role)
        consents.state.on_stale = role.catch_up_now
        await role.start()
    if config.warm_up and cp.size:
        running.warm_up = WarmUp(
            ledger.reader, cp.size, lambda: state._nodes, config.cache.of("map_nodes")  # noqa: SLF001
        )
        running.warm_thread = threading.Thread(target=running.warm_up.run, name="cache-warm-up", daemon=True)
        running.warm_thread.start()
    running.probe = asyncio.create_task(
        probe_database(
            functools.partial(_check_database, ledger), health, config.health_probe_s, config.db_connect_timeout_s + 1
        ),
        name="database-probe",
    )
    return running


# The health service name that reports a replica's role: SERVING on the sequencer lease holder, NOT_SERVING on
# the followers (every replica serves every RPC; health "" says whether it can).
SEQUENCER_HEALTH = "consent_ledger.replica.Sequencer"


def replica_id() -> str:
    """A replica's lease holder id: unique per process (a restarted replica is another holder)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def per_replica(limit: RateLimit, replicas: int) -> RateLimit:
    """Each replica's share of a per-caller rate limit meant for the whole replica set (streams stay per replica:
    a stream is held on the replica that serves it)."""
    if replicas <= 1 or limit.per_second == 0:
        return limit
    return dataclasses.replace(limit, per_second=limit.per_second / replicas, burst=max(1.0, limit.burst / replicas))


async def open_replica(role: ReplicaRole, ledger: Ledger, timeout_s: float) -> None:
    """Open the log as a replica: take the lease if it is free (then a new log's first checkpoint is this
    replica's), else wait for the lease holder to have published one."""
    deadline = time.monotonic() + timeout_s
    while True:
        if await asyncio.to_thread(role.prepare) or await asyncio.to_thread(role.log_exists):
            break
        if time.monotonic() > deadline:
            raise Unavailable("no replica holding the sequencer lease has opened the log")
        await asyncio.sleep(0.2)
    await asyncio.to_thread(ledger.open)


def _check_database(ledger: Ledger) -> None:
    """Raises unless the database answers and appends are not failing (a full disk answers reads)."""
    ledger.store.ping()
    if ledger.sequencer.write_failure is not None:
        raise Unavailable(f"the latest batch failed: {ledger.sequencer.write_failure}")


async def probe_database(ping: Callable[[], None], health: HealthServicer, interval_s: float, timeout_s: float) -> None:
    """Health follows the database: every ``interval_s`` a cheap round trip (in its own thread, bounded by
    ``timeout_s`` even when the database stalls); NOT_SERVING for every service while it fails, SERVING again
    once it answers. Logs each change once."""
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-probe")
    loop = asyncio.get_running_loop()
    names = ["", *service_names()]
    serving = True
    pending: asyncio.Future[None] | None = None
    try:
        while True:
            await asyncio.sleep(interval_s)
            if pending is None or pending.done():
                pending = loop.run_in_executor(executor, ping)
            try:
                await asyncio.wait_for(asyncio.shield(pending), timeout_s)
                ok, why = True, ""
            except TimeoutError:
                ok, why = False, f"no answer within {timeout_s:g} s"
            except Exception as e:  # noqa: BLE001 - any failure means not serving
                ok, why = False, getattr(e, "detail", None) or str(e) or type(e).__name__
            instruments.database_available.set(1 if ok else 0)
            if ok != serving:
                serving = ok
                status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
                for name in names:
                    await health.set(name, status)
                if ok:
                    log.warning("the database answers again: health SERVING")
                else:
                    log.warning("the database cannot be reached (%s): health NOT_SERVING", why)
    finally:
        executor.shutdown(wait=False)


REBUILD_PAGE = 1000


@dataclass(frozen=True)
class RebuiltMap:
    state_commit_index: int
    map_root: bytes
    keys: int
    entries: int


def rebuild_map(database_url: str, signer: Signer, map_vrf_key: VrfPrivateKey | None = None) -> RebuiltMap:
    """Rebuild the consent-state map with the map VRF key's keys (docs/design.md section 5), for a log written before map
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
        # The log's own delegations (admitted by this ledger) authorise delegate-signed entries in the replay.
        book = delegation.DelegationBook()
        sets = InForceSets(prover, book)
        for start in range(0, size, REBUILD_PAGE):
            page = index.read_indices(range(start, min(size, start + REBUILD_PAGE)))
            records = {e.erased_by for e in page if e.envelope is None and e.erased_by is not None}
            erasures = {r.index: r for r in index.read_indices(records)} if records else {}
            for e in page:
                leaf_hash = hash_leaf(e.leaf)
                integrated_ms = parse_leaf(e.leaf).integrated_time_ms
                if e.envelope is None:
                    record = erasures.get(e.erased_by) if e.erased_by is not None else None
                    if record is not None and record.envelope is not None:
                        env = parse_envelope(record.envelope)
                        p = payloads.parse_payload(env.payload_type, env.payload)
                        if isinstance(p, payloads.ErasurePayload):
                            facts = ErasureFacts(p.consent_id, p.map_key, p.ends)
                            sets.add_erased(e.index, leaf_hash, facts, integrated_ms)
                    continue
                env = parse_envelope(e.envelope)
                p = payloads.parse_payload(env.payload_type, env.payload)
                cid = payloads.consent_id(env.payload)
                if isinstance(p, payloads.DelegationPayload):
                    book.add(delegation.Delegate(cid, e.index, integrated_ms, p))
                elif isinstance(p, payloads.ConsentRevocationPayload) and p.consent_id in book.by_id:
                    book.revoke(p.consent_id, integrated_ms, e.index)
                sets.add(e.index, leaf_hash, cid, p, env.signers, integrated_ms)
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


async def start_witness_service(
    config: WitnessConfig, database_url: str = DEFAULT_WITNESS_DATABASE_URL
) -> RunningWitness:
    """Open the witness's database (its own; created on first use) and serve C2SP tlog-witness over HTTP."""
    store = await asyncio.to_thread(WitnessStore, database_url)
    try:
        return await start_witness(config, store)
    except BaseException:
        store.close()
        raise


async def wait_for_signal() -> None:
    """Return once the process gets SIGINT or SIGTERM (a foreground service's life: serve, witness, demo)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
