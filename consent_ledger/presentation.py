"""How entries, checkpoints and what was verified are shown to people (text) and to programs (JSON).

Shared by the CLI and the demo. Nothing here verifies anything: it describes objects the client library
(consent_ledger_client) has already verified.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

from consent_ledger_client import VerifiedEntry

from consent_ledger.core import payloads, vocab
from consent_ledger.core.checkpoint import Checkpoint
from consent_ledger.core.envelope import keyid_for
from consent_ledger.core.errors import InvalidInput
from consent_ledger.core.rfc6962 import hash_leaf


def format_time(ms: int) -> str:
    """Milliseconds since the epoch as "YYYY-MM-DD HH:MM:SS UTC"."""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_time(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_period(p: payloads.Period) -> str:
    if p.unbounded:
        return "unbounded"
    start = format_time(p.start_ms) if p.start_ms else "the beginning"
    end = format_time(p.end_ms) if p.end_ms else "open-ended"
    return f"{start} until {end}"


def short_key(public_key: bytes) -> str:
    return f"ed25519:{public_key.hex()[:16]}..."


def checkpoint_json(cp: Checkpoint) -> dict[str, Any]:
    return {"origin": cp.origin, "size": cp.size, "root_hash": base64.b64encode(cp.root_hash).decode("ascii")}


def consistency_phrase(previous: Checkpoint | None, current: Checkpoint) -> str:
    """What accepting ``current`` proved about the checkpoint the client had seen before."""
    if previous is None:
        return "first checkpoint this client has seen (nothing earlier to compare; remembered from now on)"
    if previous.size == current.size:
        return f"same tree as the previous checkpoint (size {previous.size}, identical root)"
    return f"consistent with previous checkpoint size {previous.size}"


def entry_verification(entry: VerifiedEntry, previous: Checkpoint | None = None, *, with_previous: bool = True) -> str:
    """The sentence saying exactly what the client library checked for ``entry``."""
    cp = entry.checkpoint
    parts = [f"inclusion of leaf {entry.index} in checkpoint of size {cp.size} signed by {cp.origin}"]
    if entry.envelope is None:
        parts.append("body erased: only the leaf commitment remains (nothing to hash)")
    else:
        parts.append("body hash matches leaf commitment")
        signers = ", ".join(short_key(k) for k in entry.envelope.signers)
        parts.append(f"envelope signature by {signers} verifies")
    if with_previous:
        parts.append(consistency_phrase(previous, cp))
    return "verified: " + "; ".join(parts)


def verification_json(entry: VerifiedEntry, previous: Checkpoint | None) -> dict[str, Any]:
    cp = entry.checkpoint
    return {
        "inclusion": {"leaf_index": entry.index, "tree_size": cp.size, "signed_by": cp.origin},
        "leaf_hash": hash_leaf(entry.leaf_bytes).hex(),
        "body_hash_matches_leaf": entry.envelope is not None,
        "body_erased": entry.envelope is None,
        "envelope_signers": [keyid_for(k) for k in entry.envelope.signers] if entry.envelope else [],
        "previous_checkpoint_size": previous.size if previous else None,
        "consistent_with_previous": True if previous else None,
    }


_KIND_NAMES = {
    payloads.CONSENT_GRANT: "consent grant",
    payloads.CONSENT_REVOCATION: "consent revocation",
    payloads.ACCESS_EVENT: "access event",
    payloads.PARTY_REGISTRATION: "party registration",
    payloads.DELEGATION: "delegation",
    payloads.ERASURE: "erasure",
}


def kind_name(payload_type: str) -> str:
    return _KIND_NAMES.get(payload_type, payload_type)


def decode_payload(entry: VerifiedEntry) -> payloads.Payload | None:
    """The entry's payload, parsed strictly; None when the body was erased or the type is not one we know."""
    if entry.envelope is None:
        return None
    try:
        return payloads.parse_payload(entry.envelope.payload_type, entry.envelope.payload)
    except InvalidInput:
        return None


def _code_list(codes: Sequence[str], table: Any) -> str:
    shown = []
    for c in codes:
        known = table.get(c) if hasattr(table, "get") else None
        display = getattr(known, "display", None)
        shown.append(f"{c} ({display})" if display and display != c else c)
    return ", ".join(shown) if shown else "none"


