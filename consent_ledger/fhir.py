"""FHIR R4 and R5 `Consent` resources to and from consent grant terms (docs/fhir.md has the mapping table).

Pure: no I/O. A Consent (JSON) is parsed and validated with `fhir.resources` (R5: `fhir.resources.consent`; R4:
`fhir.resources.R4B.consent`, since fhir.resources 8 ships no R4 package and Consent did not change between 4.0.1
and 4.3.0), then mapped onto the one flat rule a ConsentGrant holds. What the grant cannot express is refused with
`FhirRefused`, whose message names the element and says why; nothing is dropped silently that would change who
may do what. Export builds a Consent from a grant payload and validates it with the same models before returning it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from consent_ledger.core import payloads, vocab
from consent_ledger.core.errors import InvalidInput

__all__ = [
    "R4",
    "R5",
    "VERSIONS",
    "FhirRefused",
    "GrantTerms",
    "ImportedConsent",
    "LogPointer",
    "consent_to_fhir",
    "detect_version",
    "parse_consent",
]

R4 = "R4"
R5 = "R5"
VERSIONS = (R4, R5)

# Code systems the mapping reads and writes.
CONSENT_ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
LOINC = "http://loinc.org"
RECIPIENT = "PRCP"  # v3-ParticipationType: information recipient, the one a grant names

# The ledger's own identifier systems and extensions.
NS = "urn:consent-ledger:"
SYS_PATIENT_KEY = NS + "patient-key"  # hex Ed25519 public key of the patient
SYS_PARTY = NS + "party"  # a registered organisation's party id
SYS_ROLE = NS + "role"  # an organisation role (hospital, insurer, ...)
SYS_CONSENT_ID = NS + "consent-id"  # the grant's consent id (SHA-256 of its payload)
SYS_LEGAL_BASIS = NS + "legal-basis"
EXT_DATA_CLASS = NS + "fhir:data-class"  # valueCode: one of the ledger's data classes
EXT_SUPERSEDES = NS + "fhir:supersedes"  # valueString: the consent id this grant supersedes
EXT_LOG_ENTRY = NS + "fhir:log-entry"  # where the grant is in the log, and the proof
POLICY_URI = NS + "policy"  # R4 needs a policy or policyRule (ppc-1); written when there is no legal basis

_PARTY_REF = re.compile(r"Organization/([A-Za-z0-9.-]{1,64})")
_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
_ALL_ACTIONS = tuple(vocab.ACTIONS)
_TOP_PURPOSES = tuple(sorted(c.code for c in vocab.PURPOSES.values() if c.parent is None))


class FhirRefused(InvalidInput):
    """A Consent the ledger cannot take as a grant, or not a valid FHIR Consent: the message says which element
    and why."""


@dataclass(frozen=True)
class GrantTerms:
    """Everything of a ConsentGrant payload that a Consent says (the patient, time and nonce come from signing)."""

    grantee: str
    decision: str
    actions: tuple[str, ...]
    purposes: tuple[str, ...]
    data_classes: tuple[str, ...]
    sensitivity_labels: tuple[str, ...] = ()
    data_period: payloads.Period = field(default_factory=payloads.Period)
    validity: payloads.Period = field(default_factory=payloads.Period)
    supersedes: str | None = None
    legal_basis: payloads.LegalBasis | None = None

    @classmethod
    def of(cls, grant: payloads.ConsentGrantPayload) -> GrantTerms:
        return cls(
            grantee=grant.grantee,
            decision=grant.decision,
            actions=grant.actions,
            purposes=grant.purposes,
            data_classes=grant.data_classes,
            sensitivity_labels=grant.sensitivity_labels,
            data_period=grant.data_period,
            validity=grant.validity,
            supersedes=grant.supersedes,
            legal_basis=grant.legal_basis,
        )

    def build(self, patient: bytes, *, issued_at_ms: int | None = None, nonce: bytes | None = None) -> bytes:
        """The grant payload bytes for this patient (validated by core.payloads)."""
        return payloads.build_grant(
            patient=patient,
            grantee=self.grantee,
            decision=self.decision,
            actions=self.actions,
            purposes=self.purposes,
            data_classes=self.data_classes,
            sensitivity_labels=self.sensitivity_labels,
            data_period=None if self.data_period.unbounded else self.data_period,
            validity=None if self.validity.unbounded else self.validity,
            supersedes=self.supersedes,
            legal_basis=self.legal_basis,
            issued_at_ms=issued_at_ms,
            nonce=nonce,
        )


@dataclass(frozen=True)
class ImportedConsent:
    """A Consent mapped onto grant terms. ``patient_key`` is the key the Consent names (identifier system
    urn:consent-ledger:patient-key), None when it names the patient only by a reference."""

    version: str
    terms: GrantTerms
    patient_key: bytes | None
    resource_id: str | None


@dataclass(frozen=True)
class LogPointer:
    """Where an exported grant sits in the log: origin, index, the checkpoint that proves it (its signed note) and the
    consent bundle (consent-ledger's offline-verifiable JSON) when given."""

    origin: str
    index: int
    checkpoint_size: int
    root_hash: bytes
    checkpoint_note: bytes
    bundle_json: str | None = None


# --- parsing ---------------------------------------------------------------------------------------------------


def _models() -> dict[str, Any]:
    from fhir.resources.consent import Consent as ConsentR5
    from fhir.resources.R4B.consent import Consent as ConsentR4

    return {R4: ConsentR4, R5: ConsentR5}


def detect_version(doc: Mapping[str, Any]) -> str:
    """R5 or R4, from elements only one of them has (R5: subject, date, decision, grantee, controller,
    regulatoryBasis, policyBasis; R4: patient, dateTime, scope, policyRule, organization, performer; an R4 provision is
    one object, an R5 provision a list)."""
    r5 = {"subject", "date", "decision", "grantee", "grantor", "controller", "manager", "regulatoryBasis",
          "policyBasis", "policyText", "period"}
    r4 = {"patient", "dateTime", "scope", "policyRule", "organization", "performer", "policy"}
    keys = set(doc)
    if keys & r5 and not keys & r4:
        return R5
    if keys & r4 and not keys & r5:
        return R4
    prov = doc.get("provision")
    if isinstance(prov, list):
        return R5
    if isinstance(prov, dict):
        return R4
    raise FhirRefused("cannot tell whether this Consent is FHIR R4 or R5: give the version (--fhir-version R4|R5)")


def _validated(doc: Mapping[str, Any], version: str) -> dict[str, Any]:
    if version not in VERSIONS:
        raise FhirRefused(f"FHIR version {version!r}: R4 or R5")
    try:
        model = _models()[version].model_validate(dict(doc))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise FhirRefused(
            f"not a valid FHIR {version} Consent ({e.error_count()} error(s)); first at {where or 'the top'}: "
            f"{first.get('msg', '')}"
        ) from None
    out: dict[str, Any] = json.loads(model.model_dump_json())
    return out


def parse_consent(source: str | bytes | Mapping[str, Any], version: str | None = None) -> ImportedConsent:
    """Parse and validate a Consent (JSON text or a decoded object) and map it onto grant terms; raise FhirRefused
    with the reason when the grant model cannot express it."""
    if isinstance(source, (str, bytes)):
        try:
            doc = json.loads(source)
        except (ValueError, UnicodeDecodeError) as e:
            raise FhirRefused(f"not JSON: {e}") from None
    else:
        doc = dict(source)
    if not isinstance(doc, dict) or doc.get("resourceType") != "Consent":
        kind = doc.get("resourceType") if isinstance(doc, dict) else type(doc).__name__
        raise FhirRefused(f"not a FHIR Consent (resourceType {kind!r})")
    version = version or detect_version(doc)
    c = _validated(doc, version)
    return _map(c, version)


def _coding_list(value: Any) -> list[dict[str, Any]]:
    return [x for x in value or () if isinstance(x, dict)]


def _codes_of(concepts: Sequence[dict[str, Any]], system: str, what: str) -> list[str]:
    """The codes of CodeableConcepts (each one coding of ``system``)."""
    out = []
    for cc in concepts:
        codings = _coding_list(cc.get("coding"))
        ours = [c for c in codings if c.get("system") == system]
        if len(ours) != 1:
            shown = ", ".join(f"{c.get('system')}#{c.get('code')}" for c in codings) or cc.get("text", "(no coding)")
            raise FhirRefused(f"{what}: {shown} is not one code of {system}")
        out.append(str(ours[0].get("code")))
    return out


def _coding_codes(codings: Sequence[dict[str, Any]], system: str, what: str) -> list[str]:
    out = []
    for c in codings:
        if c.get("system") != system:
            raise FhirRefused(f"{what}: {c.get('system')}#{c.get('code')} is not a code of {system}")
        out.append(str(c.get("code")))
    return out


def _check(check: Any, codes: Sequence[str], what: str) -> tuple[str, ...]:
    try:
        return vocab.check_codes(codes, check, what, max_items=payloads.MAX_LIST)
    except InvalidInput as e:
        raise FhirRefused(str(e)) from None


def _when(text: str, what: str, *, end: bool) -> int:
    """A FHIR date or dateTime as ms since the epoch. A date without a time is UTC; as a period's end it means the end
    of that year, month or day (the next one's start, since the ledger's periods exclude their end)."""
    m = _DATE.fullmatch(text)
    if m:
        year, month, day = int(m[1]), int(m[2] or 1), int(m[3] or 1)
        if year < 1970:
            raise FhirRefused(f"{what}: {text} is before 1970; the ledger's times start at the Unix epoch")
        start = dt.datetime(year, month, day, tzinfo=dt.UTC)
        if end:
            if m[3]:
                start += dt.timedelta(days=1)
            elif m[2]:
                start = dt.datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=dt.UTC)
            else:
                start = dt.datetime(year + 1, 1, 1, tzinfo=dt.UTC)
        return int(start.timestamp() * 1000)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise FhirRefused(f"{what}: {text!r} is not a FHIR date or dateTime") from None
    if moment.tzinfo is None:
        raise FhirRefused(f"{what}: {text!r} has a time but no time zone")
    ms = round(moment.timestamp() * 1000)
    if ms <= 0:
        raise FhirRefused(f"{what}: {text} is before 1970; the ledger's times start at the Unix epoch")
    return ms


