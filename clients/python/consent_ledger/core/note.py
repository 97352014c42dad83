"""C2SP signed notes (https://c2sp.org/signed-note) and tlog-cosignature/v1.

Byte-for-byte compatible with Go's golang.org/x/mod/sumdb/note. A signed note is

    <text ending in a newline>
    <blank line>
    — <key name> <base64(4-byte big-endian key hash || signature)>   (one or more)

with an em dash (U+2014). Parsing is as strict as Go's `note.Open` and stricter in one
way: base64 and hex must be in canonical form (this is what we emit), so each note has
exactly one encoding.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from consent_ledger.core.crypto import (
    PUBLIC_KEY_SIZE,
    SEED_SIZE,
    SIGNATURE_SIZE,
    Ed25519PrivateKey,
    verify_signature,
)
from consent_ledger.core.errors import InvalidInput, UnknownVerifier, VerificationError

__all__ = [
    "ALG_COSIGNATURE_V1",
    "ALG_ED25519",
    "MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "Note",
    "NoteSignature",
    "Signer",
    "Verifier",
    "cosign_checkpoint",
    "cosignature_key_hash",
    "format_signer_key",
    "format_verifier_key",
    "is_valid_name",
    "key_hash",
    "open_note",
    "parse_signature_line",
    "parse_signer_key",
    "parse_verifier_key",
    "sign_note",
    "verify_cosignature",
]

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04

# Go documents these limits; they bound the work an attacker can make us do.
MAX_NOTE_SIZE = 1_000_000
MAX_SIGNATURES = 100

_SIG_PREFIX = "— "  # em dash U+2014, then a space
_SIGNER_KEY_PREFIX = "PRIVATE+KEY+"
_COSIGNATURE_HEADER = "cosignature/v1\n"
_MAX_TIMESTAMP = 2**63 - 1

# Go's unicode.IsSpace: Latin-1 spaces plus the Unicode White_Space property. Python's
# str.isspace differs (it also counts U+001C..U+001F), so the set is spelled out.
_GO_SPACE = re.compile(
    "[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
)
# ASCII control characters other than newline may not appear anywhere in a note.
_CONTROL = re.compile(rb"[\x00-\x09\x0b-\x1f]")
_HEX8 = re.compile(r"[0-9a-f]{8}")


def is_valid_name(name: str) -> bool:
    """Whether name is a valid key name: non-empty, valid UTF-8, no Unicode space, no '+'."""
    if not isinstance(name, str) or name == "" or "+" in name or _GO_SPACE.search(name):
        return False
    try:
        name.encode("utf-8")  # lone surrogates cannot be encoded
    except UnicodeEncodeError:
        return False
    return True


def key_hash(name: str, public_key: bytes, alg: int = ALG_ED25519) -> int:
    """The 32-bit key hash: SHA-256(name || "\\n" || alg || public_key)[:4], big-endian.

    Requires a valid name (not checked here: this is a pure function of its bytes).
    """
    digest = hashlib.sha256(
        name.encode("utf-8") + b"\n" + bytes([alg]) + public_key
    ).digest()
    return int.from_bytes(digest[:4], "big")


def _b64decode(text: str, what: str) -> bytes:
    """Decode standard base64 with padding, accepting only the canonical encoding."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{what} is not valid base64") from None
    # Re-encoding catches what the decoder tolerates (non-zero padding bits and the like).
    if base64.b64encode(raw).decode("ascii") != text:
        raise InvalidInput(f"{what} is not canonical base64")
    return raw


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _check_name(name: str) -> None:
    if not is_valid_name(name):
        raise InvalidInput(f"invalid key name {name!r}")


