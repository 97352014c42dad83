"""The ledger: validates what callers submit and hands it to the sequencer; the facade the gRPC layer calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from typing import Any

from consent_ledger.app.errors import Unavailable
from consent_ledger.app.log_queries import LogQueries
from consent_ledger.app.lru import CacheBudget
from consent_ledger.app.payload_check import Validated
from consent_ledger.app.ports import LogStore
from consent_ledger.app.sequencer import Admit, Appended, OnIntegrated, PrepareBatch, Role, Sequencer
from consent_ledger.app.tree import TreeReader
from consent_ledger.core.envelope import DEFAULT_MAX_ENVELOPE_SIZE, ParsedEnvelope, parse_envelope, verify_envelope
from consent_ledger.core.note import Signer

# The stateless checks of an envelope's payload (type accepted, payload well-formed, the operator's entries signed
# by the operator); returns the Validated entry (or anything else: the payload is then parsed here); raises.
PayloadCheck = Callable[[ParsedEnvelope], object]
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
    ) -> None:
        self.store = store
        self.signer = signer
        self.reader = TreeReader(store, cache_bytes=cache.of("tiles"))
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
