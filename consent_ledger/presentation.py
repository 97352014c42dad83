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

from consent_ledger_client import (
    AccessEventView,
    ConsentView,
    DelegationView,
    SignedBy,
    VerifiedDecision,
    VerifiedEntry,
)

from consent_ledger.core import payloads, vocab
from consent_ledger.core.checkpoint import Checkpoint
from consent_ledger.core.decision import Decision, grantee_selectors
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


def signers_text(signers: Sequence[bytes], log_key: bytes | None = None) -> str:
    """The signing keys, short; the log's own key named as such when ``log_key`` is given."""
    return ", ".join(f"the log key ({short_key(k)})" if k == log_key else short_key(k) for k in signers)


def entry_verification(
    entry: VerifiedEntry,
    previous: Checkpoint | None = None,
    *,
    with_previous: bool = True,
    log_key: bytes | None = None,
) -> str:
    """The sentence saying exactly what the client library checked for ``entry``. ``log_key``: the pinned log's
    public key, to name it when it signed the entry (StateCommits, party registrations)."""
    cp = entry.checkpoint
    parts = [f"inclusion of leaf {entry.index} in checkpoint of size {cp.size} signed by {cp.origin}"]
    if entry.envelope is None:
        by = f" by entry {entry.erased_by} (an operator's Erasure entry, checked)" if entry.erased_by is not None else ""
        parts.append(f"body erased{by}: only the leaf commitment remains (nothing to hash)")
    else:
        parts.append("body hash matches leaf commitment")
        parts.append(f"envelope signature by {signers_text(entry.envelope.signers, log_key)} verifies")
    if with_previous:
        parts.append(consistency_phrase(previous, cp))
    return "verified: " + "; ".join(parts)


def state_commit_of(entry: VerifiedEntry, log_key: bytes) -> payloads.StateCommitPayload | None:
    """The entry's StateCommit payload, if it is one signed by the log key; else None."""
    payload = decode_payload(entry)
    if isinstance(payload, payloads.StateCommitPayload) and entry.envelope and log_key in entry.envelope.signers:
        return payload
    return None


def closing_commit_line(entry: VerifiedEntry, commit: payloads.StateCommitPayload) -> str:
    """One line for the StateCommit that closed the batch of a consent change."""
    return (
        f"the ledger closed the batch with StateCommit #{entry.index}: consent-state map root "
        f"{commit.map_root.hex()[:16]}... as of {format_time(commit.batch_time_ms)}, signed by the log key"
    )


def state_commit_json(entry: VerifiedEntry, commit: payloads.StateCommitPayload) -> dict[str, Any]:
    return {
        "index": entry.index,
        "map_root": commit.map_root.hex(),
        "map_vrf_public_key": commit.map_vrf_public_key.hex(),
        "batch_time_ms": commit.batch_time_ms,
        "batch_time": iso_time(commit.batch_time_ms),
        "signed_by_log_key": True,
    }


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
    payloads.BREAK_GLASS_REVIEW: "break-glass review",
    payloads.STATE_COMMIT: "state commit",
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


def describe_entry(entry: VerifiedEntry, *, indent: str = "  ", log_key: bytes | None = None) -> list[str]:
    """Readable lines for an entry: what it is, when it was integrated, and its decoded payload. ``log_key``: the
    pinned log's public key, to say when the log itself signed the entry."""
    out = [f"entry {entry.index}: {kind_name(entry.leaf.payload_type)}"]
    rows: list[tuple[str, str]] = [("integrated", format_time(entry.leaf.integrated_time_ms))]
    payload = decode_payload(entry)
    if entry.envelope is None:
        by = f" by entry {entry.erased_by}" if entry.erased_by is not None else ""
        rows.append(("body", f"erased{by} (the leaf still commits to it)"))
    elif isinstance(payload, payloads.StateCommitPayload):
        rows += [
            ("signed by", signers_text(entry.envelope.signers, log_key)),
            ("map root", payload.map_root.hex()),
            ("batch time", format_time(payload.batch_time_ms)),
            ("what", ("the consent-state map's root after this batch: access checks prove against it which "
                      "consents are in force, as of the batch time")),
        ]
    else:
        rows.append(("consent id", payloads.consent_id(entry.envelope.payload)))
        delegate = delegate_signers(entry)
        if delegate:
            rows.append(("signed by", f"delegate {signers_text(delegate)} (not the patient's key; the ledger accepts "
                                      "it only while a delegation of the patient lets that key sign)"))
        if payload is None:
            rows.append(("payload", f"{len(entry.envelope.payload)} bytes of {entry.leaf.payload_type}"))
        else:
            rows.extend(payload_lines(payload))
    width = max(len(label) for label, _ in rows)
    out.extend(f"{indent}{label.ljust(width)}  {value}" for label, value in rows)
    return out


