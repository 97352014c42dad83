"""One table from domain errors to gRPC status codes, and the wrapper every handler goes through.

Unexpected exceptions become INTERNAL with a generic message; the detail goes to the log, not to the caller.
The same wrapper records the per-RPC metrics (method, status code, duration).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from consent_ledger.app import instruments
from consent_ledger.app.errors import (
    AlreadyExists,
    CorruptStorage,
    FailedPrecondition,
    NotFound,
    OutOfRange,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from consent_ledger.core.errors import InvalidInput, VerificationError

log = logging.getLogger(__name__)

STATUS_FOR: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (VerificationError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and caller-facing message for an exception raised by the domain."""
    if isinstance(exc, CorruptStorage):
        return grpc.StatusCode.INTERNAL, "internal error (the server's log has details)"
    for cls, code in STATUS_FOR:
        if isinstance(exc, cls):
            return code, str(exc) or cls.__name__
    return grpc.StatusCode.INTERNAL, "internal error (the server's log has details)"


R = TypeVar("R")


async def _fail(context: grpc.aio.ServicerContext, method: str, exc: BaseException) -> None:
    code, message = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.error("%s failed", method, exc_info=exc)
    context.set_code(code)
    context.set_details(message)


def record_rpc(method: str, code: grpc.StatusCode, started: float) -> None:
    attrs = {"rpc.method": method, "rpc.grpc.status_code": code.name}
    instruments.rpc_requests.add(1, attrs)
    instruments.rpc_duration.record((time.perf_counter() - started) * 1000, {"rpc.method": method})


def unary(method: str) -> Callable[[Callable[..., Awaitable[R]]], Callable[..., Awaitable[R | None]]]:
    """Wrap a unary handler: map errors to status codes and record metrics."""

    def wrap(fn: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R | None]]:
        @functools.wraps(fn)
        async def handler(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R | None:
            started = time.perf_counter()
            try:
                response = await fn(self, request, context)
            except Exception as exc:  # noqa: BLE001 - every error gets a status code
                await _fail(context, method, exc)
                record_rpc(method, context.code() or grpc.StatusCode.INTERNAL, started)
                return None
            record_rpc(method, grpc.StatusCode.OK, started)
            return response

        return handler

    return wrap


def streaming(method: str) -> Callable[[Callable[..., AsyncIterator[R]]], Callable[..., AsyncIterator[R]]]:
    """Wrap a server-streaming handler the same way."""

    def wrap(fn: Callable[..., AsyncIterator[R]]) -> Callable[..., AsyncIterator[R]]:
        @functools.wraps(fn)
        async def handler(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[R]:
            started = time.perf_counter()
            try:
                async for item in fn(self, request, context):
                    yield item
            except grpc.aio.AbortError:
                raise  # the call was already ended with its status (a limit reached while reading a stream)
            except Exception as exc:  # noqa: BLE001
                await _fail(context, method, exc)
                record_rpc(method, context.code() or grpc.StatusCode.INTERNAL, started)
                return
            record_rpc(method, grpc.StatusCode.OK, started)

        return handler

    return wrap
