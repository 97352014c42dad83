"""Payload kinds: strict parsing, static validation, canonical encoding.

A payload type is the full protobuf message name (`consent_ledger.v1.ConsentGrant`, ...). The
payload bytes are the message's deterministic serialization, and `parse_payload` accepts only
bytes that `encode_payload` would produce for the value they decode to: one encoding per payload,
no unknown fields, no empty sub-messages, so that the consent id (the hex SHA-256 of the payload
bytes) names one consent and nothing rides along unvalidated.

Validation here is static: it needs nothing but the payload. Rules that need the log (the revoked
consent exists and is the same patient's, the signer is the patient or a delegate, the party is
registered) belong to the ledger.

Payloads decode to frozen dataclasses holding domain values (str codes, bytes keys, tuples),
never protobuf objects. The `build_*` functions make payload bytes for clients, with a fresh
random nonce and the current time unless given.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, TypeAlias, TypeVar

from google.protobuf.message import DecodeError, Message

from consent_ledger.core import vocab
from consent_ledger.core.errors import InvalidInput
from consent_ledger.v1 import payloads_pb2 as pb

__all__ = [
    "ACCESS_EVENT",
    "BREAK_GLASS_REVIEW",
    "REVIEW_OUTCOMES",
    "CONSENT_GRANT",
    "CONSENT_REVOCATION",
    "DELEGATION",
    "DENY",
    "ERASURE",
    "STATE_COMMIT",
    "MAX_CLAIMED_AHEAD_MS",
    "MAX_CONSENT_IDS",
    "MAX_LIST",
    "MAX_PAYLOAD_SIZE",
    "MAX_TEXT",
    "NONCE_SIZE",
    "PARTIAL",
    "PARTY_REGISTRATION",
    "PAYLOAD_TYPES",
    "PERMIT",
    "PUBLIC_KEY_SIZE",
    "AccessEventPayload",
    "BreakGlassReviewPayload",
    "ConsentGrantPayload",
    "ConsentRevocationPayload",
    "DataItem",
    "DelegationPayload",
    "ErasurePayload",
    "StateCommitPayload",
    "LegalBasis",
    "PartyRegistrationPayload",
    "Payload",
    "Period",
    "build_access_event",
    "build_break_glass_review",
    "build_delegation",
    "build_erasure",
    "build_state_commit",
    "build_grant",
    "build_party_registration",
    "build_revocation",
    "check_claimed_times",
    "check_consent_id",
    "check_data_items",
    "check_grantee",
    "check_patient_key",
    "consent_id",
    "data_item_from_pb",
    "data_item_to_pb",
    "encode_payload",
    "parse_payload",
]

CONSENT_GRANT = "consent_ledger.v1.ConsentGrant"
CONSENT_REVOCATION = "consent_ledger.v1.ConsentRevocation"
ACCESS_EVENT = "consent_ledger.v1.AccessEvent"
PARTY_REGISTRATION = "consent_ledger.v1.PartyRegistration"
DELEGATION = "consent_ledger.v1.Delegation"
ERASURE = "consent_ledger.v1.Erasure"
STATE_COMMIT = "consent_ledger.v1.StateCommit"
BREAK_GLASS_REVIEW = "consent_ledger.v1.BreakGlassReview"

# What a privacy officer may conclude about a break-glass access.
REVIEW_OUTCOMES = ("justified", "unjustified")

# Decision values, in consents ("PERMIT"/"DENY") and in access decisions (also "PARTIAL").
PERMIT = "PERMIT"
DENY = "DENY"
PARTIAL = "PARTIAL"

MAX_PAYLOAD_SIZE = 32 * 1024
NONCE_SIZE = 16
PUBLIC_KEY_SIZE = 32
SHA256_SIZE = 32
# Longest list of codes (actions, purposes, data classes, labels, roles, items) in a payload.
MAX_LIST = 32
MAX_CONSENT_IDS = 64
MAX_PUBLIC_KEYS = 8
# Longest free text (reasons, legal basis text), in characters.
MAX_TEXT = 1024
MAX_DISPLAY_NAME = 200
MAX_LEGAL_BASIS_CODE = 64
# Largest millisecond timestamp accepted (year 9999), so arithmetic on times stays sane.
MAX_TIME_MS = 253_402_300_799_999

_CONSENT_ID = re.compile(r"[0-9a-f]{64}")
_LEGAL_CODE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:/-]{{0,{MAX_LEGAL_BASIS_CODE - 1}}}")
# C0 controls other than tab and newline, DEL and C1 controls.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

_CONSENT_DECISIONS = {pb.CONSENT_DECISION_PERMIT: PERMIT, pb.CONSENT_DECISION_DENY: DENY}
_ACCESS_DECISIONS = {
    pb.ACCESS_DECISION_PERMIT: PERMIT,
    pb.ACCESS_DECISION_DENY: DENY,
    pb.ACCESS_DECISION_PARTIAL: PARTIAL,
}
_RELATIONSHIPS = ("guardian", "proxy")
_DELEGATION_SCOPES = ("grant", "revoke", vocab.WILDCARD)


# --- value types shared by several kinds -------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """The half-open interval [start_ms, end_ms) in ms since the epoch; 0 is unbounded."""

    start_ms: int = 0
    end_ms: int = 0

    @property
    def unbounded(self) -> bool:
        return self.start_ms == 0 and self.end_ms == 0

    def contains(self, t_ms: int) -> bool:
        """start_ms <= t_ms < end_ms, an unset side being unbounded."""
        return (self.start_ms == 0 or self.start_ms <= t_ms) and (
            self.end_ms == 0 or t_ms < self.end_ms
        )

    def within(self, outer: Period) -> bool:
        """Every instant of self is in outer (an unbounded side is only within unbounded)."""
        start_ok = outer.start_ms == 0 or (self.start_ms != 0 and self.start_ms >= outer.start_ms)
        end_ok = outer.end_ms == 0 or (self.end_ms != 0 and self.end_ms <= outer.end_ms)
        return start_ok and end_ok

    def overlaps(self, other: Period) -> bool:
        """The two intervals share at least one instant."""
        a = self.start_ms == 0 or other.end_ms == 0 or self.start_ms < other.end_ms
        b = other.start_ms == 0 or self.end_ms == 0 or other.start_ms < self.end_ms
        return a and b


@dataclass(frozen=True)
class DataItem:
    """A data class and the sensitivity labels the data carries (empty: unlabelled)."""

    data_class: str
    sensitivity_labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class LegalBasis:
    """The legal basis a consent cites: a short code (e.g. "PIPL-29"), free text, or both."""

    code: str = ""
    text: str = ""


# --- the payload kinds --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ConsentGrantPayload:
    """A patient permits or denies a grantee something (docs/design.md section 3).

    decision is PERMIT or DENY; data_classes may be the single wildcard "*"; validity and
    data_period are unbounded Periods when not set; supersedes is a consent id or None."""

    PAYLOAD_TYPE: ClassVar[str] = CONSENT_GRANT

    patient: bytes
    grantee: str
    decision: str
    actions: tuple[str, ...]
    purposes: tuple[str, ...]
    data_classes: tuple[str, ...]
    sensitivity_labels: tuple[str, ...] = ()
    data_period: Period = Period()
    validity: Period = Period()
    supersedes: str | None = None
    legal_basis: LegalBasis | None = None
    issued_at_ms: int
    nonce: bytes


@dataclass(frozen=True, kw_only=True)
class ConsentRevocationPayload:
    """Ends the consent `consent_id` from the revocation's integration time on."""

    PAYLOAD_TYPE: ClassVar[str] = CONSENT_REVOCATION

    patient: bytes
    consent_id: str
    reason: str = ""
    issued_at_ms: int
    nonce: bytes


