"""Sequencing, integration and publishing with group commit (docs/design.md section 2).

Submissions queue up while a batch commits; the next batch takes everything queued. One database transaction
writes the batch's leaves, bodies, tiles and the new signed checkpoint, and only then is each caller answered,
with its index, that checkpoint and an inclusion proof against it. Start-up reads the latest checkpoint and
the right edge of the tree (a handful of tile rows), never the log.

An error anywhere in a batch leaves its outcome unknown (a COMMIT whose reply was lost may have committed;
docs/design.md section 7). The sequencer then reconciles from the database before it integrates anything else: it
reloads the right edge and latest checkpoint, looks up which of the batch's envelopes are in the log, tells the
listeners of a batch that did commit (watchers, caches), has every cache written through on commit dropped
(``on_reset``) so the next batch starts from what storage holds, and answers each caller with the truth: its
index, or UNAVAILABLE when its entry is not in the log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from consent_ledger.app import instruments
from consent_ledger.app.errors import CorruptStorage, StorageUnavailable, Unavailable
from consent_ledger.app.payload_check import Validated, validated
from consent_ledger.app.ports import ConcurrentIntegration, IntegrationBatch, LogStore, NewEntry, StoredCheckpoint
from consent_ledger.app.tree import OverlayReader, TreeReader
from consent_ledger.core import tiles
from consent_ledger.core.checkpoint import Checkpoint, format_consent_state, sign_checkpoint
from consent_ledger.core.envelope import ParsedEnvelope
from consent_ledger.core.leaf import encode_leaf
from consent_ledger.core.merkle import prove_inclusion_many, tree_root
from consent_ledger.core.note import Signer
from consent_ledger.core.rfc6962 import HASH_SIZE, hash_leaf

log = logging.getLogger(__name__)

# Extra rows (index tables) to write with a batch, computed from the entries and their parsed envelopes.
ExtraRows = Mapping[str, Sequence[Mapping[str, object]]]


@dataclass(frozen=True)
class PreparedBatch:
    """What the application adds to a batch: an entry that closes it (the StateCommit), extra rows, the bodies
    of earlier entries to erase in the batch's transaction (index -> reason; the batch holds the Erasure entries),
    and the StateCommit the batch's checkpoint names."""

    closing: Validated | None = None
    extra: ExtraRows = field(default_factory=dict)
    erasures: Mapping[int, str] = field(default_factory=dict)
    # The index of the latest StateCommit once the batch is in (the closing entry's, or an earlier one): the
    # batch's checkpoint names it in its `consent-state` line. None: the log holds none, and the line is left out.
    state_index: int | None = None


# Called in the integration thread, inside the batch's transaction, with the batch's entries and their validated
# envelopes, the batch time, the index a closing entry would get, and whether the batch is an idle heartbeat.
PrepareBatch = Callable[[Sequence[NewEntry], Sequence[Validated], int, int, bool], PreparedBatch]
# Called in the integration thread after each commit, with the new entries, their extra rows and the checkpoint.
OnIntegrated = Callable[[Sequence[NewEntry], ExtraRows, StoredCheckpoint], None]
# Admission: refuses the entries of a batch that may not join the log (by envelope SHA-256, with the error their
# submitters get), given the batch's entries not logged yet, in order, and the batch time. Called once per batch in
# the integration thread, inside the batch's transaction: every rule that reads the log's state runs here, as set
# operations over the batch, so two submissions racing each other are judged in log order.
Admit = Callable[[Sequence[Validated], int], Mapping[bytes, Exception]]


@dataclass(frozen=True)
class _Attempt:
    """A batch whose transaction was sent to storage and not (yet) known to have committed."""

    start: int
    entries: Sequence[NewEntry]
    extra: ExtraRows


