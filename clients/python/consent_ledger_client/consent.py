"""Consent calls for each audience, every answer verified.

- Patients: grant, revoke, delegate, list their consents and delegations, see who asked, watch.
- Delegates (guardians, proxies): grant and revoke for a patient with their own key.
- Hospitals and insurers: check access (the decision is re-computed from the evidence, and the signed receipt
  checked), record an access, watch revocations that concern them.
- The operator (privacy officer): list the break-glass review queue, review an event, erase a body.
- Anyone: verify a receipt or a receipt bundle offline.

What a client can and cannot check about reviews and erasures: a review it is shown is proven (in the log, signed
by an operator key, about that event); that an event has *no* review is the server's word (a log proves presence,
not absence), as is the completeness of the queue. An erased body is accepted only with the Erasure entry that
records it (LedgerClient.verify_erasure); that the body is really gone, and what it held, cannot be checked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from consent_ledger.core import delegation, payloads, smt, vrf
from consent_ledger.core.checkpoint import Checkpoint
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.decision import (
    MAX_IN_FORCE,
    AccessRequest,
    Decision,
    LedgerEntry,
    Policy,
    consent_states,
    decide,
    delegation_book,
    grantee_selectors,
)
from consent_ledger.core.envelope import sign_envelope
from consent_ledger.core.errors import InvalidInput, VerificationError
from consent_ledger.core.payloads import DataItem, Period
from consent_ledger.core.receipt import (
    access_event_for,
    encode_decision,
    open_receipt,
    receipt_sha256,
)
from consent_ledger.core.rfc6962 import hash_leaf
from consent_ledger.core.state_rules import ErasureFacts, erasure_facts
from consent_ledger.core.timing import MAX_CLOCK_SKEW_MS, is_ahead, is_within_skew
from consent_ledger.core.witness_policy import WitnessedCheckpoint, WitnessPolicy
from consent_ledger.v1 import (
    access_pb2,
    access_pb2_grpc,
    consent_pb2,
    consent_pb2_grpc,
    payloads_pb2,
)
from consent_ledger_client.client import LedgerClient, SubmitReceipt
from consent_ledger_client.client import body_of as _body
from consent_ledger_client.errors import (
    DecisionTimeMismatch,
    ExpiredDecision,
    MissingAccessEvent,
    StateCommitNotNamed,
    StateFromTheFuture,
)
from consent_ledger_client.verify import VerifiedEntry, verify_entry


class IncompleteEvidence(VerificationError):
    """The evidence is not exactly the in-force consent set the ledger's signed state commits to: something in
    force was left out, or something not in force was added."""


class StaleRegistration(VerificationError):
    """The registration the decision took the requester's roles from is not its latest: the consent state's party
    key for the requester holds another registration (or none). Carries the index relied on."""

    def __init__(self, party_id: str, index: int) -> None:
        super().__init__(
            f"the registration of {party_id} at entry {index} is not its latest one in the consent state"
        )
        self.party_id = party_id
        self.index = index


class StaleEvidence(VerificationError):
    """The consent state the decision rests on is older than the client accepts."""


class DecisionMismatch(VerificationError):
    """The server's decision differs from the one the evidence gives. Carries both."""

    def __init__(self, server: Decision, recomputed: Decision) -> None:
        super().__init__(f"the server decided {server.decision}, but its evidence gives {recomputed.decision}")
        self.server = server
        self.recomputed = recomputed


@dataclass(frozen=True)
class VerifiedDecision:
    """A decision whose evidence was proven, re-evaluated and found equal, with its verified receipt."""

    decision: Decision
    evidence: tuple[VerifiedEntry, ...]
    checkpoint: Checkpoint
    checkpoint_note: bytes
    receipt: bytes
    access_event_index: int | None
    # The StateCommit the evidence was proven complete against: its index, map root and batch time.
    state_commit_index: int = 0
    state_map_root: bytes = b""
    state_time_ms: int = 0
    # With a witness policy: the witnessed checkpoint the answer was accepted on (its note with the cosignatures)
    # and the consistency proof from it to ``checkpoint`` (empty when equal). A receipt carries both.
    witnessed: WitnessedCheckpoint | None = None
    witnessed_consistency: tuple[bytes, ...] = ()

    @property
    def permitted(self) -> bool:
        return self.decision.decision == payloads.PERMIT


@dataclass(frozen=True)
class SignedBy:
    """Who signed a patient's entry, when it was not the patient: the delegate's key and the delegation (in the
    log, verified) that let it sign."""

    delegate: bytes
    delegation_id: str
    relationship: str
    delegation_index: int


@dataclass(frozen=True)
class ConsentView:
    """A grant and its verified current state; ``signed_by`` is set when a delegate signed it."""

    consent_id: str
    entry: VerifiedEntry
    grant: payloads.ConsentGrantPayload
    state: str
    ended_by_index: int | None
    signed_by: SignedBy | None = None


@dataclass(frozen=True)
class DelegationView:
    """A delegation of the patient and its state at the listing's time: "active", "pending" (validity not
    started), "expired" (validity ended), "majority" (the patient reached the majority date) or "revoked"."""

    delegation_id: str
    entry: VerifiedEntry
    delegation: payloads.DelegationPayload
    state: str
    revoked_by_index: int | None


@dataclass(frozen=True)
class ConsentListing:
    consents: tuple[ConsentView, ...]
    revocations: tuple[VerifiedEntry, ...]
    checkpoint: Checkpoint
    next_page_token: str
    delegations: tuple[DelegationView, ...] = ()
    # Revocations on the page that a delegate signed, by index.
    revocation_signers: dict[int, SignedBy] | None = None
    # Entries of the page whose bodies were erased (each with its verified Erasure record): what they held is gone.
    erased: tuple[VerifiedEntry, ...] = ()


NOT_REQUIRED, UNREVIEWED = "not-required", "unreviewed"