def delegate_signers(entry: VerifiedEntry) -> tuple[bytes, ...]:
    """The signers of a patient's grant or revocation other than the patient, when the patient did not sign."""
    payload = decode_payload(entry)
    if (
        entry.envelope is None
        or not isinstance(payload, payloads.ConsentGrantPayload | payloads.ConsentRevocationPayload)
        or payload.patient in entry.envelope.signers
    ):
        return ()
    return entry.envelope.signers


def signed_by_text(by: SignedBy) -> str:
    """signed by delegate ed25519:... (guardian, delegation 1a2b...)."""
    return f"signed by delegate {short_key(by.delegate)} ({by.relationship}, delegation {short_id(by.delegation_id)})"


def entry_summary(entry: VerifiedEntry, *, log_key: bytes | None = None) -> str:
    """One line for an entry in a listing. ``log_key``: the pinned log's public key, to say when the log itself
    signed the entry."""
    head = f"#{entry.index:<5} {format_time(entry.leaf.integrated_time_ms)}  {kind_name(entry.leaf.payload_type)}"
    payload = decode_payload(entry)
    if entry.envelope is None:
        by = f" by #{entry.erased_by}" if entry.erased_by is not None else ""
        return f"{head}  (body erased{by})"
    if isinstance(payload, payloads.StateCommitPayload):
        by = "  signed by the log key" if log_key is not None and log_key in entry.envelope.signers else ""
        return f"{head}  map root {payload.map_root.hex()[:16]}...  as of {format_time(payload.batch_time_ms)}{by}"
    cid = payloads.consent_id(entry.envelope.payload)[:16]
    if isinstance(payload, payloads.ConsentGrantPayload):
        what = (
            f"{payload.decision} {payload.grantee} {','.join(payload.actions)} for {','.join(payload.purposes)} "
            f"on {','.join(payload.data_classes)}"
        )
        if payload.sensitivity_labels:
            what += f" [{','.join(payload.sensitivity_labels)}]"
        return f"{head}  {what}  id {cid}...{_by_delegate(entry)}"
    if isinstance(payload, payloads.ConsentRevocationPayload):
        return f"{head}  revokes {payload.consent_id[:16]}...  id {cid}...{_by_delegate(entry)}"
    if isinstance(payload, payloads.DelegationPayload):
        by = f", attested by {payload.attested_by}" if payload.attested_by else ""
        return (
            f"{head}  {payload.relationship} {short_key(payload.delegate)} may {','.join(payload.scope)}{by}  "
            f"id {cid}..."
        )
    if isinstance(payload, payloads.PartyRegistrationPayload):
        caps = f", capabilities {','.join(payload.capabilities)}" if payload.capabilities else ""
        return f"{head}  {payload.party_id} ({payload.display_name}), roles {','.join(payload.roles)}{caps}  id {cid}..."
    if isinstance(payload, payloads.BreakGlassReviewPayload):
        return f"{head}  event #{payload.event_index}: {payload.outcome.upper()}  id {cid}..."
    if isinstance(payload, payloads.ErasurePayload):
        return f"{head}  erases the body of #{payload.index}: {payload.reason!r}  id {cid}..."
    if isinstance(payload, payloads.AccessEventPayload):
        data = ",".join(data_item_text(d) for d in payload.data)
        bg = "  BREAK-GLASS" if payload.break_glass else ""
        return (
            f"{head}  {payload.party_id} {payload.action} for {payload.purpose} on {data}: {payload.decision}{bg}  "
            f"id {cid}..."
        )
    return f"{head}  id {cid}..."


