"""The decision function: may this organisation do this with this patient's data, now?

`decide(entries, request, policy) -> Decision` is pure and shared by server and client: the
client re-runs it on the evidence it was given and compares. It implements docs/design.md section 4:

In force. A grant is in force at t (the request's time) if it was integrated at or before t,
t is inside its validity period [start, end), and no revocation of it and no grant superseding
it was integrated at or before t. What ends a grant is the one rule of core.state_rules (the
same in the consent-state map and the audit): a revocation or superseding grant of the same
patient, logged after the grant, validly signed; a consent logged twice counts from its first
index. Entries integrated after t do not exist for the decision. A superseding grant ends the
old one when it is integrated, even if its own validity starts later. Entries of other patients
are ignored; delegations and party registrations are read only to know who may sign.

Signers (core.delegation). A grant or revocation counts only if its patient signed it, or one of
its signers was then (at the entry's integration time) an in-force delegate of the patient whose
scope covers it, by a Delegation entry among those given (an attested one with its attesting
organisation's registration). Any other grant or revocation is ignored; when an ignored grant
names the requester, the decision says so (reason SIGNER_NOT_AUTHORISED).

Concern. Only grants whose grantee selector matches the requester are looked at: `org:<id>`,
`role:<r>` for each role the requester is registered with, and `any`. Revocations and
supersessions are applied first (they can only end grants), then everything else sees only the
requester's grants, so a refusal is the same whether the patient has no consents or only
consents for others (`evidence_for` picks exactly the entries a decision depends on).

Matching, per requested data item (data class + the sensitivity labels the data carries):
- action: the grant lists the requested FHIR consent action;
- purpose: a grant purpose is the requested purpose or an ancestor (subsumption);
- data class: the grant lists the class or the wildcard "*";
- labels, read narrowly for PERMIT: every label the data carries must be named by the grant or
  have an ancestor named by it; the wildcard "*" never covers a label, so sensitive data needs a
  consent that names it. Read broadly for DENY: a DENY naming no labels covers the class whatever
  the data carries (its wildcard covers labelled data too); a DENY naming labels covers the data
  if one of its labels is related (equal, ancestor or descendant) to one the data carries (data
  labelled SPI may be mental-health data, so a denial of MH reaches it), and does not cover
  unlabelled data;
- data period: a request may name the period of the data it asks for (by the data's date;
  unset means all of it). A PERMIT covers the request only if the requested period lies inside
  the grant's data period (an unbounded request is inside only an unbounded grant period); a
  DENY covers it if the periods overlap.

Outcome of one item, first rule that applies:
1. an in-force matching DENY: DENY (deny overrides permit, and break-glass too);
2. an in-force matching PERMIT: PERMIT;
3. implicit "basic-normal" and a treatment purpose (TREAT or a descendant) on unlabelled data:
   PERMIT;
4. break-glass: flag set, non-empty reason, purpose ETREAT or a descendant (BTG, ERTREAT), the
   requester has role hospital and the policy enables break-glass: PERMIT for the break-glass
   window, with obligations record-access-event, notify-patient and review-queue;
5. otherwise DENY (implicit "deny" or "break-glass-only", or "basic-normal" outside its scope).

Implicit policies (as IHE PCF): "deny" (opt-in, the default), "basic-normal" (treatment use of
unlabelled data is allowed without consent), "break-glass-only" (nothing without consent but
break-glass). Break-glass is the DESIGN's emergency rule and applies under every implicit policy
while `Policy.break_glass_enabled` (the default); "deny" with break-glass disabled is the strict
opt-in. "break-glass-only" requires break-glass enabled, and differs from "deny" in that its
refusals say break-glass is the way in (reason BREAK_GLASS_REQUIRED).

Overall: PERMIT if every item is permitted, DENY if none is, PARTIAL otherwise (the enforcement
point filters). The decision names the consents that decided each item (sorted), reason codes
with text, obligations, and valid_until_ms: the earliest of t + decision_ttl_ms, the end of the
break-glass window, for each item permitted by consent the latest validity end among the
permits covering it, and for each permitted item the validity start of a matching DENY
already integrated but not yet in force. A decision is not to be relied on at or after it.

The result does not depend on the order of the entries.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from consent_ledger.core import delegation, state_rules, vocab
from consent_ledger.core.errors import InvalidInput
from consent_ledger.core.payloads import (
    CONSENT_GRANT,
    CONSENT_REVOCATION,
    DELEGATION,
    DENY,
    MAX_LIST,
    MAX_TEXT,
    MAX_TIME_MS,
    PARTIAL,
    PARTY_REGISTRATION,
    PERMIT,
    ConsentGrantPayload,
    ConsentRevocationPayload,
    DataItem,
    DelegationPayload,
    PartyRegistrationPayload,
    Payload,
    Period,
    check_data_items,
    check_patient_key,
    consent_id,
    parse_payload,
)

__all__ = [
    "BREAK_GLASS",
    "BREAK_GLASS_DENIED_BY_CONSENT",
    "BREAK_GLASS_NOT_ALLOWED",
    "BREAK_GLASS_REQUIRED",
    "DECISION_KINDS",
    "CONSENT_DENY",
    "CONSENT_PERMIT",
    "IMPLICIT_BASIC_NORMAL",
    "IMPLICIT_BREAK_GLASS_ONLY",
    "IMPLICIT_DENY",
    "IMPLICIT_PERMIT",
    "IMPLICIT_POLICIES",
    "LABEL_NOT_NAMED",
    "MAX_IN_FORCE",
    "NO_MATCHING_CONSENT",
    "SIGNER_NOT_AUTHORISED",
    "OBLIGATION_NOTIFY_PATIENT",
    "OBLIGATION_RECORD_ACCESS_EVENT",
    "OBLIGATION_REVIEW_QUEUE",
    "STATE_ACTIVE",
    "STATE_EXPIRED",
    "STATE_PENDING",
    "STATE_REVOKED",
    "STATE_SUPERSEDED",
    "AccessRequest",
    "CategoryOutcome",
    "Decision",
    "LedgerEntry",
    "Obligation",
    "Policy",
    "Reason",
    "check_request",
    "consent_states",
    "decide",
    "delegation_book",
    "delegation_support",
    "ended_by",
    "evidence_for",
    "grantee_selectors",
]

# Evidence stays bounded (docs/design.md section 5): at most this many grants in force per patient and grantee selector.
# The ledger refuses a grant beyond it (FAILED_PRECONDITION); a client refuses evidence with more for one selector.
MAX_IN_FORCE = 256

# Implicit policies.
IMPLICIT_DENY = "deny"
IMPLICIT_BASIC_NORMAL = "basic-normal"
IMPLICIT_BREAK_GLASS_ONLY = "break-glass-only"
IMPLICIT_POLICIES = (IMPLICIT_DENY, IMPLICIT_BASIC_NORMAL, IMPLICIT_BREAK_GLASS_ONLY)

# Reason codes.
CONSENT_PERMIT = "CONSENT_PERMIT"
CONSENT_DENY = "CONSENT_DENY"
IMPLICIT_PERMIT = "IMPLICIT_PERMIT"
NO_MATCHING_CONSENT = "NO_MATCHING_CONSENT"
LABEL_NOT_NAMED = "LABEL_NOT_NAMED"
BREAK_GLASS_REQUIRED = "BREAK_GLASS_REQUIRED"
BREAK_GLASS = "BREAK_GLASS"
BREAK_GLASS_DENIED_BY_CONSENT = "BREAK_GLASS_DENIED_BY_CONSENT"
BREAK_GLASS_NOT_ALLOWED = "BREAK_GLASS_NOT_ALLOWED"
SIGNER_NOT_AUTHORISED = "SIGNER_NOT_AUTHORISED"

# Obligation codes.
OBLIGATION_RECORD_ACCESS_EVENT = "record-access-event"
OBLIGATION_NOTIFY_PATIENT = "notify-patient"
OBLIGATION_REVIEW_QUEUE = "review-queue"

# Consent states (the patient's view).
STATE_PENDING = "pending"
STATE_ACTIVE = "active"
STATE_EXPIRED = "expired"
STATE_REVOKED = "revoked"
STATE_SUPERSEDED = "superseded"

_BREAK_GLASS_ROLE = "hospital"
_MAX_TTL_MS = 24 * 3600 * 1000
_MAX_WINDOW_MS = 7 * 24 * 3600 * 1000
_FOREVER = MAX_TIME_MS + 1


@dataclass(frozen=True, kw_only=True)
class Policy:
    """The deployment's decision settings. Invalid settings raise InvalidInput."""

    implicit: str = IMPLICIT_DENY
    decision_ttl_ms: int = 5 * 60 * 1000
    break_glass_enabled: bool = True
    break_glass_window_ms: int = 4 * 3600 * 1000

    def __post_init__(self) -> None:
        if self.implicit not in IMPLICIT_POLICIES:
            raise InvalidInput(
                f"implicit policy: unknown {self.implicit!r:.40} (one of {', '.join(IMPLICIT_POLICIES)})"
            )
        for name, value, top in (
            ("decision ttl", self.decision_ttl_ms, _MAX_TTL_MS),
            ("break-glass window", self.break_glass_window_ms, _MAX_WINDOW_MS),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
                raise InvalidInput(f"{name}: must be 1 to {top} ms")
        if not isinstance(self.break_glass_enabled, bool):
            raise InvalidInput("break-glass enabled: must be a bool")
        if self.implicit == IMPLICIT_BREAK_GLASS_ONLY and not self.break_glass_enabled:
            raise InvalidInput("implicit policy break-glass-only needs break-glass enabled")


@dataclass(frozen=True, kw_only=True)
class AccessRequest:
    """What is asked. requester_roles are the roles the requester is registered with; they
    are kept sorted (the constructor sorts them) so equal requests compare equal."""

    patient: bytes
    requester_id: str
    requester_roles: tuple[str, ...] = ()
    action: str
    purpose: str
    data: tuple[DataItem, ...]
    data_period: Period = Period()
    time_ms: int
    break_glass: bool = False
    break_glass_reason: str = ""

    def __post_init__(self) -> None:
        roles = self.requester_roles
        if isinstance(roles, (list, tuple)) and all(isinstance(r, str) for r in roles):
            object.__setattr__(self, "requester_roles", tuple(sorted(roles)))
        if isinstance(self.data, list):
            object.__setattr__(self, "data", tuple(self.data))


@dataclass(frozen=True, kw_only=True)
class LedgerEntry:
    """A log entry as the decision sees it: its index, integration time, id (hex SHA-256 of
    the payload bytes), parsed payload, and the public keys whose envelope signatures verified
    (the caller verifies them; an entry without signers is signed by nobody)."""

    index: int
    integrated_time_ms: int
    consent_id: str
    payload: Payload
    signers: tuple[bytes, ...] = ()

    @classmethod
    def from_payload(
        cls,
        *,
        index: int,
        integrated_time_ms: int,
        payload_type: str,
        payload: bytes,
        signers: Iterable[bytes] = (),
    ) -> LedgerEntry:
        """Parse payload bytes (strictly) into an entry. Raises InvalidInput."""
        return cls(
            index=index,
            integrated_time_ms=integrated_time_ms,
            consent_id=consent_id(payload),
            payload=parse_payload(payload_type, payload),
            signers=tuple(signers),
        )


@dataclass(frozen=True)
class Reason:
    """A machine reason code and a human explanation."""

    code: str
    text: str


@dataclass(frozen=True)
class Obligation:
    """Something the requester must do when acting on the decision."""

    code: str
    text: str


@dataclass(frozen=True, kw_only=True)
class CategoryOutcome:
    """The decision for one requested data item: PERMIT or DENY."""

    data: DataItem
    decision: str
    reasons: tuple[Reason, ...]
    consent_ids: tuple[str, ...] = ()
    break_glass: bool = False


@dataclass(frozen=True, kw_only=True)
class Decision:
    """The answer: PERMIT, DENY or PARTIAL, with one outcome per requested item (in request
    order), the consents that decided it (sorted), reasons, obligations, and the time from which
    it must not be relied on."""

    request: AccessRequest
    policy: Policy
    decision: str
    outcomes: tuple[CategoryOutcome, ...]
    consent_ids: tuple[str, ...]
    reasons: tuple[Reason, ...]
    obligations: tuple[Obligation, ...]
    valid_until_ms: int
    break_glass_until_ms: int = 0

    @property
    def permitted_data(self) -> tuple[DataItem, ...]:
        """The requested items that were permitted."""
        return tuple(o.data for o in self.outcomes if o.decision == PERMIT)


# --- helpers ------------------------------------------------------------------------------------


def grantee_selectors(requester_id: str, roles: Iterable[str]) -> tuple[str, ...]:
    """The grantee selectors that name a requester: org:<id>, role:<r> per role, any."""
    return (f"org:{requester_id}", *(f"role:{r}" for r in sorted(set(roles))), "any")


def check_request(request: AccessRequest) -> None:
    """Raise InvalidInput unless the request is well formed."""
    if not isinstance(request, AccessRequest):
        raise InvalidInput("request: must be an AccessRequest")
    check_patient_key(request.patient)
    vocab.check_party_id(request.requester_id, "requester")
    if not isinstance(request.requester_roles, tuple):
        raise InvalidInput("requester roles: must be a tuple of roles")
    vocab.check_codes(
        request.requester_roles, vocab.check_role, "requester roles",
        max_items=len(vocab.ROLES), min_items=0,
    )
    vocab.check_action(request.action)
    vocab.check_purpose(request.purpose)
    if not isinstance(request.data, tuple) or not 1 <= len(request.data) <= MAX_LIST:
        raise InvalidInput(f"data: 1 to {MAX_LIST} requested items required")
    check_data_items(request.data)
    p = request.data_period
    if not isinstance(p, Period):
        raise InvalidInput("data period: must be a Period")
    for what, v in (("start", p.start_ms), ("end", p.end_ms)):
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_TIME_MS:
            raise InvalidInput(f"data period {what}: not a time in ms")
    if p.start_ms and p.end_ms and p.end_ms <= p.start_ms:
        raise InvalidInput(f"data period: ends ({p.end_ms}) before or when it starts ({p.start_ms})")
    t = request.time_ms
    if not isinstance(t, int) or isinstance(t, bool) or not 1 <= t <= MAX_TIME_MS:
        raise InvalidInput("time: must be a positive time in ms")
    if not isinstance(request.break_glass, bool):
        raise InvalidInput("break glass: must be a bool")
    reason = request.break_glass_reason
    if not isinstance(reason, str) or len(reason) > MAX_TEXT:
        raise InvalidInput(f"break-glass reason: must be text of at most {MAX_TEXT} characters")
    if any(ord(c) < 0x20 and c not in "\t\n" or 0x7F <= ord(c) <= 0x9F for c in reason):
        raise InvalidInput("break-glass reason: contains control characters")
    if reason and not request.break_glass:
        raise InvalidInput("break-glass reason: given without break glass")


@dataclass(frozen=True)
class _Grant:
    consent_id: str
    integrated_time_ms: int
    grant: ConsentGrantPayload


def _registrations(entries: Iterable[LedgerEntry]) -> dict[str, list[tuple[int, frozenset[bytes]]]]:
    regs: dict[str, list[tuple[int, frozenset[bytes]]]] = {}
    for e in entries:
        if isinstance(e.payload, PartyRegistrationPayload):
            regs.setdefault(e.payload.party_id, []).append((e.index, frozenset(e.payload.public_keys)))
    return regs


def _org_keys(regs: dict[str, list[tuple[int, frozenset[bytes]]]], party_id: str, below: int) -> frozenset[bytes]:
    """The keys of the party's latest registration before index ``below``, among those given."""
    found = [r for r in regs.get(party_id, ()) if r[0] < below]
    return max(found, key=lambda r: r[0])[1] if found else frozenset()


def _latest_registration(entries: Iterable[LedgerEntry], party_id: str, below: int) -> PartyRegistrationPayload | None:
    found = [
        e for e in entries
        if isinstance(e.payload, PartyRegistrationPayload) and e.payload.party_id == party_id and e.index < below
    ]
    if not found:
        return None
    reg = max(found, key=lambda e: e.index).payload
    assert isinstance(reg, PartyRegistrationPayload)
    return reg


def delegation_book(entries: Iterable[LedgerEntry]) -> delegation.DelegationBook:
    """The authentic delegations among ``entries`` (signed as core.delegation requires; attested ones as
    ``check_attestation`` requires, judged by the attesting organisation's latest registration given before them
    and by the entries given: one the patient key signed before an attested delegation voids it) with their
    valid revocations."""
    entries = sorted(entries, key=lambda e: e.index)
    regs = _registrations(entries)
    book = delegation.DelegationBook()
    for e in entries:
        p = e.payload
        if isinstance(p, DelegationPayload):
            if p.attested_by:
                reg = _latest_registration(entries, p.attested_by, e.index)
                ok = delegation.signed_validly(
                    p, e.signers, None if reg is None else reg.public_keys, () if reg is None else reg.capabilities,
                    patient_signed_before=any(x.index < e.index and p.patient in x.signers for x in entries),
                )
            else:
                ok = delegation.signed_validly(p, e.signers, None)
            if ok:
                book.add(delegation.Delegate(e.consent_id, e.index, e.integrated_time_ms, p))
    for e in entries:
        p = e.payload
        if isinstance(p, ConsentRevocationPayload) and p.consent_id in book.by_id:
            d = book.by_id[p.consent_id].payload
            if d.patient == p.patient and delegation.may_revoke(d, e.signers, _org_keys(regs, d.attested_by, e.index)):
                book.revoke(p.consent_id, e.integrated_time_ms, e.index)
    return book


def _rule_entry(e: LedgerEntry) -> state_rules.ConsentEntry | None:
    return state_rules.ConsentEntry.of(e.index, e.integrated_time_ms, e.consent_id, e.payload, e.signers)


def delegation_support(entries: Iterable[LedgerEntry], of: Iterable[LedgerEntry]) -> tuple[LedgerEntry, ...]:
    """The entries among ``entries`` that authorise the delegate-signed grants and revocations in ``of``: each
    one's delegation, the attesting organisation's registration it was checked against, and its revocations."""
    entries = list(entries)
    by_index = {e.index: e for e in entries}
    book = delegation_book(entries)
    regs = _registrations(entries)
    out: dict[int, LedgerEntry] = {}
    for e in of:
        p = e.payload
        if not isinstance(p, (ConsentGrantPayload, ConsentRevocationPayload)) or p.patient in e.signers:
            continue
        d = book.authorising(p.patient, e.signers, e.integrated_time_ms, delegation.required_scope(p))
        if d is None:
            continue
        out[d.index] = by_index[d.index]
        if d.payload.attested_by:
            below = [r for r in regs.get(d.payload.attested_by, ()) if r[0] < d.index]
            if below:
                i = max(below, key=lambda r: r[0])[0]
                out[i] = by_index[i]
        for r in entries:
            if isinstance(r.payload, ConsentRevocationPayload) and r.payload.consent_id == d.delegation_id:
                out[r.index] = r
    return tuple(out[i] for i in sorted(out))


def _collect(
    entries: Iterable[LedgerEntry],
    patient: bytes,
    t: int,
    ignored: set[str] | None = None,
    book: delegation.DelegationBook | None = None,
) -> tuple[dict[str, _Grant], dict[str, int], dict[str, int]]:
    """The patient's grants integrated at or before t that joined the in-force sets, and the ids
    revoked and superseded at or before t (with the index of the entry that ended each), by the
    one rule (core.state_rules.effect). Grants not signed as core.delegation requires are left out
    (their ids go into ``ignored``). ``book``: the delegations to judge signers by (default: those
    among ``entries``)."""
    entries = list(entries)
    book = delegation_book(entries) if book is None else book
    by_index: dict[int, LedgerEntry] = {}
    mine: list[state_rules.ConsentEntry] = []
    for e in entries:
        p = e.payload
        if e.integrated_time_ms > t or not isinstance(p, (ConsentGrantPayload, ConsentRevocationPayload)):
            continue
        if p.patient != patient:
            continue
        rule_entry = _rule_entry(e)
        assert rule_entry is not None
        by_index[e.index] = e
        mine.append(rule_entry)
    facts = state_rules.Replay(book)
    grants: dict[str, _Grant] = {}
    revoked: dict[str, int] = {}
    superseded: dict[str, int] = {}
    for r, eff in state_rules.replay(mine, facts):
        e = by_index[r.index]
        if r.kind == state_rules.GRANT and ignored is not None and state_rules.signer_refusal(r, facts) is not None:
            ignored.add(r.consent_id)
        if eff.joins:
            assert isinstance(e.payload, ConsentGrantPayload)
            grants[r.consent_id] = _Grant(r.consent_id, e.integrated_time_ms, e.payload)
        if eff.ends:
            (revoked if r.kind == state_rules.REVOCATION else superseded).setdefault(eff.ends, r.index)
    return grants, revoked, superseded


def _covers(g: ConsentGrantPayload, request: AccessRequest, item: DataItem, *, labels: bool = True) -> bool:
    """Does grant g cover this item of the request (ignoring time and grantee)?"""
    if request.action not in g.actions:
        return False
    if not any(vocab.purpose_covers(p, request.purpose) for p in g.purposes):
        return False
    if vocab.WILDCARD not in g.data_classes and item.data_class not in g.data_classes:
        return False
    if g.decision == PERMIT:
        if labels and not all(
            any(vocab.label_covers(gl, dl) for gl in g.sensitivity_labels)
            for dl in item.sensitivity_labels
        ):
            return False
        return request.data_period.within(g.data_period)
    if labels and g.sensitivity_labels and not any(
        vocab.labels_related(gl, dl) for gl in g.sensitivity_labels for dl in item.sensitivity_labels
    ):
        return False
    return request.data_period.overlaps(g.data_period)


def _break_glass_problems(request: AccessRequest, policy: Policy) -> list[str]:
    problems = []
    if not policy.break_glass_enabled:
        problems.append("break-glass is disabled by the deployment's policy")
    if _BREAK_GLASS_ROLE not in request.requester_roles:
        problems.append(f"the requester is not registered with role {_BREAK_GLASS_ROLE}")
    if not vocab.is_emergency_purpose(request.purpose):
        problems.append(f"purpose {request.purpose} is not emergency treatment (ETREAT, BTG, ERTREAT)")
    if not request.break_glass_reason.strip():
        problems.append("no reason was given")
    return problems


def _unique(reasons: Iterable[Reason]) -> tuple[Reason, ...]:
    return tuple(dict.fromkeys(reasons))


def _relevant(
    entries: Iterable[LedgerEntry], request: AccessRequest
) -> tuple[list[_Grant], list[_Grant], bool]:
    """The requester's grants in force at the request's time, those not yet valid, and whether a grant
    naming the requester was ignored for its signer."""
    t = request.time_ms
    entries = list(entries)
    ignored: set[str] = set()
    grants, revoked, superseded = _collect(entries, request.patient, t, ignored)
    selectors = set(grantee_selectors(request.requester_id, request.requester_roles))
    unauthorised = any(
        e.consent_id in ignored and isinstance(e.payload, ConsentGrantPayload) and e.payload.grantee in selectors
        for e in entries
    )
    # From here on only the requester's own grants are looked at: nothing about anyone
    # else's consents can reach the output.
    live = [
        g for cid, g in sorted(grants.items())
        if g.grant.grantee in selectors and cid not in revoked and cid not in superseded
    ]
    in_force = [g for g in live if g.grant.validity.contains(t)]
    pending = [g for g in live if g.grant.validity.start_ms > t]
    return in_force, pending, unauthorised


# --- the decision -------------------------------------------------------------------------------


def decide(
    entries: Iterable[LedgerEntry], request: AccessRequest, policy: Policy | None = None
) -> Decision:
    """Decide `request` against the ledger entries (any order, any kinds, any patients).

    Requires well-formed entries (as parse_payload returns them). Raises InvalidInput for a
    malformed request. See the module docstring for the rules."""
    policy = Policy() if policy is None else policy
    if not isinstance(policy, Policy):
        raise InvalidInput("policy: must be a Policy")
    check_request(request)
    t = request.time_ms
    in_force, pending, unauthorised = _relevant(entries, request)
    permits = [g for g in in_force if g.grant.decision == PERMIT]
    denies = [g for g in in_force if g.grant.decision == DENY]
    pending_denies = [g for g in pending if g.grant.decision == DENY]

    bg_problems = _break_glass_problems(request, policy) if request.break_glass else []
    bg_eligible = request.break_glass and not bg_problems
    bg_until = t + policy.break_glass_window_ms
    valid_until = t + policy.decision_ttl_ms

    outcomes: list[CategoryOutcome] = []
    for item in request.data:
        deny_ids = tuple(g.consent_id for g in denies if _covers(g.grant, request, item))
        permit_hits = [g for g in permits if _covers(g.grant, request, item)]
        outcome: CategoryOutcome
        if deny_ids:
            reasons = [Reason(CONSENT_DENY, "refused by a consent")]
            if bg_eligible:
                reasons.append(
                    Reason(BREAK_GLASS_DENIED_BY_CONSENT, "break-glass does not override a consent that refuses this")
                )
            outcome = CategoryOutcome(data=item, decision=DENY, reasons=tuple(reasons), consent_ids=deny_ids)
        elif permit_hits:
            outcome = CategoryOutcome(
                data=item,
                decision=PERMIT,
                reasons=(Reason(CONSENT_PERMIT, "permitted by consent"),),
                consent_ids=tuple(g.consent_id for g in permit_hits),
            )
            valid_until = min(
                valid_until, max(g.grant.validity.end_ms or _FOREVER for g in permit_hits)
            )
        elif (
            policy.implicit == IMPLICIT_BASIC_NORMAL
            and vocab.is_treatment_purpose(request.purpose)
            and not item.sensitivity_labels
        ):
            outcome = CategoryOutcome(
                data=item,
                decision=PERMIT,
                reasons=(
                    Reason(
                        IMPLICIT_PERMIT,
                        "no consent matched; the basic-normal policy allows treatment use of unlabelled data",
                    ),
                ),
            )
        elif bg_eligible:
            outcome = CategoryOutcome(
                data=item,
                decision=PERMIT,
                reasons=(
                    Reason(
                        BREAK_GLASS,
                        f"emergency access (break-glass) for {policy.break_glass_window_ms // 60000} minutes",
                    ),
                ),
                break_glass=True,
            )
            valid_until = min(valid_until, bg_until)
        else:
            outcome = CategoryOutcome(
                data=item, decision=DENY, reasons=(_refusal(request, item, permits, policy),)
            )
        if outcome.decision == PERMIT:
            # A DENY already in the log but not yet valid ends this permit when it starts.
            for g in pending_denies:
                if _covers(g.grant, request, item):
                    valid_until = min(valid_until, g.grant.validity.start_ms)
        outcomes.append(outcome)

    n_permit = sum(o.decision == PERMIT for o in outcomes)
    overall = PERMIT if n_permit == len(outcomes) else DENY if n_permit == 0 else PARTIAL
    reasons = [r for o in outcomes for r in o.reasons]
    if bg_problems:
        reasons.append(Reason(BREAK_GLASS_NOT_ALLOWED, "break-glass not allowed: " + "; ".join(bg_problems)))
    if unauthorised:
        reasons.append(
            Reason(
                SIGNER_NOT_AUTHORISED,
                "a consent naming the requester was ignored: neither the patient nor a delegate in force "
                "for it signed it",
            )
        )
    used_bg = any(o.break_glass for o in outcomes)
    obligations: tuple[Obligation, ...] = ()
    if used_bg:
        obligations = (
            Obligation(
                OBLIGATION_RECORD_ACCESS_EVENT,
                "record an AccessEvent with the break-glass reason for every access",
            ),
            Obligation(OBLIGATION_NOTIFY_PATIENT, "the patient is notified of the emergency access"),
            Obligation(OBLIGATION_REVIEW_QUEUE, "the access enters the break-glass review queue"),
        )
    return Decision(
        request=request,
        policy=policy,
        decision=overall,
        outcomes=tuple(outcomes),
        consent_ids=tuple(sorted({c for o in outcomes for c in o.consent_ids})),
        reasons=_unique(reasons),
        obligations=obligations,
        valid_until_ms=valid_until,
        break_glass_until_ms=bg_until if used_bg else 0,
    )


def _refusal(request: AccessRequest, item: DataItem, permits: Sequence[_Grant], policy: Policy) -> Reason:
    if item.sensitivity_labels and any(_covers(g.grant, request, item, labels=False) for g in permits):
        missing = sorted(
            dl for dl in item.sensitivity_labels
            if not any(
                vocab.label_covers(gl, dl)
                for g in permits if _covers(g.grant, request, item, labels=False)
                for gl in g.grant.sensitivity_labels
            )
        )
        text = (
            "sensitive data needs a consent that names its label: " + ", ".join(missing)
            if missing
            else "sensitive data needs one consent that names all its labels: "
            + ", ".join(sorted(item.sensitivity_labels))
        )
        return Reason(LABEL_NOT_NAMED, text)
    if policy.implicit == IMPLICIT_BREAK_GLASS_ONLY:
        return Reason(
            BREAK_GLASS_REQUIRED,
            "no consent covers this; without one only break-glass access is allowed",
        )
    return Reason(NO_MATCHING_CONSENT, f"no consent covers this (implicit policy {policy.implicit})")


# --- evidence and the patient's view ------------------------------------------------------------


def evidence_for(entries: Iterable[LedgerEntry], request: AccessRequest) -> tuple[LedgerEntry, ...]:
    """The entries `decide` depends on for this request, sorted by index: the requester's grants
    for the patient integrated at or before the request's time, the revocations and superseding
    grants that end them, and what authorises those signed by delegates (delegation_support).
    decide(evidence_for(E, r), r, p) == decide(E, r, p)."""
    entries = list(entries)
    t = request.time_ms
    selectors = set(grantee_selectors(request.requester_id, request.requester_roles))
    mine = {
        e.consent_id
        for e in entries
        if e.integrated_time_ms <= t
        and isinstance(e.payload, ConsentGrantPayload)
        and e.payload.patient == request.patient
        and e.payload.grantee in selectors
    }
    out: dict[int, LedgerEntry] = {}
    for e in entries:
        if e.integrated_time_ms > t:
            continue
        p = e.payload
        if isinstance(p, ConsentGrantPayload) and p.patient == request.patient:
            if e.consent_id in mine or (p.supersedes is not None and p.supersedes in mine):
                out[e.index] = e
        elif isinstance(p, ConsentRevocationPayload) and p.patient == request.patient:
            if p.consent_id in mine:
                out[e.index] = e
    for e in delegation_support(entries, list(out.values())):
        out[e.index] = e
    return tuple(out[i] for i in sorted(out))


def ended_by(entries: Iterable[LedgerEntry], t_ms: int) -> dict[str, int]:
    """For every grant revoked or superseded at or before t_ms, the index of the entry that ended it (a
    revocation before a supersession, else the first), by the one rule (core.state_rules)."""
    entries = list(entries)
    book = delegation_book(entries)
    out: dict[str, int] = {}
    for patient in {e.payload.patient for e in entries if isinstance(e.payload, (ConsentGrantPayload, ConsentRevocationPayload))}:
        _, revoked, superseded = _collect(entries, patient, t_ms, book=book)
        out.update({**superseded, **revoked})
    return out


def consent_states(entries: Iterable[LedgerEntry], t_ms: int) -> dict[str, str]:
    """The state at t_ms of every grant integrated at or before t_ms, by consent id:
    revoked, superseded, expired, pending (validity not started) or active (in force).
    Revoked wins over superseded, which wins over expired and pending."""
    entries = list(entries)
    book = delegation_book(entries)
    by_patient: dict[bytes, list[LedgerEntry]] = {}
    for e in entries:
        if isinstance(e.payload, (ConsentGrantPayload, ConsentRevocationPayload)):
            by_patient.setdefault(e.payload.patient, []).append(e)
    out: dict[str, str] = {}
    for patient, es in by_patient.items():
        grants, revoked, superseded = _collect(es, patient, t_ms, book=book)
        for cid, g in grants.items():
            v = g.grant.validity
            if cid in revoked:
                out[cid] = STATE_REVOKED
            elif cid in superseded:
                out[cid] = STATE_SUPERSEDED
            elif v.end_ms and t_ms >= v.end_ms:
                out[cid] = STATE_EXPIRED
            elif v.start_ms > t_ms:
                out[cid] = STATE_PENDING
            else:
                out[cid] = STATE_ACTIVE
    return out


# Kinds the decision reads; anything else in `entries` is ignored.
DECISION_KINDS = (CONSENT_GRANT, CONSENT_REVOCATION, DELEGATION, PARTY_REGISTRATION)
