"""Log leaves: deterministic encoding, strict parsing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consent_ledger.core.errors import InvalidInput
from consent_ledger.core.leaf import MAX_LEAF_SIZE, LogLeaf, encode_leaf, parse_leaf
from consent_ledger.v1 import envelope_pb2

TIME = 1_700_000_000_123
TYPE = "consent_ledger.v1.ConsentGrant"
DIGEST = bytes(range(32))
LEAF = encode_leaf(TIME, TYPE, DIGEST)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _len_field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


TIME_FIELD = b"\x08" + _varint(TIME)
TYPE_FIELD = _len_field(2, TYPE.encode())
HASH_FIELD = _len_field(3, DIGEST)


def test_encoding_is_the_deterministic_protobuf() -> None:
    assert TIME_FIELD + TYPE_FIELD + HASH_FIELD == LEAF
    msg = envelope_pb2.LogLeaf(
        integrated_time_ms=TIME, payload_type=TYPE, envelope_sha256=DIGEST
    )
    assert LEAF == msg.SerializeToString(deterministic=True)


def test_round_trip() -> None:
    assert parse_leaf(LEAF) == LogLeaf(
        integrated_time_ms=TIME, payload_type=TYPE, envelope_sha256=DIGEST
    )
    assert parse_leaf(bytearray(LEAF)) == parse_leaf(LEAF)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((-1, TYPE, DIGEST), "positive int64"),
        ((0, TYPE, DIGEST), "positive int64"),
        ((2**63, TYPE, DIGEST), "positive int64"),
        ((True, TYPE, DIGEST), "positive int64"),
        ((1.5, TYPE, DIGEST), "positive int64"),
        ((TIME, "", DIGEST), "payload type"),
        ((TIME, "a b", DIGEST), "payload type"),
        ((TIME, TYPE, DIGEST[:31]), "32 bytes"),
        ((TIME, TYPE, DIGEST + b"\0"), "32 bytes"),
        ((TIME, TYPE, DIGEST.hex()), "32 bytes"),
    ],
)
def test_encode_preconditions(args: tuple[Any, ...], match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        encode_leaf(*args)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        # unknown fields
        (LEAF + b"\x20\x01", "canonical"),
        (LEAF + _len_field(9, b"x"), "canonical"),
        # duplicated fields
        (LEAF + TIME_FIELD, "canonical"),
        (TIME_FIELD + LEAF, "canonical"),
        (LEAF + HASH_FIELD, "canonical"),
        (TIME_FIELD + _len_field(2, b"x") + TYPE_FIELD + HASH_FIELD, "canonical"),
        # fields out of order
        (TYPE_FIELD + TIME_FIELD + HASH_FIELD, "canonical"),
        (TIME_FIELD + HASH_FIELD + TYPE_FIELD, "canonical"),
        # redundant varint bytes
        (
            b"\x08"
            + _varint(TIME)[:-1]
            + bytes([_varint(TIME)[-1] | 0x80, 0x00])
            + TYPE_FIELD
            + HASH_FIELD,
            "canonical",
        ),
        (b"\x88\x00" + _varint(TIME) + TYPE_FIELD + HASH_FIELD, "canonical"),
        # default values written out
        (b"\x08\x00" + TYPE_FIELD + HASH_FIELD, "canonical"),
        # missing or bad fields
        (TYPE_FIELD + HASH_FIELD, "positive int64"),
        (
            b"\x08" + _varint(2**64 - 1) + TYPE_FIELD + HASH_FIELD,
            "positive int64",
        ),  # -1
        (TIME_FIELD + HASH_FIELD, "payload type"),
        (TIME_FIELD + _len_field(2, b"a b") + HASH_FIELD, "payload type"),
        (TIME_FIELD + TYPE_FIELD, "32 bytes"),
        (TIME_FIELD + TYPE_FIELD + _len_field(3, DIGEST[:31]), "32 bytes"),
        (TIME_FIELD + TYPE_FIELD + _len_field(3, DIGEST + b"\0"), "32 bytes"),
        # not protobuf
        (LEAF[:-1], "not a valid protobuf"),
        (TIME_FIELD + _len_field(2, b"\xff") + HASH_FIELD, "not a valid protobuf"),
        (b"\x07", "not a valid protobuf"),
        (b"", "positive int64"),
        # size cap
        (TIME_FIELD + _len_field(2, b"x" * 600) + HASH_FIELD, "larger than 512"),
    ],
)
def test_parse_rejects(data: bytes, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        parse_leaf(data)


def test_parse_rejects_non_bytes() -> None:
    with pytest.raises(InvalidInput, match="must be bytes"):
        parse_leaf(LEAF.hex())  # type: ignore[arg-type]


def test_largest_leaf_fits_the_cap() -> None:
    leaf = encode_leaf(2**63 - 1, "x" * 128, DIGEST)
    assert len(leaf) <= MAX_LEAF_SIZE
    assert parse_leaf(leaf).integrated_time_ms == 2**63 - 1


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_parse_arbitrary_bytes(data: bytes) -> None:
    try:
        leaf = parse_leaf(data)
    except InvalidInput:
        return
    assert (
        encode_leaf(leaf.integrated_time_ms, leaf.payload_type, leaf.envelope_sha256)
        == data
    )


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 2**63 - 1),
    st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=128
    ),
    st.binary(min_size=32, max_size=32),
)
def test_property_round_trip(time_ms: int, type_: str, digest: bytes) -> None:
    leaf = parse_leaf(encode_leaf(time_ms, type_, digest))
    assert leaf == LogLeaf(
        integrated_time_ms=time_ms, payload_type=type_, envelope_sha256=digest
    )
