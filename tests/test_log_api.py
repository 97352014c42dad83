"""The log end to end: a real server on port 0 over a real database, used through the verifying client."""

from __future__ import annotations

import concurrent.futures

import grpc
import pytest

from consent_ledger.core import payloads
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.envelope import sign_envelope
from consent_ledger.core.rfc6962 import hash_leaf
from consent_ledger.v1 import envelope_pb2, log_pb2, log_pb2_grpc
from consent_ledger_client import InconsistentCheckpoints

from .entries_support import PATIENT, grant_envelope
from .server_support import OPERATOR, ledger_client, open_channel, running_server


@pytest.fixture
def server(database_url):
    with running_server(database_url) as s:
        yield s


@pytest.fixture
def client(server, tmp_path):
    """The operator: it may submit (patients' signed entries) and read every entry and range of the log."""
    with ledger_client(server, party=OPERATOR, state_path=tmp_path / "state.json") as c:
        yield c


@pytest.fixture
def stub(server):
    """Raw calls as the operator, so that bad input meets validation, not the authorization check."""
    with open_channel(server.target, OPERATOR) as ch:
        yield log_pb2_grpc.LogServiceStub(ch)


def test_empty_log_has_a_signed_checkpoint(client):
    cp = client.checkpoint().checkpoint
    assert cp.size == 0 and cp.origin == "ledger.test/log"


def test_submit_get_and_dedup(client):
    env = grant_envelope()
    first = client.submit(env)
    assert first.index == 0 and not first.duplicate
    assert first.entry.envelope is not None and first.entry.envelope.raw == env
    again = client.submit(env)
    assert again.index == 0 and again.duplicate
    second = client.submit(grant_envelope())
    # Each batch that changes consents is closed by the sequencer's StateCommit entry (docs/design.md section 5).
    assert second.index == 2
    assert client.get_entry(1).leaf.payload_type == payloads.STATE_COMMIT
    got = client.get_entry(2)
    assert got.leaf.payload_type == payloads.CONSENT_GRANT
    assert got.envelope is not None and got.envelope.signers == (PATIENT.public_key,)
    assert [e.index for e in client.get_entries(0, 10)] == [0, 1, 2, 3]
    index, cp = client.prove_included(hash_leaf(got.leaf_bytes))
    assert index == 2 and cp.size == 4


def test_concurrent_submitters_get_distinct_indices_and_group_commit(server, client):
    envs = [grant_envelope() for _ in range(200)]
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        receipts = list(pool.map(client.submit, envs))
    indices = sorted(r.index for r in receipts)
    assert len(set(indices)) == 200
    notes = {r.note for r in receipts}
    assert len(notes) < 200, "every submission got its own checkpoint: no batching happened"
    size = client.checkpoint().checkpoint.size
    # The other entries are the StateCommits closing each batch: one per distinct checkpoint.
    assert indices[-1] < size == 200 + len(notes)
    kinds = {e.leaf.payload_type for i in range(0, size, 256) for e in client.get_entries(i, i + 256)}
    assert kinds == {payloads.CONSENT_GRANT, payloads.STATE_COMMIT}


def test_state_file_survives_restart_and_detects_rollback(database_url, tmp_path):
    state = tmp_path / "state.json"
    with running_server(database_url) as s:
        with ledger_client(s, patient=PATIENT, state_path=state) as c:
            for _ in range(5):
                c.submit(grant_envelope())
            before = c.checkpoint().checkpoint.size
    with running_server(database_url) as s:
        with ledger_client(s, patient=PATIENT, state_path=state) as c:
            assert c.last_checkpoint is not None and c.last_checkpoint.size == before
            c.submit(grant_envelope())
            assert c.checkpoint().checkpoint.size == before + 2


def _status(stub_call, request) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        stub_call(request, timeout=10)
    return err.value.code(), err.value.details()


