"""The code systems and their hierarchies (docs/design.md section 3)."""

from __future__ import annotations

import json
import pathlib

import pytest

from consent_ledger.core import vocab
from consent_ledger.core.errors import InvalidInput

DATA = pathlib.Path(__file__).parent / "data" / "hl7_codes.json"


@pytest.mark.parametrize(
    ("granted", "requested", "covers"),
    [
        # The examples docs/design.md section 3 gives.
        ("HPAYMT", "CLMATTCH", True),
        ("HPAYMT", "COVAUTH", True),
        ("TREAT", "ETREAT", True),
        ("TREAT", "BTG", True),
        # Never the reverse.
        ("CLMATTCH", "HPAYMT", False),
        ("COVAUTH", "HPAYMT", False),
        ("ETREAT", "TREAT", False),
        ("BTG", "TREAT", False),
        ("BTG", "ETREAT", False),
        # A code covers itself; deeper descendants are covered too.
        ("TREAT", "TREAT", True),
        ("HPAYMT", "ELIGVER", True),  # HPAYMT > COVERAGE > ELIGVER
        ("ETREAT", "BTG", True),
        ("ETREAT", "ERTREAT", True),
        ("HOPERAT", "HTEST", True),  # HOPERAT > SYSDEV > HTEST
        # Siblings and unrelated branches.
        ("HPAYMT", "TREAT", False),
        ("TREAT", "HPAYMT", False),
        ("CLMATTCH", "COVAUTH", False),
        ("HRESCH", "CLINTRL", False),  # clinical trial (treatment) is not research
        ("TREAT", "CLINTRCH", False),
        # Unknown or abstract codes cover nothing and are covered by nothing.
        ("PurposeOfUse", "TREAT", False),
        ("TREAT", "NOPE", False),
        ("NOPE", "NOPE", False),
    ],
)
def test_purpose_subsumption(granted: str, requested: str, covers: bool) -> None:
    assert vocab.purpose_covers(granted, requested) is covers


@pytest.mark.parametrize("child", ["BH", "MH", "PSY", "PSYTHPN", "SUD"])
def test_spi_is_parent_of_the_specially_protected_labels(child: str) -> None:
    assert vocab.SENSITIVITY_LABELS[child].parent == "SPI"
    assert vocab.label_covers("SPI", child)
    assert not vocab.label_covers(child, "SPI")


@pytest.mark.parametrize(
    ("granted", "requested", "covers"),
    [
        ("SPI", "COGN", True),  # SPI > BH > COGN
        ("SPI", "OPIOIDUD", True),  # SPI > SUD > OPIOIDUD
        ("SUD", "ETHUD", True),
        ("ETH", "ETH", True),
        # ETH (substance abuse, older code) is not under SPI, nor under SUD.
        ("SPI", "ETH", False),
        ("SUD", "ETH", False),
        ("ETH", "SUD", False),
        ("MH", "PSY", False),
        ("PSY", "MH", False),
        ("HIV", "STD", False),
        ("MH", "NOPE", False),
    ],
)
def test_label_hierarchy(granted: str, requested: str, covers: bool) -> None:
    assert vocab.label_covers(granted, requested) is covers


def test_labels_related_is_symmetric_ancestry() -> None:
    assert vocab.labels_related("SPI", "MH") and vocab.labels_related("MH", "SPI")
    assert vocab.labels_related("MH", "MH")
    assert not vocab.labels_related("MH", "PSY")
    assert not vocab.labels_related("SPI", "ETH")


def test_ancestors() -> None:
    assert vocab.purpose_ancestors("BTG") == {"BTG", "ETREAT", "TREAT"}
    assert vocab.label_ancestors("COGN") == {"COGN", "BH", "SPI"}
    assert vocab.label_ancestors("ETH") == {"ETH"}


def test_treatment_and_emergency_purposes() -> None:
    assert all(vocab.is_treatment_purpose(c) for c in ("TREAT", "ETREAT", "BTG", "COC", "ERTREAT"))
    assert not any(vocab.is_treatment_purpose(c) for c in ("HPAYMT", "HRESCH", "PUBHLTH"))
    assert all(vocab.is_emergency_purpose(c) for c in ("ETREAT", "BTG", "ERTREAT"))
    assert not any(vocab.is_emergency_purpose(c) for c in ("TREAT", "COC", "HPAYMT"))


