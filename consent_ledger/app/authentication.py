"""Who is calling (docs/design.md section 7): resolve a caller from what the transport proved and what the call carries.

- A request signature (core/request_auth.py) makes the caller a patient (or a patient's delegate): its key.
  Stale timestamps, bad signatures and replayed nonces are refused (Unauthenticated).
- Otherwise a name proven by the transport (the TLS client certificate's common name; on a development server
  without TLS, the party header) makes it the operator, an auditor, or an organisation (registered or not).
- Otherwise the caller is anonymous.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from consent_ledger.app.authorization import ANONYMOUS, Authorizer, Caller, Kind
from consent_ledger.app.errors import Unauthenticated, Unavailable
from consent_ledger.app.ports import NonceStore, SpentNonce
from consent_ledger.core.errors import InvalidInput, VerificationError
from consent_ledger.core.request_auth import MAX_SKEW_MS, RequestSignature, check_request_signature, parse_header

log = logging.getLogger(__name__)

# Most nonces claimed in one database transaction.
MAX_NONCE_BATCH = 1024


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class NonceBook:
    """Spends the nonces of signed requests in the log's NonceStore (the database, shared by every server process),
    group-committed: the calls that arrive while a claim is running are claimed together in the next one, so a
    signed call costs a share of one worker-thread hop and one transaction, not one each."""

    def __init__(
        self, store: NonceStore, *, clock_ms: Callable[[], int] = _now_ms, timeout_s: float | None = None
    ) -> None:
        """``timeout_s``: how long a call waits for its nonce to be recorded (a slow or stalled database) before it
        is answered Unavailable (None: as long as it takes)."""
        self._store = store
        self._clock_ms = clock_ms
        self._timeout_s = timeout_s
        self._pending: list[tuple[SpentNonce, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def spend(self, nonce: SpentNonce) -> bool:
        """Record the nonce; False if it was recorded before (a replay), by this process or another."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((nonce, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        if self._timeout_s is None:
            return await future
        try:
            async with asyncio.timeout(self._timeout_s):
                return await asyncio.shield(future)
        except TimeoutError:
            raise Unavailable(
                f"could not check this signed request for replay within {self._timeout_s:g} s (the database is slow "
                "or unavailable); retry"
            ) from None

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_NONCE_BATCH], self._pending[MAX_NONCE_BATCH:]
            try:
                fresh = await asyncio.to_thread(self._store.claim, [n for n, _ in batch], self._clock_ms())
            except Exception as e:  # noqa: BLE001 - every waiting call gets an answer
                log.error("could not record signed-request nonces: %s", e)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(Unavailable("cannot check this signed request for replay now; retry"))
                continue
            for (_, future), ok in zip(batch, fresh, strict=True):
                if not future.done():
                    future.set_result(ok)


class Authenticator:
    def __init__(
        self,
        authorizer: Authorizer,
        *,
        origin: str,
        nonces: NonceStore,
        max_skew_ms: int = MAX_SKEW_MS,
        clock_ms: Callable[[], int] = _now_ms,
        timeout_s: float | None = None,
    ) -> None:
        """``origin``: the log's origin, which every signed request must name; ``nonces``: where the nonces of
        signed requests are kept; ``timeout_s``: how long a call waits for its nonce to be recorded."""
        self._authorizer = authorizer
        self._origin = origin
        self._max_skew_ms = max_skew_ms
        self._clock_ms = clock_ms
        self._nonces = NonceBook(nonces, clock_ms=clock_ms, timeout_s=timeout_s)

    def caller(self, *, name: str | None, io: bool = True) -> Caller:
        """The caller of an unsigned call. A name may need its party registration: with ``io=False`` that raises
        WouldBlock unless the registration is cached (then ask again with I/O)."""
        if name:
            return self._authorizer.named(name, io=io)
        return ANONYMOUS

    def verify(self, header: str, method: str, request: bytes) -> RequestSignature:
        """A request signature checked in memory: its form, its freshness, and that it signs this log's origin,
        this method and these request bytes. Raises Unauthenticated. The nonce is not spent (see ``patient``)."""
        try:
            sig = parse_header(header)
            check_request_signature(
                sig, self._origin, method, request, now_ms=self._clock_ms(), max_skew_ms=self._max_skew_ms
            )
        except (InvalidInput, VerificationError) as e:
            raise Unauthenticated(f"request signature refused: {e}") from None
        return sig

    async def patient(self, sig: RequestSignature) -> Caller:
        """The patient (or delegate) who made a verified signed request, once its nonce is spent. A nonce is kept
        until no server can accept its timestamp any more: the freshness window, plus as much again for clocks of
        replicas that differ (up to the allowed skew). Raises Unauthenticated for a nonce used before."""
        expires = sig.timestamp_ms + 2 * self._max_skew_ms
        if not await self._nonces.spend(SpentNonce(sig.key, sig.nonce, expires)):
            raise Unauthenticated("request signature refused: this nonce was already used (a replayed request)")
        return Caller(Kind.PATIENT, key=sig.key)
