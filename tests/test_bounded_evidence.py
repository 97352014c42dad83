"""Evidence stays bounded (docs/design.md section 5, issue 9): at most MAX_IN_FORCE grants in force per patient and grantee
selector. The ledger refuses a further grant with FAILED_PRECONDITION, also when many race into one batch; the
client refuses evidence with more for one selector."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from consent_ledger.core import payloads
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.envelope import parse_envelope
from consent_ledger.core.decision import MAX_IN_FORCE
from consent_ledger.core.payloads import DataItem
from consent_ledger_client import IncompleteEvidence

from .server_support import OPERATOR, connect, log_signer, running_server
from .tamper_support import TamperProxy

ALICE = Ed25519PrivateKey.from_seed(b"\xb1" * 32)
HOSPITAL = Ed25519PrivateKey.from_seed(b"\xb2" * 32)
LAB = DataItem("laboratory-results")


def _grant(c, i: int, grantee: str = "org:hospital-1", supersedes: str | None = None):
    """A grant; each is a distinct consent (fresh nonce), ``i`` only names it in the test."""
    return c.grant(
        ALICE, grantee=grantee, actions=["access"], purposes=["TREAT"], data_classes=["laboratory-results"],
        supersedes=supersedes,
    )  # fmt: skip


def test_at_most_max_in_force_grants_per_patient_and_selector(database_url):
    assert MAX_IN_FORCE == 256
    with running_server(database_url) as server:
        connect(server, party=OPERATOR).register_party(
            log_signer().private_key, party_id="hospital-1", roles=["hospital"], public_keys=[HOSPITAL.public_key],
            display_name="H",
        )  # fmt: skip
        alice = connect(server, patient=ALICE)
        # More than the bound, concurrently: they race through admission together, and the check made atomically
        # with each batch lets exactly MAX_IN_FORCE in.
        extra = 12
        outcomes: list[object] = []

        def one(i: int) -> object:
            try:
                return _grant(alice, i)[0]
            except grpc.RpcError as e:
                return e

        with ThreadPoolExecutor(16) as pool:
            outcomes = list(pool.map(one, range(MAX_IN_FORCE + extra)))
        ok = [o for o in outcomes if isinstance(o, str)]
        errors = [o for o in outcomes if isinstance(o, grpc.RpcError)]
        assert len(ok) == MAX_IN_FORCE and len(errors) == extra
        for e in errors:
            assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e.details()
            assert f"already has {MAX_IN_FORCE} grants in force for org:hospital-1" in (e.details() or "")
            assert "revoke or supersede one of them first" in (e.details() or "")

        size = alice.ledger.checkpoint().checkpoint.size
        with pytest.raises(grpc.RpcError) as err:
            _grant(alice, 10_000)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert alice.ledger.checkpoint().checkpoint.size == size, "nothing was appended"

        # Other selectors are not affected; a superseding grant keeps the count; a revocation makes room.
        _grant(alice, 10_001, grantee="role:hospital")
        _grant(alice, 10_002, supersedes=ok[0])
        alice.revoke(ALICE, ok[1])
        _grant(alice, 10_003)

        hospital = connect(server, party="hospital-1")
        decision = hospital.check_access(ALICE.public_key, action="access", purpose="TREAT", data=[LAB])
        assert decision.permitted
        assert sum(1 for _ in decision.evidence) <= 2 * MAX_IN_FORCE + 4


def test_client_refuses_evidence_beyond_the_bound(database_url):
    with running_server(database_url) as server:
        connect(server, party=OPERATOR).register_party(
            log_signer().private_key, party_id="hospital-1", roles=["hospital"], public_keys=[HOSPITAL.public_key],
            display_name="H",
        )  # fmt: skip
        alice = connect(server, patient=ALICE)
        _grant(alice, 0)

        def inflate(resp) -> None:
            """A server that pads the evidence with copies of the grant: more than the bound for one selector."""
            grant = next(e for e in resp.evidence if parse_envelope(e.entry.envelope).payload_type == payloads.CONSENT_GRANT)
            for _ in range(MAX_IN_FORCE):
                resp.evidence.add().CopyFrom(grant)

        with TamperProxy(server.target) as proxy:
            hospital = connect(proxy.target, party="hospital-1")
            ask = lambda: hospital.check_access(ALICE.public_key, action="access", purpose="TREAT", data=[LAB])  # noqa: E731
            assert ask().permitted
            with proxy.tampering("CheckAccess", inflate), pytest.raises(IncompleteEvidence, match=f"more than {MAX_IN_FORCE} grants"):
                ask()
