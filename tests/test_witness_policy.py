"""Clients that trust neither the operator's clock nor its view (issue 11, docs/design.md section 2, witness policies).

A dishonest operator holds the log key (tests/tamper_support.py) and re-signs whatever it likes, but not the
witnesses' keys: the test plays honest witnesses. With a witness policy the client refuses at once a fork shown to
a client that has never seen the log (no cosignatures on it), a genuine but stale state (cosignatures older than the
policy's age), and a checkpoint that does not extend the witnessed one; a client that sees both sides of a fork
writes an evidence file that `verify-evidence` checks with the log key alone.
"""

from __future__ import annotations

import base64
import json
import os
import time

import pytest

from consent_ledger.cli import main as cli_main
from consent_ledger.app.consent_state import StatePolicy
from consent_ledger.core.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.errors import InconsistentCheckpoints, InvalidInput, VerificationError
from consent_ledger.core.note import parse_verifier_key
from consent_ledger.core.payloads import DataItem
from consent_ledger.core.equivocation import verify_split_view
from consent_ledger.core.splitview import SPLIT_VIEW_FORMAT, format_split_view, parse_split_view
from consent_ledger.core.witness_policy import (
    NotCosigned,
    StaleCosignatures,
    UnderCosigned,
    WitnessPolicy,
    WrongCosignature,
    format_witness_key,
    parse_witness_key,
)
from consent_ledger.v1 import log_pb2, log_pb2_grpc
from consent_ledger_client import ConsentClient
from consent_ledger_client.bundle import (
    export_consent_bundle,
    export_decision_receipt,
    verify_consent_bundle,
    verify_decision_receipt,
)

from .server_support import (
    MTLS,
    OPERATOR,
    connect,
    ledger_client,
    log_signer,
    log_verifier_key,
    open_channel,
    running_server,
)
from .tamper_support import TamperProxy, TestWitnesses, witnessing

W = TestWitnesses(3)
VERIFIER = parse_verifier_key(log_verifier_key())
PATIENT = Ed25519PrivateKey.from_seed(b"\x5a" * 32)
LAB = DataItem("laboratory-results")


def _now() -> int:
    return int(time.time())


def _fork(note: bytes, size: int | None = None) -> bytes:
    """The operator re-signs a checkpoint of another history: same origin, a different root (and ``size``)."""
    cp = open_checkpoint(note, VERIFIER)
    ext = cp.extensions if size is None else ()  # a smaller fork names no StateCommit beyond its size
    forked = Checkpoint(cp.origin, cp.size if size is None else size, bytes(32 - 1) + b"\x01", ext)
    return sign_checkpoint(forked, log_signer())


def _signed(size: int, root: bytes) -> bytes:
    return sign_checkpoint(Checkpoint(VERIFIER.name, size, root), log_signer())


# -- the pure core: witness keys and the policy ------------------------------------------------------------------


def test_witness_key_round_trip_and_strict_parse():
    text = W.vkeys(("w0",))[0]
    key = parse_witness_key(text)
    assert key == W.witness_keys["w0"] and format_witness_key(key) == text
    name, h, b64 = text.split("+", 2)
    raw = base64.b64decode(b64)
    note_key = base64.b64encode(bytes([1]) + raw[1:]).decode()
    for bad in (
        f"{name}+{h}+{note_key}",  # a note (0x01) key, not a cosigner's
        f"{name}+{h.upper()}+{b64}",
        f"{name}+00000000+{b64}",
        f"{name}+{h}",
        f"{name}+{h}+{b64[:-2]}",
    ):
        with pytest.raises(InvalidInput):
            parse_witness_key(bad)


def test_a_policy_must_pin_someone_and_a_sensible_quorum():
    ws = tuple(W.witness_keys.values())
    for bad in (dict(witnesses=(), quorum=1), dict(witnesses=ws, quorum=0), dict(witnesses=ws, quorum=4),
                dict(witnesses=(ws[0], ws[0]), quorum=1)):
        with pytest.raises(InvalidInput):
            WitnessPolicy(max_age_s=60, **bad)  # type: ignore[arg-type]


NOTE = _signed(10, bytes(range(32)))


def test_policy_accepts_a_quorum_of_fresh_cosignatures():
    wc = W.policy(quorum=2).verify(W.cosign(NOTE, ("w0", "w2")), VERIFIER, _now())
    assert wc.checkpoint.size == 10 and [n for n, _ in wc.cosignatures] == ["w0", "w2"]