@dataclass(frozen=True, kw_only=True)
class PartyRegistrationPayload:
    """The operator registers an organisation with its roles and keys, and the capabilities it grants it beyond
    its roles (vocab.CAPABILITIES; none by default). The latest registration of a party is the one in force."""

    PAYLOAD_TYPE: ClassVar[str] = PARTY_REGISTRATION

    party_id: str
    roles: tuple[str, ...]
    public_keys: tuple[bytes, ...]
    display_name: str
    issued_at_ms: int
    nonce: bytes
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class AccessEventPayload:
    """An organisation records an access or a refused request.

    decision is PERMIT, DENY or PARTIAL; break_glass_reason is non-empty exactly when
    break_glass; receipt_sha256 is empty or the SHA-256 of the signed receipt relied on."""

    PAYLOAD_TYPE: ClassVar[str] = ACCESS_EVENT

    patient: bytes
    party_id: str
    action: str
    purpose: str
    data: tuple[DataItem, ...]
    decision: str
    consent_ids: tuple[str, ...] = ()
    break_glass: bool = False
    break_glass_reason: str = ""
    accessed_at_ms: int
    receipt_sha256: bytes = b""
    issued_at_ms: int
    nonce: bytes

    @property
    def break_glass_access(self) -> bool:
        """Data was (or may have been) accessed under break-glass: the event says break-glass and the decision
        permitted something. Exactly these events enter the review queue."""
        return self.break_glass and self.decision != DENY


@dataclass(frozen=True, kw_only=True)
class DelegationPayload:
    """A patient (or, with ``attested_by``, a registered organisation attesting a guardian) authorises a
    delegate key as guardian or proxy to sign the patient's grants and/or revocations (``scope``: "grant",
    "revoke" or "*"), within ``validity`` and before ``majority_date_ms`` (0: none). An attested delegation
    is a guardian's with an evidence reference. The rules of signing and being in force are in
    core.delegation."""

    PAYLOAD_TYPE: ClassVar[str] = DELEGATION

    patient: bytes
    delegate: bytes
    relationship: str
    scope: tuple[str, ...]
    validity: Period = Period()
    majority_date_ms: int = 0
    evidence_reference: str = ""
    attested_by: str = ""
    issued_at_ms: int
    nonce: bytes


@dataclass(frozen=True, kw_only=True)
class ErasurePayload:
    """The operator records that the body of entry `index` was erased, and why. For a consent grant or revocation
    it also names what replaying the consent state needs (core.state_rules.erasure_facts): a grant's consent id
    and map key, and the consent a revocation or grant ends; empty otherwise."""

    PAYLOAD_TYPE: ClassVar[str] = ERASURE

    index: int
    reason: str
    issued_at_ms: int
    nonce: bytes
    consent_id: str = ""
    map_key: bytes = b""
    ends: str = ""


@dataclass(frozen=True, kw_only=True)
class BreakGlassReviewPayload:
    """The operator's review of the break-glass AccessEvent at ``event_index``: an outcome from REVIEW_OUTCOMES
    and free-text notes (may be empty)."""

    PAYLOAD_TYPE: ClassVar[str] = BREAK_GLASS_REVIEW

    event_index: int
    outcome: str
    notes: str = ""
    issued_at_ms: int
    nonce: bytes


