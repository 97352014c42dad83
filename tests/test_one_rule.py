"""What ends a grant is one rule (docs/design.md section 5), the same in decide, in the consent-state map (the server's
and the audit's replay) and at admission: a revocation or superseding grant of the SAME patient, validly signed.

A dishonest operator is simulated by appending envelopes straight to the sequencer, bypassing admission (it
holds the log key): the entries reach the log, the server's map and its StateCommits as an operator would put
them there. The audit must flag each such entry, and the map must still follow the rule, so the forged entry
cannot turn a permit into a verified deny.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time

import grpc
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from consent_ledger.app.consent_state import StatePolicy, in_force
from consent_ledger.app.errors import PermissionDenied
from consent_ledger.app.sequencer import Appended
from consent_ledger.core import delegation as DG
from consent_ledger.core import payloads
from consent_ledger.core import state_rules as SR
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.decision import (
    STATE_ACTIVE,
    STATE_EXPIRED,
    STATE_PENDING,
    SIGNER_NOT_AUTHORISED,
    LedgerEntry,
    consent_states,
    decide,
    delegation_book,
)
from consent_ledger.core.envelope import ParsedEnvelope, parse_envelope, sign_envelope, verify_envelope
from consent_ledger.core.payloads import DataItem, Period
from consent_ledger.core.rfc6962 import hash_leaf
from consent_ledger.core.state_rules import InForceSets
from consent_ledger_client.audit import Auditor

from .server_support import AUDITOR, OPERATOR, connect, ledger_client, log_signer, running_server

A = Ed25519PrivateKey.from_seed(b"\x71" * 32)
B = Ed25519PrivateKey.from_seed(b"\x72" * 32)
HOSPITAL = Ed25519PrivateKey.from_seed(b"\x73" * 32)
LAB = DataItem("laboratory-results")
GRANT = dict(actions=["access"], purposes=["TREAT"], data_classes=["laboratory-results"])


def forge(server, raw: bytes) -> Appended:
    """Append an envelope as a dishonest operator would: verified signatures, but no admission check (neither
    ``check`` before appending nor the sequencer's ``admit`` hook in the batch)."""
    env: ParsedEnvelope = parse_envelope(raw)
    verify_envelope(env)
    sequencer = server.service.ledger.sequencer
    admit, sequencer._admit = sequencer._admit, None
    try:
        return asyncio.run_coroutine_threadsafe(sequencer.append(env), server.loop).result(10)
    finally:
        sequencer._admit = admit


def _setup(server):
    connect(server, party=OPERATOR).register_party(
        log_signer().private_key, party_id="hosp-1", roles=["hospital"], public_keys=[HOSPITAL.public_key],
        display_name="H",
    )
    cid, _ = connect(server, patient=A).grant(A, grantee="org:hosp-1", **GRANT)
    return cid


def test_forged_cross_patient_revocation_is_flagged_and_does_not_end_the_grant(database_url):
    with running_server(database_url, state=StatePolicy(max_age_ms=0)) as server:
        cid = _setup(server)
        hospital = connect(server, party="hosp-1")
        assert hospital.check_access(A.public_key, action="access", purpose="TREAT", data=[LAB]).permitted
        # Patient B "revokes" patient A's grant: an honest server refuses this at admission.
        rev = payloads.build_revocation(patient=B.public_key, consent_id=cid, reason="forged")
        forged = forge(server, sign_envelope(payloads.CONSENT_REVOCATION, rev, [B]))
        # decide keeps A's grant in force (the revocation is another patient's), so the map must keep it too:
        # the client re-checks the map proofs and gets the grant honoured, not a verified DENY.
        d = hospital.check_access(A.public_key, action="access", purpose="TREAT", data=[LAB])
        assert d.permitted and d.decision.consent_ids == (cid,)
        # The patient's own view agrees (and is not broken by another patient's entry naming its consent).
        (view,) = connect(server, patient=A).list_consents(A.public_key).consents
        assert (view.consent_id, view.state, view.ended_by_index) == (cid, "active", None)
        report = Auditor(connect(server, party=AUDITOR).ledger).run()
    assert not report.ok
    assert report.finding is not None and report.finding.index == forged.index
    assert report.finding.evidence["rule"] == "same-patient"
    assert report.finding.evidence["entry"]


def test_forged_cross_patient_supersession_is_flagged_and_does_not_end_the_grant(database_url):
    with running_server(database_url, state=StatePolicy(max_age_ms=0)) as server:
        cid = _setup(server)
        g = payloads.build_grant(patient=B.public_key, grantee="org:other", supersedes=cid, **GRANT)
        forged = forge(server, sign_envelope(payloads.CONSENT_GRANT, g, [B]))
        d = connect(server, party="hosp-1").check_access(A.public_key, action="access", purpose="TREAT", data=[LAB])
        assert d.permitted and d.decision.consent_ids == (cid,)
        report = Auditor(connect(server, party=AUDITOR).ledger).run()
    assert report.finding is not None and report.finding.index == forged.index
    assert report.finding.evidence["rule"] == "same-patient"


def test_forged_revocation_by_a_stranger_is_flagged_and_does_not_end_the_grant(database_url):
    """Signed by neither the patient nor a delegate in force: the revocation ends nothing."""
    with running_server(database_url, state=StatePolicy(max_age_ms=0)) as server:
        cid = _setup(server)
        rev = payloads.build_revocation(patient=A.public_key, consent_id=cid, reason="forged")
        forged = forge(server, sign_envelope(payloads.CONSENT_REVOCATION, rev, [B]))
        d = connect(server, party="hosp-1").check_access(A.public_key, action="access", purpose="TREAT", data=[LAB])
        assert d.permitted and d.decision.consent_ids == (cid,)
        report = Auditor(connect(server, party=AUDITOR).ledger).run()
    assert report.finding is not None and report.finding.index == forged.index
    assert report.finding.evidence["rule"] == "signer"


def test_a_grant_another_patient_revoked_is_still_in_force_for_erasure(database_url):
    """The erasure check asks the same rule: a grant only another patient's entry names is still in force."""
    with running_server(database_url, state=StatePolicy(max_age_ms=0)) as server:
        cid = _setup(server)
        rev = payloads.build_revocation(patient=B.public_key, consent_id=cid, reason="forged")
        forge(server, sign_envelope(payloads.CONSENT_REVOCATION, rev, [B]))
        index = connect(server, patient=A).list_consents(A.public_key).consents[0].entry.index
        with pytest.raises(grpc.RpcError) as err:
            connect(server, party=OPERATOR).erase(log_signer().private_key, index, reason="entered in error")
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "still in force" in err.value.details()


def test_a_delegate_entry_whose_delegation_ended_before_integration_is_refused(database_url):
    """Admission checks the delegate when the entry is submitted; the rule judges it at its integration time. A
    delegation revoked in between must not let the entry into the log (the audit would rightly flag it)."""
    with running_server(database_url, state=StatePolicy(max_age_ms=0)) as server:
        _setup(server)
        proxy = Ed25519PrivateKey.from_seed(b"\x74" * 32)
        did, _ = connect(server, patient=A).delegate(A, delegate=proxy.public_key, relationship="proxy", scope=["*"])
        g = payloads.build_grant(patient=A.public_key, grantee="org:hosp-1", **GRANT)
        ledger = server.service.ledger
        env = ledger.validate(sign_envelope(payloads.CONSENT_GRANT, g, [proxy]))  # passes: the proxy is in force
        connect(server, patient=A).revoke(A, did)  # ... and then is not
        fut = asyncio.run_coroutine_threadsafe(ledger.sequencer.append(env), server.loop)
        with pytest.raises(PermissionDenied, match="revoked"):
            fut.result(10)
        report = Auditor(connect(server, party=AUDITOR).ledger).run()
    assert report.ok, report.finding


def test_honest_revocation_still_ends_the_grant(database_url):
    with running_server(database_url, state=StatePolicy(max_age_ms=0)) as server:
        cid = _setup(server)
        connect(server, patient=A).revoke(A, cid)
        d = connect(server, party="hosp-1").check_access(A.public_key, action="access", purpose="TREAT", data=[LAB])
        assert not d.permitted
        assert Auditor(connect(server, party=AUDITOR).ledger).run().ok


# --- decide, the core map rule and a running server agree, on random entry sequences --------------------------


SELECTORS = ["org:x", "any"]
_seeds = itertools.count(1)
H_MS = 3_600_000

# One step: (kind, who signs: 0 the patient, 1 the delegate, 2 a stranger, which patient: 0 A, 1 B, a pick of an
# earlier grant or delegation, a variant: grantee / validity / scope; a revocation or supersession is of the
# target's own patient unless the variant is 5).
STEP = st.tuples(
    st.sampled_from(["grant", "grant", "supersede", "revoke", "revoke", "delegate", "undelegate", "relog"]),
    st.sampled_from([0, 0, 1, 2]),
    st.integers(0, 1),
    st.integers(0, 50),
    st.integers(0, 5),
)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('onerule') / 'ledger.db'}"
    with running_server(url, state=StatePolicy(max_age_ms=0)) as server:
        connect(server, party=OPERATOR).register_party(
            log_signer().private_key, party_id="x", roles=["hospital"], public_keys=[HOSPITAL.public_key], display_name="X"
        )
        yield server


