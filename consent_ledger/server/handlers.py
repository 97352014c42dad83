"""Shared pieces of the server's interceptors: wrapping a method handler, the caller's certificate name, and the
outcome of checking a call's request signature."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

# The outcome of checking each call's request signature over the bytes that were sent, by its servicer context: set
# by the limits interceptor (server/limits.py, which sees the raw request), read by the authentication interceptor
# (server/auth.py), removed when the call ends. A verified signature, or the refusal to raise.
SIGNATURES: dict[int, Any] = {}

# Runs before the handler with the request; may abort the call (context.abort raises).
Before = Callable[[Any, grpc.aio.ServicerContext], Awaitable[None]]
# Runs when the handler is done, whatever the outcome.
After = Callable[[grpc.aio.ServicerContext], None]


def _nothing(context: grpc.aio.ServicerContext) -> None:
    return None


def wrap_handler(handler: grpc.RpcMethodHandler, before: Before, after: After = _nothing) -> grpc.RpcMethodHandler:
    """The same unary-unary, unary-stream or bidirectional-stream handler with ``before`` awaited first and
    ``after`` run at its end. A bidirectional stream's ``before`` gets None for the request (it is checked before
    any message is read). The API has no client-streaming methods; one would be refused rather than let through
    unchecked."""
    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await before(request, context)
            try:
                return await inner_uu(request, context)
            finally:
                after(context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, handler.request_deserializer, handler.response_serializer)
    if handler.unary_stream is not None:
        inner_us = handler.unary_stream

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await before(request, context)
            try:
                async for item in inner_us(request, context):
                    yield item
            finally:
                after(context)

        return grpc.unary_stream_rpc_method_handler(unary_stream, handler.request_deserializer, handler.response_serializer)
    if handler.stream_stream is not None:
        inner_ss = handler.stream_stream

        async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            await before(None, context)
            try:
                async for item in inner_ss(requests, context):
                    yield item
            finally:
                after(context)

        return grpc.stream_stream_rpc_method_handler(stream_stream, handler.request_deserializer, handler.response_serializer)
    raise RuntimeError("only unary-unary, unary-stream and stream-stream methods can be wrapped")


def certificate_name(context: grpc.aio.ServicerContext) -> str | None:
    """The common name of the caller's verified TLS client certificate, if it presented one."""
    names = context.auth_context().get("x509_common_name") or []
    return names[0].decode("utf-8", "replace") if names else None
