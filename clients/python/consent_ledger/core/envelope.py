"""DSSE envelopes (https://github.com/secure-systems-lab/dsse) signed with Ed25519.

An envelope is the deterministic protobuf serialization of consent_ledger.v1.Envelope.
The ledger commits to the exact bytes it was given, so `parse_envelope` accepts only
bytes that re-serialize to themselves: one encoding per envelope, no unknown or
repeated fields, no hidden data a signature does not cover.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from consent_ledger.core.crypto import (
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    Ed25519PrivateKey,
    verify_signature,
)
from consent_ledger.core.errors import InvalidInput, VerificationError
from consent_ledger.v1 import envelope_pb2

__all__ = [
    "DEFAULT_MAX_ENVELOPE_SIZE",
    "MAX_PAYLOAD_TYPE_SIZE",
    "MAX_SIGNATURES",
    "ParsedEnvelope",
    "check_payload_type",
    "keyid_for",
    "pae",
    "parse_envelope",
    "sign_envelope",
    "verify_envelope",
]

DEFAULT_MAX_ENVELOPE_SIZE = 64 * 1024
MAX_PAYLOAD_TYPE_SIZE = 128
MAX_SIGNATURES = 8

_KEYID_PREFIX = "ed25519:"
_KEYID = re.compile(r"ed25519:[0-9a-f]{64}")
# Visible ASCII only: no spaces or control characters, so a type prints unambiguously.
_PAYLOAD_TYPE = re.compile(rf"[\x21-\x7e]{{1,{MAX_PAYLOAD_TYPE_SIZE}}}")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: "DSSEv1 <len> <type> <len> <payload>".

    Lengths are the ASCII decimal byte lengths of the UTF-8 type and of the payload.
    """
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


def keyid_for(public_key: bytes) -> str:
    """The keyid naming an Ed25519 public key: "ed25519:" + 64 lower-case hex digits."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise InvalidInput("an Ed25519 public key must be 32 bytes")
    return _KEYID_PREFIX + public_key.hex()


def check_payload_type(payload_type: str) -> None:
    """Raise InvalidInput unless payload_type is 1 to 128 visible ASCII characters."""
    if not isinstance(payload_type, str) or not _PAYLOAD_TYPE.fullmatch(payload_type):
        raise InvalidInput(
            f"payload type must be 1 to {MAX_PAYLOAD_TYPE_SIZE} visible ASCII characters"
        )


@dataclass(frozen=True, kw_only=True)
class ParsedEnvelope:
    """A well-formed envelope, not yet verified (see `verify_envelope`).

    signers[i] is the public key that signatures[i] claims to be from; raw is the exact
    envelope bytes and sha256 their digest (the commitment that goes into the log).
    """

    payload_type: str
    payload: bytes
    signers: tuple[bytes, ...]
    signatures: tuple[bytes, ...]
    raw: bytes
    sha256: bytes

    @property
    def keyids(self) -> tuple[str, ...]:
        return tuple(keyid_for(pk) for pk in self.signers)


def sign_envelope(
    payload_type: str, payload: bytes, private_keys: Sequence[Ed25519PrivateKey]
) -> bytes:
    """Sign payload with each key (1 to 8 distinct keys); return the envelope bytes.

    The result is the deterministic serialization that `parse_envelope` accepts.
    """
    check_payload_type(payload_type)
    if not isinstance(payload, bytes) or not payload:
        raise InvalidInput("envelope payload must be non-empty bytes")
    if not 1 <= len(private_keys) <= MAX_SIGNATURES:
        raise InvalidInput(f"an envelope needs 1 to {MAX_SIGNATURES} signatures")
    if len({k.public_key for k in private_keys}) != len(private_keys):
        raise InvalidInput("an envelope may be signed only once by each key")
    message = pae(payload_type, payload)
    env = envelope_pb2.Envelope(
        payload=payload,
        payload_type=payload_type,
        signatures=[
            envelope_pb2.Signature(sig=k.sign(message), keyid=keyid_for(k.public_key))
            for k in private_keys
        ],
    )
    return bytes(env.SerializeToString(deterministic=True))


def parse_envelope(
    data: bytes, max_size: int = DEFAULT_MAX_ENVELOPE_SIZE
) -> ParsedEnvelope:
    """Parse envelope bytes strictly; raises InvalidInput. Does not verify signatures.

    Requires: at most max_size bytes, the canonical (deterministic) encoding, a valid
    payload type, a non-empty payload, 1 to 8 signatures of 64 bytes each by distinct
    keyids of the form "ed25519:<64 lower-case hex>".
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidInput("envelope must be bytes")
    data = bytes(data)
    if len(data) > max_size:
        raise InvalidInput(f"envelope is larger than {max_size} bytes")
    env = envelope_pb2.Envelope()
    try:
        env.ParseFromString(data)
    except DecodeError:
        raise InvalidInput("envelope is not a valid protobuf message") from None
    # Unknown fields survive a parse and re-serialize; drop them so that they show up
    # as a difference below instead of riding along unsigned.
    env.DiscardUnknownFields()
    if env.SerializeToString(deterministic=True) != data:
        raise InvalidInput(
            "envelope is not in canonical form (unknown, repeated or misordered fields)"
        )

    check_payload_type(env.payload_type)
    if not env.payload:
        raise InvalidInput("envelope payload is empty")
    if not 1 <= len(env.signatures) <= MAX_SIGNATURES:
        raise InvalidInput(f"envelope must carry 1 to {MAX_SIGNATURES} signatures")
    signers: list[bytes] = []
    signatures: list[bytes] = []
    for s in env.signatures:
        if not _KEYID.fullmatch(s.keyid):
            raise InvalidInput(
                "signature keyid is not ed25519:<64 lower-case hex digits>"
            )
        if len(s.sig) != SIGNATURE_SIZE:
            raise InvalidInput("signature is not 64 bytes")
        signers.append(bytes.fromhex(s.keyid[len(_KEYID_PREFIX) :]))
        signatures.append(bytes(s.sig))
    if len(set(signers)) != len(signers):
        raise InvalidInput("envelope is signed twice by the same key")
    return ParsedEnvelope(
        payload_type=env.payload_type,
        payload=bytes(env.payload),
        signers=tuple(signers),
        signatures=tuple(signatures),
        raw=data,
        sha256=hashlib.sha256(data).digest(),
    )


def verify_envelope(env: ParsedEnvelope) -> None:
    """Verify every signature over PAE(type, payload); raise VerificationError naming
    the first keyid whose signature fails. Which keys must sign is the caller's policy."""
    if not env.signers or len(env.signers) != len(env.signatures):
        # Fail closed: an envelope nobody signed verifies nothing.
        raise VerificationError("envelope carries no signatures")
    message = pae(env.payload_type, env.payload)
    for public_key, sig in zip(env.signers, env.signatures, strict=True):
        try:
            verify_signature(public_key, message, sig)
        except VerificationError:
            raise VerificationError(
                f"envelope signature by {keyid_for(public_key)} does not verify"
            ) from None
