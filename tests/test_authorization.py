"""The authorization table, walked: every RPC against every kind of caller, with the exact set allowed.

Runs in the suite's transport (plaintext with the development header, or mutual TLS where the client
certificate names the caller). Patients sign their requests. Allowed means the call was not refused with
PERMISSION_DENIED or UNAUTHENTICATED; any other failure fails the test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from consent_ledger.app.authorization import RULES
from consent_ledger.core import payloads
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.envelope import sign_envelope
from consent_ledger.core.request_auth import HEADER, sign_request
from consent_ledger.v1 import access_pb2, access_pb2_grpc, consent_pb2, consent_pb2_grpc, log_pb2, log_pb2_grpc
from consent_ledger.v1 import payloads_pb2 as pb

from .server_support import (
    AUDITOR,
    LOG_NAME,
    MTLS,
    OPERATOR,
    client_credentials,
    connect,
    open_channel,
    log_signer,
    running_server,
    session_ca,
)

ALICE = Ed25519PrivateKey.from_seed(b"\xa1" * 32)
BOB = Ed25519PrivateKey.from_seed(b"\xb0" * 32)
HOSPITAL = Ed25519PrivateKey.from_seed(b"\xa2" * 32)
INSURER = Ed25519PrivateKey.from_seed(b"\xa3" * 32)

# Caller kind -> (name proven by certificate or development header, patient key signing the requests).
CALLERS: dict[str, tuple[str | None, Ed25519PrivateKey | None]] = {
    "anonymous": (None, None),
    "patient": (None, ALICE),
    "other patient": (None, BOB),
    "hospital": ("hospital-1", None),
    "insurer": ("insurer-1", None),
    "unregistered organisation": ("clinic-x", None),
    "auditor": (AUDITOR, None),
    "operator": (OPERATOR, None),
}
EVERYONE = frozenset(CALLERS)
SUBMITTERS = frozenset({"patient", "other patient", "hospital", "insurer", "operator"})
PATIENT_OWN = frozenset({"patient", "auditor", "operator"})
ORGANISATIONS = frozenset({"hospital", "insurer"})
PRIVILEGED = frozenset({"auditor", "operator"})


class World:
    def __init__(self, server) -> None:  # type: ignore[no-untyped-def]
        self.server = server
        op = connect(server, party=OPERATOR)
        reg = op.register_party(log_signer().private_key, party_id="hospital-1", roles=["hospital"],
                                public_keys=[HOSPITAL.public_key], display_name="H")  # fmt: skip
        op.register_party(log_signer().private_key, party_id="insurer-1", roles=["insurer"],
                          public_keys=[INSURER.public_key], display_name="I")  # fmt: skip
        self.registration_index = reg.index
        assert reg.entry.envelope is not None
        self.registration_envelope = reg.entry.envelope.raw
        alice = connect(server, patient=ALICE)
        payload = payloads.build_grant(patient=ALICE.public_key, grantee="org:hospital-1", actions=["access"],
                                       purposes=["TREAT"], data_classes=["imaging"])  # fmt: skip
        self.grant_envelope = sign_envelope(payloads.CONSENT_GRANT, payload, [ALICE])
        self.grant_id = payloads.consent_id(payload)
        self.grant_index = alice.ledger.submit(self.grant_envelope).index
        # An erased body: Alice's grant to anyone, revoked, then erased by the operator.
        erased_id, erased = alice.grant(ALICE, grantee="any", actions=["access"], purposes=["TREAT"], data_classes=["imaging"])
        alice.revoke(ALICE, erased_id, "entered in error")
        self.erased_index = erased.index
        self.erasure_index = op.erase(log_signer().private_key, erased.index, reason="entered in error").index
        self.size = op.ledger.checkpoint().checkpoint.size
        for c in (op, alice):
            c.ledger.close()

    def channel(self, caller: str) -> grpc.Channel:
        name, key = CALLERS[caller]
        if MTLS and caller == "anonymous":  # no client certificate at all: the TLS handshake refuses it
            port = self.server.target.rsplit(":", 1)[1]
            return grpc.secure_channel(f"localhost:{port}", grpc.ssl_channel_credentials(client_credentials_ca()))
        return open_channel(self.server.target, name, key)


def client_credentials_ca() -> bytes:
    return session_ca().ca_file.read_bytes()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_server(f"sqlite:///{tmp_path_factory.mktemp('authz') / 'l.db'}") as server:
        yield World(server)


Call = Callable[[World, grpc.Channel, tuple[tuple[str, str], ...]], object]


def _unary(stub_cls, method: str, request_of: Callable[[World], object]) -> Call:  # type: ignore[no-untyped-def]
    def call(w: World, ch: grpc.Channel, md: tuple[tuple[str, str], ...]) -> object:
        return getattr(stub_cls(ch), method)(request_of(w), metadata=md, timeout=10)

    return call


def _stream(stub_cls, method: str, request_of: Callable[[World], object]) -> Call:  # type: ignore[no-untyped-def]
    def call(w: World, ch: grpc.Channel, md: tuple[tuple[str, str], ...]) -> object:
        try:
            for _ in getattr(stub_cls(ch), method)(request_of(w), metadata=md, timeout=0.5):
                pass
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:  # the stream was open: nothing happened meanwhile
                raise
        return None

    return call


class _EntryRefusal(grpc.RpcError):
    """A bulk submission's per-entry refusal, raised like a refused call so the walk counts it."""

    def __init__(self, code: int, details: str) -> None:
        self._code = {c.value[0]: c for c in grpc.StatusCode}[code]
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def _raise_entry_errors(results) -> None:  # type: ignore[no-untyped-def]
    for r in results:
        if r.error_code:
            raise _EntryRefusal(r.error_code, r.error_message)


