"""The access path's caches (app/access.py): a warm check is answered from memory, and no cache serves evidence
staler than the checkpoint it is answered at. The evidence is cached by (patient, requester, map root), inclusion
proofs by (index, tree size): a revocation integrated right after a warm check moves the StateCommit,
and the next answer rests on the new in-force set; an answer at a larger tree size carries proofs for that size."""

from __future__ import annotations

import pytest

from consent_ledger.app.errors import WouldBlock
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.payloads import DataItem
from consent_ledger_client import VerificationError

from .server_support import OPERATOR, connect, log_signer, running_server

PATIENT = Ed25519PrivateKey.from_seed(b"\xa1" * 32)
INSURER = Ed25519PrivateKey.from_seed(b"\xa2" * 32)
LAB = DataItem("laboratory-results")


def _setup(server):
    op = connect(server, party=OPERATOR)
    op.register_party(log_signer().private_key, party_id="insurer-1", roles=["insurer"],
                      public_keys=[INSURER.public_key], display_name="I")  # fmt: skip
    return connect(server, patient=PATIENT), connect(server, party="insurer-1")


def _ask(insurer, **kw):
    return insurer.check_access(PATIENT.public_key, action="access", purpose="HPAYMT", data=[LAB], **kw)


def _in_memory(server):
    """The access check as the event loop runs it: from memory, or WouldBlock."""
    access = server.service.consents.access
    return access.check_access("insurer-1", patient=PATIENT.public_key, action="access", purpose="HPAYMT", data=[LAB], io=False)


def test_a_revocation_right_after_a_warm_check_is_reflected(database_url) -> None:
    with running_server(database_url) as server:
        patient, insurer = _setup(server)
        cid, _ = patient.grant(PATIENT, grantee="org:insurer-1", actions=["access"], purposes=["HPAYMT"], data_classes=["laboratory-results"])
        first = _ask(insurer)
        assert first.permitted
        warm = _in_memory(server)  # the second check needs no storage: served on the event loop
        assert warm.decision.consent_ids == (cid,) and warm.state_commit_index == first.state_commit_index
        assert _ask(insurer).permitted
        patient.revoke(PATIENT, cid)
        # The revocation's batch moved the checkpoint, its StateCommit and the map root: nothing cached is for it.
        with pytest.raises(WouldBlock):
            _in_memory(server)
        after = _ask(insurer)
        assert not after.permitted and after.decision.consent_ids == ()
        assert after.state_commit_index > first.state_commit_index
        assert _in_memory(server).decision.decision == "DENY"


def test_answers_carry_proofs_for_their_own_tree_size(database_url) -> None:
    """An entry that does not change the consent state (an access event) grows the tree but keeps the StateCommit:
    the evidence is reused, and the inclusion proofs are those of the new size (cached by (index, size))."""
    with running_server(database_url) as server:
        patient, insurer = _setup(server)
        patient.grant(PATIENT, grantee="org:insurer-1", actions=["access"], purposes=["HPAYMT"], data_classes=["laboratory-results"])
        before = _ask(insurer)
        recorded = _ask(insurer, record=True)
        assert recorded.access_event_index is not None
        after = _ask(insurer)  # verified by the client against its own, larger checkpoint
        assert after.checkpoint.size > before.checkpoint.size
        assert after.state_commit_index == before.state_commit_index
        proofs = server.service.consents.access.proofs
        for v in after.evidence:
            assert proofs.cache.get((v.index, after.checkpoint.size)) == list(v.proof)
            assert proofs.cache.get((v.index, before.checkpoint.size)) is not None


def test_a_stale_cache_entry_would_be_refused_by_the_client(tmp_path) -> None:
    """Defence in depth: were the evidence of an older StateCommit served under the new one (a cache keyed
    wrongly), the client's map proofs against the new root refuse it."""
    with running_server(f"sqlite:///{tmp_path / 'log.db'}") as server:
        patient, insurer = _setup(server)
        cid, _ = patient.grant(PATIENT, grantee="org:insurer-1", actions=["access"], purposes=["HPAYMT"], data_classes=["laboratory-results"])
        first = _ask(insurer)
        access = server.service.consents.access
        stale = access.evidence.get((PATIENT.public_key, "insurer-1", first.state_map_root))
        assert stale is not None
        patient.revoke(PATIENT, cid)
        _, sc = access.pair()
        assert sc.map_root != first.state_map_root
        access.evidence.put((PATIENT.public_key, "insurer-1", sc.map_root), stale)
        with pytest.raises(VerificationError):
            _ask(insurer)


def test_inclusion_proofs_are_cached_by_index_and_size(tmp_path) -> None:
    with running_server(f"sqlite:///{tmp_path / 'log.db'}") as server:
        patient, _ = _setup(server)
        for i in range(3):
            patient.grant(PATIENT, grantee=f"org:h-{i}", actions=["access"], purposes=["TREAT"], data_classes=["laboratory-results"])
        access = server.service.consents.access
        size = server.service.ledger.sequencer.latest.size
        a = access.proofs.prove(0, size - 1)
        b = access.proofs.prove(0, size)
        assert a != b and access.proofs.cache.get((0, size - 1)) == a and access.proofs.cache.get((0, size)) == b