# -- decisions, consents and access events ----------------------------------------------------------------


def short_id(consent_id: str, n: int = 12) -> str:
    """A consent id shortened for a line of text (the full id is in --json)."""
    return f"{consent_id[:n]}..." if len(consent_id) > n else consent_id


def relative_time(ms: int, now_ms: int) -> str:
    """How far ``ms`` is from ``now_ms``, roughly: "in 5 min", "in 4 h", "in 365 days", "2 min ago"."""
    delta = (ms - now_ms) / 1000
    ahead = delta >= 0
    s = abs(delta)
    if s < 90:
        text = f"{round(s)} s"
    elif s < 90 * 60:
        text = f"{round(s / 60)} min"
    elif s < 48 * 3600:
        text = f"{round(s / 3600)} h"
    else:
        text = f"{round(s / 86400)} days"
    return f"in {text}" if ahead else f"{text} ago"


def data_item_text(item: payloads.DataItem) -> str:
    """laboratory-results, or clinical-notes [MH] for data carrying sensitivity labels."""
    if item.sensitivity_labels:
        return f"{item.data_class} [{','.join(item.sensitivity_labels)}]"
    return item.data_class


def purpose_text(code: str) -> str:
    known = vocab.PURPOSES.get(code)
    return f"{code} ({known.display})" if known and known.display != code else code


def grant_text(g: payloads.ConsentGrantPayload) -> str:
    """One phrase for a grant: PERMIT org:insurer-1 access for HPAYMT on laboratory-results."""
    text = (
        f"{g.decision} {g.grantee} {','.join(g.actions)} for {','.join(g.purposes)} on {','.join(g.data_classes)}"
    )
    if g.sensitivity_labels:
        text += f" [{','.join(g.sensitivity_labels)}]"
    return text


def decision_lines(d: Decision, *, now_ms: int | None = None, indent: str = "  ") -> list[str]:
    """The decision for people: overall, one line per requested item, obligations, windows."""
    r = d.request
    now = r.time_ms if now_ms is None else now_ms
    bg = " with break-glass" if r.break_glass else ""
    out = [
        f"decision: {d.decision}  ({r.requester_id} asks to {r.action} data of patient {short_key(r.patient)} "
        f"for {purpose_text(r.purpose)}{bg})"
    ]
    width = max(len(data_item_text(o.data)) for o in d.outcomes)
    for o in d.outcomes:
        why = "; ".join(f"{x.code}: {x.text}" for x in o.reasons)
        by = f"  id {', '.join(short_id(c) for c in o.consent_ids)}" if o.consent_ids else ""
        out.append(f"{indent}{data_item_text(o.data).ljust(width)}  {o.decision.ljust(6)}  {why}{by}")
    shown = {x for o in d.outcomes for x in o.reasons}
    for x in d.reasons:
        if x not in shown:
            out.append(f"{indent}also: {x.code}: {x.text}")
    if r.break_glass and r.break_glass_reason:
        out.append(f"{indent}break-glass reason: {r.break_glass_reason!r}")
    for ob in d.obligations:
        out.append(f"{indent}obligation: {ob.code}: {ob.text}")
    if d.break_glass_until_ms:
        out.append(
            f"{indent}break-glass window until {format_time(d.break_glass_until_ms)} "
            f"({relative_time(d.break_glass_until_ms, now)})"
        )
    out.append(
        f"{indent}valid until {format_time(d.valid_until_ms)} ({relative_time(d.valid_until_ms, now)}): "
        "ask again after that"
    )
    return out


