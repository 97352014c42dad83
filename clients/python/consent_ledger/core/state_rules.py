"""What is in force and what ends a grant: one rule (docs/design.md sections 4 and 5), and the admission rules of the
consent entries, over a small facts protocol.

The rule. A grant joins the in-force set of its key ``keys.consent_key(patient, grantee)`` when it is integrated,
if it is the first entry logged with its consent id and it is validly signed. A revocation or a superseding grant
ends a grant if the grant was logged before it, is a grant of the SAME patient, and the ending entry is validly
signed. Validly signed: by the patient, or by a delegate whose delegation (core.delegation) was in force, with a
scope covering what the entry does (core.delegation.required_scope), at the entry's integration time. Anything
else ends nothing and joins nothing. ``decide`` (core.decision), the server's map (app.consent_state) and the
audit's replay (InForceSets, below) all apply ``effect``; admission (app.consents) and the audit apply the
``*_refusal`` functions, one per entry kind.

A party's key ``keys.party_key(party id)`` holds its latest registration alone. Map keys are map VRF outputs
(core.vrf): the ledger derives them with its secret key, an auditor takes them from verified VRF proofs.

The facts (ConsentFacts) are what the rule reads of the log: the first entry logged with a consent id, and the
authentic delegations of a patient to a key. The server answers them from its index tables, the audit and
``decide`` from the entries they replay.

An entry whose body was erased is read from its Erasure record (ErasureFacts): its patient and signers are gone,
so the record, checked by the operator when it was logged, stands for them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Protocol

from consent_ledger.core import delegation, smt
from consent_ledger.core.payloads import (
    ConsentGrantPayload,
    ConsentRevocationPayload,
    DelegationPayload,
    PartyRegistrationPayload,
    Payload,
    consent_id,
    parse_payload,
)

GRANT, REVOCATION, DELEGATION = "grant", "revocation", "delegation"

# Admission rule names (a Refusal's ``rule``; the audit's findings name them too).
RULE_LOGGED_ONCE = "logged-once"
RULE_UNKNOWN_CONSENT = "unknown-consent"
RULE_SAME_PATIENT = "same-patient"
RULE_SIGNER = "signer"


@dataclass(frozen=True)
class ConsentEntry:
    """A grant, revocation or delegation as the rules read it. ``target``: the consent a grant supersedes or a
    revocation revokes. ``patient`` and ``signers`` are None for an entry read from its Erasure record."""

    index: int
    integrated_ms: int
    consent_id: str
    kind: str
    patient: bytes | None
    target: str | None = None
    signers: frozenset[bytes] | None = None

    @classmethod
    def of(cls, index: int, integrated_ms: int, cid: str, payload: Payload, signers: Iterable[bytes]) -> ConsentEntry | None:
        """The rules' view of a parsed entry; None for kinds the rules do not read."""
        if isinstance(payload, ConsentGrantPayload):
            return cls(index, integrated_ms, cid, GRANT, payload.patient, payload.supersedes or None, frozenset(signers))
        if isinstance(payload, ConsentRevocationPayload):
            return cls(index, integrated_ms, cid, REVOCATION, payload.patient, payload.consent_id, frozenset(signers))
        if isinstance(payload, DelegationPayload):
            return cls(index, integrated_ms, cid, DELEGATION, payload.patient, None, frozenset(signers))
        return None

    @classmethod
    def erased(cls, index: int, integrated_ms: int, facts: ErasureFacts) -> ConsentEntry | None:
        """An erased grant or revocation as its Erasure recorded it; None for an erasure recording neither."""
        if facts.map_key:
            return cls(index, integrated_ms, facts.consent_id, GRANT, None, facts.ends or None)
        if facts.ends:
            return cls(index, integrated_ms, "", REVOCATION, None, facts.ends)
        return None


@dataclass(frozen=True)
class Logged:
    """The first entry logged with a consent id: where, of which kind, of which patient (None: erased)."""

    index: int
    kind: str
    patient: bytes | None


class ConsentFacts(Protocol):
    """What the rules read of the log (docs/design.md section 5); the server's index and a replay implement it."""

    def logged(self, consent_id: str) -> Logged | None:
        """The first entry logged with this consent id, if any."""
        ...

    def delegates(self, patient: bytes, delegate: bytes) -> Iterable[delegation.Delegate]:
        """The authentic delegations of ``patient`` to ``delegate``, each with the time it was revoked, if it was."""
        ...


@dataclass(frozen=True)
class Refusal:
    """Why an honest ledger refuses an entry: the rule it breaks and the explanation."""

    rule: str
    text: str


