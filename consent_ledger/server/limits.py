"""Per-caller rate limits: a token bucket per caller, refused calls answered RESOURCE_EXHAUSTED.

A caller is its TLS client certificate's common name when there is one, else the peer address (so a flood
from one address is limited whatever it claims in headers). Health checks are never limited.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from consent_ledger.server.handlers import certificate_name, wrap_handler

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


@dataclass(frozen=True)
class RateLimit:
    """``per_second`` calls sustained, bursts of up to ``burst``; 0 turns limiting off."""

    per_second: float = 10_000.0
    burst: float = 20_000.0


class TokenBuckets:
    """Token buckets by caller key, bounded in number (the least recently seen callers are forgotten)."""

    def __init__(self, limit: RateLimit, *, max_callers: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._max = max_callers
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, caller: str) -> bool:
        """Spend one token for ``caller``; False when its bucket is empty."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(caller, (self._limit.burst, now))
            tokens = min(self._limit.burst, tokens + (now - last) * self._limit.per_second)
            allowed = tokens >= 1.0
            self._buckets[caller] = (tokens - 1.0 if allowed else tokens, now)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        return allowed


class RateLimitInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, limit: RateLimit) -> None:
        self._buckets = TokenBuckets(limit)
        self._on = limit.per_second > 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if not self._on or handler is None or details.method.startswith(EXEMPT_PREFIXES):
            return handler
        return _limited(handler, self._buckets)


def _identity(context: grpc.aio.ServicerContext) -> str:
    name = certificate_name(context)
    return "cn:" + name if name is not None else "peer:" + context.peer().rsplit(":", 1)[0]


def _limited(handler: grpc.RpcMethodHandler, buckets: TokenBuckets) -> grpc.RpcMethodHandler:
    async def check(request: Any, context: grpc.aio.ServicerContext) -> None:
        if not buckets.take(_identity(context)):
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit exceeded for this caller; slow down")

    if handler.unary_unary is None and handler.unary_stream is None:
        return handler  # streaming requests: only server reflection, which is not limited
    return wrap_handler(handler, check)