@dataclass(frozen=True)
class ReviewView:
    """A verified BreakGlassReview entry: in the log, signed by an operator key."""

    entry: VerifiedEntry
    review: payloads.BreakGlassReviewPayload


@dataclass(frozen=True)
class AccessEventView:
    """A verified access event (``event`` None when its body was erased) and, for a break-glass access, its
    verified review if the server returned one."""

    entry: VerifiedEntry
    event: payloads.AccessEventPayload | None
    review: ReviewView | None = None

    @property
    def index(self) -> int:
        return self.entry.index

    @property
    def break_glass(self) -> bool:
        """A break-glass access (or an erased event that was reviewed as one)."""
        return self.review is not None or (self.event is not None and self.event.break_glass_access)

    @property
    def review_state(self) -> str:
        """"justified" or "unjustified" (the review's outcome, proven), "unreviewed" (no review returned: the
        server's word), or "not-required" (not a break-glass access)."""
        if self.review is not None:
            return self.review.review.outcome
        return UNREVIEWED if self.break_glass else NOT_REQUIRED


@dataclass(frozen=True)
class AccessEventListing:
    events: tuple[AccessEventView, ...]
    checkpoint: Checkpoint
    next_page_token: str


@dataclass(frozen=True)
class ReviewQueue:
    """A page of the break-glass review queue, oldest first."""

    items: tuple[AccessEventView, ...]
    checkpoint: Checkpoint
    next_page_token: str


def _as_ledger_entry(v: VerifiedEntry) -> LedgerEntry:
    if v.envelope is None:
        raise VerificationError(f"entry {v.index} is evidence but its body was withheld or erased")
    try:
        return LedgerEntry.from_payload(
            index=v.index,
            integrated_time_ms=v.leaf.integrated_time_ms,
            payload_type=v.envelope.payload_type,
            payload=v.envelope.payload,
            signers=v.envelope.signers,
        )
    except InvalidInput as e:
        raise VerificationError(f"entry {v.index} does not hold a valid payload: {e}") from e


def signed_by(e: LedgerEntry, book: delegation.DelegationBook) -> SignedBy | None:
    """For a patient's grant or revocation: None when the patient signed it; else the delegation among the
    verified entries that let a signer sign it. Raises VerificationError when none did (the same rule the
    server applies before appending, core.delegation)."""
    p = e.payload
    if not isinstance(p, payloads.ConsentGrantPayload | payloads.ConsentRevocationPayload) or p.patient in e.signers:
        return None
    d = book.authorising(p.patient, e.signers, e.integrated_time_ms, delegation.required_scope(p))
    if d is None:
        raise VerificationError(
            f"entry {e.index} is signed by {', '.join(k.hex()[:16] for k in e.signers)}, neither the patient nor a "
            "delegate in force by the delegations the server gave"
        )
    signer = next(k for k in e.signers if k == d.payload.delegate)
    return SignedBy(signer, d.delegation_id, d.payload.relationship, d.index)


def delegation_state(d: delegation.Delegate, t_ms: int) -> str:
    """The patient's view of a delegation at t_ms (see DelegationView)."""
    if d.revoked_ms is not None and d.revoked_ms <= t_ms:
        return "revoked"
    p = d.payload
    if p.majority_date_ms and t_ms >= p.majority_date_ms:
        return "majority"
    if p.validity.end_ms and t_ms >= p.validity.end_ms:
        return "expired"
    if (p.validity.start_ms and t_ms < p.validity.start_ms) or d.integrated_ms > t_ms:
        return "pending"
    return "active"


class _ProvenKeys:
    """The map key of one grant, from the VRF proof the server gave with it (verified for the grant's alpha
    under the map VRF key: pinned, or named by the StateCommit that closed the grant's batch)."""

    def __init__(self, ledger: LedgerClient, index: int, pi: bytes) -> None:
        self._ledger, self._index, self._pi = ledger, index, pi

    def _vrf_key(self) -> bytes:
        known = self._ledger.map_vrf_public_key
        if known is not None:
            return known
        # Learn it from the StateCommit that closed the entry's batch (the first one after it).
        start = self._index + 1
        size = self._ledger.checkpoint().checkpoint.size
        while start < size:
            for v in self._ledger.get_entries(start, min(size, start + 256)):
                if v.envelope is not None and v.leaf.payload_type == payloads.STATE_COMMIT:
                    p = payloads.parse_payload(v.envelope.payload_type, v.envelope.payload)
                    assert isinstance(p, payloads.StateCommitPayload)
                    if self._ledger.log_public_key in v.envelope.signers:
                        return self._ledger.accept_map_vrf_key(p.map_vrf_public_key)
                start = v.index + 1
        raise VerificationError(f"no state commit after entry {self._index} names the map VRF key")

    def consent_key(self, patient: bytes, selector: str) -> bytes:
        return self._ledger.map_keys.key(self._vrf_key(), vrf.consent_alpha(patient, selector), self._pi)

    def party_key(self, party_id: str) -> bytes:
        return self._ledger.map_keys.key(self._vrf_key(), vrf.party_alpha(party_id), self._pi)


def _page_start(token: str) -> int:
    """Indices on a page follow the token's index (the token is the last index of the page before)."""
    return int(token) + 1 if token.isascii() and token.isdigit() else 0


def _pb_period(p: Period) -> payloads_pb2.Period | None:
    return None if p == Period() else payloads_pb2.Period(start_ms=p.start_ms, end_ms=p.end_ms)