@dataclass(frozen=True)
class Effect:
    """What an entry does to the in-force sets: a grant may join its key's set; an entry may end a grant."""

    joins: bool = False
    ends: str | None = None


def _scope(e: ConsentEntry) -> tuple[str, ...]:
    """What a delegate needs to sign ``e`` (core.delegation.required_scope)."""
    if e.kind == REVOCATION:
        return (delegation.REVOKE,)
    return (delegation.GRANT, delegation.REVOKE) if e.target else (delegation.GRANT,)


def _delegations(e: ConsentEntry, facts: ConsentFacts, t: int) -> tuple[delegation.Delegate | None, list[str]]:
    """The delegation (lowest index first) that lets one of ``e``'s signers sign it at ``t``, and why the others
    do not."""
    assert e.signers is not None and e.patient is not None
    need = _scope(e)
    ok: list[delegation.Delegate] = []
    why = []
    for key in sorted(e.signers - {e.patient}):
        found = list(facts.delegates(e.patient, key))
        if not found:
            why.append(f"key ed25519:{key.hex()[:16]}... holds no delegation from the patient")
        for d in found:
            # Time decides (core.delegation.refusal); at the same millisecond, the log's order does: a delegation
            # or its revocation logged after the entry does not reach back to it.
            if d.index > e.index and d.integrated_ms >= t:
                reason: str | None = "it was not yet in the log"
            else:
                late = d.revoked_index is not None and d.revoked_index > e.index and d.revoked_ms == t
                reason = delegation.refusal(
                    d.payload, integrated_ms=d.integrated_ms, revoked_ms=None if late else d.revoked_ms, t_ms=t,
                    actions=need,
                )
            if reason is None:
                ok.append(d)
            else:
                why.append(f"the delegation {d.delegation_id[:16]}... of key ed25519:{key.hex()[:16]}... does not allow it: {reason}")
    return (min(ok, key=lambda d: d.index) if ok else None), why


def authorising(e: ConsentEntry, facts: ConsentFacts, t_ms: int | None = None) -> delegation.Delegate | None:
    """The delegation that lets a delegate among ``e``'s signers sign it at ``t_ms`` (default: its integration
    time); None when none does, or when its patient signed it."""
    if e.signers is None or e.patient is None or e.patient in e.signers:
        return None
    return _delegations(e, facts, e.integrated_ms if t_ms is None else t_ms)[0]


def signer_refusal(e: ConsentEntry, facts: ConsentFacts, t_ms: int | None = None) -> Refusal | None:
    """Why ``e`` is not validly signed at ``t_ms`` (default: its integration time); None when it is: its patient
    signed it, or a delegate whose delegation is in force then with a scope covering what it does."""
    if e.signers is None or e.patient is None or e.patient in e.signers:
        return None
    found, why = _delegations(e, facts, e.integrated_ms if t_ms is None else t_ms)
    if found is not None:
        return None
    what = "grant" if e.kind == GRANT else "revocation"
    return Refusal(
        RULE_SIGNER,
        f"a consent {what} must be signed by the patient's own key or by a delegate in force whose scope covers "
        f"{' and '.join(_scope(e))}: {'; '.join(why) or 'no key signed it'}",
    )


def end_refusal(e: ConsentEntry, facts: ConsentFacts, verb: str) -> Refusal | None:
    """Why ``e`` cannot end the grant it names (``verb``: "revoke" or "supersede"); None when it can, signers
    aside: the grant was logged before ``e`` and is the same patient's."""
    assert e.target is not None
    target = facts.logged(e.target)
    if target is None or target.kind != GRANT or target.index >= e.index:
        return Refusal(RULE_UNKNOWN_CONSENT, f"cannot {verb} consent {e.target}: there is no such consent")
    if target.patient is not None and e.patient is not None and target.patient != e.patient:
        return Refusal(RULE_SAME_PATIENT, f"cannot {verb} consent {e.target}: it is another patient's consent")
    return None


def effect(e: ConsentEntry, facts: ConsentFacts) -> Effect:
    """The one rule: what ``e`` does to the in-force sets, given the facts of the log (see the module docstring).
    Requires the facts to hold every entry logged before ``e``."""
    if e.kind not in (GRANT, REVOCATION) or signer_refusal(e, facts) is not None:
        return Effect()
    joins = False
    if e.kind == GRANT:
        first = facts.logged(e.consent_id)
        joins = first is None or first.index >= e.index
    ends = None
    if e.target and end_refusal(e, facts, "end") is None:
        ends = e.target
    return Effect(joins, ends)


