"""ECVRF-EDWARDS25519-SHA512-TAI (RFC 9381 section 5.5, suite string 0x03) and the map keys it derives.

The consent-state map's keys are pseudorandom (docs/design.md section 5): a map key is the first 32 bytes of the VRF
output ``beta`` under the ledger's map VRF key, for

- ``alpha = 0x00 || patient public key (32 bytes) || grantee selector (UTF-8)``: a consent key;
- ``alpha = 0x01 || party id (UTF-8)``: a party-registration key.

Only the holder of the VRF secret key can compute a key, so a proof of absence that shows a neighbouring key
reveals nothing about whose consents sit there; the 80-byte proof ``pi`` lets anyone holding the VRF public key
check that a key belongs to the alpha they expect (:func:`verify`), and a key never changes for a log, so
clients cache verified keys (:class:`VerifiedMapKeys`).

The group arithmetic is libsodium's (core.crypto). libsodium has no binding for the RFC 8032 section 5.1.3
decoding check of the try-and-increment candidates (its validity check also refuses points outside the main
subgroup, which a candidate almost always is before the cofactor is cleared): its point addition decodes a
candidate (giving 2P, the first step of clearing the cofactor), and the two conditions of section 5.1.3 it does not
check are checked here (``_doubled``).

The ledger places a key in its map from the VRF output alone (:func:`output`: one scalar multiplication, no proof);
the proof is computed when a map proof is served (:class:`MapKeyProver`).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import NoReturn

from consent_ledger.core import crypto
from consent_ledger.core.errors import InvalidInput, VerificationError

__all__ = [
    "BETA_SIZE",
    "PROOF_SIZE",
    "VrfPrivateKey",
    "MapKeyProver",
    "VerifiedMapKeys",
    "consent_alpha",
    "map_key",
    "output",
    "party_alpha",
    "proof_to_hash",
    "prove",
    "verify",
]

SUITE = b"\x03"
PROOF_SIZE = 80
BETA_SIZE = 64
_C_LEN = 16
_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)

CONSENT_KEY = b"\x00"
PARTY_KEY = b"\x01"


def _sha512(data: bytes) -> bytes:
    return hashlib.sha512(data).digest()


def _doubled(s: bytes) -> bytes | None:
    """2P when ``s`` decodes to a curve point P by RFC 8032 section 5.1.3 (any subgroup), else None.

    The decoding itself is libsodium's (its point addition decodes both operands and refuses a y that gives no
    x), which costs less than the square root in Python and gives 2P, the first step of cofactor clearing; the
    two conditions of section 5.1.3 it does not check are checked here: y must be below p, and x = 0 (y = 1 or
    y = p - 1) must not come with the sign bit set. tests/test_vrf.py holds the section 5.1.3 arithmetic as a
    reference and checks this against it."""
    if len(s) != 32:
        return None
    y = int.from_bytes(s, "little") & ((1 << 255) - 1)
    if y >= _P or (s[31] >> 7 and (y == 1 or y == _P - 1)):
        return None
    try:
        return crypto.ed25519_add(s, s)
    except VerificationError:
        return None


def _decodes(s: bytes) -> bool:
    """Whether ``s`` decodes to a curve point by RFC 8032 section 5.1.3 (any subgroup)."""
    return _doubled(s) is not None


def _times_four(point: bytes) -> bytes:
    p2 = crypto.ed25519_add(point, point)
    return crypto.ed25519_add(p2, p2)


def _clear_cofactor(point: bytes) -> bytes:
    return _times_four(crypto.ed25519_add(point, point))


def _encode_to_curve(public_key: bytes, alpha: bytes) -> bytes:
    """ECVRF_encode_to_curve_try_and_increment (RFC 9381 section 5.4.1.1), salt = the public key."""
    prefix = SUITE + b"\x01" + public_key + alpha
    for ctr in range(256):
        candidate = _sha512(prefix + bytes([ctr]) + b"\x00")[:32]
        doubled = _doubled(candidate)
        if doubled is not None:
            return _times_four(doubled)
    # Each candidate decodes with probability about 1/2: 256 failures do not happen.
    raise VerificationError("no curve point found for this input")


def _challenge(*points: bytes) -> bytes:
    """ECVRF_challenge_generation (section 5.4.3): the first 16 bytes of the hash, as a 32-byte scalar."""
    return _sha512(SUITE + b"\x02" + b"".join(points) + b"\x00")[:_C_LEN] + bytes(32 - _C_LEN)


class VrfPrivateKey:
    """A map VRF secret key: an Ed25519-format key pair (RFC 8032 secret key expansion), never used to sign.
    The secret never appears in ``repr``."""

    __slots__ = ("_nonce_prefix", "_public_key", "_seed", "_x", "_x8")

    def __init__(self, *, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != crypto.SEED_SIZE:
            raise InvalidInput("a VRF secret key is 32 bytes")
        h = bytearray(_sha512(seed))
        h[0] &= 248
        h[31] &= 127
        h[31] |= 64
        x = crypto.ed25519_scalar_reduce(bytes(h[:32]) + bytes(32))
        self._seed = seed
        self._x = x
        self._x8 = crypto.ed25519_scalar_mul(x, (8).to_bytes(32, "little"))
        self._nonce_prefix = bytes(h[32:])
        self._public_key = crypto.ed25519_scalarmult_base(x)

    @classmethod
    def from_seed(cls, seed: bytes) -> VrfPrivateKey:
        return cls(seed=seed)

    @classmethod
    def generate(cls) -> VrfPrivateKey:
        return cls(seed=crypto.generate_seed())

    @property
    def seed(self) -> bytes:
        """The 32-byte secret key: secret."""
        return self._seed

    @property
    def public_key(self) -> bytes:
        return self._public_key

    def __repr__(self) -> str:
        return f"VrfPrivateKey(public_key={self._public_key.hex()})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("VrfPrivateKey cannot be pickled")


def prove(key: VrfPrivateKey, alpha: bytes) -> bytes:
    """ECVRF_prove (RFC 9381 section 5.1): the 80-byte proof pi = Gamma || c || s for ``alpha``."""
    h = _encode_to_curve(key.public_key, bytes(alpha))
    gamma = crypto.ed25519_scalarmult(key._x, h)
    k = crypto.ed25519_scalar_reduce(_sha512(key._nonce_prefix + h))
    c = _challenge(key.public_key, h, gamma, crypto.ed25519_scalarmult_base(k), crypto.ed25519_scalarmult(k, h))
    s = crypto.ed25519_scalar_add(k, crypto.ed25519_scalar_mul(c, key._x))
    return gamma + c[:_C_LEN] + s


def output(key: VrfPrivateKey, alpha: bytes) -> bytes:
    """The VRF output beta for ``alpha`` without its proof: beta depends on Gamma = x*H alone, so this skips the
    nonce and the challenge (two of prove's three scalar multiplications). Equal to proof_to_hash(prove(...))."""
    # 8*Gamma = (8x)*H, H being in the main subgroup: one scalar multiplication and no cofactor clearing.
    return _sha512(SUITE + b"\x03" + crypto.ed25519_scalarmult(key._x8, _encode_to_curve(key.public_key, bytes(alpha))) + b"\x00")


def proof_to_hash(pi: bytes) -> bytes:
    """ECVRF_proof_to_hash (section 5.2): the 64-byte output beta of a proof. Does not verify the proof (use
    :func:`verify`); raises VerificationError when pi is malformed."""
    return _output(_decode_proof(pi)[0])


def _output(gamma: bytes) -> bytes:
    """beta from a decoded Gamma (section 5.2)."""
    return _sha512(SUITE + b"\x03" + _clear_cofactor(gamma) + b"\x00")


def _decode_proof(pi: bytes) -> tuple[bytes, bytes, bytes]:
    if not isinstance(pi, bytes | bytearray) or len(pi) != PROOF_SIZE:
        raise VerificationError(f"a VRF proof is {PROOF_SIZE} bytes")
    pi = bytes(pi)
    gamma, c, s = pi[:32], pi[32:48], pi[48:]
    if not _decodes(gamma):
        raise VerificationError("the VRF proof's Gamma is not a curve point")
    if int.from_bytes(s, "little") >= _L:
        raise VerificationError("the VRF proof's s is not reduced")
    return gamma, c + bytes(32 - _C_LEN), s


def verify(public_key: bytes, alpha: bytes, pi: bytes) -> bytes:
    """ECVRF_verify (section 5.3, with key validation): beta when ``pi`` proves ``alpha`` under ``public_key``.
    Raises VerificationError otherwise (any malformed input included).

    Stricter than the RFC in one way that honest proofs never meet: Gamma must be a point of the main subgroup
    (libsodium's scalar multiplication refuses others), as the prover's x*H always is."""
    if not isinstance(public_key, bytes | bytearray) or not crypto.ed25519_is_valid_point(bytes(public_key)):
        raise VerificationError("the VRF public key is not a valid point")
    public_key = bytes(public_key)
    gamma, c, s = _decode_proof(pi)
    h = _encode_to_curve(public_key, bytes(alpha))
    u = crypto.ed25519_sub(crypto.ed25519_scalarmult_base(s), crypto.ed25519_scalarmult(c, public_key))
    v = crypto.ed25519_sub(crypto.ed25519_scalarmult(s, h), crypto.ed25519_scalarmult(c, gamma))
    if _challenge(public_key, h, gamma, u, v) != c:
        raise VerificationError("the VRF proof does not verify")
    return _sha512(SUITE + b"\x03" + _clear_cofactor(gamma) + b"\x00")


# Map keys.


def consent_alpha(patient_public_key: bytes, selector: str) -> bytes:
    """0x00 || patient public key || selector (UTF-8). Requires a 32-byte key and a non-empty selector."""
    if not isinstance(patient_public_key, bytes | bytearray) or len(patient_public_key) != 32:
        raise InvalidInput("a patient public key is 32 bytes")
    if not isinstance(selector, str) or not selector:
        raise InvalidInput("a selector is a non-empty string")
    return CONSENT_KEY + bytes(patient_public_key) + selector.encode("utf-8")


def party_alpha(party_id: str) -> bytes:
    """0x01 || party id (UTF-8). Requires a non-empty party id."""
    if not isinstance(party_id, str) or not party_id:
        raise InvalidInput("a party id is a non-empty string")
    return PARTY_KEY + party_id.encode("utf-8")


def map_key(beta: bytes) -> bytes:
    """The map key of a VRF output: its first 32 bytes."""
    return bytes(beta[:32])


@dataclass(frozen=True)
class ProvenKey:
    """A map key with the VRF proof that it belongs to its alpha."""

    key: bytes
    pi: bytes


class _Lru:
    """Bounded, least recently used out first; thread-safe."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[object, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, k: object) -> object | None:
        with self._lock:
            v = self._items.get(k)
            if v is not None:
                self._items.move_to_end(k)
            return v

    def put(self, k: object, v: object) -> None:
        with self._lock:
            self._items[k] = v
            self._items.move_to_end(k)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)


class MapKeyProver:
    """The ledger's side: map keys with their proofs, from the map VRF secret key.

    Placing a key in the map needs only the VRF output (:func:`output`: Gamma = x*H and a hash), so ``key``
    computes that alone and keeps the latest ``capacity`` keys; the 80-byte proof ``pi``, which only a map proof
    served to a reader carries, is computed by ``prove`` when first asked for and kept among the latest
    ``proof_capacity`` proofs. A key never changes. Thread-safe: two threads asking for the same alpha get equal
    answers."""

    def __init__(self, key: VrfPrivateKey, capacity: int = 100_000, proof_capacity: int = 20_000) -> None:
        self.private_key = key
        self.public_key = key.public_key
        self._keys = _Lru(capacity)
        self._proofs = _Lru(proof_capacity)

    def prove(self, alpha: bytes) -> ProvenKey:
        hit = self._proofs.get(alpha)
        if hit is not None:
            assert isinstance(hit, ProvenKey)
            return hit
        pi = prove(self.private_key, alpha)
        # Gamma is our own curve point: no need to decode the proof again (proof_to_hash) to get beta.
        out = ProvenKey(map_key(_output(pi[:32])), pi)
        self._proofs.put(alpha, out)
        self._keys.put(alpha, out.key)
        return out

    def key(self, alpha: bytes) -> bytes:
        hit = self._keys.get(alpha)
        if hit is not None:
            assert isinstance(hit, bytes)
            return hit
        out = map_key(output(self.private_key, alpha))
        self._keys.put(alpha, out)
        return out

    def consent_key(self, patient: bytes, selector: str) -> bytes:
        return self.key(consent_alpha(patient, selector))

    def party_key(self, party_id: str) -> bytes:
        return self.key(party_alpha(party_id))


class VerifiedMapKeys:
    """A client's cache of verified map keys: (VRF public key, alpha, pi) -> key, bounded. A key is taken from a
    proof only after the proof verifies for the alpha the client expects; the same proof again costs a lookup."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._cache = _Lru(capacity)

    def key(self, public_key: bytes, alpha: bytes, pi: bytes) -> bytes:
        """The map key ``pi`` proves for ``alpha``. Raises VerificationError when it does not verify."""
        k = (bytes(public_key), bytes(alpha), bytes(pi))
        hit = self._cache.get(k)
        if hit is not None:
            assert isinstance(hit, bytes)
            return hit
        out = map_key(verify(public_key, alpha, pi))
        self._cache.put(k, out)
        return out
