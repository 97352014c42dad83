"""Receipts that travel: JSON bundles anyone can verify offline with only the log's verifier key.

A *consent bundle* holds one consent entry (leaf bytes, envelope body, inclusion proof) and the signed
checkpoint it is proven against. Its ``consent_record`` part describes the consent with ISO/IEC TS 27560
consent-record field names where they fit; it is derived from the signed payload, and verification re-derives
it and refuses a bundle whose description differs. A *decision receipt* is the ledger's signed receipt for an
access decision, bound to a checkpoint.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from consent_ledger.core import payloads
from consent_ledger.core.checkpoint import Checkpoint, open_checkpoint
from consent_ledger.core.decision import Decision
from consent_ledger.core.errors import InvalidInput, VerificationError
from consent_ledger.core.note import parse_verifier_key
from consent_ledger.core.receipt import open_receipt
from consent_ledger.core.timing import MAX_CLOCK_SKEW_MS, is_ahead
from consent_ledger.core.witness_policy import WitnessedCheckpoint, WitnessPolicy, verify_witnessed_extension
from consent_ledger_client.errors import DecisionTimeMismatch, EntryFromTheFuture
from consent_ledger_client.verify import VerifiedEntry, verify_entry

Clock = Callable[[], int]  # ms since the epoch


def _now_ms() -> int:
    return time.time_ns() // 1_000_000

BUNDLE_FORMAT = "consent-ledger-consent-bundle/v1"
RECEIPT_FORMAT = "consent-ledger-decision-receipt/v1"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s: object, what: str) -> bytes:
    if not isinstance(s, str):
        raise InvalidInput(f"bundle: {what} is not a base64 string")
    try:
        return base64.b64decode(s, validate=True)
    except ValueError:
        raise InvalidInput(f"bundle: {what} is not valid base64") from None


def _witnessed_json(note: bytes, consistency: Sequence[bytes]) -> dict[str, Any]:
    return {"checkpoint": note.decode("utf-8"), "consistency": [_b64(h) for h in consistency]}


def _check_witnessed(
    data: dict[str, Any], cp: Checkpoint, verifier_key: str, policy: WitnessPolicy, now_s: int | None
) -> WitnessedCheckpoint:
    """The document's witnessed checkpoint verified under ``policy`` (cosignature ages against ``now_s``; None: not
    checked) and consistent with ``cp`` by the document's proof. Raises VerificationError or the policy's errors."""
    w = data.get("witnessed")
    if w is None:
        raise VerificationError("the witness policy needs a witnessed checkpoint, and the document carries none")
    try:
        note = str(w["checkpoint"]).encode("utf-8")
        proof = [_unb64(h, "witnessed consistency hash") for h in w["consistency"]]
    except (InvalidInput, KeyError, TypeError) as e:
        raise VerificationError(f"malformed witnessed checkpoint: {e}") from e
    try:
        wc = policy.verify(note, parse_verifier_key(verifier_key), now_s)
    except InvalidInput as e:
        raise VerificationError(f"witnessed checkpoint: {e}") from e
    verify_witnessed_extension(wc.checkpoint, cp, proof)
    return wc


def consent_record(entry: VerifiedEntry) -> dict[str, Any]:
    """The ISO/IEC TS 27560-style description of a grant or revocation entry."""
    if entry.envelope is None:
        raise InvalidInput("the entry's body was erased: there is nothing to describe")
    p = payloads.parse_payload(entry.envelope.payload_type, entry.envelope.payload)
    cid = payloads.consent_id(entry.envelope.payload)
    event_time = entry.leaf.integrated_time_ms
    if isinstance(p, payloads.ConsentGrantPayload):
        return {
            "schema_version": "ISO/IEC TS 27560:2023 (field names where they fit)",
            "record_id": cid,
            "pii_principal_id": p.patient.hex(),
            "pii_controllers": [p.grantee],
            "purposes": list(p.purposes),
            "processing": list(p.actions),
            "pii_categories": list(p.data_classes),
            "sensitive_pii_categories": list(p.sensitivity_labels),
            "consent_type": "explicit",
            "decision": p.decision,
            "legal_basis": {"code": p.legal_basis.code, "text": p.legal_basis.text} if p.legal_basis else None,
            "validity": {"start_ms": p.validity.start_ms, "end_ms": p.validity.end_ms},
            "supersedes": p.supersedes,
            "event": [{"event_type": "consent given", "event_time_ms": event_time, "issued_at_ms": p.issued_at_ms}],
        }
    if isinstance(p, payloads.ConsentRevocationPayload):
        return {
            "schema_version": "ISO/IEC TS 27560:2023 (field names where they fit)",
            "record_id": p.consent_id,
            "pii_principal_id": p.patient.hex(),
            "event": [
                {
                    "event_type": "consent withdrawn",
                    "event_time_ms": event_time,
                    "issued_at_ms": p.issued_at_ms,
                    "reason": p.reason,
                    "withdrawal_id": cid,
                }
            ],
        }
    raise InvalidInput(f"entry {entry.index} is a {entry.envelope.payload_type}, not a consent")


def export_consent_bundle(
    entry: VerifiedEntry,
    checkpoint_note: bytes,
    verifier_key: str,
    witnessed: tuple[bytes, Sequence[bytes]] | None = None,
) -> dict[str, Any]:
    """A JSON-ready bundle for a verified consent entry and the signed checkpoint it was proven against; with
    ``witnessed`` = (witnessed checkpoint note, consistency proof between it and the checkpoint), also those."""
    if entry.envelope is None:
        raise InvalidInput("the entry's body was erased: a bundle needs the body")
    extra = {"witnessed": _witnessed_json(witnessed[0], witnessed[1])} if witnessed is not None else {}
    return {
        **extra,
        "format": BUNDLE_FORMAT,
        "consent_record": consent_record(entry),
        "log": {
            "verifier_key": verifier_key,
            "checkpoint": checkpoint_note.decode("utf-8"),
            "index": entry.index,
            "leaf": _b64(entry.leaf_bytes),
            "envelope": _b64(entry.envelope.raw),
            "inclusion_proof": [_b64(h) for h in entry.proof],
        },
    }


@dataclass(frozen=True)
class VerifiedBundle:
    entry: VerifiedEntry
    checkpoint: Checkpoint
    consent_record: dict[str, Any]
    witnessed: WitnessedCheckpoint | None = None


def verify_consent_bundle(
    bundle: dict[str, Any] | str,
    verifier_key: str,
    *,
    clock_ms: Clock = _now_ms,
    max_clock_skew_ms: int = MAX_CLOCK_SKEW_MS,
    witness_policy: WitnessPolicy | None = None,
) -> VerifiedBundle:
    """Verify a bundle offline against the pinned ``verifier_key`` (never the one the bundle names).

    With ``witness_policy``: the bundle's witnessed checkpoint must carry a quorum of the pinned witnesses'
    cosignatures and be consistent with the bundle's checkpoint (the consent is in the history the witnesses saw);
    their age is not checked: a bundle proves a past fact, not that it is current.

    Raises VerificationError when anything fails: the checkpoint signature, the inclusion proof, the body's
    commitment, the envelope's signatures, or a description that does not match the signed payload; and
    EntryFromTheFuture when the entry is dated after ``clock_ms`` plus the skew.
    """
    try:
        data = json.loads(bundle) if isinstance(bundle, str) else bundle
        if data.get("format") != BUNDLE_FORMAT:
            raise InvalidInput(f"not a {BUNDLE_FORMAT} bundle")
        log = data["log"]
        note = str(log["checkpoint"]).encode("utf-8")
        index = log["index"]
        if type(index) is not int or index < 0:
            raise InvalidInput("bundle: index is not a non-negative integer")
        leaf = _unb64(log["leaf"], "leaf")
        envelope = _unb64(log["envelope"], "envelope")
        proof = [_unb64(h, "proof hash") for h in log["inclusion_proof"]]
    # RecursionError: json.loads of deeply nested arrays or objects.
    except (InvalidInput, KeyError, TypeError, AttributeError, ValueError, RecursionError) as e:
        raise VerificationError(f"malformed bundle: {e}") from e
    try:
        cp = open_checkpoint(note, parse_verifier_key(verifier_key))
    except InvalidInput as e:
        raise VerificationError(f"bundle checkpoint: {e}") from e
    entry = verify_entry(index, leaf, envelope, proof, cp)
    now = clock_ms()
    if is_ahead(entry.leaf.integrated_time_ms, now, max_clock_skew_ms):
        raise EntryFromTheFuture(index, entry.leaf.integrated_time_ms, now, max_clock_skew_ms)
    try:
        record = consent_record(entry)
    except InvalidInput as e:
        raise VerificationError(str(e)) from e
    if record != data.get("consent_record"):
        raise VerificationError("the bundle's consent record does not match the signed consent")
    wc = _check_witnessed(data, cp, verifier_key, witness_policy, None) if witness_policy is not None else None
    return VerifiedBundle(entry, cp, record, wc)


def export_decision_receipt(
    receipt: bytes, witnessed: tuple[bytes, Sequence[bytes]] | None = None
) -> dict[str, Any]:
    """The receipt document; with ``witnessed`` = (witnessed checkpoint note, consistency proof from it to the
    receipt's checkpoint), also those (VerifiedDecision.witnessed and .witnessed_consistency)."""
    doc: dict[str, Any] = {"format": RECEIPT_FORMAT, "receipt": _b64(receipt)}
    if witnessed is not None:
        doc["witnessed"] = _witnessed_json(witnessed[0], witnessed[1])
    return doc


@dataclass(frozen=True)
class VerifiedReceipt:
    """A verified receipt; ``valid_now``: its ``valid_until`` was still ahead by the verifier's clock (a receipt
    stays evidence of what the ledger stated after that, but is no longer a decision to act on)."""

    decision: Decision
    checkpoint: Checkpoint
    valid_now: bool = False
    witnessed: WitnessedCheckpoint | None = None


def verify_decision_receipt(
    data: dict[str, Any] | str | bytes,
    verifier_key: str,
    *,
    clock_ms: Clock = _now_ms,
    max_clock_skew_ms: int = MAX_CLOCK_SKEW_MS,
    witness_policy: WitnessPolicy | None = None,
) -> VerifiedReceipt:
    """Verify a decision receipt offline: the ledger's signature and the checkpoint it is bound to, and that the
    decision is not made for a time after ``clock_ms`` plus the skew (DecisionTimeMismatch): decisions are made
    for now, so a receipt from the future is a lie. With ``witness_policy``: the document's witnessed checkpoint
    carries a quorum of the pinned witnesses' cosignatures dated within the policy's age of the decision's time,
    and the receipt's checkpoint extends it (so the decision rests on the log the witnesses saw, as it was then)."""
    obj: dict[str, Any] = {}
    try:
        if isinstance(data, bytes):
            raw = data
        else:
            obj = json.loads(data) if isinstance(data, str) else data
            if obj.get("format") != RECEIPT_FORMAT:
                raise InvalidInput(f"not a {RECEIPT_FORMAT} document")
            raw = _unb64(obj["receipt"], "receipt")
    except (InvalidInput, KeyError, TypeError, AttributeError, ValueError, RecursionError) as e:
        raise VerificationError(f"malformed receipt document: {e}") from e
    verifier = parse_verifier_key(verifier_key)
    receipt = open_receipt(raw, verifier.public_key)
    try:
        cp = open_checkpoint(receipt.checkpoint_note, verifier)
    except InvalidInput as e:
        raise VerificationError(f"receipt checkpoint: {e}") from e
    now = clock_ms()
    d = receipt.decision
    if is_ahead(d.request.time_ms, now, max_clock_skew_ms):
        raise DecisionTimeMismatch(d.request.time_ms, now, max_clock_skew_ms)
    wc = None
    if witness_policy is not None:
        wc = _check_witnessed(obj, cp, verifier_key, witness_policy, d.request.time_ms // 1000)
        if wc.checkpoint.size > cp.size:
            raise VerificationError("the receipt's checkpoint is older than its witnessed checkpoint")
    return VerifiedReceipt(d, cp, d.valid_until_ms > now, wc)
