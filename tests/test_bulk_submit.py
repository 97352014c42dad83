"""Bulk submission end to end (SubmitBatch, SubmitStream): a real server on each storage backend, used through the
verifying client. Every envelope gets its own answer, in order: good ones their index and proof, bad ones their own
status code, none holding up another; duplicates answer with the first index; a stream's unanswered entries are
bounded whatever the client does; a lying answer is caught by the client."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from consent_ledger.core import payloads
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.envelope import sign_envelope
from consent_ledger.server.limits import RateLimit
from consent_ledger.v1 import log_pb2, log_pb2_grpc
from consent_ledger_client import EntryRefused, SubmitReceipt, VerificationError
from consent_ledger_client.client import CallerIdentity

from .entries_support import PATIENT, grant_envelope, revocation_envelope
from .otel_support import installed
from .server_support import (
    LOG_NAME,
    MTLS,
    OPERATOR,
    client_credentials,
    ledger_client,
    log_signer,
    running_server,
    transport_channel,
)
from .tamper_support import TamperProxy


def _patient(i: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_seed(i.to_bytes(4, "big") * 8)


def _grants(n: int, start: int = 0) -> list[bytes]:
    return [grant_envelope(_patient(start + i)) for i in range(n)]


def _bad_signature(env: bytes) -> bytes:
    """A grant whose signature does not verify (its payload changed after signing)."""
    return env.replace(b"laboratory-results", b"laboratory-resulTs")


@pytest.fixture
def server(database_url):
    with running_server(database_url) as s:
        yield s


@pytest.mark.parametrize("via", ["stream", "batch"])
def test_mixed_entries_each_get_their_own_answer(server, tmp_path, via: str) -> None:
    good = _grants(4)
    registration = sign_envelope(
        payloads.PARTY_REGISTRATION,
        payloads.build_party_registration(party_id="clinic-9", roles=["hospital"], public_keys=[_patient(99).public_key],
                                          display_name="Clinic"),  # fmt: skip
        [log_signer().private_key],
    )
    envelopes = [
        good[0],
        b"\x00not an envelope",  # malformed
        good[1],
        _bad_signature(good[2]),  # signature does not verify
        revocation_envelope("ab" * 32),  # names no logged consent
        registration,  # only the operator registers parties: this caller is a patient
        good[0],  # the same bytes again in the same call
        good[3],
    ]
    with ledger_client(server, patient=PATIENT, state_path=tmp_path / "state.json") as client:
        out = client.submit_many(envelopes, via=via, per_message=3)
        assert len(out) == len(envelopes)
        kinds = [type(r).__name__ for r in out]
        assert kinds == ["SubmitReceipt", "EntryRefused", "SubmitReceipt", "EntryRefused", "EntryRefused",
                         "EntryRefused", "SubmitReceipt", "SubmitReceipt"], [str(r) for r in out]  # fmt: skip
        refused = {r.position: r for r in out if isinstance(r, EntryRefused)}
        assert refused[1].code is grpc.StatusCode.INVALID_ARGUMENT
        assert refused[3].code is grpc.StatusCode.INVALID_ARGUMENT and "signature" in refused[3].details
        assert refused[4].code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND), refused[4]
        assert refused[5].code is grpc.StatusCode.PERMISSION_DENIED
        # Each refusal is what Submit says of that entry alone.
        for position, r in refused.items():
            with pytest.raises(grpc.RpcError) as err:
                client.submit(envelopes[position])
            assert err.value.code() is r.code and err.value.details() == r.details
        receipts = {i: r for i, r in enumerate(out) if isinstance(r, SubmitReceipt)}
        assert receipts[6].index == receipts[0].index and receipts[6].duplicate and not receipts[0].duplicate
        assert len({receipts[i].index for i in (0, 2, 7)}) == 3
    with ledger_client(server, party=OPERATOR) as operator:
        for i, r in receipts.items():
            assert r.entry.envelope is not None and r.entry.envelope.raw == envelopes[i]
            got = operator.get_entry(r.index)  # the same entry, read back and proven again
            assert got.envelope is not None and got.envelope.raw == envelopes[i]


def test_duplicates_answer_with_the_first_index(server, tmp_path) -> None:
    first, second, third = _grants(3, start=10)
    with ledger_client(server, party=OPERATOR, state_path=tmp_path / "state.json") as client:
        logged = client.submit(first)
        for via in ("stream", "batch"):
            out = client.submit_many([first, second, second, first, third], via=via)
            assert all(isinstance(r, SubmitReceipt) for r in out), out
            assert out[0].index == out[3].index == logged.index and out[0].duplicate and out[3].duplicate
            assert out[1].index == out[2].index and out[2].duplicate
            assert out[4].index not in (logged.index, out[1].index)
        # The second pass found everything logged by the first.
        assert all(r.duplicate for r in client.submit_many([first, second, third], via="batch"))


def test_many_messages_through_one_stream_stay_in_order(server, tmp_path) -> None:
    envelopes = _grants(300, start=1000)
    with ledger_client(server, party=OPERATOR, state_path=tmp_path / "state.json") as client:
        out = client.submit_many(envelopes, via="stream", per_message=7, window=3)
        assert [r.entry.envelope.raw for r in out if isinstance(r, SubmitReceipt) and r.entry.envelope] == envelopes
        indices = [r.index for r in out if isinstance(r, SubmitReceipt)]
        assert indices == sorted(set(indices)) and len(indices) == 300  # indices follow the order sent
        assert client.last_checkpoint is not None and client.last_checkpoint.size > max(
            r.index for r in out if isinstance(r, SubmitReceipt)
        )


def test_a_message_over_the_entry_limit_is_refused(server) -> None:
    channel = _channel(server.target)
    with channel:
        stub = log_pb2_grpc.LogServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.SubmitBatch(log_pb2.SubmitBatchRequest(envelopes=[b"x"] * 1025), timeout=10)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "at most 1024" in (err.value.details() or "")


def test_rate_limit_counts_entries(tmp_path) -> None:
    with running_server(f"sqlite:///{tmp_path / 'l.db'}", rate_limit=RateLimit(per_second=0.001, burst=10)) as server:
        with ledger_client(server, party=OPERATOR) as client:
            assert len(client.submit_many(_grants(8), via="batch")) == 8  # 8 of the 10 tokens
            with pytest.raises(grpc.RpcError) as err:
                client.submit_many(_grants(3, start=50), via="batch")  # 3 more entries: only 2 tokens left
            assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    with running_server(f"sqlite:///{tmp_path / 's.db'}", rate_limit=RateLimit(per_second=0.001, burst=10)) as server:
        with ledger_client(server, party=OPERATOR) as client:
            answered = []
            with pytest.raises(grpc.RpcError) as err:
                for r in client.submit_iter(_grants(12, start=60), via="stream", per_message=4, window=1):
                    answered.append(r)
            assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert len(answered) == 8 and all(isinstance(r, SubmitReceipt) for r in answered)  # the first two messages


# -- flow control ----------------------------------------------------------------------------------------------


def _channel(target: str, options: list[tuple[str, int]] | None = None) -> grpc.Channel:
    """The operator's raw channel in the suite's transport, with channel options."""
    if MTLS:
        port = target.rsplit(":", 1)[1]
        return grpc.secure_channel(f"localhost:{port}", client_credentials(OPERATOR), options=options)
    return grpc.intercept_channel(grpc.insecure_channel(target, options=options), CallerIdentity(party=OPERATOR))


def _stream_counts(window: int) -> dict[str, int]:
    """The server's ledger.bulk.stream.messages for streams with this window: read, answered, written."""
    out: dict[str, int] = {}
    data = installed()[1].get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == "ledger.bulk.stream.messages":
                    for dp in m.data.data_points:
                        if dp.attributes.get("ledger.bulk.window") == window:
                            out[str(dp.attributes["ledger.bulk.stage"])] = int(dp.value)
    return out