def payload_lines(payload: payloads.Payload) -> list[tuple[str, str]]:
    """(label, value) lines describing a payload for people. Nonces are left out."""
    lines: list[tuple[str, str]] = []
    for f in dataclasses.fields(payload):
        name = f.name
        value = getattr(payload, name)
        if name == "nonce":
            continue
        label = name.replace("_ms", "").replace("_", " ")
        if name in ("patient", "delegate"):
            text = keyid_for(value)
        elif name == "public_keys":
            text = ", ".join(keyid_for(k) for k in value)
        elif name == "purposes":
            text = _code_list(value, vocab.PURPOSES)
        elif name == "purpose":
            text = _code_list([value], vocab.PURPOSES)
        elif name == "data_classes":
            text = _code_list(value, vocab.DATA_CLASSES)
        elif name == "sensitivity_labels":
            text = _code_list(value, vocab.SENSITIVITY_LABELS)
        elif name == "data":
            text = "; ".join(
                f"{d.data_class}" + (f" [{', '.join(d.sensitivity_labels)}]" if d.sensitivity_labels else "")
                for d in value
            )
        elif isinstance(value, payloads.Period):
            text = format_period(value)
        elif isinstance(value, payloads.LegalBasis):
            text = " - ".join(x for x in (value.code, value.text) if x)
        elif name.endswith("_ms") and isinstance(value, int):
            text = format_time(value) if value else "-"
        elif isinstance(value, tuple):
            text = ", ".join(str(v) for v in value) if value else "none"
        elif isinstance(value, bytes):
            text = value.hex() if value else "-"
        elif value is None or value == "":
            text = "-"
        else:
            text = str(value)
        lines.append((label, text))
    return lines


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def entry_json(entry: VerifiedEntry, previous: Checkpoint | None) -> dict[str, Any]:
    payload = decode_payload(entry)
    env = entry.envelope
    return {
        "index": entry.index,
        "payload_type": entry.leaf.payload_type,
        "kind": kind_name(entry.leaf.payload_type),
        "integrated_time_ms": entry.leaf.integrated_time_ms,
        "integrated_time": iso_time(entry.leaf.integrated_time_ms),
        "envelope_sha256": entry.leaf.envelope_sha256.hex(),
        "consent_id": payloads.consent_id(env.payload) if env else None,
        "signers": [keyid_for(k) for k in env.signers] if env else [],
        "payload": _jsonable(payload) if payload is not None else None,
        "checkpoint": checkpoint_json(entry.checkpoint),
        "verified": verification_json(entry, previous),
    }


def describe_entry(entry: VerifiedEntry, *, indent: str = "  ") -> list[str]:
    """Readable lines for an entry: what it is, when it was integrated, and its decoded payload."""
    out = [f"entry {entry.index}: {kind_name(entry.leaf.payload_type)}"]
    rows: list[tuple[str, str]] = [("integrated", format_time(entry.leaf.integrated_time_ms))]
    if entry.envelope is None:
        rows.append(("body", "erased (the leaf still commits to it)"))
    else:
        rows.append(("consent id", payloads.consent_id(entry.envelope.payload)))
        payload = decode_payload(entry)
        if payload is None:
            rows.append(("payload", f"{len(entry.envelope.payload)} bytes of {entry.leaf.payload_type}"))
        else:
            rows.extend(payload_lines(payload))
    width = max(len(label) for label, _ in rows)
    out.extend(f"{indent}{label.ljust(width)}  {value}" for label, value in rows)
    return out


def entry_summary(entry: VerifiedEntry) -> str:
    """One line for an entry in a listing."""
    head = f"#{entry.index:<5} {format_time(entry.leaf.integrated_time_ms)}  {kind_name(entry.leaf.payload_type)}"
    payload = decode_payload(entry)
    if entry.envelope is None:
        return f"{head}  (body erased)"
    cid = payloads.consent_id(entry.envelope.payload)[:16]
    if isinstance(payload, payloads.ConsentGrantPayload):
        what = (
            f"{payload.decision} {payload.grantee} {','.join(payload.actions)} for {','.join(payload.purposes)} "
            f"on {','.join(payload.data_classes)}"
        )
        if payload.sensitivity_labels:
            what += f" [{','.join(payload.sensitivity_labels)}]"
        return f"{head}  {what}  id {cid}..."
    if isinstance(payload, payloads.ConsentRevocationPayload):
        return f"{head}  revokes {payload.consent_id[:16]}...  id {cid}..."
    return f"{head}  id {cid}..."
