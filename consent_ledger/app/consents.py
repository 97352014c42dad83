"""Consent rules that need the log's state, the access check with its evidence and receipt, and the
patient's view (docs/design.md sections 3 and 4). The rules themselves are the pure core's (core.decision,
core.delegation, core.state_rules: what ends a grant and the admission of grants and revocations); this module
gathers the entries and facts they run on, from the consent index, as of one published checkpoint.

Who may sign (checked before anything is appended): a grant or revocation of a consent, its patient or a
delegate in force now whose scope covers it (core.delegation.required_scope); a delegation, its patient, or a
key of the registered organisation it names as attesting a guardian; the revocation of a delegation, its
patient or (attested) the attesting organisation; a party registration, the operator; an access event, the
organisation it names or the operator.

What readers see: CheckAccess evidence holds, for each delegate-signed grant in force, the delegation that
authorised it (and the attesting organisation's registration); ListConsents pages list the patient's
delegations among the grants and revocations, and ``related`` carries the delegations, registrations and
delegation revocations needed to check who signed each entry on the page."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TypeVar
from dataclasses import dataclass, field

from consent_ledger.app.access import AccessAnswer, AccessPath, Proven
from consent_ledger.app.broker import Broker
from consent_ledger.app.errors import (
    AlreadyExists,
    CorruptStorage,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    WouldBlock,
)
from consent_ledger.app.lru import OVERHEAD, CacheBudget, Lru
from consent_ledger.app.payload_check import Validated, validated
from consent_ledger.app.ports import (
    ConsentIndex,
    NewEntry,
    PartyRow,
    StateCommitRow,
    StoredCheckpoint,
    StoredEntry,
)
from consent_ledger.app.consent_state import (
    DELEGATION,
    EVERYTHING,
    GRANT,
    REVOCATION,
    ConsentState,
    IndexFacts,
    in_force,
)
from consent_ledger.app.sequencer import ExtraRows, PreparedBatch
from consent_ledger.app.tree import TreeReader
from consent_ledger.core import delegation, payloads, state_rules, vrf
from consent_ledger.core.errors import InvalidInput
from consent_ledger.core.decision import (
    MAX_IN_FORCE,
    STATE_ACTIVE,
    LedgerEntry,
    Policy,
    consent_states,
    ended_by,
    grantee_selectors,
)
from consent_ledger.core.envelope import ParsedEnvelope, parse_envelope, sign_envelope
from consent_ledger.core.leaf import parse_leaf
from consent_ledger.core.merkle import prove_inclusion
from consent_ledger.core.note import Signer
from consent_ledger.core.receipt import access_event_for
from consent_ledger.core.state_rules import erasure_facts

log = logging.getLogger(__name__)

MAX_PAGE = 100
DEFAULT_PAGE = 50
T = TypeVar("T")
# The entry kinds this ledger accepts from callers (StateCommits are the sequencer's own).
_ACCEPTED = (
    payloads.ConsentGrantPayload,
    payloads.ConsentRevocationPayload,
    payloads.DelegationPayload,
    payloads.PartyRegistrationPayload,
    payloads.AccessEventPayload,
    payloads.BreakGlassReviewPayload,
    payloads.ErasurePayload,
)

# Entries whose bodies are evidence the ledger keeps: refused as erasure targets.
_NEVER_ERASED = {
    payloads.STATE_COMMIT: "a state commit",
    payloads.PARTY_REGISTRATION: "a party registration",
    payloads.ERASURE: "an erasure",
    payloads.BREAK_GLASS_REVIEW: "a break-glass review",
}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class ConsentPage:
    checkpoint: StoredCheckpoint
    entries: list[Proven]
    states: dict[str, tuple[str, int | None]]
    related: list[Proven]
    time_ms: int
    next_after: int | None


@dataclass(frozen=True)
class EventPage:
    checkpoint: StoredCheckpoint
    entries: list[Proven]
    next_after: int | None
    # The reviews of the break-glass events among ``entries``.
    reviews: list[Proven] = field(default_factory=list)


@dataclass(frozen=True)
class ReviewItem:
    """A break-glass event and its review, if it has one."""

    event: Proven
    review: Proven | None


@dataclass(frozen=True)
class ReviewPage:
    checkpoint: StoredCheckpoint
    items: list[ReviewItem]
    next_after: int | None


@dataclass(frozen=True)
class Pushed:
    """What a watcher receives: an entry and the checkpoint of the batch that integrated it."""

    entry: StoredEntry
    checkpoint: StoredCheckpoint


def records_access_event(answer: AccessAnswer, asked: bool) -> bool:
    """Whether the ledger appends the AccessEvent of a decision it made: when asked, and always for a break-glass
    permit (docs/design.md section 4: the access is recorded, the patient notified through the watch, and the event
    enters the review queue)."""
    return asked or answer.decision.break_glass_until_ms > 0


def _page(fetch: Callable[[int], list[T]], limit: int) -> tuple[list[T], bool]:
    """One page: at most ``limit`` items (0: DEFAULT_PAGE; never more than MAX_PAGE) from ``fetch(n)``, which
    returns up to n items in order, and whether more follow."""
    limit = max(1, min(limit or DEFAULT_PAGE, MAX_PAGE))
    items = fetch(limit + 1)
    return items[:limit], len(items) > limit


def _too_many(p: payloads.ConsentGrantPayload, count: int) -> FailedPrecondition:
    return FailedPrecondition(
        f"patient {_short(p.patient)} already has {count} grants in force for {p.grantee} (at most {MAX_IN_FORCE}, "
        "so that the evidence of an access check stays bounded): revoke or supersede one of them first"
    )


# The errors a refusal by a core admission rule (core.state_rules) gets.
_ADMISSION_ERRORS: dict[str, Callable[[str], Exception]] = {
    state_rules.RULE_LOGGED_ONCE: AlreadyExists,
    state_rules.RULE_UNKNOWN_CONSENT: NotFound,
    state_rules.RULE_SAME_PATIENT: PermissionDenied,
    state_rules.RULE_SIGNER: PermissionDenied,
}


def _already_logged(consent_id: str) -> AlreadyExists:
    return AlreadyExists(f"entry {consent_id} is already in the log (in another envelope)")


def ledger_entry(stored: StoredEntry) -> LedgerEntry:
    """The decision's view of a stored entry. Raises CorruptStorage if the body is missing or malformed."""
    if stored.envelope is None:
        raise CorruptStorage(f"entry {stored.index} is needed as evidence but its body was erased")
    leaf = parse_leaf(stored.leaf)
    env = parse_envelope(stored.envelope)
    return LedgerEntry.from_payload(
        index=stored.index,
        integrated_time_ms=leaf.integrated_time_ms,
        payload_type=env.payload_type,
        payload=env.payload,
        signers=env.signers,
    )