def test_policy_refuses_an_uncosigned_checkpoint():
    with pytest.raises(NotCosigned):
        W.policy().verify(NOTE, VERIFIER, _now())


def test_policy_refuses_cosignatures_by_unknown_keys():
    other = TestWitnesses(3, seed=0x90)  # same names, other keys
    with pytest.raises(NotCosigned):
        W.policy().verify(other.cosign(NOTE), VERIFIER, _now())


def test_policy_refuses_an_under_cosigned_checkpoint():
    with pytest.raises(UnderCosigned) as e:
        W.policy(quorum=2).verify(W.cosign(NOTE, ("w1",)), VERIFIER, _now())
    assert e.value.cosigners == ("w1",) and e.value.quorum == 2


def _flip_last_cosignature(cosigned: bytes) -> tuple[bytes, str]:
    line = cosigned.rstrip(b"\n").rsplit(b"\n", 1)[1]
    name, b64 = line.decode().split(" ")[1:]
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 1
    return cosigned.replace(b64.encode(), base64.b64encode(bytes(raw))), name


def test_policy_refuses_a_bad_cosignature():
    bad, name = _flip_last_cosignature(W.cosign(NOTE, ("w0", "w1")))
    with pytest.raises(WrongCosignature) as e:
        W.policy(quorum=2).verify(bad, VERIFIER, _now())
    assert e.value.name == name


def test_policy_refuses_a_cosignature_over_another_body():
    other = W.cosign(_signed(11, bytes(range(32))))
    lines = other[other.index(b"\n\n") + 2 :].split(b"\n")[1:]  # the cosignature lines (after the log's)
    with pytest.raises(WrongCosignature):
        W.policy(quorum=2).verify(NOTE + b"\n".join(lines), VERIFIER, _now())


def test_policy_refuses_stale_cosignatures_and_ones_from_the_future():
    with pytest.raises(StaleCosignatures) as e:
        W.policy(quorum=2, max_age_s=600).verify(W.cosign(NOTE, time_s=_now() - 601), VERIFIER, _now())
    assert e.value.max_age_s == 600 and set(e.value.timestamps) == {"w0", "w1", "w2"}
    with pytest.raises(WrongCosignature, match="after this client's clock"):
        W.policy().verify(W.cosign(NOTE, time_s=_now() + 60), VERIFIER, _now())
    # Offline (a bundle), the age is not the question.
    assert W.policy().verify(W.cosign(NOTE, time_s=1000), VERIFIER, None).cosignatures[0][1] == 1000


def test_policy_checks_the_log_signature_first():
    other_log = sign_checkpoint(Checkpoint(VERIFIER.name, 10, bytes(range(32))),
                                type(log_signer())(VERIFIER.name, Ed25519PrivateKey.from_seed(b"\x01" * 32)))
    with pytest.raises(VerificationError):
        W.policy().verify(W.cosign(other_log), VERIFIER, _now())


# -- the pure core: split-view evidence ----------------------------------------------------------------------------


