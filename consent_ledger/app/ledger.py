"""The ledger: validates what callers submit and hands it to the sequencer; the facade the gRPC layer calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from contextvars import ContextVar
from typing import Any

from consent_ledger.app.errors import Unavailable
from consent_ledger.app.log_queries import LogQueries
from consent_ledger.app.lru import CacheBudget
from consent_ledger.app.payload_check import Validated
from consent_ledger.app.ports import AsyncTileSource, LogStore
from consent_ledger.app.sequencer import Admit, Appended, OnIntegrated, PrepareBatch, Role, Sequencer
from consent_ledger.app.tree import TreeReader
from consent_ledger.core.envelope import DEFAULT_MAX_ENVELOPE_SIZE, ParsedEnvelope, parse_envelope, verify_envelope
from consent_ledger.core.note import Signer

# The stateless checks of an envelope's payload (type accepted, payload well-formed, the operator's entries signed
# by the operator); returns the Validated entry (or anything else: the payload is then parsed here); raises.
PayloadCheck = Callable[[ParsedEnvelope], object]
# A check of one raw envelope of a bulk submission before it is validated (its authorization); raises.
Precheck = Callable[[bytes], object]
# When the call being served started (time.monotonic()), set by the server as it authenticates the call: an
# acknowledgement bound counts from there.
CALL_STARTED: ContextVar[float | None] = ContextVar("CALL_STARTED", default=None)


class Ledger:
    """One log: its store, tree reader, sequencer and queries."""

    def __init__(
        self,
        store: LogStore,
        signer: Signer,
        *,
        check_payload: PayloadCheck,
        prepare_batch: PrepareBatch | None = None,
        on_integrated: OnIntegrated | None = None,
        admit: Admit | None = None,
        heartbeat_s: float | None = None,
        on_reset: Callable[[], None] | None = None,
        max_envelope_size: int = DEFAULT_MAX_ENVELOPE_SIZE,
        max_batch: int = 4096,
        cache: CacheBudget = CacheBudget(),
        ack_timeout_s: float | None = None,
        role: Role | None = None,
        tile_source: AsyncTileSource | None = None,
    ) -> None:
        self.store = store
        self.signer = signer
        # tile_source: tiles read on the event loop when a proof misses the cache (PostgreSQL; see TreeReader.fetch)
        self.reader = TreeReader(store, cache_bytes=cache.of("tiles"), source=tile_source)
        self.sequencer = Sequencer(
            store,
            signer,
            self.reader,
            max_batch=max_batch,
            prepare_batch=prepare_batch,
            on_integrated=on_integrated,
            admit=admit,
            heartbeat_s=heartbeat_s,
            on_reset=on_reset,
            role=role,
        )
        self.queries = LogQueries(store, self.reader, lambda: self.sequencer.latest)
        self._check_payload = check_payload
        self._max_envelope_size = max_envelope_size
        self._ack_timeout_s = ack_timeout_s
        # Set by the service when witnesses are configured (app.witnessing.Witnessing).
        self.witnessing: Any = None

    @property
    def origin(self) -> str:
        return self.signer.name

    def open(self) -> None:
        self.sequencer.open()

    async def start(self) -> None:
        await self.sequencer.start()

    async def stop(self) -> None:
        await self.sequencer.stop()

    def validate(self, raw: bytes) -> Validated:
        """Parse and verify an envelope, parse its payload and apply the stateless checks (``check_payload``).
        Raises InvalidInput, VerificationError or PermissionDenied. Reads no storage: every rule that reads the
        log's state is applied by the sequencer's admission, once per batch."""
        env = parse_envelope(raw, self._max_envelope_size)
        verify_envelope(env)
        checked = self._check_payload(env)
        return checked if isinstance(checked, Validated) else Validated.of(env)

    @property
    def ack_timeout_s(self) -> float | None:
        """How long a submission may wait for its acknowledgement (None: as long as its batch takes)."""
        return self._ack_timeout_s

    async def submit(self, raw: bytes) -> Appended:
        """Validate, then append. Nothing reaches the log unless it passed every check: the stateless ones here,
        on the event loop (parse, signature verification, payload: no storage, no thread hop), the stateful ones
        in the batch (the sequencer's admission). Bounded like append()."""
        return await self._bounded(self._validate_and_append(raw))

    async def submit_many(
        self,
        raws: Sequence[bytes],
        *,
        precheck: Precheck | None = None,
        started: float | None = None,
        after: asyncio.Future[None] | None = None,
        queued: asyncio.Future[None] | None = None,
    ) -> list[Appended | Exception]:
        """Validate and append many envelopes, each exactly as submit() would (``precheck`` first, for the
        caller's authorization of that entry), and answer each: its Appended or its own error, in order. A refused
        entry never holds up the others. The valid ones are queued for the sequencer all at once, so one group
        commit takes them together (or a few, when they straddle batches), and awaited together.

        Validation runs in one worker thread for the whole list. ``started`` (time.monotonic()) is when the
        acknowledgement bound starts (default: now); entries not acknowledged within it are answered Unavailable
        (and kept out of the log unless their batch was already being committed), as by submit().

        Order across calls: with ``after`` (the ``queued`` future of the call before), the entries are queued only
        once that call's are, so a stream's messages take their indices in the order sent although they are
        validated concurrently; ``queued`` is resolved once this call's entries are queued (or it gave up).
        Validation reads the log as committed: an entry that needs another one still in flight (a revocation of a
        grant sent in the same or an unanswered message) is refused as Submit would refuse it then."""
        started = time.monotonic() if started is None else started
        futures: list[asyncio.Future[Appended]] = []
        try:
            validated = await asyncio.to_thread(self._validate_all, raws, precheck)
            if after is not None:
                await asyncio.shield(after)
            valid = [v for v in validated if not isinstance(v, Exception)]
            if valid:
                try:
                    futures = self.sequencer.enqueue_many(valid)
                except Unavailable as e:
                    validated = [v if isinstance(v, Exception) else e for v in validated]
        finally:
            if queued is not None and not queued.done():
                queued.set_result(None)
        timed_out: Exception | None = None
        if futures:
            timeout = None if self._ack_timeout_s is None else max(self._ack_timeout_s - (time.monotonic() - started), 0.0)
            try:
                _, pending = await asyncio.wait(futures, timeout=timeout)
            except asyncio.CancelledError:
                for f in futures:
                    f.cancel()  # the caller went away: what is not in a batch yet stays out of the log
                raise
            for f in pending:
                f.cancel()
            if pending:
                timed_out = self._unacknowledged()
        results: list[Appended | Exception] = []
        answers = iter(futures)
        for v in validated:
            if isinstance(v, Exception):
                results.append(v)
                continue
            f = next(answers)
            if f.cancelled():
                results.append(timed_out or self._unacknowledged())
            else:
                exc = f.exception()
                results.append(f.result() if exc is None else exc if isinstance(exc, Exception) else Unavailable(str(exc)))
        return results

    def _validate_all(self, raws: Sequence[bytes], precheck: Precheck | None) -> list[Validated | Exception]:
        out: list[Validated | Exception] = []
        for raw in raws:
            try:
                if precheck is not None:
                    precheck(raw)
                out.append(self.validate(raw))
            except Exception as e:  # noqa: BLE001 - each entry gets its own answer (status_for maps it)
                out.append(e)
        return out

    def _unacknowledged(self) -> Unavailable:
        return Unavailable(
            f"the ledger could not acknowledge the entry within {self._ack_timeout_s:g} s (its database is slow or "
            "unavailable); submit it again: if it was logged after all, the answer is its index"
        )

    async def append(self, env: Validated | ParsedEnvelope) -> Appended:
        """Append an envelope the ledger made or validated itself (an access event it records). With an
        ``ack_timeout_s``, an entry not acknowledged within it (a slow or stalled database) is answered
        Unavailable: it was not integrated, unless its batch was already being committed, so the caller submits it
        again and learns its index if it was logged."""
        return await self._bounded(self.sequencer.append(env))

    async def _validate_and_append(self, raw: bytes) -> Appended:
        return await self.sequencer.append(self.validate(raw))

    async def _bounded(self, work: Coroutine[Any, Any, Appended]) -> Appended:
        if self._ack_timeout_s is None:
            return await work
        # The bound runs from the start of the call (CALL_STARTED, set by the server as it authenticates), so the
        # time a signed call waited for its nonce counts too.
        started = CALL_STARTED.get()
        timeout = self._ack_timeout_s if started is None else self._ack_timeout_s - (time.monotonic() - started)
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                return await work
        except TimeoutError:
            raise Unavailable(
                f"the ledger could not acknowledge the entry within {self._ack_timeout_s:g} s (its database is slow or "
                "unavailable); submit it again: if it was logged after all, the answer is its index"
            ) from None
