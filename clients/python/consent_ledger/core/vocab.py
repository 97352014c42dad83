"""The codes a consent is written in, and how they relate.

- Purposes of use: HL7 v3-ActReason `PurposeOfUse` codes (HL7 terminology 7.3.0), matched by
  subsumption along their is-a hierarchy: a grant for `HPAYMT` covers `CLMATTCH` and `COVAUTH`,
  `TREAT` covers `ETREAT` and `BTG`; never the reverse.
- Sensitivity labels: HL7 v3-ActCode `_ActInformationSensitivityPolicy` codes (`SPI` is the
  parent of `BH`, `MH`, `PSY`, `PSYTHPN` and `SUD`; `ETH` is not under `SPI`). Retired codes are
  refused (`SICKLE`: use `SCA`).
- Actions: the FHIR consent-action codes, flat.
- Roles an organisation can be registered with.
- Data classes: a small vocabulary of record classes defined by this project, each mapped to
  the FHIR R5 resource types it is made of, plus the wildcard "*" (grants only).

Sensitivity is never a data class. Data classes say *what kind of record* is asked for;
sensitivity labels say *what the data carries*, and a request names both for each item:
"mental-health notes" are the data class `clinical-notes` carrying the label `MH`
(psychotherapy notes: `clinical-notes` with `PSYTHPN`). One concept per axis means a grant for
`clinical-notes` can never reach mental-health notes by accident, and the rule "sensitive data
needs a consent that names it" has exactly one place to live (the labels). Which records carry
which labels is the data holder's business (a security labelling service), not the ledger's.

The code tables are read once, at import, from the packaged `consent_ledger/data/hl7_codes.json`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType

from consent_ledger.core.errors import InvalidInput

__all__ = [
    "ACTIONS",
    "ATTEST_GUARDIANSHIP",
    "CAPABILITIES",
    "DATA_CLASSES",
    "EMERGENCY_PURPOSE",
    "PURPOSES",
    "ROLES",
    "SENSITIVITY_LABELS",
    "TREATMENT_PURPOSE",
    "WILDCARD",
    "Code",
    "DataClass",
    "check_action",
    "check_capability",
    "check_codes",
    "check_data_class",
    "check_party_id",
    "check_purpose",
    "check_role",
    "check_sensitivity_label",
    "data_classes_for_resource_type",
    "is_emergency_purpose",
    "is_treatment_purpose",
    "label_ancestors",
    "label_covers",
    "labels_related",
    "purpose_ancestors",
    "purpose_covers",
]

WILDCARD = "*"
TREATMENT_PURPOSE = "TREAT"
EMERGENCY_PURPOSE = "ETREAT"

# FHIR R5 consent-action (http://terminology.hl7.org/CodeSystem/consentaction).
ACTIONS: tuple[str, ...] = ("collect", "access", "use", "disclose", "correct")

ROLES: tuple[str, ...] = ("hospital", "insurer", "research", "public-health")

# What the operator may let an organisation do beyond its roles (PartyRegistration.capabilities; none by default).
# attest-guardianship: sign attested delegations for patients who hold no key yet (docs/design.md section 3).
ATTEST_GUARDIANSHIP = "attest-guardianship"
CAPABILITIES: tuple[str, ...] = (ATTEST_GUARDIANSHIP,)

# A party id: what follows "org:" in a grantee selector.
_PARTY_ID = re.compile(r"[a-z0-9][a-z0-9.-]{0,63}")

_PURPOSE_ROOT = "PurposeOfUse"
_LABEL_GROUP = "_ActInformationSensitivityPolicy"


@dataclass(frozen=True)
class Code:
    """One code of an HL7 code system; parent is None at the top of the value set."""

    code: str
    display: str
    parent: str | None
    definition: str


@dataclass(frozen=True)
class DataClass:
    """A record class of the project's vocabulary and the FHIR R5 resource types it spans."""

    name: str
    display: str
    fhir_resource_types: tuple[str, ...]


