"""Signed requests: how a patient (or a patient's delegate) authenticates a call with its own key (DESIGN 7).

The caller signs, with Ed25519, the message

    "consent-ledger/request/v1\\n" <origin> "\\n" <method> "\\n" <timestamp ms> "\\n" <nonce hex> "\\n"
    <SHA-256 hex of request> "\\n"

where <origin> is the log's origin (the name in its checkpoints and verifier key), <method> the full gRPC method
path ("/consent_ledger.v1.ConsentService/ListConsents") and the request bytes the request message's
deterministic protobuf serialization (the bytes sent on the wire). The signature travels in one metadata
header::

    x-consent-ledger-request-signature: v1 key=<hex>,ts=<ms>,nonce=<hex>,sig=<hex>

A signature binds one log, one method, one request and one moment: it cannot be replayed against another ledger
or another call, and the servers refuse stale timestamps and nonces already seen (kept in the log's database, so
a restart or another replica does not accept a replay either: that is server state; this module is the pure
part that client and server share).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from consent_ledger.core.crypto import Ed25519PrivateKey, generate_seed, verify_signature
from consent_ledger.core.errors import InvalidInput

HEADER = "x-consent-ledger-request-signature"
# On a development server without TLS (loopback only), the caller's name (organisation, operator, auditor) travels
# in this header instead of a client certificate; servers with TLS ignore it.
PARTY_HEADER = "x-consent-ledger-party"
_DOMAIN = b"consent-ledger/request/v1\n"
NONCE_SIZE = 16
# How far a request's timestamp may be from the server's clock (either way).
MAX_SKEW_MS = 120_000
_MAX_HEADER = 400
# One encoding per signature: lowercase hex, a decimal timestamp without leading zeros.
_FORMAT = re.compile(r"v1 key=([0-9a-f]{64}),ts=(0|[1-9][0-9]{0,14}),nonce=([0-9a-f]{32}),sig=([0-9a-f]{128})")


@dataclass(frozen=True)
class RequestSignature:
    key: bytes
    timestamp_ms: int
    nonce: bytes
    signature: bytes

    def header_value(self) -> str:
        return f"v1 key={self.key.hex()},ts={self.timestamp_ms},nonce={self.nonce.hex()},sig={self.signature.hex()}"


def signed_message(origin: str, method: str, request: bytes, timestamp_ms: int, nonce: bytes) -> bytes:
    """The exact bytes a request signature covers. Requires an origin without line breaks (a log's origin is a
    note key name: no spaces, no newlines, no "+")."""
    if not origin or "\n" in origin:
        raise InvalidInput("a log origin is a non-empty single line")
    digest = hashlib.sha256(request).hexdigest()
    return b"%s%s\n%s\n%d\n%s\n%s\n" % (
        _DOMAIN, origin.encode("utf-8"), method.encode("utf-8"), timestamp_ms, nonce.hex().encode(), digest.encode()
    )  # fmt: skip


def sign_request(
    key: Ed25519PrivateKey, origin: str, method: str, request: bytes, *, timestamp_ms: int, nonce: bytes | None = None
) -> RequestSignature:
    """Sign one call to the log named ``origin``. ``nonce`` defaults to 16 fresh random bytes."""
    nonce = generate_seed()[:NONCE_SIZE] if nonce is None else nonce
    if len(nonce) != NONCE_SIZE:
        raise InvalidInput(f"a request nonce is {NONCE_SIZE} bytes")
    sig = key.sign(signed_message(origin, method, request, timestamp_ms, nonce))
    return RequestSignature(key.public_key, timestamp_ms, nonce, sig)


def parse_header(value: str) -> RequestSignature:
    """Parse the header value; raises InvalidInput unless it has exactly the documented form."""
    if len(value) > _MAX_HEADER:
        raise InvalidInput("request signature header is too long")
    m = _FORMAT.fullmatch(value)
    if m is None:
        raise InvalidInput("request signature header is malformed (v1 key=<hex>,ts=<ms>,nonce=<hex>,sig=<hex>)")
    key, ts, nonce, sig = m.groups()
    return RequestSignature(bytes.fromhex(key), int(ts), bytes.fromhex(nonce), bytes.fromhex(sig))


def check_request_signature(
    sig: RequestSignature, origin: str, method: str, request: bytes, *, now_ms: int, max_skew_ms: int = MAX_SKEW_MS
) -> None:
    """Check freshness and the signature for the log ``origin`` (not replay: that needs the server's memory of
    nonces). A request signed for another log does not verify.

    Raises InvalidInput for a timestamp outside the allowed skew, VerificationError for a bad signature.
    """
    if abs(now_ms - sig.timestamp_ms) > max_skew_ms:
        raise InvalidInput(
            f"request timestamp {sig.timestamp_ms} is more than {max_skew_ms // 1000} s from the server's clock"
        )
    verify_signature(sig.key, signed_message(origin, method, request, sig.timestamp_ms, sig.nonce), sig.signature)
