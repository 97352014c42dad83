"""The first look at every call, on the request's raw bytes: per-caller limits, then decoding.

Who the caller is, for limits: the key of a signed request whose signature verifies (so patients who share an app
certificate have buckets of their own, and a forged header cannot spend someone else's), else its TLS client
certificate's common name, else its peer address (so a flood from one address is limited whatever it claims in
headers). Each caller has a token bucket (calls per second, RESOURCE_EXHAUSTED when empty) and a cap on its
concurrent streams; the server caps streams in all. Limits are applied before the request is decoded, so a
request that does not decode counts like any other; it is answered INVALID_ARGUMENT with one log line. Health
checks are never limited.

Bulk submission (SubmitBatch, SubmitStream) spends one token per entry: a request, or a stream message, of n
envelopes takes n tokens. It carries at most MAX_BULK_ENTRIES envelopes per message, and a stream holds at most
``stream_window_entries`` entries (``stream_window_bytes`` of envelopes) unanswered (EntryWindow): the server reads
its next message only when there is room, and room is freed only once a response has been handed to the transport,
whose HTTP/2 flow control stops a client that does not read. So a stream's memory is bounded whatever the client
does, and the server's by that times the stream caps.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from consent_ledger.core.request_auth import HEADER as SIGNATURE_HEADER
from consent_ledger.core.request_auth import RequestSignature
from consent_ledger.server.errors import record_rpc
from consent_ledger.server.handlers import SIGNATURES, certificate_name

log = logging.getLogger(__name__)

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)
# Envelopes in one SubmitBatch request or one SubmitStream message (the message size limit, 256 KiB, also applies).
MAX_BULK_ENTRIES = 1024

# Checks a signed request's header over its raw bytes: (header, method, request bytes) -> the verified signature.
Verify = Callable[[str, str, bytes], RequestSignature]


@dataclass(frozen=True)
class RateLimit:
    """Per caller: ``per_second`` calls sustained, bursts of up to ``burst`` (``per_second`` 0 turns rate limiting
    off), at most ``max_streams`` concurrent streams (watches); at most ``max_streams_total`` streams on the whole
    server. A stream cap of 0 means no cap."""

    per_second: float = 10_000.0
    burst: float = 20_000.0
    max_streams: int = 16
    max_streams_total: int = 4096
    # Entries (and bytes of envelopes) one SubmitStream may hold unanswered; the next message waits for room.
    stream_window_entries: int = 4096
    stream_window_bytes: int = 4 * 2**20


class TokenBuckets:
    """Token buckets by caller key, bounded in number (the least recently seen callers are forgotten)."""

    def __init__(self, limit: RateLimit, *, max_callers: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._max = max_callers
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, caller: str, n: float = 1.0) -> bool:
        """Spend ``n`` tokens (entries) for ``caller``; False, spending none, when its bucket holds fewer."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(caller, (self._limit.burst, now))
            tokens = min(self._limit.burst, tokens + (now - last) * self._limit.per_second)
            allowed = tokens >= n
            self._buckets[caller] = (tokens - n if allowed else tokens, now)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        return allowed


class StreamCounts:
    """Streams in progress, by caller and in all (used on the server's event loop only)."""

    def __init__(self, per_caller: int, total: int) -> None:
        self._per_caller = per_caller
        self._total = total
        self._by_caller: dict[str, int] = {}
        self._all = 0

    def enter(self, caller: str) -> str | None:
        """Take a place for a new stream of ``caller``; the refusal's message if there is none."""
        held = self._by_caller.get(caller, 0)
        if self._per_caller and held >= self._per_caller:
            return f"too many concurrent streams for this caller (at most {self._per_caller}); close one first"
        if self._total and self._all >= self._total:
            return f"too many concurrent streams on this server (at most {self._total}); retry later"
        self._by_caller[caller] = held + 1
        self._all += 1
        return None

    def leave(self, caller: str) -> None:
        held = self._by_caller.pop(caller, 0) - 1
        if held > 0:
            self._by_caller[caller] = held
        self._all -= 1

    def held(self, caller: str) -> int:
        return self._by_caller.get(caller, 0)


def entries_of(request: object) -> int:
    """How many entries a decoded request carries, for the rate limit: its envelopes (bulk submission), else 1."""
    envelopes = getattr(request, "envelopes", None)
    return max(1, len(envelopes)) if envelopes is not None else 1


