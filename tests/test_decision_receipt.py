"""Decision bytes and signed receipts."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from consent_ledger.core import receipt as R
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.decision import AccessRequest, Decision, LedgerEntry, Policy, decide
from consent_ledger.core.errors import InvalidInput, VerificationError
from consent_ledger.core.payloads import CONSENT_GRANT, DENY, PERMIT, DataItem, Period, build_grant
from consent_ledger.v1 import access_pb2 as apb
from consent_ledger.v1 import payloads_pb2 as pb

T = 1_800_000_000_000
PATIENT = bytes(range(32))
LEDGER_KEY = Ed25519PrivateKey.from_seed(bytes(32))
OTHER_KEY = Ed25519PrivateKey.from_seed(b"\x01" * 32)
NOTE = (
    "example.org/consent-ledger\n5\nq8K1b+Ww2yq6lFq1oQvVoH1iXQmHyeS3cXj4nFxhCSs=\n\n"
    "\u2014 example.org/consent-ledger Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWGNZBzvByUwAo=\n"
).encode()


def _decision(**req_changes: object) -> tuple[list[LedgerEntry], AccessRequest, Decision]:
    g = build_grant(
        patient=PATIENT, grantee="org:insurer-1", actions=["access"], purposes=["HPAYMT"],
        data_classes=["laboratory-results"], validity=Period(0, T + 60_000), issued_at_ms=T - 10, nonce=bytes(16),
    )
    entries = [LedgerEntry.from_payload(index=0, integrated_time_ms=T - 5, payload_type=CONSENT_GRANT, payload=g, signers=[PATIENT])]
    base = dict(
        patient=PATIENT, requester_id="insurer-1", requester_roles=("insurer",), action="access",
        purpose="CLMATTCH", data=(DataItem("laboratory-results"), DataItem("clinical-notes", ("MH",))),
        data_period=Period(T - 10**9, T), time_ms=T,
    )
    base.update(req_changes)
    r = AccessRequest(**base)  # type: ignore[arg-type]
    return entries, r, decide(entries, r, Policy(implicit="basic-normal"))


def test_decision_bytes_round_trip() -> None:
    _, _, d = _decision()
    data = R.encode_decision(d)
    assert R.encode_decision(d) == data
    assert R.decode_decision(data) == d
    _, _, bg = _decision(requester_roles=("hospital",), purpose="BTG", break_glass=True, break_glass_reason="ED")
    assert R.decode_decision(R.encode_decision(bg)) == bg
    assert bg.obligations


def test_decode_decision_is_strict() -> None:
    _, _, d = _decision()
    data = R.encode_decision(d)
    with pytest.raises(InvalidInput, match="not in canonical form"):
        R.decode_decision(data + b"\xa8\x06\x01")  # unknown field
    with pytest.raises(InvalidInput, match="not a valid protobuf"):
        R.decode_decision(data[:-2])
    m = apb.Decision.FromString(data)
    m.request.ClearField("data_period")
    m.request.data_period.SetInParent()
    with pytest.raises(InvalidInput, match="empty sub-message present"):
        R.decode_decision(m.SerializeToString(deterministic=True))
    m = apb.Decision.FromString(data)
    m.request.purpose = "PAY"
    with pytest.raises(InvalidInput, match="unknown purpose of use 'PAY'"):
        R.decode_decision(m.SerializeToString(deterministic=True))
    m = apb.Decision.FromString(data)
    m.policy.implicit = "allow"
    with pytest.raises(InvalidInput, match="implicit policy"):
        R.decode_decision(m.SerializeToString(deterministic=True))
    m = apb.Decision.FromString(data)
    m.outcomes[0].decision = pb.ACCESS_DECISION_PARTIAL
    with pytest.raises(InvalidInput, match="item's outcome must be PERMIT or DENY"):
        R.decode_decision(m.SerializeToString(deterministic=True))
    m = apb.Decision.FromString(data)
    m.ClearField("policy")
    with pytest.raises(InvalidInput, match="request and policy are required"):
        R.decode_decision(m.SerializeToString(deterministic=True))


def test_receipt_round_trip() -> None:
    _, _, d = _decision()
    body = R.receipt_body(d, NOTE)
    receipt = R.sign_receipt(body, LEDGER_KEY)
    assert R.verify_receipt(receipt, LEDGER_KEY.public_key) is None
    opened = R.open_receipt(receipt, LEDGER_KEY.public_key)
    assert opened.decision == d
    assert opened.checkpoint_note == NOTE
    assert opened.body == body and opened.signer == LEDGER_KEY.public_key
    assert R.receipt_sha256(receipt) == hashlib.sha256(receipt).digest()
    # Deterministic: the same decision at the same checkpoint gives the same receipt.
    assert R.sign_receipt(R.receipt_body(d, NOTE), LEDGER_KEY) == receipt


def test_receipt_is_bound_to_the_checkpoint() -> None:
    _, _, d = _decision()
    assert R.receipt_body(d, NOTE) != R.receipt_body(d, NOTE.replace(b"\n5\n", b"\n6\n"))
    with pytest.raises(InvalidInput, match="checkpoint note"):
        R.receipt_body(d, b"")


def test_receipt_by_another_key() -> None:
    _, _, d = _decision()
    receipt = R.sign_receipt(R.receipt_body(d, NOTE), OTHER_KEY)
    with pytest.raises(VerificationError, match="not signed by the given ledger key"):
        R.verify_receipt(receipt, LEDGER_KEY.public_key)


def test_receipt_keyid_swapped() -> None:
    _, _, d = _decision()
    m = apb.SignedReceipt.FromString(R.sign_receipt(R.receipt_body(d, NOTE), OTHER_KEY))
    m.keyid = "ed25519:" + LEDGER_KEY.public_key.hex()
    with pytest.raises(VerificationError, match="signature does not verify"):
        R.verify_receipt(m.SerializeToString(deterministic=True), LEDGER_KEY.public_key)


def test_every_bit_of_a_receipt_matters() -> None:
    _, _, d = _decision()
    receipt = R.sign_receipt(R.receipt_body(d, NOTE), LEDGER_KEY)
    for i in range(0, len(receipt), 3):
        for bit in (0x01, 0x80):
            bad = bytearray(receipt)
            bad[i] ^= bit
            with pytest.raises(VerificationError):
                R.verify_receipt(bytes(bad), LEDGER_KEY.public_key)
    for bad in (b"", receipt[:-1], receipt + b"\x00", b"\x0a\x05hello"):
        with pytest.raises(VerificationError):
            R.verify_receipt(bad, LEDGER_KEY.public_key)


def test_signature_is_domain_separated() -> None:
    _, _, d = _decision()
    body = R.receipt_body(d, NOTE)
    m = apb.SignedReceipt(body=body, keyid="ed25519:" + LEDGER_KEY.public_key.hex(), signature=LEDGER_KEY.sign(body))
    with pytest.raises(VerificationError, match="signature does not verify"):
        R.verify_receipt(m.SerializeToString(deterministic=True), LEDGER_KEY.public_key)


@pytest.mark.parametrize("mangle", ["unknown field in body", "bad decision in body", "no checkpoint"])
def test_signed_but_malformed_bodies_are_refused(mangle: str) -> None:
    _, _, d = _decision()
    body = R.receipt_body(d, NOTE)
    if mangle == "unknown field in body":
        body += b"\xa8\x06\x01"
    elif mangle == "bad decision in body":
        m = apb.ReceiptBody.FromString(body)
        m.decision.request.action = "peek"
        body = m.SerializeToString(deterministic=True)
    else:
        body = apb.ReceiptBody.FromString(body).decision.SerializeToString(deterministic=True)
        body = apb.ReceiptBody(decision=apb.Decision.FromString(body)).SerializeToString(deterministic=True)
    receipt = R.sign_receipt(body, LEDGER_KEY)
    with pytest.raises(VerificationError, match="receipt"):
        R.verify_receipt(receipt, LEDGER_KEY.public_key)


def test_a_flipped_decision_is_caught_by_re_evaluation() -> None:
    """What a client does: re-run decide on the evidence and compare with the receipt."""
    entries, r, d = _decision()
    flipped = dataclasses.replace(
        d,
        decision=PERMIT,
        outcomes=tuple(dataclasses.replace(o, decision=PERMIT) for o in d.outcomes),
    )
    receipt = R.sign_receipt(R.receipt_body(flipped, NOTE), LEDGER_KEY)
    opened = R.open_receipt(receipt, LEDGER_KEY.public_key)  # the signature is fine ...
    recomputed = decide(entries, opened.decision.request, opened.decision.policy)
    assert recomputed == d and recomputed != opened.decision  # ... but the decision is not
    assert [o.decision for o in recomputed.outcomes] == [PERMIT, DENY]