def _period(value: Any, what: str) -> payloads.Period:
    if not value:
        return payloads.Period()
    start = _when(value["start"], f"{what}.start", end=False) if value.get("start") else 0
    end = _when(value["end"], f"{what}.end", end=True) if value.get("end") else 0
    if start and end and end <= start:
        raise FhirRefused(f"{what}: ends before it starts")
    return payloads.Period(start, end)


def _party_of(ref: dict[str, Any], what: str) -> str:
    """The grantee selector a Reference names: Organization/<party id> or identifier urn:consent-ledger:party ->
    org:<id>; identifier urn:consent-ledger:role -> role:<role>."""
    ident = ref.get("identifier") or {}
    selectors = []
    if ident:
        if ident.get("system") == SYS_PARTY:
            selectors.append(f"org:{ident.get('value')}")
        elif ident.get("system") == SYS_ROLE:
            selectors.append(f"role:{ident.get('value')}")
        else:
            raise FhirRefused(f"{what}: identifier system {ident.get('system')!r} names no party of the ledger")
    literal = ref.get("reference")
    if literal:
        m = _PARTY_REF.fullmatch(str(literal))
        if not m:
            raise FhirRefused(
                f"{what}: {literal!r} cannot be a grantee: the ledger grants to a registered organisation "
                "(Organization/<party id>), an organisation role or anyone, not to a person or another resource"
            )
        selectors.append(f"org:{m[1]}")
    if not selectors:
        raise FhirRefused(f"{what}: names nobody (no reference or identifier)")
    if len(set(selectors)) != 1:
        raise FhirRefused(f"{what}: reference and identifier name different parties ({', '.join(selectors)})")
    try:
        return payloads.check_grantee(selectors[0], what)
    except InvalidInput as e:
        raise FhirRefused(str(e)) from None


