"""Consent bundles and decision receipts verify offline with only the pinned key, and tampering is caught."""

from __future__ import annotations

import base64
import copy
import json

import pytest

from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.note import Signer, format_verifier_key
from consent_ledger.core.payloads import DataItem
from consent_ledger_client import VerificationError
from consent_ledger_client.bundle import (
    export_consent_bundle,
    export_decision_receipt,
    verify_consent_bundle,
    verify_decision_receipt,
)

from .server_support import (
    OPERATOR,
    connect,
    log_signer,
    log_verifier_key,
    running_server,
)

PATIENT = Ed25519PrivateKey.from_seed(b"\x51" * 32)


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('bundles') / 'log.db'}"
    with running_server(url) as server:
        connect(server, party=OPERATOR).register_party(
            log_signer().private_key, party_id="insurer-1", roles=["insurer"], public_keys=[PATIENT.public_key], display_name="I"
        )
        cid, receipt = connect(server, patient=PATIENT).grant(PATIENT, grantee="org:insurer-1", actions=["access"], purposes=["HPAYMT"], data_classes=["laboratory-results"])
        bundle = export_consent_bundle(receipt.entry, receipt.note, log_verifier_key())
        org = connect(server, party="insurer-1")
        decision = org.check_access(PATIENT.public_key, action="access", purpose="HPAYMT", data=[DataItem("laboratory-results")])
        yield cid, json.loads(json.dumps(bundle)), export_decision_receipt(decision.receipt)


def test_bundle_verifies_offline(artefacts):
    cid, bundle, _ = artefacts
    verified = verify_consent_bundle(json.dumps(bundle), log_verifier_key())
    assert verified.consent_record["record_id"] == cid
    assert verified.consent_record["purposes"] == ["HPAYMT"]


@pytest.mark.parametrize(
    "path,value",
    [
        (("consent_record", "purposes"), ["TREAT"]),
        (("consent_record", "pii_controllers"), ["org:someone-else"]),
        (("log", "index"), 0),
        (("log", "inclusion_proof"), []),
        (("log", "checkpoint"), "forged\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n"),
    ],
)
def test_tampered_bundle_is_refused(artefacts, path, value):
    _, bundle, _ = artefacts
    bad = copy.deepcopy(bundle)
    bad[path[0]][path[1]] = value
    with pytest.raises(VerificationError):
        verify_consent_bundle(bad, log_verifier_key())


def test_bundle_body_swap_is_refused(artefacts):
    _, bundle, _ = artefacts
    bad = copy.deepcopy(bundle)
    env = bytearray(base64.b64decode(bad["log"]["envelope"]))
    env[-5] ^= 1
    bad["log"]["envelope"] = base64.b64encode(bytes(env)).decode()
    with pytest.raises(VerificationError):
        verify_consent_bundle(bad, log_verifier_key())


def test_bundle_under_another_key_is_refused(artefacts):
    _, bundle, _ = artefacts
    other = Signer("ledger.test/log", Ed25519PrivateKey.from_seed(b"\x99" * 32))
    with pytest.raises(VerificationError):
        verify_consent_bundle(bundle, format_verifier_key(other.name, other.public_key))


def test_decision_receipt_verifies_offline(artefacts):
    _, _, receipt = artefacts
    verified = verify_decision_receipt(json.dumps(receipt), log_verifier_key())
    assert verified.decision.decision == "PERMIT"
    assert verified.checkpoint.size >= 2
    bad = dict(receipt)
    raw = bytearray(base64.b64decode(receipt["receipt"]))
    raw[-1] ^= 1
    bad["receipt"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(VerificationError):
        verify_decision_receipt(bad, log_verifier_key())


@pytest.mark.parametrize("deep", ["[" * 100_000 + "]" * 100_000, '{"a":' * 100_000])
def test_deeply_nested_json_is_a_verification_error(deep):
    """Found by fuzzing (tests/test_parser_fuzz.py): json.loads raised RecursionError straight through both
    verifiers, which document VerificationError for any malformed document."""
    with pytest.raises(VerificationError, match="malformed"):
        verify_consent_bundle(deep, log_verifier_key())
    with pytest.raises(VerificationError, match="malformed"):
        verify_decision_receipt(deep, log_verifier_key())
