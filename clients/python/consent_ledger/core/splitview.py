"""Split-view evidence files: two signed checkpoints of one log that cannot both be true.

One self-contained JSON document, canonical (``json.dumps(sort_keys=True, indent=2) + "\\n"``):

    {"format": "consent-ledger-split-view/v1", "origin": <origin line of the notes>,
     "smaller_note": <note text>, "larger_note": <note text>, "proof": [<hex hash>, ...]}

For two checkpoints of the same size with different roots the proof is empty; otherwise it is the
consistency proof from the smaller to the larger one that fails. This module only formats and parses;
`consent-ledger verify-evidence` checks the signatures and the proof.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from consent_ledger.core.errors import InvalidInput

__all__ = ["SPLIT_VIEW_FORMAT", "SplitView", "format_split_view", "parse_split_view"]

SPLIT_VIEW_FORMAT = "consent-ledger-split-view/v1"
_MAX_EVIDENCE_SIZE = 4_000_000
_MAX_PROOF = 64


@dataclass(frozen=True)
class SplitView:
    """Parsed evidence: the origin, both signed notes as bytes and the proof hashes."""

    origin: str
    smaller_note: bytes
    larger_note: bytes
    proof: tuple[bytes, ...]


def _origin(note: bytes) -> str:
    try:
        text = note.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("split-view note is not valid UTF-8") from None
    origin, sep, _ = text.partition("\n")
    if not sep or not origin:
        raise InvalidInput("split-view note has no origin line")
    return origin


def format_split_view(smaller_note: bytes, larger_note: bytes, proof: list[bytes]) -> bytes:
    """The canonical evidence file for two signed notes of one origin and the proof between them."""
    origin = _origin(smaller_note)
    if _origin(larger_note) != origin:
        raise InvalidInput("split-view notes name different origins")
    if len(proof) > _MAX_PROOF or any(not isinstance(h, bytes) or len(h) != 32 for h in proof):
        raise InvalidInput("split-view proof must be at most 64 hashes of 32 bytes")
    doc = {
        "format": SPLIT_VIEW_FORMAT,
        "origin": origin,
        "smaller_note": smaller_note.decode("utf-8"),
        "larger_note": larger_note.decode("utf-8"),
        "proof": [h.hex() for h in proof],
    }
    return (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode("utf-8")


def parse_split_view(data: bytes) -> SplitView:
    """Parse an evidence file, accepting only the canonical form `format_split_view` writes. Raises InvalidInput."""
    if not isinstance(data, bytes) or len(data) > _MAX_EVIDENCE_SIZE:
        raise InvalidInput("split-view evidence must be bytes of at most 4 MB")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("split-view evidence is not JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"format", "origin", "smaller_note", "larger_note", "proof"}:
        raise InvalidInput("split-view evidence must have exactly format, origin, smaller_note, larger_note, proof")
    if doc["format"] != SPLIT_VIEW_FORMAT:
        raise InvalidInput(f"split-view evidence format is not {SPLIT_VIEW_FORMAT}")
    if not all(isinstance(doc[k], str) for k in ("origin", "smaller_note", "larger_note")):
        raise InvalidInput("split-view origin and notes must be text")
    if not isinstance(doc["proof"], list) or not all(isinstance(h, str) for h in doc["proof"]):
        raise InvalidInput("split-view proof must be a list of hex strings")
    try:
        proof = [bytes.fromhex(h) for h in doc["proof"]]
    except ValueError:
        raise InvalidInput("split-view proof hash is not hex") from None
    smaller, larger = doc["smaller_note"].encode("utf-8"), doc["larger_note"].encode("utf-8")
    if format_split_view(smaller, larger, proof) != data:
        raise InvalidInput("split-view evidence is not in canonical form")
    return SplitView(origin=doc["origin"], smaller_note=smaller, larger_note=larger, proof=tuple(proof))