def _no(elem: Mapping[str, Any], names: Sequence[str], where: str, why: str) -> None:
    for name in names:
        if elem.get(name):
            raise FhirRefused(f"{where}.{name}: {why}")


def _ext(elem: Mapping[str, Any], url: str) -> list[dict[str, Any]]:
    return [e for e in elem.get("extension") or () if e.get("url") == url]


def _map(c: dict[str, Any], version: str) -> ImportedConsent:
    if c.get("modifierExtension"):
        raise FhirRefused("Consent.modifierExtension: a modifier extension changes the meaning in ways the ledger cannot read")
    status = c.get("status")
    if status != "active":
        raise FhirRefused(f"Consent.status is {status!r}: only an active Consent becomes a grant")

    # the one provision
    if version == R5:
        provisions = c.get("provision") or []
        if len(provisions) > 1:
            raise FhirRefused(
                f"Consent.provision: {len(provisions)} provisions; a grant is one rule, import each as its own Consent"
            )
        prov: dict[str, Any] = provisions[0] if provisions else {}
        where = "Consent.provision[0]"
        decision = c.get("decision")
    else:
        prov = c.get("provision") or {}
        where = "Consent.provision"
        decision = prov.get("type")
    if prov.get("provision"):
        raise FhirRefused(
            f"{where}.provision: nested provisions (exceptions to the rule) cannot be expressed: a grant is one flat "
            "rule; record each exception as its own grant (a DENY overrides a PERMIT)"
        )
    if prov.get("modifierExtension"):
        raise FhirRefused(f"{where}.modifierExtension: a modifier extension changes the meaning in ways the ledger cannot read")
    _no(prov, ("data",), where, "consents about specific resource instances cannot be expressed: a grant names data classes")
    _no(prov, ("code",), where, "content codes cannot be expressed: a grant names data classes and sensitivity labels")
    _no(prov, ("expression",), where, "computable expressions cannot be expressed")
    _no(prov, ("documentType",), where, "document types cannot be expressed: a grant names data classes")
    if decision not in ("permit", "deny"):
        missing = "Consent.decision" if version == R5 else f"{where}.type"
        raise FhirRefused(f"{missing} is missing: the ledger records an explicit permit or deny")

    # grantee: the recipient actor (PRCP), and R5's Consent.grantee
    selectors: list[str] = []
    for i, actor in enumerate(prov.get("actor") or ()):
        roles = _coding_list((actor.get("role") or {}).get("coding"))
        codes = {(r.get("system"), r.get("code")) for r in roles}
        if codes != {(PARTICIPATION_TYPE, RECIPIENT)}:
            shown = ", ".join(f"{s}#{k}" for s, k in sorted(codes, key=str)) or "(none)"
            raise FhirRefused(
                f"{where}.actor[{i}].role is {shown}: the ledger records only who may receive data (the recipient, "
                f"{PARTICIPATION_TYPE}#{RECIPIENT}); custodians, authors and other roles cannot be expressed"
            )
        selectors.append(_party_of(actor.get("reference") or {}, f"{where}.actor[{i}].reference"))
    for i, ref in enumerate(c.get("grantee") or ()):
        selectors.append(_party_of(ref, f"Consent.grantee[{i}]"))
    if len(set(selectors)) > 1:
        raise FhirRefused(
            f"{where}.actor: {len(set(selectors))} grantees ({', '.join(sorted(set(selectors)))}); a grant names one, "
            "import one Consent per grantee"
        )
    grantee = selectors[0] if selectors else "any"

    actions = _codes_of(prov.get("action") or (), CONSENT_ACTION, f"{where}.action")
    actions_t = _check(vocab.check_action, actions, "actions") if actions else _ALL_ACTIONS
    purposes = _coding_codes(_coding_list(prov.get("purpose")), ACT_REASON, f"{where}.purpose")
    purposes_t = _check(vocab.check_purpose, purposes, "purposes") if purposes else _TOP_PURPOSES
    labels = _coding_codes(_coding_list(prov.get("securityLabel")), ACT_CODE, f"{where}.securityLabel")
    try:
        labels_t = vocab.check_codes(labels, vocab.check_sensitivity_label, "sensitivity labels",
                                     max_items=payloads.MAX_LIST, min_items=0)
    except InvalidInput as e:
        raise FhirRefused(f"{where}.securityLabel: {e}") from None

    # data classes: the ledger's extension, else whole classes of FHIR resource types
    type_field = "resourceType" if version == R5 else "class"
    types = _coding_codes(_coding_list(prov.get(type_field)), RESOURCE_TYPES, f"{where}.{type_field}")
    named = [str(e.get("valueCode")) for e in _ext(prov, EXT_DATA_CLASS)]
    if named:
        classes = _check(lambda x, w: vocab.check_data_class(x, w, allow_wildcard=False), named, "data classes")
        spanned = {t for d in classes for t in vocab.DATA_CLASSES[d].fhir_resource_types}
        if types and set(types) != spanned:
            raise FhirRefused(
                f"{where}.{type_field}: the resource types ({', '.join(sorted(set(types)))}) are not those of the "
                f"data classes it names ({', '.join(classes)}: {', '.join(sorted(spanned))})"
            )
    elif types:
        classes = _classes_of_types(types, f"{where}.{type_field}")
    else:
        classes = (vocab.WILDCARD,)

    validity = _period(prov.get("period"), f"{where}.period")
    if version == R5 and c.get("period"):
        whole = _period(c.get("period"), "Consent.period")
        if validity.unbounded:
            validity = whole
        elif whole != validity:
            raise FhirRefused("Consent.period and Consent.provision[0].period differ: a grant has one validity")
    data_period = _period(prov.get("dataPeriod"), f"{where}.dataPeriod")

    legal = _legal_basis(c, version)
    sup = _ext(c, EXT_SUPERSEDES)
    supersedes = str(sup[0].get("valueString")) if sup else None

    subject = c.get("subject" if version == R5 else "patient") or {}
    ident = subject.get("identifier") or {}
    patient_key = None
    if ident.get("system") == SYS_PATIENT_KEY:
        value = str(ident.get("value", ""))
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            raise FhirRefused(f"patient identifier {value!r:.80} is not 64 lower-case hex digits (an Ed25519 key)")
        patient_key = bytes.fromhex(value)

    terms = GrantTerms(
        grantee=grantee,
        decision=payloads.PERMIT if decision == "permit" else payloads.DENY,
        actions=actions_t,
        purposes=purposes_t,
        data_classes=classes,
        sensitivity_labels=labels_t,
        data_period=data_period,
        validity=validity,
        supersedes=supersedes,
        legal_basis=legal,
    )
    try:  # every static rule of a grant payload, once, here
        terms.build(b"\x00" * payloads.PUBLIC_KEY_SIZE, issued_at_ms=1, nonce=b"\x00" * payloads.NONCE_SIZE)
    except InvalidInput as e:
        raise FhirRefused(f"the Consent maps to an invalid grant: {e}") from None
    return ImportedConsent(version, terms, patient_key, c.get("id"))