def _in_flight_max(window: int) -> float:
    data = installed()[1].get_metrics_data()
    best = 0.0
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == "ledger.bulk.in_flight":
                    for dp in m.data.data_points:
                        if dp.attributes.get("ledger.bulk.window") == window:
                            best = max(best, dp.max)
    return best


def test_a_client_that_does_not_read_cannot_grow_the_server_s_memory(tmp_path) -> None:
    """The client offers 3,000 messages and reads no response. The server reads messages only while its window
    (here 7 entries) has room, and frees room only when an answer has been handed to the transport, which stops
    taking answers once the client's flow-control window is full: the server stops reading. The bound is on counts
    (messages read but not written, entries in flight), not on time."""
    installed()  # the session's metric reader
    window, offered_max = 7, 3000
    envelope = grant_envelope(_patient(4242))
    with running_server(f"sqlite:///{tmp_path / 'l.db'}", rate_limit=RateLimit(stream_window_entries=window)) as server:
        # A client that grants the server only a small flow-control window (no BDP growth), as a slow reader does.
        options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 16384)]
        with _channel(server.target, options) as channel:
            stub = log_pb2_grpc.LogServiceStub(channel)
            offered = 0

            def requests() -> Iterator[log_pb2.SubmitStreamRequest]:
                nonlocal offered
                for _ in range(offered_max):
                    offered += 1
                    yield log_pb2.SubmitStreamRequest(envelopes=[envelope])

            call = stub.SubmitStream(requests(), timeout=300)
            # Wait (no assertion on time) until the server is stalled: every message it read is answered, its window
            # is full, and the counts hold still across consecutive looks.
            stalled, last, deadline = 0, None, time.monotonic() + 120
            while stalled < 5 and time.monotonic() < deadline:
                time.sleep(0.1)
                c = _stream_counts(window)
                full = c.get("read", 0) - c.get("written", 0) >= window and c.get("answered") == c.get("read")
                stalled = stalled + 1 if full and c == last else 0
                last = c
            assert stalled >= 5, f"the server never stopped reading: {last}"
            assert last is not None
            read, written = last["read"], last["written"]
            assert read - written == window  # held unanswered: exactly the window
            assert read < offered_max // 4, last  # far from all that was offered
            assert offered < offered_max // 2, offered  # the transport stopped taking requests too
            # Now read: every message is answered, in order, and the window never held more than its size.
            answers = [r for r in call]
            assert len(answers) == offered_max
            assert answers[0].results[0].error_code == 0 and not answers[0].results[0].duplicate
            assert all(a.results[0].index == answers[0].results[0].index and a.results[0].duplicate for a in answers[1:])
    assert _in_flight_max(window) <= window


