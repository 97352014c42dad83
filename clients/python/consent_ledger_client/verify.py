"""Offline checks of what the ledger returns. Every rule comes from consent_ledger.core; nothing here trusts
the server: a leaf must be included under a signed checkpoint, and a body must hash to its leaf's commitment."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from consent_ledger.core.checkpoint import Checkpoint
from consent_ledger.core.envelope import ParsedEnvelope, parse_envelope, verify_envelope
from consent_ledger.core.errors import InvalidInput, VerificationError
from consent_ledger.core.leaf import LogLeaf, parse_leaf
from consent_ledger.core.merkle import verify_inclusion
from consent_ledger.core.payloads import ErasurePayload
from consent_ledger.core.rfc6962 import hash_leaf


class _VerifiedEnvelopes:
    """Envelopes whose signatures verified, by the SHA-256 of their exact bytes (the leaf's commitment): the same
    entries come back as evidence answer after answer, and their bytes never change. Bounded by the bytes held;
    thread-safe. A hit stands for a parse and a verification of those very bytes."""

    def __init__(self, max_bytes: int = 16 * 2**20) -> None:
        self._max_bytes = max_bytes
        self._items: OrderedDict[bytes, ParsedEnvelope] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, digest: bytes) -> ParsedEnvelope | None:
        with self._lock:
            env = self._items.get(digest)
            if env is not None:
                self._items.move_to_end(digest)
            return env

    def put(self, env: ParsedEnvelope) -> None:
        size = len(env.raw) + 128
        if size > self._max_bytes:
            return
        with self._lock:
            if env.sha256 in self._items:
                return
            self._items[env.sha256] = env
            self._bytes += size
            while self._bytes > self._max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= len(old.raw) + 128


_VERIFIED = _VerifiedEnvelopes()


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
        digest = hashlib.sha256(envelope_bytes).digest()
        if digest != leaf.envelope_sha256:
            raise VerificationError(f"entry {index}: the body does not hash to the leaf's commitment")
        envelope = _VERIFIED.get(digest)
        if envelope is None:
            try:
                envelope = parse_envelope(envelope_bytes)
            except InvalidInput as e:
                raise VerificationError(f"entry {index}: the committed body is malformed: {e}") from e
            verify_envelope(envelope)
            _VERIFIED.put(envelope)
        if envelope.payload_type != leaf.payload_type:
            raise VerificationError(f"entry {index}: the body's payload type differs from the leaf's")
    return VerifiedEntry(index, leaf, leaf_bytes, envelope, checkpoint, tuple(proof))