def test_split_view_of_one_size_two_roots_is_proven_and_canonical():
    a, b = _signed(10, bytes(range(32))), _signed(10, bytes(32))
    data = format_split_view(a, b, [])
    doc = json.loads(data)
    assert doc["format"] == SPLIT_VIEW_FORMAT and doc["origin"] == VERIFIER.name and doc["proof"] == []
    assert data == (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode()
    verify_split_view(parse_split_view(data), VERIFIER)
    with pytest.raises(VerificationError, match="same root"):
        verify_split_view(parse_split_view(format_split_view(a, a, [])), VERIFIER)
    with pytest.raises(InvalidInput):
        parse_split_view(data.replace(b"  ", b"   "))  # not canonical
    forged = format_split_view(a, b.replace(b"\n10\n", b"\n11\n", 1), [])  # the signature no longer holds
    with pytest.raises(VerificationError):
        verify_split_view(parse_split_view(forged), VERIFIER)


# -- through a real server: GetCheckpoint ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('witness') / 'log.db'}"
    # No idle heartbeat: the log stays as the test leaves it between two calls.
    with running_server(url, state=StatePolicy(heartbeat_s=3600)) as server, TamperProxy(server.target) as proxy:
        op = connect(server, party=OPERATOR)
        op.register_party(log_signer().private_key, party_id="insurer-1", roles=["insurer"],
                          public_keys=[PATIENT.public_key], display_name="I")
        patient = connect(server, patient=PATIENT)
        patient.grant(PATIENT, grantee="org:insurer-1", actions=["access"], purposes=["HPAYMT"],
                      data_classes=["laboratory-results"])
        server.older = bytes(ledger_client(server).checkpoint().note)  # a checkpoint to witness "a while ago"
        patient.grant(PATIENT, grantee="org:insurer-1", actions=["access"], purposes=["TREAT"],
                      data_classes=["imaging"])
        yield server, proxy


@pytest.fixture
def proxy(ledger):
    server, proxy = ledger
    proxy.mutate = lambda m, r: None
    yield proxy
    proxy.mutate = lambda m, r: None


def _witnessed_client(proxy, **kw):
    return ledger_client(proxy.target, witness_policy=W.policy(quorum=2), **kw)


def test_server_without_witnesses_is_refused_under_a_policy(ledger, proxy):
    server, _ = ledger
    assert ledger_client(server).checkpoint().witnessed is None  # no policy: today's behaviour
    with pytest.raises(NotCosigned):
        _witnessed_client(proxy).checkpoint()
    with pytest.raises(NotCosigned):
        _witnessed_client(proxy).get_entry(0)  # every checkpoint, not just GetCheckpoint's


def test_witnessed_checkpoint_is_accepted(proxy):
    witnessing(proxy, W, names=("w0", "w1"))
    c = _witnessed_client(proxy)
    vc = c.checkpoint()
    assert vc.witnessed is not None and vc.witnessed.checkpoint == vc.checkpoint
    assert c.get_entry(0).index == 0  # other answers ride on the fresh witnessed checkpoint


@pytest.mark.parametrize(
    "names, time_s, error",
    [
        (("w2",), None, UnderCosigned),
        (("w0", "w1"), lambda: _now() - 3600, StaleCosignatures),  # a genuine state an hour old, replayed
    ],
)
def test_under_cosigned_and_stale_checkpoints_are_refused(proxy, names, time_s, error):
    witnessing(proxy, W, names=names, time_s=time_s)
    with pytest.raises(error):
        _witnessed_client(proxy).checkpoint()


def test_wrong_cosignatures_are_refused(proxy):
    def flip_last_cosignature(method, resp):
        if method == "GetCheckpoint":
            resp.witnessed_checkpoint.note = _flip_last_cosignature(resp.witnessed_checkpoint.note)[0]

    witnessing(proxy, W, then=flip_last_cosignature)
    with pytest.raises(WrongCosignature):
        _witnessed_client(proxy).checkpoint()


def test_a_fork_shown_to_a_fresh_client_is_refused_at_once(ledger, proxy, tmp_path):
    server, _ = ledger

    # Today's hole: without a policy, a client that has never seen the log accepts the fork.
    def fork_alone(method, resp):
        if method == "GetCheckpoint":
            resp.checkpoint.note = _fork(resp.checkpoint.note)

    proxy.mutate = fork_alone
    assert ledger_client(proxy.target).checkpoint().checkpoint.root_hash == bytes(31) + b"\x01"
    with pytest.raises(NotCosigned):  # the operator cannot get the witnesses to cosign its fork
        _witnessed_client(proxy).checkpoint()

    # Moving the genuine cosignatures onto the fork: they are over another body.
    def fork_with_moved_cosignatures(method, resp):
        if method == "GetCheckpoint":
            genuine = W.cosign(bytes(resp.checkpoint.note))
            forked = _fork(resp.checkpoint.note)
            resp.checkpoint.note = forked + genuine[genuine.index(b"\n\n") + 2 :].split(b"\n", 1)[1]

    proxy.mutate = fork_with_moved_cosignatures
    with pytest.raises(WrongCosignature):
        _witnessed_client(proxy).checkpoint()

    # The genuine witnessed checkpoint served beside the fork: a split view, refused, with its evidence written.
    witnessing(proxy, W, then=fork_alone)
    with pytest.raises(InconsistentCheckpoints) as e:
        _witnessed_client(proxy, evidence_dir=tmp_path).checkpoint()
    assert e.value.evidence_path is not None
    assert cli_main(["verify-evidence", e.value.evidence_path, "--log-key", log_verifier_key()]) == 0


def test_a_checkpoint_that_does_not_extend_the_witnessed_one_is_refused(ledger, proxy, tmp_path):
    server, _ = ledger
    older = server.older

    def older_witnessed(method, resp, bad=False):
        if method == "GetCheckpoint":
            resp.witnessed_checkpoint.note = W.cosign(older)
            stub = log_pb2_grpc.LogServiceStub(open_channel(server.target))
            size = open_checkpoint(older, VERIFIER).size
            hashes = stub.GetConsistencyProof(log_pb2.GetConsistencyProofRequest(
                first=size, second=open_checkpoint(resp.checkpoint.note, VERIFIER).size)).hashes
            resp.witnessed_consistency[:] = list(hashes)
            if bad:
                resp.witnessed_consistency[0] = bytes(32)

    proxy.mutate = older_witnessed
    vc = _witnessed_client(proxy).checkpoint()
    assert vc.witnessed is not None and vc.witnessed.checkpoint.size < vc.checkpoint.size
    assert vc.witnessed_consistency
    proxy.mutate = lambda m, r: older_witnessed(m, r, bad=True)
    with pytest.raises(VerificationError):
        _witnessed_client(proxy, evidence_dir=tmp_path).checkpoint()


# -- split views seen by one client: the evidence file --------------------------------------------------------------


def _cli(*argv: str, capsys) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_client_that_sees_both_sides_writes_evidence_the_log_key_alone_verifies(ledger, proxy, tmp_path, capsys):
    server, _ = ledger
    state = tmp_path / "state.json"

    def fork(method, resp):
        if method == "GetCheckpoint":
            resp.checkpoint.note = _fork(resp.checkpoint.note)

    proxy.mutate = fork
    ledger_client(proxy.target, state_path=state).checkpoint()  # no policy, first sight: accepted
    with pytest.raises(InconsistentCheckpoints) as e:
        ledger_client(server, state_path=state).checkpoint()  # the real log: the other side
    path = e.value.evidence_path
    assert path is not None and path.startswith(str(tmp_path))  # default: beside the state file
    key = tmp_path / "log.pub"
    key.write_text(log_verifier_key() + "\n")
    code, out, _ = _cli("verify-evidence", path, "--log-key-file", str(key), capsys=capsys)
    assert code == 0 and "equivocation proven" in out
    code, out, _ = _cli("verify-evidence", path, "--log-key-file", str(key), "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["proven"] is True

    # Tampered: the smaller note's root changed (its signature fails), or both sides made equal.
    doc = json.loads(open(path).read())
    lines = doc["smaller_note"].split("\n")
    lines[2] = base64.b64encode(bytes(32)).decode()
    bad = tmp_path / "bad.json"
    bad.write_bytes(format_split_view("\n".join(lines).encode(), doc["larger_note"].encode(), []))
    code, _, err = _cli("verify-evidence", str(bad), "--log-key-file", str(key), capsys=capsys)
    assert code == 3 and "does NOT prove" in err
    same = tmp_path / "same.json"
    same.write_bytes(format_split_view(doc["larger_note"].encode(), doc["larger_note"].encode(), []))
    code, out, _ = _cli("verify-evidence", str(same), "--log-key-file", str(key), "--json", capsys=capsys)
    assert code == 3 and json.loads(out)["proven"] is False
    # Another log's key proves nothing.
    other = Ed25519PrivateKey.from_seed(b"\x03" * 32)
    from consent_ledger.core.note import format_verifier_key

    code, _, _ = _cli("verify-evidence", path, "--log-key", format_verifier_key(VERIFIER.name, other.public_key),
                      capsys=capsys)
    assert code == 3


def test_a_fork_of_a_smaller_size_is_proven_by_the_consistency_proof(ledger, proxy, tmp_path):
    server, _ = ledger
    c = ledger_client(server)
    size = c.checkpoint().checkpoint.size
    fork_size = next(n for n in range(size - 1, 1, -1) if n & (n - 1))  # not a power of two
    state = tmp_path / "state.json"

    def fork(method, resp):
        if method == "GetCheckpoint":
            resp.checkpoint.note = _fork(resp.checkpoint.note, size=fork_size)

    proxy.mutate = fork
    ledger_client(proxy.target, state_path=state).checkpoint()
    with pytest.raises(InconsistentCheckpoints) as e:
        ledger_client(server, state_path=state).checkpoint()
    sv = parse_split_view(open(e.value.evidence_path, "rb").read())
    assert open_checkpoint(sv.smaller_note, VERIFIER).size == fork_size and sv.proof
    verify_split_view(sv, VERIFIER)
    # A proof that does not lead to the larger root proves nothing.
    broken = parse_split_view(format_split_view(sv.smaller_note, sv.larger_note, [bytes(32)] * len(sv.proof)))
    with pytest.raises(VerificationError):
        verify_split_view(broken, VERIFIER)


# -- CheckAccess, receipts and bundles -------------------------------------------------------------------------------


def _check(client: ConsentClient):
    return client.check_access(PATIENT.public_key, action="access", purpose="HPAYMT", data=[LAB])


def _older_witnessed_access(server, bad: bool = False):
    def m(method, resp):
        if method != "CheckAccess":
            return
        resp.witnessed_checkpoint.note = W.cosign(server.older)
        stub = log_pb2_grpc.LogServiceStub(open_channel(server.target))
        first = open_checkpoint(server.older, VERIFIER).size
        second = open_checkpoint(resp.checkpoint.note, VERIFIER).size
        resp.witnessed_consistency[:] = list(
            stub.GetConsistencyProof(log_pb2.GetConsistencyProofRequest(first=first, second=second)).hashes
        )
        if bad:
            resp.witnessed_consistency[-1] = bytes(32)

    return m


def test_check_access_with_a_policy(ledger, proxy, tmp_path):
    server, _ = ledger
    # Unset by the server: refused.
    with pytest.raises(NotCosigned):
        _check(connect(proxy.target, party="insurer-1", witness_policy=W.policy()))
    # An older witnessed checkpoint and the right consistency proof: verified, and the evidence says so.
    proxy.mutate = _older_witnessed_access(server)
    client = ConsentClient(ledger_client(proxy.target, party="insurer-1"), witness_policy=W.policy())
    vd = _check(client)
    assert vd.permitted and vd.witnessed is not None and vd.witnessed_consistency
    assert vd.witnessed.checkpoint.size < vd.checkpoint.size
    # A bad consistency proof: refused.
    proxy.mutate = _older_witnessed_access(server, bad=True)
    with pytest.raises(VerificationError):
        _check(connect(proxy.target, party="insurer-1", witness_policy=W.policy(), evidence_dir=tmp_path))
    # The response's own checkpoint carrying the cosignatures is enough too.

    def self_cosigned(method, resp):
        if method == "CheckAccess":
            resp.checkpoint.note = W.cosign(resp.checkpoint.note)
            from .tamper_support import redecide

            redecide(resp, resp.decision.request.time_ms, log_signer().private_key)

    proxy.mutate = self_cosigned
    vd2 = _check(connect(proxy.target, party="insurer-1", witness_policy=W.policy()))
    assert vd2.witnessed is not None and vd2.witnessed.checkpoint == vd2.checkpoint

    # The receipt carries the witnessed checkpoint, and offline verification checks it.
    doc = export_decision_receipt(vd.receipt, (vd.witnessed.note, vd.witnessed_consistency))
    vkey = log_verifier_key()
    assert verify_decision_receipt(doc, vkey, witness_policy=W.policy()).witnessed is not None
    assert verify_decision_receipt(doc, vkey).witnessed is None  # no policy: today's check
    with pytest.raises(VerificationError, match="carries none"):
        verify_decision_receipt(export_decision_receipt(vd.receipt), vkey, witness_policy=W.policy())
    with pytest.raises(NotCosigned):
        verify_decision_receipt(doc, vkey, witness_policy=TestWitnesses(2, seed=0x30).policy(quorum=1))
    tampered = json.loads(json.dumps(doc))
    tampered["witnessed"]["consistency"][0] = base64.b64encode(bytes(32)).decode()
    with pytest.raises(VerificationError):
        verify_decision_receipt(tampered, vkey, witness_policy=W.policy())

    # The CLI: verify-receipt with the witness flags.
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(doc))
    flags = [a for k in W.vkeys() for a in ("--witness-key", k)] + ["--witness-quorum", "2"]
    assert cli_main(["verify-receipt", str(path), "--log-key", vkey, *flags]) == 0
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(export_decision_receipt(vd.receipt)))
    assert cli_main(["verify-receipt", str(bare), "--log-key", vkey, *flags]) == 3
    assert cli_main(["verify-receipt", str(bare), "--log-key", vkey]) == 0