def _bulk(method: str, envelope_of: Callable[[World], bytes]) -> Call:
    """SubmitBatch or SubmitStream with one envelope: allowed when the call and the entry are not refused."""

    def call(w: World, ch: grpc.Channel, md: tuple[tuple[str, str], ...]) -> object:
        stub = log_pb2_grpc.LogServiceStub(ch)
        if method == "SubmitBatch":
            resp = stub.SubmitBatch(log_pb2.SubmitBatchRequest(envelopes=[envelope_of(w)]), metadata=md, timeout=10)
            _raise_entry_errors(resp.results)
            return resp
        answers = list(stub.SubmitStream(iter([log_pb2.SubmitStreamRequest(envelopes=[envelope_of(w)])]), metadata=md, timeout=10))
        assert len(answers) == 1
        _raise_entry_errors(answers[0].results)
        return answers

    return call


LOG, ACCESS, CONSENT = log_pb2_grpc.LogServiceStub, access_pb2_grpc.AccessServiceStub, consent_pb2_grpc.ConsentServiceStub

# (full method, what the case is, the call, exactly who may make it)
CASES: list[tuple[str, str, Call, frozenset[str]]] = [
    ("/consent_ledger.v1.LogService/Submit", "a patient's grant (already logged: answered by dedup)",
     _unary(LOG, "Submit", lambda w: log_pb2.SubmitRequest(envelope=w.grant_envelope)), SUBMITTERS),
    ("/consent_ledger.v1.LogService/Submit", "a party registration (already logged)",
     _unary(LOG, "Submit", lambda w: log_pb2.SubmitRequest(envelope=w.registration_envelope)), frozenset({"operator"})),
    ("/consent_ledger.v1.LogService/SubmitBatch", "a patient's grant (already logged: answered by dedup)",
     _bulk("SubmitBatch", lambda w: w.grant_envelope), SUBMITTERS),
    ("/consent_ledger.v1.LogService/SubmitBatch", "a party registration (already logged): refused per entry",
     _bulk("SubmitBatch", lambda w: w.registration_envelope), frozenset({"operator"})),
    ("/consent_ledger.v1.LogService/SubmitStream", "a patient's grant (already logged: answered by dedup)",
     _bulk("SubmitStream", lambda w: w.grant_envelope), SUBMITTERS),
    ("/consent_ledger.v1.LogService/SubmitStream", "a party registration (already logged): refused per entry",
     _bulk("SubmitStream", lambda w: w.registration_envelope), frozenset({"operator"})),
    ("/consent_ledger.v1.LogService/GetEntry", "the patient's grant to the hospital",
     _unary(LOG, "GetEntry", lambda w: log_pb2.GetEntryRequest(index=w.grant_index)),
     frozenset({"patient", "hospital", "auditor", "operator"})),
    ("/consent_ledger.v1.LogService/GetEntry", "a party registration (public evidence)",
     _unary(LOG, "GetEntry", lambda w: log_pb2.GetEntryRequest(index=w.registration_index)), EVERYONE),
    ("/consent_ledger.v1.LogService/GetEntry", "an erasure record (public: clients check it)",
     _unary(LOG, "GetEntry", lambda w: log_pb2.GetEntryRequest(index=w.erasure_index)), EVERYONE),
    ("/consent_ledger.v1.LogService/GetEntry", "an erased body (only the leaf is left)",
     _unary(LOG, "GetEntry", lambda w: log_pb2.GetEntryRequest(index=w.erased_index)), EVERYONE),
    ("/consent_ledger.v1.LogService/GetEntries", "the whole log",
     _unary(LOG, "GetEntries", lambda w: log_pb2.GetEntriesRequest(start=0, end=w.size)), PRIVILEGED),
    ("/consent_ledger.v1.LogService/GetCheckpoint", "",
     _unary(LOG, "GetCheckpoint", lambda w: log_pb2.GetCheckpointRequest()), EVERYONE),
    ("/consent_ledger.v1.LogService/GetInclusionProof", "",
     _unary(LOG, "GetInclusionProof", lambda w: log_pb2.GetInclusionProofRequest(index=w.grant_index)), EVERYONE),
    ("/consent_ledger.v1.LogService/GetConsistencyProof", "",
     _unary(LOG, "GetConsistencyProof", lambda w: log_pb2.GetConsistencyProofRequest(first=1, second=w.size)),
     EVERYONE),
    ("/consent_ledger.v1.AccessService/CheckAccess", "as itself, about the patient",
     _unary(ACCESS, "CheckAccess", lambda w: access_pb2.CheckAccessRequest(
         patient=ALICE.public_key, action="access", purpose="TREAT", data=[pb.DataItem(data_class="imaging")])),
     ORGANISATIONS),
    ("/consent_ledger.v1.ConsentService/ListConsents", "the patient's",
     _unary(CONSENT, "ListConsents", lambda w: consent_pb2.ListConsentsRequest(patient=ALICE.public_key)), PATIENT_OWN),
    ("/consent_ledger.v1.ConsentService/ListAccessEvents", "the patient's",
     _unary(CONSENT, "ListAccessEvents", lambda w: consent_pb2.ListAccessEventsRequest(patient=ALICE.public_key)),
     PATIENT_OWN),
    ("/consent_ledger.v1.ConsentService/WatchPatient", "the patient's",
     _stream(CONSENT, "WatchPatient", lambda w: consent_pb2.WatchPatientRequest(patient=ALICE.public_key)),
     PATIENT_OWN),
    ("/consent_ledger.v1.ConsentService/ListBreakGlassReviews", "the privacy officer's queue",
     _unary(CONSENT, "ListBreakGlassReviews", lambda w: consent_pb2.ListBreakGlassReviewsRequest()), PRIVILEGED),
    ("/consent_ledger.v1.ConsentService/WatchRevocations", "its own",
     _stream(CONSENT, "WatchRevocations", lambda w: consent_pb2.WatchRevocationsRequest()), ORGANISATIONS),
]  # fmt: skip