def _key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_seed(next(_seeds).to_bytes(4, "big") + b"\x99" * 28)


def _entries(server, start: int) -> tuple[list[LedgerEntry], list[object]]:
    client = ledger_client(server, party=AUDITOR)
    size = client.checkpoint().checkpoint.size
    verified = [v for i in range(start, size, 256) for v in client.get_entries(i, min(size, i + 256))]
    out = []
    for v in verified:
        env = v.envelope
        out.append(LedgerEntry.from_payload(index=v.index, integrated_time_ms=v.leaf.integrated_time_ms,
                                            payload_type=env.payload_type, payload=env.payload, signers=env.signers))
    return out, verified


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(STEP, min_size=1, max_size=14))
@example(steps=[("grant", 0, 0, 0, 0), ("revoke", 0, 0, 0, 0)])  # an honest revocation
@example(steps=[("grant", 0, 0, 0, 0), ("revoke", 0, 1, 0, 5)])  # another patient's revocation
@example(steps=[("grant", 0, 0, 0, 0), ("supersede", 0, 1, 0, 5)])  # another patient's supersession
@example(steps=[("grant", 0, 0, 0, 0), ("delegate", 0, 0, 0, 1), ("revoke", 1, 0, 0, 0)])  # a delegate, in scope
@example(steps=[("grant", 0, 0, 0, 0), ("delegate", 0, 0, 0, 0), ("revoke", 1, 0, 0, 0)])  # out of scope
@example(steps=[("grant", 0, 0, 0, 0), ("delegate", 0, 0, 0, 5), ("revoke", 1, 0, 0, 0)])  # out of its period
@example(steps=[("delegate", 0, 0, 0, 2), ("grant", 1, 0, 0, 0), ("undelegate", 0, 0, 0, 0), ("grant", 1, 0, 0, 1)])
@example(steps=[("grant", 0, 0, 0, 0), ("revoke", 0, 0, 0, 0), ("relog", 0, 0, 0, 0)])  # a re-logged, revoked grant
def test_decide_the_core_map_and_the_server_agree(shared_server, steps):
    server = shared_server
    start = ledger_client(server, party=AUDITOR).checkpoint().checkpoint.size
    patients, delegate, stranger = [_key(), _key()], _key(), _key()
    now = int(time.time() * 1000)
    grants: list[tuple[int, str]] = []  # (patient number, consent id)
    bodies: list[bytes] = []
    delegations: list[tuple[int, str]] = []
    for kind, who, pn, pick, variant in steps:
        patient = patients[pn]
        signer = [patient, delegate, stranger][who]
        if kind in ("grant", "supersede"):
            sup = None
            if kind == "supersede":
                if not grants:
                    continue
                tpn, sup = grants[pick % len(grants)]
                patient = patients[tpn if variant < 5 else 1 - tpn]
                signer = [patient, delegate, stranger][who]
            validity = [Period(), Period(0, now - H_MS), Period(now + H_MS, 0)][variant % 3]
            g = payloads.build_grant(patient=patient.public_key, grantee=SELECTORS[variant % 2], validity=validity,
                                     supersedes=sup, **GRANT)  # fmt: skip
            forge(server, sign_envelope(payloads.CONSENT_GRANT, g, [signer]))
            grants.append((patients.index(patient), payloads.consent_id(g)))
            bodies.append(g)
        elif kind == "relog":  # the same consent again, in another envelope: it counts once, from its first index
            if not bodies:
                continue
            forge(server, sign_envelope(payloads.CONSENT_GRANT, bodies[pick % len(bodies)], [signer, _key()]))
        elif kind == "revoke":
            if not grants:
                continue
            tpn, target = grants[pick % len(grants)]
            patient = patients[tpn if variant < 5 else 1 - tpn]
            signer = [patient, delegate, stranger][who]
            r = payloads.build_revocation(patient=patient.public_key, consent_id=target)
            forge(server, sign_envelope(payloads.CONSENT_REVOCATION, r, [signer]))
        elif kind == "delegate":
            scope = [["grant"], ["revoke"], ["*"]][variant % 3]
            validity = Period(0, now - H_MS) if variant >= 3 else Period()
            d = payloads.build_delegation(patient=patient.public_key, delegate=delegate.public_key,
                                          relationship="proxy", scope=scope, validity=validity)  # fmt: skip
            forge(server, sign_envelope(payloads.DELEGATION, d, [patient]))
            delegations.append((pn, payloads.consent_id(d)))
        elif kind == "undelegate" and delegations:
            dpn, did = delegations[pick % len(delegations)]
            r = payloads.build_revocation(patient=patients[dpn].public_key, consent_id=did)
            forge(server, sign_envelope(payloads.CONSENT_REVOCATION, r, [patients[dpn]]))
    entries, verified = _entries(server, start)
    if not entries:
        return
    t = max(e.integrated_time_ms for e in entries)
    # decide's view: the validly signed grants not ended (active, pending or expired), by (patient, selector).
    states = consent_states(entries, t)
    by_id: dict[str, LedgerEntry] = {}
    for e in entries:
        by_id.setdefault(e.consent_id, e)  # a consent logged twice counts from its first index
    # The core map rule, replayed.
    keys = server.service.consents.state.map_keys
    sets = InForceSets(keys, delegation_book(entries))
    for v, e in zip(verified, entries):
        sets.add(e.index, hash_leaf(v.leaf_bytes), e.consent_id, e.payload, e.signers, e.integrated_time_ms)
    index = server.service.consents._index
    for patient in patients:
        p = patient.public_key
        server_sets = in_force(index, p, SELECTORS, 2**62)
        for sel in SELECTORS:
            decided = {
                by_id[cid].index for cid, s in states.items()
                if s in (STATE_ACTIVE, STATE_PENDING, STATE_EXPIRED)
                and by_id[cid].payload.patient == p and by_id[cid].payload.grantee == sel
            }
            replayed = set(sets.sets.get(keys.consent_key(p, sel), {}))
            served = set(server_sets[sel].values())
            assert decided == replayed == served, (sel, steps)
    # A verified access check (map proofs against the evidence, decide re-run on it) decides as decide does on
    # the whole log: the map left nothing out and kept nothing ended. (Grants not validly signed are not in force,
    # so not in the evidence: only decide on the whole log can say it ignored one, SIGNER_NOT_AUTHORISED.)
    for patient in patients:  # (this example's patients appear only in its own entries)
        vd = connect(server, party="x").check_access(patient.public_key, action="access", purpose="TREAT", data=[LAB])
        whole = decide(entries, vd.decision.request, vd.decision.policy)
        reasons = tuple(r for r in whole.reasons if r.code != SIGNER_NOT_AUTHORISED)
        assert vd.decision == dataclasses.replace(whole, reasons=reasons), steps
    # The server's StateCommit root is the audit replay's root (the replay goes on past refused entries).
    auditor = getattr(server, "_onerule_auditor", None)
    if auditor is None:
        auditor = server._onerule_auditor = Auditor(ledger_client(server, party=AUDITOR))
    report = auditor.run()
    assert report.finding is None or report.finding in report.refusals, report.finding
    assert report.end == report.checkpoint_size
    assert auditor._map.root() == server.service.consents.state.latest.map_root


