"""Hostile input over gRPC: generated requests never get INTERNAL or UNKNOWN, and never change the log.

Every call is made by a caller the authorization table lets through to the handler (so the input meets
validation, not just the door): Submit as the operator or as a registered organisation, reads of the log as
the operator, CheckAccess as the registered organisation, the patient views as the auditor (any patient) or as
the patient itself (a signed request). PERMISSION_DENIED is a proper refusal like any other.

The default suite runs a few hundred inputs; CONSENT_LEDGER_FUZZ_EXAMPLES=100000 makes it a long fuzz run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent_ledger.app.consent_state import StatePolicy
from consent_ledger.core import payloads
from consent_ledger.core.envelope import sign_envelope
from consent_ledger.v1 import (
    access_pb2,
    access_pb2_grpc,
    consent_pb2,
    consent_pb2_grpc,
    envelope_pb2,
    log_pb2,
    log_pb2_grpc,
    payloads_pb2,
)

from .entries_support import PATIENT, grant_envelope
from .server_support import (
    AUDITOR,
    OPERATOR,
    connect,
    log_signer,
    open_channel,
    running_server,
)

EXAMPLES = int(os.environ.get("CONSENT_LEDGER_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


ORG = "insurer-1"


@dataclass
class Stubs:
    log: dict[str, log_pb2_grpc.LogServiceStub]  # by caller: the operator, the registered organisation
    access: access_pb2_grpc.AccessServiceStub  # the registered organisation
    consent: consent_pb2_grpc.ConsentServiceStub  # the auditor: any patient's views
    patient_consent: consent_pb2_grpc.ConsentServiceStub  # the patient PATIENT, signing its requests
    channels: dict[str, grpc.Channel]  # by caller: OPERATOR, ORG, AUDITOR, and "patient" (signed requests)


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    # No idle heartbeat: every change of the checkpoint during the run must come from a request.
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'l.db'}"
    with running_server(url, state=StatePolicy(heartbeat_s=24 * 3600)) as server:
        connect(server, party=OPERATOR).register_party(
            log_signer().private_key, party_id=ORG, roles=["insurer"], public_keys=[PATIENT.public_key], display_name="I"
        )
        connect(server, patient=PATIENT).ledger.submit(grant_envelope(grantee=f"org:{ORG}"))
        channels = [
            open_channel(server.target, party=OPERATOR),
            open_channel(server.target, party=ORG),
            open_channel(server.target, party=AUDITOR),
            open_channel(server.target, patient=PATIENT),
        ]
        op, org, auditor, patient = channels
        try:
            yield Stubs(
                log={OPERATOR: log_pb2_grpc.LogServiceStub(op), ORG: log_pb2_grpc.LogServiceStub(org)},
                access=access_pb2_grpc.AccessServiceStub(org),
                consent=consent_pb2_grpc.ConsentServiceStub(auditor),
                patient_consent=consent_pb2_grpc.ConsentServiceStub(patient),
                channels={OPERATOR: op, ORG: org, AUDITOR: auditor, "patient": patient},
            )
        finally:
            for ch in channels:
                ch.close()


def _checkpoint(log) -> bytes:
    return log.GetCheckpoint(log_pb2.GetCheckpointRequest(), timeout=10).checkpoint.note


def _call(method, request, **kw) -> grpc.StatusCode | None:  # type: ignore[no-untyped-def]
    """Make the call; None if it succeeded, else its status (never INTERNAL or UNKNOWN, always with a message)."""
    try:
        method(request, timeout=10, **kw)
    except grpc.RpcError as e:
        assert e.code() not in BAD, (e.code(), e.details())
        assert e.details(), "an error without a message"
        return e.code()
    return None


_good = grant_envelope()


def _mutated_envelopes() -> st.SearchStrategy[bytes]:
    raw = st.binary(max_size=600)
    flips = st.tuples(st.integers(0, len(_good) - 1), st.integers(1, 255)).map(
        lambda p: _good[: p[0]] + bytes([_good[p[0]] ^ p[1]]) + _good[p[0] + 1 :]
    )
    truncated = st.integers(0, len(_good) - 1).map(lambda n: _good[:n])
    fields = st.builds(
        lambda t, pl, sig, kid: envelope_pb2.Envelope(
            payload_type=t, payload=pl, signatures=[envelope_pb2.Signature(sig=sig, keyid=kid)]
        ).SerializeToString(),
        st.sampled_from([payloads.CONSENT_GRANT, payloads.STATE_COMMIT, payloads.PARTY_REGISTRATION, "x", ""]),
        st.binary(max_size=200),
        st.binary(min_size=0, max_size=70),
        st.sampled_from(["ed25519:" + PATIENT.public_key.hex(), "ed25519:00", ""]),
    )
    signed_junk = st.builds(
        lambda t, pl: sign_envelope(t, pl, [PATIENT]),
        st.sampled_from(list(payloads.PAYLOAD_TYPES)),
        st.binary(min_size=1, max_size=300),
    )
    return st.one_of(raw, flips, truncated, fields, signed_junk)


@FUZZ
@given(env=_mutated_envelopes(), caller=st.sampled_from([OPERATOR, ORG]))
def test_submit_fuzz(target, env, caller):
    log = target.log[OPERATOR]
    before = _checkpoint(log)
    refused = _call(target.log[caller].Submit, log_pb2.SubmitRequest(envelope=env))
    after = _checkpoint(log)
    if refused is not None:
        assert after == before, f"a Submit refused with {refused} changed the log"
    if after != before:  # only a valid, new entry may change the log: check that is what happened
        resp = log.GetEntry(log_pb2.GetEntryRequest(index=0), timeout=10)
        assert resp.checkpoint.note == after


@FUZZ
@given(
    index=st.integers(0, 2**64 - 1),
    size=st.integers(0, 2**64 - 1),
    start=st.integers(0, 2**64 - 1),
    end=st.integers(0, 2**64 - 1),
    leaf_hash=st.binary(max_size=40),
)
def test_read_rpcs_fuzz(target, index, size, start, end, leaf_hash):
    log = target.log[OPERATOR]
    before = _checkpoint(log)
    _call(log.GetEntry, log_pb2.GetEntryRequest(index=index))
    _call(log.GetEntries, log_pb2.GetEntriesRequest(start=start, end=end))
    _call(log.GetInclusionProof, log_pb2.GetInclusionProofRequest(index=index, tree_size=size))
    _call(log.GetInclusionProof, log_pb2.GetInclusionProofRequest(leaf_hash=leaf_hash, tree_size=size))
    _call(log.GetConsistencyProof, log_pb2.GetConsistencyProofRequest(first=start, second=end))
    assert _checkpoint(log) == before


@FUZZ
@given(
    patient=st.one_of(st.just(PATIENT.public_key), st.binary(max_size=40)),
    action=st.sampled_from(["access", "use", "", "x" * 300]),
    purpose=st.sampled_from(["HPAYMT", "TREAT", "ETREAT", "", "nope"]),
    classes=st.lists(st.sampled_from(["imaging", "*", "", "clinical-notes", "zz"]), max_size=40),
    labels=st.lists(st.sampled_from(["MH", "SICKLE", "", "SPI"]), max_size=3),
    period=st.tuples(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**63), 2**63 - 1)),
    time_ms=st.integers(-(2**63), 2**63 - 1),
    bg=st.booleans(),
    reason=st.text(max_size=50),
    token=st.text(max_size=25),
    size=st.integers(0, 2**32 - 1),
)
def test_access_and_views_fuzz(target, patient, action, purpose, classes, labels, period, time_ms, bg, reason, token, size):
    log, access, consent = target.log[OPERATOR], target.access, target.consent
    before = _checkpoint(log)
    req = access_pb2.CheckAccessRequest(
        patient=patient, action=action, purpose=purpose,
        data=[payloads.data_item_to_pb(payloads.DataItem(c, tuple(labels))) for c in classes],
        data_period=payloads_pb2.Period(start_ms=period[0], end_ms=period[1]),
        time_ms=time_ms, break_glass=bg, break_glass_reason=reason,
    )  # fmt: skip
    _call(access.CheckAccess, req)
    _call(consent.ListConsents, consent_pb2.ListConsentsRequest(patient=patient, page_size=size, page_token=token, time_ms=time_ms))
    _call(consent.ListAccessEvents, consent_pb2.ListAccessEventsRequest(patient=patient, page_size=size, page_token=token))
    assert _checkpoint(log) == before


@pytest.mark.parametrize("token", ["¹", "٣", "-1", "1" * 20, "abc", " 1"])
def test_malformed_page_tokens_are_invalid_argument(target, token):
    """Found by the fuzz run: a Unicode digit in a page token once reached int() and came back INTERNAL."""
    consent = target.patient_consent  # the patient's own views, asked by the patient
    with pytest.raises(grpc.RpcError) as err:
        consent.ListConsents(consent_pb2.ListConsentsRequest(patient=PATIENT.public_key, page_token=token), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        consent.ListAccessEvents(consent_pb2.ListAccessEventsRequest(patient=PATIENT.public_key, page_token=token), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("token", [str(2**63 - 1), str(2**63), "9" * 19])
def test_page_tokens_beyond_any_index_are_invalid_argument(target, token):
    """Found by review: a token from 2^63 up reached the database and came back INTERNAL (OverflowError)."""
    patient = PATIENT.public_key
    for call, req in (
        (target.consent.ListConsents, consent_pb2.ListConsentsRequest(patient=patient, page_token=token)),
        (target.consent.ListAccessEvents, consent_pb2.ListAccessEventsRequest(patient=patient, page_token=token)),
        (target.consent.ListBreakGlassReviews, consent_pb2.ListBreakGlassReviewsRequest(page_token=token)),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (token, err.value.details())
        assert "page token" in (err.value.details() or "")


# Every method of the API: (full path, server-streaming), and a valid request of each to mutate.
METHODS = [
    (f"/{svc.full_name}/{m.name}", m.server_streaming)
    for module, name in ((log_pb2, "LogService"), (access_pb2, "AccessService"), (consent_pb2, "ConsentService"))
    for svc in [module.DESCRIPTOR.services_by_name[name]]
    for m in svc.methods
]
_VALID = {
    "Submit": log_pb2.SubmitRequest(envelope=_good).SerializeToString(),
    "GetEntry": log_pb2.GetEntryRequest(index=1).SerializeToString(),
    "ListConsents": consent_pb2.ListConsentsRequest(patient=PATIENT.public_key).SerializeToString(),
    "WatchPatient": consent_pb2.WatchPatientRequest(patient=PATIENT.public_key).SerializeToString(),
    "CheckAccess": access_pb2.CheckAccessRequest(patient=PATIENT.public_key, action="access").SerializeToString(),
}


def _raw_requests() -> st.SearchStrategy[bytes]:
    valid = st.sampled_from(list(_VALID.values()))
    flipped = st.tuples(valid, st.integers(0, 10_000), st.integers(1, 255)).map(
        lambda v: v[0][: v[1] % len(v[0])] + bytes([v[0][v[1] % len(v[0])] ^ v[2]]) + v[0][v[1] % len(v[0]) + 1 :]
    )
    truncated = st.tuples(valid, st.integers(0, 10_000)).map(lambda v: v[0][: v[1] % len(v[0])])
    return st.one_of(st.binary(max_size=300), st.just(b"\xff\xff\xff"), flipped, truncated, valid)


@FUZZ
@given(method=st.sampled_from(METHODS), raw=_raw_requests(), caller=st.sampled_from([OPERATOR, ORG, AUDITOR, "patient"]))
def test_raw_request_bytes_fuzz(target, method, raw, caller):
    """Raw request bytes on every method, from every kind of caller: an answer or a proper refusal, never
    INTERNAL or UNKNOWN (undecodable bytes are INVALID_ARGUMENT); reads never change the log."""
    path, streaming = method
    log = target.log[OPERATOR]
    before = _checkpoint(log)
    channel = target.channels[caller]
    if streaming:  # a watch that is accepted waits for entries: its first answer or its deadline will do
        call = channel.unary_stream(path)(raw, timeout=0.3)
        try:
            next(call, None)
        except grpc.RpcError as e:
            assert e.code() not in BAD, (path, e.code(), e.details())
            assert e.details(), "an error without a message"
        finally:
            call.cancel()
    else:
        _call(channel.unary_unary(path), raw)
    # The writes (Submit and the bulk SubmitBatch and SubmitStream, which take SubmitRequest-shaped bytes as a
    # valid message too; CheckAccess logs access events) may change the log: every other method must not.
    if not path.endswith(("/Submit", "/SubmitBatch", "/SubmitStream", "/CheckAccess")):
        assert _checkpoint(log) == before, f"{path} changed the log"
