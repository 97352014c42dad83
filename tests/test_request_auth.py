"""Signed requests (core/request_auth.py): one encoding of the header, and a signature bound to one call."""

from __future__ import annotations

import pytest

from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.errors import InvalidInput, VerificationError
from consent_ledger.core.request_auth import check_request_signature, parse_header, sign_request

KEY = Ed25519PrivateKey.from_seed(b"\x61" * 32)
METHOD = "/consent_ledger.v1.ConsentService/ListConsents"
BODY = b"\x0a\x20" + b"\x01" * 32
T = 1_780_000_000_000
ORIGIN = "ledger.test/log"


def signed(**kw: object):  # type: ignore[no-untyped-def]
    return sign_request(KEY, ORIGIN, METHOD, BODY, timestamp_ms=T, nonce=b"\x07" * 16, **kw)


def test_the_header_round_trips_and_verifies() -> None:
    sig = signed()
    assert parse_header(sig.header_value()) == sig
    check_request_signature(sig, ORIGIN, METHOD, BODY, now_ms=T + 119_000)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda h: h.replace(f"ts={T}", f"ts=0{T}"),  # a leading zero: found by the long fuzz run
        lambda h: h.upper().replace("V1 KEY", "v1 key"),  # uppercase hex
        lambda h: h.replace(",", ", "),
        lambda h: h + " ",
        lambda h: h.replace("v1 ", "v2 "),
        lambda h: h[:-2],
    ],
)
def test_only_the_canonical_header_parses(mangle) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput):
        parse_header(mangle(signed().header_value()))


def test_the_signature_binds_origin_method_request_time_and_nonce() -> None:
    sig = signed()
    with pytest.raises(VerificationError):  # a request made to another ledger
        check_request_signature(sig, "other.test/log", METHOD, BODY, now_ms=T)
    with pytest.raises(VerificationError):
        check_request_signature(sig, ORIGIN, "/consent_ledger.v1.ConsentService/WatchPatient", BODY, now_ms=T)
    with pytest.raises(VerificationError):
        check_request_signature(sig, ORIGIN, METHOD, BODY + b"\x00", now_ms=T)
    for other in (signed().__class__(sig.key, T + 1, sig.nonce, sig.signature),
                  signed().__class__(sig.key, T, b"\x08" * 16, sig.signature)):  # fmt: skip
        with pytest.raises(VerificationError):
            check_request_signature(other, ORIGIN, METHOD, BODY, now_ms=T)


def test_stale_and_future_timestamps_are_refused() -> None:
    sig = signed()
    for now in (T + 120_001, T - 120_001):
        with pytest.raises(InvalidInput, match="from the server's clock"):
            check_request_signature(sig, ORIGIN, METHOD, BODY, now_ms=now)
