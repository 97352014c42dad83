"""Signed entries for tests: a patient key, grants and revocations as envelope bytes."""

from __future__ import annotations

from consent_ledger.core import payloads
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.envelope import sign_envelope

PATIENT = Ed25519PrivateKey.from_seed(b"\x11" * 32)


def grant_envelope(key: Ed25519PrivateKey = PATIENT, grantee: str = "org:hospital-1", **kw: object) -> bytes:
    payload = payloads.build_grant(
        patient=key.public_key,
        grantee=grantee,
        actions=kw.pop("actions", ("access",)),  # type: ignore[arg-type]
        purposes=kw.pop("purposes", ("TREAT",)),  # type: ignore[arg-type]
        data_classes=kw.pop("data_classes", ("laboratory-results",)),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )
    return sign_envelope(payloads.CONSENT_GRANT, payload, [key])


def revocation_envelope(consent_id: str, key: Ed25519PrivateKey = PATIENT) -> bytes:
    payload = payloads.build_revocation(patient=key.public_key, consent_id=consent_id, reason="changed my mind")
    return sign_envelope(payloads.CONSENT_REVOCATION, payload, [key])
