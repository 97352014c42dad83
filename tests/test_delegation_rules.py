"""The delegation rules (core.delegation) and decide with delegations, one table per rule."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import pytest

from consent_ledger.core import delegation as DG
from consent_ledger.core.vocab import ATTEST_GUARDIANSHIP
from consent_ledger.core.decision import (
    SIGNER_NOT_AUTHORISED,
    AccessRequest,
    LedgerEntry,
    decide,
    evidence_for,
)
from consent_ledger.core.errors import InvalidInput
from consent_ledger.core.payloads import (
    DENY,
    PERMIT,
    ConsentGrantPayload,
    ConsentRevocationPayload,
    DataItem,
    DelegationPayload,
    PartyRegistrationPayload,
    Period,
    build_delegation,
    consent_id,
    encode_payload,
)

T = 1_800_000_000_000
H = 3_600_000
DAY = 24 * H
PATIENT = bytes(range(32))
GUARDIAN = bytes(range(40, 72))
PROXY = bytes(range(80, 112))
ORG_KEY = bytes(range(120, 152))
STRANGER = bytes(range(160, 192))

_seq = itertools.count(1)


def _entry(p: object, at: int, signers: Sequence[bytes]) -> LedgerEntry:
    n = next(_seq)
    return LedgerEntry(
        index=n, integrated_time_ms=at, consent_id=consent_id(encode_payload(p)), payload=p, signers=tuple(signers)  # type: ignore[arg-type]
    )


def delegation(
    *,
    at: int = T - DAY,
    delegate: bytes = GUARDIAN,
    relationship: str = "guardian",
    scope: Sequence[str] = ("*",),
    validity: Period = Period(),
    majority: int = 0,
    attested_by: str = "",
    signers: Sequence[bytes] | None = None,
) -> LedgerEntry:
    p = DelegationPayload(
        patient=PATIENT, delegate=delegate, relationship=relationship, scope=tuple(scope), validity=validity,
        majority_date_ms=majority, evidence_reference="court order 17/2026" if attested_by else "",
        attested_by=attested_by, issued_at_ms=at - 1, nonce=next(_seq).to_bytes(16, "big"),
    )  # fmt: skip
    return _entry(p, at, (PATIENT,) if signers is None else signers)


def registration(
    *, at: int = T - 2 * DAY, party: str = "hospital-1", keys: Sequence[bytes] = (ORG_KEY,),
    capabilities: Sequence[str] = (ATTEST_GUARDIANSHIP,),
) -> LedgerEntry:
    p = PartyRegistrationPayload(
        party_id=party, roles=("hospital",), public_keys=tuple(keys), display_name="H", issued_at_ms=at - 1,
        nonce=next(_seq).to_bytes(16, "big"), capabilities=tuple(capabilities),
    )  # fmt: skip
    return _entry(p, at, (b"\x00" * 32,))


def grant(*, at: int = T - H, signers: Sequence[bytes] = (GUARDIAN,), supersedes: LedgerEntry | None = None, decision: str = PERMIT) -> LedgerEntry:
    p = ConsentGrantPayload(
        patient=PATIENT, grantee="org:insurer-1", decision=decision, actions=("access",), purposes=("HPAYMT",),
        data_classes=("laboratory-results",), supersedes=None if supersedes is None else supersedes.consent_id,
        issued_at_ms=at - 1, nonce=next(_seq).to_bytes(16, "big"),
    )  # fmt: skip
    return _entry(p, at, signers)


def revoke(target: LedgerEntry, *, at: int = T - 2 * H, signers: Sequence[bytes] = (PATIENT,)) -> LedgerEntry:
    p = ConsentRevocationPayload(
        patient=PATIENT, consent_id=target.consent_id, issued_at_ms=at - 1, nonce=next(_seq).to_bytes(16, "big")
    )
    return _entry(p, at, signers)


def req(t: int = T) -> AccessRequest:
    return AccessRequest(
        patient=PATIENT, requester_id="insurer-1", requester_roles=("insurer",), action="access", purpose="HPAYMT",
        data=(DataItem("laboratory-results"),), time_ms=t,
    )  # fmt: skip


# --- the in-force rule ------------------------------------------------------------------------------------------


def _d(**kw: object) -> DelegationPayload:
    base: dict[str, object] = dict(
        patient=PATIENT, delegate=GUARDIAN, relationship="guardian", scope=("grant",), issued_at_ms=1, nonce=bytes(16)
    )
    base.update(kw)
    return DelegationPayload(**base)  # type: ignore[arg-type]


IN_FORCE: list[tuple[str, DelegationPayload, int, int | None, int, str | None, str | None]] = [
    # name, delegation, integrated, revoked, t, action, refusal contains (None: in force)
    ("in force", _d(), T - DAY, None, T, "grant", None),
    ("integrated at t", _d(), T, None, T, "grant", None),
    ("integrated after t", _d(), T + 1, None, T, "grant", "not yet in the log"),
    ("validity starts at t", _d(validity=Period(T, 0)), T - DAY, None, T, "grant", None),
    ("validity starts after t", _d(validity=Period(T + 1, 0)), T - DAY, None, T, "grant", "had not started"),
    ("validity ends after t", _d(validity=Period(0, T + 1)), T - DAY, None, T, "grant", None),
    ("validity ends at t (half-open)", _d(validity=Period(0, T)), T - DAY, None, T, "grant", "has ended"),
    ("majority date after t", _d(majority_date_ms=T + 1), T - DAY, None, T, "grant", None),
    ("majority date at t", _d(majority_date_ms=T), T - DAY, None, T, "grant", "majority date"),
    ("majority date before t", _d(majority_date_ms=T - H), T - DAY, None, T, "grant", "majority date"),
    ("revoked after t", _d(), T - DAY, T + 1, T, "grant", None),
    ("revoked at t", _d(), T - DAY, T, T, "grant", "revoked"),
    ("revoked before t", _d(), T - DAY, T - 1, T, "grant", "revoked"),
    ("scope grant, action revoke", _d(), T - DAY, None, T, "revoke", "does not cover revoke"),
    ("scope revoke, action grant", _d(scope=("revoke",)), T - DAY, None, T, "grant", "does not cover grant"),
    ("scope *, action revoke", _d(scope=("*",)), T - DAY, None, T, "revoke", None),
    ("scope grant+revoke, action revoke", _d(scope=("grant", "revoke")), T - DAY, None, T, "revoke", None),
    ("any scope", _d(scope=("revoke",)), T - DAY, None, T, None, None),
]


@pytest.mark.parametrize(("d", "integrated", "revoked", "t", "action", "why"), [c[1:] for c in IN_FORCE], ids=[c[0] for c in IN_FORCE])
def test_in_force_rule(d: DelegationPayload, integrated: int, revoked: int | None, t: int, action: str | None, why: str | None) -> None:
    got = DG.refusal(d, integrated_ms=integrated, revoked_ms=revoked, t_ms=t, actions=(action,))
    assert (got is None) == (why is None), got
    if why is not None:
        assert got is not None and why in got
    assert DG.in_force(d, integrated_ms=integrated, revoked_ms=revoked, t_ms=t, scope=action) == (why is None)


def test_required_scope() -> None:
    g = grant()
    assert DG.required_scope(g.payload) == ("grant",)
    assert DG.required_scope(grant(supersedes=g).payload) == ("grant", "revoke")
    assert DG.required_scope(revoke(g).payload) == ("revoke",)
    assert DG.required_scope(delegation().payload) == ()


@pytest.mark.parametrize(
    ("attested_by", "signers", "org_keys", "signed", "revocable"),
    [
        ("", (PATIENT,), (), True, True),
        ("", (GUARDIAN,), (), False, False),
        ("", (ORG_KEY,), (ORG_KEY,), False, False),
        ("hospital-1", (ORG_KEY,), (ORG_KEY,), True, True),
        ("hospital-1", (PATIENT,), (ORG_KEY,), False, True),  # the patient may always end a delegation
        ("hospital-1", (STRANGER,), (ORG_KEY,), False, False),
        ("hospital-1", (ORG_KEY,), (), False, False),  # not a key of the organisation's registration
    ],
)
def test_who_signs_and_who_revokes(attested_by: str, signers: tuple[bytes, ...], org_keys: tuple[bytes, ...], signed: bool, revocable: bool) -> None:
    d = _d(attested_by=attested_by, evidence_reference="ref" if attested_by else "")
    assert DG.signed_validly(d, signers, org_keys, (ATTEST_GUARDIANSHIP,)) == signed
    assert DG.may_revoke(d, signers, org_keys) == revocable


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"attested_by": "hospital-1"}, "evidence reference: required"),
        ({"attested_by": "hospital-1", "evidence_reference": "x", "relationship": "proxy"}, "guardians only"),
        ({"attested_by": "not a party id!", "evidence_reference": "x"}, "attested by"),
        ({"scope": ("grant", "*")}, "wildcard"),
        ({"delegate": PATIENT}, "not be the patient"),
    ],
)
def test_invalid_delegations(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        encode_payload(_d(**fields))


def test_attested_delegation_round_trips() -> None:
    raw = build_delegation(
        patient=PATIENT, delegate=GUARDIAN, relationship="guardian", scope=["*"], evidence_reference="birth register 1",
        attested_by="hospital-1", majority_date_ms=T, issued_at_ms=1, nonce=bytes(16),
    )  # fmt: skip
    from consent_ledger.core.payloads import DELEGATION, parse_payload

    p = parse_payload(DELEGATION, raw)
    assert isinstance(p, DelegationPayload) and p.attested_by == "hospital-1" and p.majority_date_ms == T


# --- decide with delegations -------------------------------------------------------------------------------------


DECIDE: list[tuple[str, Callable[[], list[LedgerEntry]], str]] = [
    ("signed by the patient", lambda: [grant(signers=(PATIENT,))], PERMIT),
    ("signed by a stranger", lambda: [grant(signers=(STRANGER,))], DENY),
    ("delegate without a delegation given", lambda: [grant()], DENY),
    ("guardian in force", lambda: [delegation(), grant()], PERMIT),
    ("proxy with scope revoke cannot grant", lambda: [delegation(delegate=PROXY, relationship="proxy", scope=("revoke",)), grant(signers=(PROXY,))], DENY),
    ("delegation of another delegate", lambda: [delegation(delegate=PROXY), grant()], DENY),
    ("delegation not signed by the patient", lambda: [delegation(signers=(GUARDIAN,)), grant()], DENY),
    ("delegation integrated after the grant", lambda: [delegation(at=T - 1), grant(at=T - H)], DENY),
    ("delegation expired before the grant", lambda: [delegation(validity=Period(0, T - 2 * H)), grant()], DENY),
    ("delegation expired after the grant: the grant stands", lambda: [delegation(validity=Period(0, T - 1)), grant()], PERMIT),
    ("majority date before the grant", lambda: [delegation(majority=T - 2 * H), grant()], DENY),
    ("majority date after the grant", lambda: [delegation(majority=T - H + 1), grant()], PERMIT),
    ("delegation revoked before the grant", lambda: (lambda d: [d, revoke(d, at=T - 2 * H), grant()])(delegation()), DENY),
    ("delegation revoked after the grant", lambda: (lambda d: [d, revoke(d, at=T - 1), grant()])(delegation()), PERMIT),
    ("revocation of the delegation by a stranger does not count", lambda: (lambda d: [d, revoke(d, signers=(STRANGER,)), grant()])(delegation()), PERMIT),
    ("revocation of the delegation by the delegate does not count", lambda: (lambda d: [d, revoke(d, signers=(GUARDIAN,)), grant()])(delegation()), PERMIT),
    ("attested by a registered organisation", lambda: [registration(), delegation(attested_by="hospital-1", signers=(ORG_KEY,)), grant()], PERMIT),
    ("attested without the registration given", lambda: [delegation(attested_by="hospital-1", signers=(ORG_KEY,)), grant()], DENY),
    ("attested by a key not in the registration", lambda: [registration(keys=(STRANGER,)), delegation(attested_by="hospital-1", signers=(ORG_KEY,)), grant()], DENY),
    ("attested, registration logged after the delegation", lambda: (lambda d: [d, registration(), grant()])(delegation(attested_by="hospital-1", signers=(ORG_KEY,))), DENY),
    ("attested by an organisation without the capability", lambda: [registration(capabilities=()), delegation(attested_by="hospital-1", signers=(ORG_KEY,)), grant()], DENY),
    ("attested, the capability removed by a newer registration", lambda: [registration(at=T - 3 * DAY), registration(capabilities=()), delegation(attested_by="hospital-1", signers=(ORG_KEY,)), grant()], DENY),
    ("attested, the capability removed after the delegation", lambda: [registration(at=T - 3 * DAY), delegation(attested_by="hospital-1", signers=(ORG_KEY,)), registration(at=T - 3 * H, capabilities=()), grant()], PERMIT),
    ("attested for a patient who had signed before", lambda: [delegation(delegate=PROXY, at=T - 3 * DAY), registration(), delegation(attested_by="hospital-1", signers=(ORG_KEY,)), grant()], DENY),
    ("attested, the patient signs after it", lambda: [registration(), delegation(attested_by="hospital-1", signers=(ORG_KEY,)), grant(), delegation(delegate=PROXY, at=T - 1)], PERMIT),
    ("attested, revoked by the organisation", lambda: (lambda d: [registration(), d, revoke(d, signers=(ORG_KEY,)), grant()])(delegation(attested_by="hospital-1", signers=(ORG_KEY,))), DENY),
    ("superseding grant needs revoke too", lambda: (lambda g: [g, delegation(scope=("grant",)), grant(supersedes=g, signers=(GUARDIAN,)), ])(grant(signers=(PATIENT,), at=T - 3 * H)), PERMIT),
    ("delegate revokes a grant with scope revoke", lambda: (lambda g: [g, delegation(delegate=PROXY, scope=("revoke",)), revoke(g, signers=(PROXY,))])(grant(signers=(PATIENT,), at=T - 3 * H)), DENY),
    ("delegate cannot revoke with scope grant only", lambda: (lambda g: [g, delegation(delegate=PROXY, scope=("grant",)), revoke(g, signers=(PROXY,))])(grant(signers=(PATIENT,), at=T - 3 * H)), PERMIT),
    ("delegate DENY counts", lambda: [grant(signers=(PATIENT,)), delegation(), grant(decision=DENY)], DENY),
]


@pytest.mark.parametrize(("entries", "expected"), [c[1:] for c in DECIDE], ids=[c[0] for c in DECIDE])
def test_decide_with_delegations(entries: Callable[[], list[LedgerEntry]], expected: str) -> None:
    es = entries()
    r = req()
    assert decide(es, r).decision == expected
    assert decide(list(reversed(es)), r).decision == expected, "the order of the entries does not matter"
    assert decide(evidence_for(es, r), r) == decide(es, r)


@pytest.mark.parametrize(
    ("keys", "capabilities", "signed_before", "match"),
    [
        (None, (ATTEST_GUARDIANSHIP,), False, "not registered"),
        ((STRANGER,), (ATTEST_GUARDIANSHIP,), False, "not signed by a key of hospital-1"),
        ((ORG_KEY,), (), False, "does not carry the capability attest-guardianship"),
        ((ORG_KEY,), (ATTEST_GUARDIANSHIP,), True, "already signed an entry"),
    ],
)
def test_check_attestation_says_which_part_fails(
    keys: tuple[bytes, ...] | None, capabilities: tuple[str, ...], signed_before: bool, match: str
) -> None:
    d = _d(attested_by="hospital-1", evidence_reference="court order")
    with pytest.raises(DG.AttestationRefused, match=match) as err:
        DG.check_attestation(d, (ORG_KEY,), org_keys=keys, org_capabilities=capabilities, patient_signed_before=signed_before)
    assert err.value.delegation == d
    DG.check_attestation(d, (ORG_KEY,), org_keys=(ORG_KEY,), org_capabilities=(ATTEST_GUARDIANSHIP,), patient_signed_before=False)


def test_an_ignored_delegate_grant_says_so() -> None:
    d = decide([delegation(delegate=PROXY, scope=("revoke",)), grant(signers=(PROXY,))], req())
    assert d.decision == DENY and SIGNER_NOT_AUTHORISED in [r.code for r in d.reasons]
    assert not d.consent_ids
    assert SIGNER_NOT_AUTHORISED not in [r.code for r in decide([grant(signers=(PATIENT,))], req(t=T - 2 * H)).reasons]


def test_a_delegate_grant_names_its_consent() -> None:
    g = grant()
    d = decide([delegation(), g], req())
    assert d.decision == PERMIT and d.consent_ids == (g.consent_id,)


def test_evidence_for_carries_the_delegation_and_registration() -> None:
    reg, dele = registration(), delegation(attested_by="hospital-1", signers=(ORG_KEY,))
    g = grant()
    other = delegation(delegate=PROXY)
    ev = evidence_for([reg, dele, other, g], req())
    assert [e.index for e in ev] == sorted([reg.index, dele.index, g.index])


def test_consent_states_count_delegate_grants() -> None:
    from consent_ledger.core.decision import consent_states

    g, bad = grant(), grant(signers=(PROXY,))
    states = consent_states([delegation(), g, bad, revoke(g, at=T - 1, signers=(GUARDIAN,))], T)
    assert states == {g.consent_id: "revoked"}