@dataclass(frozen=True, kw_only=True)
class StateCommitPayload:
    """The consent-state map's root after a batch, and the batch's time (docs/design.md section 5)."""

    PAYLOAD_TYPE: ClassVar[str] = STATE_COMMIT

    map_root: bytes
    batch_time_ms: int
    issued_at_ms: int
    nonce: bytes
    # The map VRF public key the map's keys are derived with; empty before map keys were VRF outputs.
    map_vrf_public_key: bytes = b""


Payload: TypeAlias = (
    ConsentGrantPayload
    | ConsentRevocationPayload
    | PartyRegistrationPayload
    | AccessEventPayload
    | DelegationPayload
    | ErasurePayload
    | BreakGlassReviewPayload
    | StateCommitPayload
)


# --- field checks -------------------------------------------------------------------------------


def check_patient_key(key: object, what: str = "patient") -> bytes:
    """Return key if it is a 32-byte Ed25519 public key; else raise InvalidInput."""
    if not isinstance(key, bytes) or len(key) != PUBLIC_KEY_SIZE:
        n = len(key) if isinstance(key, bytes) else type(key).__name__
        raise InvalidInput(f"{what}: must be a {PUBLIC_KEY_SIZE}-byte Ed25519 public key, got {n}")
    return key


def check_consent_id(value: object, what: str = "consent id") -> str:
    """Return value if it is 64 lower-case hex digits (a SHA-256); else raise InvalidInput."""
    if not isinstance(value, str) or not _CONSENT_ID.fullmatch(value):
        raise InvalidInput(f"{what}: {value!r:.80} is not 64 lower-case hex digits")
    return value


def check_grantee(selector: object, what: str = "grantee") -> str:
    """Return selector if it is "org:<party id>", "role:<known role>" or "any"."""
    if not isinstance(selector, str) or not selector:
        raise InvalidInput(f"{what}: grantee is empty")
    if selector == "any":
        return selector
    if selector.startswith("org:"):
        vocab.check_party_id(selector[4:], f"{what} {selector!r:.80}")
        return selector
    if selector.startswith("role:"):
        vocab.check_role(selector[5:], f"{what} {selector!r:.80}")
        return selector
    raise InvalidInput(f"{what}: {selector!r:.80} is not org:<party id>, role:<role> or any")


def _check_nonce(nonce: object) -> None:
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
        n = len(nonce) if isinstance(nonce, bytes) else type(nonce).__name__
        raise InvalidInput(f"nonce: must be {NONCE_SIZE} bytes, got {n}")


def _check_time(value: object, what: str, *, allow_zero: bool = False) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"{what}: must be an integer")
    low = 0 if allow_zero else 1
    if not low <= value <= MAX_TIME_MS:
        bound = "zero or positive" if allow_zero else "positive"
        raise InvalidInput(f"{what}: {value} is not a {bound} time in ms before year 10000")


# How far ahead of the admitting ledger's clock a signer may date its entry (issued at; an access event's accessed
# at): clocks drift by seconds, not minutes. An entry dated later is refused (docs/design.md section 7).
MAX_CLAIMED_AHEAD_MS = 5 * 60 * 1000


def check_claimed_times(p: object, now_ms: int) -> None:
    """Raise InvalidInput when a time the payload's signer claims (``issued_at_ms``, ``accessed_at_ms``) is more
    than MAX_CLAIMED_AHEAD_MS after ``now_ms``, the clock of the ledger admitting it."""
    for what, value in (("issued at", getattr(p, "issued_at_ms", None)), ("accessed at", getattr(p, "accessed_at_ms", None))):
        if isinstance(value, int) and value > now_ms + MAX_CLAIMED_AHEAD_MS:
            raise InvalidInput(
                f"{what}: {value} is {(value - now_ms) / 1000:.0f} s ahead of the ledger's clock (at most "
                f"{MAX_CLAIMED_AHEAD_MS // 1000} s accepted): check the signer's clock"
            )


def _check_period(period: object, what: str) -> None:
    if not isinstance(period, Period):
        raise InvalidInput(f"{what}: must be a Period")
    _check_time(period.start_ms, f"{what} start", allow_zero=True)
    _check_time(period.end_ms, f"{what} end", allow_zero=True)
    if period.start_ms and period.end_ms and period.end_ms <= period.start_ms:
        raise InvalidInput(
            f"{what}: ends ({period.end_ms}) before or when it starts ({period.start_ms})"
        )


def _check_text(value: object, what: str, *, max_chars: int = MAX_TEXT, required: bool = False) -> None:
    if not isinstance(value, str):
        raise InvalidInput(f"{what}: must be text")
    if required and not value.strip():
        raise InvalidInput(f"{what}: must not be empty")
    if len(value) > max_chars:
        raise InvalidInput(f"{what}: longer than {max_chars} characters")
    if _CONTROL.search(value):
        raise InvalidInput(f"{what}: contains control characters")


def _check_wildcard_alone(codes: tuple[str, ...], what: str) -> None:
    if vocab.WILDCARD in codes and len(codes) > 1:
        raise InvalidInput(f"{what}: the wildcard {vocab.WILDCARD!r} must be the only entry")


def _check_data_class_wild(code: object, what: str) -> str:
    return vocab.check_data_class(code, what, allow_wildcard=True)


def _check_labels(labels: object, what: str) -> tuple[str, ...]:
    if not isinstance(labels, tuple):
        raise InvalidInput(f"{what}: must be a tuple")
    return vocab.check_codes(
        labels, vocab.check_sensitivity_label, what, max_items=MAX_LIST, min_items=0
    )


