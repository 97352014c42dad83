"""Properties of the decision function over generated ledgers and requests."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent_ledger.core import vocab
from consent_ledger.core.decision import (
    AccessRequest,
    Decision,
    LedgerEntry,
    Policy,
    decide,
    evidence_for,
    grantee_selectors,
)
from consent_ledger.core.payloads import (
    DENY,
    PARTIAL,
    PERMIT,
    ConsentGrantPayload,
    ConsentRevocationPayload,
    DataItem,
    Period,
    consent_id,
    encode_payload,
)
from consent_ledger.core.receipt import decode_decision, encode_decision

T = 1_800_000_000_000
MIN = 60_000
H = 60 * MIN
DAY = 24 * H
PATIENT = bytes(range(32))
OTHER_PATIENT = bytes(range(100, 132))

# Small pools, so that generated grants often match the generated request.
REQUESTERS = [
    ("insurer-1", ("insurer",)),
    ("hospital-1", ("hospital",)),
    ("ed-1", ("hospital", "research")),
    ("lab-1", ()),
]
GRANTEES = ["org:insurer-1", "org:hospital-1", "org:ed-1", "org:other", "role:insurer", "role:hospital", "any"]
PURPOSES = ["TREAT", "ETREAT", "BTG", "HPAYMT", "CLMATTCH", "COVAUTH"]
ACTIONS = ["access", "use"]
CLASSES = ["laboratory-results", "clinical-notes"]
LABELS = ["SPI", "MH", "SUD", "ETH"]
POLICIES = [
    Policy(),
    Policy(implicit="basic-normal"),
    Policy(implicit="break-glass-only"),
    Policy(break_glass_enabled=False),
    Policy(decision_ttl_ms=30_000, break_glass_window_ms=MIN),
]

TIMES = st.sampled_from([T - 2 * H, T - 2 * H, T - MIN, T - 1, T, T + 1, T + MIN])
VALIDITY_POINTS = [0, T - 2 * H, T - MIN, T, T + 1, T + MIN, T + 2 * H]
DATA_POINTS = [0, T - 300 * DAY, T - 100 * DAY, T - 10 * DAY]

_nonces = itertools.count(1)


def _period(points: list[int], unbounded_weight: int) -> st.SearchStrategy[Period]:
    periods = [Period(a, b) for a in points for b in points if (a == 0 or b == 0 or b > a) and (a or b)]
    return st.sampled_from([Period()] * unbounded_weight + periods)


VALIDITY = _period(VALIDITY_POINTS, 20)
DATA_PERIOD = _period(DATA_POINTS, 10)


def _subset(pool: list[str], lo: int, hi: int) -> st.SearchStrategy[tuple[str, ...]]:
    return st.lists(st.sampled_from(pool), min_size=lo, max_size=hi, unique=True).map(tuple)


def make_grant(*, index: int, at: int, supersedes: str | None = None, **kw: Any) -> LedgerEntry:
    p = ConsentGrantPayload(
        patient=kw.pop("patient", PATIENT),
        supersedes=supersedes,
        issued_at_ms=T - DAY,
        nonce=next(_nonces).to_bytes(16, "big"),
        **kw,
    )
    return LedgerEntry(
        index=index, integrated_time_ms=at, consent_id=consent_id(encode_payload(p)), payload=p, signers=(p.patient,)
    )


def make_revocation(*, index: int, at: int, target: LedgerEntry, patient: bytes = PATIENT) -> LedgerEntry:
    p = ConsentRevocationPayload(
        patient=patient, consent_id=target.consent_id, issued_at_ms=T - DAY, nonce=next(_nonces).to_bytes(16, "big")
    )
    return LedgerEntry(
        index=index, integrated_time_ms=at, consent_id=consent_id(encode_payload(p)), payload=p, signers=(p.patient,)
    )


# Strategies are built once: building them inside a draw costs more than the decisions.
_DECISION = st.sampled_from([PERMIT, PERMIT, DENY])
_ACTIONS = _subset(ACTIONS, 1, 2)
_PURPOSES = _subset(PURPOSES, 1, 2)
_CLASSES = st.one_of(st.just(("*",)), _subset(CLASSES, 1, 2))
_LABELS = st.one_of(st.just(()), _subset(LABELS, 1, 2))


def grant_fields(grantees: list[str] = GRANTEES) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        dict(
            grantee=st.sampled_from(grantees),
            decision=_DECISION,
            actions=_ACTIONS,
            purposes=_PURPOSES,
            data_classes=_CLASSES,
            sensitivity_labels=_LABELS,
            data_period=DATA_PERIOD,
            validity=VALIDITY,
        )
    )


_ONE_IN_FIVE = st.integers(0, 4)
_ONE_IN_TEN = st.integers(0, 9)


def ledgers(grantees: list[str] = GRANTEES, max_grants: int = 6) -> st.SearchStrategy[list[LedgerEntry]]:
    fields = grant_fields(grantees)
    count = st.integers(0, max_grants)

    @st.composite
    def build(draw: st.DrawFn) -> list[LedgerEntry]:
        entries: list[LedgerEntry] = []
        grants: list[LedgerEntry] = []
        for _ in range(draw(count)):
            sup = None
            if grants and draw(_ONE_IN_FIVE) == 0:
                sup = grants[draw(st.integers(0, len(grants) - 1))].consent_id
            patient = OTHER_PATIENT if draw(_ONE_IN_TEN) == 0 else PATIENT
            g = make_grant(index=len(entries), at=draw(TIMES), supersedes=sup, patient=patient, **draw(fields))
            grants.append(g)
            entries.append(g)
        for g in grants:
            if draw(_ONE_IN_FIVE) == 0:
                entries.append(make_revocation(index=len(entries), at=draw(TIMES), target=g, patient=g.payload.patient))
        for g in grants:
            if draw(_ONE_IN_TEN) == 0:
                # The same payload integrated again (in another envelope), at another time.
                entries.append(dataclasses.replace(g, index=len(entries), integrated_time_ms=draw(TIMES)))
        return entries

    return build()


_REASON = st.sampled_from(["", "patient unconscious"])
ITEMS = st.lists(
    st.tuples(st.sampled_from(CLASSES), _LABELS),
    min_size=1, max_size=3, unique_by=lambda x: (x[0], frozenset(x[1])),
).map(lambda xs: tuple(DataItem(c, ls) for c, ls in xs))


_REQUESTERS = st.sampled_from(REQUESTERS)
_ACTION = st.sampled_from(ACTIONS)
_PURPOSE = st.sampled_from(PURPOSES)


@st.composite
def requests(draw: st.DrawFn) -> AccessRequest:
    requester, roles = draw(_REQUESTERS)
    bg = draw(st.booleans())
    return AccessRequest(
        patient=PATIENT,
        requester_id=requester,
        requester_roles=roles,
        action=draw(_ACTION),
        purpose=draw(_PURPOSE),
        data=draw(ITEMS),
        data_period=draw(DATA_PERIOD),
        time_ms=T,
        break_glass=bg,
        break_glass_reason=draw(_REASON) if bg else "",
    )


POLICY = st.sampled_from(POLICIES)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _never_more_permissive(before: Decision, after: Decision) -> None:
    for b, a in zip(before.outcomes, after.outcomes, strict=True):
        if b.decision == DENY:
            assert a.decision == DENY
    if before.decision == DENY:
        assert after.decision == DENY
    if before.decision == PARTIAL:
        assert after.decision != PERMIT


@SETTINGS
@given(ledgers(), requests(), POLICY, st.randoms(use_true_random=False))
def test_result_does_not_depend_on_entry_order(entries: list[LedgerEntry], r: AccessRequest, policy: Policy, rnd: Any) -> None:
    shuffled = list(entries)
    rnd.shuffle(shuffled)
    assert decide(shuffled, r, policy) == decide(entries, r, policy)
    assert decide(reversed(entries), r, policy) == decide(entries, r, policy)


@SETTINGS
@given(ledgers(), requests(), POLICY, st.data())
def test_adding_an_in_force_matching_deny_never_yields_permit(
    entries: list[LedgerEntry], r: AccessRequest, policy: Policy, data: st.DataObject
) -> None:
    before = decide(entries, r, policy)
    i = data.draw(st.integers(0, len(r.data) - 1))
    target = r.data[i]
    grantee = data.draw(st.sampled_from(grantee_selectors(r.requester_id, r.requester_roles)))
    broader_purpose = data.draw(st.sampled_from(sorted(vocab.purpose_ancestors(r.purpose))))
    d = make_grant(
        index=len(entries),
        at=data.draw(st.sampled_from([T - H, T])),
        grantee=grantee,
        decision=DENY,
        actions=(r.action,),
        purposes=(broader_purpose,),
        data_classes=data.draw(st.sampled_from([("*",), (target.data_class,)])),
        sensitivity_labels=data.draw(st.sampled_from([(), target.sensitivity_labels[:1]])),
        data_period=data.draw(st.sampled_from([Period(), r.data_period])),
        validity=data.draw(st.sampled_from([Period(), Period(T - H, T + H)])),
    )
    after = decide([*entries, d], r, policy)
    assert after.decision != PERMIT
    assert after.outcomes[i].decision == DENY
    assert d.consent_id in after.outcomes[i].consent_ids
    assert not after.outcomes[i].break_glass
    _never_more_permissive(before, after)


@SETTINGS
@given(ledgers(), requests(), POLICY, st.data())
def test_revoking_never_turns_deny_into_permit(
    entries: list[LedgerEntry], r: AccessRequest, policy: Policy, data: st.DataObject
) -> None:
    permits = [e for e in entries if isinstance(e.payload, ConsentGrantPayload) and e.payload.decision == PERMIT]
    if not permits:
        return
    target = data.draw(st.sampled_from(permits))
    rev = make_revocation(index=len(entries), at=data.draw(TIMES), target=target, patient=target.payload.patient)
    before = decide(entries, r, policy)
    after = decide([*entries, rev], r, policy)
    _never_more_permissive(before, after)


@SETTINGS
@given(ledgers(), requests(), POLICY)
def test_a_wildcard_never_covers_a_sensitive_category(entries: list[LedgerEntry], r: AccessRequest, policy: Policy) -> None:
    d = decide(entries, r, policy)
    by_id = {e.consent_id: e.payload for e in entries}
    for o in d.outcomes:
        if o.decision != PERMIT or not o.data.sensitivity_labels or o.break_glass:
            continue
        # Permitted labelled data without breaking the glass: every consent relied on names
        # each label (or an ancestor); neither the wildcard nor an implicit policy reaches it.
        assert o.consent_ids
        for cid in o.consent_ids:
            g = by_id[cid]
            assert isinstance(g, ConsentGrantPayload) and g.decision == PERMIT
            for label in o.data.sensitivity_labels:
                assert any(vocab.label_covers(gl, label) for gl in g.sensitivity_labels)
    # The same ledger with every permit's labels dropped permits no labelled data but by break-glass.
    stripped = [
        dataclasses.replace(e, payload=dataclasses.replace(e.payload, sensitivity_labels=()))
        if isinstance(e.payload, ConsentGrantPayload) and e.payload.decision == PERMIT
        else e
        for e in entries
    ]
    for o in decide(stripped, r, policy).outcomes:
        if o.data.sensitivity_labels and o.decision == PERMIT:
            assert o.break_glass


@SETTINGS
@given(ledgers(), requests(), POLICY, grant_fields(), st.data())
def test_outside_its_validity_period_a_grant_has_no_effect(
    entries: list[LedgerEntry], r: AccessRequest, policy: Policy, fields: dict[str, Any], data: st.DataObject
) -> None:
    expired = data.draw(st.booleans())
    if expired:
        fields["validity"] = data.draw(st.sampled_from([Period(0, T), Period(T - 2 * H, T - MIN), Period(T - H, T)]))
    else:
        fields["validity"] = data.draw(st.sampled_from([Period(T + 1, 0), Period(T + MIN, T + 2 * H)]))
    g = make_grant(index=len(entries), at=data.draw(st.sampled_from([T - 2 * H, T])), **fields)
    before = decide(entries, r, policy)
    after = decide([*entries, g], r, policy)
    if expired or g.payload.decision == PERMIT:
        assert after == before
    else:
        # A DENY already in the log that starts later only shortens how long a permit may be relied on.
        assert dataclasses.replace(after, valid_until_ms=before.valid_until_ms) == before
        assert after.valid_until_ms <= before.valid_until_ms
        assert after.valid_until_ms in (before.valid_until_ms, g.payload.validity.start_ms)


_OTHERS_LEDGERS = {
    requester: ledgers(grantees=[g for g in GRANTEES if g not in grantee_selectors(requester, roles)])
    for requester, roles in REQUESTERS
}


@SETTINGS
@given(requests(), POLICY, st.data())
def test_refusal_identical_with_no_consents_or_only_others(r: AccessRequest, policy: Policy, data: st.DataObject) -> None:
    entries = data.draw(_OTHERS_LEDGERS[r.requester_id])
    assert entries == [] or all(
        e.payload.grantee not in grantee_selectors(r.requester_id, r.requester_roles)
        for e in entries if isinstance(e.payload, ConsentGrantPayload)
    )
    assert decide(entries, r, policy) == decide([], r, policy)


@SETTINGS
@given(ledgers(), requests(), POLICY)
def test_evidence_for_is_sufficient(entries: list[LedgerEntry], r: AccessRequest, policy: Policy) -> None:
    ev = evidence_for(entries, r)
    assert set(ev) <= set(entries)
    assert decide(ev, r, policy) == decide(entries, r, policy)


@SETTINGS
@given(ledgers(), requests(), POLICY)
def test_decision_shape_and_encoding(entries: list[LedgerEntry], r: AccessRequest, policy: Policy) -> None:
    d = decide(entries, r, policy)
    assert [o.data for o in d.outcomes] == list(r.data)
    assert all(o.decision in (PERMIT, DENY) for o in d.outcomes)
    n = sum(o.decision == PERMIT for o in d.outcomes)
    assert d.decision == (PERMIT if n == len(r.data) else DENY if n == 0 else PARTIAL)
    assert d.consent_ids == tuple(sorted({c for o in d.outcomes for c in o.consent_ids}))
    assert T < d.valid_until_ms <= T + policy.decision_ttl_ms
    used_bg = any(o.break_glass for o in d.outcomes)
    assert bool(d.obligations) == used_bg
    assert (d.break_glass_until_ms == T + policy.break_glass_window_ms) if used_bg else d.break_glass_until_ms == 0
    if used_bg:
        assert r.break_glass and "hospital" in r.requester_roles and vocab.is_emergency_purpose(r.purpose)
        assert policy.break_glass_enabled and r.break_glass_reason
    assert decode_decision(encode_decision(d)) == d
    assert decide(entries, d.request, d.policy) == d