REFUSED = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)


def test_every_rpc_of_the_api_is_in_the_table_and_walked() -> None:
    api = {
        f"/{svc.full_name}/{m.name}"
        for mod in (log_pb2, access_pb2, consent_pb2)
        for svc in mod.DESCRIPTOR.services_by_name.values()
        for m in svc.methods
    }
    assert set(RULES) == api
    assert {m for m, *_ in CASES} == api


@pytest.mark.parametrize(("method", "what", "call", "allowed"), CASES, ids=[f"{m.rsplit('/', 1)[1]}:{w}" for m, w, _, _ in CASES])
def test_walk(world: World, method: str, what: str, call: Call, allowed: frozenset[str]) -> None:
    got = set()
    for caller in CALLERS:
        with world.channel(caller) as ch:
            try:
                call(world, ch, ())
            except grpc.RpcError as e:
                if MTLS and caller == "anonymous":
                    assert e.code() == grpc.StatusCode.UNAVAILABLE, (caller, e.code(), e.details())
                    continue  # under mTLS a caller without a certificate never reaches the server
                assert e.code() in REFUSED, (caller, e.code(), e.details())
                continue
        got.add(caller)
    expected = allowed - {"anonymous"} if MTLS else allowed
    assert got == expected, f"{method} ({what}): allowed {sorted(got)}, expected {sorted(expected)}"


# -- patient request signatures -------------------------------------------------------------------------------


def _signed_list(world: World, *, key: Ed25519PrivateKey = ALICE, timestamp_ms: int | None = None,
                 patient: bytes | None = None, signed_patient: bytes | None = None, header: str | None = None):  # type: ignore[no-untyped-def]
    """ListConsents for ``patient`` with a hand-made signature (over ``signed_patient``'s request if given)."""
    method = "/consent_ledger.v1.ConsentService/ListConsents"
    request = consent_pb2.ListConsentsRequest(patient=patient or ALICE.public_key)
    signed = consent_pb2.ListConsentsRequest(patient=signed_patient or request.patient)
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    value = header or sign_request(key, LOG_NAME, method, signed.SerializeToString(deterministic=True), timestamp_ms=ts).header_value()
    port = world.server.target.rsplit(":", 1)[1]
    ch = (grpc.secure_channel(f"localhost:{port}", client_credentials("patient-app")) if MTLS
          else grpc.insecure_channel(world.server.target))  # fmt: skip
    with ch:
        stub = consent_pb2_grpc.ConsentServiceStub(ch)
        return stub.ListConsents(request, metadata=((HEADER, value),), timeout=10), value


