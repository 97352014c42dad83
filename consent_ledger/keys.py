"""Key files: Go sumdb/note signer-key text ("PRIVATE+KEY+<name>+<hash>+<base64>"), written 0600.

The log's key names the log (its origin); a patient's or an organisation's key uses the same format with a
name of its own choosing. The matching verifier key ("<name>+<hash>+<base64>") is public.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from pathlib import Path

from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.errors import InvalidInput
from consent_ledger.core.note import Signer, format_signer_key, format_verifier_key, parse_signer_key
from consent_ledger.core.vrf import VrfPrivateKey

KEY_ENV = "CONSENT_LEDGER_KEY"
MAP_VRF_KEY_ENV = "CONSENT_LEDGER_MAP_VRF_KEY"


def write_new_key(path: Path, name: str, *, overwrite: bool = False) -> Signer:
    """Create a key and write it to ``path`` with mode 0600 (never replacing a key unless asked).

    The key is written to a new file (created 0600, O_EXCL) and renamed into place, so a file that existed is
    replaced, never truncated and rewritten: whoever had the old file open (say, while it was readable by others)
    keeps reading the old key, not the new one. The directory is created 0700 if it does not exist."""
    signer = Signer(name, Ed25519PrivateKey.generate())
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, "File exists (pass --force to replace the key)", str(path))
    _write_new_file(path, format_signer_key(name, signer.private_key) + "\n", overwrite=overwrite)
    pub = path.with_name(path.name + ".pub")
    _write_new_file(pub, format_verifier_key(name, signer.public_key) + "\n", overwrite=True, mode=0o644)
    return signer


def _write_new_file(path: Path, text: str, *, overwrite: bool, mode: int = 0o600) -> None:
    """Write ``text`` to a new file: ``path`` itself, or with ``overwrite`` a temporary file beside it renamed into
    place (atomic; an existing file is replaced, never rewritten in place)."""
    # Without overwrite the file itself is new (O_EXCL fails if it appeared meanwhile): nobody can hold it open.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp") if overwrite else path
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if mode != 0o600:
            os.chmod(tmp, mode)
        if overwrite:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_key(path: Path) -> Signer:
    """Read a key file; refuses files readable by group or others (as ssh does)."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InvalidInput(f"key file {path} is readable by others (mode {stat.filemode(mode)}); chmod 600 it")
    return parse_signer_key(path.read_text(encoding="ascii").strip())


def key_from_env_or_file(path: Path | None) -> Signer:
    """The log key from a file, else from $CONSENT_LEDGER_KEY (the key text itself)."""
    if path is not None:
        return read_key(path)
    text = os.environ.get(KEY_ENV)
    if not text:
        raise InvalidInput(f"no log key: pass --key-file or set {KEY_ENV}")
    return parse_signer_key(text.strip())


def verifier_key_of(signer: Signer) -> str:
    return format_verifier_key(signer.name, signer.public_key)


def map_vrf_key_from_env_or_file(path: Path | None) -> VrfPrivateKey | None:
    """The map VRF key (docs/design.md section 5) from a file, else from $CONSENT_LEDGER_MAP_VRF_KEY (the key text); None
    when neither is given. The file format is the log key's (an Ed25519-format key pair; ``keygen map-vrf``)."""
    if path is not None:
        return VrfPrivateKey.from_seed(read_key(path).private_key.seed)
    text = os.environ.get(MAP_VRF_KEY_ENV)
    if not text:
        return None
    return VrfPrivateKey.from_seed(parse_signer_key(text.strip()).private_key.seed)


def derived_map_vrf_key(log_key: Signer) -> VrfPrivateKey:
    """The map VRF key a ledger uses when none is configured: derived from the log key's seed (SHA-256 under a
    label of its own), so it differs from the log key and is never used to sign, and a restart keeps it."""
    seed = hashlib.sha256(b"consent-ledger/map-vrf-key/v1\n" + log_key.private_key.seed).digest()
    return VrfPrivateKey.from_seed(seed)