def _check_tuple(value: object, what: str) -> tuple[Any, ...]:
    if not isinstance(value, tuple):
        raise InvalidInput(f"{what}: must be a tuple")
    return value


def _validate_grant(p: ConsentGrantPayload) -> None:
    check_patient_key(p.patient)
    check_grantee(p.grantee)
    if p.decision not in (PERMIT, DENY):
        raise InvalidInput(f"decision: must be {PERMIT} or {DENY}, got {p.decision!r:.40}")
    vocab.check_codes(_check_tuple(p.actions, "actions"), vocab.check_action, "actions", max_items=MAX_LIST)
    vocab.check_codes(_check_tuple(p.purposes, "purposes"), vocab.check_purpose, "purposes", max_items=MAX_LIST)
    classes = vocab.check_codes(
        _check_tuple(p.data_classes, "data classes"), _check_data_class_wild, "data classes", max_items=MAX_LIST
    )
    _check_wildcard_alone(classes, "data classes")
    _check_labels(p.sensitivity_labels, "sensitivity labels")
    _check_period(p.data_period, "data period")
    _check_period(p.validity, "validity")
    if p.supersedes is not None:
        check_consent_id(p.supersedes, "supersedes")
    if p.legal_basis is not None:
        if not isinstance(p.legal_basis, LegalBasis):
            raise InvalidInput("legal basis: must be a LegalBasis")
        if not p.legal_basis.code and not p.legal_basis.text:
            raise InvalidInput("legal basis: give a code, a text or both (or no legal basis)")
        if not isinstance(p.legal_basis.code, str):
            raise InvalidInput("legal basis code: must be text")
        if p.legal_basis.code and not _LEGAL_CODE.fullmatch(p.legal_basis.code):
            raise InvalidInput(
                f"legal basis code: {p.legal_basis.code!r:.80} is not 1 to {MAX_LEGAL_BASIS_CODE} "
                "letters, digits or ._:/-"
            )
        _check_text(p.legal_basis.text, "legal basis text")
    _check_time(p.issued_at_ms, "issued at")
    _check_nonce(p.nonce)


def _validate_revocation(p: ConsentRevocationPayload) -> None:
    check_patient_key(p.patient)
    check_consent_id(p.consent_id)
    _check_text(p.reason, "reason")
    _check_time(p.issued_at_ms, "issued at")
    _check_nonce(p.nonce)


def _validate_party(p: PartyRegistrationPayload) -> None:
    vocab.check_party_id(p.party_id)
    vocab.check_codes(_check_tuple(p.roles, "roles"), vocab.check_role, "roles", max_items=len(vocab.ROLES))
    keys = _check_tuple(p.public_keys, "public keys")
    if not 1 <= len(keys) <= MAX_PUBLIC_KEYS:
        raise InvalidInput(f"public keys: 1 to {MAX_PUBLIC_KEYS} required, got {len(keys)}")
    for k in keys:
        check_patient_key(k, "public key")
    if len(set(keys)) != len(keys):
        raise InvalidInput("public keys: a key is listed twice")
    _check_text(p.display_name, "display name", max_chars=MAX_DISPLAY_NAME, required=True)
    vocab.check_codes(
        _check_tuple(p.capabilities, "capabilities"), vocab.check_capability, "capabilities",
        max_items=len(vocab.CAPABILITIES), min_items=0,
    )
    _check_time(p.issued_at_ms, "issued at")
    _check_nonce(p.nonce)


def _validate_access_event(p: AccessEventPayload) -> None:
    check_patient_key(p.patient)
    vocab.check_party_id(p.party_id)
    vocab.check_action(p.action)
    vocab.check_purpose(p.purpose)
    items = _check_tuple(p.data, "data")
    if not 1 <= len(items) <= MAX_LIST:
        raise InvalidInput(f"data: 1 to {MAX_LIST} items required, got {len(items)}")
    check_data_items(items)
    if p.decision not in (PERMIT, DENY, PARTIAL):
        raise InvalidInput(f"decision: must be PERMIT, DENY or PARTIAL, got {p.decision!r:.40}")
    vocab.check_codes(
        _check_tuple(p.consent_ids, "consent ids"), check_consent_id, "consent ids",
        max_items=MAX_CONSENT_IDS, min_items=0,
    )
    if not isinstance(p.break_glass, bool):
        raise InvalidInput("break glass: must be a bool")
    _check_text(p.break_glass_reason, "break-glass reason", required=p.break_glass)
    if not p.break_glass and p.break_glass_reason:
        raise InvalidInput("break-glass reason: given without break glass")
    _check_time(p.accessed_at_ms, "accessed at")
    if not isinstance(p.receipt_sha256, bytes) or len(p.receipt_sha256) not in (0, SHA256_SIZE):
        raise InvalidInput("receipt sha256: must be empty or 32 bytes")
    _check_time(p.issued_at_ms, "issued at")
    _check_nonce(p.nonce)


def check_data_items(items: Sequence[object], what: str = "data") -> tuple[DataItem, ...]:
    """Check requested data items: known classes (no wildcard), known labels without
    duplicates, and no item listed twice. Returns them as a tuple."""
    out: list[DataItem] = []
    for item in items:
        if not isinstance(item, DataItem):
            raise InvalidInput(f"{what}: items must be DataItem")
        vocab.check_data_class(item.data_class, f"{what} item")
        _check_labels(item.sensitivity_labels, f"{what} item {item.data_class} labels")
        out.append(item)
    seen: set[tuple[str, frozenset[str]]] = set()
    for item in out:
        key = (item.data_class, frozenset(item.sensitivity_labels))
        if key in seen:
            raise InvalidInput(f"{what}: item {item.data_class} with the same labels is listed twice")
        seen.add(key)
    return tuple(out)


