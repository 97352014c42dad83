"""Checkpoint bodies: canonical form only, and signed checkpoints."""

from __future__ import annotations

import base64
import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consent_ledger.core.checkpoint import (
    MAX_CHECKPOINT_SIZE,
    MAX_EXTENSION_LINES,
    Checkpoint,
    format_checkpoint,
    open_checkpoint,
    parse_checkpoint,
    sign_checkpoint,
)
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.errors import InvalidInput, UnknownVerifier, VerificationError
from consent_ledger.core.note import Signer, cosign_checkpoint, open_note, sign_note

ROOT = bytes(range(32))
ROOT64 = base64.b64encode(ROOT).decode()
ORIGIN = "ledger.example/public"
CP = Checkpoint(origin=ORIGIN, size=7, root_hash=ROOT)
TEXT = f"{ORIGIN}\n7\n{ROOT64}\n"
LOG = Signer(name=ORIGIN, private_key=Ed25519PrivateKey.from_seed(bytes([1]) * 32))
OTHER = Signer(name=ORIGIN, private_key=Ed25519PrivateKey.from_seed(bytes([2]) * 32))


def test_format() -> None:
    assert format_checkpoint(CP) == TEXT
    cp = Checkpoint(
        origin=ORIGIN, size=0, root_hash=ROOT, extensions=("ext one", "— x")
    )
    assert format_checkpoint(cp) == f"{ORIGIN}\n0\n{ROOT64}\next one\n— x\n"


@pytest.mark.parametrize(
    "cp",
    [
        CP,
        Checkpoint(origin="o", size=0, root_hash=bytes(32)),
        Checkpoint(origin="o p", size=2**63 - 1, root_hash=b"\xff" * 32),
        Checkpoint(
            origin="日本",
            size=1,
            root_hash=ROOT,
            extensions=("a",) * MAX_EXTENSION_LINES,
        ),
    ],
)
def test_round_trip(cp: Checkpoint) -> None:
    assert parse_checkpoint(format_checkpoint(cp)) == cp


@pytest.mark.parametrize(
    "size",
    [
        "+5",
        "05",
        "00",
        " 5",
        "5 ",
        "-5",
        "-0",
        "5_0",
        "0x5",
        "5.0",
        "",
        "\u0665",
        "\uff15",
        "9223372036854775808",
        "99999999999999999999",
    ],
)
def test_non_canonical_size(size: str) -> None:
    with pytest.raises(InvalidInput, match="size"):
        parse_checkpoint(f"{ORIGIN}\n{size}\n{ROOT64}\n")


def test_size_bounds() -> None:
    assert parse_checkpoint(f"{ORIGIN}\n0\n{ROOT64}\n").size == 0
    assert (
        parse_checkpoint(f"{ORIGIN}\n9223372036854775807\n{ROOT64}\n").size == 2**63 - 1
    )


def _spare_bit_root() -> str:
    # 32 bytes encode with one '=' and two spare bits: set one, the bytes stay the same.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    i = alphabet.index(ROOT64[-2])
    assert i % 4 == 0
    return ROOT64[:-2] + alphabet[i + 1] + "="


@pytest.mark.parametrize(
    ("root", "match"),
    [
        (_spare_bit_root(), "canonical base64"),
        (ROOT64.rstrip("="), "base64"),
        (ROOT64 + "=", "base64"),
        (ROOT64 + "AAAA", "base64"),  # data after padding
        (" " + ROOT64, "base64"),
        ("-_" + ROOT64[2:], "base64"),  # URL-safe alphabet
        (base64.b64encode(ROOT[:31]).decode(), "32 bytes"),
        (base64.b64encode(ROOT + b"\0").decode(), "32 bytes"),
        ("", "32 bytes"),
        ("é" * 44, "base64"),
    ],
)
def test_bad_root(root: str, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        parse_checkpoint(f"{ORIGIN}\n7\n{root}\n")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "end in a newline"),
        (TEXT[:-1], "end in a newline"),
        (TEXT + "trailing", "end in a newline"),
        (f"{ORIGIN}\n7\n", "needs origin, size and root"),
        ("\n", "needs origin, size and root"),
        (f"\n7\n{ROOT64}\n", "origin must be a non-empty line"),
        (TEXT + "\n", "extension line must be a non-empty line"),
        (TEXT + "a\n\nb\n", "extension line must be a non-empty line"),
        (TEXT + "a\n" * (MAX_EXTENSION_LINES + 1), "more than 16 extension lines"),
        (TEXT + "a" * MAX_CHECKPOINT_SIZE + "\n", "larger than 4096"),
        (TEXT.replace("\n", "\r\n"), "size|control"),
        ("o\x00\n7\n" + ROOT64 + "\n", "control character"),
        (TEXT + "a\tb\n", "control character"),
        ("\ud800\n7\n" + ROOT64 + "\n", "UTF-8"),
    ],
)
def test_malformed(text: str, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        parse_checkpoint(text)


def test_size_cap_counts_utf8_bytes() -> None:
    line = "é" * 1000  # 2000 bytes of UTF-8
    with pytest.raises(InvalidInput, match="larger than 4096"):
        parse_checkpoint(TEXT + f"{line}\n{line}\n{line}\n")
    big = Checkpoint(origin=ORIGIN, size=1, root_hash=ROOT, extensions=(line, line))
    assert parse_checkpoint(format_checkpoint(big)) == big


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"origin": ""}, "origin"),
        ({"origin": "a\nb"}, "origin"),
        ({"size": -1}, "size"),
        ({"size": 2**63}, "size"),
        ({"size": True}, "size"),
        ({"size": 7.0}, "size"),
        ({"root_hash": ROOT[:31]}, "32 bytes"),
        ({"root_hash": ROOT64}, "32 bytes"),
        ({"extensions": ["a"]}, "tuple"),
        ({"extensions": ("",)}, "extension"),
        ({"extensions": ("a\nb",)}, "extension"),
        ({"extensions": ("a",) * 17}, "more than 16"),
    ],
)
def test_constructor_validates(fields: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"origin": ORIGIN, "size": 7, "root_hash": ROOT, **fields}
    with pytest.raises(InvalidInput, match=match):
        Checkpoint(**args)


