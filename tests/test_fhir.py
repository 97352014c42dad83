"""FHIR R4/R5 Consent import and export (consent_ledger/fhir.py, `consent-ledger fhir`): HL7's published example
Consents (tests/data/fhir/README.md) either round-trip or are refused with the exact reason; exports validate with
fhir.resources and point back to a verifiable log entry."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import pytest

pytest.importorskip("fhir.resources", reason="the fhir extra is not installed")

from consent_ledger import fhir
from consent_ledger.cli import EXIT_ERROR, main
from consent_ledger.core import payloads
from consent_ledger.keys import read_key

from .test_cli import (  # noqa: F401
    clean_env,
    conn,
    log_key_file,
    patient_key,
    run_fail,
    run_json,
    server,
)

DATA = Path(__file__).parent / "data" / "fhir"
ALL_PURPOSES = ("HMARKT", "HOPERAT", "HPAYMT", "HRESCH", "PATRQT", "PUBHLTH", "TREAT")
PATIENT = bytes(range(32))

NESTED = ("nested provisions (exceptions to the rule) cannot be expressed: a grant is one flat rule; record each "
          "exception as its own grant (a DENY overrides a PERMIT)")
NO_TYPE = "Consent.provision.type is missing: the ledger records an explicit permit or deny"
CUSTODIAN = (
    "Consent.provision[0].actor[0].role is http://terminology.hl7.org/CodeSystem/v3-ParticipationType#CST: the ledger "
    "records only who may receive data (the recipient, http://terminology.hl7.org/CodeSystem/v3-ParticipationType#PRCP); "
    "custodians, authors and other roles cannot be expressed"
)
INSTANCES = "consents about specific resource instances cannot be expressed: a grant names data classes"

# Every HL7 example: the refusal, word for word, or None when it maps (see MAPPED).
REFUSED = {
    "r4/Emergency": f"Consent.provision.provision: {NESTED}",
    "r4/Out": NO_TYPE,
    "r4/basic": NO_TYPE,
    "r4/grantor": NO_TYPE,
    "r4/notAuthor": NO_TYPE,
    "r4/notOrg": None,
    "r4/notThem": NO_TYPE,
    "r4/notThis": f"Consent.provision.data: {INSTANCES}",
    "r4/notTime": NO_TYPE,
    "r4/pkb": f"Consent.provision.provision: {NESTED}",
    "r4/signature": f"Consent.provision.provision: {NESTED}",
    "r4/smartonfhir": f"Consent.provision.provision: {NESTED}",
    "r5/CDA": f"Consent.provision[0].provision: {NESTED}",
    "r5/Emergency": f"Consent.provision[0].provision: {NESTED}",
    "r5/Out": CUSTODIAN,
    "r5/basic": "Consent.provision[0].period.start: 1964-01-01 is before 1970; the ledger's times start at the Unix epoch",
    "r5/grantor": CUSTODIAN,
    "r5/notAuthor": CUSTODIAN,
    "r5/notOrg": None,
    "r5/notThem": (
        "Consent.provision[0].actor[0].reference: 'Practitioner/f204' cannot be a grantee: the ledger grants to a "
        "registered organisation (Organization/<party id>), an organisation role or anyone, not to a person or another "
        "resource"
    ),
    "r5/notThis": f"Consent.provision[0].data: {INSTANCES}",
    "r5/notTime": None,
    "r5/pkb": f"Consent.provision[0].provision: {NESTED}",
    "r5/smartonfhir": f"Consent.provision[0].provision: {NESTED}",
}

MAPPED = {
    "r4/notOrg": fhir.GrantTerms(
        grantee="org:f001", decision="DENY", actions=("access", "correct"), purposes=ALL_PURPOSES,
        data_classes=("*",), legal_basis=payloads.LegalBasis(code="OPTIN"),
    ),
    "r5/notOrg": fhir.GrantTerms(
        grantee="org:f001", decision="PERMIT", actions=("access", "correct"), purposes=ALL_PURPOSES,
        data_classes=("*",), legal_basis=payloads.LegalBasis(code="INFA"),
    ),
    "r5/notTime": fhir.GrantTerms(
        grantee="any", decision="PERMIT", actions=("collect", "access", "use", "disclose", "correct"),
        purposes=ALL_PURPOSES, data_classes=("*",),
        # 2015-01-01 to the end of 2015-02-01 (UTC): the ledger's periods exclude their end
        validity=payloads.Period(1_420_070_400_000, 1_422_835_200_000), legal_basis=payloads.LegalBasis(code="INFA"),
    ),
}


def example(name: str) -> dict:
    version, short = name.split("/")
    return json.loads((DATA / version / f"Consent-consent-example-{short}.json").read_text())


def test_every_hl7_example_is_listed() -> None:
    files = {f"{p.parent.name}/{p.stem.removeprefix('Consent-consent-example-')}" for p in DATA.glob("r*/*.json")}
    assert files == set(REFUSED) and len(files) == 24


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_hl7_examples_round_trip_or_are_refused_precisely(name: str) -> None:
    doc = example(name)
    expected = REFUSED[name]
    if expected is not None:
        with pytest.raises(fhir.FhirRefused) as e:
            fhir.parse_consent(json.dumps(doc))
        assert str(e.value) == expected
        return
    imported = fhir.parse_consent(json.dumps(doc))
    assert imported.version == name[:2].upper()
    assert imported.terms == MAPPED[name]
    assert imported.patient_key is None  # HL7's examples name the patient by a reference only
    raw = imported.terms.build(PATIENT)
    grant = payloads.parse_payload(payloads.CONSENT_GRANT, raw)
    for version in fhir.VERSIONS:  # export in either version, import again: the same grant terms
        out = fhir.consent_to_fhir(grant, version=version, consent_id=payloads.consent_id(raw))
        again = fhir.parse_consent(json.dumps(out))
        assert again.version == version and again.terms == imported.terms and again.patient_key == PATIENT
    # what the mapped elements said, said again (R5 example exported as R5)
    if name.startswith("r5/"):
        out = fhir.consent_to_fhir(grant, version=fhir.R5, consent_id=payloads.consent_id(raw))
        assert out["decision"] == doc["decision"]
        src, dst = doc["provision"][0], out.get("provision", [{}])[0]
        assert dst.get("action") == src.get("action")
        assert [a["reference"]["reference"] for a in dst.get("actor", [])] == [
            a["reference"]["reference"] for a in src.get("actor", [])
        ]


def full_grant(**over: object) -> payloads.ConsentGrantPayload:
    fields: dict = {
        "patient": PATIENT, "grantee": "role:insurer", "decision": payloads.DENY, "actions": ("use", "disclose"),
        "purposes": ("HPAYMT", "HRESCH"), "data_classes": ("laboratory-results", "medications"),
        "sensitivity_labels": ("MH", "SUD"), "data_period": payloads.Period(1_600_000_000_000, 0),
        "validity": payloads.Period(1_700_000_000_123, 1_800_000_000_000), "supersedes": "ab" * 32,
        "legal_basis": payloads.LegalBasis(code="GDPR-9.2.a", text="explicit consent <b>&amp;</b>"),
    }
    fields.update(over)
    raw = payloads.build_grant(**fields)
    return payloads.parse_payload(payloads.CONSENT_GRANT, raw)


@pytest.mark.parametrize("version", fhir.VERSIONS)
def test_every_grant_field_round_trips(version: str) -> None:
    grant = full_grant()
    ended = fhir.consent_to_fhir(grant, version=version, consent_id="cd" * 32, active=False)
    assert ended["status"] == "inactive"  # revoked, superseded or expired: not imported again
    assert refused(ended) == "Consent.status is 'inactive': only an active Consent becomes a grant"
    out = fhir.consent_to_fhir(grant, version=version, consent_id="cd" * 32)
    assert out["identifier"] == [{"system": fhir.SYS_CONSENT_ID, "value": "cd" * 32}]
    back = fhir.parse_consent(json.dumps(out), version)
    assert back.terms == fhir.GrantTerms.of(grant)
    assert back.patient_key == PATIENT
    # A grantee org, all data classes, and the other decision, too.
    grant = full_grant(grantee="org:hospital-1", data_classes=("*",), decision=payloads.PERMIT, legal_basis=None,
                       sensitivity_labels=(), supersedes=None)
    out = fhir.consent_to_fhir(grant, version=version, consent_id="cd" * 32)
    assert fhir.parse_consent(json.dumps(out)).terms == fhir.GrantTerms.of(grant)


def r5(**provision: object) -> dict:
    return {"resourceType": "Consent", "status": "active", "decision": "permit", "provision": [dict(provision)]}


def refused(doc: dict, version: str | None = None) -> str:
    with pytest.raises(fhir.FhirRefused) as e:
        fhir.parse_consent(json.dumps(doc), version)
    return str(e.value)


def test_resource_types_map_to_whole_data_classes_only() -> None:
    types = [{"system": fhir.RESOURCE_TYPES, "code": t} for t in ("AllergyIntolerance", "Procedure")]
    assert fhir.parse_consent(json.dumps(r5(resourceType=types))).terms.data_classes == ("allergies", "procedures")
    # Observation alone is the vital-signs class; DiagnosticReport alone is no whole class.
    one = [{"system": fhir.RESOURCE_TYPES, "code": "DiagnosticReport"}]
    assert refused(r5(resourceType=one)).startswith(
        "Consent.provision[0].resourceType: DiagnosticReport do(es) not make up a whole data class of the ledger "
        "(DiagnosticReport is part of imaging, laboratory-results)"
    )


def test_other_refusals_name_the_element() -> None:
    conf = [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}]
    assert refused(r5(securityLabel=conf)) == (
        "Consent.provision[0].securityLabel: http://terminology.hl7.org/CodeSystem/v3-Confidentiality#N is not a code "
        "of http://terminology.hl7.org/CodeSystem/v3-ActCode"
    )
    assert refused(r5(purpose=[{"system": fhir.ACT_REASON, "code": "NOPE"}])) == (
        "purposes: unknown purpose of use 'NOPE' (HL7 v3-ActReason PurposeOfUse)"
    )
    assert refused({**r5(), "status": "draft"}) == "Consent.status is 'draft': only an active Consent becomes a grant"
    two = {**r5(), "provision": [{}, {}]}
    assert refused(two) == "Consent.provision: 2 provisions; a grant is one rule, import each as its own Consent"
    assert refused({"resourceType": "Patient"}) == "not a FHIR Consent (resourceType 'Patient')"
    bad = r5(period={"start": "2019-13-01"})
    assert refused(bad).startswith("not a valid FHIR R5 Consent (1 error(s)); first at provision.0.period.start:")
    actors = [
        {"role": {"coding": [{"system": fhir.PARTICIPATION_TYPE, "code": "PRCP"}]}, "reference": {"reference": f"Organization/{o}"}}
        for o in ("a", "b")
    ]
    assert refused(r5(actor=actors)) == (
        "Consent.provision[0].actor: 2 grantees (org:a, org:b); a grant names one, import one Consent per grantee"
    )


def test_the_exported_consent_points_back_to_a_verifiable_log_entry(
    conn: list[str], patient_key: Path, log_key_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]  # noqa: F811 (fixtures imported from test_cli)
) -> None:
    capsys.readouterr()
    source = DATA / "r5" / "Consent-consent-example-notOrg.json"
    imported = run_json(capsys, "fhir", "import", str(source), "--patient-key-file", str(patient_key), *conn)
    assert imported["fhir_version"] == "R5" and imported["grantee"] == "org:f001"
    assert imported["verified"]["inclusion"]["leaf_index"] == imported["index"]  # proven, as grant does
    cid = imported["consent_id"]

    out = tmp_path / "consent.fhir.json"
    for version in ("R4", "R5"):
        run_json(capsys, "fhir", "export", cid, "--patient-key-file", str(patient_key), "--fhir-version", version,
                 "--out", str(out), *conn)
        resource = json.loads(out.read_text())
        assert resource["identifier"] == [{"system": fhir.SYS_CONSENT_ID, "value": cid}]
        assert resource["status"] == "active"
        (log,) = [e for e in resource["extension"] if e["url"] == fhir.EXT_LOG_ENTRY]
        parts = {p["url"]: next(v for k, v in p.items() if k.startswith("value")) for p in log["extension"]}
        assert parts["index"] == str(imported["index"])
        assert parts["origin"] == imported["checkpoint"]["origin"]
        assert base64.b64decode(parts["checkpoint"]).decode().startswith(imported["checkpoint"]["origin"] + "\n")
        # The bundle inside verifies offline with the log key alone.
        bundle = tmp_path / "bundle.json"
        bundle.write_bytes(base64.b64decode(parts["consent-bundle"]))
        checked = run_json(capsys, "verify-bundle", str(bundle), "--log-key-file", str(log_key_file))
        assert checked["index"] == imported["index"] and checked["consent_record"]["record_id"] == cid
        # Importing the export again says the same grant (a new entry: a new nonce and time).
        again = fhir.parse_consent(out.read_text())
        assert again.terms == fhir.parse_consent(source.read_text()).terms
        assert again.patient_key == read_key(patient_key).public_key

    # The text form says what was read from where, and what was verified.
    assert main(["fhir", "import", str(DATA / "r5" / "Consent-consent-example-notTime.json"),
                 "--patient-key-file", str(patient_key), *conn]) == 0
    text = capsys.readouterr().out
    assert "from             FHIR R5 Consent consent-example-notTime" in text
    assert "rule             PERMIT any: collect,access,use,disclose,correct for " in text
    assert "valid            2015-01-01 00:00:00 UTC to 2015-02-02 00:00:00 UTC" in text
    assert "verified: inclusion of leaf" in text

    # Refusals: an example the model cannot express, and a Consent of another patient.
    code, err = run_fail(capsys, "fhir", "import", str(DATA / "r5" / "Consent-consent-example-pkb.json"),
                         "--patient-key-file", str(patient_key), *conn)
    assert code == EXIT_ERROR and f"refused: Consent.provision[0].provision: {NESTED}" in err
    other = tmp_path / "other.key"
    assert main(["keygen", "patient", "--out", str(other)]) == 0
    code, err = run_fail(capsys, "fhir", "import", str(out), "--patient-key-file", str(other), *conn)
    assert code == EXIT_ERROR and "only the patient signs" in err
    code, err = run_fail(capsys, "fhir", "export", "ef" * 32, "--patient-key-file", str(patient_key), *conn)
    assert code == EXIT_ERROR and "has no consent grant" in err


def test_detects_the_version_and_copes_with_input_it_cannot_tell() -> None:
    doc = copy.deepcopy(example("r4/notOrg"))
    assert fhir.detect_version(doc) == fhir.R4
    assert fhir.detect_version(example("r5/notOrg")) == fhir.R5
    assert refused({"resourceType": "Consent", "status": "active"}) == (
        "cannot tell whether this Consent is FHIR R4 or R5: give the version (--fhir-version R4|R5)"
    )