def test_bundles_carry_the_witnessed_checkpoint(ledger, proxy, tmp_path):
    server, _ = ledger
    witnessing(proxy, W)
    c = ledger_client(proxy.target, patient=PATIENT, witness_policy=W.policy())
    entry, note = c.get_entry_with_note(2)  # registration, StateCommit, the first grant
    wc, proof = c.witness_proof(entry.checkpoint)
    vkey = log_verifier_key()
    bundle = export_consent_bundle(entry, note, vkey, (wc.note, proof))
    assert verify_consent_bundle(bundle, vkey, witness_policy=W.policy()).witnessed is not None
    assert verify_consent_bundle(bundle, vkey).witnessed is None
    with pytest.raises(VerificationError, match="carries none"):
        verify_consent_bundle(export_consent_bundle(entry, note, vkey), vkey, witness_policy=W.policy())
    forged = json.loads(json.dumps(bundle))
    forged["witnessed"]["checkpoint"] = _fork(wc.note).decode()  # re-signed by the log key, not cosigned
    with pytest.raises(NotCosigned):
        verify_consent_bundle(forged, vkey, witness_policy=W.policy())
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    keys = tmp_path / "witnesses.txt"
    keys.write_text("# the pinned witnesses\n" + "\n".join(W.vkeys()) + "\n")
    assert cli_main(["verify-bundle", str(path), "--log-key", vkey, "--witness-key-file", str(keys)]) == 0
    assert cli_main(["verify-bundle", str(path), "--log-key", vkey, "--witness-key-file", str(keys),
                     "--witness-quorum", "2", "--json"]) == 0


