"""Ed25519 keys, signing and verification.

This is the only module that imports PyNaCl: every other module signs and verifies
through it, so the choice of library (and its exceptions) stays in one place.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.signing

from consent_ledger.core.errors import InvalidInput, VerificationError

__all__ = [
    "PUBLIC_KEY_SIZE",
    "SEED_SIZE",
    "SIGNATURE_SIZE",
    "Ed25519PrivateKey",
    "ed25519_add",
    "ed25519_is_valid_point",
    "ed25519_scalar_add",
    "ed25519_scalar_mul",
    "ed25519_scalar_reduce",
    "ed25519_scalarmult",
    "ed25519_scalarmult_base",
    "ed25519_sub",
    "generate_seed",
    "verify_signature",
]

SEED_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64


def generate_seed() -> bytes:
    """Return a fresh 32-byte Ed25519 seed from the operating system's CSPRNG."""
    return os.urandom(SEED_SIZE)


class Ed25519PrivateKey:
    """An Ed25519 private key, built from its 32-byte seed with `from_seed`.

    Immutable. The seed never appears in `repr`, so a key that ends up in a log line
    or a traceback does not leak. Equality compares seeds in constant time.
    """

    __slots__ = ("_public_key", "_seed", "_signing_key")

    _seed: bytes
    _public_key: bytes
    _signing_key: nacl.signing.SigningKey

    def __init__(self, *, seed: bytes) -> None:
        """Prefer `Ed25519PrivateKey.from_seed(seed)`. Requires len(seed) == 32."""
        if not isinstance(seed, bytes) or len(seed) != SEED_SIZE:
            raise InvalidInput(f"an Ed25519 seed must be {SEED_SIZE} bytes")
        # Expanding the seed costs about as much as one signature: do it once.
        signing_key = nacl.signing.SigningKey(seed)
        object.__setattr__(self, "_seed", seed)
        object.__setattr__(self, "_signing_key", signing_key)
        object.__setattr__(self, "_public_key", bytes(signing_key.verify_key))

    @classmethod
    def from_seed(cls, seed: bytes) -> Ed25519PrivateKey:
        """The key for a 32-byte seed (the form Go's ed25519.NewKeyFromSeed takes)."""
        return cls(seed=seed)

    @classmethod
    def generate(cls) -> Ed25519PrivateKey:
        """A new random key."""
        return cls(seed=generate_seed())

    @property
    def seed(self) -> bytes:
        """The 32-byte seed: secret."""
        return self._seed

    @property
    def public_key(self) -> bytes:
        """The 32-byte public key."""
        return self._public_key

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of message."""
        return self._signing_key.sign(message).signature

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Ed25519PrivateKey is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Ed25519PrivateKey is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ed25519PrivateKey):
            return NotImplemented
        return hmac.compare_digest(self._seed, other._seed)

    def __hash__(self) -> int:
        return hash(self._public_key)

    def __repr__(self) -> str:
        return f"Ed25519PrivateKey(public_key={self._public_key.hex()})"

    def __reduce__(self) -> Any:
        # Pickling would copy the seed somewhere we cannot see; refuse.
        raise TypeError("Ed25519PrivateKey cannot be pickled")


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Check an Ed25519 signature; raise VerificationError unless it is valid.

    Wrong lengths of key or signature are a failed verification too, never a
    different exception, so callers need to handle one error only.
    """
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise VerificationError("public key is not 32 bytes")
    if len(signature) != SIGNATURE_SIZE:
        raise VerificationError("signature is not 64 bytes")
    try:
        # The bindings call straight into libsodium: no key object to build per call.
        nacl.bindings.crypto_sign_open(
            bytes(signature) + bytes(message), bytes(public_key)
        )
    except (nacl.exceptions.BadSignatureError, ValueError) as exc:
        raise VerificationError("signature does not verify") from exc


# Low-level edwards25519 group operations, for the map VRF (core.vrf). Points are 32-byte encodings, scalars
# 32-byte little-endian integers below the group order L. libsodium refuses what is not a point of the main
# subgroup (and results that are the identity); each refusal is one VerificationError here.


def _group_op(fn: Any, *args: bytes) -> bytes:
    try:
        return bytes(fn(*(bytes(a) for a in args)))
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError, nacl.exceptions.TypeError, ValueError) as exc:
        raise VerificationError("not a valid edwards25519 point or scalar for this operation") from exc


def ed25519_is_valid_point(point: bytes) -> bool:
    """Whether ``point`` is the canonical encoding of a point of the main subgroup, not of small order."""
    return len(point) == 32 and bool(nacl.bindings.crypto_core_ed25519_is_valid_point(bytes(point)))


def ed25519_add(p: bytes, q: bytes) -> bytes:
    """p + q, for any two points on the curve (not only the main subgroup)."""
    return _group_op(nacl.bindings.crypto_core_ed25519_add, p, q)


def ed25519_sub(p: bytes, q: bytes) -> bytes:
    """p - q, for any two points on the curve."""
    return _group_op(nacl.bindings.crypto_core_ed25519_sub, p, q)


def ed25519_scalarmult(n: bytes, point: bytes) -> bytes:
    """n * point, unclamped. Requires a main-subgroup point; raises VerificationError otherwise or for an
    identity result."""
    return _group_op(nacl.bindings.crypto_scalarmult_ed25519_noclamp, n, point)


def ed25519_scalarmult_base(n: bytes) -> bytes:
    """n * B, unclamped. Raises VerificationError for n = 0 mod L."""
    return _group_op(nacl.bindings.crypto_scalarmult_ed25519_base_noclamp, n)


def ed25519_scalar_reduce(n: bytes) -> bytes:
    """A 64-byte little-endian integer reduced mod L (32 bytes)."""
    return _group_op(nacl.bindings.crypto_core_ed25519_scalar_reduce, n)


def ed25519_scalar_add(a: bytes, b: bytes) -> bytes:
    """(a + b) mod L."""
    return _group_op(nacl.bindings.crypto_core_ed25519_scalar_add, a, b)


def ed25519_scalar_mul(a: bytes, b: bytes) -> bytes:
    """(a * b) mod L."""
    return _group_op(nacl.bindings.crypto_core_ed25519_scalar_mul, a, b)
