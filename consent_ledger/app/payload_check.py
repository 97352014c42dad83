"""Checks on an envelope's payload before it may be appended (the stateless part; see docs/design.md sections 3, 7), and
the validated entry that travels through the sequencer, parsed once."""

from __future__ import annotations

from dataclasses import dataclass

from consent_ledger.core import payloads
from consent_ledger.core.envelope import ParsedEnvelope


@dataclass(frozen=True)
class Validated:
    """A verified envelope with its payload parsed (strictly, once) and its consent id: what a submission is
    from validation on. The sequencer, admission, the index rows and the map update all read these fields; none
    parses the envelope again."""

    env: ParsedEnvelope
    payload: payloads.Payload
    consent_id: str

    @classmethod
    def of(cls, env: ParsedEnvelope) -> Validated:
        """Parse ``env``'s payload. Raises InvalidInput for a malformed or unknown payload."""
        return cls(env, check_payload(env), payloads.consent_id(env.payload))

    @property
    def sha256(self) -> bytes:
        return self.env.sha256

    @property
    def raw(self) -> bytes:
        return self.env.raw

    @property
    def payload_type(self) -> str:
        return self.env.payload_type

    @property
    def signers(self) -> tuple[bytes, ...]:
        return self.env.signers


def validated(entry: Validated | ParsedEnvelope) -> Validated:
    """``entry`` as a Validated entry (an envelope the ledger made itself is parsed here, once)."""
    return entry if isinstance(entry, Validated) else Validated.of(entry)


def check_payload(env: ParsedEnvelope) -> payloads.Payload:
    """Parse the payload strictly (unknown types are refused). Raises InvalidInput for a malformed or unknown
    payload. Who must have signed it depends on the log's state (delegations, registrations): that is
    ConsentLedger.admit's part, once per batch."""
    return payloads.parse_payload(env.payload_type, env.payload)