# --- signed checkpoints ---------------------------------------------------------------

NOTE = sign_checkpoint(CP, LOG)


def test_sign_and_open() -> None:
    assert NOTE.startswith(TEXT.encode() + b"\n\xe2\x80\x94 " + ORIGIN.encode() + b" ")
    assert open_checkpoint(NOTE, LOG.verifier()) == CP


def test_open_ignores_cosignatures() -> None:
    cosig = cosign_checkpoint(TEXT, "witness", OTHER.private_key, 1_700_000_000)
    assert open_checkpoint(NOTE + cosig.encode(), LOG.verifier()) == CP


def test_sign_requires_origin_equal_to_key_name() -> None:
    with pytest.raises(InvalidInput, match="origin must equal"):
        sign_checkpoint(CP, Signer(name="other.example", private_key=LOG.private_key))


def test_open_rejects_origin_other_than_key_name() -> None:
    # A note by the log's key whose body claims to be another log.
    other = Signer(name="other.example", private_key=LOG.private_key)
    note = sign_note(TEXT, [other])
    assert open_note(note, [other.verifier()]).text == TEXT
    with pytest.raises(VerificationError, match="origin does not match"):
        open_checkpoint(note, other.verifier())


def test_open_wrong_key() -> None:
    with pytest.raises(UnknownVerifier) as info:
        open_checkpoint(NOTE, OTHER.verifier())
    assert info.value.name == ORIGIN and info.value.key_hash == LOG.key_hash


@pytest.mark.parametrize("bit", range(8 * len(TEXT)))
def test_open_flipped_bit_in_body(bit: int) -> None:
    msg = bytearray(NOTE)
    msg[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises((InvalidInput, VerificationError)):
        open_checkpoint(bytes(msg), LOG.verifier())


def test_open_signed_malformed_body() -> None:
    # A valid signature does not make a malformed body acceptable.
    note = sign_note(f"{ORIGIN}\n+7\n{ROOT64}\n", [LOG])
    with pytest.raises(InvalidInput, match="canonical decimal"):
        open_checkpoint(note, LOG.verifier())


# --- properties -----------------------------------------------------------------------

_line = st.text(
    st.characters(blacklist_categories=("Cs",), min_codepoint=0x20),
    min_size=1,
    max_size=40,
)


@st.composite
def checkpoints(draw: st.DrawFn) -> Checkpoint:
    return Checkpoint(
        origin=draw(_line),
        size=draw(st.integers(0, 2**63 - 1)),
        root_hash=draw(st.binary(min_size=32, max_size=32)),
        extensions=tuple(draw(st.lists(_line, max_size=MAX_EXTENSION_LINES))),
    )


@settings(max_examples=300, deadline=None)
@given(checkpoints())
def test_format_parse_round_trip(cp: Checkpoint) -> None:
    text = format_checkpoint(cp)
    assert parse_checkpoint(text) == cp
    assert format_checkpoint(parse_checkpoint(text)) == text


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
def test_parse_arbitrary_text(text: str) -> None:
    try:
        cp = parse_checkpoint(text)
    except InvalidInput:
        return
    assert format_checkpoint(cp) == text  # whatever is accepted is canonical


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["o", "\n", "7", "07", "+", ROOT64, ROOT64[:-1], " ", "=", "é"]
        ),
        max_size=12,
    )
)
def test_parse_near_miss_text(parts: list[str]) -> None:
    text = "".join(parts)
    try:
        cp = parse_checkpoint(text)
    except InvalidInput:
        return
    assert format_checkpoint(cp) == text


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_open_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(InvalidInput, VerificationError):
        open_checkpoint(data, LOG.verifier())
