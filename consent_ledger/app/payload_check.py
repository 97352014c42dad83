"""Checks on an envelope's payload before it may be appended (the stateless part; see docs/design.md sections 3, 7)."""

from __future__ import annotations

from consent_ledger.core import payloads
from consent_ledger.core.envelope import ParsedEnvelope


def check_payload(env: ParsedEnvelope) -> payloads.Payload:
    """Parse the payload strictly (unknown types are refused). Raises InvalidInput for a malformed or unknown
    payload. Who must have signed it depends on the log's state (delegations, registrations): that is
    ConsentLedger.check's part."""
    return payloads.parse_payload(env.payload_type, env.payload)