_DATA_CLASSES: tuple[DataClass, ...] = (
    DataClass("allergies", "allergies and intolerances", ("AllergyIntolerance",)),
    DataClass("care-plans", "care plans and goals", ("CarePlan", "CareTeam", "Goal")),
    DataClass(
        "clinical-notes",
        "clinical notes and documents",
        ("ClinicalImpression", "Composition", "DocumentReference"),
    ),
    DataClass("conditions", "conditions and diagnoses", ("Condition",)),
    DataClass(
        "coverage-and-billing",
        "coverage, claims and billing",
        ("Account", "Claim", "ClaimResponse", "Coverage", "ExplanationOfBenefit", "Invoice"),
    ),
    DataClass("demographics", "demographics", ("Patient", "RelatedPerson")),
    DataClass("encounters", "encounters and episodes of care", ("Encounter", "EpisodeOfCare")),
    DataClass("family-history", "family history", ("FamilyMemberHistory",)),
    DataClass(
        "imaging",
        "imaging studies and reports",
        ("DiagnosticReport", "ImagingSelection", "ImagingStudy"),
    ),
    DataClass(
        "immunizations",
        "immunizations",
        ("Immunization", "ImmunizationEvaluation", "ImmunizationRecommendation"),
    ),
    DataClass(
        "laboratory-results",
        "laboratory results",
        ("DiagnosticReport", "Observation", "Specimen"),
    ),
    DataClass(
        "medications",
        "medications",
        (
            "Medication",
            "MedicationAdministration",
            "MedicationDispense",
            "MedicationRequest",
            "MedicationStatement",
        ),
    ),
    DataClass("procedures", "procedures", ("Procedure",)),
    DataClass("vital-signs", "vital signs", ("Observation",)),
)

DATA_CLASSES: Mapping[str, DataClass] = MappingProxyType({d.name: d for d in _DATA_CLASSES})


def _load() -> tuple[dict[str, Code], dict[str, Code], dict[str, str]]:
    raw = json.loads(
        resources.files("consent_ledger.data").joinpath("hl7_codes.json").read_text("utf-8")
    )
    purposes: dict[str, Code] = {}
    for c in raw["purpose_of_use"]:
        if c["status"] != "active":
            continue
        parent = None if c["parent"] == _PURPOSE_ROOT else c["parent"]
        purposes[c["code"]] = Code(c["code"], c["display"], parent, c["definition"])
    labels: dict[str, Code] = {}
    retired: dict[str, str] = {}
    for c in raw["sensitivity"]:
        if c.get("group") != _LABEL_GROUP:
            continue
        if c["status"] != "active":
            retired[c["code"]] = c["display"]
            continue
        parent = None if c["parent"] == _LABEL_GROUP else c["parent"]
        labels[c["code"]] = Code(c["code"], c["display"], parent, c["definition"])
    for table in (purposes, labels):
        for code in table.values():
            if code.parent is not None and code.parent not in table:
                raise RuntimeError(f"hl7_codes.json: {code.code} has unknown parent {code.parent}")
    return purposes, labels, retired


_purposes, _labels, _retired_labels = _load()
PURPOSES: Mapping[str, Code] = MappingProxyType(_purposes)
SENSITIVITY_LABELS: Mapping[str, Code] = MappingProxyType(_labels)
# The successor of each retired label that has one, for error messages.
_REPLACED_BY = {"SICKLE": "SCA"}


def _ancestor_table(table: Mapping[str, Code]) -> Mapping[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for code in table:
        chain = [code]
        parent = table[code].parent
        while parent is not None:
            if parent in chain:
                raise RuntimeError(f"hl7_codes.json: cycle through {parent}")
            chain.append(parent)
            parent = table[parent].parent
        out[code] = frozenset(chain)
    return MappingProxyType(out)


# code -> the code itself and all its ancestors.
_PURPOSE_ANCESTORS = _ancestor_table(PURPOSES)
_LABEL_ANCESTORS = _ancestor_table(SENSITIVITY_LABELS)
_RESOURCE_TYPE_CLASSES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        rt: tuple(sorted(d.name for d in _DATA_CLASSES if rt in d.fhir_resource_types))
        for rt in sorted({rt for d in _DATA_CLASSES for rt in d.fhir_resource_types})
    }
)


def purpose_ancestors(code: str) -> frozenset[str]:
    """The purpose itself and every purpose above it. Requires a known purpose."""
    return _PURPOSE_ANCESTORS[code]


def label_ancestors(code: str) -> frozenset[str]:
    """The label itself and every label above it. Requires a known label."""
    return _LABEL_ANCESTORS[code]


def purpose_covers(granted: str, requested: str) -> bool:
    """True if a consent naming purpose `granted` covers a request for purpose `requested`:
    the same code or an ancestor of it (HPAYMT covers COVAUTH; COVAUTH never covers HPAYMT).
    Unknown codes cover nothing and are covered by nothing."""
    anc = _PURPOSE_ANCESTORS.get(requested)
    return anc is not None and granted in anc


def label_covers(granted: str, requested: str) -> bool:
    """True if a consent naming label `granted` covers data carrying label `requested`:
    the same code or an ancestor of it (SPI covers MH; MH never covers SPI).
    Unknown codes cover nothing and are covered by nothing."""
    anc = _LABEL_ANCESTORS.get(requested)
    return anc is not None and granted in anc