def _classes_of_types(types: Sequence[str], what: str) -> tuple[str, ...]:
    """The data classes made of the given resource types: every class all of whose types are listed. Every listed type
    must be covered, or the Consent is narrower than any grant could be."""
    given = set(types)
    classes = tuple(sorted(d.name for d in vocab.DATA_CLASSES.values() if set(d.fhir_resource_types) <= given))
    covered = {t for name in classes for t in vocab.DATA_CLASSES[name].fhir_resource_types}
    left = sorted(given - covered)
    if left:
        hints = "; ".join(
            f"{t} is part of {', '.join(vocab.data_classes_for_resource_type(t)) or 'no data class'}" for t in left
        )
        raise FhirRefused(
            f"{what}: {', '.join(left)} do(es) not make up a whole data class of the ledger ({hints}); a grant names "
            "whole data classes (list every resource type of the class, or name the class with the extension "
            f"{EXT_DATA_CLASS})"
        )
    return classes


def _legal_basis(c: dict[str, Any], version: str) -> payloads.LegalBasis | None:
    if version == R5:
        bases = c.get("regulatoryBasis") or []
        if len(bases) > 1:
            raise FhirRefused(f"Consent.regulatoryBasis: {len(bases)} given; a grant cites one legal basis")
        concept = bases[0] if bases else None
        where = "Consent.regulatoryBasis[0]"
    else:
        concept = c.get("policyRule")
        where = "Consent.policyRule"
    if not concept:
        return None
    codings = _coding_list(concept.get("coding"))
    if len(codings) > 1:
        raise FhirRefused(f"{where}: {len(codings)} codings; a legal basis has one code")
    code = str(codings[0].get("code") or "") if codings else ""
    text = str(concept.get("text") or "")
    if not code and not text:
        return None
    return payloads.LegalBasis(code=code, text=text)


