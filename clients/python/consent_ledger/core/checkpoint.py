"""C2SP tlog-checkpoint bodies (https://c2sp.org/tlog-checkpoint) and their signing.

    <origin>\\n<tree size, decimal>\\n<root hash, standard base64>\\n[<extension line>\\n]...

Parsing accepts exactly the text `format_checkpoint` produces and nothing else (no
"+5", no "05", no unpadded or non-canonical base64), like Go's sumdb/tlog.

The ledger's checkpoints name their consent state (docs/design.md section 2): one extension line
``consent-state <index>``, the index of the latest StateCommit entry at that size, written as a
canonical decimal. The line is absent only while the log holds no StateCommit (a new log's empty
checkpoint, or a log without consent state). Other extension lines are allowed, as C2SP permits, and
kept as opaque text (this log writes none); but any line whose first word is ``consent-state`` must be
that one canonical line, and there is at most one, so a checkpoint names one state or none.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from consent_ledger.core.errors import InvalidInput, VerificationError
from consent_ledger.core.note import Signer, Verifier, open_note, sign_note

__all__ = [
    "MAX_CHECKPOINT_SIZE",
    "MAX_EXTENSION_LINES",
    "CONSENT_STATE",
    "Checkpoint",
    "format_checkpoint",
    "format_consent_state",
    "parse_consent_state",
    "open_checkpoint",
    "parse_checkpoint",
    "sign_checkpoint",
]

MAX_CHECKPOINT_SIZE = 4096  # bytes of UTF-8 body text
MAX_EXTENSION_LINES = 16
_MAX_TREE_SIZE = 2**63 - 1  # sizes travel as int64 elsewhere (protobuf, SQL)
_HASH_SIZE = 32

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
CONSENT_STATE = "consent-state"
# A line may hold no ASCII control character at all (newline included: it ends lines).
_CONTROL = re.compile(r"[\x00-\x1f]")


def _check_line(line: object, what: str) -> None:
    if not isinstance(line, str) or line == "":
        raise InvalidInput(f"checkpoint {what} must be a non-empty line")
    if _CONTROL.search(line):
        raise InvalidInput(f"checkpoint {what} contains a control character or newline")
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"checkpoint {what} is not valid UTF-8") from None


@dataclass(frozen=True)
class Checkpoint:
    """A log's signed statement of its size and root hash.

    Construction validates every field, so any Checkpoint formats to text that
    `parse_checkpoint` accepts: a non-empty origin line, 0 <= size < 2**63, a 32-byte
    root hash, and at most 16 non-empty extension lines, all within 4 KiB; at most one of them a
    canonical ``consent-state <index>`` line, with index < size.
    """

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    @property
    def consent_state(self) -> int | None:
        """The index of the latest StateCommit at this size, from the ``consent-state`` line; None without one."""
        return parse_consent_state(self.extensions)

    def __post_init__(self) -> None:
        _check_line(self.origin, "origin")
        # bool is an int subclass; True is not a tree size.
        if type(self.size) is not int or not 0 <= self.size <= _MAX_TREE_SIZE:
            raise InvalidInput("checkpoint size must be an integer in [0, 2**63)")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != _HASH_SIZE:
            raise InvalidInput("checkpoint root hash must be 32 bytes")
        if not isinstance(self.extensions, tuple):
            raise InvalidInput("checkpoint extensions must be a tuple of lines")
        if len(self.extensions) > MAX_EXTENSION_LINES:
            raise InvalidInput(
                f"checkpoint has more than {MAX_EXTENSION_LINES} extension lines"
            )
        for line in self.extensions:
            _check_line(line, "extension line")
        named = parse_consent_state(self.extensions)
        if named is not None and named >= self.size:
            raise InvalidInput(f"checkpoint names consent state {named}, not an entry of a tree of size {self.size}")
        if len(format_checkpoint(self).encode("utf-8")) > MAX_CHECKPOINT_SIZE:
            raise InvalidInput(f"checkpoint is larger than {MAX_CHECKPOINT_SIZE} bytes")


def format_checkpoint(cp: Checkpoint) -> str:
    """The checkpoint body text, ending in a newline: the text a signed note signs."""
    root = base64.b64encode(cp.root_hash).decode("ascii")
    return "".join(
        f"{line}\n" for line in (cp.origin, str(cp.size), root, *cp.extensions)
    )


def format_consent_state(index: int) -> str:
    """The extension line naming the latest StateCommit entry at a checkpoint's size. Requires 0 <= index < 2**63."""
    if type(index) is not int or not 0 <= index <= _MAX_TREE_SIZE:
        raise InvalidInput("a consent-state index must be an integer in [0, 2**63)")
    return f"{CONSENT_STATE} {index}"


