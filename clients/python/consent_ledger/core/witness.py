"""C2SP tlog-witness (https://c2sp.org/tlog-witness): the add-checkpoint request and the witness's rule.

Request body: ``old <size>\\n``, at most 63 lines of base64 consistency-proof hashes, an empty line, then the
signed checkpoint note. `format_add_checkpoint` and `parse_add_checkpoint` are the verb pair. `witness_decision`
is the whole rule a witness applies (docs/design.md section 2), as a pure function of the request, the log's trusted
verifier keys and what the witness last cosigned; the caller persists the new state atomically with the check of
the old size and signs only after that.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

from consent_ledger.core.checkpoint import Checkpoint, parse_checkpoint
from consent_ledger.core.errors import InvalidInput, VerificationError
from consent_ledger.core.merkle import verify_consistency
from consent_ledger.core.crypto import PUBLIC_KEY_SIZE
from consent_ledger.core.note import (
    ALG_COSIGNATURE_V1,
    NoteSignature,
    Verifier,
    cosignature_key_hash,
    is_valid_name,
    open_note,
    verify_cosignature,
)

__all__ = [
    "MAX_PROOF_LINES",
    "SIZE_CONTENT_TYPE",
    "AddCheckpoint",
    "Accept",
    "Reject",
    "WitnessKey",
    "Witnessed",
    "format_add_checkpoint",
    "format_witness_key",
    "parse_add_checkpoint",
    "parse_witness_key",
    "request_origin",
    "witness_decision",
]

MAX_PROOF_LINES = 63
SIZE_CONTENT_TYPE = "text/x.tlog.size"
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")


@dataclass(frozen=True)
class AddCheckpoint:
    """A parsed add-checkpoint request."""

    old_size: int
    proof: tuple[bytes, ...]
    note: bytes


def format_add_checkpoint(old_size: int, proof: Sequence[bytes], note: bytes) -> bytes:
    """The request body for ``POST <prefix>/add-checkpoint``."""
    if type(old_size) is not int or not 0 <= old_size < 2**63:
        raise InvalidInput("old size must be an integer in [0, 2**63)")
    if len(proof) > MAX_PROOF_LINES or any(len(h) != 32 for h in proof):
        raise InvalidInput(f"a consistency proof has at most {MAX_PROOF_LINES} hashes of 32 bytes")
    lines = [f"old {old_size}\n", *(base64.b64encode(h).decode("ascii") + "\n" for h in proof), "\n"]
    return "".join(lines).encode("ascii") + note


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Parse a request body strictly. Raises InvalidInput (the witness answers 400)."""
    if not isinstance(body, bytes):
        raise InvalidInput("request body must be bytes")
    head, sep, note = body.partition(b"\n\n")
    if not sep:
        raise InvalidInput("request has no empty line before the checkpoint")
    try:
        lines = head.decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise InvalidInput("request header is not ASCII") from None
    first = lines[0]
    if not first.startswith("old ") or not _DECIMAL.fullmatch(first[4:]):
        raise InvalidInput("request does not start with 'old <size>'")
    old_size = int(first[4:])
    if old_size >= 2**63:
        raise InvalidInput("old size is out of range")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise InvalidInput(f"more than {MAX_PROOF_LINES} proof lines")
    proof: list[bytes] = []
    for line in lines[1:]:
        try:
            h = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("proof line is not base64") from None
        if len(h) != 32 or base64.b64encode(h).decode("ascii") != line:
            raise InvalidInput("proof line is not a canonical 32-byte hash")
        proof.append(h)
    return AddCheckpoint(old_size=old_size, proof=tuple(proof), note=note)


@dataclass(frozen=True)
class Witnessed:
    """What a witness last cosigned for an origin: the size, root hash and signed note (as received)."""

    origin: str
    size: int
    root_hash: bytes
    note: bytes


@dataclass(frozen=True)
class Accept:
    """Cosign ``checkpoint`` (its body ``body``) and store it as the origin's latest, if the stored size is still
    ``old_size``."""

    checkpoint: Checkpoint
    body: str


@dataclass(frozen=True)
class Reject:
    """Answer ``status`` with ``body`` (content type ``content_type``). ``conflict`` holds a stored note that
    cannot be true together with the request's note (a split view), with the proof between them."""

    status: int
    reason: str
    body: bytes = b""
    content_type: str = "text/plain"
    split_view: tuple[bytes, bytes, tuple[bytes, ...]] | None = None


def _size_conflict(last_size: int) -> Reject:
    return Reject(409, "old size is not the size last cosigned", f"{last_size}\n".encode("ascii"), SIZE_CONTENT_TYPE)


