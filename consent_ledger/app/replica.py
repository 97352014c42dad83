"""Replicas: several server processes over one database, one of them the sequencer (docs/design.md section 2).

Every replica serves every RPC. Exactly one holds the **sequencer lease** (a row in the database, storage/lease.py:
holder, expiry, a fencing token that only grows) and integrates; each of its integration transactions first
updates the lease row where the token is still its own, so a replica that lost the lease (paused, partitioned,
its clock stalled) cannot commit anything after another one took over: the transaction fails with Fenced and
writes nothing. The others forward submissions to the holder (its address is in the lease row) and answer their
callers with the holder's answer (index, checkpoint, proof) once their own view of the log includes it.

A follower follows the log from the database: it polls the latest checkpoint, reloads the right edge (never the
log), has the listeners of new entries told about them (watch streams on a follower deliver them; the party and
entry caches drop what changed) and starts its consent-state caches afresh at the StateCommit its checkpoint
names, so a follower never serves evidence staler than its poll interval plus the freshness rules allow.

A follower whose lease renewal finds the lease expired takes it (a conditional UPDATE: one winner), reconciles
from the database with the sequencer's own path for an unknown COMMIT outcome (``Sequencer.reconcile``: latest
checkpoint, right edge, every cache written through on commit dropped) and only then integrates; it never replays
the log. A leader that cannot renew its lease before it expires stops integrating (its own clock), and one that
finds the lease taken steps down; either way, the fencing token makes the database refuse what it still tries.

Lease times are the replicas' wall clocks (milliseconds): they must agree to well within the lease's time to live
(NTP does). Safety (one writer per index) does not depend on clocks; only how fast a dead leader is replaced does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from consent_ledger.app import instruments
from consent_ledger.app.errors import Unavailable
from consent_ledger.app.ports import (
    Fence,
    Fenced,
    IntegrationBatch,
    LogStore,
    NewEntry,
    StateCommitRow,
    StoredCheckpoint,
)
from consent_ledger.app.sequencer import Appended, Sequencer
from consent_ledger.core.checkpoint import parse_checkpoint, parse_consent_state
from consent_ledger.core.envelope import ParsedEnvelope
from consent_ledger.core.leaf import parse_leaf
from consent_ledger.core.rfc6962 import hash_leaf

log = logging.getLogger(__name__)

LEADER, FOLLOWER = "leader", "follower"
# A gap larger than this between two polls is followed without telling listeners entry by entry (watch streams
# resume from their last index through the patient's view; caches are started afresh anyway).
MAX_PUSHED_GAP = 20_000
_PAGE = 1000


class _LeaderMoved(Exception):
    """The lease named another holder while an entry was forwarded to the old one."""


@dataclass(frozen=True)
class LeaseRow:
    """The lease as stored: who holds it, its fencing token, where the holder takes forwarded submissions, until
    when (milliseconds), and how many integrations were written under it so far."""

    holder: str
    token: int
    address: str
    expires_ms: int
    commits: int = 0


class LeaseStore(Protocol):
    def read(self) -> LeaseRow | None: ...

    def acquire(self, holder: str, address: str, now_ms: int, ttl_ms: int) -> LeaseRow | None: ...

    def renew(self, fence: Fence, now_ms: int, ttl_ms: int) -> bool: ...

    def release(self, fence: Fence) -> None: ...


class FollowerRows(Protocol):
    def rows_between(self, start: int, end: int) -> Mapping[str, Sequence[Mapping[str, object]]]: ...

    def state_commit(self, index: int) -> StateCommitRow | None: ...


class Listener(Protocol):
    """What follows the log besides the sequencer (consents.ConsentLedger)."""

    state: object

    def on_integrated(self, entries: Sequence[NewEntry], extra: Mapping[str, Sequence[Mapping[str, object]]], cp: StoredCheckpoint) -> None: ...


# Sends an envelope to the leader at an address; the leader's answer. Raises Unavailable when it cannot.
Forward = Callable[[str, ParsedEnvelope], Awaitable[Appended]]
# Told of every change of role (True: this replica became the leader).
OnRole = Callable[[bool], Awaitable[None]]


@dataclass(frozen=True)
class ReplicaStatus:
    role: str
    holder: str
    token: int
    leader_address: str
    tree_size: int
    fenced_batches: int
    promotions: int


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _consent_state_of(cp: StoredCheckpoint) -> int | None:
    body = cp.note.split(b"\n\n", 1)[0].decode() + "\n"
    return parse_consent_state(parse_checkpoint(body).extensions)


class ReplicaRole:
    """This process's part in a replica set: lease holder (leader) or follower. See the module docstring."""

    def __init__(
        self,
        leases: LeaseStore,
        rows: FollowerRows,
        store: LogStore,
        *,
        holder: str,
        address: str,
        ttl_s: float = 2.0,
        poll_s: float = 0.1,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        if ttl_s <= 0 or poll_s <= 0:
            raise ValueError("the lease time to live and the poll interval must be positive")
        self._leases = leases
        self._rows = rows
        self._store = store
        self.holder = holder
        self.address = address
        self._ttl_ms = int(ttl_s * 1000)
        self._poll_s = poll_s
        self._clock_ms = clock_ms
        self._held: LeaseRow | None = None  # the lease this replica holds (leader), with its expiry as renewed
        self._leading = False
        self._known: LeaseRow | None = None  # the lease as last read (followers: where the leader is)
        self._seq: Sequencer | None = None
        self._listener: Listener | None = None
        self._forward: Forward | None = None
        self._on_role: OnRole | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = threading.Lock()  # one catch-up at a time (poll loop, a request that found the state moved)
        self._last_token = -1
        self.fenced_batches = 0
        self.promotions = 0
        self._stopping = False

    # -- the sequencer's hooks ---------------------------------------------------------------------------

    def leading(self) -> bool:
        """Whether this replica integrates now: it holds the lease and, by its own clock, the lease has not
        expired (a leader that could not renew in time stops before another may take over)."""
        held = self._held
        return self._leading and held is not None and self._clock_ms() < held.expires_ms

    def fence(self) -> Fence:
        """The fencing token every integration transaction checks (a token no lease has when not leading)."""
        held = self._held
        return Fence(self.holder, held.token if held is not None else -1)

    async def append(self, envelope: ParsedEnvelope, local: Callable[[ParsedEnvelope], Awaitable[Appended]]) -> Appended:
        """Integrate here when leading, else forward to the leader; an entry whose batch was refused because the
        lease moved goes to the new leader (which answers a duplicate with its first index). Bounded by the
        caller's acknowledgement timeout (Ledger)."""
        delay = 0.05
        while True:
            if self.leading():
                try:
                    return await local(envelope)
                except Unavailable:
                    if self.leading():
                        raise
                    log.info("the lease moved while an entry waited for its batch: forwarding it to the new leader")
            known = self._known
            if known is None or known.address == self.address or known.expires_ms < self._clock_ms() - self._ttl_ms:
                await asyncio.sleep(delay)  # no live leader known yet (a failover): the lease loop finds one
                delay = min(delay * 2, 0.5)
                continue
            try:
                appended = await self._forward_while_leader(known, envelope)
            except _LeaderMoved:
                log.info("the lease moved while an entry was forwarded to %s: forwarding it to the new leader", known.address)
                delay = 0.05
                continue
            except Unavailable as e:
                log.info("forwarding to the leader at %s failed (%s); trying again", known.address, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            await self.caught_up_to(appended.checkpoint.size)
            return appended

    async def _forward_while_leader(self, known: LeaseRow, envelope: ParsedEnvelope) -> Appended:
        """Forward to the leader ``known`` until it answers, or raise _LeaderMoved as soon as the lease (read every
        other poll) names another holder or token: a paused or partitioned leader would otherwise hold the caller
        for the whole forwarding timeout after a new leader took over. Abandoning the forward is safe: the old
        leader can no longer commit anything (the fence), and the new one answers an envelope it already holds
        with its first index."""
        assert self._forward is not None
        task = asyncio.ensure_future(self._forward(known.address, envelope))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self._poll_s)
                if done:
                    return task.result()
                now = self._known
                if now is not None and (now.holder, now.token) != (known.holder, known.token):
                    raise _LeaderMoved
        finally:
            if not task.done():
                task.cancel()

    # -- wiring --------------------------------------------------------------------------------------------

    def attach(self, sequencer: Sequencer, listener: Listener, forward: Forward, on_role: OnRole | None = None) -> None:
        self._seq, self._listener, self._forward, self._on_role = sequencer, listener, forward, on_role

    def prepare(self) -> bool:
        """Before the log is opened: take the lease if it is free. Then a new log's first checkpoint is published
        by the lease holder only; True when this replica holds it."""
        now = self._clock_ms()
        lease = self._leases.read()
        if lease is None or lease.expires_ms < now:
            got = self._leases.acquire(self.holder, self.address, now, self._ttl_ms)
            if got is not None:
                self._held, self._leading, self._last_token = got, True, got.token
                self.promotions += 1
                self._known = got
                log.warning("replica %s took the sequencer lease (token %d) at start-up", self.holder, got.token)
                return True
            lease = self._leases.read()
        self._known = lease
        return False

    def log_exists(self) -> bool:
        return self._store.latest_checkpoint() is not None

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._lease_loop(), name="replica-lease"),
            asyncio.create_task(self._follow_loop(), name="replica-follow"),
        ]
        if self._on_role is not None:
            await self._on_role(self._leading)

    async def stop(self) -> None:
        """Stop the loops and, when leading, let the lease expire now so another replica takes over at once."""
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping
                pass
        if self._held is not None:
            fence = self.fence()
            self._leading, self._held = False, None
            try:
                await asyncio.to_thread(self._leases.release, fence)
            except Exception as e:  # noqa: BLE001 - the lease then expires by itself
                log.warning("could not release the sequencer lease: %s", e)

    def status(self) -> ReplicaStatus:
        known = self._known
        size = self._seq.latest.size if self._seq is not None else 0
        return ReplicaStatus(
            LEADER if self.leading() else FOLLOWER,
            self.holder,
            self._held.token if self._held is not None else (known.token if known else 0),
            known.address if known is not None else "",
            size,
            self.fenced_batches,
            self.promotions,
        )

    # -- the lease -----------------------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        while True:
            try:
                if self._held is not None:
                    await self._renew()
                else:
                    await self._maybe_take()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the database is down: try again; a leader steps down in time
                log.warning("sequencer lease: %s: %s", type(e).__name__, getattr(e, "detail", e))
                held = self._held
                if held is not None and self._clock_ms() >= held.expires_ms - self._ttl_ms // 4:
                    await self._step_down("the lease could not be renewed before it expires")
            await asyncio.sleep(self._ttl_ms / 4000 if self._held is not None else self._poll_s * 2)

    async def _renew(self) -> None:
        held = self._held
        assert held is not None
        now = self._clock_ms()
        ok = await asyncio.to_thread(self._leases.renew, Fence(self.holder, held.token), now, self._ttl_ms)
        if not ok:
            await self._step_down("another replica holds the sequencer lease")
            return
        if self._held is held:
            self._held = LeaseRow(held.holder, held.token, held.address, now + self._ttl_ms, held.commits)
            self._known = self._held

    async def _maybe_take(self) -> None:
        lease = await asyncio.to_thread(self._leases.read)
        self._known = lease
        now = self._clock_ms()
        if lease is not None and lease.expires_ms >= now:
            return
        got = await asyncio.to_thread(self._leases.acquire, self.holder, self.address, now, self._ttl_ms)
        if got is None:
            return
        await self._promote(got, expired=lease)

    async def _promote(self, lease: LeaseRow, expired: LeaseRow | None) -> None:
        seq = self._seq
        assert seq is not None
        self._held, self._known = lease, lease
        started = time.perf_counter()
        try:
            # The sequencer's path after an unknown COMMIT outcome: read the log back (latest checkpoint, right
            # edge), drop every cache written through on commit; nothing is replayed.
            await seq.run_in_integration_thread(lambda: self._locked(lambda: seq.reconcile([])))
        except Exception as e:  # noqa: BLE001 - not ready to integrate: give the lease back
            log.error("took the sequencer lease but could not read the log back (%s): releasing it", e)
            self._held = None
            await asyncio.to_thread(self._leases.release, Fence(self.holder, lease.token))
            return
        seq.write_failure = None
        self._leading, self._last_token = True, lease.token
        self.promotions += 1
        instruments_role(True)
        log.warning(
            "replica %s took the sequencer lease (token %d%s) and reconciled in %.0f ms: tree size %d",
            self.holder,
            lease.token,
            f", from {expired.holder} at {expired.address}" if expired is not None and expired.holder else "",
            (time.perf_counter() - started) * 1000,
            seq.latest.size,
        )
        if self._on_role is not None:
            await self._on_role(True)

    async def _step_down(self, why: str) -> None:
        if self._held is None:
            return
        log.warning("replica %s steps down as sequencer: %s", self.holder, why)
        self._leading, self._held = False, None
        instruments_role(False)
        if self._on_role is not None:
            await self._on_role(False)

    def on_fenced(self) -> None:
        """The database refused a batch of this replica: the lease moved. Counted; the lease loop steps down."""
        self.fenced_batches += 1
        instruments.fenced_batches.add(1)
        self._leading = False
        log.warning("replica %s: the database refused a batch (fencing token %d is no longer the lease's)",
                    self.holder, self.fence().token)

    # -- following the log ---------------------------------------------------------------------------------

    async def _follow_loop(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            if self._leading or self._seq is None:
                continue
            try:
                await self._seq.run_in_integration_thread(self.catch_up)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the database is down: health says so; try again
                log.warning("following the log: %s: %s", type(e).__name__, getattr(e, "detail", e))

    async def caught_up_to(self, size: int) -> None:
        """Return once this replica's view of the log holds ``size`` entries (reading the database now)."""
        assert self._seq is not None
        for _ in range(50):
            if self._seq.latest.size >= size:
                return
            await self._seq.run_in_integration_thread(self.catch_up)
            if self._seq.latest.size >= size:
                return
            await asyncio.sleep(0.01)

    def catch_up_now(self) -> None:
        """From a request thread: follow the log now (the consent state moved past this replica's view)."""
        if not self._leading and self._seq is not None:
            self._seq.run_in_integration_thread_sync(self.catch_up)

    def _locked(self, fn: Callable[[], object]) -> object:
        with self._lock:
            return fn()

    def catch_up(self) -> int:
        """Follow the log up to the latest checkpoint in the database (integration thread; followers only)."""
        with self._lock:
            return self._catch_up()

    def _catch_up(self) -> int:
        seq, listener = self._seq, self._listener
        assert seq is not None and listener is not None
        before = seq.latest.size
        if self._leading:
            return before
        seq.write_failure = None  # a follower writes nothing: a fenced batch of its past does not fail health
        cp = self._store.latest_checkpoint()
        if cp is None or (cp.size == before and cp.note == seq.latest.note):
            return before
        if cp.size < before:
            raise Unavailable(f"the log in the database ({cp.size}) is behind this replica's view ({before})")
        # Read everything first; then move the consent state, then the tree: a request that reads both in between
        # sees a StateCommit its checkpoint does not hold yet, and waits for it (ConsentLedger.check_access).
        extra = self._rows.rows_between(before, cp.size) if cp.size > before else {}
        entries: list[NewEntry] = []
        if 0 < cp.size - before <= MAX_PUSHED_GAP:
            for start in range(before, cp.size, _PAGE):
                for e in self._store.read_entries(start, min(cp.size, start + _PAGE)):
                    if e.envelope is None:
                        continue
                    leaf = parse_leaf(e.leaf)
                    entries.append(
                        NewEntry(e.index, e.leaf, hash_leaf(e.leaf), e.envelope, leaf.envelope_sha256,
                                 leaf.payload_type, leaf.integrated_time_ms)
                    )
        state = listener.state
        named = _consent_state_of(cp)
        prev = getattr(state, "latest", None)
        sc = prev if prev is not None and named is not None and prev.index == named else None
        if sc is None and named is not None:
            sc = self._rows.state_commit(named)
        if sc != prev:
            # Map nodes are overwritten in place by the leader: cached ones are stale once the map moved.
            state.reset()  # type: ignore[attr-defined]
            state.latest = sc  # type: ignore[attr-defined]
        seq.load(cp)  # its right edge, checked against the signed root
        present = {e.index for e in entries}
        if len(present) != cp.size - before:  # erased bodies, or a gap too large: only rows with an entry
            extra = {
                name: [r for r in rows if name not in ("consents", "access_events") or int(r["idx"]) in present]  # type: ignore[call-overload]
                for name, rows in extra.items()
            }
        listener.on_integrated(entries, extra, cp)
        state.latest = sc  # type: ignore[attr-defined]  # the StateCommit the checkpoint names, exactly
        return cp.size


class FencedStore:
    """The LogStore a replica's sequencer writes through: every integration carries the lease's fence (checked in
    the integration transaction, storage/lease.py), and a refused one is reported to the role. Everything else
    is the store's."""

    def __init__(self, store: LogStore, role: ReplicaRole) -> None:
        self._store = store
        self._role = role

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    def integrate(self, batch: IntegrationBatch) -> None:
        try:
            self._store.integrate(dataclasses.replace(batch, fence=self._role.fence()))
        except Fenced:
            self._role.on_fenced()
            raise


def instruments_role(leading: bool) -> None:
    instruments.sequencer_leader.set(1 if leading else 0)
