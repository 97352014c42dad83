"""Decisions as bytes, and signed receipts binding a decision to a checkpoint.

A decision's canonical bytes are the deterministic serialization of consent_ledger.v1.Decision
(access.proto) as `encode_decision` builds it; `decode_decision` accepts only those bytes, so a
decision has one encoding and a client can compare the server's decision with its own
re-evaluation value by value or byte by byte.

A receipt is a serialized `SignedReceipt`: the body (deterministic `ReceiptBody`: the decision
and the ledger's signed checkpoint note it was made at) and an Ed25519 signature by the ledger
key over "consent-ledger/receipt/v1\\n" || body. The prefix keeps a receipt signature from ever
being mistaken for a checkpoint (signed-note) or envelope (DSSE) signature by the same key. An
insurer keeps the receipt as evidence; an auditor holding a receipt that contradicts the log
proves the operator lied. Checking the checkpoint note itself (its signature, its consistency
with the log) is the caller's job with the note and checkpoint modules.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from google.protobuf.message import DecodeError, Message

from consent_ledger.core.crypto import Ed25519PrivateKey, verify_signature
from consent_ledger.core.decision import (
    AccessRequest,
    CategoryOutcome,
    Decision,
    Obligation,
    Policy,
    Reason,
    check_request,
)
from consent_ledger.core.envelope import keyid_for
from consent_ledger.core.errors import ConsentLedgerError, InvalidInput, VerificationError
from consent_ledger.core.payloads import (
    DataItem,
    build_access_event,
    DENY,
    PARTIAL,
    PERMIT,
    Period,
    check_consent_id,
    data_item_from_pb,
    data_item_to_pb,
)
from consent_ledger.v1 import access_pb2 as apb
from consent_ledger.v1 import payloads_pb2 as pb

__all__ = [
    "access_event_for",
    "MAX_RECEIPT_SIZE",
    "RECEIPT_CONTEXT",
    "Receipt",
    "decision_from_pb",
    "decision_to_pb",
    "decode_decision",
    "encode_decision",
    "open_receipt",
    "receipt_body",
    "receipt_sha256",
    "sign_receipt",
    "verify_receipt",
]

RECEIPT_CONTEXT = b"consent-ledger/receipt/v1\n"
MAX_RECEIPT_SIZE = 256 * 1024
MAX_CHECKPOINT_NOTE_SIZE = 16 * 1024

_DECISIONS = {
    PERMIT: pb.ACCESS_DECISION_PERMIT,
    DENY: pb.ACCESS_DECISION_DENY,
    PARTIAL: pb.ACCESS_DECISION_PARTIAL,
}
_DECISIONS_BACK = {v: k for k, v in _DECISIONS.items()}


@dataclass(frozen=True, kw_only=True)
class Receipt:
    """An opened receipt: the decision, the checkpoint note it is bound to, and the exact
    signed bytes."""

    decision: Decision
    checkpoint_note: bytes
    body: bytes
    signer: bytes
    signature: bytes


# --- Decision <-> protobuf ----------------------------------------------------------------------


def decision_to_pb(d: Decision) -> apb.Decision:
    """The access.proto Decision message for a decision value."""
    r = d.request
    request = apb.AccessRequest(
        patient=r.patient,
        requester_id=r.requester_id,
        requester_roles=r.requester_roles,
        action=r.action,
        purpose=r.purpose,
        data=[data_item_to_pb(i) for i in r.data],
        data_period=(
            None if r.data_period.unbounded
            else pb.Period(start_ms=r.data_period.start_ms, end_ms=r.data_period.end_ms)
        ),
        time_ms=r.time_ms,
        break_glass=r.break_glass,
        break_glass_reason=r.break_glass_reason,
    )
    policy = apb.DecisionPolicy(
        implicit=d.policy.implicit,
        decision_ttl_ms=d.policy.decision_ttl_ms,
        break_glass_enabled=d.policy.break_glass_enabled,
        break_glass_window_ms=d.policy.break_glass_window_ms,
    )
    return apb.Decision(
        request=request,
        policy=policy,
        decision=_DECISIONS[d.decision],
        outcomes=[
            apb.CategoryOutcome(
                data=data_item_to_pb(o.data),
                decision=_DECISIONS[o.decision],
                reasons=[apb.Reason(code=x.code, text=x.text) for x in o.reasons],
                consent_ids=o.consent_ids,
                break_glass=o.break_glass,
            )
            for o in d.outcomes
        ],
        consent_ids=d.consent_ids,
        reasons=[apb.Reason(code=x.code, text=x.text) for x in d.reasons],
        obligations=[apb.Obligation(code=x.code, text=x.text) for x in d.obligations],
        valid_until_ms=d.valid_until_ms,
        break_glass_until_ms=d.break_glass_until_ms,
    )


def decision_from_pb(m: apb.Decision) -> Decision:
    """The decision value of an access.proto Decision message. Raises InvalidInput if it is
    not well formed (unknown codes, bad policy, missing fields). Does not re-run the decision."""
    if not m.HasField("request") or not m.HasField("policy"):
        raise InvalidInput("decision: request and policy are required")
    r = m.request
    request = AccessRequest(
        patient=r.patient,
        requester_id=r.requester_id,
        requester_roles=tuple(r.requester_roles),
        action=r.action,
        purpose=r.purpose,
        data=tuple(data_item_from_pb(i) for i in r.data),
        data_period=Period(start_ms=r.data_period.start_ms, end_ms=r.data_period.end_ms),
        time_ms=r.time_ms,
        break_glass=r.break_glass,
        break_glass_reason=r.break_glass_reason,
    )
    check_request(request)
    policy = Policy(
        implicit=m.policy.implicit,
        decision_ttl_ms=m.policy.decision_ttl_ms,
        break_glass_enabled=m.policy.break_glass_enabled,
        break_glass_window_ms=m.policy.break_glass_window_ms,
    )

    def outcome(o: apb.CategoryOutcome) -> CategoryOutcome:
        if _DECISIONS_BACK.get(o.decision) not in (PERMIT, DENY):
            raise InvalidInput("decision: an item's outcome must be PERMIT or DENY")
        return CategoryOutcome(
            data=data_item_from_pb(o.data),
            decision=_DECISIONS_BACK[o.decision],
            reasons=tuple(Reason(x.code, x.text) for x in o.reasons),
            consent_ids=tuple(check_consent_id(c) for c in o.consent_ids),
            break_glass=o.break_glass,
        )

    if m.decision not in _DECISIONS_BACK:
        raise InvalidInput("decision: must be PERMIT, DENY or PARTIAL")
    return Decision(
        request=request,
        policy=policy,
        decision=_DECISIONS_BACK[m.decision],
        outcomes=tuple(outcome(o) for o in m.outcomes),
        consent_ids=tuple(check_consent_id(c) for c in m.consent_ids),
        reasons=tuple(Reason(x.code, x.text) for x in m.reasons),
        obligations=tuple(Obligation(x.code, x.text) for x in m.obligations),
        valid_until_ms=m.valid_until_ms,
        break_glass_until_ms=m.break_glass_until_ms,
    )


def encode_decision(d: Decision) -> bytes:
    """The canonical bytes of a decision."""
    return decision_to_pb(d).SerializeToString(deterministic=True)


def _parse_canonical(message: Message, data: bytes, what: str) -> None:
    try:
        message.ParseFromString(data)
    except (DecodeError, ValueError):
        raise InvalidInput(f"{what} is not a valid protobuf message") from None
    message.DiscardUnknownFields()
    if message.SerializeToString(deterministic=True) != data:
        raise InvalidInput(f"{what} is not in canonical form")


def decode_decision(data: bytes) -> Decision:
    """Parse canonical decision bytes. Raises InvalidInput."""
    data = bytes(data)
    if len(data) > MAX_RECEIPT_SIZE:
        raise InvalidInput(f"decision is larger than {MAX_RECEIPT_SIZE} bytes")
    m = apb.Decision()
    _parse_canonical(m, data, "decision")
    d = decision_from_pb(m)
    if encode_decision(d) != data:
        raise InvalidInput("decision is not in canonical form (empty sub-message present)")
    return d


# --- receipts -----------------------------------------------------------------------------------


def receipt_body(decision: Decision, checkpoint_note: bytes) -> bytes:
    """The bytes a receipt signs: the decision bound to the signed checkpoint note (exact
    bytes, as served) it was made at."""
    if not isinstance(checkpoint_note, bytes) or not checkpoint_note:
        raise InvalidInput("checkpoint note: must be non-empty bytes")
    if len(checkpoint_note) > MAX_CHECKPOINT_NOTE_SIZE:
        raise InvalidInput(f"checkpoint note: larger than {MAX_CHECKPOINT_NOTE_SIZE} bytes")
    body = apb.ReceiptBody(decision=decision_to_pb(decision), checkpoint_note=checkpoint_note)
    return body.SerializeToString(deterministic=True)


def sign_receipt(body: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """Sign a receipt body with the ledger key; return the serialized SignedReceipt."""
    signature = private_key.sign(RECEIPT_CONTEXT + body)
    receipt = apb.SignedReceipt(body=body, keyid=keyid_for(private_key.public_key), signature=signature)
    return receipt.SerializeToString(deterministic=True)


def receipt_sha256(receipt: bytes) -> bytes:
    """The SHA-256 of a receipt's exact bytes (what an AccessEvent cites)."""
    return hashlib.sha256(receipt).digest()