def witness_decision(
    body: bytes,
    known_origins: dict[str, Sequence[Verifier]],
    last: Witnessed | None,
) -> Accept | Reject:
    """What a witness answers to an add-checkpoint body.

    ``known_origins`` maps each configured origin to its trusted verifier keys; ``last`` is (size, root hash,
    signed note) of what the witness last cosigned for the request's origin, None if nothing. The caller looks
    ``last`` up by `request_origin` and must re-check it atomically when it persists an Accept.
    """
    try:
        req = parse_add_checkpoint(body)
        origin = request_origin(req.note)
    except InvalidInput as e:
        return Reject(400, str(e))
    verifiers = known_origins.get(origin)
    if verifiers is None:
        return Reject(404, f"unknown origin {origin!r}")
    try:
        opened = open_note(req.note, verifiers)
    except InvalidInput as e:
        return Reject(400, str(e))
    except VerificationError:
        return Reject(403, "no trusted signature verifies")
    try:
        cp = parse_checkpoint(opened.text)
    except InvalidInput as e:
        return Reject(400, str(e))
    if cp.origin != origin:
        return Reject(400, "checkpoint origin line is malformed")
    if req.old_size > cp.size:
        return Reject(400, "old size is larger than the checkpoint's size")
    last_size, last_root, last_note = (last.size, last.root_hash, last.note) if last is not None else (0, b"", b"")
    if req.old_size != last_size:
        return _size_conflict(last_size)
    if last is not None and cp.size == last_size:
        if cp.root_hash != last_root:
            return Reject(409, "same size, another root", split_view=(last_note, req.note, ()))
        return Accept(cp, opened.text)
    if last_size == 0:
        # Old size 0: the empty tree is consistent with every tree; the proof must be empty.
        if req.proof:
            return Reject(422, "a proof from size 0 must be empty")
        return Accept(cp, opened.text)
    try:
        verify_consistency(last_size, cp.size, last_root, cp.root_hash, req.proof)
    except (VerificationError, InvalidInput):
        return Reject(422, "consistency proof does not verify", split_view=(last_note, req.note, req.proof))
    return Accept(cp, opened.text)


def request_origin(note: bytes) -> str:
    """The origin line of a note, before any signature is checked (to look up the trusted keys)."""
    first, sep, _ = note.partition(b"\n")
    if not sep or not first:
        raise InvalidInput("checkpoint has no origin line")
    try:
        return first.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("checkpoint origin is not UTF-8") from None


# --- witness verifier keys: "<name>+<8 hex key hash>+<base64(0x04 || public key)>" (C2SP tlog-cosignature) ----


@dataclass(frozen=True)
class WitnessKey:
    """A witness's cosignature/v1 verifier key."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        if not is_valid_name(self.name):
            raise InvalidInput(f"invalid witness name {self.name!r}")
        if not isinstance(self.public_key, bytes) or len(self.public_key) != PUBLIC_KEY_SIZE:
            raise InvalidInput("a witness public key must be 32 bytes")

    @property
    def key_hash(self) -> int:
        return cosignature_key_hash(self.name, self.public_key)

    def verify(self, body: str, sig: NoteSignature) -> int:
        """The timestamp of this witness's cosignature ``sig`` over checkpoint ``body``; raises if it fails."""
        return verify_cosignature(body, sig, self.name, self.public_key)

    def __str__(self) -> str:
        return format_witness_key(self)


def format_witness_key(key: WitnessKey) -> str:
    raw = bytes([ALG_COSIGNATURE_V1]) + key.public_key
    return f"{key.name}+{key.key_hash:08x}+{base64.b64encode(raw).decode('ascii')}"


def parse_witness_key(text: str) -> WitnessKey:
    """Parse a witness verifier key, only in the canonical form `format_witness_key` writes. Raises InvalidInput."""
    if not isinstance(text, str):
        raise InvalidInput("witness key must be text")
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise InvalidInput("witness key is not name+hash+key")
    name, hash_hex, key64 = parts
    try:
        raw = base64.b64decode(key64, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("witness key is not base64") from None
    if len(raw) != 1 + PUBLIC_KEY_SIZE or raw[0] != ALG_COSIGNATURE_V1:
        raise InvalidInput("witness key is not a cosignature/v1 (0x04) Ed25519 key")
    key = WitnessKey(name, raw[1:])
    if format_witness_key(key) != text or f"{key.key_hash:08x}" != hash_hex:
        raise InvalidInput("witness key is not canonical or its hash does not match")
    return key