@dataclass(frozen=True)
class Verifier:
    """An Ed25519 note verifier key: (name, key hash, 32-byte public key).

    Construction checks that the key hash belongs to the name and key, so a Verifier
    can never claim a hash it does not have. Build one with `from_public_key` or
    `parse_verifier_key`.
    """

    name: str
    key_hash: int
    public_key: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        if (
            not isinstance(self.public_key, bytes)
            or len(self.public_key) != PUBLIC_KEY_SIZE
        ):
            raise InvalidInput("an Ed25519 public key must be 32 bytes")
        if self.key_hash != key_hash(self.name, self.public_key):
            raise InvalidInput("key hash does not match the name and public key")

    @classmethod
    def from_public_key(cls, name: str, public_key: bytes) -> Verifier:
        """The verifier for name and a 32-byte Ed25519 public key."""
        _check_name(name)
        return cls(
            name=name, key_hash=key_hash(name, public_key), public_key=public_key
        )

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise VerificationError unless signature is this key's signature of message."""
        verify_signature(self.public_key, message, signature)


@dataclass(frozen=True)
class Signer:
    """A named Ed25519 signing key. Its repr never shows the seed."""

    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not isinstance(self.private_key, Ed25519PrivateKey):
            raise InvalidInput("a Signer needs an Ed25519PrivateKey")

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key

    @property
    def key_hash(self) -> int:
        return key_hash(self.name, self.private_key.public_key)

    def verifier(self) -> Verifier:
        """The matching Verifier."""
        return Verifier.from_public_key(self.name, self.private_key.public_key)


def format_verifier_key(name: str, public_key: bytes) -> str:
    """Encode "<name>+<8 hex key hash>+<base64(0x01 || public key)>"."""
    v = Verifier.from_public_key(name, public_key)
    return f"{name}+{v.key_hash:08x}+{_b64encode(bytes([ALG_ED25519]) + public_key)}"


def _parse_key_parts(
    name: str, hash16: str, key64: str, what: str
) -> tuple[int, bytes]:
    """Shared checks of verifier and signer keys; returns (hash, key material)."""
    _check_name(name)
    # Go accepts upper-case hex too; we emit lower case and accept only that.
    if not _HEX8.fullmatch(hash16):
        raise InvalidInput(f"{what} hash is not 8 lower-case hex digits")
    key = _b64decode(key64, what)
    if len(key) == 0:
        raise InvalidInput(f"{what} is empty")
    if key[0] != ALG_ED25519:
        raise InvalidInput(f"{what} has unknown algorithm {key[0]}")
    if len(key) != 1 + PUBLIC_KEY_SIZE:
        raise InvalidInput(f"{what} is not 32 bytes")
    return int(hash16, 16), key[1:]


def parse_verifier_key(text: str) -> Verifier:
    """Parse "<name>+<8 hex>+<base64(0x01 || public key)>", as Go's note.NewVerifier."""
    if not isinstance(text, str):
        raise InvalidInput("verifier key must be text")
    # The name holds no '+', but base64 may, so split twice only.
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise InvalidInput("verifier key is not name+hash+key")
    name, hash16, key64 = parts
    hash_, public_key = _parse_key_parts(name, hash16, key64, what="verifier key")
    if hash_ != key_hash(name, public_key):
        raise InvalidInput("verifier key hash does not match the key")
    return Verifier(name=name, key_hash=hash_, public_key=public_key)


def format_signer_key(name: str, private_key: Ed25519PrivateKey) -> str:
    """Encode Go's "PRIVATE+KEY+<name>+<8 hex>+<base64(0x01 || seed)>". Secret."""
    signer = Signer(name=name, private_key=private_key)
    key64 = _b64encode(bytes([ALG_ED25519]) + private_key.seed)
    return f"{_SIGNER_KEY_PREFIX}{name}+{signer.key_hash:08x}+{key64}"