def test_a_fresh_signature_is_accepted_once(world: World) -> None:
    resp, header = _signed_list(world)
    assert resp.entries
    with pytest.raises(grpc.RpcError) as err:
        _signed_list(world, header=header)  # the very same signed request again
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "already used" in (err.value.details() or "")


@pytest.mark.parametrize(
    ("case", "kwargs", "message"),
    [
        ("stale", {"timestamp_ms": int(time.time() * 1000) - 10 * 60_000}, "from the server's clock"),
        ("future", {"timestamp_ms": int(time.time() * 1000) + 10 * 60_000}, "from the server's clock"),
        ("another request", {"signed_patient": BOB.public_key}, "does not verify"),
        ("malformed", {"header": "v1 key=zz"}, "malformed"),
    ],
)
def test_bad_signatures_are_unauthenticated(world: World, case: str, kwargs: dict, message: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _signed_list(world, **kwargs)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, case
    assert message in (err.value.details() or ""), err.value.details()


def test_a_signature_by_another_patient_reads_nothing_of_alice(world: World) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _signed_list(world, key=BOB)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_an_organisation_reads_a_grant_only_while_a_consent_lets_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with running_server(f"sqlite:///{tmp_path / 'l.db'}") as server:
        w = World(server)
        hospital = connect(server, party="hospital-1")
        assert hospital.ledger.get_entry(w.grant_index).index == w.grant_index
        alice = connect(server, patient=ALICE)
        revocation = alice.revoke(ALICE, w.grant_id, "moved away")
        with pytest.raises(grpc.RpcError) as err:
            hospital.ledger.get_entry(w.grant_index)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError):
            hospital.ledger.get_entry(revocation.index)
        # The auditor still reads both; the patient too.
        auditor = connect(server, party=AUDITOR)
        assert [e.index for e in auditor.ledger.get_entries(w.grant_index, revocation.index + 1)][-1] == revocation.index
        assert alice.ledger.get_entry(revocation.index).index == revocation.index


def test_a_delegate_reads_and_watches_for_the_patient_only_while_in_force(tmp_path) -> None:  # type: ignore[no-untyped-def]
    guardian = Ed25519PrivateKey.from_seed(b"\xa7" * 32)
    with running_server(f"sqlite:///{tmp_path / 'l.db'}") as server:
        w = World(server)
        alice, by_guardian = connect(server, patient=ALICE), connect(server, patient=guardian)
        with pytest.raises(grpc.RpcError) as err:
            by_guardian.list_consents(ALICE.public_key)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        delegation_id, _ = alice.delegate(ALICE, delegate=guardian.public_key, relationship="guardian", scope=["grant"])
        listing = by_guardian.list_consents(ALICE.public_key)
        assert w.grant_id in {c.consent_id for c in listing.consents}
        assert by_guardian.ledger.get_entry(w.grant_index).index == w.grant_index
        # The guardian watches Alice's entries; the revocation of its delegation ends its watch.
        watched: list[object] = []

        def watch() -> None:
            try:
                for v in by_guardian.watch_patient(ALICE.public_key, timeout=20):
                    watched.append(v.index)
            except grpc.RpcError as e:
                watched.append(e.code())

        watcher = threading.Thread(target=watch)
        watcher.start()
        broker, deadline = server.service.consents.broker, time.monotonic() + 10
        while not broker.subscribers(("patient", ALICE.public_key)):
            assert time.monotonic() < deadline, "the watch never subscribed"
            time.sleep(0.01)
        granted = alice.grant(ALICE, grantee="any", actions=["access"], purposes=["TREAT"], data_classes=["imaging"])[1]
        alice.revoke(ALICE, delegation_id, "no longer needed")
        watcher.join(20)
        assert watched[0] == granted.index and watched[-1] == grpc.StatusCode.PERMISSION_DENIED, watched
        with pytest.raises(grpc.RpcError) as err:
            by_guardian.list_consents(ALICE.public_key)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_patient_checks_an_erased_body_against_its_public_record(world: World) -> None:
    listing = connect(world.server, patient=ALICE).list_consents(ALICE.public_key)
    assert [v.index for v in listing.erased] == [world.erased_index]
    assert listing.erased[0].erased_by == world.erasure_index
