"""Who is calling (DESIGN section 7): resolve a caller from what the transport proved and what the call carries.

- A request signature (core/request_auth.py) makes the caller a patient (or a patient's delegate): its key.
  Stale timestamps, bad signatures and replayed nonces are refused (Unauthenticated).
- Otherwise a name proven by the transport (the TLS client certificate's common name; on a development server
  without TLS, the party header) makes it the operator, an auditor, or an organisation (registered or not).
- Otherwise the caller is anonymous.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from consent_ledger.app.authorization import ANONYMOUS, Authorizer, Caller, Kind
from consent_ledger.app.errors import Unauthenticated, Unavailable
from consent_ledger.core.errors import InvalidInput, VerificationError
from consent_ledger.core.request_auth import MAX_SKEW_MS, check_request_signature, parse_header


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class NonceMemory:
    """The (key, nonce) pairs of signed requests seen within the freshness window, so none is accepted twice.

    A pair is forgotten once its request could no longer pass the freshness check: ``window_ms`` after it was
    first seen (pairs are kept in the order seen, so forgetting pops from the front). Bounded: when full of
    pairs still inside the window, new signed requests are refused (Unavailable) rather than forgetting any.
    """

    def __init__(self, window_ms: int, *, capacity: int = 500_000) -> None:
        self._window_ms = window_ms
        self._capacity = capacity
        self._seen: dict[tuple[bytes, bytes], int] = {}
        self._lock = threading.Lock()

    def first_use(self, key: bytes, nonce: bytes, now_ms: int) -> bool:
        """Remember the pair; False if it was seen before (a replay)."""
        with self._lock:
            while self._seen:
                oldest = next(iter(self._seen))
                if self._seen[oldest] > now_ms:
                    break
                del self._seen[oldest]
            if (key, nonce) in self._seen:
                return False
            if len(self._seen) >= self._capacity:
                raise Unavailable("too many signed requests in the replay window; try again shortly")
            self._seen[(key, nonce)] = now_ms + self._window_ms
            return True

    def __len__(self) -> int:
        return len(self._seen)


class Authenticator:
    def __init__(
        self,
        authorizer: Authorizer,
        *,
        max_skew_ms: int = MAX_SKEW_MS,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self._authorizer = authorizer
        self._max_skew_ms = max_skew_ms
        self._clock_ms = clock_ms
        # A timestamp may be up to max_skew in the future or the past: remember nonces for twice that.
        self._nonces = NonceMemory(2 * max_skew_ms)

    def caller(
        self, *, name: str | None, signature: str | None, method: str, request: bytes, io: bool = True
    ) -> Caller:
        """The caller of one call. Raises Unauthenticated for a request signature that does not hold. A signed
        request is checked in memory; a name may need its party registration: with ``io=False`` that raises
        WouldBlock unless the registration is cached (then ask again with I/O: no nonce was spent)."""
        if signature is not None:
            return self._patient(signature, method, request)
        if name:
            return self._authorizer.named(name, io=io)
        return ANONYMOUS

    def _patient(self, header: str, method: str, request: bytes) -> Caller:
        now = self._clock_ms()
        try:
            sig = parse_header(header)
            check_request_signature(sig, method, request, now_ms=now, max_skew_ms=self._max_skew_ms)
        except (InvalidInput, VerificationError) as e:
            raise Unauthenticated(f"request signature refused: {e}") from None
        if not self._nonces.first_use(sig.key, sig.nonce, now):
            raise Unauthenticated("request signature refused: this nonce was already used (a replayed request)")
        return Caller(Kind.PATIENT, key=sig.key)
