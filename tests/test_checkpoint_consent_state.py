"""The checkpoint's `consent-state <index>` extension line (docs/design.md section 2): formatted and parsed strictly, and a
checkpoint carrying it is still an ordinary C2SP checkpoint that Go's note package signs and opens alike."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from consent_ledger.core.checkpoint import (
    Checkpoint,
    format_checkpoint,
    format_consent_state,
    open_checkpoint,
    parse_checkpoint,
    parse_consent_state,
    sign_checkpoint,
)
from consent_ledger.core.crypto import Ed25519PrivateKey, verify_signature
from consent_ledger.core.errors import InvalidInput
from consent_ledger.core.note import Signer, open_note, parse_verifier_key

VECTORS = json.loads((Path(__file__).parent / "data" / "tlog_vectors.json").read_text(encoding="utf-8"))
NAME = VECTORS["signer_name"]
KEY = Ed25519PrivateKey.from_seed(base64.b64decode(VECTORS["ed25519_seed_b64"]))
ROOT = bytes(range(32))
HEAD = f"{NAME}\n9\n{base64.b64encode(ROOT).decode()}\n"


def test_format_and_parse_round_trip() -> None:
    cp = Checkpoint(NAME, 9, ROOT, (format_consent_state(8),))
    assert format_checkpoint(cp) == HEAD + "consent-state 8\n"
    assert parse_checkpoint(HEAD + "consent-state 8\n") == cp
    assert cp.consent_state == 8
    assert Checkpoint(NAME, 9, ROOT).consent_state is None


def test_other_extension_lines_are_kept_and_ignored() -> None:
    cp = parse_checkpoint(HEAD + "other thing\nconsent-state 3\nconsent-statement 4\n")
    assert cp.consent_state == 3
    assert cp.extensions == ("other thing", "consent-state 3", "consent-statement 4")


@pytest.mark.parametrize(
    "lines,match",
    [
        ("consent-state 03\n", "canonical decimal"),
        ("consent-state +3\n", "canonical decimal"),
        ("consent-state 3 \n", "canonical decimal"),
        ("consent-state  3\n", "canonical decimal"),
        ("consent-state\n", "canonical decimal"),
        ("consent-state \n", "canonical decimal"),
        ("consent-state x\n", "canonical decimal"),
        ("consent-state 99999999999999999999\n", "canonical decimal"),
        ("consent-state 9223372036854775808\n", "out of range"),
        ("consent-state 1\nconsent-state 2\n", "more than one"),
        ("consent-state 1\nconsent-state 1\n", "more than one"),
        ("consent-state 9\n", "not an entry of a tree of size 9"),
    ],
)
def test_malformed_lines_are_refused(lines: str, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        parse_checkpoint(HEAD + lines)


@pytest.mark.parametrize("index", [-1, True, "3", 2**63])
def test_format_refuses_bad_indices(index: object) -> None:
    with pytest.raises(InvalidInput):
        format_consent_state(index)  # type: ignore[arg-type]


def test_parse_consent_state_alone() -> None:
    assert parse_consent_state(()) is None
    assert parse_consent_state(("a b", "consent-state 0")) == 0


def test_a_checkpoint_with_the_line_is_a_go_note() -> None:
    """What Go's note.Sign makes of this body (Ed25519 is deterministic, so the bytes are fixed): the body, a
    blank line, and `— <name> base64(key hash || signature over the body)`; and note.Open accepts it."""
    signer = Signer(NAME, KEY)
    cp = Checkpoint(NAME, 9, ROOT, (format_consent_state(7),))
    body = format_checkpoint(cp).encode()
    key_hash = hashlib.sha256(NAME.encode() + b"\n\x01" + KEY.public_key).digest()[:4]
    sig = KEY.sign(body)
    expected = body + b"\n\xe2\x80\x94 " + NAME.encode() + b" " + base64.b64encode(key_hash + sig) + b"\n"
    note = sign_checkpoint(cp, signer)
    assert note == expected
    verify_signature(KEY.public_key, body, sig)
    verifier = parse_verifier_key(VECTORS["verifier_key"])
    assert open_note(note, [verifier]).text == body.decode()
    assert open_checkpoint(note, verifier) == cp