# -- a lying server --------------------------------------------------------------------------------------------


def _flip(b: bytes) -> bytes:
    return bytes(b[:-1]) + bytes([b[-1] ^ 1])


LIES = {
    "wrong index": lambda r: setattr(r.results[1], "index", r.results[1].index + 1),
    "proof hash altered": lambda r: r.results[0].inclusion_proof.__setitem__(0, _flip(r.results[0].inclusion_proof[0])),
    "proof hash dropped": lambda r: r.results[0].inclusion_proof.__delitem__(-1),
    "leaf of another entry": lambda r: setattr(r.results[0], "leaf", r.results[1].leaf),
    "checkpoint signature": lambda r: setattr(r.checkpoints[0], "note", _flip(r.checkpoints[0].note[:-1]) + b"\n"),
    "result missing": lambda r: r.results.__delitem__(-1),
    "refused and logged at once": lambda r: (setattr(r.results[0], "error_code", 9), setattr(r.results[0], "error_message", "no")),
    "names a checkpoint it lacks": lambda r: setattr(r.results[0], "checkpoint", 5),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_lying_answer_is_caught(tmp_path, lie: str) -> None:
    with running_server(f"sqlite:///{tmp_path / 'l.db'}") as server, TamperProxy(server.target) as proxy:
        with ledger_client(proxy.target, party=OPERATOR) as client:
            # Untouched, the proxy's answers verify.
            assert all(isinstance(r, SubmitReceipt) for r in client.submit_many(_grants(3), via="batch"))
            with proxy.tampering("SubmitBatch", LIES[lie]):
                with pytest.raises(VerificationError):
                    client.submit_many(_grants(3, start=20), via="batch")


def test_the_stream_is_signed_once_by_a_patient(server, tmp_path) -> None:
    """A patient's stream carries one request signature (over an empty body); a replayed signature is refused."""
    envelope = grant_envelope(grantee="any")
    with ledger_client(server, patient=PATIENT, state_path=tmp_path / "s.json") as client:
        out = client.submit_many([envelope, grant_envelope(grantee="role:hospital")])
        assert all(isinstance(r, SubmitReceipt) for r in out)
    captured: list[str] = []

    class Capture(grpc.StreamStreamClientInterceptor):
        def intercept_stream_stream(self, continuation, details, requests):  # type: ignore[no-untyped-def]
            captured.extend(v for k, v in details.metadata or () if k == "x-consent-ledger-request-signature")
            return continuation(details, requests)

    def send(channel: grpc.Channel) -> list[log_pb2.SubmitStreamResponse]:
        stub = log_pb2_grpc.LogServiceStub(channel)
        return list(stub.SubmitStream(iter([log_pb2.SubmitStreamRequest(envelopes=[envelope])]), timeout=10))

    signing = CallerIdentity(key=PATIENT, origin=LOG_NAME)
    with grpc.intercept_channel(transport_channel(server.target), signing, Capture()) as ch:
        assert send(ch)[0].results[0].duplicate
    assert len(captured) == 1
    with transport_channel(server.target) as raw:
        replay = grpc.intercept_channel(raw, _Header(captured[0]))
        with pytest.raises(grpc.RpcError) as err:
            send(replay)
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED


class _Header(grpc.StreamStreamClientInterceptor):
    def __init__(self, value: str) -> None:
        self._value = value

    def intercept_stream_stream(self, continuation, details, requests):  # type: ignore[no-untyped-def]
        from consent_ledger_client.client import _CallDetails

        md = [*(details.metadata or ()), ("x-consent-ledger-request-signature", self._value)]
        return continuation(
            _CallDetails(details.method, details.timeout, md, details.credentials, None, None), requests
        )


def test_concurrent_streams_and_single_submits_share_the_sequencer(server, tmp_path) -> None:
    envelopes = _grants(200, start=5000)
    results: dict[str, list] = {}

    def bulk(name: str, part: list[bytes], via: str) -> None:
        with ledger_client(server, party=OPERATOR) as c:
            results[name] = c.submit_many(part, via=via, per_message=16)

    threads = [
        threading.Thread(target=bulk, args=("a", envelopes[:100], "stream")),
        threading.Thread(target=bulk, args=("b", envelopes[100:], "batch")),
    ]
    for t in threads:
        t.start()
    with ledger_client(server, party=OPERATOR) as c:
        single = [c.submit(e) for e in _grants(10, start=9000)]
    for t in threads:
        t.join()
    indices = [r.index for r in results["a"] + results["b"]] + [r.index for r in single]
    assert len(set(indices)) == 210