def _validate_delegation(p: DelegationPayload) -> None:
    check_patient_key(p.patient)
    check_patient_key(p.delegate, "delegate")
    if p.delegate == p.patient:
        raise InvalidInput("delegate: must not be the patient's own key")
    if p.relationship not in _RELATIONSHIPS:
        raise InvalidInput(f"relationship: must be guardian or proxy, got {p.relationship!r:.40}")

    def check_scope(code: object, what: str) -> str:
        if code not in _DELEGATION_SCOPES:
            raise InvalidInput(f"{what}: unknown scope {code!r:.40} (grant, revoke or *)")
        return str(code)

    scope = vocab.check_codes(_check_tuple(p.scope, "scope"), check_scope, "scope", max_items=3)
    _check_wildcard_alone(scope, "scope")
    _check_period(p.validity, "validity")
    _check_time(p.majority_date_ms, "majority date", allow_zero=True)
    _check_text(p.evidence_reference, "evidence reference")
    if not isinstance(p.attested_by, str):
        raise InvalidInput("attested by: must be text")
    if p.attested_by:
        vocab.check_party_id(p.attested_by, "attested by")
        if p.relationship != "guardian":
            raise InvalidInput("attested by: an organisation attests guardians only (relationship guardian)")
        if not p.evidence_reference.strip():
            raise InvalidInput("evidence reference: required when an organisation attests the guardian")
    _check_time(p.issued_at_ms, "issued at")
    _check_nonce(p.nonce)


def _validate_erasure(p: ErasurePayload) -> None:
    _check_index(p.index, "index")
    _check_text(p.reason, "reason", required=True)
    if p.consent_id:
        check_consent_id(p.consent_id)
    if not isinstance(p.map_key, bytes) or len(p.map_key) not in (0, SHA256_SIZE):
        raise InvalidInput("map key: must be empty or 32 bytes")
    if bool(p.consent_id) != bool(p.map_key):
        raise InvalidInput("consent id and map key: give both (an erased grant) or neither")
    if p.ends:
        check_consent_id(p.ends, "ends")
    _check_time(p.issued_at_ms, "issued at")
    _check_nonce(p.nonce)