class FailureLog:
    """One log line per failure with its cause, at most one per ``interval_s`` (the rest are counted and the count
    reported with the next line). Expected storage failures (StorageUnavailable) get no traceback; anything else
    does."""

    def __init__(self, logger: logging.Logger, interval_s: float = 5.0) -> None:
        self._log = logger
        self._interval_s = interval_s
        self._next = 0.0
        self._suppressed = 0

    def report(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        self._next = now + self._interval_s
        more = f" ({self._suppressed} more failures since the last report)" if self._suppressed else ""
        self._suppressed = 0
        if isinstance(exc, StorageUnavailable):
            self._log.warning("%s: %s%s", what, exc.detail, more)
        elif isinstance(exc, Unavailable | ConcurrentIntegration):
            self._log.warning("%s: %s: %s%s", what, type(exc).__name__, exc, more)
        else:
            self._log.error("%s: %s%s", what, type(exc).__name__, more, exc_info=exc)


def _why(exc: BaseException) -> str:
    return exc.detail if isinstance(exc, StorageUnavailable) else f"{type(exc).__name__}: {exc}"


def _not_logged() -> Unavailable:
    return Unavailable(
        "the ledger could not integrate this entry (storage failure); it is not in the log: submit it again"
    )


@dataclass(frozen=True)
class Appended:
    """The answer to one submission: where it is, and the evidence."""

    index: int
    leaf: bytes
    duplicate: bool
    checkpoint: StoredCheckpoint
    proof: list[bytes]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


T = TypeVar("T")


class Role(Protocol):
    """A replica's role (app/replica.py): whether it integrates now, and how a submission is appended."""

    def leading(self) -> bool: ...

    async def append(
        self, envelope: ParsedEnvelope, local: Callable[[ParsedEnvelope], Awaitable[Appended]]
    ) -> Appended: ...


class Sequencer:
    """Integrates submitted envelopes into the log in batches. One per log (see docs/design.md section 2)."""

    def __init__(
        self,
        store: LogStore,
        signer: Signer,
        reader: TreeReader,
        *,
        max_batch: int = 4096,
        clock_ms: Callable[[], int] = _now_ms,
        prepare_batch: PrepareBatch | None = None,
        on_integrated: OnIntegrated | None = None,
        admit: Admit | None = None,
        heartbeat_s: float | None = None,
        on_reset: Callable[[], None] | None = None,
        role: Role | None = None,
    ) -> None:
        self._store = store
        # Replicas (app/replica.py): whether this process integrates now, and where submissions go when not.
        self._role = role
        # Drops every cache written through on commit (consent state, parties), after an unknown outcome.
        self._on_reset = on_reset
        self._attempt: _Attempt | None = None
        self._needs_reconcile = False
        self._failures = FailureLog(log)
        # Why the latest batch failed; None once a batch committed (health reads it: appends are failing).
        self.write_failure: str | None = None
        self._admit = admit
        self._signer = signer
        self._reader = reader
        self._max_batch = max_batch
        self._clock_ms = clock_ms
        self._prepare_batch = prepare_batch
        self._heartbeat_s = heartbeat_s
        self._on_integrated = on_integrated
        self._queue: asyncio.Queue[tuple[Validated, asyncio.Future[Appended]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        # One thread does all integration, so batches are strictly ordered.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="integrate")
        self._size = 0
        self._edge: dict[tiles.TileId, bytes] = {}
        self._latest: StoredCheckpoint | None = None
        self._last_ms = 0
        self._closing = False

    @property
    def latest(self) -> StoredCheckpoint:
        """The latest published checkpoint. Requires open() to have run."""
        if self._latest is None:
            raise Unavailable("the log is not open yet")
        return self._latest

    def open(self) -> None:
        """Load the latest checkpoint and the right edge; publish an empty checkpoint for a new log.

        Raises CorruptStorage when the stored tiles do not give the signed root.
        """
        latest = self._store.latest_checkpoint()
        if latest is None:
            self._size, self._edge = 0, {}
            self._reader.set_edge({})
            self._publish([], {})
            return
        self.load(latest)

    def load(self, latest: StoredCheckpoint) -> None:
        """Move to ``latest``, a checkpoint read from storage: load its right edge and check it gives the signed
        root (open(); replicas that follow the log). Raises CorruptStorage."""
        edge_ids = tiles.edge_tiles(latest.size)
        edge = self._store.read_tiles(edge_ids)
        if set(edge) != set(edge_ids):
            raise CorruptStorage(f"right-edge tiles {sorted(set(edge_ids) - set(edge))} are missing")
        self._size, self._edge, self._latest = latest.size, edge, latest
        self._reader.set_edge(edge)
        root = tree_root(latest.size, self._reader)
        if root != latest.root_hash:
            raise CorruptStorage(f"stored tiles do not give the root signed for tree size {latest.size}")
        self._last_ms = latest.created_ms

    async def start(self) -> None:
        """Start the integration worker on the running event loop."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run(), name="sequencer")

    async def stop(self) -> None:
        """Stop accepting, finish the batch in flight, and refuse what is still queued."""
        self._closing = True
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        if self._queue is not None:
            while not self._queue.empty():
                _, fut = self._queue.get_nowait()
                if not fut.done():
                    fut.set_exception(Unavailable("the ledger is shutting down"))
        self._executor.shutdown(wait=True)

    async def append(self, envelope: Validated | ParsedEnvelope) -> Appended:
        """Queue a verified envelope; return once the batch holding it has committed (or admission refused it:
        its error is raised). A replica that does not hold the sequencer lease hands it to its role (forwarded to
        the leader)."""
        if self._role is not None:
            return await self._role.append(envelope, self._append_here)
        return await self._append_here(envelope)

    async def _append_here(self, envelope: Validated | ParsedEnvelope) -> Appended:
        if self._closing or self._queue is None:
            raise Unavailable("the ledger is not accepting entries")
        fut: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((validated(envelope), fut))
        return await fut

    def enqueue_many(self, envelopes: Sequence[Validated | ParsedEnvelope]) -> list[asyncio.Future[Appended]]:
        """Queue verified envelopes in order, all at once (one group commit may take them all, or a batch may end
        among them); each future resolves once the batch holding its envelope has committed. A future cancelled
        before its batch is formed keeps its entry out of the log, as a caller who gave up. A replica that does
        not hold the sequencer lease hands each entry to its role, as append() does (forwarded to the leader, one
        call per entry, so their order across the forwarded calls is the leader's)."""
        if self._closing or self._queue is None:
            raise Unavailable("the ledger is not accepting entries")
        if self._role is not None and not self._role.leading():
            return [asyncio.ensure_future(self.append(e)) for e in envelopes]
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Appended]] = []
        for envelope in envelopes:
            fut: asyncio.Future[Appended] = loop.create_future()
            self._queue.put_nowait((envelope, fut))
            futures.append(fut)
        return futures

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            if self._needs_reconcile:
                # Nothing else is integrated until storage has been read back.
                try:
                    await asyncio.shield(loop.run_in_executor(self._executor, self.reconcile, []))
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    self._failures.report("could not read the log back from storage after a failed batch", e)
                    # What waits in the queue was never in a batch: it is not in the log, and storage is down.
                    while not self._queue.empty():
                        _, fut = self._queue.get_nowait()
                        if not fut.done():
                            fut.set_exception(_not_logged())
                    await asyncio.sleep(0.5)
                    continue
            try:
                first = await asyncio.wait_for(self._queue.get(), self._heartbeat_s)
            except TimeoutError:
                if self._role is not None and not self._role.leading():
                    continue  # a replica that does not hold the lease writes nothing, heartbeats included
                # Idle: let the application close an empty batch (a heartbeat StateCommit keeps evidence fresh).
                try:
                    await asyncio.shield(loop.run_in_executor(self._executor, self._heartbeat))
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    self._failures.report("heartbeat batch failed", e)
                    self.write_failure = _why(e)
                    self._needs_reconcile = True
                continue
            batch = [first]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            # A caller that gave up (deadline, cancellation) has a done future: its entry is not integrated.
            batch = [(env, fut) for env, fut in batch if not fut.done()]
            if not batch:
                continue
            envelopes = [env for env, _ in batch]
            results: list[Appended | Exception]
            try:
                # Shielded: a cancelled worker still lets the batch in flight finish and answer its callers.
                results = await asyncio.shield(loop.run_in_executor(self._executor, self.integrate_batch, envelopes))
            except asyncio.CancelledError:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(Unavailable("the ledger is shutting down"))
                raise
            except Exception as e:  # the batch's outcome is unknown: read it back before anything else
                self._failures.report(f"batch of {len(batch)} submissions failed", e)
                self.write_failure = _why(e)
                self._needs_reconcile = True
                try:
                    results = await asyncio.shield(loop.run_in_executor(self._executor, self.reconcile, envelopes))
                except asyncio.CancelledError:
                    raise
                except Exception as e2:
                    self._failures.report("could not read the log back from storage after a failed batch", e2)
                    unknown = Unavailable(
                        "storage failed while integrating this entry and the outcome is not known yet; submit it "
                        "again: if it was logged, the answer is its index"
                    )
                    results = [unknown] * len(batch)
            for (_, fut), result in zip(batch, results):
                if fut.done():
                    continue
                if isinstance(result, Exception):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)

    async def run_in_integration_thread(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the integration thread, between batches (replicas: following the log, taking the lease)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def run_in_integration_thread_sync(self, fn: Callable[[], T]) -> T:
        """The same from another thread, waiting for the result (never from the integration thread itself)."""
        return self._executor.submit(fn).result()

    def reconcile(self, envelopes: Sequence[Validated | ParsedEnvelope]) -> list[Appended | Exception]:
        """After an error in a batch, whose outcome is then unknown: read the log back from storage (latest
        checkpoint and right edge), find which of the batch's envelopes are there, tell ``on_integrated`` about a
        batch that did commit (its watchers, its caches), have every write-through cache dropped, and answer each
        of ``envelopes``: its index if it is in the log, else Unavailable. Runs in the integration thread.

        Raises (storage still failing, CorruptStorage) with the need to reconcile kept for the next try."""
        attempt = self._attempt
        before = self._size
        self.open()
        shas = {e.sha256 for e in envelopes}
        if attempt is not None:
            shas.update(e.envelope_sha256 for e in attempt.entries)
        found = self._store.find_envelopes(shas)
        committed = (
            attempt is not None
            and bool(attempt.entries)
            and all(found.get(e.envelope_sha256) == e.index for e in attempt.entries)
        )
        start = attempt.start if attempt is not None else before
        instruments.batch_failures.add(1, {"ledger.batch.outcome": "committed" if committed else "not_committed"})
        if committed and attempt is not None:  # the COMMIT's reply was lost: worth a line of its own
            log.warning(
                "a failed batch of %d entries had committed after all (read back from storage; log size %d)",
                len(attempt.entries),
                self._size,
            )
        if committed and attempt is not None and self._on_integrated is not None:
            try:
                self._on_integrated(attempt.entries, attempt.extra, self.latest)
            except Exception:
                log.exception("on_integrated listener failed")
        # Whatever happened, no cache written through on commit is trusted: the next batch reads storage.
        if self._on_reset is not None:
            self._on_reset()
        self._attempt = None
        self._needs_reconcile = False
        wanted = sorted({found[e.sha256] for e in envelopes if e.sha256 in found})
        leaves = dict(self._read_existing(wanted)) if wanted else {}
        latest = self.latest
        proofs = dict(zip(wanted, prove_inclusion_many(wanted, self._size, self._reader)))
        results: list[Appended | Exception] = []
        for env in envelopes:
            i = found.get(env.sha256)
            if i is None:
                results.append(_not_logged())
            else:
                results.append(Appended(i, leaves[i], i < start, latest, proofs[i]))
        return results

    def _heartbeat(self) -> None:
        self.integrate_batch([], heartbeat=True)

    def integrate_batch(
        self, envelopes: Sequence[Validated | ParsedEnvelope], *, prove: bool = True, heartbeat: bool = False
    ) -> list[Appended | Exception]:
        """Integrate verified envelopes as one batch, synchronously. The worker calls this for each group
        commit; bulk loaders (benchmarks) may call it directly while no worker runs. With ``prove`` False the
        answers carry no inclusion proofs. An envelope the ``admit`` hook refuses is answered with its error.

        The batch is one storage transaction (LogStore.transaction): which envelopes are logged already,
        admission, the application's index rows and map update (``prepare_batch``), and the writes, committed
        together; the in-memory state moves forward only after the commit."""
        started = time.perf_counter()
        items = [validated(e) for e in envelopes]
        with instruments.tracer.start_as_current_span("ledger.integrate_batch") as span:
            span.set_attribute("ledger.batch.submissions", len(items))
            try:
                with self._store.transaction():
                    existing, refused, new_entries, extra, written = self._write_batch(items, heartbeat)
            except ConcurrentIntegration:
                log.error("another writer integrated into this log; reloading its state")
                self.open()
                raise
            # Committed.
            if written is not None:
                self._advance(*written)
            size, latest = self._size, self.latest
            leaves = {e.index: e.leaf for e in new_entries}
            index_of = {**existing, **{e.envelope_sha256: e.index for e in new_entries}}
            old = sorted({i for i in existing.values()})
            if old:
                for entry in self._read_existing(old):
                    leaves[entry[0]] = entry[1]
            results: list[Appended | Exception] = []
            seen_new: set[bytes] = set()
            answered = [index_of[env.sha256] for env in items if env.sha256 not in refused]
            # One pass for the whole batch: its entries' proofs share most of their nodes and folded ranges.
            proofs = iter(prove_inclusion_many(answered, size, self._reader) if prove else [[] for _ in answered])
            for env in items:
                if env.sha256 in refused:
                    results.append(refused[env.sha256])
                    continue
                index = index_of[env.sha256]
                duplicate = env.sha256 in existing or env.sha256 in seen_new
                seen_new.add(env.sha256)
                results.append(Appended(index, leaves[index], duplicate, latest, next(proofs)))
            span.set_attribute("ledger.batch.appended", len(new_entries))
            span.set_attribute("ledger.tree.size", size)
        instruments.batch_size.record(len(items))
        instruments.appends.add(len(new_entries))
        instruments.duplicates.add(sum(1 for r in results if isinstance(r, Appended) and r.duplicate))
        instruments.integration_latency.record((time.perf_counter() - started) * 1000)
        instruments.tree_size.set(size)
        return results

    def _write_batch(
        self, items: Sequence[Validated], heartbeat: bool
    ) -> tuple[dict[bytes, int], Mapping[bytes, Exception], list[NewEntry], ExtraRows, tuple[object, ...] | None]:
        """Inside the batch's transaction: find what is logged already, admit the rest, prepare and write.
        Returns (already logged: sha -> index, refused: sha -> error, new entries, extra rows, what _advance needs
        once the transaction committed, or None when nothing was written)."""
        existing = self._store.find_envelopes({e.sha256 for e in items})
        now = max(self._clock_ms(), self._last_ms)
        fresh = list({e.sha256: e for e in items if e.sha256 not in existing}.values())
        refused: Mapping[bytes, Exception] = {}
        if self._admit is not None and fresh:
            refused = self._admit(fresh, now)
        new_entries: list[NewEntry] = []
        new_items: list[Validated] = []
        for env in fresh:
            if env.sha256 in refused:
                continue
            self._add(new_entries, new_items, env, now)
        extra: ExtraRows = {}
        erasures: Mapping[int, str] = {}
        state_index: int | None = None
        if self._prepare_batch is not None and (new_entries or heartbeat):
            prepared = self._prepare_batch(new_entries, new_items, now, self._size + len(new_entries), heartbeat)
            extra, erasures, state_index = prepared.extra, prepared.erasures, prepared.state_index
            if prepared.closing is not None:
                self._add(new_entries, new_items, prepared.closing, now)
        if not new_entries:
            return existing, refused, new_entries, extra, None
        written = self._write(new_entries, extra, now=now, erasures=erasures, state_index=state_index)
        return existing, refused, new_entries, extra, written

    def _add(self, entries: list[NewEntry], items: list[Validated], env: Validated, now: int) -> None:
        index = self._size + len(entries)
        leaf = encode_leaf(now, env.payload_type, env.sha256)
        entries.append(NewEntry(index, leaf, hash_leaf(leaf), env.raw, env.sha256, env.payload_type, now))
        items.append(env)

    def _read_existing(self, indices: Sequence[int]) -> list[tuple[int, bytes]]:
        out = []
        for i in indices:
            entries = self._store.read_entries(i, i + 1)
            if not entries:
                raise CorruptStorage(f"entry {i} is indexed but missing")
            out.append((i, entries[0].leaf))
        return out

    def _publish(
        self,
        new_entries: Sequence[NewEntry],
        extra: ExtraRows,
        *,
        now: int | None = None,
        erasures: Mapping[int, str] | None = None,
        state_index: int | None = None,
    ) -> None:
        """Write a batch and its checkpoint in one transaction, then move the in-memory state forward."""
        with self._store.transaction():
            written = self._write(new_entries, extra, now=now, erasures=erasures, state_index=state_index)
        self._advance(*written)

    def _write(
        self,
        new_entries: Sequence[NewEntry],
        extra: ExtraRows,
        *,
        now: int | None = None,
        erasures: Mapping[int, str] | None = None,
        state_index: int | None = None,
    ) -> tuple[object, ...]:
        """Write a batch and its checkpoint in the open transaction; returns what ``_advance`` needs once it
        committed. The checkpoint names ``state_index`` in a `consent-state` line (core.checkpoint), when there is
        one."""
        now = self._clock_ms() if now is None else now
        changed = tiles.append_leaves(self._size, self._edge, [e.leaf_hash for e in new_entries])
        new_size = self._size + len(new_entries)
        root = tree_root(new_size, OverlayReader(self._reader, changed))
        with instruments.tracer.start_as_current_span("ledger.sign_checkpoint"):
            ext = () if state_index is None else (format_consent_state(state_index),)
            note = sign_checkpoint(Checkpoint(self._signer.name, new_size, root, ext), self._signer)
        cp = StoredCheckpoint(new_size, root, note, now)
        # Until the transaction has committed, the batch may or may not be in storage (see reconcile).
        self._attempt = _Attempt(self._size, new_entries, extra)
        with instruments.tracer.start_as_current_span("ledger.commit"):
            self._store.integrate(IntegrationBatch(new_entries, changed, cp, extra, erasures or {}))
        return (new_entries, extra, changed, cp, now)

    def _advance(self, *written: object) -> None:
        """After the commit: move the right edge, size and latest checkpoint forward; tell ``on_integrated``."""
        new_entries, extra, changed, cp, now = written
        assert isinstance(cp, StoredCheckpoint) and isinstance(changed, dict) and isinstance(now, int)
        self._attempt, self.write_failure = None, None
        new_size = cp.size
        merged = {**self._edge, **changed}
        self._edge = {t: merged[t] for t in tiles.edge_tiles(new_size)}
        for tile, data in changed.items():
            if len(data) == tiles.TILE_WIDTH * HASH_SIZE:
                self._reader.remember_full(tile, data)
        self._reader.set_edge(self._edge)
        self._size, self._latest, self._last_ms = new_size, cp, now
        if self._on_integrated is not None and new_entries:
            try:
                self._on_integrated(new_entries, extra, cp)  # type: ignore[arg-type]
            except Exception:  # a listener's failure must not fail a committed batch
                log.exception("on_integrated listener failed")
