"""Split-view evidence: two checkpoints signed by one log key that cannot both be true, in one self-contained file
that anyone holding the log's verifier key alone can check (DESIGN section 1: a misbehaving operator is caught when
someone holds two signed statements that cannot both be true).

    {"format": "consent-ledger-split-view/v1", "origin": ..., "smaller_note": <note text>,
     "larger_note": <note text>, "proof": [hex hashes]}

written as ``json.dumps(sort_keys=True, indent=2) + "\\n"``. Equal sizes: an empty proof, two different roots.
Different sizes: the consistency proof from the smaller size to the larger that the log served. It proves the split
when it implies the larger checkpoint's root (so, the hashes being collision resistant, it shows that tree's root at
the smaller size) and that root differs from the smaller checkpoint's. When the smaller size is a power of two a
consistency proof holds no hash of the smaller tree (RFC 9162 seeds it with the smaller root), so it cannot prove a
split: such a file is refused as not proving one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from consent_ledger.core.checkpoint import Checkpoint, open_checkpoint
from consent_ledger.core.errors import InvalidInput, VerificationError
from consent_ledger.core.merkle import roots_from_consistency_proof
from consent_ledger.core.note import MAX_NOTE_SIZE, Verifier

__all__ = [
    "SPLIT_VIEW_FORMAT",
    "SplitView",
    "format_split_view",
    "parse_split_view",
    "verify_split_view",
]

SPLIT_VIEW_FORMAT = "consent-ledger-split-view/v1"
_MAX_PROOF = 64  # hashes: a consistency proof of a tree of 2**63 leaves holds fewer
_MAX_FILE = 4 * MAX_NOTE_SIZE


@dataclass(frozen=True)
class SplitView:
    """Claimed evidence of a split view; `verify_split_view` says whether it proves one."""

    origin: str
    smaller_note: bytes
    larger_note: bytes
    proof: tuple[bytes, ...]


def _origin_of(note: bytes) -> str:
    text = note.decode("utf-8", "replace")
    return text.split("\n", 1)[0]


def format_split_view(smaller_note: bytes, larger_note: bytes, proof: list[bytes]) -> bytes:
    """The evidence file for two signed checkpoints (the smaller size first) and the proof between them."""
    try:
        smaller, larger = bytes(smaller_note).decode("utf-8"), bytes(larger_note).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("split view: a note is not UTF-8") from None
    doc = {
        "format": SPLIT_VIEW_FORMAT,
        "origin": _origin_of(bytes(smaller_note)),
        "smaller_note": smaller,
        "larger_note": larger,
        "proof": [bytes(h).hex() for h in proof],
    }
    return (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode("utf-8")


def parse_split_view(data: bytes) -> SplitView:
    """Parse an evidence file, accepting only the canonical form `format_split_view` writes. Raises InvalidInput."""
    if not isinstance(data, (bytes, bytearray)) or len(data) > _MAX_FILE:
        raise InvalidInput("split view: not bytes, or too large")
    try:
        doc = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidInput("split view: not JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"format", "origin", "smaller_note", "larger_note", "proof"}:
        raise InvalidInput("split view: not the five fields format, origin, smaller_note, larger_note, proof")
    if doc["format"] != SPLIT_VIEW_FORMAT:
        raise InvalidInput(f"split view: format is not {SPLIT_VIEW_FORMAT}")
    origin, smaller, larger, proof = doc["origin"], doc["smaller_note"], doc["larger_note"], doc["proof"]
    if not all(isinstance(x, str) for x in (origin, smaller, larger)):
        raise InvalidInput("split view: origin and notes must be strings")
    if not isinstance(proof, list) or len(proof) > _MAX_PROOF or not all(isinstance(h, str) for h in proof):
        raise InvalidInput(f"split view: proof must be a list of at most {_MAX_PROOF} hex hashes")
    try:
        hashes = tuple(bytes.fromhex(h) for h in proof)
    except ValueError:
        raise InvalidInput("split view: a proof hash is not hex") from None
    sv = SplitView(origin, smaller.encode("utf-8"), larger.encode("utf-8"), hashes)
    if format_split_view(sv.smaller_note, sv.larger_note, list(sv.proof)) != bytes(data):
        raise InvalidInput("split view: not in canonical form")
    return sv


def _open(note: bytes, verifier: Verifier, what: str) -> Checkpoint:
    try:
        return open_checkpoint(note, verifier)
    except InvalidInput as e:
        raise VerificationError(f"the {what} checkpoint is malformed: {e}") from e
    except VerificationError as e:
        raise VerificationError(f"the {what} checkpoint is not signed by the log key: {e}") from e


def verify_split_view(sv: SplitView, log_verifier: Verifier) -> None:
    """Return when ``sv`` proves, with the log's verifier key alone, that the log signed two checkpoints that
    cannot both be true. Raises VerificationError (saying why) when it does not prove it."""
    smaller = _open(sv.smaller_note, log_verifier, "smaller")
    larger = _open(sv.larger_note, log_verifier, "larger")
    if sv.origin != log_verifier.name or smaller.origin != sv.origin or larger.origin != sv.origin:
        raise VerificationError("the evidence names another log than the verifier key's")
    if smaller.size > larger.size:
        raise VerificationError("the smaller note is the larger tree")
    if smaller.size == larger.size:
        if sv.proof:
            raise VerificationError("two checkpoints of one size need no proof")
        if smaller.root_hash == larger.root_hash:
            raise VerificationError(f"both checkpoints have the same root at size {smaller.size}: no split view")
        return
    if smaller.size == 0:
        raise VerificationError("every tree extends the empty tree: no split view")
    if smaller.size & (smaller.size - 1) == 0:
        raise VerificationError(
            f"a consistency proof from size {smaller.size} (a power of two) holds no hash of the smaller tree: "
            "it cannot prove a split view"
        )
    fr, sr = roots_from_consistency_proof(smaller.size, larger.size, smaller.root_hash, list(sv.proof))
    if sr != larger.root_hash:
        raise VerificationError("the proof does not lead to the larger checkpoint's root: it proves nothing")
    if fr == smaller.root_hash:
        raise VerificationError("the proof shows the checkpoints are consistent: no split view")


def split_view_of(smaller_note: bytes, larger_note: bytes, proof: Sequence[bytes]) -> SplitView:
    """The SplitView of two notes and a proof (what `parse_split_view` returns for their file)."""
    return parse_split_view(format_split_view(smaller_note, larger_note, list(proof)))
