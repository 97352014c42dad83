"""Who may call what (docs/design.md section 7): the kinds of caller, and ONE table of rules for every RPC.

Callers are authenticated at the edge (server/auth.py): an organisation, the operator or an auditor by its TLS
client certificate (or, on a development server without TLS, by a header), a patient or a patient's delegate
by signing the request with its key. Everything else is anonymous. Then `Authorizer.check` applies the rule the
table names for the method; a method missing from the table is refused.

The rules:
- PUBLIC: anyone, anonymous included (checkpoints and proofs: the tree is shareable with witnesses).
- SUBMIT: patients, registered organisations and the operator; an entry's own signatures then decide what it
  may say (app/consents.py). Party registrations, erasures and break-glass reviews: the operator only (and
  signed by an operator key).
- READ_ENTRY: auditors and the operator read every entry. Party registrations, state commits and erasure records
  are public evidence. A patient reads the entries about them (and, as a delegate, the delegation naming it); an
  organisation reads its own access events, and a patient's grants and revocations that concern it (by id,
  role or "any") only while an in-force permit of that patient lets it. Erased bodies: only the leaf is
  served, which is public.
- READ_ALL: auditors and the operator (whole ranges of the log).
- PATIENT_OWN: the patient named in the request (or its in-force delegate), auditors and the operator.
- ORGANISATION: registered organisations, acting only as themselves (the requester is never taken from the
  request: it is the authenticated caller).
- REVIEW: the operator (privacy officer) and auditors.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from consent_ledger.app.consents import ConsentLedger
from consent_ledger.app.errors import PermissionDenied, WouldBlock
from consent_ledger.core import payloads
from consent_ledger.core.envelope import parse_envelope
from consent_ledger.core.errors import ConsentLedgerError


class Kind(enum.Enum):
    ANONYMOUS = "anonymous"
    PATIENT = "patient"
    ORGANISATION = "organisation"
    UNREGISTERED = "unregistered organisation"
    AUDITOR = "auditor"
    OPERATOR = "operator"


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: its kind, its name (organisation, operator, auditor), its key (patient or
    delegate) and, for an organisation, the roles it is registered with."""

    kind: Kind
    name: str = ""
    key: bytes = b""
    roles: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.kind is Kind.PATIENT:
            return f"patient {self.key.hex()[:16]}…"
        return f"{self.kind.value} {self.name}".strip()


ANONYMOUS = Caller(Kind.ANONYMOUS)


class Rule(enum.Enum):
    PUBLIC = "anyone"
    SUBMIT = "patients, registered organisations, the operator"
    READ_ENTRY = "whoever the entry concerns, auditors, the operator"
    READ_ALL = "auditors and the operator"
    PATIENT_OWN = "the patient (or its delegate), auditors, the operator"
    ORGANISATION = "registered organisations, as themselves"
    REVIEW = "the operator and auditors"


_LOG = "/consent_ledger.v1.LogService/"
_ACCESS = "/consent_ledger.v1.AccessService/"
_CONSENT = "/consent_ledger.v1.ConsentService/"

# THE table. Every RPC of the API is here; tests/test_authorization.py walks it against every kind of caller.
RULES: Mapping[str, Rule] = {
    _LOG + "Submit": Rule.SUBMIT,
    _LOG + "GetEntry": Rule.READ_ENTRY,
    _LOG + "GetEntries": Rule.READ_ALL,
    _LOG + "GetCheckpoint": Rule.PUBLIC,
    _LOG + "GetInclusionProof": Rule.PUBLIC,
    _LOG + "GetConsistencyProof": Rule.PUBLIC,
    _ACCESS + "CheckAccess": Rule.ORGANISATION,
    _CONSENT + "ListConsents": Rule.PATIENT_OWN,
    _CONSENT + "ListAccessEvents": Rule.PATIENT_OWN,
    _CONSENT + "WatchPatient": Rule.PATIENT_OWN,
    _CONSENT + "WatchRevocations": Rule.ORGANISATION,
    _CONSENT + "ListBreakGlassReviews": Rule.REVIEW,
}
# Standard services: health checks and reflection (the API's shape is public).
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

PRIVILEGED = frozenset({Kind.AUDITOR, Kind.OPERATOR})
_SUBMITTERS = frozenset({Kind.PATIENT, Kind.ORGANISATION, Kind.OPERATOR})
# Entries only the operator submits (their signatures must be an operator key's as well: app/consents.py).
OPERATOR_PAYLOADS = frozenset({payloads.PARTY_REGISTRATION, payloads.ERASURE, payloads.BREAK_GLASS_REVIEW})
# Entries whose bodies hold no health information: the evidence decisions carry, and the operator's erasure records
# (every client that meets an erased body checks the record the server names).
_PUBLIC_ENTRIES = (payloads.PartyRegistrationPayload, payloads.StateCommitPayload, payloads.ErasurePayload)

