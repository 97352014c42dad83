"""Map keys are map VRF outputs (docs/design.md section 5): absence proofs do not reveal whose consents neighbour them,
every map proof carries the VRF proof pi of its key, and the requester's party key proves its registration is
the latest."""

from __future__ import annotations

import hashlib
import time

import pytest

from consent_ledger.core import payloads, smt, vrf
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.envelope import parse_envelope
from consent_ledger.core.payloads import DataItem
from consent_ledger.keys import derived_map_vrf_key
from consent_ledger.v1 import access_pb2, log_pb2
from consent_ledger_client import LedgerClient, VerificationError, WrongMapVrfKey
from consent_ledger_client.audit import Auditor
from consent_ledger_client.consent import ConsentClient, IncompleteEvidence, StaleRegistration

from .server_support import AUDITOR, OPERATOR, connect, ledger_client, log_signer, log_verifier_key, running_server
from .tamper_support import TamperProxy

ALICE = Ed25519PrivateKey.from_seed(b"\x51" * 32)
ORG_KEY = Ed25519PrivateKey.from_seed(b"\x52" * 32)
LAB = DataItem("laboratory-results")
CANDIDATES = ["org:insurer-1", "org:insurer-2", "org:hospital-1", "role:insurer", "role:hospital", "any"]


def _old_key(patient: bytes, selector: str) -> bytes:
    """The map key before this change: SHA-256(patient || 0x00 || selector), testable by anyone."""
    return hashlib.sha256(patient + b"\x00" + selector.encode()).digest()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('vrfmap') / 'log.db'}"
    with running_server(url) as server, TamperProxy(server.target) as proxy:
        op = connect(server, party=OPERATOR)
        key = log_signer().private_key
        op.register_party(key, party_id="insurer-1", roles=["insurer"], public_keys=[ORG_KEY.public_key], display_name="I1")
        old = op.register_party(key, party_id="insurer-2", roles=["insurer"], public_keys=[ORG_KEY.public_key], display_name="old")
        # insurer-2 re-registered (a key rotation, same roles): the first registration is no longer current.
        new = op.register_party(key, party_id="insurer-2", roles=["insurer"], public_keys=[ALICE.public_key], display_name="new")
        alice = connect(server, patient=ALICE)
        alice.grant(ALICE, grantee="org:insurer-1", actions=["access"], purposes=["HPAYMT"], data_classes=["laboratory-results"])
        time.sleep(0.01)
        server.old_registration = op.ledger.get_entry_with_note(old.index)
        server.new_registration_index = new.index
        yield server, proxy


def _ask(c: ConsentClient):
    return c.check_access(ALICE.public_key, action="access", purpose="HPAYMT", data=[LAB])


def _capture(proxy: TamperProxy, c: ConsentClient) -> access_pb2.CheckAccessResponse:
    seen: list[access_pb2.CheckAccessResponse] = []
    with proxy.tampering("CheckAccess", lambda resp: seen.append(type(resp).FromString(resp.SerializeToString()))):
        _ask(c)
    return seen[0]


def test_a_refusal_does_not_reveal_other_grantees(setup):
    """insurer-2's refusal about Alice: no neighbouring key in its absence proofs is SHA-256(patient||0||selector)
    for any selector one might guess (before, the only pair in the map, Alice's grant to insurer-1, showed up as
    SHA-256(alice || 0 || "org:insurer-1"))."""
    server, proxy = setup
    c = connect(proxy.target, party="insurer-2")
    resp = _capture(proxy, c)
    assert _ask(c).decision.decision == "DENY"
    guesses = {_old_key(ALICE.public_key, sel) for sel in CANDIDATES}
    shown = {bytes(p.leaf_key) for p in resp.selector_proofs if p.leaf_key}
    assert not shown & guesses
    # Alice's grant sits under a VRF output, which only the ledger's VRF secret key computes.
    prover = vrf.MapKeyProver(derived_map_vrf_key(log_signer()))
    assert prover.consent_key(ALICE.public_key, "org:insurer-1") not in guesses
    for p in resp.selector_proofs:
        assert len(p.vrf_proof) == vrf.PROOF_SIZE


def _clear_pi(resp) -> None:
    for p in resp.selector_proofs:
        p.vrf_proof = b""


