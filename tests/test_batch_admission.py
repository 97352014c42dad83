"""Admission in the batch (issue 12 items 1-3): a submission is parsed and verified once, on its own; every rule
that reads the log's state runs once per batch, inside the batch's transaction, as set operations; a refused entry
gets its own precise error and never blocks its batch-mates; nothing parses an entry twice."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import event

from consent_ledger.app.consent_state import ConsentState, StatePolicy
from consent_ledger.app.consents import ConsentLedger
from consent_ledger.app.errors import AlreadyExists, NotFound, PermissionDenied
from consent_ledger.app.ledger import Ledger
from consent_ledger.app.sequencer import Appended
from consent_ledger.core import payloads, vrf
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.envelope import parse_envelope, sign_envelope
from consent_ledger.storage import open_store
from consent_ledger.storage.consent_index import SqlConsentIndex
from consent_ledger.storage.map_store import SqlMapStore
from consent_ledger.v1 import log_pb2, log_pb2_grpc

from .entries_support import grant_envelope, revocation_envelope
from .server_support import OPERATOR, log_signer, open_channel, running_server

ALICE = Ed25519PrivateKey.from_seed(b"\x0a" * 32)
BOB = Ed25519PrivateKey.from_seed(b"\x0b" * 32)
MALLORY = Ed25519PrivateKey.from_seed(b"\x0c" * 32)


class InProcess:
    """A ledger wired as the service wires it, driven batch by batch (no worker, no server)."""

    def __init__(self, url: str) -> None:
        self.store = open_store(url)
        signer = log_signer()
        index = SqlConsentIndex(self.store)
        state = ConsentState(index, SqlMapStore(self.store), signer, StatePolicy(), vrf.MapKeyProver(vrf.VrfPrivateKey.generate()))
        self.consents = ConsentLedger(index, state, signer)
        self.ledger = Ledger(
            self.store, signer, check_payload=self.consents.check, prepare_batch=self.consents.prepare_batch,
            on_integrated=self.consents.on_integrated, admit=self.consents.admit, on_reset=self.consents.reset,
        )  # fmt: skip
        self.consents.attach(self.ledger.reader, lambda: self.ledger.sequencer.latest, self.ledger.sequencer.append, None)
        self.ledger.open()

    def batch(self, raws: list[bytes]) -> list[Appended | Exception]:
        return self.ledger.sequencer.integrate_batch([self.ledger.validate(r) for r in raws])


@pytest.fixture
def inproc(database_url: str) -> Iterator[InProcess]:
    ip = InProcess(database_url)
    try:
        yield ip
    finally:
        ip.store.close()


def _grant(key: Ed25519PrivateKey, grantee: str = "org:hospital-1", **kw: object) -> bytes:
    return grant_envelope(key, grantee, **kw)


def _same_payload_resigned(raw: bytes, key: Ed25519PrivateKey) -> bytes:
    """Another envelope (two signatures) around the same payload: the same consent id."""
    env = parse_envelope(raw)
    return sign_envelope(env.payload_type, env.payload, [key, MALLORY])


def test_a_refused_entry_gets_its_own_error_and_never_blocks_its_batch_mates(inproc: InProcess) -> None:
    alice = _grant(ALICE, nonce=b"\x01" * 16)
    (first,) = inproc.batch([alice])
    assert isinstance(first, Appended)
    alice_cid = payloads.consent_id(parse_envelope(alice).payload)
    results = inproc.batch([
        _same_payload_resigned(alice, ALICE),  # its consent id is logged: ALREADY_EXISTS
        _grant(BOB, nonce=b"\x02" * 16),
        revocation_envelope("ab" * 32, BOB),  # no such consent: NOT_FOUND
        revocation_envelope(alice_cid, BOB),  # another patient's consent: PERMISSION_DENIED
        _grant(ALICE, nonce=b"\x03" * 16),
        alice,  # the same envelope again: its first index
    ])  # fmt: skip
    assert isinstance(results[0], AlreadyExists) and "already in the log" in str(results[0])
    assert isinstance(results[2], NotFound) and "no such consent" in str(results[2])
    assert isinstance(results[3], PermissionDenied) and "another patient" in str(results[3])
    ok = [r for r in results if isinstance(r, Appended)]
    assert [r.index for r in ok][:2] == [first.index + 2, first.index + 3]  # after the first batch's StateCommit
    assert isinstance(results[5], Appended) and results[5].duplicate and results[5].index == first.index


def test_entries_of_one_batch_are_judged_in_order(inproc: InProcess) -> None:
    """Two envelopes of one consent in one batch: the first is logged, the second refused; a revocation after
    its grant in the same batch is admitted and ends it."""
    raw = _grant(ALICE, nonce=b"\x04" * 16)
    cid = payloads.consent_id(parse_envelope(raw).payload)
    results = inproc.batch([raw, _same_payload_resigned(raw, ALICE), revocation_envelope(cid, ALICE)])
    assert isinstance(results[0], Appended) and isinstance(results[2], Appended)
    assert isinstance(results[1], AlreadyExists)
    assert inproc.consents.state.in_force_ids({(ALICE.public_key, "org:hospital-1")}) == {(ALICE.public_key, "org:hospital-1"): set()}


def _statements(inproc: InProcess, raws: list[bytes]) -> int:
    count = 0

    def count_it(*_: object) -> None:
        nonlocal count
        count += 1

    engine = inproc.store.engine
    event.listen(engine, "before_cursor_execute", count_it)
    try:
        results = inproc.batch(raws)
    finally:
        event.remove(engine, "before_cursor_execute", count_it)
    assert all(isinstance(r, Appended) for r in results), results
    return count


def test_a_batch_reads_its_facts_as_sets(inproc: InProcess) -> None:
    """The SQL a batch of grants costs does not grow with the number of entries or patients: each fact is read
    once for the whole batch (on the old code every patient's in-force set was one more read)."""
    keys = [Ed25519PrivateKey.from_seed(bytes([i]) * 32) for i in range(1, 41)]
    inproc.batch([_grant(keys[0], nonce=b"\x00" * 16)])  # the log's first batch writes more (first checkpoint)
    small = _statements(inproc, [_grant(k, nonce=b"\x05" * 16) for k in keys[1:5]])
    large = _statements(inproc, [_grant(k, nonce=b"\x06" * 16) for k in keys[5:]])
    # A larger batch may walk one more level of the map (one read per level, not per key).
    assert small <= large <= small + 2


def test_nothing_parses_an_entry_twice(inproc: InProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation parses each payload once; the batch (admission, index rows, map update) parses none of them
    again: only the StateCommit the ledger writes itself is parsed in the batch."""
    keys = [Ed25519PrivateKey.from_seed(bytes([i]) * 32) for i in range(50, 58)]
    inproc.batch([_grant(keys[0], nonce=b"\x00" * 16)])
    validated = [inproc.ledger.validate(_grant(k, nonce=b"\x07" * 16)) for k in keys[1:]]
    parsed: list[str] = []
    real = payloads.parse_payload

    def counting(payload_type: str, payload: bytes) -> payloads.Payload:
        parsed.append(payload_type)
        return real(payload_type, payload)

    monkeypatch.setattr(payloads, "parse_payload", counting)
    results = inproc.ledger.sequencer.integrate_batch(validated)
    assert all(isinstance(r, Appended) for r in results)
    assert parsed == [payloads.STATE_COMMIT]


def test_concurrent_submissions_each_get_their_own_answer(tmp_path) -> None:
    """Through the gRPC API, submissions racing into the same batches: the good ones are logged, each refused one
    gets its own status code, whatever the batching."""
    with running_server(f"sqlite:///{tmp_path / 'ledger.db'}") as server:
        channel = open_channel(server.target, OPERATOR)
        stub = log_pb2_grpc.LogServiceStub(channel)
        patients = [Ed25519PrivateKey.from_seed(bytes([i]) * 32) for i in range(100, 130)]
        good = [_grant(k, nonce=b"\x08" * 16) for k in patients]
        bad = [revocation_envelope("cd" * 32, k) for k in patients[:10]]
        raws = [x for pair in zip(good, bad + [b""] * 20) for x in pair if x]

        def submit(raw: bytes) -> grpc.StatusCode:
            try:
                stub.Submit(log_pb2.SubmitRequest(envelope=raw))
            except grpc.RpcError as e:
                return e.code()
            return grpc.StatusCode.OK

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(submit, raws))
        channel.close()
    expected = [grpc.StatusCode.NOT_FOUND if raw in bad else grpc.StatusCode.OK for raw in raws]
    assert codes == expected