# --- export ------------------------------------------------------------------------------------------------------


def _instant(ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if ms % 1000:
        text += f".{ms % 1000:03d}"
    return text + "Z"


def _period_out(p: payloads.Period) -> dict[str, str] | None:
    if p.unbounded:
        return None
    out = {}
    if p.start_ms:
        out["start"] = _instant(p.start_ms)
    if p.end_ms:
        out["end"] = _instant(p.end_ms)
    return out


def _grantee_ref(selector: str) -> dict[str, Any]:
    if selector.startswith("org:"):
        party = selector[4:]
        return {"reference": f"Organization/{party}", "identifier": {"system": SYS_PARTY, "value": party}}
    role = selector[5:]
    return {"identifier": {"system": SYS_ROLE, "value": role}, "display": f"any organisation registered as {role}"}


def consent_to_fhir(
    grant: payloads.ConsentGrantPayload,
    *,
    version: str,
    consent_id: str,
    active: bool = True,
    log: LogPointer | None = None,
) -> dict[str, Any]:
    """A FHIR Consent (as a JSON-ready dict, validated with fhir.resources) saying what the grant says; with ``log``,
    it points back to the log entry and the checkpoint that proves it (identifier urn:consent-ledger:consent-id and
    the extension urn:consent-ledger:fhir:log-entry). ``active`` False writes status inactive (revoked, superseded or
    expired)."""
    if version not in VERSIONS:
        raise FhirRefused(f"FHIR version {version!r}: R4 or R5")
    prov: dict[str, Any] = {}
    period = _period_out(grant.validity)
    if period:
        prov["period"] = period
    if grant.grantee != "any":
        prov["actor"] = [
            {"role": {"coding": [{"system": PARTICIPATION_TYPE, "code": RECIPIENT}]}, "reference": _grantee_ref(grant.grantee)}
        ]
    if set(grant.actions) != set(_ALL_ACTIONS):
        prov["action"] = [{"coding": [{"system": CONSENT_ACTION, "code": a}]} for a in grant.actions]
    if grant.sensitivity_labels:
        prov["securityLabel"] = [{"system": ACT_CODE, "code": label} for label in grant.sensitivity_labels]
    if set(grant.purposes) != set(_TOP_PURPOSES):
        prov["purpose"] = [{"system": ACT_REASON, "code": p} for p in grant.purposes]
    if vocab.WILDCARD not in grant.data_classes:
        prov["extension"] = [{"url": EXT_DATA_CLASS, "valueCode": d} for d in grant.data_classes]
        types = sorted({t for d in grant.data_classes for t in vocab.DATA_CLASSES[d].fhir_resource_types})
        prov["resourceType" if version == R5 else "class"] = [{"system": RESOURCE_TYPES, "code": t} for t in types]
    data_period = _period_out(grant.data_period)
    if data_period:
        prov["dataPeriod"] = data_period

    subject = {
        "identifier": {"system": SYS_PATIENT_KEY, "value": grant.patient.hex()},
        "display": f"patient ed25519:{grant.patient.hex()[:12]}",
    }
    doc: dict[str, Any] = {
        "resourceType": "Consent",
        "id": consent_id[:64],
        "identifier": [{"system": SYS_CONSENT_ID, "value": consent_id}],
        "status": "active" if active else "inactive",
    }
    extensions: list[dict[str, Any]] = []
    if grant.supersedes:
        extensions.append({"url": EXT_SUPERSEDES, "valueString": grant.supersedes})
    if log is not None:
        parts: list[dict[str, Any]] = [
            {"url": "origin", "valueString": log.origin},
            {"url": "index", "valueString": str(log.index)},
            {"url": "checkpoint-size", "valueString": str(log.checkpoint_size)},
            {"url": "root-hash", "valueBase64Binary": base64.b64encode(log.root_hash).decode()},
            {"url": "checkpoint", "valueBase64Binary": base64.b64encode(log.checkpoint_note).decode()},
        ]
        if log.bundle_json is not None:
            parts.append({"url": "consent-bundle", "valueBase64Binary": base64.b64encode(log.bundle_json.encode()).decode()})
        extensions.append({"url": EXT_LOG_ENTRY, "extension": parts})
    if extensions:
        doc["extension"] = extensions
    date = _instant(grant.issued_at_ms)
    legal = grant.legal_basis
    legal_concept: dict[str, Any] | None = None
    if legal is not None:
        legal_concept = {}
        if legal.code:
            legal_concept["coding"] = [{"system": SYS_LEGAL_BASIS, "code": legal.code}]
        if legal.text:
            legal_concept["text"] = legal.text
    if version == R5:
        doc.update({"subject": subject, "date": date[:10], "decision": grant.decision.lower()})
        if legal_concept:
            doc["regulatoryBasis"] = [legal_concept]
        if prov:
            doc["provision"] = [prov]
    else:
        prov["type"] = grant.decision.lower()
        doc.update(
            {
                "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
                "category": [{"coding": [{"system": LOINC, "code": "59284-0"}]}],
                "patient": subject,
                "dateTime": date,
                "provision": prov,
            }
        )
        if legal_concept:
            doc["policyRule"] = legal_concept
        else:
            doc["policy"] = [{"uri": POLICY_URI}]  # R4 ppc-1: a policy or a policyRule
    return _validated(doc, version)
