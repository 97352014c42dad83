"""Checks on an envelope's payload before it may be appended (the stateless part; see DESIGN sections 3, 7)."""

from __future__ import annotations

from consent_ledger.app.errors import PermissionDenied
from consent_ledger.core import payloads
from consent_ledger.core.envelope import ParsedEnvelope


def check_payload(env: ParsedEnvelope) -> payloads.Payload:
    """Parse the payload strictly (unknown types are refused) and check who must have signed it.

    Raises InvalidInput for a malformed or unknown payload, PermissionDenied when a patient's grant or
    revocation is not signed by that patient's key.
    """
    payload = payloads.parse_payload(env.payload_type, env.payload)
    patient = getattr(payload, "patient", None)
    if env.payload_type in (payloads.CONSENT_GRANT, payloads.CONSENT_REVOCATION) and patient not in env.signers:
        raise PermissionDenied("a consent grant or revocation must be signed by the patient's own key")
    return payload
