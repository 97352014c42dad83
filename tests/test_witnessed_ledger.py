"""The ledger with real witnesses (C2SP tlog-witness over loopback HTTP): GetCheckpoint serves cosigned notes, a
witness that is down does not slow Submit, the ledger catches up (and resyncs on 409) when it returns, a restart
serves the persisted witnessed checkpoint, and witness round trips show in metrics and spans."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from consent_ledger.app.witnessing import WitnessEndpoint
from consent_ledger.core.checkpoint import parse_checkpoint
from consent_ledger.core.merkle import verify_consistency
from consent_ledger.core.note import open_note, parse_verifier_key
from consent_ledger.v1 import log_pb2, log_pb2_grpc

from .entries_support import grant_envelope
from .otel_support import installed
from .server_support import LOG_NAME, OPERATOR, ledger_client, log_verifier_key, open_channel, running_server
from .witness_support import WitnessThread, independent_cosignature_check

_spans, _metrics = installed()


def _witness(name: str, tmp_path: Path, port: int = 0) -> WitnessThread:
    verifier = parse_verifier_key(log_verifier_key())
    return WitnessThread(name, {LOG_NAME: [verifier]}, f"sqlite:///{tmp_path / (name.replace('/', '_') + '.db')}",
                         port=port)


def _endpoint(w: WitnessThread, url: str | None = None) -> WitnessEndpoint:
    return WitnessEndpoint(url or w.url, w.key)


def _checkpoint(server) -> log_pb2.GetCheckpointResponse:
    with open_channel(server.target, OPERATOR) as ch:
        return log_pb2_grpc.LogServiceStub(ch).GetCheckpoint(log_pb2.GetCheckpointRequest(), timeout=10)


def _wait_witnessed(server, size: int, timeout_s: float = 20.0) -> log_pb2.GetCheckpointResponse:
    deadline = time.monotonic() + timeout_s
    while True:
        resp = _checkpoint(server)
        if resp.HasField("witnessed_checkpoint"):
            body = resp.witnessed_checkpoint.note.split(b"\n\n")[0] + b"\n"
            if parse_checkpoint(body.decode()).size >= size:
                return resp
        assert time.monotonic() < deadline, f"no witnessed checkpoint of size {size} within {timeout_s} s"
        time.sleep(0.05)


def _cosigners(note: bytes, witnesses: list[WitnessThread]) -> set[str]:
    """The witnesses whose cosignature lines in ``note`` verify, checked independently of core.note."""
    text = note.split(b"\n\n", 1)
    body = text[0] + b"\n"
    lines = [line + b"\n" for line in text[1].split(b"\n") if line]
    found = set()
    for w in witnesses:
        for line in lines:
            if line.decode().startswith("\u2014 " + w.signer.name + " "):
                independent_cosignature_check(line, w.signer.name, w.signer.public_key, body.decode())
                found.add(w.signer.name)
    return found


def _points(name: str) -> list:
    out = []
    data = _metrics.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    out.extend(m.data.data_points)
    return out


def test_get_checkpoint_serves_both_cosignatures(database_url: str, tmp_path: Path) -> None:
    w1, w2 = _witness("witness.test/one", tmp_path), _witness("witness.test/two", tmp_path)
    with w1, w2, running_server(database_url, witnesses=(_endpoint(w1), _endpoint(w2)), witness_quorum=2) as server:
        with ledger_client(server, party=OPERATOR, state_path=tmp_path / "state.json") as client:
            done = client.submit(grant_envelope())
        size = done.entry.checkpoint.size
        resp = _wait_witnessed(server, size)
        witnessed = resp.witnessed_checkpoint.note
        assert _cosigners(witnessed, [w1, w2]) == {w1.signer.name, w2.signer.name}
        # The log's own signature is still there, and the witnessed note is consistent with the latest one.
        wcp = parse_checkpoint(open_note(witnessed, [parse_verifier_key(log_verifier_key())]).text)
        latest = parse_checkpoint(open_note(resp.checkpoint.note, [parse_verifier_key(log_verifier_key())]).text)
        verify_consistency(wcp.size, latest.size, wcp.root_hash, latest.root_hash, list(resp.witnessed_consistency))
        # The latest checkpoint's note carries the cosignatures collected for it too, once they are in.
        deadline = time.monotonic() + 10
        while _cosigners(_checkpoint(server).checkpoint.note, [w1, w2]) != {w1.signer.name, w2.signer.name}:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    spans = [s for s in _spans.get_finished_spans() if s.name == "witness.add_checkpoint"]
    assert spans and {s.attributes["witness"] for s in spans} >= {w1.signer.name, w2.signer.name}
    outcomes = {(p.attributes["witness"], p.attributes["outcome"]) for p in _points("ledger.witness.requests")}
    assert (w1.signer.name, "ok") in outcomes and (w2.signer.name, "ok") in outcomes
    assert any(p.count > 0 for p in _points("ledger.witness.duration"))


def test_no_witnesses_no_witnessed_checkpoint(database_url: str) -> None:
    with running_server(database_url) as server:
        resp = _checkpoint(server)
        assert not resp.HasField("witnessed_checkpoint") and not resp.witnessed_consistency


def test_a_witness_that_is_down_does_not_slow_submit_and_the_ledger_catches_up(
    database_url: str, tmp_path: Path
) -> None:
    # The second witness's address accepts connections but never answers (a hung witness), then a real one.
    hung = socket.socket()
    hung.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)
    port = hung.getsockname()[1]
    w1 = _witness("witness.test/up", tmp_path)
    w2 = _witness("witness.test/late", tmp_path, port=port)
    url2 = f"http://127.0.0.1:{port}"
    with w1, running_server(database_url, witnesses=(_endpoint(w1), _endpoint(w2, url2)), witness_quorum=2) as server:
        with ledger_client(server, party=OPERATOR, state_path=tmp_path / "state.json") as client:
            times = []
            for _ in range(5):
                start = time.perf_counter()
                done = client.submit(grant_envelope())
                times.append(time.perf_counter() - start)
        assert max(times) < 2.0, times
        time.sleep(0.5)
        assert not _checkpoint(server).HasField("witnessed_checkpoint")  # one of two cosigned: no quorum
        hung.close()
        with w2:
            resp = _wait_witnessed(server, done.entry.checkpoint.size, timeout_s=30)
            assert _cosigners(resp.witnessed_checkpoint.note, [w1, w2]) == {w1.signer.name, w2.signer.name}
    outcomes = {(p.attributes["witness"], p.attributes["outcome"]) for p in _points("ledger.witness.requests")}
    assert (w2.signer.name, "unreachable") in outcomes


def test_restart_serves_the_persisted_witnessed_checkpoint_and_resyncs(database_url: str, tmp_path: Path) -> None:
    w1, w2 = _witness("witness.test/a", tmp_path), _witness("witness.test/b", tmp_path)
    with w1, w2:
        endpoints = (_endpoint(w1), _endpoint(w2))
        with running_server(database_url, witnesses=endpoints, witness_quorum=2) as server:
            with ledger_client(server, party=OPERATOR, state_path=tmp_path / "state.json") as client:
                done = client.submit(grant_envelope())
            first = _wait_witnessed(server, done.entry.checkpoint.size).witnessed_checkpoint.note
        # Restarted, with both witnesses unreachable: the persisted witnessed checkpoint is served at once.
        dead = tuple(WitnessEndpoint("http://127.0.0.1:9", e.key) for e in endpoints)
        with running_server(database_url, witnesses=dead, witness_quorum=2) as server:
            persisted = _checkpoint(server).witnessed_checkpoint.note
            assert _cosigners(persisted, [w1, w2]) == {w1.signer.name, w2.signer.name}
            size = parse_checkpoint((persisted.split(b"\n\n")[0] + b"\n").decode()).size
            assert size >= parse_checkpoint((first.split(b"\n\n")[0] + b"\n").decode()).size
        # Restarted with the witnesses: the ledger starts from old size 0, the witnesses answer 409 with the size
        # they hold, and the ledger resyncs and goes on.
        with running_server(database_url, witnesses=endpoints, witness_quorum=2) as server:
            with ledger_client(server, party=OPERATOR, state_path=tmp_path / "state2.json") as client:
                again = client.submit(grant_envelope(grantee="org:hospital-2"))
            resp = _wait_witnessed(server, again.entry.checkpoint.size)
            assert _cosigners(resp.witnessed_checkpoint.note, [w1, w2]) == {w1.signer.name, w2.signer.name}
    outcomes = {(p.attributes["witness"], p.attributes["outcome"]) for p in _points("ledger.witness.requests")}
    assert (w1.signer.name, "resync") in outcomes and (w2.signer.name, "resync") in outcomes


@pytest.mark.parametrize("quorum", [1])
def test_quorum_of_one_with_one_witness_down(database_url: str, tmp_path: Path, quorum: int) -> None:
    w1 = _witness("witness.test/solo", tmp_path)
    with w1, running_server(
        database_url,
        witnesses=(_endpoint(w1), WitnessEndpoint("http://127.0.0.1:9", _witness("witness.test/x", tmp_path).key)),
        witness_quorum=quorum,
    ) as server:
        with ledger_client(server, party=OPERATOR, state_path=tmp_path / "state.json") as client:
            done = client.submit(grant_envelope())
        resp = _wait_witnessed(server, done.entry.checkpoint.size)
        assert _cosigners(resp.witnessed_checkpoint.note, [w1]) == {w1.signer.name}


def test_check_access_carries_the_witnessed_checkpoint(database_url: str, tmp_path: Path) -> None:
    from consent_ledger.core import payloads
    from consent_ledger.core.crypto import Ed25519PrivateKey
    from consent_ledger.core.payloads import DataItem
    from consent_ledger.v1 import access_pb2, access_pb2_grpc

    from .entries_support import PATIENT
    from .server_support import connect, log_signer

    w1, w2 = _witness("witness.test/c1", tmp_path), _witness("witness.test/c2", tmp_path)
    with w1, w2, running_server(database_url, witnesses=(_endpoint(w1), _endpoint(w2)), witness_quorum=2) as server:
        op = connect(server, party=OPERATOR)
        op.register_party(log_signer().private_key, party_id="hospital-1", roles=["hospital"],
                          public_keys=[Ed25519PrivateKey.from_seed(bytes([9]) * 32).public_key], display_name="H")
        op.ledger.submit(grant_envelope())
        size = op.ledger.checkpoint().checkpoint.size
        op.ledger.close()
        _wait_witnessed(server, size)
        with open_channel(server.target, "hospital-1") as ch:
            resp = access_pb2_grpc.AccessServiceStub(ch).CheckAccess(
                access_pb2.CheckAccessRequest(
                    patient=PATIENT.public_key, action="access", purpose="TREAT",
                    data=[payloads.data_item_to_pb(DataItem("laboratory-results"))],
                ),
                timeout=10,
            )
        assert resp.HasField("witnessed_checkpoint")
        assert _cosigners(resp.witnessed_checkpoint.note, [w1, w2]) == {w1.signer.name, w2.signer.name}
        log_v = parse_verifier_key(log_verifier_key())
        wcp = parse_checkpoint(open_note(resp.witnessed_checkpoint.note, [log_v]).text)
        cp = parse_checkpoint(open_note(resp.checkpoint.note, [log_v]).text)
        assert wcp.size <= cp.size
        verify_consistency(wcp.size, cp.size, wcp.root_hash, cp.root_hash, list(resp.witnessed_consistency))


def test_https_witness_with_a_private_ca(database_url: str, tmp_path: Path) -> None:
    from .tls_support import ThrowawayCA

    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    ca = ThrowawayCA(ca_dir)
    pem = ca.issue("localhost", server=True)
    verifier = parse_verifier_key(log_verifier_key())
    w = WitnessThread("witness.test/https", {LOG_NAME: [verifier]}, f"sqlite:///{tmp_path / 'https.db'}",
                      tls=(pem.cert, pem.key))
    with w:
        https = WitnessEndpoint(w.url.replace("http://", "https://"), w.key)
        with running_server(database_url, witnesses=(https,), witness_ca=str(ca.ca_file)) as server:
            with ledger_client(server, party=OPERATOR, state_path=tmp_path / "state.json") as client:
                done = client.submit(grant_envelope())
            resp = _wait_witnessed(server, done.entry.checkpoint.size)
            assert _cosigners(resp.witnessed_checkpoint.note, [w]) == {w.signer.name}
