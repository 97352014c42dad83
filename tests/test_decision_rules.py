"""Every rule of docs/design.md section 4, one table per rule."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from consent_ledger.core import decision as D
from consent_ledger.core.decision import AccessRequest, Decision, LedgerEntry, Policy, decide
from consent_ledger.core.errors import InvalidInput
from consent_ledger.core.payloads import (
    DENY,
    PARTIAL,
    PERMIT,
    ConsentGrantPayload,
    ConsentRevocationPayload,
    DataItem,
    Period,
    build_access_event,
    build_party_registration,
    consent_id,
    encode_payload,
)

T = 1_800_000_000_000
MIN = 60_000
H = 60 * MIN
DAY = 24 * H
PATIENT = bytes(range(32))
OTHER_PATIENT = bytes(range(100, 132))

_seq = itertools.count(1)


def grant(
    *,
    at: int = T - H,
    patient: bytes = PATIENT,
    grantee: str = "org:insurer-1",
    decision: str = PERMIT,
    actions: Sequence[str] = ("access",),
    purposes: Sequence[str] = ("HPAYMT",),
    classes: Sequence[str] = ("laboratory-results",),
    labels: Sequence[str] = (),
    validity: Period = Period(),
    data_period: Period = Period(),
    supersedes: LedgerEntry | None = None,
) -> LedgerEntry:
    n = next(_seq)
    p = ConsentGrantPayload(
        patient=patient,
        grantee=grantee,
        decision=decision,
        actions=tuple(actions),
        purposes=tuple(purposes),
        data_classes=tuple(classes),
        sensitivity_labels=tuple(labels),
        data_period=data_period,
        validity=validity,
        supersedes=None if supersedes is None else supersedes.consent_id,
        issued_at_ms=at - 1,
        nonce=n.to_bytes(16, "big"),
    )
    return LedgerEntry(
        index=n, integrated_time_ms=at, consent_id=consent_id(encode_payload(p)), payload=p, signers=(patient,)
    )


def deny(**kw: Any) -> LedgerEntry:
    return grant(decision=DENY, **kw)


def revoke(target: LedgerEntry, *, at: int = T - MIN, patient: bytes = PATIENT) -> LedgerEntry:
    n = next(_seq)
    p = ConsentRevocationPayload(
        patient=patient, consent_id=target.consent_id, reason="", issued_at_ms=at - 1, nonce=n.to_bytes(16, "big")
    )
    return LedgerEntry(
        index=n, integrated_time_ms=at, consent_id=consent_id(encode_payload(p)), payload=p, signers=(patient,)
    )


def item(spec: str) -> DataItem:
    cls, _, labels = spec.partition(":")
    return DataItem(cls, tuple(labels.split(",")) if labels else ())


def req(
    *items: str,
    requester: str = "insurer-1",
    roles: Sequence[str] = ("insurer",),
    action: str = "access",
    purpose: str = "HPAYMT",
    t: int = T,
    bg: bool = False,
    reason: str = "",
    period: Period = Period(),
    patient: bytes = PATIENT,
) -> AccessRequest:
    return AccessRequest(
        patient=patient,
        requester_id=requester,
        requester_roles=tuple(roles),
        action=action,
        purpose=purpose,
        data=tuple(item(s) for s in (items or ("laboratory-results",))),
        data_period=period,
        time_ms=t,
        break_glass=bg,
        break_glass_reason=reason,
    )


def codes(d: Decision) -> list[str]:
    return [r.code for r in d.reasons]


# --- in force at t ------------------------------------------------------------------------------


def _superseded(at: int, **kw: Any) -> list[LedgerEntry]:
    g = grant()
    return [g, grant(grantee="org:insurer-2", supersedes=g, at=at, **kw)]


IN_FORCE: list[tuple[str, Callable[[], list[LedgerEntry]], int, str]] = [
    ("integrated before t", lambda: [grant(at=T - 1)], T, PERMIT),
    ("integrated at t", lambda: [grant(at=T)], T, PERMIT),
    ("integrated after t", lambda: [grant(at=T + 1)], T, DENY),
    ("validity starts at t", lambda: [grant(validity=Period(T, 0))], T, PERMIT),
    ("validity starts after t", lambda: [grant(validity=Period(T + 1, 0))], T, DENY),
    ("validity ends after t", lambda: [grant(validity=Period(T - DAY, T + 1))], T, PERMIT),
    ("validity ends at t (half-open)", lambda: [grant(validity=Period(T - DAY, T))], T, DENY),
    ("validity ended before t", lambda: [grant(validity=Period(0, T - 1))], T, DENY),
    ("revoked before t", lambda: (lambda g: [g, revoke(g, at=T - 1)])(grant()), T, DENY),
    ("revoked at t", lambda: (lambda g: [g, revoke(g, at=T)])(grant()), T, DENY),
    ("revoked after t: earlier use stays lawful", lambda: (lambda g: [g, revoke(g, at=T + 1)])(grant()), T, PERMIT),
    ("superseded before t", lambda: _superseded(T - 1), T, DENY),
    ("superseded after t", lambda: _superseded(T + 1), T, PERMIT),
    ("superseded by a grant not yet valid", lambda: _superseded(T - 1, validity=Period(T + DAY, 0)), T, DENY),
    (
        "revocation signed for another patient does not end it",
        lambda: (lambda g: [g, revoke(g, patient=OTHER_PATIENT)])(grant()),
        T,
        PERMIT,
    ),
    (
        "superseding grant of another patient does not end it",
        lambda: (lambda g: [g, grant(patient=OTHER_PATIENT, supersedes=g)])(grant()),
        T,
        PERMIT,
    ),
    ("grant of another patient", lambda: [grant(patient=OTHER_PATIENT)], T, DENY),
]


@pytest.mark.parametrize(("entries", "t", "expected"), [c[1:] for c in IN_FORCE], ids=[c[0] for c in IN_FORCE])
def test_in_force(entries: Callable[[], list[LedgerEntry]], t: int, expected: str) -> None:
    assert decide(entries(), req(t=t)).decision == expected


def test_in_force_is_evaluated_at_the_request_time() -> None:
    g = grant(at=T - DAY)
    es = [g, revoke(g, at=T)]
    assert decide(es, req(t=T - 1)).decision == PERMIT
    assert decide(es, req(t=T)).decision == DENY


def test_same_payload_integrated_twice_counts_from_the_first() -> None:
    g = grant(at=T - DAY)
    again = LedgerEntry(
        index=g.index + 1000, integrated_time_ms=T + H, consent_id=g.consent_id, payload=g.payload, signers=g.signers
    )
    assert decide([again, g], req()).decision == PERMIT
    assert decide([g, again], req()).decision == PERMIT
    assert decide([again, g, revoke(g)], req()).decision == DENY


# --- grantee ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "requester", "roles", "expected"),
    [
        ("org:insurer-1", "insurer-1", (), PERMIT),
        ("org:insurer-1", "insurer-2", ("insurer",), DENY),
        ("org:insurer-1", "insurer-10", ("insurer",), DENY),
        ("role:insurer", "insurer-2", ("insurer",), PERMIT),
        ("role:insurer", "insurer-2", (), DENY),
        ("role:hospital", "insurer-1", ("insurer",), DENY),
        ("role:research", "uni-1", ("hospital", "research"), PERMIT),
        ("any", "whoever", (), PERMIT),
    ],
)
def test_grantee_matching(selector: str, requester: str, roles: tuple[str, ...], expected: str) -> None:
    assert decide([grant(grantee=selector)], req(requester=requester, roles=roles)).decision == expected


def test_grantee_selectors() -> None:
    assert D.grantee_selectors("h-1", ["research", "hospital"]) == ("org:h-1", "role:hospital", "role:research", "any")


# --- actions and purposes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actions", "action", "expected"),
    [
        (("access",), "access", PERMIT),
        (("access", "use"), "use", PERMIT),
        (("access",), "disclose", DENY),
        (("collect", "use", "disclose", "correct"), "access", DENY),
    ],
)
def test_actions(actions: tuple[str, ...], action: str, expected: str) -> None:
    assert decide([grant(actions=actions)], req(action=action)).decision == expected


@pytest.mark.parametrize(
    ("purposes", "purpose", "expected"),
    [
        (("HPAYMT",), "HPAYMT", PERMIT),
        (("HPAYMT",), "CLMATTCH", PERMIT),
        (("HPAYMT",), "COVAUTH", PERMIT),
        (("HPAYMT",), "ELIGVER", PERMIT),
        (("CLMATTCH",), "HPAYMT", DENY),
        (("CLMATTCH",), "COVAUTH", DENY),
        (("COVAUTH", "CLMATTCH"), "CLMATTCH", PERMIT),
        (("TREAT",), "ETREAT", PERMIT),
        (("TREAT",), "BTG", PERMIT),
        (("BTG",), "TREAT", DENY),
        (("HPAYMT",), "TREAT", DENY),
        (("HRESCH",), "HPAYMT", DENY),
    ],
)
def test_purposes_by_subsumption(purposes: tuple[str, ...], purpose: str, expected: str) -> None:
    assert decide([grant(purposes=purposes)], req(purpose=purpose)).decision == expected


# --- data classes and sensitivity labels --------------------------------------------------------


@pytest.mark.parametrize(
    ("classes", "labels", "requested", "expected", "reason"),
    [
        (("laboratory-results",), (), "laboratory-results", PERMIT, D.CONSENT_PERMIT),
        (("laboratory-results",), (), "imaging", DENY, D.NO_MATCHING_CONSENT),
        (("*",), (), "imaging", PERMIT, D.CONSENT_PERMIT),
        # The wildcard never covers a label: sensitive data needs a consent that names it.
        (("*",), (), "clinical-notes:MH", DENY, D.LABEL_NOT_NAMED),
        (("*",), (), "laboratory-results:HIV", DENY, D.LABEL_NOT_NAMED),
        (("clinical-notes",), (), "clinical-notes:MH", DENY, D.LABEL_NOT_NAMED),
        (("clinical-notes",), ("MH",), "clinical-notes:MH", PERMIT, D.CONSENT_PERMIT),
        (("clinical-notes",), ("SPI",), "clinical-notes:MH", PERMIT, D.CONSENT_PERMIT),  # ancestor
        (("clinical-notes",), ("SPI",), "clinical-notes:COGN", PERMIT, D.CONSENT_PERMIT),  # SPI > BH > COGN
        (("clinical-notes",), ("MH",), "clinical-notes:SPI", DENY, D.LABEL_NOT_NAMED),  # never the reverse
        (("clinical-notes",), ("SPI",), "clinical-notes:ETH", DENY, D.LABEL_NOT_NAMED),  # ETH not under SPI
        (("*",), ("MH",), "clinical-notes:MH", PERMIT, D.CONSENT_PERMIT),  # named label, any class
        (("clinical-notes",), ("MH",), "clinical-notes:MH,SUD", DENY, D.LABEL_NOT_NAMED),  # every label
        (("clinical-notes",), ("SPI",), "clinical-notes:MH,SUD", PERMIT, D.CONSENT_PERMIT),
        (("clinical-notes",), ("MH",), "clinical-notes", PERMIT, D.CONSENT_PERMIT),  # labels widen, not narrow
        (("clinical-notes",), ("MH",), "imaging:MH", DENY, D.NO_MATCHING_CONSENT),
    ],
)
def test_permit_data_classes_and_labels(
    classes: tuple[str, ...], labels: tuple[str, ...], requested: str, expected: str, reason: str
) -> None:
    d = decide([grant(classes=classes, labels=labels)], req(requested))
    assert d.decision == expected
    assert codes(d) == [reason]


def test_label_not_named_says_which_label() -> None:
    d = decide([grant(classes=("clinical-notes",), labels=("MH",))], req("clinical-notes:MH,SUD"))
    assert d.reasons[0].text.endswith("names its label: SUD")


def test_label_not_named_needs_one_consent_naming_all_labels() -> None:
    es = [grant(classes=("clinical-notes",), labels=("MH",)), grant(classes=("clinical-notes",), labels=("SUD",))]
    d = decide(es, req("clinical-notes:MH,SUD"))
    assert d.decision == DENY
    assert d.reasons == (D.Reason(D.LABEL_NOT_NAMED, "sensitive data needs one consent that names all its labels: MH, SUD"),)


@pytest.mark.parametrize(
    ("deny_classes", "deny_labels", "requested", "expected"),
    [
        (("*",), (), "laboratory-results", DENY),
        (("*",), (), "clinical-notes:MH", DENY),  # a DENY's wildcard covers labelled data too
        (("*",), (), "clinical-notes:HIV,ETH", DENY),
        (("imaging",), (), "laboratory-results", PERMIT),
        (("clinical-notes",), (), "clinical-notes:MH", DENY),
        (("*",), ("MH",), "clinical-notes:MH", DENY),
        (("*",), ("MH",), "clinical-notes", PERMIT),  # denying MH data leaves plain notes alone
        (("*",), ("SPI",), "clinical-notes:MH", DENY),  # ancestor
        (("*",), ("MH",), "clinical-notes:SPI", DENY),  # read broadly: SPI data may be MH data
        (("*",), ("MH",), "clinical-notes:PSY", PERMIT),  # siblings are unrelated
        (("*",), ("SPI",), "clinical-notes:ETH", PERMIT),
        (("*",), ("HIV",), "clinical-notes:MH,HIV", DENY),  # any label related
        (("clinical-notes",), ("HIV",), "laboratory-results:HIV", PERMIT),
    ],
)
def test_deny_read_broadly(
    deny_classes: tuple[str, ...], deny_labels: tuple[str, ...], requested: str, expected: str
) -> None:
    permit_all = grant(classes=("*",), labels=("SPI", "ETH", "HIV"))
    d = decide([permit_all, deny(classes=deny_classes, labels=deny_labels)], req(requested))
    assert d.decision == expected


# --- data period --------------------------------------------------------------------------------

A, B, C = T - 300 * DAY, T - 100 * DAY, T - 10 * DAY


@pytest.mark.parametrize(
    ("grant_period", "request_period", "expected"),
    [
        (Period(), Period(), PERMIT),
        (Period(A, B), Period(), DENY),  # an unbounded request is inside only an unbounded grant
        (Period(A, B), Period(A, B), PERMIT),
        (Period(A, B), Period(A + 1, B - 1), PERMIT),
        (Period(A, B), Period(A - 1, B), DENY),
        (Period(A, B), Period(A, B + 1), DENY),
        (Period(A, 0), Period(A, B), PERMIT),
        (Period(A, 0), Period(A, 0), PERMIT),
        (Period(A, 0), Period(0, B), DENY),
        (Period(0, B), Period(A, B), PERMIT),
    ],
)
def test_permit_data_period_is_read_narrowly(grant_period: Period, request_period: Period, expected: str) -> None:
    assert decide([grant(data_period=grant_period)], req(period=request_period)).decision == expected


@pytest.mark.parametrize(
    ("deny_period", "request_period", "expected"),
    [
        (Period(A, B), Period(), DENY),  # overlaps
        (Period(A, B), Period(B, C), PERMIT),  # half-open: touching is not overlapping
        (Period(A, B), Period(A - 5, A + 1), DENY),
        (Period(B, 0), Period(A, B), PERMIT),
        (Period(B, 0), Period(A, B + 1), DENY),
    ],
)
def test_deny_data_period_is_read_broadly(deny_period: Period, request_period: Period, expected: str) -> None:
    es = [grant(), deny(data_period=deny_period)]
    assert decide(es, req(period=request_period)).decision == expected


# --- deny overrides permit ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_deny", "expected"),
    [
        (lambda: [deny()], DENY),
        (lambda: [deny(grantee="role:insurer")], DENY),
        (lambda: [deny(grantee="any")], DENY),
        (lambda: [deny(purposes=("TREAT",))], PERMIT),
        (lambda: [deny(purposes=("COVAUTH",))], PERMIT),  # request CLMATTCH: not named
        (lambda: [deny(validity=Period(0, T - 1))], PERMIT),
        (lambda: (lambda d: [d, revoke(d)])(deny()), PERMIT),
        (lambda: [deny(grantee="org:insurer-2")], PERMIT),
        (lambda: [deny(at=T + 1)], PERMIT),
    ],
)
def test_deny_overrides_permit(make_deny: Callable[[], list[LedgerEntry]], expected: str) -> None:
    p = grant()
    extra = make_deny()
    d = decide([p, *extra], req(purpose="CLMATTCH"))
    assert d.decision == expected
    if expected == DENY:
        assert d.consent_ids == (extra[0].consent_id,)
        assert codes(d) == [D.CONSENT_DENY]
    else:
        assert d.consent_ids == (p.consent_id,)


# --- implicit policy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("implicit", "purpose", "requested", "expected", "reason"),
    [
        ("deny", "TREAT", "laboratory-results", DENY, D.NO_MATCHING_CONSENT),
        ("basic-normal", "TREAT", "laboratory-results", PERMIT, D.IMPLICIT_PERMIT),
        ("basic-normal", "COC", "imaging", PERMIT, D.IMPLICIT_PERMIT),
        ("basic-normal", "ETREAT", "medications", PERMIT, D.IMPLICIT_PERMIT),
        ("basic-normal", "HPAYMT", "laboratory-results", DENY, D.NO_MATCHING_CONSENT),
        ("basic-normal", "TREAT", "clinical-notes:MH", DENY, D.NO_MATCHING_CONSENT),
        ("break-glass-only", "TREAT", "laboratory-results", DENY, D.BREAK_GLASS_REQUIRED),
    ],
)
def test_implicit_policy(implicit: str, purpose: str, requested: str, expected: str, reason: str) -> None:
    d = decide([], req(requested, requester="hospital-1", roles=("hospital",), purpose=purpose), Policy(implicit=implicit))
    assert d.decision == expected
    assert codes(d) == [reason]
    assert d.consent_ids == ()


def test_implicit_policy_applies_only_when_nothing_matches() -> None:
    es = [deny(grantee="org:hospital-1", purposes=("TREAT",), classes=("*",))]
    d = decide(es, req(requester="hospital-1", roles=("hospital",), purpose="TREAT"), Policy(implicit="basic-normal"))
    assert d.decision == DENY and codes(d) == [D.CONSENT_DENY]


def test_default_policy_is_deny() -> None:
    assert Policy().implicit == "deny"
    assert decide([], req(purpose="TREAT", roles=("hospital",))).decision == DENY


# --- per-data-class outcomes --------------------------------------------------------------------


def test_each_class_is_decided_on_its_own() -> None:
    g = grant(classes=("laboratory-results",))
    d = decide([g], req("laboratory-results", "clinical-notes:MH", "imaging", purpose="CLMATTCH"))
    assert d.decision == PARTIAL
    assert [o.data for o in d.outcomes] == [item("laboratory-results"), item("clinical-notes:MH"), item("imaging")]
    assert [o.decision for o in d.outcomes] == [PERMIT, DENY, DENY]
    assert d.outcomes[0].consent_ids == (g.consent_id,)
    assert d.outcomes[1].consent_ids == () and d.outcomes[2].consent_ids == ()
    assert d.consent_ids == (g.consent_id,)
    assert d.permitted_data == (item("laboratory-results"),)
    assert codes(d) == [D.CONSENT_PERMIT, D.NO_MATCHING_CONSENT]


def test_overall_permit_only_if_every_class_is_permitted() -> None:
    g = grant(classes=("laboratory-results", "imaging"))
    assert decide([g], req("laboratory-results", "imaging")).decision == PERMIT
    assert decide([g], req("medications", "conditions")).decision == DENY


def test_consent_ids_are_sorted_and_name_every_deciding_consent() -> None:
    gs = [grant(), grant(grantee="role:insurer"), grant(grantee="any", classes=("*",))]
    d = decide(gs, req())
    assert d.consent_ids == tuple(sorted(g.consent_id for g in gs))
    assert d.outcomes[0].consent_ids == d.consent_ids


# --- break-glass --------------------------------------------------------------------------------

BG = dict(requester="ed-1", roles=("hospital",), purpose="BTG", bg=True, reason="unconscious patient, suspected overdose")
OBLIGATIONS = [D.OBLIGATION_RECORD_ACCESS_EVENT, D.OBLIGATION_NOTIFY_PATIENT, D.OBLIGATION_REVIEW_QUEUE]


def test_break_glass_permits_for_a_bounded_window_with_obligations() -> None:
    d = decide([], req("clinical-notes:MH", "medications", **BG))
    assert d.decision == PERMIT
    assert all(o.break_glass for o in d.outcomes)
    assert [o.code for o in d.obligations] == OBLIGATIONS
    assert d.break_glass_until_ms == T + 4 * H
    assert d.valid_until_ms == T + 5 * MIN
    assert codes(d) == [D.BREAK_GLASS]
    assert d.consent_ids == ()


@pytest.mark.parametrize(
    ("changes", "policy", "problem"),
    [
        (dict(purpose="TREAT"), Policy(), "purpose TREAT is not emergency treatment"),
        (dict(purpose="COC"), Policy(), "purpose COC is not emergency treatment"),
        (dict(roles=("insurer",)), Policy(), "not registered with role hospital"),
        (dict(roles=()), Policy(), "not registered with role hospital"),
        (dict(reason=" \n "), Policy(), "no reason was given"),
        (dict(reason=""), Policy(), "no reason was given"),
        ({}, Policy(break_glass_enabled=False), "break-glass is disabled"),
    ],
)
def test_break_glass_conditions(changes: dict[str, Any], policy: Policy, problem: str) -> None:
    d = decide([], req("clinical-notes:MH", **{**BG, **changes}), policy)
    assert d.decision == DENY
    assert d.obligations == () and d.break_glass_until_ms == 0
    assert codes(d) == [D.NO_MATCHING_CONSENT, D.BREAK_GLASS_NOT_ALLOWED]
    assert problem in d.reasons[-1].text


@pytest.mark.parametrize("purpose", ["ETREAT", "BTG", "ERTREAT"])
def test_break_glass_purposes(purpose: str) -> None:
    assert decide([], req(**{**BG, "purpose": purpose})).decision == PERMIT


def test_no_break_glass_without_the_flag() -> None:
    d = decide([], req(**{**BG, "bg": False, "reason": ""}))
    assert d.decision == DENY and codes(d) == [D.NO_MATCHING_CONSENT]


@pytest.mark.parametrize(
    ("make_deny", "expected"),
    [
        (lambda: [deny(grantee="org:ed-1", purposes=("TREAT",), classes=("*",))], DENY),  # names BTG by subsumption
        (lambda: [deny(grantee="role:hospital", purposes=("ETREAT",), classes=("*",))], DENY),
        (lambda: [deny(grantee="any", purposes=("BTG",), classes=("*",))], DENY),
        (lambda: [deny(grantee="org:ed-1", purposes=("HPAYMT",), classes=("*",))], PERMIT),  # another purpose
        (lambda: [deny(grantee="org:ed-1", purposes=("ERTREAT",), classes=("*",))], PERMIT),  # a narrower one
        (lambda: [deny(grantee="org:other-hospital", purposes=("BTG",), classes=("*",))], PERMIT),
        (lambda: (lambda x: [x, revoke(x)])(deny(grantee="org:ed-1", purposes=("BTG",), classes=("*",))), PERMIT),
        (lambda: [deny(grantee="org:ed-1", purposes=("BTG",), classes=("*",), validity=Period(0, T))], PERMIT),
    ],
)
def test_break_glass_yields_to_a_deny_naming_the_purpose(
    make_deny: Callable[[], list[LedgerEntry]], expected: str
) -> None:
    d = decide(make_deny(), req("clinical-notes:MH", **BG))
    assert d.decision == expected
    if expected == DENY:
        assert codes(d) == [D.CONSENT_DENY, D.BREAK_GLASS_DENIED_BY_CONSENT]
        assert d.obligations == ()


def test_break_glass_only_where_no_consent_permits() -> None:
    g = grant(grantee="org:ed-1", purposes=("TREAT",), classes=("laboratory-results",))
    d = decide([g], req("laboratory-results", "clinical-notes:MH", **BG))
    assert d.decision == PERMIT
    assert [o.break_glass for o in d.outcomes] == [False, True]
    assert d.outcomes[0].consent_ids == (g.consent_id,)
    assert [o.code for o in d.obligations] == OBLIGATIONS
    # Entirely covered by consent: no glass broken, no obligations.
    d2 = decide([g], req("laboratory-results", **BG))
    assert d2.decision == PERMIT and d2.obligations == () and d2.break_glass_until_ms == 0


def test_basic_normal_is_preferred_to_breaking_the_glass() -> None:
    d = decide([], req("laboratory-results", "clinical-notes:MH", **BG), Policy(implicit="basic-normal"))
    assert [o.break_glass for o in d.outcomes] == [False, True]
    assert [r.code for r in d.outcomes[0].reasons] == [D.IMPLICIT_PERMIT]


def test_break_glass_under_break_glass_only() -> None:
    assert decide([], req(**BG), Policy(implicit="break-glass-only")).decision == PERMIT


def test_break_glass_window_bounds_valid_until() -> None:
    d = decide([], req(**BG), Policy(break_glass_window_ms=2 * MIN))
    assert d.break_glass_until_ms == T + 2 * MIN and d.valid_until_ms == T + 2 * MIN


# --- valid_until --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "requested", "policy", "expected"),
    [
        (lambda: [], ("laboratory-results",), Policy(), T + 5 * MIN),
        (lambda: [], ("laboratory-results",), Policy(decision_ttl_ms=30_000), T + 30_000),
        (lambda: [grant()], ("laboratory-results",), Policy(), T + 5 * MIN),
        (lambda: [grant(validity=Period(0, T + MIN))], ("laboratory-results",), Policy(), T + MIN),
        # Several permits cover the item: it stays permitted until the last one ends.
        (
            lambda: [grant(validity=Period(0, T + MIN)), grant(grantee="any", validity=Period(0, T + 2 * MIN))],
            ("laboratory-results",), Policy(), T + 2 * MIN,
        ),
        (
            lambda: [grant(validity=Period(0, T + MIN)), grant(grantee="any")],
            ("laboratory-results",), Policy(), T + 5 * MIN,
        ),
        # Two items: the decision holds until the first of them lapses.
        (
            lambda: [grant(validity=Period(0, T + MIN)), grant(classes=("imaging",), validity=Period(0, T + 2 * MIN))],
            ("laboratory-results", "imaging"), Policy(), T + MIN,
        ),
        # A DENY already in the log that starts later ends the permit then.
        (lambda: [grant(), deny(validity=Period(T + 2 * MIN, 0))], ("laboratory-results",), Policy(), T + 2 * MIN),
        (lambda: [grant(), deny(classes=("imaging",), validity=Period(T + 2 * MIN, 0))], ("laboratory-results",), Policy(), T + 5 * MIN),
        (lambda: [grant(), deny(grantee="org:x", validity=Period(T + 2 * MIN, 0))], ("laboratory-results",), Policy(), T + 5 * MIN),
        # A refused item's grants do not shorten anything.
        (lambda: [grant(classes=("imaging",), validity=Period(0, T + MIN))], ("laboratory-results",), Policy(), T + 5 * MIN),
    ],
)
def test_valid_until(make: Callable[[], list[LedgerEntry]], requested: tuple[str, ...], policy: Policy, expected: int) -> None:
    assert decide(make(), req(*requested), policy).valid_until_ms == expected


# --- refusals do not leak -----------------------------------------------------------------------


def _others() -> list[LedgerEntry]:
    h = grant(grantee="org:hospital-1", purposes=("TREAT",), classes=("*",), labels=("SPI",))
    return [
        h,
        grant(grantee="org:insurer-2", purposes=("HPAYMT",), classes=("*",), labels=("MH",)),
        grant(grantee="role:research", purposes=("HRESCH",), classes=("*",)),
        deny(grantee="org:insurer-2", classes=("*",), validity=Period(T + MIN, 0)),
        deny(grantee="role:hospital", purposes=("HMARKT",), classes=("*",)),
        revoke(h),
        grant(patient=OTHER_PATIENT, grantee="org:insurer-1", classes=("*",), labels=("SPI",)),
    ]


@pytest.mark.parametrize("policy", [Policy(), Policy(implicit="basic-normal"), Policy(implicit="break-glass-only")])
@pytest.mark.parametrize(
    "request_",
    [
        req("laboratory-results", "clinical-notes:MH"),
        req("imaging", purpose="CLMATTCH", roles=()),
        req("clinical-notes:MH", requester="hosp-9", roles=("hospital",), purpose="TREAT"),
    ],
)
def test_refusal_identical_with_no_consents_or_only_others(request_: AccessRequest, policy: Policy) -> None:
    assert decide(_others(), request_, policy) == decide([], request_, policy)


def test_label_not_named_only_from_own_consents() -> None:
    others = [grant(grantee="org:insurer-2", classes=("*",))]
    assert codes(decide(others, req("clinical-notes:MH"))) == [D.NO_MATCHING_CONSENT]


def test_other_kinds_of_entries_are_ignored() -> None:
    ev = build_access_event(
        patient=PATIENT, party_id="insurer-1", action="access", purpose="HPAYMT",
        data=[DataItem("laboratory-results")], decision=PERMIT, issued_at_ms=T - 5, nonce=bytes(16),
    )
    reg = build_party_registration(
        party_id="insurer-1", roles=["insurer"], public_keys=[bytes(32)], display_name="I", issued_at_ms=T - 5,
        nonce=bytes(16),
    )
    es = [
        LedgerEntry.from_payload(index=1, integrated_time_ms=T - 1, payload_type="consent_ledger.v1.AccessEvent", payload=ev),
        LedgerEntry.from_payload(index=2, integrated_time_ms=T - 1, payload_type="consent_ledger.v1.PartyRegistration", payload=reg),
    ]
    assert decide(es, req()) == decide([], req())


# --- validation of the inputs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (dict(patient=b"x" * 31), r"patient: must be a 32-byte"),
        (dict(requester_id="Insurer 1"), r"requester: 'Insurer 1' is not a party id"),
        (dict(requester_roles=("payer",)), r"requester roles: unknown role 'payer'"),
        (dict(requester_roles=("insurer", "insurer")), r"requester roles: 'insurer' is listed twice"),
        (dict(action="read"), r"action: unknown action 'read'"),
        (dict(purpose="PAY"), r"purpose: unknown purpose of use 'PAY'"),
        (dict(data=()), r"data: 1 to 32 requested items required"),
        (dict(data=(DataItem("*"),)), r"the wildcard '\*' is not allowed here"),
        (dict(data=(DataItem("notes"),)), r"unknown data class 'notes'"),
        (dict(data=(DataItem("clinical-notes", ("SICKLE",)),)), r"'SICKLE' is retired; use SCA"),
        (dict(data=(DataItem("imaging"), DataItem("imaging"))), r"item imaging with the same labels is listed twice"),
        (dict(data=(DataItem("imaging", ("MH", "SUD")), DataItem("imaging", ("SUD", "MH")))), r"listed twice"),
        (dict(data_period=Period(T, T - 1)), r"data period: ends"),
        (dict(time_ms=0), r"time: must be a positive time"),
        (dict(break_glass_reason="x"), r"break-glass reason: given without break glass"),
        (dict(break_glass=True, break_glass_reason="x" * 1025), r"break-glass reason: must be text of at most 1024"),
        (dict(break_glass=True, break_glass_reason="a\x1bb"), r"break-glass reason: contains control characters"),
    ],
)
def test_malformed_requests(changes: dict[str, Any], match: str) -> None:
    base = dict(
        patient=PATIENT, requester_id="insurer-1", requester_roles=("insurer",), action="access",
        purpose="HPAYMT", data=(DataItem("laboratory-results"),), time_ms=T,
    )
    with pytest.raises(InvalidInput, match=match):
        decide([], AccessRequest(**{**base, **changes}))


def test_requester_roles_are_kept_sorted() -> None:
    assert req(roles=("research", "hospital")).requester_roles == ("hospital", "research")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(implicit="allow"), r"implicit policy: unknown 'allow'"),
        (dict(decision_ttl_ms=0), r"decision ttl: must be 1 to"),
        (dict(decision_ttl_ms=2 * DAY), r"decision ttl: must be 1 to"),
        (dict(break_glass_window_ms=-1), r"break-glass window: must be 1 to"),
        (dict(implicit="break-glass-only", break_glass_enabled=False), r"break-glass-only needs break-glass enabled"),
    ],
)
def test_bad_policies(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        Policy(**kw)


# --- evidence and consent states ----------------------------------------------------------------


def test_evidence_for_is_exactly_what_the_decision_needs() -> None:
    mine = grant()
    mine_too = grant(grantee="role:insurer", classes=("imaging",))
    revoked = grant(grantee="any", classes=("medications",))
    superseded = grant(classes=("conditions",))
    successor = grant(grantee="org:insurer-2", classes=("conditions",), supersedes=superseded)
    rev = revoke(revoked)
    future = grant(at=T + 1)
    others = _others()
    everything = [future, *others, successor, rev, mine, mine_too, revoked, superseded]
    r = req("laboratory-results", "imaging", "medications", "conditions")
    ev = D.evidence_for(everything, r)
    assert ev == tuple(sorted([mine, mine_too, revoked, superseded, successor, rev], key=lambda e: e.index))
    assert decide(ev, r) == decide(everything, r)
    assert decide(everything, r).decision == PARTIAL


def test_consent_states() -> None:
    active = grant()
    pending = grant(validity=Period(T + 1, 0))
    expired = grant(validity=Period(0, T))
    revoked = grant()
    superseded = grant()
    both = grant()
    later = grant(at=T + 1)
    es = [
        active, pending, expired, revoked, revoke(revoked), superseded, grant(supersedes=superseded),
        both, revoke(both), grant(supersedes=both), later, grant(patient=OTHER_PATIENT),
    ]
    states = D.consent_states(es, T)
    assert states[active.consent_id] == D.STATE_ACTIVE
    assert states[pending.consent_id] == D.STATE_PENDING
    assert states[expired.consent_id] == D.STATE_EXPIRED
    assert states[revoked.consent_id] == D.STATE_REVOKED
    assert states[superseded.consent_id] == D.STATE_SUPERSEDED
    assert states[both.consent_id] == D.STATE_REVOKED
    assert later.consent_id not in states
    assert list(states.values()).count(D.STATE_ACTIVE) == 4  # + two successors + other patient's


# --- the demo story, as decisions ---------------------------------------------------------------


def test_demo_story() -> None:
    year = Period(T - DAY, T + 364 * DAY)
    hospital = grant(at=T - DAY, grantee="org:hospital-1", purposes=("TREAT",),
                     classes=("laboratory-results", "imaging"), validity=year)
    log = [hospital]
    insurer = dict(requester="insurer-1", roles=("insurer",), purpose="HPAYMT")

    # The insurer asks for HPAYMT access to lab results and is refused.
    assert decide(log, req("laboratory-results", t=T - 100, **insurer)).decision == DENY

    # The patient grants the insurer HPAYMT for lab results only.
    ins = grant(at=T - 50, grantee="org:insurer-1", purposes=("HPAYMT",), classes=("laboratory-results",))
    log.append(ins)
    d = decide(log, req("laboratory-results", "clinical-notes:MH", t=T, **insurer))
    assert d.decision == PARTIAL
    assert [o.decision for o in d.outcomes] == [PERMIT, DENY]
    assert d.consent_ids == (ins.consent_id,)

    # The patient revokes; the insurer's next check is refused at once.
    log.append(revoke(ins, at=T + 10))
    assert decide(log, req("laboratory-results", t=T + 10, **insurer)).decision == DENY

    # The hospital still has its consent; its emergency department breaks the glass for notes.
    d = decide(log, req("laboratory-results", "clinical-notes:MH", t=T + 20, requester="hospital-1",
                        roles=("hospital",), purpose="ETREAT", bg=True, reason="patient unconscious in ED"))
    assert d.decision == PERMIT
    assert [o.break_glass for o in d.outcomes] == [False, True]
    assert d.break_glass_until_ms == T + 20 + 4 * H
    assert [o.code for o in d.obligations] == OBLIGATIONS