def decision_json(d: Decision) -> dict[str, Any]:
    r = d.request
    return {
        "decision": d.decision,
        "request": {
            "patient": r.patient.hex(),
            "requester_id": r.requester_id,
            "requester_roles": list(r.requester_roles),
            "action": r.action,
            "purpose": r.purpose,
            "data": [_jsonable(x) for x in r.data],
            "time_ms": r.time_ms,
            "time": iso_time(r.time_ms),
            "break_glass": r.break_glass,
            "break_glass_reason": r.break_glass_reason,
        },
        "outcomes": [
            {
                "data_class": o.data.data_class,
                "sensitivity_labels": list(o.data.sensitivity_labels),
                "decision": o.decision,
                "reasons": [{"code": x.code, "text": x.text} for x in o.reasons],
                "consent_ids": list(o.consent_ids),
                "break_glass": o.break_glass,
            }
            for o in d.outcomes
        ],
        "consent_ids": list(d.consent_ids),
        "reasons": [{"code": x.code, "text": x.text} for x in d.reasons],
        "obligations": [{"code": x.code, "text": x.text} for x in d.obligations],
        "valid_until_ms": d.valid_until_ms,
        "valid_until": iso_time(d.valid_until_ms),
        "break_glass_until_ms": d.break_glass_until_ms or None,
        "break_glass_until": iso_time(d.break_glass_until_ms) if d.break_glass_until_ms else None,
        "policy": {"implicit": d.policy.implicit, "break_glass_enabled": d.policy.break_glass_enabled},
    }


def plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


@dataclasses.dataclass(frozen=True)
class ConsentState:
    """What a verified decision's completeness rests on (docs/design.md section 5): the signed StateCommit, the grantee
    selectors that could name the requester (one map proof each, checked by the client), and the in-force
    consents per selector that the evidence holds (the client checked they are exactly the committed set)."""

    entry: VerifiedEntry
    commit: payloads.StateCommitPayload
    selectors: tuple[str, ...]
    in_force: dict[str, tuple[str, ...]]  # selector -> consent ids, in log order


def consent_state(vd: VerifiedDecision) -> ConsentState | None:
    """The consent state a verified decision rests on, read back from its evidence; None when the evidence does
    not name a single StateCommit (then the CLI cannot say which one the client checked against)."""
    commits = []
    r = vd.decision.request
    selectors = grantee_selectors(r.requester_id, r.requester_roles)
    in_force: dict[str, list[str]] = {sel: [] for sel in selectors}
    for v in sorted(vd.evidence, key=lambda e: e.index):
        p = decode_payload(v)
        if isinstance(p, payloads.StateCommitPayload):
            commits.append((v, p))
        elif isinstance(p, payloads.ConsentGrantPayload) and p.grantee in in_force and v.envelope is not None:
            in_force[p.grantee].append(payloads.consent_id(v.envelope.payload))
    if len(commits) != 1:
        return None
    (entry, commit), = commits
    return ConsentState(entry, commit, selectors, {k: tuple(v) for k, v in in_force.items()})


def _in_force_phrase(state: ConsentState) -> str:
    held = [(sel, ids) for sel, ids in state.in_force.items() if ids]
    if not held:
        return "no consent is in force for any of them, so none can have been left out"
    some = ", ".join(f"{plural(len(ids), 'consent', 'consents')} for {sel}" for sel, ids in held)
    rest = [sel for sel, ids in state.in_force.items() if not ids]
    none = f"; none for {', '.join(rest)}" if rest else ""
    return f"the evidence is exactly the in-force set for each ({some}{none}), so nothing was left out"


def state_verification(vd: VerifiedDecision, *, now_ms: int | None = None, max_state_age_ms: int | None = None) -> str:
    """The sentence saying what the client checked about the decision's completeness and freshness."""
    state = consent_state(vd)
    r = vd.decision.request
    selectors = ", ".join(grantee_selectors(r.requester_id, r.requester_roles))
    if state is None:
        return (
            f"verified: map proofs for {selectors} against the ledger's signed consent state; the evidence is exactly "
            "the in-force set for each, so nothing was left out"
        )
    c = state.commit
    age = ""
    if now_ms is not None:
        age = f", {max(0, now_ms - c.batch_time_ms) / 1000:.0f} s old"
        if max_state_age_ms is not None:
            age += f", at most {max_state_age_ms / 1000:g} s accepted"
    return (
        f"verified: consent state as of {format_time(c.batch_time_ms)} (StateCommit #{state.entry.index}, signed by "
        f"the log key{age}): map proofs for {selectors} hold; {_in_force_phrase(state)}; each map key proven by "
        f"its VRF proof under the map VRF key the StateCommit names, and {r.requester_id}'s registration is its latest "
        f"(its party key)"
    )