# -- admission: one function per entry kind; server (before appending) and audit (on every entry) apply them --


def logged_once_refusal(e: ConsentEntry, facts: ConsentFacts) -> Refusal | None:
    """A grant or delegation's consent id is logged once."""
    first = facts.logged(e.consent_id)
    if first is not None and first.index < e.index:
        return Refusal(RULE_LOGGED_ONCE, f"entry {e.consent_id} is already in the log (in another envelope)")
    return None


def grant_refusal(e: ConsentEntry, facts: ConsentFacts, t_ms: int | None = None) -> Refusal | None:
    """Why an honest ledger refuses the grant ``e`` at ``t_ms`` (default: its integration time)."""
    return (
        logged_once_refusal(e, facts)
        or signer_refusal(e, facts, t_ms)
        or (end_refusal(e, facts, "supersede") if e.target else None)
    )


def revocation_refusal(e: ConsentEntry, facts: ConsentFacts, t_ms: int | None = None) -> Refusal | None:
    """Why an honest ledger refuses the revocation ``e`` of a grant at ``t_ms`` (default: its integration time).
    (A revocation of a delegation is core.delegation's: may_revoke.)"""
    return end_refusal(e, facts, "revoke") or signer_refusal(e, facts, t_ms)


class Replay:
    """The facts of the entries replayed so far, fed in log order: the audit's and ``decide``'s implementation
    of ConsentFacts. Feed ``book`` only authentic delegations (core.delegation)."""

    def __init__(
        self,
        book: delegation.DelegationBook | None = None,
        *,
        delegates: Callable[[bytes, bytes], Iterable[delegation.Delegate]] | None = None,
    ) -> None:
        """``delegates``: where to read delegations from instead of ``book`` (a server's index)."""
        self.first: dict[str, Logged] = {}
        self.book = book if book is not None else delegation.DelegationBook()
        self._delegates = delegates or self.book.of

    def logged(self, consent_id: str) -> Logged | None:
        return self.first.get(consent_id)

    def delegates(self, patient: bytes, delegate: bytes) -> Iterable[delegation.Delegate]:
        return self._delegates(patient, delegate)

    def note(self, e: ConsentEntry) -> None:
        """Record that ``e`` is logged (after applying the rules to it)."""
        if e.consent_id and e.consent_id not in self.first:
            self.first[e.consent_id] = Logged(e.index, e.kind, e.patient)


def replay(entries: Iterable[ConsentEntry], facts: Replay) -> Iterable[tuple[ConsentEntry, Effect]]:
    """Apply the rule to ``entries`` in index order, noting each in ``facts``."""
    for e in sorted(entries, key=lambda x: x.index):
        yield e, effect(e, facts)
        facts.note(e)


def live(entries: Iterable[ConsentEntry], facts: Replay) -> dict[str, ConsentEntry]:
    """The grants among ``entries`` that joined and were not ended, by consent id."""
    out: dict[str, ConsentEntry] = {}
    for e, eff in replay(entries, facts):
        if eff.joins:
            out[e.consent_id] = e
        if eff.ends:
            out.pop(eff.ends, None)
    return out


class MapKeys(Protocol):
    """Where map keys come from (core.vrf.MapKeyProver on the ledger; verified proofs for an auditor)."""

    def consent_key(self, patient: bytes, selector: str) -> bytes: ...

    def party_key(self, party_id: str) -> bytes: ...


@dataclass(frozen=True)
class ErasureFacts:
    """What replaying the consent state needs of an entry once its body is erased (recorded in the Erasure):
    a grant's consent id and map key, and the consent an entry ends (revoked or superseded). Empty otherwise."""

    consent_id: str = ""
    map_key: bytes = b""
    ends: str = ""


def erasure_facts(payload_type: str, payload: bytes, keys: MapKeys) -> ErasureFacts:
    """The facts an Erasure of this body must carry. Raises InvalidInput for a malformed payload."""
    p = parse_payload(payload_type, payload)
    if isinstance(p, ConsentGrantPayload):
        return ErasureFacts(consent_id(payload), keys.consent_key(p.patient, p.grantee), p.supersedes or "")
    if isinstance(p, ConsentRevocationPayload):
        return ErasureFacts(ends=p.consent_id)
    return ErasureFacts()