def test_a_checkpoint_read_just_before_a_batch_is_not_paired_with_the_next_state(tmp_path) -> None:
    """The sequencer publishes a batch's checkpoint, then moves the consent state to its StateCommit: a check that
    read the checkpoint just before a batch and the consent state just after paired a StateCommit its checkpoint
    does not hold (main: "index N is out of range for tree size N"). The check reads the two as a pair."""
    from consent_ledger.core.checkpoint import parse_checkpoint

    with running_server(f"sqlite:///{tmp_path / 'log.db'}") as server:
        patient, insurer = _setup(server)
        patient.grant(PATIENT, grantee="org:insurer-1", actions=["access"], purposes=["HPAYMT"], data_classes=["laboratory-results"])
        consents = server.service.consents
        before = server.service.ledger.sequencer.latest
        patient.grant(PATIENT, grantee="org:insurer-1", actions=["access"], purposes=["HPAYMT"], data_classes=["imaging"])
        real = consents._latest  # noqa: SLF001
        reads = [0]

        def racing():  # the first read sees the checkpoint of just before the last batch
            reads[0] += 1
            return before if reads[0] == 1 else real()

        consents._latest = racing  # noqa: SLF001
        access = getattr(consents, "access", None)
        if access is not None:
            access._latest = racing  # noqa: SLF001
        answer = consents.check_access("insurer-1", patient=PATIENT.public_key, action="access", purpose="HPAYMT", data=[LAB])
        cp = answer.checkpoint
        named = parse_checkpoint(cp.note[: cp.note.index(b"\n\n") + 1].decode()).consent_state
        assert named == answer.state_commit_index < cp.size
        assert answer.state_commit_index == consents.state.latest.index  # the latest state, with both grants


def test_an_idle_heartbeat_keeps_the_evidence_and_names_the_new_state_commit(tmp_path) -> None:
    """A heartbeat StateCommit changes nothing in the map: the cached evidence (by map root) still serves, with the
    new StateCommit entry, so the answer is as fresh as the heartbeat."""
    import time

    from consent_ledger.app.consent_state import StatePolicy

    with running_server(f"sqlite:///{tmp_path / 'log.db'}", state=StatePolicy(heartbeat_s=0.2)) as server:
        patient, insurer = _setup(server)
        patient.grant(PATIENT, grantee="org:insurer-1", actions=["access"], purposes=["HPAYMT"], data_classes=["laboratory-results"])
        first = _ask(insurer)
        access = server.service.consents.access
        state = server.service.consents.state
        deadline = time.monotonic() + 30
        while state.latest.index == first.state_commit_index and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state.latest.index > first.state_commit_index, "no heartbeat StateCommit was written"
        assert state.latest.map_root == first.state_map_root
        assert access.evidence.get((PATIENT.public_key, "insurer-1", first.state_map_root)) is not None
        later = _ask(insurer)
        assert later.permitted and later.state_commit_index > first.state_commit_index
        assert later.state_time_ms > first.state_time_ms


def test_a_checkpoint_is_paired_only_with_the_state_commit_it_names() -> None:
    """AccessPath.pair: the StateCommit the checkpoint names, or (a checkpoint from before checkpoints named one)
    the latest one it holds; WouldBlock from memory while the consent state has not caught up; UNAVAILABLE with no
    StateCommit at all."""
    from types import SimpleNamespace

    from consent_ledger.app.access import AccessPath
    from consent_ledger.app.errors import Unavailable
    from consent_ledger.app.ports import StateCommitRow, StoredCheckpoint
    from consent_ledger.app.tree import TreeReader
    from consent_ledger.core.checkpoint import Checkpoint, format_checkpoint, format_consent_state

    def cp(size: int, named: int | None) -> StoredCheckpoint:
        ext = () if named is None else (format_consent_state(named),)
        body = format_checkpoint(Checkpoint("test/log", size, b"\x01" * 32, ext))
        return StoredCheckpoint(size, b"\x01" * 32, (body + "\n— test/log sig\n").encode(), 0)

    state = SimpleNamespace(latest=None)
    latest = [cp(5, 4)]
    access = AccessPath(SimpleNamespace(state=state), b"", TreeReader(None), lambda: latest[0], lambda: 0)  # type: ignore[arg-type]
    with pytest.raises(WouldBlock):
        access.pair(io=False)  # the checkpoint names StateCommit 4, the state has none yet
    state.latest = StateCommitRow(4, b"\x02" * 32, 0)
    assert access.pair(io=False) == (latest[0], state.latest)
    latest[0] = cp(7, 6)  # a new batch published; the state not moved yet
    with pytest.raises(WouldBlock):
        access.pair(io=False)
    state.latest = StateCommitRow(6, b"\x03" * 32, 0)
    assert access.pair() == (latest[0], state.latest)
    latest[0] = cp(9, None)  # a checkpoint that names no StateCommit (written before the line existed)
    assert access.pair() == (latest[0], state.latest)
    state.latest = None
    with pytest.raises(Unavailable):
        access.pair()