def _flip_pi(resp) -> None:
    p = resp.selector_proofs[0]
    p.vrf_proof = p.vrf_proof[:40] + bytes([p.vrf_proof[40] ^ 1]) + p.vrf_proof[41:]


def _swap_pis(resp) -> None:
    a, b = resp.selector_proofs[0], resp.selector_proofs[1]
    a.vrf_proof, b.vrf_proof = b.vrf_proof, a.vrf_proof


def _flip_party_pi(resp) -> None:
    p = resp.party_proof
    p.vrf_proof = bytes([p.vrf_proof[0] ^ 1]) + p.vrf_proof[1:]


def _drop_party_proof(resp) -> None:
    resp.ClearField("party_proof")


@pytest.mark.parametrize(
    "mutation,error",
    [
        (_clear_pi, VerificationError),
        (_flip_pi, VerificationError),
        (_swap_pis, VerificationError),
        (_flip_party_pi, VerificationError),
        (_drop_party_proof, IncompleteEvidence),
    ],
    ids=["pi missing", "pi bit flipped", "pis of two selectors swapped", "party pi flipped", "party proof dropped"],
)
def test_a_wrong_pi_is_refused(setup, mutation, error):
    server, proxy = setup
    c = connect(proxy.target, party="insurer-1")
    assert _ask(c).permitted
    with proxy.tampering("CheckAccess", mutation), pytest.raises(error):
        _ask(c)


def test_an_older_registration_of_the_requester_is_refused(setup):
    """The server shows insurer-2's first registration (same roles, so the decision is unchanged) instead of its
    latest: the party key's map proof holds the latest, so the client refuses."""
    server, proxy = setup
    entry, _ = server.old_registration
    new_index = server.new_registration_index

    def show_old(resp):
        for e in resp.evidence:
            if e.entry.index == new_index:
                e.entry.CopyFrom(log_pb2.Entry(index=entry.index, leaf=entry.leaf_bytes, envelope=entry.envelope.raw))
                del e.inclusion_proof[:]
                e.inclusion_proof.extend(entry.proof)
                return
        raise AssertionError("no registration to replace")

    c = connect(proxy.target, party="insurer-2")
    assert _ask(c).decision.decision == "DENY"
    with proxy.tampering("CheckAccess", show_old), pytest.raises(StaleRegistration) as info:
        _ask(c)
    assert info.value.index == entry.index


def test_the_map_vrf_key_is_pinned(setup):
    server, proxy = setup
    right = derived_map_vrf_key(log_signer()).public_key
    pinned = ConsentClient(ledger_client(server, party="insurer-1", map_vrf_key=right))
    assert _ask(pinned).permitted
    learned = connect(server, party="insurer-1")
    assert learned.ledger.map_vrf_public_key is None
    _ask(learned)
    assert learned.ledger.map_vrf_public_key == right  # learned from the verified StateCommit
    wrong = ConsentClient(ledger_client(server, party="insurer-1", map_vrf_key=vrf.VrfPrivateKey.generate().public_key))
    with pytest.raises(WrongMapVrfKey):
        _ask(wrong)


def test_audit_recomputes_roots_with_party_keys(setup):
    server, _ = setup
    auditor = connect(server, party=AUDITOR)
    entries = auditor.ledger.get_entries(0, 100)
    commits = [
        payloads.parse_payload(e.envelope.payload_type, e.envelope.payload)
        for e in entries
        if e.leaf.payload_type == payloads.STATE_COMMIT
    ]
    # The first batch holds only a registration: its StateCommit's root is that party key's pair, not empty.
    first_root = commits[0].map_root
    prover = vrf.MapKeyProver(derived_map_vrf_key(log_signer()))
    reg = entries[0]
    assert first_root == smt.root({prover.party_key("insurer-1"): smt.value_hash([(0, _leaf_hash(reg))])})
    assert all(c.map_vrf_public_key == prover.public_key for c in commits)
    report = Auditor(auditor.ledger).run()
    assert report.ok, report.finding
    assert report.state_commits == len(commits) and report.legacy_state_commits == 0


def _leaf_hash(v) -> bytes:
    from consent_ledger.core.rfc6962 import hash_leaf

    return hash_leaf(v.leaf_bytes)