class EntryWindow:
    """Room for the unanswered entries of one stream (used on the server's event loop): ``acquire`` waits until a
    message of ``n`` entries and ``size`` bytes fits (an empty window takes any message), ``release`` frees it.
    Keeps its high-water marks."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.entries = 0
        self.bytes = 0
        self.high_water = 0
        self.waits = 0
        self._room = asyncio.Condition()

    def _fits(self, n: int, size: int) -> bool:
        return self.entries == 0 or (self.entries + n <= self.max_entries and self.bytes + size <= self.max_bytes)

    async def acquire(self, n: int, size: int) -> None:
        async with self._room:
            if not self._fits(n, size):
                self.waits += 1
                await self._room.wait_for(lambda: self._fits(n, size))
            self.entries += n
            self.bytes += size
            self.high_water = max(self.high_water, self.entries)

    async def release(self, n: int, size: int) -> None:
        async with self._room:
            self.entries -= n
            self.bytes -= size
            self._room.notify_all()


class RateLimitInterceptor(grpc.aio.ServerInterceptor):
    """Limits and decoding for every method but health checks (see the module docstring). ``verify`` checks a
    request signature (app/authentication.py); its outcome is handed to the authentication interceptor through
    handlers.SIGNATURES, so a signature is verified once, over the bytes that were sent."""

    def __init__(self, limit: RateLimit, verify: Verify | None = None) -> None:
        self._buckets = TokenBuckets(limit)
        self._on = limit.per_second > 0
        self._streams = StreamCounts(limit.max_streams, limit.max_streams_total)
        self._verify = verify

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(EXEMPT_PREFIXES):
            return handler
        if handler.stream_stream is not None and details.method.startswith("/grpc.reflection."):
            return handler  # server reflection is not limited
        if handler.stream_unary is not None:
            return handler  # the API has none; nothing else is registered
        return self._gated(handler, details.method)

    def _caller(self, context: grpc.aio.ServicerContext, method: str, raw: bytes) -> str:
        header = None
        for key, value in context.invocation_metadata() or ():
            if key == SIGNATURE_HEADER and isinstance(value, str):
                header = value  # the last one, as the authentication interceptor reads it
        if header is not None and self._verify is not None:
            try:
                sig = self._verify(header, method, raw)
            except Exception as e:  # noqa: BLE001 - the refusal is the authentication interceptor's to give
                SIGNATURES[id(context)] = e
            else:
                SIGNATURES[id(context)] = sig
                return "key:" + sig.key.hex()
        return _identity(context)

    async def _admit(
        self, raw: bytes, context: grpc.aio.ServicerContext, method: str, decode: Callable[[bytes], Any] | None
    ) -> tuple[Any, str]:
        """The caller's identity and the decoded request, or the call aborted (rate limit, undecodable)."""
        started = time.perf_counter()
        caller = self._caller(context, method, raw)
        if self._on and not self._buckets.take(caller):
            record_rpc(method.rsplit("/", 1)[-1], grpc.StatusCode.RESOURCE_EXHAUSTED, started)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit exceeded for this caller; slow down")
        return await self._decode(raw, context, method, decode, caller, started), caller

    async def _decode(
        self,
        raw: bytes,
        context: grpc.aio.ServicerContext,
        method: str,
        decode: Callable[[bytes], Any] | None,
        caller: str,
        started: float,
    ) -> Any:
        """The decoded request (one token spent already); a bulk request spends a token for each further entry."""
        if decode is None:
            return raw
        try:
            request = decode(raw)
        except Exception as e:  # noqa: BLE001 - DecodeError and whatever else the parser raises
            log.info("%s: undecodable request of %d bytes from %s (%s)", method, len(raw), caller, type(e).__name__)
            record_rpc(method.rsplit("/", 1)[-1], grpc.StatusCode.INVALID_ARGUMENT, started)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the request could not be decoded (malformed protobuf)")
            raise  # abort() raises; this is never reached
        more = entries_of(request) - 1
        if self._on and more > 0 and not self._buckets.take(caller, more):
            record_rpc(method.rsplit("/", 1)[-1], grpc.StatusCode.RESOURCE_EXHAUSTED, started)
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"rate limit exceeded for this caller ({more + 1} entries); slow down"
            )
        return request

    def _gated(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        decode = handler.request_deserializer
        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
                try:
                    request, _ = await self._admit(raw, context, method, decode)
                    return await inner_uu(request, context)
                finally:
                    SIGNATURES.pop(id(context), None)

            return grpc.unary_unary_rpc_method_handler(unary_unary, None, handler.response_serializer)
        if handler.stream_stream is not None:
            return self._gated_stream(handler, method)
        inner_us = handler.unary_stream

        async def unary_stream(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                request, caller = await self._admit(raw, context, method, decode)
                refused = self._streams.enter(caller)
                if refused is not None:
                    record_rpc(method.rsplit("/", 1)[-1], grpc.StatusCode.RESOURCE_EXHAUSTED, time.perf_counter())
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
                try:
                    async for item in inner_us(request, context):
                        yield item
                finally:
                    self._streams.leave(caller)
            finally:
                SIGNATURES.pop(id(context), None)

        return grpc.unary_stream_rpc_method_handler(unary_stream, None, handler.response_serializer)


    def _gated_stream(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """A bidirectional stream (SubmitStream): the caller (a request signature covers an empty body), a place
        among its streams, and each message limited and decoded as a unary request is, as the handler reads it."""
        decode = handler.request_deserializer
        inner_ss = handler.stream_stream

        async def messages(raws: AsyncIterator[bytes], context: grpc.aio.ServicerContext, caller: str) -> AsyncIterator[Any]:
            async for raw in raws:
                started = time.perf_counter()
                if self._on and not self._buckets.take(caller):
                    record_rpc(method.rsplit("/", 1)[-1], grpc.StatusCode.RESOURCE_EXHAUSTED, started)
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit exceeded for this caller; slow down")
                yield await self._decode(raw, context, method, decode, caller, started)

        async def stream_stream(raws: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                caller = self._caller(context, method, b"")
                refused = self._streams.enter(caller)
                if refused is not None:
                    record_rpc(method.rsplit("/", 1)[-1], grpc.StatusCode.RESOURCE_EXHAUSTED, time.perf_counter())
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
                try:
                    async for item in inner_ss(messages(raws, context, caller), context):
                        yield item
                finally:
                    self._streams.leave(caller)
            finally:
                SIGNATURES.pop(id(context), None)

        return grpc.stream_stream_rpc_method_handler(stream_stream, None, handler.response_serializer)


def _identity(context: grpc.aio.ServicerContext) -> str:
    name = certificate_name(context)
    return "cn:" + name if name is not None else "peer:" + context.peer().rsplit(":", 1)[0]
