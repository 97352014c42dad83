"""ECVRF-EDWARDS25519-SHA512-TAI against RFC 9381 Appendix B.3, and systematic mutations of a valid proof."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consent_ledger.core import vrf
from consent_ledger.core.errors import InvalidInput, VerificationError

VECTORS = json.loads((Path(__file__).parent / "data" / "vrf_vectors.json").read_text())["vectors"]


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v["alpha"] or "empty")
def test_rfc9381_vectors(v: dict[str, str]) -> None:
    key = vrf.VrfPrivateKey.from_seed(bytes.fromhex(v["sk"]))
    assert key.public_key.hex() == v["pk"]
    alpha = bytes.fromhex(v["alpha"])
    pi = vrf.prove(key, alpha)
    assert pi.hex() == v["pi"]
    assert vrf.proof_to_hash(pi).hex() == v["beta"]
    assert vrf.verify(bytes.fromhex(v["pk"]), alpha, bytes.fromhex(v["pi"])).hex() == v["beta"]


def test_every_bit_flip_of_a_proof_is_refused() -> None:
    v = VECTORS[1]
    pk, alpha, pi = bytes.fromhex(v["pk"]), bytes.fromhex(v["alpha"]), bytes.fromhex(v["pi"])
    for bit in range(len(pi) * 8):
        bad = bytearray(pi)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(VerificationError):
            vrf.verify(pk, alpha, bytes(bad))


def test_other_input_key_or_length_is_refused() -> None:
    v = VECTORS[2]
    pk, alpha, pi = bytes.fromhex(v["pk"]), bytes.fromhex(v["alpha"]), bytes.fromhex(v["pi"])
    with pytest.raises(VerificationError, match="does not verify"):
        vrf.verify(pk, alpha + b"\x00", pi)
    with pytest.raises(VerificationError):
        vrf.verify(bytes.fromhex(VECTORS[0]["pk"]), alpha, pi)
    for bad in (pi[:-1], pi + b"\x00", b""):
        with pytest.raises(VerificationError, match="80 bytes"):
            vrf.verify(pk, alpha, bad)
    with pytest.raises(VerificationError, match="public key"):
        vrf.verify(bytes(32), alpha, pi)


def test_map_keys_and_cache() -> None:
    key = vrf.VrfPrivateKey.generate()
    prover = vrf.MapKeyProver(key, capacity=2)
    patient = bytes(range(32))
    alpha = vrf.consent_alpha(patient, "org:insurer-1")
    assert alpha == b"\x00" + patient + b"org:insurer-1"
    assert vrf.party_alpha("insurer-1") == b"\x01insurer-1"
    proven = prover.prove(alpha)
    assert proven.key == vrf.proof_to_hash(proven.pi)[:32] == prover.consent_key(patient, "org:insurer-1")
    cache = vrf.VerifiedMapKeys(capacity=2)
    assert cache.key(key.public_key, alpha, proven.pi) == proven.key
    assert cache.key(key.public_key, alpha, proven.pi) == proven.key  # cached
    with pytest.raises(VerificationError):
        cache.key(key.public_key, vrf.party_alpha("insurer-1"), proven.pi)  # a proof for another alpha
    with pytest.raises(InvalidInput):
        vrf.consent_alpha(patient[:31], "any")
    with pytest.raises(InvalidInput):
        vrf.party_alpha("")
    assert "seed" not in repr(key) and key.seed.hex() not in repr(key)


# RFC 8032 section 5.1.3 point decoding, written out as the RFC gives it: the reference vrf._decodes (which leaves
# the square root to libsodium) must agree with, on every candidate try-and-increment can meet.
_P = 2**255 - 19
_D = (-121665 * pow(121666, _P - 2, _P)) % _P


def _rfc8032_decodes(s: bytes) -> bool:
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= _P:
        return False
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    vxx = v * x * x % _P
    if vxx == u:
        pass
    elif vxx == (-u) % _P:
        x = x * pow(2, (_P - 1) // 4, _P) % _P
    else:
        return False
    return not (x == 0 and sign == 1)


def test_point_decoding_matches_rfc8032() -> None:
    import hashlib

    edge = [
        (1).to_bytes(32, "little"),  # y = 1, x = 0
        ((1 << 255) | 1).to_bytes(32, "little"),  # y = 1, x = 0, sign bit set: refused
        (_P - 1).to_bytes(32, "little"),  # y = -1, x = 0
        ((1 << 255) | (_P - 1)).to_bytes(32, "little"),
        _P.to_bytes(32, "little"),  # y = p: not canonical
        (_P + 1).to_bytes(32, "little"),
        ((1 << 255) - 1).to_bytes(32, "little"),
        bytes(32),
        (1 << 255).to_bytes(32, "little"),
    ]
    random = [hashlib.sha512(i.to_bytes(4, "little")).digest()[:32] for i in range(2000)]
    agree = [vrf._decodes(s) == _rfc8032_decodes(s) for s in edge + random]
    assert all(agree)
    assert 700 < sum(vrf._decodes(s) for s in random) < 1300  # about half decode


def test_output_is_the_proofs_hash() -> None:
    for v in VECTORS:
        key = vrf.VrfPrivateKey.from_seed(bytes.fromhex(v["sk"]))
        assert vrf.output(key, bytes.fromhex(v["alpha"])).hex() == v["beta"]
    key = vrf.VrfPrivateKey.generate()
    prover = vrf.MapKeyProver(key, capacity=4, proof_capacity=2)
    alphas = [vrf.party_alpha(f"p{i}") for i in range(5)]
    keys = [prover.key(a) for a in alphas]  # no proofs computed
    for a, k in zip(alphas, keys):
        assert prover.prove(a).key == k == vrf.proof_to_hash(vrf.prove(key, a))[:32]