class InForceSets:
    """The in-force sets of the consent-state map, replayed entry by entry through ``effect``, and the party keys
    (each party's latest registration)."""

    def __init__(self, keys: MapKeys, book: delegation.DelegationBook | None = None) -> None:
        self.keys = keys
        self.sets: dict[bytes, dict[int, bytes]] = {}
        # Party key -> (leaf index, leaf hash) of the party's latest registration.
        self.parties: dict[bytes, tuple[int, bytes]] = {}
        self._grants: dict[str, tuple[bytes, int]] = {}
        self._touched: set[bytes] = set()
        self.facts = Replay(book)

    def add(
        self, index: int, leaf_hash: bytes, consent_id: str, payload: Payload, signers: Collection[bytes], integrated_ms: int
    ) -> None:
        """Account for one entry (signed by ``signers``, integrated at ``integrated_ms``), in log order. Entries of
        other kinds are ignored. Delegations must be in the book before the entries they authorise are added."""
        if isinstance(payload, PartyRegistrationPayload):
            key = self.keys.party_key(payload.party_id)
            self.parties[key] = (index, leaf_hash)
            self._touched.add(key)
            return
        e = ConsentEntry.of(index, integrated_ms, consent_id, payload, signers)
        if e is None:
            return
        key = self.keys.consent_key(payload.patient, payload.grantee) if isinstance(payload, ConsentGrantPayload) else b""
        self._apply(e, leaf_hash, key)

    def add_erased(self, index: int, leaf_hash: bytes, facts: ErasureFacts, integrated_ms: int = 0) -> None:
        """Account for an entry whose body was erased, from the facts its Erasure records."""
        e = ConsentEntry.erased(index, integrated_ms, facts)
        if e is not None:
            self._apply(e, leaf_hash, facts.map_key)

    def _apply(self, e: ConsentEntry, leaf_hash: bytes, key: bytes) -> None:
        eff = effect(e, self.facts)
        self.facts.note(e)
        if eff.joins:
            self.sets.setdefault(key, {})[e.index] = leaf_hash
            self._grants[e.consent_id] = (key, e.index)
            self._touched.add(key)
        if eff.ends:
            self._end(eff.ends)

    def _end(self, consent_id: str) -> None:
        found = self._grants.get(consent_id)
        if found is None:
            return
        key, index = found
        members = self.sets.get(key, {})
        if members.pop(index, None) is not None:
            self._touched.add(key)
        if not members:
            self.sets.pop(key, None)

    def take_updates(self) -> dict[bytes, bytes | None]:
        """The value hash of every key changed since the last call (None: the key left the map)."""
        out = {k: self.value_of(k) for k in self._touched}
        self._touched = set()
        return out

    def value_of(self, key: bytes) -> bytes | None:
        """The value hash of a key now (None: absent)."""
        if key in self.parties:
            return smt.value_hash([self.parties[key]])
        return smt.value_hash(self.sets[key].items()) if self.sets.get(key) else None

    def all_values(self) -> dict[bytes, bytes]:
        """Every key present in the map and its value hash."""
        out = {k: smt.value_hash(v.items()) for k, v in self.sets.items() if v}
        out.update({k: smt.value_hash([v]) for k, v in self.parties.items()})
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "sets": {k.hex(): {str(i): h.hex() for i, h in v.items()} for k, v in self.sets.items()},
            "grants": {cid: [k.hex(), i] for cid, (k, i) in self._grants.items()},
            "parties": {k.hex(): [i, h.hex()] for k, (i, h) in self.parties.items()},
            "logged": {cid: [f.index, f.kind, f.patient.hex() if f.patient else None] for cid, f in self.facts.first.items()},
        }

    @classmethod
    def from_json(
        cls, data: dict[str, object], keys: MapKeys, book: delegation.DelegationBook | None = None
    ) -> InForceSets:
        s = cls(keys, book)
        parties = data.get("parties", {})
        assert isinstance(parties, dict)
        s.parties = {bytes.fromhex(k): (int(i), bytes.fromhex(h)) for k, (i, h) in parties.items()}
        sets = data["sets"]
        grants = data["grants"]
        logged = data.get("logged", {})
        assert isinstance(sets, dict) and isinstance(grants, dict) and isinstance(logged, dict)
        s.sets = {bytes.fromhex(k): {int(i): bytes.fromhex(h) for i, h in v.items()} for k, v in sets.items()}
        s._grants = {cid: (bytes.fromhex(k), int(i)) for cid, (k, i) in grants.items()}
        s.facts.first = {
            cid: Logged(int(i), str(kind), bytes.fromhex(p) if p else None) for cid, (i, kind, p) in logged.items()
        }
        return s