def decision_verification(
    vd: VerifiedDecision,
    previous: Checkpoint | None = None,
    *,
    with_previous: bool = True,
    now_ms: int | None = None,
    max_state_age_ms: int | None = None,
) -> str:
    """Two lines saying what the client library checked for a decision: the evidence and the decision, then the
    consent state the evidence was proven complete against."""
    cp = vd.checkpoint
    parts = [
        f"{plural(len(vd.evidence), 'evidence entry', 'evidence entries')} proven in checkpoint of size "
        f"{cp.size} signed by {cp.origin}",
        f"decision re-computed from the evidence: {vd.decision.decision}, equal to the server's",
        "receipt signature by the log key verifies",
    ]
    if vd.access_event_index is not None:
        parts.append(f"access event #{vd.access_event_index} records this decision")
    if with_previous:
        parts.append(consistency_phrase(previous, cp))
    state = state_verification(vd, now_ms=now_ms, max_state_age_ms=max_state_age_ms)
    return "verified: " + "; ".join(parts) + "\n" + state


def verified_decision_json(
    vd: VerifiedDecision, previous: Checkpoint | None, *, max_state_age_ms: int | None = None
) -> dict[str, Any]:
    state = consent_state(vd)
    r = vd.decision.request
    state_json: dict[str, Any] = {
        "selectors": list(grantee_selectors(r.requester_id, r.requester_roles)),
        "map_proofs_verified": True,
        "evidence_is_exactly_the_in_force_set": True,
        "max_state_age_ms": max_state_age_ms,
    }
    if state is not None:
        state_json.update(
            state_commit_index=state.entry.index,
            map_root=state.commit.map_root.hex(),
            batch_time_ms=state.commit.batch_time_ms,
            batch_time=iso_time(state.commit.batch_time_ms),
            signed_by_log_key=True,
            in_force={sel: list(ids) for sel, ids in state.in_force.items()},
        )
    return {
        **decision_json(vd.decision),
        "checkpoint": checkpoint_json(vd.checkpoint),
        "checkpoint_note": vd.checkpoint_note.decode("utf-8"),
        "receipt": base64.b64encode(vd.receipt).decode("ascii"),
        "access_event_index": vd.access_event_index,
        "verified": {
            "evidence": [e.index for e in vd.evidence],
            "checkpoint_size": vd.checkpoint.size,
            "signed_by": vd.checkpoint.origin,
            "decision_recomputed_equal": True,
            "receipt_signature": True,
            "consent_state": state_json,
            "previous_checkpoint_size": previous.size if previous else None,
            "consistent_with_previous": True if previous else None,
        },
    }


def _by_delegate(entry: VerifiedEntry) -> str:
    signers = delegate_signers(entry)
    return f"  signed by delegate {signers_text(signers)}" if signers else ""


def consent_view_line(view: ConsentView) -> str:
    """One line for a consent in the patient's listing: state, what, validity, id, and who signed when it was a
    delegate."""
    g = view.grant
    text = f"#{view.entry.index:<4} {view.state.ljust(10)} {grant_text(g)}"
    v = g.validity
    if v.end_ms:
        text += f"  until {format_time(v.end_ms)[:10]}"
    if view.ended_by_index is not None:
        text += f"  ({view.state} by #{view.ended_by_index})"
    text += f"  id {short_id(view.consent_id)}"
    if view.signed_by is not None:
        text += f"  {signed_by_text(view.signed_by)}"
    return text


def signed_by_json(by: SignedBy | None) -> dict[str, Any] | None:
    if by is None:
        return None
    return {
        "delegate": keyid_for(by.delegate),
        "relationship": by.relationship,
        "delegation_id": by.delegation_id,
        "delegation_index": by.delegation_index,
    }


def consent_view_json(view: ConsentView) -> dict[str, Any]:
    return {
        "index": view.entry.index,
        "consent_id": view.consent_id,
        "state": view.state,
        "ended_by_index": view.ended_by_index,
        "integrated_time": iso_time(view.entry.leaf.integrated_time_ms),
        "grant": _jsonable(view.grant),
        "signed_by_delegate": signed_by_json(view.signed_by),
    }


