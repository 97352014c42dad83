"""DSSE envelopes: PAE, canonical encoding only, signature checks."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.envelope import (
    ParsedEnvelope,
    keyid_for,
    pae,
    parse_envelope,
    sign_envelope,
    verify_envelope,
)
from consent_ledger.core.errors import InvalidInput, VerificationError
from consent_ledger.v1 import envelope_pb2

KEYS = [Ed25519PrivateKey.from_seed(bytes([i]) * 32) for i in range(1, 10)]
A, B = KEYS[0], KEYS[1]
TYPE = "consent_ledger.v1.ConsentGrant"
PAYLOAD = b"\x0a\x03abc payload bytes"
ENV = sign_envelope(TYPE, PAYLOAD, [A])


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _len_field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _sig(
    key: Ed25519PrivateKey, type_: str = TYPE, payload: bytes = PAYLOAD
) -> envelope_pb2.Signature:
    return envelope_pb2.Signature(
        sig=key.sign(pae(type_, payload)), keyid=keyid_for(key.public_key)
    )


def _serialize(**fields: Any) -> bytes:
    args: dict[str, Any] = {
        "payload": PAYLOAD,
        "payload_type": TYPE,
        "signatures": [_sig(A)],
    }
    args.update(fields)
    return envelope_pb2.Envelope(**args).SerializeToString(deterministic=True)


def test_pae_matches_dsse_spec_example() -> None:
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert pae("t", b"") == b"DSSEv1 1 t 0 "
    assert pae("é", b"\x00 \xff") == b"DSSEv1 2 \xc3\xa9 3 \x00 \xff"  # byte lengths


def test_keyid() -> None:
    assert keyid_for(A.public_key) == "ed25519:" + A.public_key.hex()
    with pytest.raises(InvalidInput, match="32 bytes"):
        keyid_for(A.public_key[:31])


def test_sign_parse_verify() -> None:
    env = parse_envelope(ENV)
    assert env == ParsedEnvelope(
        payload_type=TYPE,
        payload=PAYLOAD,
        signers=(A.public_key,),
        signatures=(A.sign(pae(TYPE, PAYLOAD)),),
        raw=ENV,
        sha256=hashlib.sha256(ENV).digest(),
    )
    assert env.keyids == (keyid_for(A.public_key),)
    verify_envelope(env)
    # An independent Ed25519 implementation agrees.
    Ed25519PublicKey.from_public_bytes(A.public_key).verify(
        env.signatures[0], pae(TYPE, PAYLOAD)
    )
    # The encoding is exactly the deterministic protobuf one, field by field.
    assert (
        _len_field(1, PAYLOAD)
        + _len_field(2, TYPE.encode())
        + _len_field(
            3, _len_field(1, env.signatures[0]) + _len_field(2, env.keyids[0].encode())
        )
    ) == ENV


def test_several_signers_in_order() -> None:
    env = parse_envelope(sign_envelope(TYPE, PAYLOAD, KEYS[:8]))
    assert env.signers == tuple(k.public_key for k in KEYS[:8])
    verify_envelope(env)


# --- signatures that do not verify ----------------------------------------------------


def test_flipped_bit_in_payload() -> None:
    start = ENV.index(PAYLOAD)
    for i in range(len(PAYLOAD) * 8):
        raw = bytearray(ENV)
        raw[start + i // 8] ^= 1 << (i % 8)
        env = parse_envelope(bytes(raw))
        with pytest.raises(
            VerificationError, match=f"signature by {keyid_for(A.public_key)}"
        ):
            verify_envelope(env)


def test_flipped_bit_in_signature() -> None:
    sig = parse_envelope(ENV).signatures[0]
    start = ENV.index(sig)
    for i in range(64 * 8):
        raw = bytearray(ENV)
        raw[start + i // 8] ^= 1 << (i % 8)
        with pytest.raises(VerificationError, match="does not verify"):
            verify_envelope(parse_envelope(bytes(raw)))


def test_flipped_payload_type() -> None:
    env = parse_envelope(_serialize(payload_type=TYPE + "X", signatures=[_sig(A)]))
    with pytest.raises(VerificationError, match="does not verify"):
        verify_envelope(env)


def test_signature_from_a_different_key() -> None:
    forged = envelope_pb2.Signature(
        sig=B.sign(pae(TYPE, PAYLOAD)), keyid=keyid_for(A.public_key)
    )
    env = parse_envelope(_serialize(signatures=[forged]))
    with pytest.raises(
        VerificationError, match=f"signature by ed25519:{A.public_key.hex()}"
    ):
        verify_envelope(env)


def test_failure_names_the_failing_signer() -> None:
    bad = envelope_pb2.Signature(sig=bytes(64), keyid=keyid_for(B.public_key))
    env = parse_envelope(_serialize(signatures=[_sig(A), bad, _sig(KEYS[2])]))
    with pytest.raises(
        VerificationError, match=f"ed25519:{B.public_key.hex()} does not verify"
    ):
        verify_envelope(env)


def test_verify_fails_closed_without_signatures() -> None:
    env = ParsedEnvelope(
        payload_type=TYPE,
        payload=PAYLOAD,
        signers=(),
        signatures=(),
        raw=b"",
        sha256=b"",
    )
    with pytest.raises(VerificationError, match="no signatures"):
        verify_envelope(env)


# --- malformed envelopes --------------------------------------------------------------

SIG_MSG = _sig(A).SerializeToString(deterministic=True)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        # unknown fields, at the top and inside a signature
        (ENV + _varint(4 << 3) + b"\x01", "canonical"),
        (ENV + _len_field(15, b"x"), "canonical"),
        (ENV + _len_field(1000, b""), "canonical"),
        (
            _len_field(1, PAYLOAD)
            + _len_field(2, TYPE.encode())
            + _len_field(3, SIG_MSG + _varint(3 << 3) + b"\x00"),
            "canonical",
        ),
        # duplicated fields: the parser would keep the last one
        (_len_field(1, b"other") + ENV, "canonical"),
        (ENV + _len_field(2, TYPE.encode()), "canonical"),
        (
            _len_field(1, PAYLOAD)
            + _len_field(2, b"x")
            + ENV[len(_len_field(1, PAYLOAD)) :],
            "canonical",
        ),
        # fields out of order
        (
            _len_field(2, TYPE.encode())
            + _len_field(1, PAYLOAD)
            + _len_field(3, SIG_MSG),
            "canonical",
        ),
        (
            _len_field(1, PAYLOAD)
            + _len_field(2, TYPE.encode())
            + _len_field(
                3,
                _len_field(2, keyid_for(A.public_key).encode())
                + _len_field(1, _sig(A).sig),
            ),
            "canonical",
        ),
        # a length written with a redundant continuation byte
        (b"\x0a" + bytes([len(PAYLOAD) | 0x80, 0x00]) + ENV[2:], "canonical"),
        # a default value written out explicitly
        (ENV + b"\x12\x00", "canonical"),
        # not protobuf at all
        (ENV[:-1], "not a valid protobuf"),
        (b"\xff\xff\xff", "not a valid protobuf"),
        (
            _len_field(1, PAYLOAD)
            + _len_field(2, b"\xff\xfe")
            + _len_field(3, SIG_MSG),
            "not a valid protobuf",
        ),
        (b"", "payload type"),
    ],
)
def test_non_canonical_encodings(data: bytes, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        parse_envelope(data)


@pytest.mark.parametrize(
    "keyid",
    [
        "",
        A.public_key.hex(),
        "ed25519:" + A.public_key.hex().upper(),
        "ED25519:" + A.public_key.hex(),
        "ecdsa:" + A.public_key.hex(),
        "ed25519:" + A.public_key.hex()[:63],
        "ed25519:" + A.public_key.hex() + "0",
        "ed25519: " + A.public_key.hex()[1:],
        "ed25519:" + A.public_key.hex() + "\n",
        "ed25519:" + A.public_key.hex()[:-1] + "g",
        "ed25519:" + A.public_key.hex()[:-1] + "\u0660",
    ],
)
def test_bad_keyids(keyid: str) -> None:
    data = _serialize(signatures=[envelope_pb2.Signature(sig=_sig(A).sig, keyid=keyid)])
    with pytest.raises(InvalidInput, match="keyid"):
        parse_envelope(data)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"payload_type": ""}, "payload type"),
        ({"payload_type": "x" * 129}, "payload type"),
        ({"payload_type": "a b"}, "payload type"),
        ({"payload_type": "é"}, "payload type"),
        ({"payload_type": "a\nb"}, "payload type"),
        ({"payload_type": "a\x7f"}, "payload type"),
        ({"payload": b""}, "payload is empty"),
        ({"signatures": []}, "1 to 8 signatures"),
        ({"signatures": [_sig(k) for k in KEYS]}, "1 to 8 signatures"),
        ({"signatures": [_sig(A), _sig(B), _sig(A)]}, "signed twice"),
        (
            {
                "signatures": [
                    envelope_pb2.Signature(sig=bytes(63), keyid=keyid_for(A.public_key))
                ]
            },
            "64 bytes",
        ),
        (
            {
                "signatures": [
                    envelope_pb2.Signature(sig=bytes(65), keyid=keyid_for(A.public_key))
                ]
            },
            "64 bytes",
        ),
        (
            {"signatures": [envelope_pb2.Signature(keyid=keyid_for(A.public_key))]},
            "64 bytes",
        ),
    ],
)
def test_bad_fields(fields: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        parse_envelope(_serialize(**fields))


def test_longest_payload_type_is_accepted() -> None:
    type_ = "x" * 128
    verify_envelope(parse_envelope(sign_envelope(type_, PAYLOAD, [A])))


def test_size_cap() -> None:
    big = sign_envelope(TYPE, b"x" * (64 * 1024), [A])
    with pytest.raises(InvalidInput, match="larger than 65536 bytes"):
        parse_envelope(big)
    assert parse_envelope(big, max_size=len(big)).payload == b"x" * (64 * 1024)
    with pytest.raises(InvalidInput, match="larger than 100 bytes"):
        parse_envelope(ENV, max_size=100)


def test_wrong_type() -> None:
    with pytest.raises(InvalidInput, match="must be bytes"):
        parse_envelope(ENV.hex())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("", PAYLOAD, [A]), "payload type"),
        (("a b", PAYLOAD, [A]), "payload type"),
        ((TYPE, b"", [A]), "payload must be non-empty"),
        ((TYPE, PAYLOAD, []), "1 to 8"),
        ((TYPE, PAYLOAD, KEYS), "1 to 8"),
        ((TYPE, PAYLOAD, [A, B, A]), "only once"),
    ],
)
def test_sign_preconditions(args: tuple[Any, ...], match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        sign_envelope(*args)


# --- properties -----------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_parse_arbitrary_bytes(data: bytes) -> None:
    try:
        env = parse_envelope(data)
    except InvalidInput:
        return
    assert env.raw == data


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_envelope(data: st.DataObject) -> None:
    original = sign_envelope(TYPE, PAYLOAD, [A, B])
    raw = bytearray(original)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if op == "flip":
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "delete":
            del raw[i]
        else:
            raw.insert(i, data.draw(st.integers(0, 255)))
    try:
        env = parse_envelope(bytes(raw))
    except InvalidInput:
        return
    if bytes(raw) == original:  # the edits cancelled out
        verify_envelope(env)
        return
    with pytest.raises(VerificationError):
        verify_envelope(env)


@settings(max_examples=150, deadline=None)
@given(
    st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=128
    ),
    st.binary(min_size=1, max_size=2000),
    st.lists(st.sampled_from(range(len(KEYS))), min_size=1, max_size=8, unique=True),
)
def test_round_trip(type_: str, payload: bytes, key_indices: list[int]) -> None:
    keys = [KEYS[i] for i in key_indices]
    raw = sign_envelope(type_, payload, keys)
    env = parse_envelope(raw)
    assert (env.payload_type, env.payload, env.raw) == (type_, payload, raw)
    assert env.signers == tuple(k.public_key for k in keys)
    assert env.sha256 == hashlib.sha256(raw).digest()
    verify_envelope(env)