# Is `key` an in-force delegate of `patient` at t (any scope)?
DelegateCheck = Callable[[bytes, bytes, int], bool]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Authorizer:
    def __init__(
        self,
        consents: ConsentLedger,
        *,
        operators: frozenset[str] = frozenset(),
        auditors: frozenset[str] = frozenset(),
        delegate_in_force: DelegateCheck | None = None,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self._consents = consents
        self._operators = operators
        self._auditors = auditors
        self._delegate = delegate_in_force or consents.delegate_in_force
        self._clock_ms = clock_ms

    # -- who is calling ---------------------------------------------------------------------------------

    def named(self, name: str, *, io: bool = True) -> Caller:
        """The caller a certificate (or development header) names: operator, auditor or organisation. With
        ``io=False`` it answers from memory or raises WouldBlock."""
        if name in self._operators:
            return Caller(Kind.OPERATOR, name)
        if name in self._auditors:
            return Caller(Kind.AUDITOR, name)
        try:
            party = self._consents.registered(name, io=io)
        except PermissionDenied:
            return Caller(Kind.UNREGISTERED, name)
        return Caller(Kind.ORGANISATION, name, roles=party.roles)

    # -- may it? ----------------------------------------------------------------------------------------

    def check(self, caller: Caller, method: str, request: object, *, io: bool = True) -> None:
        """Raise PermissionDenied unless the table lets ``caller`` make this call. With ``io=False`` it decides
        from memory or raises WouldBlock (most calls need no storage: the caller's kind decides)."""
        if method.startswith(PUBLIC_PREFIXES):
            return
        rule = RULES.get(method)
        if rule is None:
            raise PermissionDenied(f"{method} is not in the authorization table")
        if not self.allowed(rule, caller, request, io=io):
            message = f"{caller.describe()} may not call {method.rsplit('/', 1)[-1]} ({rule.value})"
            if caller.kind is Kind.ANONYMOUS:
                message += (
                    ": the call carried no identity (a client certificate, or the party header on a development "
                    "server, or a request signed with the patient's key)"
                )
            raise PermissionDenied(message)

    def allowed(self, rule: Rule, caller: Caller, request: object, *, io: bool = True) -> bool:
        kind = caller.kind
        if rule is Rule.PUBLIC:
            return True
        if rule is Rule.SUBMIT:
            return kind in _SUBMITTERS and (kind is Kind.OPERATOR or not self._operator_only(request))
        if rule in (Rule.READ_ALL, Rule.REVIEW):
            return kind in PRIVILEGED
        if rule is Rule.ORGANISATION:
            return kind is Kind.ORGANISATION
        if rule is Rule.PATIENT_OWN:
            return kind in PRIVILEGED or (
                kind is Kind.PATIENT and self._speaks_for(caller, getattr(request, "patient"), io=io)
            )
        if rule is Rule.READ_ENTRY:
            if kind in PRIVILEGED:
                return True
            if not io:
                raise WouldBlock("who may read an entry depends on the entry")
            return self._may_read(caller, int(getattr(request, "index")))
        raise AssertionError(rule)

    @staticmethod
    def _operator_only(request: object) -> bool:
        try:
            env = parse_envelope(bytes(getattr(request, "envelope")))
        except ConsentLedgerError:
            return False  # malformed: the handler refuses it with INVALID_ARGUMENT
        return env.payload_type in OPERATOR_PAYLOADS

    def _speaks_for(self, caller: Caller, patient: bytes, *, io: bool = True) -> bool:
        """The caller's key is the patient's, or an in-force delegate's of that patient."""
        patient = bytes(patient)
        if caller.key == patient or len(patient) != 32:
            return caller.key == patient
        if not io:
            raise WouldBlock("a delegation is read from storage")
        return self._delegate(patient, caller.key, self._clock_ms())

    def _may_read(self, caller: Caller, index: int) -> bool:
        if caller.kind not in (Kind.PATIENT, Kind.ORGANISATION, Kind.ANONYMOUS, Kind.UNREGISTERED):
            return False
        p = self._consents.entry_payload(index)
        if p is None:  # no such entry (the handler says so) or an erased body (only the public leaf is served)
            return True
        if isinstance(p, _PUBLIC_ENTRIES):
            return True
        patient = getattr(p, "patient", None)
        if caller.kind is Kind.PATIENT:
            if isinstance(p, payloads.DelegationPayload) and p.delegate == caller.key:
                return True
            return patient is not None and self._speaks_for(caller, patient)
        if caller.kind is Kind.ORGANISATION and patient is not None:
            if isinstance(p, payloads.AccessEventPayload):
                return p.party_id == caller.name
            return self._consents.concerns(p, caller.name, caller.roles) and self._consents.permit_in_force(
                patient, caller.name, caller.roles, self._clock_ms()
            )
        return False