def _bad_envelopes() -> dict[str, bytes]:
    good = grant_envelope()
    env = envelope_pb2.Envelope.FromString(good)
    flipped = envelope_pb2.Envelope()
    flipped.CopyFrom(env)
    flipped.signatures[0].sig = bytes([env.signatures[0].sig[0] ^ 1]) + env.signatures[0].sig[1:]
    unsigned = envelope_pb2.Envelope(payload=env.payload, payload_type=env.payload_type)
    other = Ed25519PrivateKey.from_seed(b"\x22" * 32)
    return {
        "garbage": b"\xff\x00garbage",
        "empty": b"",
        "oversized": good + b"\x00" * (70 * 1024),
        "bad signature": flipped.SerializeToString(deterministic=True),
        "no signature": unsigned.SerializeToString(deterministic=True),
        "unknown payload type": sign_envelope("example.Unknown", b"\x01", [PATIENT]),
        "payload not a grant": sign_envelope(payloads.CONSENT_GRANT, b"\xff\xff", [PATIENT]),
        "grant signed by someone else": grant_envelope_signed_by(other),
        "trailing bytes": good + b"\x00",
    }


def grant_envelope_signed_by(key: Ed25519PrivateKey) -> bytes:
    payload = payloads.build_grant(
        patient=PATIENT.public_key, grantee="org:x", actions=["access"], purposes=["TREAT"], data_classes=["imaging"]
    )
    return sign_envelope(payloads.CONSENT_GRANT, payload, [key])


def test_bad_input_gets_the_right_status_and_leaves_the_log_unchanged(client, stub):
    client.submit(grant_envelope())
    before = client.checkpoint().note
    expected = {
        "grant signed by someone else": grpc.StatusCode.PERMISSION_DENIED,
    }
    for name, env in _bad_envelopes().items():
        code, details = _status(stub.Submit, log_pb2.SubmitRequest(envelope=env))
        assert code == expected.get(name, grpc.StatusCode.INVALID_ARGUMENT), (name, code, details)
        assert details and "internal" not in details.lower(), (name, details)
    assert client.checkpoint().note == before
    assert _status(stub.GetEntry, log_pb2.GetEntryRequest(index=5))[0] == grpc.StatusCode.NOT_FOUND
    assert _status(stub.GetEntries, log_pb2.GetEntriesRequest(start=9, end=12))[0] == grpc.StatusCode.OUT_OF_RANGE
    assert _status(stub.GetEntries, log_pb2.GetEntriesRequest(start=3, end=3))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        _status(stub.GetInclusionProof, log_pb2.GetInclusionProofRequest(index=0, tree_size=7))[0]
        == grpc.StatusCode.OUT_OF_RANGE
    )
    assert (
        _status(stub.GetInclusionProof, log_pb2.GetInclusionProofRequest(index=3, tree_size=1))[0]
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        _status(stub.GetInclusionProof, log_pb2.GetInclusionProofRequest(leaf_hash=b"\x00" * 32))[0]
        == grpc.StatusCode.NOT_FOUND
    )
    assert (
        _status(stub.GetInclusionProof, log_pb2.GetInclusionProofRequest(leaf_hash=b"\x00" * 3))[0]
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert _status(stub.GetInclusionProof, log_pb2.GetInclusionProofRequest())[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        _status(stub.GetConsistencyProof, log_pb2.GetConsistencyProofRequest(first=2, second=1))[0]
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        _status(stub.GetConsistencyProof, log_pb2.GetConsistencyProofRequest(first=1, second=9))[0]
        == grpc.StatusCode.OUT_OF_RANGE
    )
    big = log_pb2.SubmitRequest(envelope=b"\x00" * (300 * 1024))
    assert _status(stub.Submit, big)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert client.checkpoint().note == before


def test_split_view_is_reported_with_evidence(database_url, tmp_path):
    """Two servers with the same key but different histories: the client's saved state exposes the fork."""
    state = tmp_path / "state.json"
    with running_server(database_url) as s:
        with ledger_client(s, patient=PATIENT, state_path=state) as c:
            c.submit(grant_envelope())
            c.submit(grant_envelope())
    with running_server(f"sqlite:///{tmp_path / 'fork.db'}") as s:
        with ledger_client(s, patient=PATIENT) as fresh:
            for _ in range(3):
                fresh.submit(grant_envelope())
        with ledger_client(s, patient=PATIENT, state_path=state) as c:
            with pytest.raises(InconsistentCheckpoints) as err:
                c.checkpoint()
    assert b"\n4\n" in err.value.smaller and b"\n6\n" in err.value.larger
    assert len(err.value.proof) > 0