@pytest.mark.skipif(MTLS, reason="the CLI speaks plaintext to the proxy here; tests/test_tls.py covers its TLS")
def test_cli_witness_options(ledger, proxy, tmp_path, capsys, monkeypatch):
    for name in list(os.environ):
        if name.startswith("CONSENT_LEDGER_") and not name.startswith("CONSENT_LEDGER_TEST_"):
            monkeypatch.delenv(name)
    key = tmp_path / "log.pub"
    key.write_text(log_verifier_key() + "\n")
    base = ["--server", proxy.target, "--insecure", "--log-key-file", str(key), "--state", str(tmp_path / "s.json")]
    flags = [a for k in W.vkeys() for a in ("--witness-key", k)] + ["--witness-quorum", "2"]
    code, _, err = _cli("checkpoint", *base, *flags, capsys=capsys)
    assert code == 3 and "no cosignature by a pinned witness" in err  # the server serves none
    witnessing(proxy, W, names=("w0", "w2"))
    code, out, err = _cli("checkpoint", *base, *flags, "--json", capsys=capsys)
    assert code == 0, err
    assert [c["witness"] for c in json.loads(out)["witnessed"]["cosignatures"]] == ["w0", "w2"]
    code, _, err = _cli("checkpoint", *base, *flags, "--witness-quorum", "3", capsys=capsys)
    assert code == 3 and "3 needed" in err
    # The environment instead of flags; check-access keeps a receipt that carries the witnessed checkpoint.
    monkeypatch.setenv("CONSENT_LEDGER_WITNESS_KEYS", " ".join(W.vkeys()))
    monkeypatch.setenv("CONSENT_LEDGER_WITNESS_QUORUM", "2")
    receipt = tmp_path / "receipt.json"
    code, out, err = _cli("check-access", *base, "--as", "insurer-1", "--patient", PATIENT.public_key.hex(),
                          "--action", "access", "--purpose", "HPAYMT", "--data", "laboratory-results",
                          "--receipt-out", str(receipt), capsys=capsys)
    assert code == 0 and "witnessed:" in out, err
    assert "witnessed" in json.loads(receipt.read_text())
    code, out, err = _cli("verify-receipt", str(receipt), "--log-key-file", str(key), capsys=capsys)
    assert code == 0 and "witnessed:" in out, err
    # A genuine state an hour old: refused.
    witnessing(proxy, W, time_s=lambda: _now() - 3600)
    code, _, err = _cli("checkpoint", *base, capsys=capsys)
    assert code == 3 and "stale" in err
