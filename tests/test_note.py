"""Signed notes, keys and cosignatures: the strict rules and systematic mutations."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import pickle

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from consent_ledger.core.crypto import (
    Ed25519PrivateKey,
    generate_seed,
    verify_signature,
)
from consent_ledger.core.errors import (
    ConsentLedgerError,
    InvalidInput,
    UnknownVerifier,
    VerificationError,
)
from consent_ledger.core.note import (
    MAX_NOTE_SIZE,
    Note,
    NoteSignature,
    Signer,
    Verifier,
    cosign_checkpoint,
    cosignature_key_hash,
    format_signer_key,
    format_verifier_key,
    is_valid_name,
    key_hash,
    open_note,
    parse_signature_line,
    parse_signer_key,
    parse_verifier_key,
    sign_note,
    verify_cosignature,
)

ALICE = Signer(
    name="alice.example", private_key=Ed25519PrivateKey.from_seed(bytes(range(32)))
)
BOB = Signer(
    name="bob.example", private_key=Ed25519PrivateKey.from_seed(bytes(range(1, 33)))
)
TEXT = "hello\nworld\n"
NOTE = sign_note(TEXT, [ALICE])
SIG_LINE = NOTE[len(TEXT) + 1 :].decode("utf-8")


def _line(name: str, raw: bytes) -> str:
    return f"— {name} {base64.b64encode(raw).decode()}\n"


def _alice_raw_sig() -> bytes:
    return base64.b64decode(SIG_LINE.split(" ")[2])


# --- crypto ---------------------------------------------------------------------------


def test_private_key_basics() -> None:
    seed = generate_seed()
    key = Ed25519PrivateKey.from_seed(seed)
    assert len(seed) == 32 and key.seed == seed and len(key.public_key) == 32
    sig = key.sign(b"msg")
    assert len(sig) == 64
    verify_signature(key.public_key, b"msg", sig)
    Ed25519PublicKey.from_public_bytes(key.public_key).verify(
        sig, b"msg"
    )  # independent check
    assert key == Ed25519PrivateKey.from_seed(seed)
    assert hash(key) == hash(Ed25519PrivateKey.from_seed(seed))
    assert seed.hex() not in repr(key) and seed.hex() not in repr(
        Signer(name="n", private_key=key)
    )
    with pytest.raises(AttributeError, match="immutable"):
        key._seed = bytes(32)  # type: ignore[misc]
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(key)


@pytest.mark.parametrize("seed", [b"", bytes(31), bytes(33), "0" * 32])
def test_private_key_rejects_bad_seed(seed: bytes) -> None:
    with pytest.raises(InvalidInput, match="32 bytes"):
        Ed25519PrivateKey.from_seed(seed)


def test_verify_signature_rejects() -> None:
    key = ALICE.private_key
    sig = key.sign(b"msg")
    with pytest.raises(VerificationError, match="does not verify"):
        verify_signature(key.public_key, b"msh", sig)
    with pytest.raises(VerificationError, match="does not verify"):
        verify_signature(BOB.public_key, b"msg", sig)
    with pytest.raises(VerificationError, match="does not verify"):
        verify_signature(key.public_key, b"msg", bytes([sig[0] ^ 1]) + sig[1:])
    with pytest.raises(VerificationError, match="signature is not 64 bytes"):
        verify_signature(key.public_key, b"msg", sig[:63])
    with pytest.raises(VerificationError, match="signature is not 64 bytes"):
        verify_signature(key.public_key, b"msg", sig + b"\0")
    with pytest.raises(VerificationError, match="public key is not 32 bytes"):
        verify_signature(key.public_key[:31], b"msg", sig)


# --- names and keys -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["a", "ledger.example/public", "oid/1.3.6", "naïve", "日本"]
)
def test_valid_names(name: str) -> None:
    assert is_valid_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a b",
        "a+b",
        "a\tb",
        "a\nb",
        "a\u00a0b",
        "a\u0085b",
        "a\u2003b",
        "a\u3000b",
        "a\u2028b",
        "a\ud800b",
    ],
)
def test_invalid_names(name: str) -> None:
    assert not is_valid_name(name)
    with pytest.raises(InvalidInput, match="invalid key name"):
        Verifier.from_public_key(name, ALICE.public_key)
    with pytest.raises(InvalidInput, match="invalid key name"):
        Signer(name=name, private_key=ALICE.private_key)


def test_key_hash_definition() -> None:
    pub = ALICE.public_key
    for alg in (0x01, 0x04):
        digest = hashlib.sha256(b"alice.example\n" + bytes([alg]) + pub).digest()
        assert key_hash("alice.example", pub, alg) == int.from_bytes(digest[:4], "big")
    assert cosignature_key_hash("alice.example", pub) == key_hash(
        "alice.example", pub, 0x04
    )


def test_verifier_rejects_mismatched_hash() -> None:
    v = ALICE.verifier()
    with pytest.raises(InvalidInput, match="key hash does not match"):
        Verifier(name=v.name, key_hash=v.key_hash ^ 1, public_key=v.public_key)
    with pytest.raises(InvalidInput, match="32 bytes"):
        Verifier(name=v.name, key_hash=v.key_hash, public_key=v.public_key[:31])


VKEY = format_verifier_key(ALICE.name, ALICE.public_key)
GO_VKEY = "ledger.example/public+831acec5+AWXzpX1R8xb5qEXK1IsMZibAEHRo0w9wHJyDd1zJOX35"
NAME, HASH16, KEY64 = VKEY.split("+", 2)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", r"name\+hash\+key"),
        (f"{NAME}+{HASH16}", r"name\+hash\+key"),
        (f"{NAME}{HASH16}{KEY64}", r"name\+hash\+key"),
        (f"+{HASH16}+{KEY64}", "invalid key name"),
        (f"bob.example+{HASH16}+{KEY64}", "hash does not match"),
        (GO_VKEY.replace("831acec5", "831ACEC5"), "8 lower-case hex"),
        (f"{NAME}+{HASH16[:7]}+{KEY64}", "8 lower-case hex"),
        (f"{NAME}+0{HASH16}+{KEY64}", "8 lower-case hex"),
        (f"{NAME}+{HASH16}+{KEY64}=", "base64"),
        (f"{NAME}+{HASH16}+{KEY64}\n", "base64"),
        (f"{NAME}+{HASH16}+ {KEY64}", "base64"),
        (f"{NAME}+{HASH16}+{KEY64.replace('+', '-').replace('/', '_')}", "base64"),
        (f"{NAME}+{HASH16}+", "empty"),
        (
            f"{NAME}+{HASH16}+" + base64.b64encode(b"\x02" + ALICE.public_key).decode(),
            "algorithm",
        ),
        (
            f"{NAME}+{HASH16}+"
            + base64.b64encode(b"\x01" + ALICE.public_key[:31]).decode(),
            "not 32 bytes",
        ),
        (
            f"{NAME}+{HASH16}+" + base64.b64encode(b"\x01" + BOB.public_key).decode(),
            "hash does not match",
        ),
    ],
)
def test_parse_verifier_key_rejects(text: str, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        parse_verifier_key(text)


def test_parse_signer_key_rejects() -> None:
    good = format_signer_key(ALICE.name, ALICE.private_key)
    assert parse_signer_key(good) == ALICE
    with pytest.raises(InvalidInput, match=r"PRIVATE\+KEY"):
        parse_signer_key(good.replace("PRIVATE+KEY+", "PUBLIC+KEY+"))
    with pytest.raises(InvalidInput, match=r"PRIVATE\+KEY"):
        parse_signer_key(VKEY)  # a verifier key is not a signer key
    with pytest.raises(InvalidInput, match="hash does not match"):
        parse_signer_key(good.replace(ALICE.name, "mallory.example"))
    seed64 = base64.b64encode(b"\x01" + BOB.private_key.seed).decode()
    with pytest.raises(InvalidInput, match="hash does not match"):
        parse_signer_key(good.rsplit("+", 1)[0] + "+" + seed64)


# --- opening notes --------------------------------------------------------------------


def test_round_trip_two_signers() -> None:
    msg = sign_note(TEXT, [ALICE, BOB])
    note = open_note(msg, [ALICE.verifier(), BOB.verifier()])
    assert note == Note(
        text=TEXT,
        sigs=(
            NoteSignature(
                ALICE.name, ALICE.key_hash, ALICE.private_key.sign(TEXT.encode())
            ),
            NoteSignature(BOB.name, BOB.key_hash, BOB.private_key.sign(TEXT.encode())),
        ),
    )
    only_bob = open_note(msg, [BOB.verifier()])
    assert [s.name for s in only_bob.sigs] == [BOB.name]
    assert [s.name for s in only_bob.unverified_sigs] == [ALICE.name]


@pytest.mark.parametrize(
    "text", ["\n", "a\n\n", "a\n\nb\n", "ü — x\n", "x" * 1000 + "\n"]
)
def test_round_trip_unusual_text(text: str) -> None:
    assert open_note(sign_note(text, [ALICE]), [ALICE.verifier()]).text == text


@pytest.mark.parametrize("bit", range(8 * len(TEXT)))
def test_flipped_bit_in_text(bit: int) -> None:
    msg = bytearray(NOTE)
    msg[bit // 8] ^= 1 << (bit % 8)
    # Either the flip breaks the format, or the signature no longer verifies.
    with pytest.raises((InvalidInput, VerificationError)):
        open_note(bytes(msg), [ALICE.verifier()])


@pytest.mark.parametrize("bit", range(32, 8 * 68))
def test_flipped_bit_in_signature(bit: int) -> None:
    raw = bytearray(_alice_raw_sig())
    raw[bit // 8] ^= 1 << (bit % 8)
    msg = (TEXT + "\n" + _line(ALICE.name, bytes(raw))).encode()
    with pytest.raises(
        VerificationError, match=r"invalid signature for key alice\.example\+"
    ):
        open_note(msg, [ALICE.verifier()])


@pytest.mark.parametrize("bit", range(32))
def test_flipped_bit_in_key_hash(bit: int) -> None:
    raw = bytearray(_alice_raw_sig())
    raw[bit // 8] ^= 1 << (bit % 8)
    msg = (TEXT + "\n" + _line(ALICE.name, bytes(raw))).encode()
    with pytest.raises(UnknownVerifier, match=r"unknown key alice\.example\+") as info:
        open_note(msg, [ALICE.verifier()])
    assert info.value.name == ALICE.name
    assert info.value.key_hash == ALICE.key_hash ^ (1 << (8 * (3 - bit // 8) + bit % 8))


def test_signature_by_unknown_key() -> None:
    with pytest.raises(UnknownVerifier) as info:
        open_note(NOTE, [BOB.verifier()])
    assert (info.value.name, info.value.key_hash) == (ALICE.name, ALICE.key_hash)
    with pytest.raises(UnknownVerifier):
        open_note(NOTE, [])


def test_signature_by_other_key_under_known_name() -> None:
    # Bob's key signs, but the line claims Alice's name and hash.
    raw = ALICE.key_hash.to_bytes(4, "big") + BOB.private_key.sign(TEXT.encode())
    with pytest.raises(VerificationError, match="invalid signature"):
        open_note((TEXT + "\n" + _line(ALICE.name, raw)).encode(), [ALICE.verifier()])


def test_extra_signature_by_unknown_key_is_kept_unverified() -> None:
    msg = NOTE + SIG_LINE.replace(ALICE.name, "carol.example").encode()
    note = open_note(msg, [ALICE.verifier()])
    assert [s.name for s in note.sigs] == [ALICE.name]
    assert [s.name for s in note.unverified_sigs] == ["carol.example"]


def test_repeated_lines_are_dropped_as_go_does() -> None:
    note = open_note(NOTE + SIG_LINE.encode(), [ALICE.verifier()])
    assert len(note.sigs) == 1
    # Go verifies only the first signature by each known key and skips later ones.
    junk = _line(ALICE.name, ALICE.key_hash.to_bytes(4, "big") + bytes(64))
    assert len(open_note(NOTE + junk.encode(), [ALICE.verifier()]).sigs) == 1
    with pytest.raises(VerificationError, match="invalid signature"):
        open_note(
            TEXT.encode() + b"\n" + junk.encode() + SIG_LINE.encode(),
            [ALICE.verifier()],
        )
    other = SIG_LINE.replace(ALICE.name, "carol.example").encode()
    assert len(open_note(NOTE + other + other, [ALICE.verifier()]).unverified_sigs) == 1


def _noncanonical(line: str) -> str:
    # 68 bytes encode with one '=' and two spare bits; setting a spare bit keeps the
    # decoded bytes but changes the text.
    b64 = line.rstrip("\n").split(" ")[2]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = b64[-2]
    bumped = (
        alphabet[alphabet.index(last) | 1] if alphabet.index(last) % 2 == 0 else last
    )
    assert bumped != last
    return line.replace(b64, b64[:-2] + bumped + "=")


@pytest.mark.parametrize(
    ("msg", "match"),
    [
        (TEXT.encode() + SIG_LINE.encode(), "blank line"),  # missing blank line
        (TEXT.encode(), "blank line"),
        (TEXT.encode() + b"\n", "end in a newline"),
        (NOTE + b"garbage", "end in a newline"),
        (NOTE + b"garbage\n", "em dash"),
        (NOTE[:-1], "end in a newline"),
        (NOTE + b"\n", "end in a newline"),  # the last blank line leaves no signatures
        (NOTE.replace("—".encode(), b"--"), "em dash"),
        (NOTE.replace("— ".encode(), "—".encode()), "em dash"),
        (NOTE.replace("— ".encode(), " — ".encode()), "em dash"),
        (NOTE.replace(b"alice.example ", b"alice.example  "), "base64"),
        (NOTE.replace(b"alice.example ", b"alice.example"), "no signature"),
        (NOTE.replace(b"=\n", b"\n"), "base64"),
        (NOTE.replace(b"=\n", b"= \n"), "base64"),
        (_noncanonical(NOTE.decode()).encode(), "canonical base64"),
        ((TEXT + "\n" + _line(ALICE.name, b"\0" * 4)).encode(), "too short"),
        ((TEXT + "\n— a+b AAAAAAA=\n").encode(), "invalid key name"),
        (NOTE.replace(b"hello", b"he\rllo"), "control character"),
        (NOTE.replace(b"hello", b"he\tllo"), "control character"),
        (NOTE.replace(b"hello", b"he\0llo"), "control character"),
        (NOTE.replace(b"\n", b"\r\n"), "control character"),
        (NOTE.replace(b"hello", b"he\xffllo"), "UTF-8"),
        (NOTE.replace(b"hello", b"he\xed\xa0\x80llo"), "UTF-8"),  # encoded surrogate
        (NOTE.replace(b"hello", b"he\xc0\xafllo"), "UTF-8"),  # overlong '/'
        (b"", "blank line"),
        (("x" * MAX_NOTE_SIZE + "\n\n").encode() + SIG_LINE.encode(), "too large"),
    ],
)
def test_malformed_notes(msg: bytes, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        open_note(msg, [ALICE.verifier()])


def test_blank_line_between_signatures_is_rejected() -> None:
    msg = sign_note(TEXT, [ALICE, BOB])
    broken = msg.replace(b"\n\xe2\x80\x94 bob", b"\n\n\xe2\x80\x94 bob")
    assert broken != msg
    # The last blank line now starts the signatures, so Alice's line joins the text.
    with pytest.raises(
        VerificationError, match=r"invalid signature for key bob\.example"
    ):
        open_note(broken, [ALICE.verifier(), BOB.verifier()])


def test_signature_count_limit() -> None:
    others = [
        _line(f"w{i}", (i).to_bytes(4, "big") + bytes(64)).encode() for i in range(100)
    ]
    assert (
        len(open_note(NOTE + b"".join(others[:99]), [ALICE.verifier()]).unverified_sigs)
        == 99
    )
    with pytest.raises(InvalidInput, match="more than 100 signatures"):
        open_note(NOTE + b"".join(others), [ALICE.verifier()])
    # Repeated lines count too: the cap bounds parsing work, not distinct signatures.
    with pytest.raises(InvalidInput, match="more than 100 signatures"):
        open_note(NOTE + SIG_LINE.encode() * 100, [ALICE.verifier()])


def test_largest_note_is_accepted() -> None:
    text = "x" * (MAX_NOTE_SIZE - len(SIG_LINE.encode()) - 2) + "\n"
    msg = sign_note(text, [ALICE])
    assert len(msg) == MAX_NOTE_SIZE
    assert open_note(msg, [ALICE.verifier()]).text == text


def test_ambiguous_verifiers() -> None:
    # Two different keys whose 32-bit hashes collide under one name (a birthday search);
    # a corrupt verifier list must not let either key speak for the name.
    seen: dict[int, bytes] = {}
    i = 0
    while True:
        pub = hashlib.sha256(i.to_bytes(8, "big")).digest()
        h = key_hash("n", pub)
        if h in seen:
            break
        seen[h] = pub
        i += 1
    v1 = Verifier.from_public_key("n", seen[h])
    v2 = Verifier.from_public_key("n", pub)
    msg = (TEXT + "\n" + _line("n", h.to_bytes(4, "big") + bytes(64))).encode()
    with pytest.raises(VerificationError, match=r"ambiguous key n\+"):
        open_note(msg, [v1, v2])
    # The same verifier listed twice is not ambiguous.
    with pytest.raises(VerificationError, match="invalid signature"):
        open_note(msg, [v1, v1])


@pytest.mark.parametrize(
    ("text", "signers", "match"),
    [
        ("no newline", [ALICE], "ending in a newline"),
        ("", [ALICE], "ending in a newline"),
        ("a\rb\n", [ALICE], "control character"),
        ("a\ud800\n", [ALICE], "UTF-8"),
        (TEXT, [], "at least one signer"),
        (TEXT, [ALICE] * 101, "at most 100"),
        ("x" * MAX_NOTE_SIZE + "\n", [ALICE], "too large"),
    ],
)
def test_sign_note_preconditions(text: str, signers: list[Signer], match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        sign_note(text, signers)


# --- cosignatures ---------------------------------------------------------------------

WITNESS = Ed25519PrivateKey.from_seed(bytes([7]) * 32)
BODY = "example.com/log\n5\n" + base64.b64encode(bytes(32)).decode() + "\n"


def test_cosignature_matches_spec() -> None:
    line = cosign_checkpoint(BODY, "witness.example/w1", WITNESS, 1679315147)
    sig = parse_signature_line(line)
    # Rebuild the signed message from the C2SP text with no help from the module.
    message = b"cosignature/v1\ntime 1679315147\n" + BODY.encode()
    hash_ = hashlib.sha256(b"witness.example/w1\n\x04" + WITNESS.public_key).digest()[
        :4
    ]
    raw = base64.b64decode(line.split(" ")[2])
    assert line.startswith("— witness.example/w1 ") and line.endswith("\n")
    assert raw[:4] == hash_ and sig.key_hash == int.from_bytes(hash_, "big")
    assert raw[4:12] == (1679315147).to_bytes(8, "big")
    Ed25519PublicKey.from_public_bytes(WITNESS.public_key).verify(raw[12:], message)
    assert (
        verify_cosignature(BODY, line, "witness.example/w1", WITNESS.public_key)
        == 1679315147
    )
    assert (
        verify_cosignature(BODY, sig, "witness.example/w1", WITNESS.public_key)
        == 1679315147
    )


def test_cosignature_found_in_note() -> None:
    signer = Signer(name="example.com/log", private_key=ALICE.private_key)
    cosig = cosign_checkpoint(BODY, "w", WITNESS, 0)
    note = open_note(sign_note(BODY, [signer]) + cosig.encode(), [signer.verifier()])
    assert len(note.unverified_sigs) == 1
    assert (
        verify_cosignature(note.text, note.unverified_sigs[0], "w", WITNESS.public_key)
        == 0
    )


def test_cosignature_mutations() -> None:
    line = cosign_checkpoint(BODY, "w", WITNESS, 1000)
    with pytest.raises(VerificationError, match="invalid cosignature"):
        verify_cosignature(BODY.replace("5", "6"), line, "w", WITNESS.public_key)
    sig = parse_signature_line(line)
    other_time = NoteSignature(
        "w", sig.key_hash, (1001).to_bytes(8, "big") + sig.signature[8:]
    )
    with pytest.raises(VerificationError, match="invalid cosignature"):
        verify_cosignature(BODY, other_time, "w", WITNESS.public_key)
    with pytest.raises(UnknownVerifier, match=r"unknown key w\+"):
        verify_cosignature(BODY, line, "v", WITNESS.public_key)
    with pytest.raises(UnknownVerifier):
        verify_cosignature(BODY, line, "w", ALICE.public_key)
    # An ordinary (alg 0x01) note signature by the same key is not a cosignature.
    plain = sign_note(BODY, [Signer(name="w", private_key=WITNESS)])[
        len(BODY) + 1 :
    ].decode()
    with pytest.raises(UnknownVerifier):
        verify_cosignature(BODY, plain, "w", WITNESS.public_key)
    short = NoteSignature("w", sig.key_hash, sig.signature[:-1])
    with pytest.raises(InvalidInput, match=r"8 \+ 64"):
        verify_cosignature(BODY, short, "w", WITNESS.public_key)
    huge = NoteSignature(
        "w", sig.key_hash, (2**63).to_bytes(8, "big") + sig.signature[8:]
    )
    with pytest.raises(InvalidInput, match=r"2\*\*63"):
        verify_cosignature(BODY, huge, "w", WITNESS.public_key)
    with pytest.raises(InvalidInput, match="em dash"):
        verify_cosignature(BODY, line[2:], "w", WITNESS.public_key)


@pytest.mark.parametrize("timestamp", [-1, 2**63, True, 1.0])
def test_cosign_rejects_bad_timestamp(timestamp: int) -> None:
    with pytest.raises(InvalidInput, match="timestamp"):
        cosign_checkpoint(BODY, "w", WITNESS, timestamp)


def test_cosign_rejects_bad_body_and_name() -> None:
    with pytest.raises(InvalidInput, match="newline"):
        cosign_checkpoint(BODY[:-1], "w", WITNESS, 1)
    with pytest.raises(InvalidInput, match="invalid key name"):
        cosign_checkpoint(BODY, "a b", WITNESS, 1)


# --- properties -----------------------------------------------------------------------

ERRORS = (InvalidInput, VerificationError)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_open_note_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(ERRORS):
        open_note(data, [ALICE.verifier()])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_open_note_arbitrary_text_with_signature(text: str) -> None:
    with contextlib.suppress(ERRORS):
        open_note(
            text.encode("utf-8", "surrogatepass") + b"\n" + SIG_LINE.encode(),
            [ALICE.verifier()],
        )


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_open_note_mutated(data: st.DataObject) -> None:
    msg = bytearray(sign_note(TEXT, [ALICE, BOB]))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(msg) - 1))
        op = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if op == "flip":
            msg[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "delete":
            del msg[i]
        else:
            msg.insert(i, data.draw(st.integers(0, 255)))
    try:
        note = open_note(bytes(msg), [ALICE.verifier(), BOB.verifier()])
    except ERRORS:
        return
    # Anything accepted still carries a valid signature over its text.
    assert note.sigs
    for s in note.sigs:
        verify_signature(
            {ALICE.name: ALICE.public_key, BOB.name: BOB.public_key}[s.name],
            note.text.encode(),
            s.signature,
        )


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_parse_keys_arbitrary_text(text: str) -> None:
    for parse in (parse_verifier_key, parse_signer_key, parse_signature_line):
        with contextlib.suppress(InvalidInput):
            parse(text)
    for body in (text, text + "\n"):
        with contextlib.suppress(ConsentLedgerError):
            verify_cosignature(body, SIG_LINE, ALICE.name, ALICE.public_key)


@settings(max_examples=100, deadline=None)
@given(
    st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r\t"),
        max_size=100,
    ).filter(lambda t: all(c >= " " or c == "\n" for c in t))
)
def test_sign_open_round_trip(body: str) -> None:
    text = body + "\n"
    assert open_note(sign_note(text, [ALICE]), [ALICE.verifier()]).text == text