def parse_consent_state(extensions: tuple[str, ...]) -> int | None:
    """The index named by the one ``consent-state <index>`` line among ``extensions``, or None if there is none.

    Raises InvalidInput for a second such line, or one that is not exactly the keyword, one space and a canonical
    decimal (no "+5", "05", tabs or trailing text). Other extension lines are ignored.
    """
    found: int | None = None
    for line in extensions:
        word, _, rest = line.partition(" ")
        if word != CONSENT_STATE:
            continue
        if found is not None:
            raise InvalidInput(f"checkpoint has more than one {CONSENT_STATE} line")
        if not _DECIMAL.fullmatch(rest):
            raise InvalidInput(f"checkpoint {CONSENT_STATE} index is not a canonical decimal number")
        found = int(rest)
        if found > _MAX_TREE_SIZE:
            raise InvalidInput(f"checkpoint {CONSENT_STATE} index is out of range")
    return found


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint body, accepting only its canonical form. Raises InvalidInput."""
    if not isinstance(text, str):
        raise InvalidInput("checkpoint must be text")
    # Bound the work before splitting; len(text) <= UTF-8 length, so this cap is safe.
    if len(text) > MAX_CHECKPOINT_SIZE:
        raise InvalidInput(f"checkpoint is larger than {MAX_CHECKPOINT_SIZE} bytes")
    if not text.endswith("\n"):
        raise InvalidInput("checkpoint must end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise InvalidInput("checkpoint needs origin, size and root hash lines")
    origin, size_text, root_text, *extensions = lines

    # Only the canonical decimal: int() would also take "+5", " 5", "05" and "5_0".
    if not _DECIMAL.fullmatch(size_text):
        raise InvalidInput("checkpoint size is not a canonical decimal number")
    size = int(size_text)

    try:
        root = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("checkpoint root hash is not valid base64") from None
    if len(root) != _HASH_SIZE:
        raise InvalidInput("checkpoint root hash is not 32 bytes")
    if base64.b64encode(root).decode("ascii") != root_text:
        raise InvalidInput("checkpoint root hash is not canonical base64")

    cp = Checkpoint(
        origin=origin, size=size, root_hash=root, extensions=tuple(extensions)
    )
    # Belt and braces: whatever slipped past the checks above shows up as a difference.
    if format_checkpoint(cp) != text:
        raise InvalidInput("checkpoint is not in canonical form")
    return cp


def sign_checkpoint(cp: Checkpoint, signer: Signer) -> bytes:
    """The checkpoint as a signed note. Requires cp.origin == signer.name (DESIGN 2)."""
    if cp.origin != signer.name:
        raise InvalidInput("checkpoint origin must equal the signer's key name")
    return sign_note(format_checkpoint(cp), [signer])


def open_checkpoint(note: bytes, verifier: Verifier) -> Checkpoint:
    """Verify a signed checkpoint with the log's key and parse its body.

    Other signature lines (witness cosignatures) are ignored here; use `open_note` to
    reach them. Raises InvalidInput, VerificationError or UnknownVerifier.
    """
    opened = open_note(note, [verifier])
    cp = parse_checkpoint(opened.text)
    if cp.origin != verifier.name:
        # Signed by the right key but claiming to be another log: not a checkpoint of ours.
        raise VerificationError("checkpoint origin does not match the log's key name")
    return cp