@dataclass
class _BatchAdmission:
    """What admission of one batch reads once and keeps up to date entry by entry: the facts (with the batch's
    consent entries noted), the in-force consent ids of every key granted to, break-glass events and their
    stored reviews, and the batch's reviews, erasures, signers and consent payloads so far."""

    facts: IndexFacts
    now: int
    live: dict[tuple[bytes, str], set[str]]
    break_glass: set[int]
    reviewed: dict[int, int]
    reviewing: set[int] = field(default_factory=set)
    erasing: set[int] = field(default_factory=set)
    signed: set[bytes] = field(default_factory=set)
    consent_payloads: dict[str, payloads.Payload] = field(default_factory=dict)


def _entry_cost(index: int, cached: tuple[StoredEntry, LedgerEntry | None]) -> int:
    stored, parsed = cached
    body = len(stored.envelope or b"")
    return 4 * OVERHEAD + len(stored.leaf) + body + (0 if parsed is None else 16 * OVERHEAD + body)


def _short(key: bytes) -> str:
    return f"ed25519:{key.hex()[:16]}..."


class ConsentLedger:
    """The consent side of one ledger. Attach it to the Ledger whose hooks it provides (see service.py)."""

    def __init__(
        self,
        index: ConsentIndex,
        state: ConsentState,
        signer: Signer,
        *,
        policy: Policy | None = None,
        operator_keys: Iterable[bytes] = (),
        clock_ms: Callable[[], int] = _now_ms,
        cache: CacheBudget = CacheBudget(),
    ) -> None:
        self._index = index
        self.state = state
        self._signer = signer
        self.policy = policy or Policy()
        # The operator signs party registrations; the ledger's own key is always one of its keys.
        self._operator_keys = frozenset({signer.public_key, *operator_keys})
        self._clock_ms = clock_ms
        self._cache = cache
        # The access check (app.access), once attach() gave it the tree and the latest checkpoint.
        self.access: AccessPath | None = None
        self._reader: TreeReader | None = None
        self._latest: Callable[[], StoredCheckpoint] | None = None
        self._append: Callable[[ParsedEnvelope], object] | None = None
        self.broker: Broker | None = None
        # Hot paths of the access check: in-force sets by (patient, selector, map root), entries by index.
        # Both bounded by bytes (app.lru): an in-force set costs its members, an entry its leaf and body (twice
        # once parsed: the parsed payload holds about as much again).
        self._live_cache: Lru[tuple[bytes, str, bytes], dict[str, int]] = Lru(
            cache.of("in_force_by_root"), lambda k, live: 3 * OVERHEAD + 64 + len(k[1]) + len(live) * (3 * OVERHEAD + 64)
        )
        self._cache = cache
        self._entry_cache: Lru[int, tuple[StoredEntry, LedgerEntry | None]] = Lru(
            cache.of("entries"), _entry_cost
        )
        # The registration in force for each party id, as of the latest batch (dropped when a party re-registers).
        self._parties: dict[str, PartyRow] = {}
        self._party_horizon = 0
        # What admission read for the batch being integrated (its entries, the stored facts), for its map update.
        self._admitted: tuple[frozenset[bytes], IndexFacts] | None = None

    def attach(
        self,
        reader: TreeReader,
        latest: Callable[[], StoredCheckpoint],
        append: Callable[[ParsedEnvelope], object],
        broker: Broker | None,
    ) -> None:
        self._reader, self._latest, self._append, self.broker = reader, latest, append, broker
        self.access = AccessPath(self, self._signer.private_key, reader, latest, lambda: self._clock_ms(), self._cache)

    # -- validation of a submission (stateless: on the event loop) ----------------------------------------

    def check(self, env: ParsedEnvelope) -> Validated:
        """The stateless checks of a verified envelope: its payload parses (once; the result travels with it),
        its kind is accepted, and the entries only the operator may sign are the operator's. Raises InvalidInput
        or PermissionDenied. Everything that reads the log's state is ``admit``'s, once per batch."""
        v = Validated.of(env)
        p = v.payload
        operator = bool(self._operator_keys.intersection(env.signers))
        if isinstance(p, payloads.StateCommitPayload):
            raise PermissionDenied("state commits are written by the ledger's sequencer only")
        if isinstance(p, payloads.PartyRegistrationPayload) and not operator:
            raise PermissionDenied("only the ledger operator may register a party")
        if isinstance(p, payloads.BreakGlassReviewPayload) and not operator:
            raise PermissionDenied("only the ledger operator (a privacy officer) may review a break-glass access")
        if isinstance(p, payloads.ErasurePayload) and not operator:
            raise PermissionDenied("only the ledger operator may erase a body")
        if isinstance(p, payloads.DelegationPayload) and not p.attested_by and p.patient not in env.signers:
            raise PermissionDenied(
                "a delegation must be signed by the patient's own key (or name the organisation attesting a "
                "guardian in attested_by and be signed by it)"
            )
        if not isinstance(p, _ACCEPTED):
            raise PermissionDenied(f"{env.payload_type} entries are not accepted by this ledger yet")
        payloads.check_claimed_times(p, self._clock_ms())
        return v

    def _read_stored(self, indices: Collection[int]) -> list[StoredEntry]:
        return self._entries_at(set(indices), set())[0]

    def _facts(self, below: int = EVERYTHING) -> IndexFacts:
        """The rules' facts (core.state_rules.ConsentFacts) from the index, reading entries through the cache."""
        return IndexFacts(self._index, below, self._read_stored)

    # -- admission: every rule that reads the log's state, once per batch ----------------------------------

    def admit(self, entries: Sequence[Validated | ParsedEnvelope], batch_time_ms: int | None = None) -> dict[bytes, Exception]:
        """Judge a batch's entries not logged yet, in order, at the batch time, in the integration thread inside
        the batch's transaction (so atomically with it): the core rules of each kind (core.state_rules,
        core.delegation, the MAX_IN_FORCE bound of core.decision) over facts read once for the whole batch, as
        sets (the first rows of every consent id named, which signers signed before, the in-force sets of every
        key granted to, the break-glass events reviewed), plus the batch's own earlier entries. Returns the
        refused ones, each with its error (by envelope SHA-256); a refusal never affects its batch-mates except
        as the rules say (a consent id is logged once, a review is the first one)."""
        items = [validated(e) for e in entries]
        batch_time_ms = self._clock_ms() if batch_time_ms is None else batch_time_ms
        facts = self._facts()
        ids: set[str] = set()
        grant_keys: set[tuple[bytes, str]] = set()
        ended_keys: set[tuple[bytes, str]] = set()
        attested: set[bytes] = set()
        events: set[int] = set()
        for v in items:
            p = v.payload
            if isinstance(p, payloads.ConsentGrantPayload | payloads.DelegationPayload):
                ids.add(v.consent_id)
            if isinstance(p, payloads.ConsentGrantPayload):
                grant_keys.add((p.patient, p.grantee))
                if p.supersedes:
                    ids.add(p.supersedes)
            elif isinstance(p, payloads.ConsentRevocationPayload):
                ids.add(p.consent_id)
            elif isinstance(p, payloads.DelegationPayload) and p.attested_by:
                attested.add(p.patient)
            elif isinstance(p, payloads.BreakGlassReviewPayload):
                events.add(p.event_index)
        facts.prefetch(ids)
        # One in-force read for every key the batch touches: those granted to, and those of the grants it ends.
        for cid in ids:
            row = facts.row(cid)
            if row is not None and row.kind == GRANT and row.grantee is not None:
                ended_keys.add((row.patient, row.grantee))
        # Every signer: attested delegations need to know whose key signed before, and the batch's index rows
        # (signers) too; one read serves both.
        facts.prefetch_signed({k for v in items for k in v.signers} | attested)
        batch = _BatchAdmission(
            facts=facts,
            now=batch_time_ms,
            live=self.state.in_force_ids(grant_keys | ended_keys) if grant_keys | ended_keys else {},
            break_glass=self._index.break_glass_events(events) if events else set(),
            reviewed=self._index.reviews_of(events, EVERYTHING) if events else {},
        )
        refused: dict[bytes, Exception] = {}
        n = len(items)
        for i, v in enumerate(items):
            # Stand-in indices, in batch order, after everything logged.
            index = EVERYTHING - n + i
            try:
                self._admit_one(v, index, batch)
            except (InvalidInput, NotFound, PermissionDenied, AlreadyExists, FailedPrecondition) as e:
                refused[v.sha256] = e
                continue
            entry = state_rules.ConsentEntry.of(index, batch_time_ms, v.consent_id, v.payload, v.signers)
            if entry is not None:
                facts.note(entry, v.payload)
                batch.consent_payloads[v.consent_id] = v.payload
            if not isinstance(v.payload, payloads.StateCommitPayload):
                batch.signed.update(v.signers)
        # The map update of this batch reads the same stored facts (prepare_batch), not the stand-in notes.
        self._admitted = (frozenset(v.sha256 for v in items if v.sha256 not in refused), facts.fork())
        return refused

    def _admit_one(self, v: Validated, index: int, batch: _BatchAdmission) -> None:
        """Admit one entry of a batch (see admit); raises its refusal."""
        p, env, now, facts = v.payload, v.env, batch.now, batch.facts
        if isinstance(p, payloads.ConsentGrantPayload):
            e = state_rules.ConsentEntry.of(index, now, v.consent_id, p, env.signers)
            assert e is not None
            self._refuse(state_rules.grant_refusal(e, facts, now))
            # At most MAX_IN_FORCE grants in force per patient and selector, counting the batch's earlier entries.
            live = batch.live.setdefault((p.patient, p.grantee), set())
            count = len(live) - (1 if p.supersedes and p.supersedes in live else 0)
            if v.consent_id not in live and count >= MAX_IN_FORCE:
                raise _too_many(p, count)
            if p.supersedes:
                for members in batch.live.values():
                    members.discard(p.supersedes)
            live.add(v.consent_id)
        elif isinstance(p, payloads.ConsentRevocationPayload):
            first = facts.logged(p.consent_id)
            if first is not None and first.kind == DELEGATION:
                self._check_delegation_revocation(env, p, first, batch)
            else:
                e = state_rules.ConsentEntry.of(index, now, v.consent_id, p, env.signers)
                assert e is not None
                self._refuse(state_rules.revocation_refusal(e, facts, now))
                for members in batch.live.values():
                    members.discard(p.consent_id)
        elif isinstance(p, payloads.DelegationPayload):
            e = state_rules.ConsentEntry.of(index, now, v.consent_id, p, env.signers)
            assert e is not None
            self._refuse(state_rules.logged_once_refusal(e, facts))
            if p.attested_by:
                signed = p.patient in batch.signed or p.patient in facts.signed_before([p.patient])
                self._check_attestation(env, p, signed_before=signed)
        elif isinstance(p, payloads.AccessEventPayload):
            self._check_event_signer(env, p)
        elif isinstance(p, payloads.BreakGlassReviewPayload):
            self._check_review(p, batch)
        elif isinstance(p, payloads.ErasurePayload):
            self._check_erasure(p, batch)

    @staticmethod
    def _refuse(refusal: state_rules.Refusal | None) -> None:
        if refusal is not None:
            raise _ADMISSION_ERRORS[refusal.rule](refusal.text)

    def _check_review(self, p: payloads.BreakGlassReviewPayload, batch: _BatchAdmission) -> None:
        """An operator reviews a break-glass access event, once (check: the operator signed it)."""
        _, cp = self._ready()
        i = p.event_index
        if i >= cp.size:
            raise NotFound(f"there is no entry {i} to review: the log has {cp.size} entries")
        if i not in batch.break_glass:
            raise FailedPrecondition(
                f"entry {i} is not a break-glass access event: only access events recorded with break-glass whose "
                "decision permitted something are reviewed"
            )
        done = batch.reviewed.get(i)
        if done is not None:
            raise AlreadyExists(f"break-glass event {i} was already reviewed (entry {done})")
        if i in batch.reviewing:
            raise AlreadyExists(f"break-glass event {i} is being reviewed by another entry")
        batch.reviewing.add(i)

    def _check_erasure(self, p: payloads.ErasurePayload, batch: _BatchAdmission) -> None:
        """An operator erases a body that is no longer needed as evidence (docs/design.md section 3; check: the operator
        signed it)."""
        _, cp = self._ready()
        i = p.index
        if i >= cp.size:
            raise FailedPrecondition(f"cannot erase entry {i}: the log has {cp.size} entries")
        if i in batch.erasing:
            raise FailedPrecondition(f"the body of entry {i} is being erased by another entry")
        (stored,) = self._index.read_indices([i])
        if stored.envelope is None:
            raise FailedPrecondition(f"the body of entry {i} is already erased")
        kind = parse_leaf(stored.leaf).payload_type
        if kind in _NEVER_ERASED:
            raise FailedPrecondition(f"cannot erase entry {i}: it is {_NEVER_ERASED[kind]}, whose body the ledger keeps as evidence")
        parsed = ledger_entry(stored)
        target = parsed.payload
        if isinstance(target, payloads.ConsentGrantPayload):
            live = in_force(self._index, target.patient, [target.grantee], EVERYTHING, self._read_stored)
            if parsed.consent_id in live[target.grantee]:
                raise FailedPrecondition(
                    f"cannot erase entry {i}: the consent is still in force (decisions rest on it); revoke it first"
                )
            if target.supersedes:
                self._ended_first(i, target.supersedes, "supersedes")
        elif isinstance(target, payloads.ConsentRevocationPayload):
            self._ended_first(i, target.consent_id, "revokes")
        elif isinstance(target, payloads.DelegationPayload):
            raise FailedPrecondition(f"cannot erase entry {i}: delegations are not erasable yet (their state is not tracked)")
        elif isinstance(target, payloads.AccessEventPayload) and target.break_glass_access:
            if not self._index.reviews_of([i], EVERYTHING):
                raise FailedPrecondition(f"cannot erase entry {i}: it is a break-glass access awaiting review; review it first")
        body = parse_envelope(stored.envelope)
        facts = erasure_facts(body.payload_type, body.payload, self.state.map_keys)
        if (p.consent_id, p.map_key, p.ends) != (facts.consent_id, facts.map_key, facts.ends):
            raise InvalidInput(
                f"the erasure of entry {i} must record what replaying the consent state needs without its body: "
                f"consent id {facts.consent_id or '(none)'}, map key {facts.map_key.hex() or '(none)'}, ends "
                f"{facts.ends or '(none)'} (see core.state_rules.erasure_facts)"
            )
        batch.erasing.add(i)

    def _ended_first(self, index: int, consent_id: str, verb: str) -> None:
        """An entry that ends a grant is evidence of that grant's state for as long as the grant's body is kept."""
        row = self._index.consent(consent_id)
        if row is not None and row.kind == GRANT and row.index not in self._index.erased_by([row.index]):
            raise FailedPrecondition(
                f"cannot erase entry {index}: it {verb} consent {consent_id} (entry {row.index}), whose state rests "
                f"on it; erase entry {row.index} first"
            )

    def _check_event_signer(self, env: ParsedEnvelope, p: payloads.AccessEventPayload) -> None:
        if self._operator_keys.intersection(env.signers):
            return
        if not self._party_keys(p.party_id, EVERYTHING).intersection(env.signers):
            raise PermissionDenied(f"the access event is not signed by a key of organisation {p.party_id}")

    def _party_keys(self, party_id: str, below: int) -> frozenset[bytes]:
        """The keys of the party's latest registration below index ``below``; PermissionDenied if none."""
        return frozenset(self._registration(party_id, below).public_keys)

    def _registration(self, party_id: str, below: int) -> payloads.PartyRegistrationPayload:
        """The party's latest registration below index ``below``; PermissionDenied if none."""
        party = self.party(party_id, below)
        _, (registration,) = self._entries_at({party.index}, {party.index})
        assert isinstance(registration.payload, payloads.PartyRegistrationPayload)
        return registration.payload

    # -- delegations ------------------------------------------------------------------------------------

    def _delegates(self, patient: bytes, delegate: bytes, below: int) -> list[delegation.Delegate]:
        """The delegations of ``patient`` naming ``delegate`` among entries below ``below``, each with its first
        revocation there (the index's facts, IndexFacts.delegates)."""
        return self._facts(below).delegates(patient, delegate)

    def delegate_in_force(self, patient: bytes, delegate: bytes, t_ms: int, scope: str | None = None) -> bool:
        """Whether ``delegate`` holds a delegation of ``patient`` in force at ``t_ms`` (core.delegation.refusal:
        integrated at or before t, inside its validity, before its majority date, not revoked at or before t)
        whose scope covers ``scope`` ("grant", "revoke", "*" for both, None for any), as of the log now.

        For the authorisation layer: a few indexed rows (delegations by (patient, delegate), revocations by the
        delegation id) and the cached delegation entries; nothing scans. Raises InvalidInput for a malformed key
        or an unknown scope."""
        payloads.check_patient_key(patient)
        payloads.check_patient_key(delegate, "delegate")
        if scope not in (None, delegation.GRANT, delegation.REVOKE, delegation.WILDCARD):
            raise InvalidInput(f"scope: unknown {scope!r:.40} (grant, revoke, * or none)")
        return any(d.refusal(t_ms, (scope,)) is None for d in self._delegates(patient, delegate, EVERYTHING))

    def _check_attestation(self, env: ParsedEnvelope, p: payloads.DelegationPayload, *, signed_before: bool) -> None:
        """core.delegation.check_attestation against the attesting organisation's latest registration."""
        reg = self._registration(p.attested_by, EVERYTHING)
        try:
            delegation.check_attestation(
                p, env.signers, org_keys=reg.public_keys, org_capabilities=reg.capabilities,
                patient_signed_before=signed_before,
            )
        except delegation.AttestationRefused as e:
            raise PermissionDenied(str(e)) from None

    def _check_delegation_revocation(
        self,
        env: ParsedEnvelope,
        p: payloads.ConsentRevocationPayload,
        target: state_rules.Logged,
        batch: _BatchAdmission,
    ) -> None:
        if target.patient != p.patient:
            raise PermissionDenied(f"cannot revoke delegation {p.consent_id}: it is another patient's")
        d = batch.consent_payloads.get(p.consent_id)  # a delegation earlier in the batch
        if d is None:
            _, (entry,) = self._entries_at({target.index}, {target.index})
            d = entry.payload
        assert isinstance(d, payloads.DelegationPayload)
        keys = self._party_keys(d.attested_by, EVERYTHING) if d.attested_by else frozenset()
        if not delegation.may_revoke(d, env.signers, keys):
            who = "its patient" + (f" or the attesting organisation {d.attested_by}" if d.attested_by else "")
            raise PermissionDenied(f"cannot revoke delegation {p.consent_id}: only {who} may")

    def _support(self, entries: Iterable[LedgerEntry], *, revocations: bool) -> set[int]:
        """Indices of what authorised the delegate-signed grants and revocations among ``entries``: the delegation
        in force when each was integrated, the attesting organisation's registration it was checked against, and
        (with ``revocations``) the revocations of those delegations as of now."""
        out: set[int] = set()
        ids: set[str] = set()
        facts = self._facts()
        for e in entries:
            p = e.payload
            if not isinstance(p, payloads.ConsentGrantPayload | payloads.ConsentRevocationPayload) or p.patient in e.signers:
                continue
            if isinstance(p, payloads.ConsentRevocationPayload):
                target = self._index.consent(p.consent_id)
                if target is not None and target.kind == DELEGATION:
                    continue  # an attesting organisation ended a delegation: no delegate involved
            rule_entry = state_rules.ConsentEntry.of(e.index, e.integrated_time_ms, e.consent_id, p, e.signers)
            assert rule_entry is not None
            d = state_rules.authorising(rule_entry, facts)
            if d is None:
                log.error("entry %d is signed by a delegate that no delegation authorises", e.index)
                continue
            out.add(d.index)
            ids.add(d.delegation_id)
            if d.payload.attested_by:
                out.add(self.party(d.payload.attested_by, d.index).index)
        if revocations and ids:
            out.update(r.index for r in self._index.targeting(ids, EVERYTHING) if r.kind == REVOCATION)
        return out

    # -- index rows, written in the batch's transaction --------------------------------------------------

    def prepare_batch(
        self,
        entries: Sequence[NewEntry],
        items: Sequence[Validated],
        batch_time_ms: int,
        closing_index: int,
        heartbeat: bool,
    ) -> PreparedBatch:
        """Index rows for the batch, the consent map's update, and the StateCommit that closes the batch. Reads
        the stored facts admission read for this batch (no second read)."""
        admitted, self._admitted = self._admitted, None
        facts = admitted[1] if admitted is not None and all(v.sha256 in admitted[0] for v in items) else None
        rows, erasures = self._index_batch(entries, items, facts)
        state = self.state.prepare(
            entries, rows.get("consents", []), batch_time_ms, closing_index, heartbeat, rows.get("parties", []),
            items, facts,
        )
        return PreparedBatch(state.closing, {**rows, **state.extra}, erasures, state.state_index)

    def index_rows(self, entries: Sequence[NewEntry], envs: Sequence[Validated | ParsedEnvelope]) -> dict[str, list[dict[str, object]]]:
        return self._index_batch(entries, [validated(e) for e in envs])[0]

    def _index_batch(
        self, entries: Sequence[NewEntry], items: Sequence[Validated], facts: IndexFacts | None = None
    ) -> tuple[dict[str, list[dict[str, object]]], dict[int, str]]:
        """The index rows of a batch, and the bodies its Erasure entries erase (index -> reason)."""
        facts = facts if facts is not None else self._facts()
        consents: list[dict[str, object]] = []
        parties: list[dict[str, object]] = []
        events: list[dict[str, object]] = []
        bg_events: list[dict[str, object]] = []
        reviews: dict[int, dict[str, object]] = {}
        erasures: dict[int, dict[str, object]] = {}
        reasons: dict[int, str] = {}
        grantee_of: dict[str, str | None] = {}
        delegations: list[dict[str, object]] = []
        first_signed: dict[bytes, int] = {}
        targets = {v.payload.consent_id for v in items if isinstance(v.payload, payloads.ConsentRevocationPayload)}
        if targets:
            facts.prefetch(targets)
        for e, v in zip(entries, items):
            p, cid = v.payload, v.consent_id
            if not isinstance(p, payloads.StateCommitPayload):
                for key in v.signers:
                    first_signed.setdefault(key, e.index)
            base = {"idx": e.index, "integrated_ms": e.integrated_ms, "consent_id": cid}
            if isinstance(p, payloads.ConsentGrantPayload):
                grantee_of[cid] = p.grantee
                consents.append({**base, "patient": p.patient, "kind": GRANT, "grantee": p.grantee, "target": p.supersedes})
            elif isinstance(p, payloads.ConsentRevocationPayload):
                grantee = grantee_of.get(p.consent_id)
                if grantee is None:
                    row = facts.row(p.consent_id)
                    grantee = row.grantee if row else None
                consents.append({**base, "patient": p.patient, "kind": REVOCATION, "grantee": grantee, "target": p.consent_id})
            elif isinstance(p, payloads.DelegationPayload):
                consents.append({**base, "patient": p.patient, "kind": DELEGATION, "grantee": None, "target": None})
                delegations.append({"idx": e.index, "integrated_ms": e.integrated_ms, "patient": p.patient, "delegate": p.delegate, "delegation_id": cid})
            elif isinstance(p, payloads.PartyRegistrationPayload):
                parties.append({"idx": e.index, "party_id": p.party_id, "roles": ",".join(sorted(p.roles))})
            elif isinstance(p, payloads.AccessEventPayload):
                events.append({"idx": e.index, "patient": p.patient, "party_id": p.party_id})
                if p.break_glass_access:
                    bg_events.append(
                        {"idx": e.index, "patient": p.patient, "party_id": p.party_id, "integrated_ms": e.integrated_ms}
                    )
            elif isinstance(p, payloads.BreakGlassReviewPayload):
                # The first review of an event is its review (admission lets one through).
                reviews.setdefault(p.event_index, {"event_idx": p.event_index, "idx": e.index, "outcome": p.outcome})
            elif isinstance(p, payloads.ErasurePayload):
                if p.index not in erasures:
                    erasures[p.index] = {"idx": p.index, "erasure_idx": e.index}
                    reasons[p.index] = p.reason
        if reviews:
            for i in self._index.reviews_of(reviews, EVERYTHING):
                del reviews[i]
        if erasures:
            for i in self._index.erased_by(erasures):
                del erasures[i], reasons[i]
        if first_signed:
            for key in facts.signed_before(first_signed):
                del first_signed[key]
        rows: dict[str, list[dict[str, object]]] = {}
        for name, r in (
            ("signers", [{"signer": k, "idx": i} for k, i in first_signed.items()]),
            ("consents", consents),
            ("parties", parties),
            ("access_events", events),
            ("delegations", delegations),
            ("break_glass_events", bg_events),
            ("break_glass_reviews", list(reviews.values())),
            ("erasures", list(erasures.values())),
        ):
            if r:
                rows[name] = r
        return rows, reasons

    def on_integrated(self, entries: Sequence[NewEntry], extra: ExtraRows, cp: StoredCheckpoint) -> None:
        """Publish the batch's StateCommit; push new entries to watchers: by patient, and revocations by the
        grantee selector they end."""
        self.state.committed(extra)
        for row in extra.get("parties", ()):
            self._parties.pop(str(row["party_id"]), None)
        self._party_horizon = cp.size
        for row in extra.get("erasures", ()):
            self._entry_cache.discard(int(row["idx"]))  # type: ignore[call-overload]  # the body is gone
        if self.broker is None:
            return
        by_index = {e.index: e for e in entries}
        items: list[tuple[object, Pushed]] = []
        for row in extra.get("consents", ()):
            e = by_index[int(row["idx"])]  # type: ignore[call-overload]
            pushed = Pushed(StoredEntry(e.index, e.leaf, e.envelope), cp)
            items.append((("patient", row["patient"]), pushed))
            if row["kind"] == REVOCATION and row["grantee"]:
                items.append((("grantee", row["grantee"]), pushed))
        for row in extra.get("access_events", ()):
            e = by_index[int(row["idx"])]  # type: ignore[call-overload]
            items.append((("patient", row["patient"]), Pushed(StoredEntry(e.index, e.leaf, e.envelope), cp)))
        items.sort(key=lambda kv: kv[1].entry.index)
        self.broker.publish_threadsafe(items)

    def reset(self) -> None:
        """Drop every cache written through on commit (the consent state's, the party registrations, the
        entries): the sequencer calls this after a batch whose outcome is unknown, once it read the log back."""
        self.state.reset()
        self._admitted = None
        self._parties = {}
        self._entry_cache = Lru(self._cache.of("entries"), _entry_cost)
        if self.access is not None:
            self.access.reset()

    # -- the access check -------------------------------------------------------------------------------

    def _ready(self) -> tuple[TreeReader, StoredCheckpoint]:
        assert self._reader is not None and self._latest is not None, "attach() the ConsentLedger first"
        return self._reader, self._latest()

    def party(self, party_id: str, below: int) -> PartyRow:
        cached = self._parties.get(party_id)
        if cached is not None and cached.index < below:
            return cached
        party = self._index.party(party_id, below)
        if party is not None and below >= self._party_horizon:
            self._parties[party_id] = party
        if party is None:
            raise PermissionDenied(f"organisation {party_id} is not registered with this ledger")
        return party

    def registered(self, party_id: str, *, io: bool = True) -> PartyRow:
        """The organisation's registration as of the latest checkpoint. Raises PermissionDenied if there is none;
        with ``io=False``, answers from the party cache only and raises WouldBlock when it would read storage."""
        if not io:
            cached = self._parties.get(party_id)
            if cached is None:
                raise WouldBlock(f"organisation {party_id} is not in the party cache")
            return cached
        _, cp = self._ready()
        return self.party(party_id, cp.size)

    # -- facts the authorization rules read (app/authorization.py) -----------------------------------------

    def entry_payload(self, index: int) -> payloads.Payload | None:
        """The parsed payload of entry ``index``; None when there is no such entry yet or its body was erased."""
        _, cp = self._ready()
        if not 0 <= index < cp.size:
            return None
        stored, _ = self._entries_at({index}, set())
        if not stored or stored[0].envelope is None:
            return None
        _, (entry,) = self._entries_at({index}, {index})
        return entry.payload

    def concerns(self, p: payloads.Payload, party_id: str, roles: Sequence[str]) -> bool:
        """Whether a grant or revocation concerns an organisation: it names it by id, by a role it holds, or "any"."""
        selectors = grantee_selectors(party_id, roles)
        if isinstance(p, payloads.ConsentGrantPayload):
            return p.grantee in selectors
        if isinstance(p, payloads.ConsentRevocationPayload):
            row = self._index.consent(p.consent_id)
            return row is not None and row.grantee in selectors
        return False

    def permit_in_force(self, patient: bytes, party_id: str, roles: Sequence[str], t_ms: int) -> bool:
        """Whether an in-force PERMIT of the patient names this organisation (by id, role or "any") at t, as of the
        latest StateCommit: while one does, the organisation may read the patient's entries that concern it."""
        sc = self.state.latest
        if sc is None:
            return False
        live = self._in_force_at(patient, grantee_selectors(party_id, roles), sc)
        indices = {i for s in live.values() for i in s.values()}
        _, entries = self._entries_at(indices, indices)
        states = consent_states(entries, t_ms)
        return any(
            isinstance(e.payload, payloads.ConsentGrantPayload)
            and e.payload.decision == payloads.PERMIT
            and states.get(e.consent_id) == STATE_ACTIVE
            for e in entries
        )

    def map_vrf_proof(self, envelope: bytes | None) -> bytes:
        """The VRF proof of an entry's map key (a grant's consent key, a registration's party key), so an auditor
        can replay the map (docs/design.md section 5); empty for other entries and erased bodies."""
        if envelope is None:
            return b""
        env = parse_envelope(envelope)
        if env.payload_type not in (payloads.CONSENT_GRANT, payloads.PARTY_REGISTRATION):
            return b""
        p = payloads.parse_payload(env.payload_type, env.payload)
        if isinstance(p, payloads.ConsentGrantPayload):
            return self.state.map_keys.prove(vrf.consent_alpha(p.patient, p.grantee)).pi
        assert isinstance(p, payloads.PartyRegistrationPayload)
        return self.state.map_keys.prove(vrf.party_alpha(p.party_id)).pi

    def _prove(self, entries: Iterable[StoredEntry], size: int) -> list[Proven]:
        self._ready()
        assert self.access is not None
        return [Proven(e, self.access.proofs.prove(e.index, size)) for e in entries]

    def check_access(self, requester_id: str, **request: object) -> AccessAnswer:
        """The access check (app.access.AccessPath.check_access)."""
        assert self.access is not None, "attach() the ConsentLedger first"
        return self.access.check_access(requester_id, **request)  # type: ignore[arg-type]

    # What the access path reads (app.access.AccessSource).

    def entries_at(self, indices: set[int], parsed: set[int], *, io: bool = True) -> tuple[list[StoredEntry], list[LedgerEntry]]:
        return self._entries_at(indices, parsed, io=io)

    def in_force_at(self, patient: bytes, selectors: Sequence[str], sc: StateCommitRow) -> dict[str, dict[str, int]]:
        return self._in_force_at(patient, selectors, sc)

    def support(self, entries: Sequence[LedgerEntry]) -> set[int]:
        return self._support(entries, revocations=False)

    def _in_force_at(self, patient: bytes, selectors: Sequence[str], sc: StateCommitRow) -> dict[str, dict[str, int]]:
        """The in-force sets as of ``sc``. Cached by map root: equal roots commit to equal sets for every key."""
        out: dict[str, dict[str, int]] = {}
        missing = []
        for sel in selectors:
            hit = self._live_cache.get((patient, sel, sc.map_root))
            if hit is None:
                missing.append(sel)
            else:
                out[sel] = hit
        if missing:
            for sel, live in in_force(self._index, patient, missing, sc.index, self._read_stored).items():
                self._live_cache.put((patient, sel, sc.map_root), live)
                out[sel] = live
        return out

    def _entries_at(
        self, indices: set[int], parsed: set[int], *, io: bool = True
    ) -> tuple[list[StoredEntry], list[LedgerEntry]]:
        """Stored entries (immutable once logged) from a cache or storage, and the ``parsed`` ones as the decision
        reads them. An erasure drops the erased index from this cache (on_integrated). With ``io=False``, from the
        cache alone (entries already parsed where asked): WouldBlock otherwise."""
        cached = {i: self._entry_cache.get(i) for i in indices}
        missing = [i for i, hit in cached.items() if hit is None]
        if not io and (missing or any(cached[i][1] is None for i in parsed)):  # type: ignore[index]
            raise WouldBlock("an entry is not cached (or not parsed yet)")
        for stored in self._index.read_indices(missing) if missing else ():
            cached[stored.index] = self._entry_cache.put(stored.index, (stored, None))
        for i in parsed:
            hit = cached[i]
            if hit is not None and hit[1] is None:
                cached[i] = self._entry_cache.put(i, (hit[0], ledger_entry(hit[0])))
        ordered = [cached[i] for i in sorted(indices) if cached[i] is not None]
        return [s for s, _ in ordered], [e for s, e in ordered if s.index in parsed and e is not None]

    def access_event_envelope(self, answer: AccessAnswer) -> ParsedEnvelope:
        """The AccessEvent the ledger records for a decision it made (signed by the ledger's key)."""
        payload = access_event_for(answer.decision, answer.receipt, accessed_at_ms=answer.decision.request.time_ms)
        raw = sign_envelope(payloads.ACCESS_EVENT, payload, [self._signer.private_key])
        return parse_envelope(raw)

    # -- the patient's view -----------------------------------------------------------------------------

    def list_consents(self, patient: bytes, *, after: int, limit: int, time_ms: int = 0) -> ConsentPage:
        _, cp = self._ready()
        payloads.check_patient_key(patient)
        rows, more = _page(lambda n: self._index.for_patient(patient, after, n, cp.size), limit)
        on_page = {r.index for r in rows}
        stored = self._index.read_indices(on_page)
        # An erased grant has no state to show (its body is gone); the entries that end a kept grant are kept too.
        erased = {s.index for s in stored if s.envelope is None}
        granted = {r.consent_id for r in rows if r.kind == GRANT and r.index not in erased}
        ended = granted | {r.consent_id for r in rows if r.kind == DELEGATION}
        # Only the patient's own entries can end its consents (core.state_rules): another patient's never shows.
        ending = [r for r in self._index.targeting(ended, cp.size) if r.index not in on_page and r.patient == patient] if ended else []
        related = self._index.read_indices({r.index for r in ending})
        t = time_ms or self._clock_ms()
        entries = [ledger_entry(s) for s in (*stored, *related) if s.index not in erased]
        # Who signed: the delegations (and registrations, revocations) behind delegate-signed entries, and the
        # delegations that revocations on the page end (to check who may revoke them).
        # Attested delegations come with the registration their signature and their revocations were checked by.
        support = self._support(entries, revocations=True)
        by_index = {e.index: e for e in entries}
        for e in entries:
            if isinstance(e.payload, payloads.DelegationPayload) and e.payload.attested_by:
                support.add(self.party(e.payload.attested_by, e.index).index)
        for r in rows:
            target = self._index.consent(r.target) if r.kind == REVOCATION and r.target else None
            if target is not None and target.kind == DELEGATION:
                support.add(target.index)
                de = by_index.get(target.index) or ledger_entry(self._index.read_indices([target.index])[0])
                if isinstance(de.payload, payloads.DelegationPayload) and de.payload.attested_by:
                    support.add(self.party(de.payload.attested_by, target.index).index)
                    support.add(self.party(de.payload.attested_by, r.index).index)
        for e in entries:  # revocations of attested delegations on the page or among those ending them
            p = e.payload
            if isinstance(p, payloads.ConsentRevocationPayload) and p.patient not in e.signers:
                de = next((x for x in entries if x.consent_id == p.consent_id), None)
                if de is not None and isinstance(de.payload, payloads.DelegationPayload) and de.payload.attested_by:
                    support.add(self.party(de.payload.attested_by, e.index).index)
        support -= on_page | {r.index for r in ending}
        if support:
            more_related = self._index.read_indices(support)
            related = sorted([*related, *more_related], key=lambda s: s.index)
            entries.extend(ledger_entry(s) for s in more_related)
        states = consent_states(entries, t)
        ends_at = ended_by(entries, t)
        page_states = {
            r.consent_id: (states.get(r.consent_id, "pending"), ends_at.get(r.consent_id))
            for r in rows
            if r.kind == GRANT and r.index not in erased
        }
        return ConsentPage(
            cp,
            self._prove(stored, cp.size),
            page_states,
            self._prove(related, cp.size),
            t,
            rows[-1].index if more else None,
        )

    def list_access_events(self, patient: bytes, *, after: int, limit: int) -> EventPage:
        _, cp = self._ready()
        payloads.check_patient_key(patient)
        indices, more = _page(lambda n: self._index.access_events(patient, after, n, cp.size), limit)
        stored = self._index.read_indices(indices)
        reviews = self._index.read_indices(self._index.reviews_of(indices, cp.size).values()) if indices else []
        return EventPage(cp, self._prove(stored, cp.size), indices[-1] if more else None, self._prove(reviews, cp.size))

    def list_break_glass_reviews(self, *, after: int, limit: int, unreviewed_only: bool) -> ReviewPage:
        """The break-glass review queue: break-glass access events with index > after, each with its review."""
        _, cp = self._ready()
        rows, more = _page(
            lambda n: self._index.break_glass_queue(after, n, cp.size, unreviewed_only=unreviewed_only), limit
        )
        stored = self._index.read_indices({i for row in rows for i in row if i is not None})
        proven = {p.entry.index: p for p in self._prove(stored, cp.size)}
        items = [ReviewItem(proven[e], None if r is None else proven[r]) for e, r in rows]
        return ReviewPage(cp, items, rows[-1][0] if more else None)

    def revocation_keys(self, party_id: str) -> list[tuple[str, str]]:
        """Broker keys under which revocations concerning an organisation are pushed."""
        _, cp = self._ready()
        party = self.party(party_id, cp.size)
        return [("grantee", s) for s in grantee_selectors(party_id, party.roles)]

    def prove_pushed(self, pushed: Pushed) -> Proven:
        reader, _ = self._ready()
        return Proven(pushed.entry, prove_inclusion(pushed.entry.index, pushed.checkpoint.size, reader))

