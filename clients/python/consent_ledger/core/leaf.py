"""Log leaves: the deterministic protobuf serialization of consent_ledger.v1.LogLeaf.

A leaf commits to an envelope by its SHA-256 and holds no health information
(docs/design.md section 3). Clients verify inclusion of the exact leaf bytes and then parse
them; they never re-serialize, so the parser accepts only the canonical encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from consent_ledger.core.envelope import check_payload_type
from consent_ledger.core.errors import InvalidInput
from consent_ledger.v1 import envelope_pb2

__all__ = ["MAX_LEAF_SIZE", "LogLeaf", "encode_leaf", "parse_leaf"]

MAX_LEAF_SIZE = 512
_HASH_SIZE = 32
_MAX_TIME_MS = 2**63 - 1


@dataclass(frozen=True)
class LogLeaf:
    """A parsed leaf: integration time (ms since the epoch), payload type, envelope hash."""

    integrated_time_ms: int
    payload_type: str
    envelope_sha256: bytes


def _check_fields(
    integrated_time_ms: int, payload_type: str, envelope_sha256: bytes
) -> None:
    # Time 0 would be omitted by proto3 and read back as "unset": require a real time.
    if (
        type(integrated_time_ms) is not int
        or not 0 < integrated_time_ms <= _MAX_TIME_MS
    ):
        raise InvalidInput(
            "leaf integration time must be a positive int64 (milliseconds)"
        )
    check_payload_type(payload_type)
    if not isinstance(envelope_sha256, bytes) or len(envelope_sha256) != _HASH_SIZE:
        raise InvalidInput("leaf envelope hash must be 32 bytes")


def encode_leaf(
    integrated_time_ms: int, payload_type: str, envelope_sha256: bytes
) -> bytes:
    """The leaf bytes. Requires 0 < integrated_time_ms < 2**63, a valid payload type
    (see envelope.check_payload_type) and a 32-byte hash."""
    _check_fields(integrated_time_ms, payload_type, envelope_sha256)
    leaf = envelope_pb2.LogLeaf(
        integrated_time_ms=integrated_time_ms,
        payload_type=payload_type,
        envelope_sha256=envelope_sha256,
    )
    return bytes(leaf.SerializeToString(deterministic=True))


def parse_leaf(data: bytes) -> LogLeaf:
    """Parse leaf bytes, accepting only what `encode_leaf` produces. Raises InvalidInput."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidInput("leaf must be bytes")
    data = bytes(data)
    if len(data) > MAX_LEAF_SIZE:
        raise InvalidInput(f"leaf is larger than {MAX_LEAF_SIZE} bytes")
    msg = envelope_pb2.LogLeaf()
    try:
        msg.ParseFromString(data)
    except DecodeError:
        raise InvalidInput("leaf is not a valid protobuf message") from None
    msg.DiscardUnknownFields()  # so that unknown fields fail the comparison below
    if msg.SerializeToString(deterministic=True) != data:
        raise InvalidInput("leaf is not in canonical form")
    leaf = LogLeaf(
        integrated_time_ms=msg.integrated_time_ms,
        payload_type=msg.payload_type,
        envelope_sha256=bytes(msg.envelope_sha256),
    )
    _check_fields(leaf.integrated_time_ms, leaf.payload_type, leaf.envelope_sha256)
    return leaf