def _check_index(value: object, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise InvalidInput(f"{what}: must be a leaf index")


def _validate_review(p: BreakGlassReviewPayload) -> None:
    _check_index(p.event_index, "event index")
    if p.outcome not in REVIEW_OUTCOMES:
        raise InvalidInput(f"outcome: must be one of {', '.join(REVIEW_OUTCOMES)}, got {p.outcome!r:.40}")
    _check_text(p.notes, "notes")
    _check_time(p.issued_at_ms, "issued at")
    _check_nonce(p.nonce)


def _validate_state_commit(p: StateCommitPayload) -> None:
    if not isinstance(p.map_root, bytes) or len(p.map_root) != 32:
        raise InvalidInput("map root: must be 32 bytes")
    _check_time(p.batch_time_ms, "batch time")
    _check_time(p.issued_at_ms, "issued at")
    _check_nonce(p.nonce)
    if not isinstance(p.map_vrf_public_key, bytes) or len(p.map_vrf_public_key) not in (0, 32):
        raise InvalidInput("map VRF public key: must be 32 bytes (or empty)")


# --- protobuf <-> domain ------------------------------------------------------------------------


def _period_to_pb(p: Period) -> pb.Period | None:
    return None if p.unbounded else pb.Period(start_ms=p.start_ms, end_ms=p.end_ms)


def _period_from_pb(m: pb.Period) -> Period:
    return Period(start_ms=m.start_ms, end_ms=m.end_ms)


def data_item_to_pb(item: DataItem) -> pb.DataItem:
    return pb.DataItem(data_class=item.data_class, sensitivity_labels=item.sensitivity_labels)


def data_item_from_pb(m: pb.DataItem) -> DataItem:
    return DataItem(data_class=m.data_class, sensitivity_labels=tuple(m.sensitivity_labels))


_Enum = TypeVar("_Enum", bound=int)


def _decision_to_pb(table: Mapping[_Enum, str], value: str) -> _Enum:
    """The protobuf enum value of a decision; InvalidInput (never StopIteration) for one the table lacks."""
    for k, v in table.items():
        if v == value:
            return k
    raise InvalidInput(f"decision: {value!r:.40} has no protobuf value")


def _grant_to_pb(p: ConsentGrantPayload) -> pb.ConsentGrant:
    return pb.ConsentGrant(
        patient=p.patient,
        grantee=p.grantee,
        decision=_decision_to_pb(_CONSENT_DECISIONS, p.decision),
        actions=p.actions,
        purposes=p.purposes,
        data_classes=p.data_classes,
        sensitivity_labels=p.sensitivity_labels,
        data_period=_period_to_pb(p.data_period),
        validity=_period_to_pb(p.validity),
        supersedes=p.supersedes or "",
        legal_basis=(
            None if p.legal_basis is None
            else pb.LegalBasis(code=p.legal_basis.code, text=p.legal_basis.text)
        ),
        issued_at_ms=p.issued_at_ms,
        nonce=p.nonce,
    )


def _grant_from_pb(m: pb.ConsentGrant) -> ConsentGrantPayload:
    if m.decision not in _CONSENT_DECISIONS:
        raise InvalidInput(f"decision: must be {PERMIT} or {DENY}")
    return ConsentGrantPayload(
        patient=m.patient,
        grantee=m.grantee,
        decision=_CONSENT_DECISIONS[m.decision],
        actions=tuple(m.actions),
        purposes=tuple(m.purposes),
        data_classes=tuple(m.data_classes),
        sensitivity_labels=tuple(m.sensitivity_labels),
        data_period=_period_from_pb(m.data_period),
        validity=_period_from_pb(m.validity),
        supersedes=m.supersedes or None,
        legal_basis=(
            LegalBasis(code=m.legal_basis.code, text=m.legal_basis.text)
            if m.HasField("legal_basis") else None
        ),
        issued_at_ms=m.issued_at_ms,
        nonce=m.nonce,
    )


def _revocation_to_pb(p: ConsentRevocationPayload) -> pb.ConsentRevocation:
    return pb.ConsentRevocation(
        patient=p.patient, consent_id=p.consent_id, reason=p.reason,
        issued_at_ms=p.issued_at_ms, nonce=p.nonce,
    )


def _revocation_from_pb(m: pb.ConsentRevocation) -> ConsentRevocationPayload:
    return ConsentRevocationPayload(
        patient=m.patient, consent_id=m.consent_id, reason=m.reason,
        issued_at_ms=m.issued_at_ms, nonce=m.nonce,
    )


def _party_to_pb(p: PartyRegistrationPayload) -> pb.PartyRegistration:
    return pb.PartyRegistration(
        party_id=p.party_id, roles=p.roles, public_keys=p.public_keys,
        display_name=p.display_name, issued_at_ms=p.issued_at_ms, nonce=p.nonce, capabilities=p.capabilities,
    )


def _party_from_pb(m: pb.PartyRegistration) -> PartyRegistrationPayload:
    return PartyRegistrationPayload(
        party_id=m.party_id, roles=tuple(m.roles), public_keys=tuple(m.public_keys),
        display_name=m.display_name, issued_at_ms=m.issued_at_ms, nonce=m.nonce, capabilities=tuple(m.capabilities),
    )


def _access_event_to_pb(p: AccessEventPayload) -> pb.AccessEvent:
    return pb.AccessEvent(
        patient=p.patient,
        party_id=p.party_id,
        action=p.action,
        purpose=p.purpose,
        data=[data_item_to_pb(i) for i in p.data],
        decision=_decision_to_pb(_ACCESS_DECISIONS, p.decision),
        consent_ids=p.consent_ids,
        break_glass=p.break_glass,
        break_glass_reason=p.break_glass_reason,
        accessed_at_ms=p.accessed_at_ms,
        receipt_sha256=p.receipt_sha256,
        issued_at_ms=p.issued_at_ms,
        nonce=p.nonce,
    )


def _access_event_from_pb(m: pb.AccessEvent) -> AccessEventPayload:
    if m.decision not in _ACCESS_DECISIONS:
        raise InvalidInput("decision: must be PERMIT, DENY or PARTIAL")
    return AccessEventPayload(
        patient=m.patient,
        party_id=m.party_id,
        action=m.action,
        purpose=m.purpose,
        data=tuple(data_item_from_pb(i) for i in m.data),
        decision=_ACCESS_DECISIONS[m.decision],
        consent_ids=tuple(m.consent_ids),
        break_glass=m.break_glass,
        break_glass_reason=m.break_glass_reason,
        accessed_at_ms=m.accessed_at_ms,
        receipt_sha256=m.receipt_sha256,
        issued_at_ms=m.issued_at_ms,
        nonce=m.nonce,
    )


def _delegation_to_pb(p: DelegationPayload) -> pb.Delegation:
    return pb.Delegation(
        patient=p.patient, delegate=p.delegate, relationship=p.relationship, scope=p.scope,
        validity=_period_to_pb(p.validity), majority_date_ms=p.majority_date_ms,
        evidence_reference=p.evidence_reference, attested_by=p.attested_by, issued_at_ms=p.issued_at_ms,
        nonce=p.nonce,
    )


def _delegation_from_pb(m: pb.Delegation) -> DelegationPayload:
    return DelegationPayload(
        patient=m.patient, delegate=m.delegate, relationship=m.relationship, scope=tuple(m.scope),
        validity=_period_from_pb(m.validity), majority_date_ms=m.majority_date_ms,
        evidence_reference=m.evidence_reference, attested_by=m.attested_by, issued_at_ms=m.issued_at_ms,
        nonce=m.nonce,
    )


def _erasure_to_pb(p: ErasurePayload) -> pb.Erasure:
    return pb.Erasure(
        index=p.index, reason=p.reason, issued_at_ms=p.issued_at_ms, nonce=p.nonce,
        consent_id=p.consent_id, map_key=p.map_key, ends=p.ends,
    )


def _erasure_from_pb(m: pb.Erasure) -> ErasurePayload:
    return ErasurePayload(
        index=m.index, reason=m.reason, issued_at_ms=m.issued_at_ms, nonce=m.nonce,
        consent_id=m.consent_id, map_key=m.map_key, ends=m.ends,
    )


def _review_to_pb(p: BreakGlassReviewPayload) -> pb.BreakGlassReview:
    return pb.BreakGlassReview(
        event_index=p.event_index, outcome=p.outcome, notes=p.notes, issued_at_ms=p.issued_at_ms, nonce=p.nonce
    )


def _review_from_pb(m: pb.BreakGlassReview) -> BreakGlassReviewPayload:
    return BreakGlassReviewPayload(
        event_index=m.event_index, outcome=m.outcome, notes=m.notes, issued_at_ms=m.issued_at_ms, nonce=m.nonce
    )


def _state_commit_to_pb(p: StateCommitPayload) -> pb.StateCommit:
    return pb.StateCommit(
        map_root=p.map_root, batch_time_ms=p.batch_time_ms, issued_at_ms=p.issued_at_ms, nonce=p.nonce,
        map_vrf_public_key=p.map_vrf_public_key,
    )


def _state_commit_from_pb(m: pb.StateCommit) -> StateCommitPayload:
    return StateCommitPayload(
        map_root=m.map_root, batch_time_ms=m.batch_time_ms, issued_at_ms=m.issued_at_ms, nonce=m.nonce,
        map_vrf_public_key=m.map_vrf_public_key,
    )


@dataclass(frozen=True)
class _Kind:
    message: type[Message]
    domain: type[Any]
    to_pb: Callable[[Any], Message]
    from_pb: Callable[[Any], Any]
    validate: Callable[[Any], None]


_KINDS: Mapping[str, _Kind] = MappingProxyType(
    {
        CONSENT_GRANT: _Kind(pb.ConsentGrant, ConsentGrantPayload, _grant_to_pb, _grant_from_pb, _validate_grant),
        CONSENT_REVOCATION: _Kind(
            pb.ConsentRevocation, ConsentRevocationPayload, _revocation_to_pb, _revocation_from_pb,
            _validate_revocation,
        ),
        PARTY_REGISTRATION: _Kind(
            pb.PartyRegistration, PartyRegistrationPayload, _party_to_pb, _party_from_pb, _validate_party
        ),
        ACCESS_EVENT: _Kind(
            pb.AccessEvent, AccessEventPayload, _access_event_to_pb, _access_event_from_pb,
            _validate_access_event,
        ),
        DELEGATION: _Kind(
            pb.Delegation, DelegationPayload, _delegation_to_pb, _delegation_from_pb, _validate_delegation
        ),
        ERASURE: _Kind(pb.Erasure, ErasurePayload, _erasure_to_pb, _erasure_from_pb, _validate_erasure),
        BREAK_GLASS_REVIEW: _Kind(
            pb.BreakGlassReview, BreakGlassReviewPayload, _review_to_pb, _review_from_pb, _validate_review
        ),
        STATE_COMMIT: _Kind(
            pb.StateCommit, StateCommitPayload, _state_commit_to_pb, _state_commit_from_pb, _validate_state_commit
        ),
    }
)
if any(k.message.DESCRIPTOR.full_name != t or k.domain.PAYLOAD_TYPE != t for t, k in _KINDS.items()):
    raise RuntimeError("payload registry does not match the protobuf message names")

#: The registered payload types and their domain classes.
PAYLOAD_TYPES: Mapping[str, type[Any]] = MappingProxyType({t: k.domain for t, k in _KINDS.items()})


# --- the public entry points --------------------------------------------------------------------


def consent_id(payload: bytes) -> str:
    """The id of an entry: the lower-case hex SHA-256 of its exact payload bytes."""
    return hashlib.sha256(payload).hexdigest()


def encode_payload(payload: Payload) -> bytes:
    """Validate a payload value and return its canonical bytes (what parse_payload accepts).
    Raises InvalidInput with what is wrong."""
    kind = _KINDS.get(getattr(type(payload), "PAYLOAD_TYPE", ""))
    if kind is None or not isinstance(payload, kind.domain):
        raise InvalidInput(f"not a payload value: {type(payload).__name__}")
    kind.validate(payload)
    return kind.to_pb(payload).SerializeToString(deterministic=True)


def parse_payload(payload_type: str, payload: bytes) -> Payload:
    """Parse payload bytes of a registered type strictly and validate them statically.

    Requires at most MAX_PAYLOAD_SIZE bytes in the canonical encoding. Raises InvalidInput
    (unknown type, malformed or non-canonical bytes, or a message naming the invalid field)."""
    kind = _KINDS.get(payload_type) if isinstance(payload_type, str) else None
    if kind is None:
        raise InvalidInput(f"unknown payload type {payload_type!r:.140}")
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise InvalidInput("payload must be bytes")
    data = bytes(payload)
    if len(data) > MAX_PAYLOAD_SIZE:
        raise InvalidInput(f"payload is larger than {MAX_PAYLOAD_SIZE} bytes")
    msg = kind.message()
    try:
        msg.ParseFromString(data)
    except (DecodeError, ValueError):
        raise InvalidInput(f"payload is not a valid {payload_type} message") from None
    # Unknown fields survive a parse and re-serialize; drop them so they show as a difference.
    msg.DiscardUnknownFields()
    if msg.SerializeToString(deterministic=True) != data:
        raise InvalidInput(
            "payload is not in canonical form (unknown, repeated or misordered fields)"
        )
    value = kind.from_pb(msg)
    kind.validate(value)
    if kind.to_pb(value).SerializeToString(deterministic=True) != data:
        # Only an explicitly set but empty sub-message (period, legal basis) gets here.
        raise InvalidInput("payload is not in canonical form (empty sub-message present)")
    return value  # type: ignore[no-any-return]


# --- builders (client side) ---------------------------------------------------------------------


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _fresh(issued_at_ms: int | None, nonce: bytes | None) -> dict[str, Any]:
    return {
        "issued_at_ms": _now_ms() if issued_at_ms is None else issued_at_ms,
        "nonce": os.urandom(NONCE_SIZE) if nonce is None else nonce,
    }


def build_grant(
    *,
    patient: bytes,
    grantee: str,
    actions: Iterable[str],
    purposes: Iterable[str],
    data_classes: Iterable[str],
    decision: str = PERMIT,
    sensitivity_labels: Iterable[str] = (),
    data_period: Period | None = None,
    validity: Period | None = None,
    supersedes: str | None = None,
    legal_basis: LegalBasis | None = None,
    issued_at_ms: int | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """ConsentGrant payload bytes. Time defaults to now, nonce to 16 fresh random bytes."""
    return encode_payload(
        ConsentGrantPayload(
            patient=patient,
            grantee=grantee,
            decision=decision,
            actions=tuple(actions),
            purposes=tuple(purposes),
            data_classes=tuple(data_classes),
            sensitivity_labels=tuple(sensitivity_labels),
            data_period=data_period or Period(),
            validity=validity or Period(),
            supersedes=supersedes,
            legal_basis=legal_basis,
            **_fresh(issued_at_ms, nonce),
        )
    )


def build_revocation(
    *,
    patient: bytes,
    consent_id: str,
    reason: str = "",
    issued_at_ms: int | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """ConsentRevocation payload bytes for the consent `consent_id`."""
    return encode_payload(
        ConsentRevocationPayload(
            patient=patient, consent_id=consent_id, reason=reason, **_fresh(issued_at_ms, nonce)
        )
    )


def build_party_registration(
    *,
    party_id: str,
    roles: Iterable[str],
    public_keys: Iterable[bytes],
    display_name: str,
    capabilities: Iterable[str] = (),
    issued_at_ms: int | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """PartyRegistration payload bytes (signed by the operator). ``capabilities``: vocab.CAPABILITIES granted."""
    return encode_payload(
        PartyRegistrationPayload(
            party_id=party_id,
            roles=tuple(roles),
            public_keys=tuple(public_keys),
            display_name=display_name,
            capabilities=tuple(capabilities),
            **_fresh(issued_at_ms, nonce),
        )
    )


def build_access_event(
    *,
    patient: bytes,
    party_id: str,
    action: str,
    purpose: str,
    data: Iterable[DataItem],
    decision: str,
    consent_ids: Iterable[str] = (),
    break_glass: bool = False,
    break_glass_reason: str = "",
    accessed_at_ms: int | None = None,
    receipt_sha256: bytes = b"",
    issued_at_ms: int | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """AccessEvent payload bytes (signed by the organisation). accessed_at defaults to now."""
    fresh = _fresh(issued_at_ms, nonce)
    return encode_payload(
        AccessEventPayload(
            patient=patient,
            party_id=party_id,
            action=action,
            purpose=purpose,
            data=tuple(data),
            decision=decision,
            consent_ids=tuple(consent_ids),
            break_glass=break_glass,
            break_glass_reason=break_glass_reason,
            accessed_at_ms=fresh["issued_at_ms"] if accessed_at_ms is None else accessed_at_ms,
            receipt_sha256=receipt_sha256,
            **fresh,
        )
    )


def build_delegation(
    *,
    patient: bytes,
    delegate: bytes,
    relationship: str,
    scope: Iterable[str],
    validity: Period | None = None,
    majority_date_ms: int = 0,
    evidence_reference: str = "",
    attested_by: str = "",
    issued_at_ms: int | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Delegation payload bytes. ``attested_by``: the party id of the organisation that signs it instead of
    the patient (a guardian for a patient who holds no key yet; needs ``evidence_reference``)."""
    return encode_payload(
        DelegationPayload(
            patient=patient,
            delegate=delegate,
            relationship=relationship,
            scope=tuple(scope),
            validity=validity or Period(),
            majority_date_ms=majority_date_ms,
            evidence_reference=evidence_reference,
            attested_by=attested_by,
            **_fresh(issued_at_ms, nonce),
        )
    )


def build_erasure(
    *,
    index: int,
    reason: str,
    consent_id: str = "",
    map_key: bytes = b"",
    ends: str = "",
    issued_at_ms: int | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Erasure payload bytes (signed by the operator). For a consent entry, pass its facts
    (core.state_rules.erasure_facts of the body being erased)."""
    return encode_payload(
        ErasurePayload(
            index=index, reason=reason, consent_id=consent_id, map_key=map_key, ends=ends,
            **_fresh(issued_at_ms, nonce),
        )
    )


def build_break_glass_review(
    *,
    event_index: int,
    outcome: str,
    notes: str = "",
    issued_at_ms: int | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """BreakGlassReview payload bytes (signed by an operator key)."""
    return encode_payload(
        BreakGlassReviewPayload(
            event_index=event_index, outcome=outcome, notes=notes, **_fresh(issued_at_ms, nonce)
        )
    )


def build_state_commit(
    *,
    map_root: bytes,
    batch_time_ms: int,
    issued_at_ms: int | None = None,
    nonce: bytes | None = None,
    map_vrf_public_key: bytes = b"",
) -> bytes:
    """StateCommit payload bytes (written by the sequencer, signed by the ledger's key)."""
    return encode_payload(
        StateCommitPayload(
            map_root=map_root, batch_time_ms=batch_time_ms, map_vrf_public_key=map_vrf_public_key,
            **_fresh(issued_at_ms, nonce),
        )
    )