class ConsentClient:
    """Consent operations over a LedgerClient (which pins the log key and keeps the checkpoint state)."""

    def __init__(
        self,
        ledger: LedgerClient,
        *,
        policy: Policy | None = None,
        operator_keys: Iterable[bytes] = (),
        max_state_age_ms: int = 120_000,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        max_clock_skew_ms: int = MAX_CLOCK_SKEW_MS,
        witness_policy: WitnessPolicy | None = None,
    ) -> None:
        """``policy``: if given, decisions made under any other policy are refused. ``operator_keys``: keys
        trusted to register parties, besides the log's own key. ``max_state_age_ms``: evidence whose
        StateCommit is older than this (by ``clock_ms``) is refused as stale. ``max_clock_skew_ms``: how far a
        decision's time may be from ``clock_ms``, and a StateCommit's batch time after it (docs/design.md section 4).
        ``witness_policy``: accept answers only on checkpoints a quorum of pinned witnesses cosigned recently (set
        on ``ledger``; see LedgerClient)."""
        self.ledger = ledger
        self._policy = policy
        self._max_state_age_ms = max_state_age_ms
        self._max_skew_ms = max_clock_skew_ms
        self._clock_ms = clock_ms
        ledger.trust_operator_keys(operator_keys)
        if witness_policy is not None:
            ledger.require_witness_policy(witness_policy)
        self._access = access_pb2_grpc.AccessServiceStub(ledger.channel)
        self._consent = consent_pb2_grpc.ConsentServiceStub(ledger.channel)

    # -- the operator ---------------------------------------------------------------------------------------

    def register_party(
        self,
        operator_key: Ed25519PrivateKey,
        *,
        party_id: str,
        roles: Sequence[str],
        public_keys: Sequence[bytes],
        display_name: str,
        capabilities: Sequence[str] = (),
    ) -> SubmitReceipt:
        """Register an organisation (signed by an operator key; the ledger refuses any other signer). A newer
        registration replaces the older one; ``capabilities`` (none by default) are what the operator lets it do
        beyond its roles, such as ``attest-guardianship``."""
        payload = payloads.build_party_registration(
            party_id=party_id, roles=roles, public_keys=public_keys, display_name=display_name,
            capabilities=capabilities,
        )
        return self.ledger.submit(sign_envelope(payloads.PARTY_REGISTRATION, payload, [operator_key]))

    def review_break_glass(
        self, operator_key: Ed25519PrivateKey, event_index: int, *, outcome: str, notes: str = ""
    ) -> SubmitReceipt:
        """Record the review of the break-glass access event at ``event_index`` (signed by an operator key; the
        ledger refuses any other signer, an index that is not a break-glass access, and a second review)."""
        payload = payloads.build_break_glass_review(event_index=event_index, outcome=outcome, notes=notes)
        return self.ledger.submit(sign_envelope(payloads.BREAK_GLASS_REVIEW, payload, [operator_key]))

    def erase(self, operator_key: Ed25519PrivateKey, index: int, *, reason: str) -> SubmitReceipt:
        """Erase the body of entry ``index`` (signed by an operator key). The leaf and every proof stay; the ledger
        refuses bodies still needed as evidence."""
        return self.ledger.submit(sign_envelope(payloads.ERASURE, self.erasure_payload(index, reason), [operator_key]))

    def erasure_payload(self, index: int, reason: str) -> bytes:
        """Erasure payload bytes for entry ``index``, with the facts replaying the consent state needs once the
        body is gone (read from the verified body; the ledger checks them too)."""
        (entry,), (pi,) = self.ledger.get_entries_with_map_proofs(index, index + 1)
        facts = ErasureFacts()
        if entry.envelope is not None:
            try:
                facts = erasure_facts(entry.envelope.payload_type, entry.envelope.payload, _ProvenKeys(self.ledger, index, pi))
            except InvalidInput as e:
                raise VerificationError(f"entry {index} does not hold a valid payload: {e}") from e
        return payloads.build_erasure(
            index=index, reason=reason, consent_id=facts.consent_id, map_key=facts.map_key, ends=facts.ends
        )

    def break_glass_queue(
        self, *, unreviewed_only: bool = False, page_size: int = 0, page_token: str = ""
    ) -> ReviewQueue:
        """The break-glass review queue: every event and review proven, each review checked to be an operator's
        review of that event. Which events are unreviewed, and that none is left out, is the server's word."""
        req = consent_pb2.ListBreakGlassReviewsRequest(
            unreviewed_only=unreviewed_only, page_size=page_size, page_token=page_token
        )
        resp = self.ledger.call(self._consent.ListBreakGlassReviews, req)
        cp = self.ledger.accept_checkpoint(resp.checkpoint.note)
        items: list[AccessEventView] = []
        after = _page_start(page_token) - 1
        for item in resp.items:
            v = self._verify(item.event, cp)
            if v.index <= after:
                raise VerificationError(f"the queue is not in increasing index order at entry {v.index}")
            after = v.index
            event = self._access_event(v)
            review = self._review_of(self._verify(item.review, cp), v, event) if item.HasField("review") else None
            if unreviewed_only and review is not None:
                raise VerificationError(f"asked for unreviewed events, got event {v.index} with a review")
            view = AccessEventView(v, event, review)
            if not view.break_glass:
                raise VerificationError(f"entry {v.index} in the review queue is not a break-glass access")
            items.append(view)
        return ReviewQueue(tuple(items), cp, resp.next_page_token)

    def _access_event(self, v: VerifiedEntry) -> payloads.AccessEventPayload | None:
        if v.envelope is None:
            return None
        p = _as_ledger_entry(v).payload
        if not isinstance(p, payloads.AccessEventPayload):
            raise VerificationError(f"entry {v.index} is not an access event")
        return p

    @staticmethod
    def _review_payload(v: VerifiedEntry) -> payloads.BreakGlassReviewPayload:
        if v.envelope is None:
            raise VerificationError(f"the review at {v.index} is withheld: a review's body is never erased")
        p = _as_ledger_entry(v).payload
        if not isinstance(p, payloads.BreakGlassReviewPayload):
            raise VerificationError(f"entry {v.index} is not a break-glass review")
        return p

    def _review_of(
        self, v: VerifiedEntry, event: VerifiedEntry, payload: payloads.AccessEventPayload | None
    ) -> ReviewView:
        """A verified review entry, checked to be an operator's BreakGlassReview of ``event``, a break-glass access."""
        p = self._review_payload(v)
        assert v.envelope is not None
        if p.event_index != event.index or v.index <= event.index:
            raise VerificationError(f"the review at {v.index} is not a review of event {event.index}")
        if not self.ledger.operator_keys.intersection(v.envelope.signers):
            raise VerificationError(f"the review at {v.index} is not signed by an operator key")
        if payload is not None and not payload.break_glass_access:
            raise VerificationError(f"the review at {v.index} reviews event {event.index}, which is not a break-glass access")
        return ReviewView(v, p)

    # -- patients --------------------------------------------------------------------------------------------

    def grant(
        self,
        patient_key: Ed25519PrivateKey,
        *,
        grantee: str,
        actions: Sequence[str],
        purposes: Sequence[str],
        data_classes: Sequence[str],
        sensitivity_labels: Sequence[str] = (),
        deny: bool = False,
        validity: Period | None = None,
        data_period: Period | None = None,
        supersedes: str | None = None,
        legal_basis: payloads.LegalBasis | None = None,
        for_patient: bytes | None = None,
    ) -> tuple[str, SubmitReceipt]:
        """Sign and submit a grant (or a DENY); returns (consent id, verified receipt). With ``for_patient``,
        ``patient_key`` is a delegate's key signing for that patient (the ledger refuses it unless a delegation
        of the patient in force lets the key grant)."""
        payload = payloads.build_grant(
            patient=for_patient or patient_key.public_key,
            grantee=grantee,
            decision=payloads.DENY if deny else payloads.PERMIT,
            actions=actions,
            purposes=purposes,
            data_classes=data_classes,
            sensitivity_labels=sensitivity_labels,
            validity=validity,
            data_period=data_period,
            supersedes=supersedes,
            legal_basis=legal_basis,
        )
        receipt = self.ledger.submit(sign_envelope(payloads.CONSENT_GRANT, payload, [patient_key]))
        return payloads.consent_id(payload), receipt

    def revoke(
        self, patient_key: Ed25519PrivateKey, consent_id: str, reason: str = "", *, for_patient: bytes | None = None
    ) -> SubmitReceipt:
        """Revoke a consent, or a delegation (by its id). With ``for_patient``, ``patient_key`` is a delegate's key
        (or, for an attested delegation, the attesting organisation's key)."""
        payload = payloads.build_revocation(
            patient=for_patient or patient_key.public_key, consent_id=consent_id, reason=reason
        )
        return self.ledger.submit(sign_envelope(payloads.CONSENT_REVOCATION, payload, [patient_key]))

    def delegate(
        self,
        signer_key: Ed25519PrivateKey,
        *,
        delegate: bytes,
        relationship: str,
        scope: Sequence[str],
        patient: bytes | None = None,
        validity: Period | None = None,
        majority_date_ms: int = 0,
        evidence_reference: str = "",
        attested_by: str = "",
    ) -> tuple[str, SubmitReceipt]:
        """Authorise ``delegate`` to sign for a patient; returns (delegation id, verified receipt). Signed by the
        patient (``patient`` defaults to the signer's key); or, with ``attested_by``, by a key of that registered
        organisation attesting a guardian for ``patient``."""
        payload = payloads.build_delegation(
            patient=patient or signer_key.public_key,
            delegate=delegate,
            relationship=relationship,
            scope=scope,
            validity=validity,
            majority_date_ms=majority_date_ms,
            evidence_reference=evidence_reference,
            attested_by=attested_by,
        )
        receipt = self.ledger.submit(sign_envelope(payloads.DELEGATION, payload, [signer_key]))
        return payloads.consent_id(payload), receipt

    def list_consents(self, patient: bytes, *, page_size: int = 0, page_token: str = "", time_ms: int = 0) -> ConsentListing:
        """A patient's consents and delegations with their states, every entry proven, every state re-computed,
        and every entry a delegate signed checked against the delegation the server gave with it."""
        req = consent_pb2.ListConsentsRequest(patient=patient, page_size=page_size, page_token=page_token, time_ms=time_ms)
        resp = self.ledger.call(self._consent.ListConsents, req)
        cp = self.ledger.accept_checkpoint(resp.checkpoint.note)
        self._check_listing_current(cp, time_ms, resp.time_ms)
        page = [self._verify(e, cp) for e in resp.entries]
        related = [self._verify(e, cp) for e in resp.related]
        erased = tuple(v for v in page if v.envelope is None)
        for v in erased:
            if v.leaf.payload_type not in (payloads.CONSENT_GRANT, payloads.CONSENT_REVOCATION):
                raise VerificationError(f"entry {v.index} is not a consent entry")
        # An entry that ends a kept grant is evidence of its state: the ledger never erases it before the grant.
        entries = {v.index: _as_ledger_entry(v) for v in (*page, *related) if v.envelope is not None}
        for e in entries.values():
            if getattr(e.payload, "patient", patient) != patient:
                raise VerificationError(f"entry {e.index} belongs to another patient")
        states = consent_states(entries.values(), resp.time_ms)
        book = delegation_book(entries.values())
        revoked_by = {
            e.payload.consent_id: e.index
            for e in sorted(entries.values(), key=lambda e: -e.index)
            if isinstance(e.payload, payloads.ConsentRevocationPayload)
        }
        claimed = {s.consent_id: s for s in resp.states}
        views, revocations, delegations = [], [], []
        revocation_signers: dict[int, SignedBy] = {}
        for v in page:
            if v.envelope is None:
                continue
            e = entries[v.index]
            if isinstance(e.payload, payloads.ConsentGrantPayload):
                s = claimed.get(e.consent_id)
                if s is None or s.state != states.get(e.consent_id):
                    raise VerificationError(f"the server's state for consent {e.consent_id} does not follow from the entries")
                views.append(
                    ConsentView(
                        e.consent_id, v, e.payload, s.state, s.ended_by_index if s.ended else None, signed_by(e, book)
                    )
                )
            elif isinstance(e.payload, payloads.DelegationPayload):
                d = book.by_id.get(e.consent_id)
                if d is None:
                    raise VerificationError(f"entry {e.index} is a delegation not signed by whom it must be")
                state = delegation_state(d, resp.time_ms)
                delegations.append(
                    DelegationView(e.consent_id, v, e.payload, state, revoked_by.get(e.consent_id) if state == "revoked" else None)
                )
            elif isinstance(e.payload, payloads.ConsentRevocationPayload):
                if e.payload.consent_id in book.by_id:
                    d = book.by_id[e.payload.consent_id]
                    if d.revoked_ms is None:
                        raise VerificationError(f"entry {e.index} revokes a delegation but may not")
                else:
                    by = signed_by(e, book)
                    if by is not None:
                        revocation_signers[e.index] = by
                revocations.append(v)
            else:
                raise VerificationError(f"entry {e.index} does not belong in a patient's consent listing")
        return ConsentListing(
            tuple(views),
            tuple(revocations),
            cp,
            resp.next_page_token,
            delegations=tuple(delegations),
            revocation_signers=revocation_signers,
            erased=erased,
        )

    def access_events(self, patient: bytes, *, page_size: int = 0, page_token: str = "") -> tuple[list[tuple[VerifiedEntry, payloads.AccessEventPayload]], str]:
        """Who asked about a patient: verified AccessEvent entries (erased ones left out), and the next page token.
        See list_access_events for the review state of break-glass accesses."""
        listing = self.list_access_events(patient, page_size=page_size, page_token=page_token)
        return [(v.entry, v.event) for v in listing.events if v.event is not None], listing.next_page_token

    def list_access_events(self, patient: bytes, *, page_size: int = 0, page_token: str = "") -> AccessEventListing:
        """Who asked about a patient, each event proven and about this patient, with the review of each break-glass
        access that has one (proven an operator's review of that event). An event whose body was erased comes with
        its verified Erasure record and no payload."""
        req = consent_pb2.ListAccessEventsRequest(patient=patient, page_size=page_size, page_token=page_token)
        resp = self.ledger.call(self._consent.ListAccessEvents, req)
        cp = self.ledger.accept_checkpoint(resp.checkpoint.note)
        events: dict[int, tuple[VerifiedEntry, payloads.AccessEventPayload | None]] = {}
        for e in resp.entries:
            v = self._verify(e, cp)
            p = self._access_event(v)
            if v.envelope is None and v.leaf.payload_type != payloads.ACCESS_EVENT:
                raise VerificationError(f"entry {v.index} is not an access event")
            if p is not None and p.patient != patient:
                raise VerificationError(f"entry {v.index} is not an access event about this patient")
            events[v.index] = (v, p)
        reviews: dict[int, ReviewView] = {}
        for e in resp.reviews:
            v = self._verify(e, cp)
            event_index = self._review_payload(v).event_index
            if event_index not in events:
                raise VerificationError(f"the review at {v.index} is not about an event on the page")
            if event_index in reviews:
                raise VerificationError(f"event {event_index} comes with two reviews")
            reviews[event_index] = self._review_of(v, *events[event_index])
        views = tuple(AccessEventView(v, p, reviews.get(i)) for i, (v, p) in events.items())
        return AccessEventListing(views, cp, resp.next_page_token)

    def watch_patient(self, patient: bytes, *, timeout: float | None = None) -> Iterator[VerifiedEntry]:
        """New entries about a patient as they are integrated, each proven against its batch's checkpoint."""
        for item in self.ledger.stream(self._consent.WatchPatient, consent_pb2.WatchPatientRequest(patient=patient), timeout):
            v = self._verify_pushed(item)
            if v.envelope is None:
                raise VerificationError(f"pushed entry {v.index} comes without its body")
            if getattr(_as_ledger_entry(v).payload, "patient", None) != patient:
                raise VerificationError(f"pushed entry {v.index} is not about this patient")
            yield v

    def watch_revocations(self, *, timeout: float | None = None) -> Iterator[VerifiedEntry]:
        """Revocations of consents granted to this organisation, as they are integrated."""
        for item in self.ledger.stream(self._consent.WatchRevocations, consent_pb2.WatchRevocationsRequest(), timeout):
            v = self._verify_pushed(item)
            if not isinstance(_as_ledger_entry(v).payload, payloads.ConsentRevocationPayload):
                raise VerificationError(f"pushed entry {v.index} is not a revocation")
            yield v

    def _verify_pushed(self, item: consent_pb2.WatchResponse) -> VerifiedEntry:
        cp = self.ledger.accept_checkpoint(item.checkpoint.note)
        return self._verify(item.entry, cp)

    def _verify(self, e: access_pb2.EvidenceEntry, cp: Checkpoint) -> VerifiedEntry:
        """An entry proven in ``cp`` whose body hashes to its commitment, or, when the server says the body was
        erased, comes with its verified Erasure record."""
        v = verify_entry(e.entry.index, e.entry.leaf, _body(e.entry), e.inclusion_proof, cp)
        return self.ledger.verify_erasure(v, e.entry.erased_by_index)

    def _verify_evidence(self, items: Sequence[access_pb2.EvidenceEntry], cp: Checkpoint) -> list[VerifiedEntry]:
        """Verify CheckAccess evidence entries in order. An entry's inclusion proof may go on with the tail of the
        whole proof of an entry listed before it (access.proto, inclusion_proof_tail): the whole proof is rebuilt
        and verified like any other; a tail taken from an entry missing from the evidence makes it incomplete."""
        listed = {e.entry.index for e in items}
        whole: dict[int, tuple[bytes, ...]] = {}
        out = []
        for e in items:
            proof = list(e.inclusion_proof)
            tail, source = e.inclusion_proof_tail, e.inclusion_proof_tail_from
            if tail:
                base = whole.get(source)
                if base is None:
                    if source not in listed:
                        raise IncompleteEvidence(
                            f"the inclusion proof of entry {e.entry.index} goes on with that of entry {source}, which "
                            "is missing from the evidence"
                        )
                    raise VerificationError(f"the inclusion proof of entry {e.entry.index} goes on with that of a later entry")
                if tail > len(base):
                    raise VerificationError(f"the inclusion proof of entry {e.entry.index} takes more hashes than entry {source}'s has")
                proof.extend(base[len(base) - tail :])
            v = self.ledger.verify_erasure(
                verify_entry(e.entry.index, e.entry.leaf, _body(e.entry), proof, cp), e.entry.erased_by_index
            )
            whole.setdefault(v.index, v.proof)
            out.append(v)
        return out

    # -- organisations ----------------------------------------------------------------------------------------

    def check_access(
        self,
        patient: bytes,
        *,
        action: str,
        purpose: str,
        data: Sequence[DataItem],
        data_period: Period = Period(),
        time_ms: int = 0,
        break_glass: bool = False,
        break_glass_reason: str = "",
        record: bool = False,
    ) -> VerifiedDecision:
        """Ask whether this organisation may do ``action`` for ``purpose`` on ``data`` of ``patient``.

        Verifies the checkpoint, every evidence entry (inclusion, body, signatures), that the question answered
        is the one asked, re-runs the decision on the evidence, and checks the signed receipt. Raises
        DecisionMismatch when the server's decision differs from the evidence's, VerificationError otherwise.
        """
        req = access_pb2.CheckAccessRequest(
            patient=patient,
            action=action,
            purpose=purpose,
            data=[payloads.data_item_to_pb(d) for d in data],
            data_period=_pb_period(data_period),
            time_ms=time_ms,
            break_glass=break_glass,
            break_glass_reason=break_glass_reason,
            record_access_event=record,
        )
        resp = self.ledger.call(self._access.CheckAccess, req)
        return self.verify_access(req, resp)

    def verify_access(
        self, req: access_pb2.CheckAccessRequest, resp: access_pb2.CheckAccessResponse
    ) -> VerifiedDecision:
        """Verify a CheckAccess answer to ``req`` (see check_access); usable on a stored response too. With a
        witness policy, its checkpoint is accepted only on the witnessed checkpoint served with it (or its own
        cosignatures) and the consistency proof between them."""
        witnessed = None
        w_proof: tuple[bytes, ...] = ()
        if self.ledger.witness_policy is not None:
            w_note = bytes(resp.witnessed_checkpoint.note) if resp.HasField("witnessed_checkpoint") else b""
            w_proof = tuple(bytes(h) for h in resp.witnessed_consistency)
            cp, witnessed = self.ledger.accept_witnessed(resp.checkpoint.note, w_note, w_proof)
        else:
            cp = self.ledger.accept_checkpoint(resp.checkpoint.note)
        receipt = open_receipt(resp.receipt, self.ledger.log_public_key)
        if receipt.checkpoint_note != resp.checkpoint.note:
            raise VerificationError("the receipt is bound to another checkpoint than the one returned")
        decision = receipt.decision
        # The server sends the decision's canonical bytes; anything else differs from what the receipt signs.
        if resp.decision.SerializeToString(deterministic=True) != encode_decision(decision):
            raise VerificationError("the decision in the response differs from the signed receipt's")
        r = decision.request
        asked = (
            req.patient,
            req.action,
            req.purpose,
            tuple(payloads.data_item_from_pb(d) for d in req.data),
            Period(start_ms=req.data_period.start_ms, end_ms=req.data_period.end_ms),
            req.break_glass,
            req.break_glass_reason,
        )
        got = (r.patient, r.action, r.purpose, r.data, r.data_period, r.break_glass, r.break_glass_reason)
        if asked != got or (req.time_ms and r.time_ms != req.time_ms):
            raise VerificationError("the decision answers another question than the one asked")
        if self.ledger.party_id and r.requester_id != self.ledger.party_id:
            raise VerificationError(f"the decision was made for {r.requester_id}, not for {self.ledger.party_id}")
        if self._policy is not None and decision.policy != self._policy:
            raise VerificationError("the decision was made under another policy than the pinned one")
        evidence = self._verify_evidence(resp.evidence, cp)
        entries = [_as_ledger_entry(v) for v in evidence]
        self._check_registration(evidence, entries, r.requester_id, r.requester_roles)
        grants, sc = self._check_complete(resp, evidence, entries, r)
        recomputed = decide(grants, r, decision.policy)
        if recomputed != decision:  # frozen dataclasses of tuples: equal exactly when their encodings are
            raise DecisionMismatch(decision, recomputed)
        self._check_made_for_now(decision)
        event = None
        if decision.break_glass_until_ms and not resp.access_event_recorded:
            raise VerificationError("a break-glass permit must come with the access event the ledger recorded for it")
        if req.record_access_event and not resp.access_event_recorded:
            raise MissingAccessEvent(bytes(resp.receipt))
        if resp.access_event_recorded:
            event = self._verify_recorded_event(resp.access_event_index, resp.receipt, decision)
        assert isinstance(sc.payload, payloads.StateCommitPayload)
        self.ledger.accept_state_commit(sc.index, sc.payload.batch_time_ms)  # verified: the mark moves forward
        return VerifiedDecision(
            decision,
            tuple(evidence),
            cp,
            bytes(resp.checkpoint.note),
            bytes(resp.receipt),
            event,
            sc.index,
            sc.payload.map_root,
            sc.payload.batch_time_ms,
            witnessed,
            w_proof,
        )

    def _check_complete(
        self,
        resp: access_pb2.CheckAccessResponse,
        evidence: Sequence[VerifiedEntry],
        entries: Sequence[LedgerEntry],
        r: AccessRequest,
    ) -> tuple[list[LedgerEntry], LedgerEntry]:
        """Check the evidence is exactly the in-force set, per selector, that the signed consent state commits to
        (docs/design.md section 5), and fresh enough. Returns the in-force grants and the StateCommit entry."""
        by_index = {v.index: (v, e) for v, e in zip(evidence, entries)}
        sc_entry = by_index.get(resp.state_commit_index)
        if sc_entry is None or not isinstance(sc_entry[1].payload, payloads.StateCommitPayload):
            raise IncompleteEvidence("the evidence holds no state commit")
        v, sc = sc_entry
        assert isinstance(sc.payload, payloads.StateCommitPayload) and v.envelope is not None
        if self.ledger.log_public_key not in v.envelope.signers:
            raise VerificationError("the state commit is not signed by the log's key")
        self._check_state_commit(v, bytes(resp.checkpoint.note), sc.payload.batch_time_ms)
        age = self._clock_ms() - sc.payload.batch_time_ms
        if age > self._max_state_age_ms:
            raise StaleEvidence(
                f"the consent state is {age / 1000:g} s old (at most {self._max_state_age_ms / 1000:g} s accepted)"
            )
        if r.time_ms < sc.payload.batch_time_ms:
            raise VerificationError("the decision's time is before the consent state it rests on")
        selectors = grantee_selectors(r.requester_id, r.requester_roles)
        proofs = {p.selector: p for p in resp.selector_proofs}
        if set(proofs) != set(selectors) or len(proofs) != len(resp.selector_proofs):
            raise IncompleteEvidence(f"expected one map proof for each of {list(selectors)}")
        grants: dict[str, list[LedgerEntry]] = {sel: [] for sel in selectors}
        support: list[LedgerEntry] = []
        for v, e in zip(evidence, entries):
            p = e.payload
            if isinstance(p, payloads.ConsentGrantPayload):
                if p.patient != r.patient or p.grantee not in grants or e.index >= sc.index:
                    raise IncompleteEvidence(f"entry {e.index} is not an in-force grant for the requester")
                if len(grants[p.grantee]) >= MAX_IN_FORCE:
                    raise IncompleteEvidence(
                        f"the evidence holds more than {MAX_IN_FORCE} grants for {p.grantee}: the ledger keeps at most "
                        f"{MAX_IN_FORCE} in force per patient and selector"
                    )
                grants[p.grantee].append(e)
            elif isinstance(p, payloads.StateCommitPayload):
                if e.index != sc.index:
                    raise IncompleteEvidence(f"entry {e.index} is a second state commit in the evidence")
            elif isinstance(p, payloads.DelegationPayload):
                if p.patient != r.patient or e.index >= sc.index:
                    raise IncompleteEvidence(f"entry {e.index} is not a delegation of this patient")
                support.append(e)
            elif isinstance(p, payloads.PartyRegistrationPayload):
                assert v.envelope is not None
                if not self.ledger.operator_keys.intersection(v.envelope.signers):
                    raise VerificationError(f"the registration at {e.index} is not signed by an operator key")
                support.append(e)
            else:
                raise IncompleteEvidence(f"entry {e.index} ({type(p).__name__}) does not belong in the evidence")
        # A grant a delegate signed is in force only with the delegation that let it sign (core.delegation); the
        # server puts that delegation in the evidence, and without it the evidence is incomplete.
        book = delegation_book(support)
        for e in (e for mine in grants.values() for e in mine):
            try:
                signed_by(e, book)
            except VerificationError:
                raise IncompleteEvidence(
                    f"grant {e.index} is signed by a delegate, and the evidence holds no delegation in force that "
                    "let it sign"
                ) from None
        leaf_hashes = {v.index: hash_leaf(v.leaf_bytes) for v in evidence}
        # Map keys are VRF outputs: each proof's key is taken only once its pi verifies for the expected alpha.
        vrf_key = self.ledger.accept_map_vrf_key(sc.payload.map_vrf_public_key)
        self._check_party_key(resp, evidence, entries, r.requester_id, sc.payload.map_root, vrf_key, sc.index)
        for sel in selectors:
            sp = proofs[sel]
            key = self.ledger.map_keys.key(vrf_key, vrf.consent_alpha(r.patient, sel), bytes(sp.vrf_proof))
            mine = grants[sel]
            if len({e.consent_id for e in mine}) != len(mine):
                raise IncompleteEvidence(f"the evidence for {sel} lists a consent twice")
            got = smt.value_hash((e.index, leaf_hashes[e.index]) for e in mine) if mine else None
            if sp.leaf_derived:
                # The walk ends at this key's own pair, whose value must be the evidence's set: derive the leaf.
                if sp.leaf_key or sp.leaf_value_hash or got is None:
                    raise IncompleteEvidence(f"the map proof for {sel} ends at its own pair, but the evidence holds no grant for it")
                try:
                    proven = smt.verify_map_proof(sc.payload.map_root, key, smt.MapProof(tuple(sp.siblings), (key, got)))
                except VerificationError:
                    raise IncompleteEvidence(
                        f"the evidence for {sel} with its map proof does not give the consent state's map root: the "
                        "evidence is not the in-force set the state commits to (or the proof was altered)"
                    ) from None
            else:
                leaf = (bytes(sp.leaf_key), bytes(sp.leaf_value_hash)) if sp.leaf_key else None
                proven = smt.verify_map_proof(sc.payload.map_root, key, smt.MapProof(tuple(sp.siblings), leaf))
            if got != proven:
                raise IncompleteEvidence(
                    f"the evidence for {sel} is not the in-force set the consent state commits to"
                )
        return [*(e for sel in selectors for e in grants[sel]), *support], sc

    def _check_made_for_now(self, decision: Decision) -> None:
        """Decisions are made for now (docs/design.md section 4): the decision's time within the skew of this client's clock,
        and its ``valid_until`` after it. Raises DecisionTimeMismatch, ExpiredDecision."""
        now = self._clock_ms()
        if not is_within_skew(decision.request.time_ms, now, self._max_skew_ms):
            raise DecisionTimeMismatch(decision.request.time_ms, now, self._max_skew_ms)
        if decision.valid_until_ms <= now:
            raise ExpiredDecision(decision.valid_until_ms, now)

    def _check_state_commit(self, v: VerifiedEntry, note: bytes, batch_time_ms: int) -> None:
        """The evidence's StateCommit must be the one its checkpoint names, not dated after this client's clock plus
        the skew, and not older than the newest one this client verified (no rollback). Raises
        StateCommitNotNamed, StateFromTheFuture, StateRollback."""
        if v.checkpoint.consent_state != v.index:
            raise StateCommitNotNamed(v.index, v.checkpoint.consent_state, note)
        now = self._clock_ms()
        if is_ahead(batch_time_ms, now, self._max_skew_ms):
            raise StateFromTheFuture(v.index, batch_time_ms, now, self._max_skew_ms)
        self.ledger.check_no_rollback(v.index, batch_time_ms)

    def _check_listing_current(self, cp: Checkpoint, asked_ms: int, answered_ms: int) -> None:
        """A listing is computed for the time asked (0: now, within the skew of this client's clock), at a checkpoint
        whose consent state is not older than the newest StateCommit this client verified. Raises
        VerificationError, DecisionTimeMismatch, StateRollback."""
        if asked_ms and answered_ms != asked_ms:
            raise VerificationError(f"asked for the states at {asked_ms}, got them at {answered_ms}")
        now = self._clock_ms()
        if not asked_ms and not is_within_skew(answered_ms, now, self._max_skew_ms):
            raise DecisionTimeMismatch(answered_ms, now, self._max_skew_ms)
        self.ledger.check_no_rollback(-1 if cp.consent_state is None else cp.consent_state)
    def _check_party_key(
        self,
        resp: access_pb2.CheckAccessResponse,
        evidence: Sequence[VerifiedEntry],
        entries: Sequence[LedgerEntry],
        party_id: str,
        map_root: bytes,
        vrf_key: bytes,
        sc_index: int,
    ) -> None:
        """The requester's registration in the evidence (the latest there, checked by _check_registration) must be
        the one its party key holds in the consent state: its latest. Raises StaleRegistration."""
        pp = resp.party_proof
        if pp.party_id != party_id:
            raise IncompleteEvidence(f"the evidence holds no map proof of the party key of {party_id}")
        key = self.ledger.map_keys.key(vrf_key, vrf.party_alpha(party_id), bytes(pp.vrf_proof))
        regs = [
            (v, e)
            for v, e in zip(evidence, entries)
            if isinstance(e.payload, payloads.PartyRegistrationPayload) and e.payload.party_id == party_id
        ]
        v, reg = max(regs, key=lambda ve: ve[1].index)
        expected = smt.value_hash([(reg.index, hash_leaf(v.leaf_bytes))])
        if pp.leaf_derived:
            # The walk ends at the party key's own pair, whose value must be this registration's: derive the leaf.
            if pp.leaf_key or pp.leaf_value_hash:
                raise VerificationError("the party key's map proof both gives and derives its leaf")
            try:
                proven = smt.verify_map_proof(map_root, key, smt.MapProof(tuple(pp.siblings), (key, expected)))
            except VerificationError:
                raise StaleRegistration(party_id, reg.index) from None
        else:
            leaf = (bytes(pp.leaf_key), bytes(pp.leaf_value_hash)) if pp.leaf_key else None
            proven = smt.verify_map_proof(map_root, key, smt.MapProof(tuple(pp.siblings), leaf))
        if reg.index >= sc_index or proven != expected:
            raise StaleRegistration(party_id, reg.index)

    def _check_registration(
        self, evidence: Sequence[VerifiedEntry], entries: Sequence[LedgerEntry], party_id: str, roles: Sequence[str]
    ) -> None:
        """The requester's roles must be those of its latest registration in the evidence, signed by an operator."""
        regs = [
            (v, e)
            for v, e in zip(evidence, entries)
            if isinstance(e.payload, payloads.PartyRegistrationPayload) and e.payload.party_id == party_id
        ]
        if not regs:
            raise VerificationError(f"the evidence holds no registration of {party_id}")
        v, reg = max(regs, key=lambda ve: ve[1].index)
        assert isinstance(reg.payload, payloads.PartyRegistrationPayload) and v.envelope is not None
        if not self.ledger.operator_keys.intersection(v.envelope.signers):
            raise VerificationError(f"the registration of {party_id} is not signed by an operator key")
        if tuple(sorted(set(reg.payload.roles))) != tuple(sorted(roles)):
            raise VerificationError(f"the decision used roles {list(roles)}, the registration gives {list(reg.payload.roles)}")

    def _verify_recorded_event(self, index: int, receipt: bytes, decision: Decision) -> int:
        v = self.ledger.get_entry(index)
        p = _as_ledger_entry(v).payload
        if not isinstance(p, payloads.AccessEventPayload) or p.receipt_sha256 != receipt_sha256(receipt):
            raise VerificationError(f"entry {index} is not the access event for this decision")
        assert v.envelope is not None
        if self.ledger.log_public_key not in v.envelope.signers or p.decision != decision.decision:
            raise VerificationError(f"the access event at {index} does not record this decision")
        return index

    def record_access(
        self,
        org_key: Ed25519PrivateKey,
        decision: VerifiedDecision,
        *,
        accessed_at_ms: int | None = None,
    ) -> SubmitReceipt:
        """Record, signed by the organisation's key, that it accessed data relying on a verified decision."""
        d = decision.decision
        payload = access_event_for(d, decision.receipt, data=d.permitted_data or d.request.data, accessed_at_ms=accessed_at_ms)
        return self.ledger.submit(sign_envelope(payloads.ACCESS_EVENT, payload, [org_key]))

