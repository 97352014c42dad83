"""The error hierarchy of consent-ledger.

Two tiers, as in golang.org/x/mod/sumdb: malformed input gets one opaque error
(`InvalidInput`) and a failed check gets `VerificationError`; outcomes that a caller
must act on are typed subclasses that carry their evidence.
"""

from __future__ import annotations

__all__ = [
    "ConsentLedgerError",
    "InconsistentCheckpoints",
    "InvalidInput",
    "UnknownVerifier",
    "VerificationError",
]


class ConsentLedgerError(Exception):
    """Root of every error this package raises on purpose."""


class InvalidInput(ConsentLedgerError):
    """Input is malformed, oversized or not in its one canonical form.

    The message says what was wrong in plain words; callers should not branch on it.
    """


class VerificationError(ConsentLedgerError):
    """A signature or a proof did not verify."""


class UnknownVerifier(VerificationError):
    """A signed note carries no signature by any key the caller trusts.

    `name` and `key_hash` identify the first signature line whose key is unknown.
    """

    def __init__(self, name: str, key_hash: int) -> None:
        super().__init__(f"unknown key {name}+{key_hash:08x}")
        self.name = name
        self.key_hash = key_hash


class InconsistentCheckpoints(VerificationError):
    """Two signed checkpoints of one log that cannot both be true (a split view).

    Keeps the evidence: both signed notes exactly as received and the consistency
    proof that failed between them, so the caller can hand them to an auditor.
    """

    def __init__(self, smaller: bytes, larger: bytes, proof: list[bytes]) -> None:
        super().__init__("checkpoints are not consistent")
        self.smaller = smaller
        self.larger = larger
        self.proof = list(proof)
        # Where a client wrote the evidence file (core.splitview), if it did.
        self.evidence_path: str | None = None
