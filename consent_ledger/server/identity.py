"""Who is calling. An organisation is identified by its TLS client certificate (mutual TLS): the certificate's
common name is its party id, checked against the party registrations in the log by the application.

For development without TLS (``--insecure``, loopback only) a caller may name its party id in the
``x-consent-ledger-party`` metadata header instead. That header is ignored whenever TLS is on.
"""

from __future__ import annotations

import grpc

from consent_ledger.app.errors import PermissionDenied

PARTY_HEADER = "x-consent-ledger-party"


class CallerIdentity:
    def __init__(self, *, trust_party_header: bool) -> None:
        self._trust_header = trust_party_header

    def party_id(self, context: grpc.aio.ServicerContext) -> str:
        """The calling organisation's party id. Raises PermissionDenied when the caller is not one."""
        auth = context.auth_context()
        names = auth.get("x509_common_name") or []
        if names:
            return names[0].decode("utf-8", "replace")
        if self._trust_header:
            for key, value in context.invocation_metadata() or ():
                if key == PARTY_HEADER and isinstance(value, str) and value:
                    return value
        raise PermissionDenied("this call needs an organisation's identity (a TLS client certificate)")