def test_get_entries_carries_map_key_proofs(setup):
    server, _ = setup
    auditor = connect(server, party=AUDITOR)
    entries, pis = auditor.ledger.get_entries_with_map_proofs(0, 100)
    pk = derived_map_vrf_key(log_signer()).public_key
    for e, pi in zip(entries, pis):
        p = payloads.parse_payload(e.envelope.payload_type, e.envelope.payload)
        if isinstance(p, payloads.ConsentGrantPayload):
            vrf.verify(pk, vrf.consent_alpha(p.patient, p.grantee), pi)
        elif isinstance(p, payloads.PartyRegistrationPayload):
            vrf.verify(pk, vrf.party_alpha(p.party_id), pi)
        else:
            assert pi == b""
    assert parse_envelope  # noqa: B018 - imported for readers of the evidence


def test_an_erasure_records_the_vrf_map_key(tmp_path):
    """The Erasure of a grant carries the grant's map key, now the VRF one (the operator's client takes it from the
    VRF proof GetEntries gives, verified), and the audit replays the erased grant with it."""
    with running_server(f"sqlite:///{tmp_path / 'l.db'}") as server:
        op = connect(server, party=OPERATOR)
        key = log_signer().private_key
        op.register_party(key, party_id="insurer-1", roles=["insurer"], public_keys=[ORG_KEY.public_key], display_name="I1")
        alice = connect(server, patient=ALICE)
        cid, g = alice.grant(ALICE, grantee="org:insurer-1", actions=["access"], purposes=["HPAYMT"], data_classes=["imaging"])
        alice.revoke(ALICE, cid)
        erased = op.erase(key, g.index, reason="entered in error")
        record = payloads.parse_payload(erased.entry.envelope.payload_type, erased.entry.envelope.payload)
        prover = vrf.MapKeyProver(derived_map_vrf_key(log_signer()))
        assert record.map_key == prover.consent_key(ALICE.public_key, "org:insurer-1")
        assert record.map_key != _old_key(ALICE.public_key, "org:insurer-1")
        report = Auditor(connect(server, party=AUDITOR).ledger).run()
        assert report.ok and report.erased == 1, report.finding


def test_cli_pins_the_map_vrf_key(tmp_path, capsys):
    """serve's map VRF key from `keygen map-vrf`; `check-access --map-vrf-key-file` pins its .pub: the right key
    verifies, another one is refused (exit 3, verification failed)."""
    from consent_ledger.cli import main
    from consent_ledger.core.note import format_verifier_key
    from consent_ledger.keys import read_key

    assert main(["keygen", "map-vrf", "--out", str(tmp_path / "map-vrf.key")]) == 0
    assert main(["keygen", "map-vrf", "--out", str(tmp_path / "other.key")]) == 0
    assert (tmp_path / "map-vrf.key").stat().st_mode & 0o777 == 0o600
    key = vrf.VrfPrivateKey.from_seed(read_key(tmp_path / "map-vrf.key").private_key.seed)
    signer = log_signer()
    (tmp_path / "log.key.pub").write_text(format_verifier_key(signer.name, signer.public_key) + "\n")
    # A development server whatever the suite's transport: the CLI chooses its transport by its own flags.
    with running_server(f"sqlite:///{tmp_path / 'l.db'}", map_vrf_key=key, insecure=True, tls=None) as server:
        op = ConsentClient(
            LedgerClient.connect(server.target, verifier_key=log_verifier_key(), insecure=True, party_id=OPERATOR)
        )
        op.register_party(signer.private_key, party_id="insurer-1", roles=["insurer"], public_keys=[ORG_KEY.public_key], display_name="I1")
        base = ["check-access", "--patient", ALICE.public_key.hex(), "--action", "access", "--purpose", "HPAYMT",
                "--data", "laboratory-results", "--as", "insurer-1", "--server", server.target, "--insecure",
                "--log-key-file", str(tmp_path / "log.key.pub"), "--state", str(tmp_path / "state.json")]
        capsys.readouterr()
        assert main([*base, "--map-vrf-key-file", str(tmp_path / "map-vrf.key.pub")]) == 0
        assert main([*base, "--map-vrf-key", key.public_key.hex()]) == 0
        assert main([*base, "--map-vrf-key-file", str(tmp_path / "other.key.pub")]) == 3
        assert "map VRF key" in capsys.readouterr().err
        assert main([*base, "--map-vrf-key-file", str(tmp_path / "map-vrf.key")]) != 0  # a private key: refused