def open_receipt(receipt: bytes, public_key: bytes) -> Receipt:
    """Verify a receipt against the ledger's public key and return its contents.

    Raises VerificationError if the receipt is malformed, signed by another key, or its
    signature or body does not check."""
    try:
        data = bytes(receipt)
        if len(data) > MAX_RECEIPT_SIZE:
            raise InvalidInput(f"receipt is larger than {MAX_RECEIPT_SIZE} bytes")
        signed = apb.SignedReceipt()
        _parse_canonical(signed, data, "receipt")
        expected = keyid_for(public_key)
    except (InvalidInput, TypeError) as exc:
        raise VerificationError(f"receipt: {exc}") from exc
    if signed.keyid != expected:
        raise VerificationError("receipt is not signed by the given ledger key")
    verify_signature(public_key, RECEIPT_CONTEXT + signed.body, signed.signature)
    try:
        body = apb.ReceiptBody()
        _parse_canonical(body, signed.body, "receipt body")
        if not body.HasField("decision") or not body.checkpoint_note:
            raise InvalidInput("receipt body needs a decision and a checkpoint note")
        decision = decision_from_pb(body.decision)
        if receipt_body(decision, body.checkpoint_note) != signed.body:
            raise InvalidInput("receipt body is not in canonical form")
    except ConsentLedgerError as exc:
        # Signed by the ledger key but not a receipt we would make: still not a valid receipt.
        raise VerificationError(f"receipt: {exc}") from exc
    return Receipt(
        decision=decision,
        checkpoint_note=bytes(body.checkpoint_note),
        body=bytes(signed.body),
        signer=bytes(public_key),
        signature=bytes(signed.signature),
    )


def verify_receipt(receipt: bytes, public_key: bytes) -> None:
    """Raise VerificationError unless receipt is a well-formed receipt signed by public_key."""
    open_receipt(receipt, public_key)


def access_event_for(
    decision: Decision,
    receipt: bytes,
    *,
    data: tuple[DataItem, ...] | None = None,
    accessed_at_ms: int | None = None,
) -> bytes:
    """AccessEvent payload bytes recording a decision and the receipt it was given with. ``data`` defaults to
    the data asked for; ``accessed_at_ms`` to now."""
    r = decision.request
    return build_access_event(
        patient=r.patient,
        party_id=r.requester_id,
        action=r.action,
        purpose=r.purpose,
        data=r.data if data is None else data,
        decision=decision.decision,
        consent_ids=decision.consent_ids,
        break_glass=r.break_glass,
        break_glass_reason=r.break_glass_reason,
        accessed_at_ms=accessed_at_ms,
        receipt_sha256=receipt_sha256(receipt),
    )