# --- the rule itself, on a replay (core.state_rules) -------------------------------------------------------------

PA, PB, KD = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32


def _e(index: int, kind: str, cid: str, patient: bytes, target: str | None = None, signers: tuple[bytes, ...] = ()):
    return SR.ConsentEntry(index, 1000 + index, cid, kind, patient, target, frozenset(signers or (patient,)))


def _delegated(scope: tuple[str, ...]) -> SR.Replay:
    book = DG.DelegationBook()
    d = payloads.DelegationPayload(patient=PA, delegate=KD, relationship="proxy", scope=scope, issued_at_ms=1, nonce=bytes(16))
    book.add(DG.Delegate("d", 0, 1000, d))
    return SR.Replay(book)


RULE_CASES = [
    # (name, entries before, the entry, facts, expected effect, expected admission refusal rule)
    ("own revocation ends", [_e(1, SR.GRANT, "g", PA)], _e(2, SR.REVOCATION, "r", PA, "g"), SR.Replay, SR.Effect(False, "g"), None),
    ("another patient's revocation ends nothing", [_e(1, SR.GRANT, "g", PA)], _e(2, SR.REVOCATION, "r", PB, "g"), SR.Replay, SR.Effect(), SR.RULE_SAME_PATIENT),
    ("another patient's supersession ends nothing, the grant joins", [_e(1, SR.GRANT, "g", PA)], _e(2, SR.GRANT, "h", PB, "g"), SR.Replay, SR.Effect(True, None), SR.RULE_SAME_PATIENT),
    ("a stranger's revocation ends nothing", [_e(1, SR.GRANT, "g", PA)], _e(2, SR.REVOCATION, "r", PA, "g", (PB,)), SR.Replay, SR.Effect(), SR.RULE_SIGNER),
    ("a revocation before its grant ends nothing", [], _e(2, SR.REVOCATION, "r", PA, "g"), SR.Replay, SR.Effect(), SR.RULE_UNKNOWN_CONSENT),
    ("a consent logged twice joins once", [_e(1, SR.GRANT, "g", PA)], _e(2, SR.GRANT, "g", PA), SR.Replay, SR.Effect(), SR.RULE_LOGGED_ONCE),
    ("a delegate with scope revoke revokes", [_e(1, SR.GRANT, "g", PA)], _e(2, SR.REVOCATION, "r", PA, "g", (KD,)), lambda: _delegated(("revoke",)), SR.Effect(False, "g"), None),
    ("a delegate with scope grant does not", [_e(1, SR.GRANT, "g", PA)], _e(2, SR.REVOCATION, "r", PA, "g", (KD,)), lambda: _delegated(("grant",)), SR.Effect(), SR.RULE_SIGNER),
    ("a delegate supersedes only with both scopes", [_e(1, SR.GRANT, "g", PA)], _e(2, SR.GRANT, "h", PA, "g", (KD,)), lambda: _delegated(("grant",)), SR.Effect(), SR.RULE_SIGNER),
]


@pytest.mark.parametrize(("before", "e", "facts", "effect", "refused"), [c[1:] for c in RULE_CASES], ids=[c[0] for c in RULE_CASES])
def test_the_rule(before, e, facts, effect, refused):
    replay = facts()
    for x in before:
        replay.note(x)
    assert SR.effect(e, replay) == effect
    refusal = (SR.grant_refusal if e.kind == SR.GRANT else SR.revocation_refusal)(e, replay)
    assert (refusal.rule if refusal else None) == refused
