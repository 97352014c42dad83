"""Delegation: when a key other than the patient's may sign the patient's grants and revocations (DESIGN 3).

One rule, used by the server before it appends, by ``decide`` on evidence, by the client and by auditors.

Who signs a Delegation. The patient's own key; or, for a guardian of a patient who holds no key yet, a key of
the organisation the delegation names in ``attested_by`` (``check_attestation``): its latest registration
(PartyRegistration) when the delegation is logged must carry the capability ``attest-guardianship``, which the
operator sets and no organisation has by default, and the patient key must not have signed any entry before it
(a patient who can sign delegates for itself). An attested delegation names relationship "guardian" and an
evidence reference (checked statically in core.payloads). A delegate never signs a delegation: there is no
sub-delegation.

In force at t (``refusal`` is None): integrated at or before t; t inside its validity period [start, end);
t before its majority date when it names one (a minor's delegation ends when the minor comes of age); and no
revocation of it integrated at or before t.

Who revokes a Delegation. A ConsentRevocation of the same patient whose consent_id is the delegation's id,
signed by the patient, or, for an attested delegation, by a key of the attesting organisation (the authority
that made it may unmake it, e.g. when a court order ends). A delegate cannot revoke a delegation, not even its
own. It ends the delegation from its integration on; what the delegate signed while it was in force stands.

Scope. "grant" lets the delegate sign the patient's grants, "revoke" revocations of the patient's grants, "*"
both. A grant that supersedes another ends that grant, so it needs both. A grant or revocation signed by a
delegate counts only if some signer's delegation was in force, with a covering scope, at the entry's own
integration time.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from consent_ledger.core import vocab
from consent_ledger.core.errors import ConsentLedgerError
from consent_ledger.core.payloads import (
    ConsentGrantPayload,
    ConsentRevocationPayload,
    DelegationPayload,
    Payload,
)

__all__ = [
    "GRANT",
    "REVOKE",
    "WILDCARD",
    "AttestationRefused",
    "Delegate",
    "DelegationBook",
    "check_attestation",
    "covers",
    "in_force",
    "may_revoke",
    "refusal",
    "required_scope",
    "signed_validly",
]

GRANT = "grant"
REVOKE = "revoke"
WILDCARD = "*"


def covers(scope: Collection[str], action: str | None) -> bool:
    """Does a delegation's scope cover ``action`` ("grant" or "revoke"; None: any action)?"""
    if action is None:
        return bool(scope)
    return WILDCARD in scope or action in scope


def required_scope(payload: Payload) -> tuple[str, ...]:
    """The scope a delegate needs to sign ``payload`` for the patient: ("grant",) for a grant, ("grant",
    "revoke") for a superseding grant, ("revoke",) for a revocation; () for kinds a delegate never signs."""
    if isinstance(payload, ConsentGrantPayload):
        return (GRANT, REVOKE) if payload.supersedes else (GRANT,)
    if isinstance(payload, ConsentRevocationPayload):
        return (REVOKE,)
    return ()


def refusal(
    d: DelegationPayload,
    *,
    integrated_ms: int,
    revoked_ms: int | None,
    t_ms: int,
    actions: Iterable[str | None] = (None,),
) -> str | None:
    """Why the delegation ``d`` (integrated at ``integrated_ms``, revoked at ``revoked_ms`` or never) does not
    let its delegate sign ``actions`` at ``t_ms``; None when it does. The one in-force rule."""
    if integrated_ms > t_ms:
        return "it was not yet in the log at that time"
    if d.validity.start_ms and t_ms < d.validity.start_ms:
        return "its validity period had not started"
    if d.validity.end_ms and t_ms >= d.validity.end_ms:
        return "its validity period has ended"
    if d.majority_date_ms and t_ms >= d.majority_date_ms:
        return "the patient reached the majority date it names"
    if revoked_ms is not None and revoked_ms <= t_ms:
        return "it was revoked"
    missing = [a for a in actions if not covers(d.scope, a)]
    if missing:
        return f"its scope ({', '.join(d.scope)}) does not cover {', '.join(str(a) for a in missing)}"
    return None


def in_force(
    d: DelegationPayload, *, integrated_ms: int, revoked_ms: int | None, t_ms: int, scope: str | None = None
) -> bool:
    """Whether ``d`` is in force at ``t_ms`` with a scope covering ``scope`` (None: any scope)."""
    return refusal(d, integrated_ms=integrated_ms, revoked_ms=revoked_ms, t_ms=t_ms, actions=(scope,)) is None


class AttestationRefused(ConsentLedgerError):
    """An attested delegation that breaks the attestation rule (``check_attestation``); ``reason`` says which
    part, for a refusal (server), a failed verification (client) or a finding (auditor)."""

    def __init__(self, d: DelegationPayload, reason: str) -> None:
        super().__init__(f"the delegation attested by {d.attested_by or '(nobody)'} is refused: {reason}")
        self.delegation = d
        self.reason = reason


