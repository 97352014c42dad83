"""Authentication and authorization of every call, in one interceptor.

The transport proves a name: the TLS client certificate's common name. A development server without TLS
(``--insecure``, loopback only) takes the name from the ``x-consent-ledger-party`` header instead; that header is
ignored whenever TLS is on. A patient signs the request (``x-consent-ledger-request-signature``, see
core/request_auth.py). The interceptor resolves the caller (app/authentication.py), applies the one table of
rules (app/authorization.py) and hands the caller to the handler through `caller_of(context)`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from consent_ledger.app.authentication import Authenticator
from consent_ledger.app.authorization import PUBLIC_PREFIXES, RULES, Authorizer, Caller, Rule
from consent_ledger.app.errors import WouldBlock
from consent_ledger.app.ledger import CALL_STARTED
from consent_ledger.core.request_auth import HEADER as SIGNATURE_HEADER
from consent_ledger.core.request_auth import PARTY_HEADER
from consent_ledger.server.errors import record_rpc, status_for
from consent_ledger.server.handlers import SIGNATURES, certificate_name, wrap_handler

# The caller of each call in progress, by its servicer context (set and cleared by AuthInterceptor).
_CALLERS: dict[int, Caller] = {}


def caller_of(context: grpc.aio.ServicerContext) -> Caller:
    """The authenticated caller of the call being handled."""
    try:
        return _CALLERS[id(context)]
    except KeyError:
        raise RuntimeError("no authenticated caller: is this method missing from the authorization table?") from None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authenticator: Authenticator, authorizer: Authorizer, *, trust_party_header: bool) -> None:
        self._authn = authenticator
        self._authz = authorizer
        self._trust_header = trust_party_header

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(PUBLIC_PREFIXES) or RULES.get(method) is Rule.PUBLIC:
            return handler
        return self._guarded(handler, method)

    def _credentials(self, context: grpc.aio.ServicerContext) -> tuple[str | None, str | None]:
        name = certificate_name(context)
        signature = None
        for key, value in context.invocation_metadata() or ():
            if key == SIGNATURE_HEADER and isinstance(value, str):
                signature = value
            elif key == PARTY_HEADER and self._trust_header and name is None and isinstance(value, str) and value:
                name = value
        return name, signature

    async def _enter(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        """Authenticate and authorize one call. Most calls are decided in memory on the event loop (the caller's
        kind decides, the party registration is cached); what needs storage (an uncached registration, a
        delegation, the entry a read names) is decided in a worker thread. A signed request's nonce is spent in
        the database, batched with the other signed calls of the moment (app/authentication.py)."""
        started = time.perf_counter()
        CALL_STARTED.set(time.monotonic())
        name, signature = self._credentials(context)
        try:
            if signature is not None:
                # Verified over the bytes sent, by the limits interceptor; without it, over the re-encoded request.
                checked = SIGNATURES.get(id(context))
                if checked is None:
                    body = b"" if request is None else request.SerializeToString(deterministic=True)
                    checked = self._authn.verify(signature, method, body)
                if isinstance(checked, Exception):
                    raise checked
                caller = await self._authn.patient(checked)
            else:
                try:
                    caller = self._authn.caller(name=name, io=False)
                except WouldBlock:
                    caller = await asyncio.to_thread(self._authn.caller, name=name)
            try:
                self._authz.check(caller, method, request, io=False)
            except WouldBlock:
                await asyncio.to_thread(self._authz.check, caller, method, request)
        except Exception as exc:  # noqa: BLE001 - every refusal gets its status code
            code, message = status_for(exc)
            record_rpc(method.rsplit("/", 1)[-1], code, started)
            await context.abort(code, message)
            raise  # abort() raises; this is never reached
        _CALLERS[id(context)] = caller

    def _guarded(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        async def enter(request: Any, context: grpc.aio.ServicerContext) -> None:
            await self._enter(method, request, context)

        return wrap_handler(handler, enter, lambda context: _CALLERS.pop(id(context), None))
