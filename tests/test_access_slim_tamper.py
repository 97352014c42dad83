"""What CheckAccess answers leave out because the client derives it (access.proto: the shared tails of inclusion
proofs, the leaf of a map proof that ends at its own key) is still verified: an honest answer uses both and
passes; tampering with what remains of them is caught, and an omitted entry whose proof another entry goes on
with makes the evidence incomplete."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.payloads import DataItem
from consent_ledger.v1 import access_pb2
from consent_ledger_client import IncompleteEvidence, VerificationError

from .server_support import OPERATOR, connect, log_signer, running_server
from .tamper_support import TamperProxy

PATIENT = Ed25519PrivateKey.from_seed(b"\xb1" * 32)
INSURER = Ed25519PrivateKey.from_seed(b"\xb2" * 32)
LAB = DataItem("laboratory-results")
PURPOSES = ["HPAYMT", "CLMATTCH", "COVAUTH", "HPAYMT", "CLMATTCH", "COVAUTH"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('slim') / 'log.db'}"
    with running_server(url) as server, TamperProxy(server.target) as proxy:
        op = connect(server, party=OPERATOR)
        op.register_party(log_signer().private_key, party_id="insurer-1", roles=["insurer"],
                          public_keys=[INSURER.public_key], display_name="I")  # fmt: skip
        patient = connect(server, patient=PATIENT)
        # Several grants in force for one selector (their proofs share their upper parts), none for "any".
        for i, purpose in enumerate(PURPOSES):
            grantee = "org:insurer-1" if i % 2 else "role:insurer"
            patient.grant(PATIENT, grantee=grantee, actions=["access"], purposes=[purpose], data_classes=["laboratory-results"])
        yield server, proxy


def _ask(c):
    return c.check_access(PATIENT.public_key, action="access", purpose="HPAYMT", data=[LAB])


def _continued(resp) -> access_pb2.EvidenceEntry:
    return next(e for e in resp.evidence if e.inclusion_proof_tail)


def _own(resp) -> access_pb2.SelectorProof:
    return next(p for p in resp.selector_proofs if p.leaf_derived)


def _tail(delta: int):
    def m(resp):
        _continued(resp).inclusion_proof_tail += delta

    return m


def _tail_from_other(resp):
    """A tail taken from another entry listed before (not the one whose proof it continues)."""
    items = list(resp.evidence)
    for k, e in enumerate(items):
        others = [x.entry.index for x in items[:k] if x.entry.index != e.inclusion_proof_tail_from]
        if e.inclusion_proof_tail and others:
            e.inclusion_proof_tail_from = others[0]
            return
    raise AssertionError("no continued entry with another entry before it")


def _tail_from_unlisted(resp):
    e = _continued(resp)
    e.inclusion_proof_tail_from = max(x.entry.index for x in resp.evidence) + 1000


def _continuation_first(resp):
    e = _continued(resp)
    items = [x for x in resp.evidence if x is not e]
    copy = access_pb2.EvidenceEntry()
    copy.CopyFrom(e)
    del resp.evidence[:]
    resp.evidence.extend([copy, *items])


def _tail_given_too(resp):
    """The whole proof given, and a tail on top of it."""
    e = _continued(resp)
    e.inclusion_proof.append(e.inclusion_proof[-1])


def _drop_sources(resp):
    sources = {e.inclusion_proof_tail_from for e in resp.evidence if e.inclusion_proof_tail}
    keep = [e for e in resp.evidence if e.entry.index not in sources]
    del resp.evidence[:]
    resp.evidence.extend(keep)


def _underived(resp):
    """The own pair's leaf neither given nor derived: the proof then claims the key is absent."""
    _own(resp).leaf_derived = False


def _derived_and_given(resp):
    p = _own(resp)
    p.leaf_key = b"\x01" * 32


def _derived_where_nothing_is_in_force(resp):
    p = next(p for p in resp.selector_proofs if p.selector == "any")
    p.leaf_derived = True
    p.leaf_key, p.leaf_value_hash = b"", b""


def _derived_sibling_flipped(resp):
    p = _own(resp)
    p.siblings[0] = bytes([p.siblings[0][0] ^ 1]) + p.siblings[0][1:]


def _party_underived(resp):
    resp.party_proof.leaf_derived = False


def _party_derived_and_given(resp):
    resp.party_proof.leaf_value_hash = b"\x02" * 32


def _party_sibling_flipped(resp):
    p = resp.party_proof
    p.siblings[-1] = bytes([p.siblings[-1][0] ^ 1]) + p.siblings[-1][1:]


CASES: list[tuple[str, Callable[[access_pb2.CheckAccessResponse], None], type[Exception]]] = [
    ("tail one hash longer", _tail(1), VerificationError),
    ("tail one hash shorter", _tail(-1), VerificationError),
    ("tail from another entry", _tail_from_other, VerificationError),
    ("tail from an entry not in the evidence", _tail_from_unlisted, IncompleteEvidence),
    ("continuation listed before its source", _continuation_first, VerificationError),
    ("tail given and taken", _tail_given_too, VerificationError),
    ("entries others continue omitted", _drop_sources, IncompleteEvidence),
    ("own leaf neither given nor derived", _underived, VerificationError),
    ("own leaf derived and given", _derived_and_given, IncompleteEvidence),
    ("leaf derived where nothing is in force", _derived_where_nothing_is_in_force, IncompleteEvidence),
    ("derived map proof sibling flipped", _derived_sibling_flipped, VerificationError),
    ("party leaf neither given nor derived", _party_underived, VerificationError),
    ("party leaf derived and given", _party_derived_and_given, VerificationError),
    ("party map proof sibling flipped", _party_sibling_flipped, VerificationError),
]


def test_honest_answers_leave_out_what_the_client_derives(setup):
    server, proxy = setup
    seen = []
    proxy.mutate = lambda method, resp: seen.append(resp) if method == "CheckAccess" else None
    try:
        assert _ask(connect(proxy.target, party="insurer-1")).permitted
    finally:
        proxy.mutate = lambda method, resp: None
    (resp,) = seen
    assert any(e.inclusion_proof_tail >= 2 for e in resp.evidence)
    own = [p for p in resp.selector_proofs if p.leaf_derived]
    assert {p.selector for p in own} == {"org:insurer-1", "role:insurer"}
    assert all(not p.leaf_key and not p.leaf_value_hash for p in own)
    assert resp.party_proof.leaf_derived and not resp.party_proof.leaf_key


@pytest.mark.parametrize("name,mutation,error", CASES, ids=[c[0] for c in CASES])
def test_tampering_with_what_remains_is_caught(setup, name, mutation, error):
    server, proxy = setup
    c = connect(proxy.target, party="insurer-1")
    with proxy.tampering("CheckAccess", mutation), pytest.raises(error):
        _ask(c)
