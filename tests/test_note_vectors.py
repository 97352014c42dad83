"""Signed notes and checkpoints against vectors made by Go's golang.org/x/mod/sumdb/note."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from consent_ledger.core.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.note import (
    Signer,
    format_signer_key,
    format_verifier_key,
    key_hash,
    open_note,
    parse_signer_key,
    parse_verifier_key,
    sign_note,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "tlog_vectors.json").read_text(encoding="utf-8")
)
NAME: str = VECTORS["signer_name"]
KEY = Ed25519PrivateKey.from_seed(base64.b64decode(VECTORS["ed25519_seed_b64"]))
CHECKPOINTS = VECTORS["checkpoints"]


def _checkpoint(size: int) -> Checkpoint:
    root = base64.b64decode(VECTORS["roots_b64"][size - 1])
    return Checkpoint(origin=NAME, size=size, root_hash=root)


def test_verifier_key_from_seed_matches_go() -> None:
    assert format_verifier_key(NAME, KEY.public_key) == VECTORS["verifier_key"]


def test_parsed_verifier_key_matches_seed() -> None:
    v = parse_verifier_key(VECTORS["verifier_key"])
    assert v.name == NAME
    assert v.public_key == KEY.public_key
    assert v.key_hash == key_hash(NAME, KEY.public_key)
    assert f"{v.key_hash:08x}" == VECTORS["verifier_key"].split("+")[1]


def test_signer_key_round_trip() -> None:
    text = format_signer_key(NAME, KEY)
    assert text.startswith(
        f"PRIVATE+KEY+{NAME}+{VECTORS['verifier_key'].split('+')[1]}+"
    )
    assert parse_signer_key(text) == Signer(name=NAME, private_key=KEY)


@pytest.mark.parametrize("vector", CHECKPOINTS, ids=lambda v: f"size{v['size']}")
def test_signing_reproduces_go_note(vector: dict[str, Any]) -> None:
    signer = Signer(name=NAME, private_key=KEY)
    assert sign_checkpoint(_checkpoint(vector["size"]), signer) == vector[
        "note"
    ].encode("utf-8")


@pytest.mark.parametrize("vector", CHECKPOINTS, ids=lambda v: f"size{v['size']}")
def test_open_checkpoint_accepts_go_note(vector: dict[str, Any]) -> None:
    verifier = parse_verifier_key(VECTORS["verifier_key"])
    assert open_checkpoint(vector["note"].encode("utf-8"), verifier) == _checkpoint(
        vector["size"]
    )


# The example in the documentation of Go's sumdb/note package.
GO_DOC_SIGNER_KEY = (
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
)
GO_DOC_VERIFIER_KEY = (
    "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
)
GO_DOC_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_DOC_NOTE = (
    GO_DOC_TEXT + "\n"
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
).encode("utf-8")


def test_go_documentation_example() -> None:
    signer = parse_signer_key(GO_DOC_SIGNER_KEY)
    verifier = parse_verifier_key(GO_DOC_VERIFIER_KEY)
    assert signer.verifier() == verifier
    assert format_signer_key(signer.name, signer.private_key) == GO_DOC_SIGNER_KEY
    assert (
        format_verifier_key(verifier.name, verifier.public_key) == GO_DOC_VERIFIER_KEY
    )
    assert sign_note(GO_DOC_TEXT, [signer]) == GO_DOC_NOTE
    note = open_note(GO_DOC_NOTE, [verifier])
    assert note.text == GO_DOC_TEXT
    assert [(s.name, s.key_hash) for s in note.sigs] == [("PeterNeumann", 0xC74F20A3)]
    assert note.unverified_sigs == ()