def test_tables_match_the_packaged_hl7_file() -> None:
    raw = json.loads(DATA.read_text("utf-8"))
    active = {c["code"] for c in raw["purpose_of_use"] if c["status"] == "active"}
    assert set(vocab.PURPOSES) == active and len(active) == 62
    act_labels = {
        c["code"]
        for c in raw["sensitivity"]
        if c["group"] == "_ActInformationSensitivityPolicy" and c["status"] == "active"
    }
    assert set(vocab.SENSITIVITY_LABELS) == act_labels
    assert {"PSY", "MH", "SUD", "HIV", "STD", "GDIS", "SEX", "SDV", "ETH", "SCA"} <= act_labels
    assert "SICKLE" not in vocab.SENSITIVITY_LABELS
    # Top-level codes hang directly under the abstract roots, which are not codes themselves.
    assert vocab.PURPOSES["TREAT"].parent is None
    assert vocab.SENSITIVITY_LABELS["SPI"].parent is None


def test_retired_label_names_its_successor() -> None:
    with pytest.raises(InvalidInput, match=r"'SICKLE' is retired; use SCA"):
        vocab.check_sensitivity_label("SICKLE")
    assert vocab.check_sensitivity_label("SCA") == "SCA"


@pytest.mark.parametrize(
    ("check", "code", "match"),
    [
        (vocab.check_purpose, "TREATMENT", r"unknown purpose of use 'TREATMENT'"),
        (vocab.check_purpose, "PurposeOfUse", r"unknown purpose of use 'PurposeOfUse'"),
        (vocab.check_purpose, "treat", r"unknown purpose of use 'treat'"),
        (vocab.check_sensitivity_label, "VIP", r"unknown sensitivity label 'VIP'"),
        (vocab.check_sensitivity_label, "DEMO", r"unknown sensitivity label 'DEMO'"),
        (vocab.check_sensitivity_label, "mh", r"unknown sensitivity label 'mh'"),
        (vocab.check_action, "read", r"unknown action 'read'"),
        (vocab.check_role, "pharmacy", r"unknown role 'pharmacy'"),
        (vocab.check_data_class, "mental-health-notes", r"unknown data class 'mental-health-notes'"),
        (vocab.check_data_class, "*", r"wildcard '\*' is not allowed here"),
        (vocab.check_party_id, "Insurer", r"'Insurer' is not a party id"),
        (vocab.check_party_id, "-x", r"'-x' is not a party id"),
        (vocab.check_party_id, "", r"'' is not a party id"),
        (vocab.check_party_id, "a" * 65, r"is not a party id"),
        (vocab.check_purpose, 7, r"unknown purpose of use 7"),
    ],
)
def test_checks_name_the_bad_code(check, code, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput, match=match):
        check(code)


def test_valid_codes_pass() -> None:
    assert vocab.check_purpose("BTG") == "BTG"
    assert vocab.check_action("disclose") == "disclose"
    assert vocab.check_role("public-health") == "public-health"
    assert vocab.check_data_class("*", allow_wildcard=True) == "*"
    assert vocab.check_party_id("st-mary.hospital-1") == "st-mary.hospital-1"
    assert vocab.check_party_id("a" * 64)


def test_check_codes_lists() -> None:
    with pytest.raises(InvalidInput, match=r"purposes: 'TREAT' is listed twice"):
        vocab.check_codes(["TREAT", "TREAT"], vocab.check_purpose, "purposes", max_items=4)
    with pytest.raises(InvalidInput, match=r"purposes: at most 2 allowed, got 3"):
        vocab.check_codes(["TREAT", "BTG", "COC"], vocab.check_purpose, "purposes", max_items=2)
    with pytest.raises(InvalidInput, match=r"purposes: at least 1 required"):
        vocab.check_codes([], vocab.check_purpose, "purposes", max_items=2)


def test_data_classes_map_to_fhir_r5_resource_types() -> None:
    assert "*" not in vocab.DATA_CLASSES
    for name in (
        "laboratory-results", "imaging", "medications", "conditions", "clinical-notes",
        "allergies", "immunizations", "procedures", "vital-signs", "demographics",
    ):
        assert vocab.DATA_CLASSES[name].fhir_resource_types
    assert "AllergyIntolerance" in vocab.DATA_CLASSES["allergies"].fhir_resource_types
    assert "DocumentReference" in vocab.DATA_CLASSES["clinical-notes"].fhir_resource_types
    assert vocab.data_classes_for_resource_type("Observation") == ("laboratory-results", "vital-signs")
    assert vocab.data_classes_for_resource_type("MedicationRequest") == ("medications",)
    assert vocab.data_classes_for_resource_type("Nonexistent") == ()
    for d in vocab.DATA_CLASSES.values():
        assert d.name == d.name.lower() and " " not in d.name
        assert all(rt[0].isupper() for rt in d.fhir_resource_types)