def parse_signer_key(text: str) -> Signer:
    """Parse Go's signer key format; the hash must match the derived public key."""
    if not isinstance(text, str) or not text.startswith(_SIGNER_KEY_PREFIX):
        raise InvalidInput("signer key does not start with PRIVATE+KEY+")
    parts = text[len(_SIGNER_KEY_PREFIX) :].split("+", 2)
    if len(parts) != 3:
        raise InvalidInput("signer key is not PRIVATE+KEY+name+hash+key")
    name, hash16, key64 = parts
    hash_, seed = _parse_key_parts(name, hash16, key64, what="signer key")
    assert len(seed) == SEED_SIZE
    signer = Signer(name=name, private_key=Ed25519PrivateKey.from_seed(seed))
    # The hash names the public key, which only exists once the seed is expanded.
    if signer.key_hash != hash_:
        raise InvalidInput("signer key hash does not match the key")
    return signer


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a note: the key's name and hash and the signature bytes
    that follow the 4-byte hash (64 bytes for Ed25519, 8 + 64 for a cosignature)."""

    name: str
    key_hash: int
    signature: bytes

    def line(self) -> str:
        """The signature line, with its final newline."""
        raw = self.key_hash.to_bytes(4, "big") + self.signature
        return f"{_SIG_PREFIX}{self.name} {_b64encode(raw)}\n"


@dataclass(frozen=True)
class Note:
    """An opened note: its text and its verified and unverified signatures."""

    text: str
    sigs: tuple[NoteSignature, ...]
    unverified_sigs: tuple[NoteSignature, ...] = ()


def parse_signature_line(line: str) -> NoteSignature:
    """Parse one signature line, "— <name> <base64>", with or without its newline.

    Does not verify anything. Raises InvalidInput for any deviation from the format.
    """
    if not isinstance(line, str):
        raise InvalidInput("signature line must be text")
    line = line.removesuffix("\n")
    if not line.startswith(_SIG_PREFIX):
        raise InvalidInput("signature line does not start with an em dash and a space")
    name, sep, b64 = line[len(_SIG_PREFIX) :].partition(" ")
    if not sep or not b64:
        raise InvalidInput("signature line has no signature")
    _check_name(name)
    raw = _b64decode(b64, "signature")
    if len(raw) < 5:
        raise InvalidInput("signature is too short")
    return NoteSignature(
        name=name, key_hash=int.from_bytes(raw[:4], "big"), signature=raw[4:]
    )


def _check_text(text: str, what: str) -> bytes:
    """Encode note text, enforcing the rules `open_note` checks on the whole message."""
    if not isinstance(text, str) or not text.endswith("\n"):
        raise InvalidInput(f"{what} must be text ending in a newline")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} is not valid UTF-8") from None
    if _CONTROL.search(raw):
        raise InvalidInput(f"{what} contains a control character")
    return raw


def sign_note(text: str, signers: Sequence[Signer]) -> bytes:
    """Sign text (which must end in a newline) with each signer, in order.

    Requires at least one signer. The result opens with `open_note`.
    """
    raw = _check_text(text, "note text")
    if not signers:
        raise InvalidInput("a note needs at least one signer")
    if len(signers) > MAX_SIGNATURES:
        raise InvalidInput(f"a note may carry at most {MAX_SIGNATURES} signatures")
    lines = [
        NoteSignature(
            name=s.name, key_hash=s.key_hash, signature=s.private_key.sign(raw)
        ).line()
        for s in signers
    ]
    msg = raw + b"\n" + "".join(lines).encode("utf-8")
    if len(msg) > MAX_NOTE_SIZE:
        raise InvalidInput("signed note is too large")
    return msg


def open_note(msg: bytes, verifiers: Iterable[Verifier]) -> Note:
    """Parse a signed note and verify its signatures by the known verifiers.

    Signatures by unknown keys are returned unverified. Repeated signatures by one key
    are ignored after the first, as Go does. Raises InvalidInput if msg is malformed,
    VerificationError if a known key's signature fails, and UnknownVerifier (naming the
    first unknown key) if no known key signed it.
    """
    if not isinstance(msg, (bytes, bytearray, memoryview)):
        raise InvalidInput("note must be bytes")
    msg = bytes(msg)
    if len(msg) > MAX_NOTE_SIZE:
        raise InvalidInput("note is too large")
    try:
        msg.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("note is not valid UTF-8") from None
    if _CONTROL.search(msg):
        raise InvalidInput("note contains a control character")

    split = msg.rfind(b"\n\n")
    if split < 0:
        raise InvalidInput("note has no blank line before its signatures")
    text, sig_block = msg[: split + 1], msg[split + 2 :]
    if not sig_block or not sig_block.endswith(b"\n"):
        raise InvalidInput("note signatures must end in a newline")
    lines = sig_block[:-1].decode("utf-8").split("\n")
    # Checked before parsing so that a huge signature block costs nothing.
    if len(lines) > MAX_SIGNATURES:
        raise InvalidInput(f"note has more than {MAX_SIGNATURES} signatures")
    # Parse every line before verifying any, so malformed input never costs a verification.
    parsed = [(line, parse_signature_line(line)) for line in lines]

    known: dict[tuple[str, int], Verifier | None] = {}
    for verifier in verifiers:
        k = (verifier.name, verifier.key_hash)
        # None marks a (name, hash) claimed by two different keys.
        known[k] = verifier if known.get(k, verifier) == verifier else None

    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    seen: set[tuple[str, int]] = set()
    seen_unverified: set[str] = set()
    for line, sig in parsed:
        k = (sig.name, sig.key_hash)
        if k not in known:
            if line not in seen_unverified:
                seen_unverified.add(line)
                unverified.append(sig)
            continue
        v = known[k]
        if v is None:
            # Two different keys share a name and hash: the verifier list is corrupt.
            raise VerificationError(f"ambiguous key {sig.name}+{sig.key_hash:08x}")
        if k in seen:
            continue
        seen.add(k)
        try:
            v.verify(text, sig.signature)
        except VerificationError:
            raise VerificationError(
                f"invalid signature for key {sig.name}+{sig.key_hash:08x}"
            ) from None
        verified.append(sig)

    if not verified:
        first = unverified[0]
        raise UnknownVerifier(first.name, first.key_hash)
    return Note(
        text=text.decode("utf-8"),
        sigs=tuple(verified),
        unverified_sigs=tuple(unverified),
    )


# --- tlog-cosignature/v1 (https://c2sp.org/tlog-cosignature) ---------------------------


def cosignature_key_hash(name: str, public_key: bytes) -> int:
    """Key hash of an Ed25519 cosigner: SHA-256(name || "\\n" || 0x04 || key)[:4]."""
    return key_hash(name, public_key, ALG_COSIGNATURE_V1)


def _cosigned_message(body: str, timestamp: int) -> bytes:
    raw = _check_text(body, "checkpoint body")
    return f"{_COSIGNATURE_HEADER}time {timestamp}\n".encode("ascii") + raw


def cosign_checkpoint(
    body: str, signer_name: str, private_key: Ed25519PrivateKey, timestamp: int
) -> str:
    """A witness's cosignature line over a checkpoint body at a Unix time in seconds.

    Requires 0 <= timestamp < 2**63. The caller must already have checked that body is
    consistent with what it cosigned before: this only signs.
    """
    _check_name(signer_name)
    if type(timestamp) is not int or not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise InvalidInput("cosignature timestamp must be an integer in [0, 2**63)")
    sig = private_key.sign(_cosigned_message(body, timestamp))
    hash_ = cosignature_key_hash(signer_name, private_key.public_key)
    return NoteSignature(signer_name, hash_, timestamp.to_bytes(8, "big") + sig).line()


def verify_cosignature(
    body: str, signature: str | NoteSignature, name: str, public_key: bytes
) -> int:
    """Verify a witness cosignature of a checkpoint body; return its timestamp.

    signature is a signature line or an already parsed one (for instance from
    `Note.unverified_sigs`). Raises UnknownVerifier if it is by another key,
    VerificationError if it does not verify and InvalidInput if it is malformed.
    """
    sig = parse_signature_line(signature) if isinstance(signature, str) else signature
    if sig.name != name or sig.key_hash != cosignature_key_hash(name, public_key):
        raise UnknownVerifier(sig.name, sig.key_hash)
    if len(sig.signature) != 8 + SIGNATURE_SIZE:
        raise InvalidInput("cosignature is not 8 + 64 bytes")
    timestamp = int.from_bytes(sig.signature[:8], "big")
    if timestamp > _MAX_TIMESTAMP:
        raise InvalidInput("cosignature timestamp exceeds 2**63 - 1")
    try:
        verify_signature(
            public_key, _cosigned_message(body, timestamp), sig.signature[8:]
        )
    except VerificationError:
        raise VerificationError(
            f"invalid cosignature for key {name}+{sig.key_hash:08x}"
        ) from None
    return timestamp
