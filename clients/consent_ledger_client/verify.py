"""Offline checks of what the ledger returns. Every rule comes from consent_ledger.core; nothing here trusts
the server: a leaf must be included under a signed checkpoint, and a body must hash to its leaf's commitment."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from consent_ledger.core.checkpoint import Checkpoint
from consent_ledger.core.envelope import ParsedEnvelope, parse_envelope, verify_envelope
from consent_ledger.core.errors import InvalidInput, VerificationError
from consent_ledger.core.leaf import LogLeaf, parse_leaf
from consent_ledger.core.merkle import verify_inclusion
from consent_ledger.core.payloads import ErasurePayload
from consent_ledger.core.rfc6962 import hash_leaf


@dataclass(frozen=True)
class VerifiedEntry:
    """An entry whose leaf is proven in ``checkpoint`` and whose body (unless erased) matches the leaf.

    ``erased_by``, ``erasure``: for an erased body, the index and payload of the Erasure entry that records it, once
    a client checked that entry (LedgerClient.verify_erasure); None otherwise."""

    index: int
    leaf: LogLeaf
    leaf_bytes: bytes
    envelope: ParsedEnvelope | None
    checkpoint: Checkpoint
    proof: tuple[bytes, ...]
    erased_by: int | None = None
    erasure: ErasurePayload | None = None


def verify_entry(
    index: int,
    leaf_bytes: bytes,
    envelope_bytes: bytes | None,
    proof: Sequence[bytes],
    checkpoint: Checkpoint,
) -> VerifiedEntry:
    """Check inclusion of the exact leaf bytes, then the body against the commitment, then the envelope's
    signatures. ``envelope_bytes`` None means the server says the body was erased. Raises VerificationError."""
    verify_inclusion(index, checkpoint.size, hash_leaf(leaf_bytes), list(proof), checkpoint.root_hash)
    try:
        leaf = parse_leaf(leaf_bytes)
    except InvalidInput as e:
        raise VerificationError(f"entry {index}: the proven leaf is malformed: {e}") from e
    envelope = None
    if envelope_bytes is not None:
        if hashlib.sha256(envelope_bytes).digest() != leaf.envelope_sha256:
            raise VerificationError(f"entry {index}: the body does not hash to the leaf's commitment")
        try:
            envelope = parse_envelope(envelope_bytes)
        except InvalidInput as e:
            raise VerificationError(f"entry {index}: the committed body is malformed: {e}") from e
        if envelope.payload_type != leaf.payload_type:
            raise VerificationError(f"entry {index}: the body's payload type differs from the leaf's")
        verify_envelope(envelope)
    return VerifiedEntry(index, leaf, leaf_bytes, envelope, checkpoint, tuple(proof))