def check_attestation(
    d: DelegationPayload,
    signers: Collection[bytes],
    *,
    org_keys: Collection[bytes] | None,
    org_capabilities: Collection[str],
    patient_signed_before: bool,
) -> None:
    """The attestation rule (docs/design.md section 3). ``d`` is attested (``d.attested_by`` set); ``org_keys`` and
    ``org_capabilities``: those of the attesting organisation's latest registration when ``d`` is logged (keys
    None: it has none); ``patient_signed_before``: whether the patient key signed any entry logged before ``d``.
    Raises AttestationRefused unless a key of that registration signed ``d``, the registration carries
    ``attest-guardianship``, and the patient key never signed before."""
    if not d.attested_by:
        raise AttestationRefused(d, "it names no attesting organisation")
    if org_keys is None:
        raise AttestationRefused(d, f"organisation {d.attested_by} is not registered with this ledger")
    if not any(k in org_keys for k in signers):
        raise AttestationRefused(d, f"it is not signed by a key of {d.attested_by}")
    if vocab.ATTEST_GUARDIANSHIP not in org_capabilities:
        raise AttestationRefused(
            d,
            f"the current registration of {d.attested_by} does not carry the capability "
            f"{vocab.ATTEST_GUARDIANSHIP} (the operator grants it)",
        )
    if patient_signed_before:
        raise AttestationRefused(
            d,
            "the patient key has already signed an entry in the log: a patient who can sign delegates for itself",
        )


def signed_validly(
    d: DelegationPayload,
    signers: Collection[bytes],
    org_keys: Collection[bytes] | None,
    org_capabilities: Collection[str] = (),
    *,
    patient_signed_before: bool = False,
) -> bool:
    """Is the delegation signed by whom it must be? Not attested: by its patient. Attested: as
    ``check_attestation`` requires (``org_keys``, ``org_capabilities``: the attesting organisation's latest
    registration when it was logged, keys None if none)."""
    if d.attested_by:
        try:
            check_attestation(
                d, signers, org_keys=org_keys, org_capabilities=org_capabilities,
                patient_signed_before=patient_signed_before,
            )
        except AttestationRefused:
            return False
        return True
    return d.patient in signers


def may_revoke(d: DelegationPayload, signers: Collection[bytes], org_keys: Collection[bytes]) -> bool:
    """May a revocation signed by ``signers`` end ``d``? The patient may; for an attested delegation, so may
    the attesting organisation (``org_keys``: its registration's keys when the revocation is logged)."""
    if d.patient in signers:
        return True
    return bool(d.attested_by) and any(k in org_keys for k in signers)


@dataclass
class Delegate:
    """An authentic delegation as logged: its id, index, integration time, terms, and when (and at which index)
    it was revoked."""

    delegation_id: str
    index: int
    integrated_ms: int
    payload: DelegationPayload
    revoked_ms: int | None = None
    revoked_index: int | None = None

    def refusal(self, t_ms: int, actions: Iterable[str | None] = (None,)) -> str | None:
        return refusal(self.payload, integrated_ms=self.integrated_ms, revoked_ms=self.revoked_ms, t_ms=t_ms, actions=actions)


@dataclass
class DelegationBook:
    """The authentic delegations seen so far, by (patient, delegate), and their revocations. Feed it only
    delegations that passed ``signed_validly`` and revocations that passed ``may_revoke``."""

    by_id: dict[str, Delegate] = field(default_factory=dict)
    _by_pair: dict[tuple[bytes, bytes], list[str]] = field(default_factory=dict)

    def add(self, delegate: Delegate) -> None:
        old = self.by_id.get(delegate.delegation_id)
        if old is not None and old.index <= delegate.index:
            return  # the same delegation logged again counts from its first index
        self.by_id[delegate.delegation_id] = delegate
        ids = self._by_pair.setdefault((delegate.payload.patient, delegate.payload.delegate), [])
        if delegate.delegation_id not in ids:
            ids.append(delegate.delegation_id)

    def revoke(self, delegation_id: str, at_ms: int, index: int | None = None) -> None:
        d = self.by_id.get(delegation_id)
        if d is not None and (d.revoked_ms is None or at_ms < d.revoked_ms):
            d.revoked_ms, d.revoked_index = at_ms, index

    def of(self, patient: bytes, delegate: bytes) -> list[Delegate]:
        return [self.by_id[i] for i in self._by_pair.get((patient, delegate), ())]

    def authorising(
        self, patient: bytes, signers: Iterable[bytes], t_ms: int, actions: Iterable[str | None]
    ) -> Delegate | None:
        """The delegation (lowest index first) that lets one of ``signers`` sign ``actions`` for ``patient`` at
        ``t_ms``, or None."""
        actions = tuple(actions)
        found = [d for k in signers for d in self.of(patient, k) if d.refusal(t_ms, actions) is None]
        return min(found, key=lambda d: d.index) if found else None