def delegation_view_line(view: DelegationView) -> str:
    """One line for a delegation in the patient's listing: state, who, scope, until when, on whose word, id."""
    d = view.delegation
    text = f"#{view.entry.index:<4} {view.state.ljust(10)} {d.relationship} {short_key(d.delegate)} may {','.join(d.scope)}"
    ends = [x for x in (d.validity.end_ms, d.majority_date_ms) if x]
    if ends:
        text += f"  until {format_time(min(ends))[:10]}" + ("  (majority date)" if min(ends) == d.majority_date_ms else "")
    if d.attested_by:
        text += f"  attested by {d.attested_by} ({d.evidence_reference})"
    if view.revoked_by_index is not None:
        text += f"  (revoked by #{view.revoked_by_index})"
    return f"{text}  id {short_id(view.delegation_id)}"


def delegation_view_json(view: DelegationView) -> dict[str, Any]:
    return {
        "index": view.entry.index,
        "delegation_id": view.delegation_id,
        "state": view.state,
        "revoked_by_index": view.revoked_by_index,
        "integrated_time": iso_time(view.entry.leaf.integrated_time_ms),
        "signers": [keyid_for(k) for k in view.entry.envelope.signers] if view.entry.envelope else [],
        "delegation": _jsonable(view.delegation),
    }


def access_event_line(
    entry: VerifiedEntry, event: payloads.AccessEventPayload, log_key: bytes, *, recorder: bool = True
) -> str:
    """One line for an access event: when, who, what for, on what, the decision, who recorded it."""
    data = ", ".join(data_item_text(d) for d in event.data)
    by = "the ledger" if entry.envelope is not None and log_key in entry.envelope.signers else event.party_id
    text = (
        f"#{entry.index:<4} {format_time(event.accessed_at_ms)}  {event.party_id}  {event.action} for "
        f"{event.purpose} on {data}: {event.decision}"
    )
    if event.break_glass:
        text += f"  BREAK-GLASS ({event.break_glass_reason!r})"
    return f"{text}  (recorded by {by})" if recorder else text


def access_event_json(entry: VerifiedEntry, event: payloads.AccessEventPayload, log_key: bytes) -> dict[str, Any]:
    return {
        "index": entry.index,
        "integrated_time": iso_time(entry.leaf.integrated_time_ms),
        "accessed_at": iso_time(event.accessed_at_ms),
        "recorded_by_ledger": entry.envelope is not None and log_key in entry.envelope.signers,
        "event": _jsonable(event),
    }


def review_state_text(view: AccessEventView) -> str:
    """The review state of a break-glass access, for people; empty for other events."""
    if view.review is not None:
        r = view.review
        notes = f": {r.review.notes!r}" if r.review.notes else ""
        return f"reviewed #{r.entry.index}: {r.review.outcome.upper()}{notes}"
    return "UNREVIEWED" if view.break_glass else ""


def access_event_view_line(view: AccessEventView, log_key: bytes) -> str:
    """One line for an access event in the patient's listing, with the review state of a break-glass access."""
    if view.event is None:
        by = f" by #{view.entry.erased_by}" if view.entry.erased_by is not None else ""
        text = f"#{view.index:<4} {format_time(view.entry.leaf.integrated_time_ms)}  access event (body erased{by})"
    else:
        text = access_event_line(view.entry, view.event, log_key)
    state = review_state_text(view)
    return f"{text}  [{state}]" if state else text


def access_event_view_json(view: AccessEventView, log_key: bytes) -> dict[str, Any]:
    base = (
        access_event_json(view.entry, view.event, log_key)
        if view.event is not None
        else {"index": view.index, "integrated_time": iso_time(view.entry.leaf.integrated_time_ms), "event": None,
              "body_erased": True, "erased_by_index": view.entry.erased_by}
    )
    review = None
    if view.review is not None:
        review = {"index": view.review.entry.index, **_jsonable(view.review.review)}
    return {**base, "break_glass": view.break_glass, "review_state": view.review_state, "review": review}