def labels_related(a: str, b: str) -> bool:
    """True if one label is the other or an ancestor of it (used to read denials broadly:
    data labelled SPI may be mental-health data, so a denial of MH reaches it)."""
    return label_covers(a, b) or label_covers(b, a)


def is_treatment_purpose(code: str) -> bool:
    """TREAT or one of its descendants (ETREAT, BTG, COC, ...)."""
    return purpose_covers(TREATMENT_PURPOSE, code)


def is_emergency_purpose(code: str) -> bool:
    """ETREAT or one of its descendants (BTG, ERTREAT): the purposes break-glass accepts."""
    return purpose_covers(EMERGENCY_PURPOSE, code)


def data_classes_for_resource_type(resource_type: str) -> tuple[str, ...]:
    """The data classes a FHIR R5 resource type belongs to (sorted; empty if none). Some types
    belong to several (Observation: laboratory-results and vital-signs); the resource's
    category tells them apart."""
    return _RESOURCE_TYPE_CLASSES.get(resource_type, ())


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_purpose(code: object, what: str = "purpose") -> str:
    """Return code if it is a known purpose of use; else raise InvalidInput naming it."""
    if not isinstance(code, str) or code not in PURPOSES:
        raise InvalidInput(f"{what}: unknown purpose of use {_show(code)} (HL7 v3-ActReason PurposeOfUse)")
    return code


def check_sensitivity_label(code: object, what: str = "sensitivity label") -> str:
    """Return code if it is a known, active sensitivity label; else raise InvalidInput."""
    if isinstance(code, str) and code in SENSITIVITY_LABELS:
        return code
    if isinstance(code, str) and code in _retired_labels:
        hint = f"; use {_REPLACED_BY[code]}" if code in _REPLACED_BY else ""
        raise InvalidInput(f"{what}: sensitivity label {code!r} is retired{hint}")
    raise InvalidInput(
        f"{what}: unknown sensitivity label {_show(code)} "
        "(HL7 v3-ActCode _ActInformationSensitivityPolicy)"
    )


def check_action(code: object, what: str = "action") -> str:
    """Return code if it is a FHIR consent-action code; else raise InvalidInput."""
    if not isinstance(code, str) or code not in ACTIONS:
        raise InvalidInput(f"{what}: unknown action {_show(code)} (one of {', '.join(ACTIONS)})")
    return code


def check_role(code: object, what: str = "role") -> str:
    """Return code if it is a known organisation role; else raise InvalidInput."""
    if not isinstance(code, str) or code not in ROLES:
        raise InvalidInput(f"{what}: unknown role {_show(code)} (one of {', '.join(ROLES)})")
    return code


def check_capability(code: object, what: str = "capability") -> str:
    """Return code if it is a known party capability; else raise InvalidInput."""
    if not isinstance(code, str) or code not in CAPABILITIES:
        raise InvalidInput(f"{what}: unknown capability {_show(code)} (one of {', '.join(CAPABILITIES)})")
    return code


def check_data_class(code: object, what: str = "data class", *, allow_wildcard: bool = False) -> str:
    """Return code if it is a known data class (or "*" when allow_wildcard); else raise."""
    if isinstance(code, str) and (code in DATA_CLASSES or (allow_wildcard and code == WILDCARD)):
        return code
    if code == WILDCARD:
        raise InvalidInput(f"{what}: the wildcard {WILDCARD!r} is not allowed here")
    raise InvalidInput(f"{what}: unknown data class {_show(code)} (one of {', '.join(DATA_CLASSES)})")


def check_party_id(party_id: object, what: str = "party id") -> str:
    """Return party_id if it matches [a-z0-9][a-z0-9.-]{0,63}; else raise InvalidInput."""
    if not isinstance(party_id, str) or not _PARTY_ID.fullmatch(party_id):
        raise InvalidInput(f"{what}: {_show(party_id)} is not a party id ([a-z0-9][a-z0-9.-]{{0,63}})")
    return party_id


def check_codes(
    codes: Iterable[object],
    check: Callable[[object, str], str],
    what: str,
    *, max_items: int, min_items: int = 1
) -> tuple[str, ...]:
    """Check a list of codes with `check` (one of the check_* functions): between min_items
    and max_items entries, no duplicates. Returns them as a tuple in the given order."""
    items = tuple(codes)
    if len(items) < min_items:
        raise InvalidInput(f"{what}: at least {min_items} required")
    if len(items) > max_items:
        raise InvalidInput(f"{what}: at most {max_items} allowed, got {len(items)}")
    out = tuple(check(c, what) for c in items)
    if len(set(out)) != len(out):
        dup = next(c for c in out if out.count(c) > 1)
        raise InvalidInput(f"{what}: {dup!r} is listed twice")
    return out
