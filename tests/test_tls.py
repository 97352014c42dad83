"""TLS and mutual TLS: the organisation is identified by its client certificate; plaintext is refused."""

from __future__ import annotations

import json
import os

import grpc
import pytest

from consent_ledger.cli import main
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.note import format_signer_key
from consent_ledger.core.payloads import DataItem
from consent_ledger.server.app import TlsFiles, is_loopback
from consent_ledger.service import ServiceConfig
from consent_ledger_client import ConsentClient, LedgerClient

from .server_support import ServerThread, log_signer, log_verifier_key
from .tls_support import ThrowawayCA

PATIENT = Ed25519PrivateKey.from_seed(b"\x81" * 32)
OPERATOR = "operator-console"  # the operator's certificate common name, as configured below


@pytest.fixture(scope="module")
def mtls(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    ca = ThrowawayCA(d)
    server_pem = ca.issue("localhost", server=True)
    config = ServiceConfig(
        database_url=f"sqlite:///{d / 'l.db'}",
        listen="127.0.0.1:0",
        tls=TlsFiles(server_pem.cert, server_pem.key, ca.ca_file),
        operators=(OPERATOR,),
    )
    server = ServerThread(config, log_signer())
    server.start()
    try:
        yield server, ca
    finally:
        server.stop()


def _client(server, ca, cn: str | None, patient: Ed25519PrivateKey | None = None) -> LedgerClient:
    cert = None
    if cn is not None:
        pem = ca.issue(cn, server=False)
        cert = (pem.key.read_bytes(), pem.cert.read_bytes())
    return LedgerClient.connect(
        f"localhost:{server.service.port}",
        verifier_key=log_verifier_key(),
        root_certificates=ca.ca_file.read_bytes(),
        client_cert=cert,
        patient_key=patient,
    )


def test_mtls_identifies_the_organisation_by_its_certificate(mtls):
    server, ca = mtls
    op = ConsentClient(_client(server, ca, OPERATOR))
    op.register_party(log_signer().private_key, party_id="insurer-1", roles=["insurer"], public_keys=[PATIENT.public_key], display_name="I")
    # The patient's app: a certificate naming no organisation; the patient is the one signing the request.
    patient = ConsentClient(_client(server, ca, "patient-app", patient=PATIENT))
    patient.grant(PATIENT, grantee="org:insurer-1", actions=["access"], purposes=["HPAYMT"], data_classes=["imaging"])
    insurer = ConsentClient(_client(server, ca, "insurer-1"))
    d = insurer.check_access(PATIENT.public_key, action="access", purpose="HPAYMT", data=[DataItem("imaging")])
    assert d.permitted and d.decision.request.requester_id == "insurer-1"
    # The development header is ignored under TLS: a certificate for another party cannot claim to be the insurer.
    other = ConsentClient(LedgerClient(channel=_client(server, ca, "nobody").channel, verifier_key=log_verifier_key(), party_id="insurer-1"))
    with pytest.raises(grpc.RpcError) as err:
        other.check_access(PATIENT.public_key, action="access", purpose="HPAYMT", data=[DataItem("imaging")])
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "nobody" in (err.value.details() or "")
    # Nor can it claim to be the operator.
    fake_op = ConsentClient(LedgerClient(channel=_client(server, ca, "nobody").channel, verifier_key=log_verifier_key(), party_id=OPERATOR))
    with pytest.raises(grpc.RpcError) as err:
        fake_op.register_party(log_signer().private_key, party_id="insurer-2", roles=["insurer"], public_keys=[PATIENT.public_key], display_name="J")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "nobody" in (err.value.details() or "")


def test_clients_without_a_certificate_or_tls_are_refused(mtls):
    server, ca = mtls
    with pytest.raises(grpc.RpcError) as err:
        _client(server, ca, None).checkpoint()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    plain = LedgerClient.connect(f"127.0.0.1:{server.service.port}", verifier_key=log_verifier_key(), insecure=True, timeout=3)
    with pytest.raises(grpc.RpcError):
        plain.checkpoint()


def test_plaintext_only_on_loopback():
    assert is_loopback("127.0.0.1:50051") and is_loopback("[::1]:1") and is_loopback("localhost:1")
    assert not is_loopback("0.0.0.0:50051") and not is_loopback("10.1.2.3:1")
    server = ServerThread(ServiceConfig(database_url="sqlite://", listen="0.0.0.0:0", insecure=True), log_signer())
    with pytest.raises(ValueError, match="only allowed on loopback"):
        server.start()
    server = ServerThread(ServiceConfig(database_url="sqlite://", listen="127.0.0.1:0"), log_signer())
    with pytest.raises(ValueError, match="refusing to serve without TLS"):
        server.start()



def test_the_cli_over_mutual_tls(mtls, tmp_path, capsys):
    """The CLI with --ca-cert/--client-cert/--client-key: the certificate says who asks, no --as needed; a patient
    app's certificate names nobody, and the patient's key file signs the requests."""
    server, ca = mtls
    log_pub = tmp_path / "log.key.pub"
    log_pub.write_text(log_verifier_key() + "\n")
    operator_key = tmp_path / "log.key"
    fd = os.open(operator_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(format_signer_key(log_signer().name, log_signer().private_key) + "\n")
    alice, clinic = tmp_path / "alice.key", tmp_path / "clinic-7.key"
    assert main(["keygen", "patient", "--out", str(alice)]) == 0
    assert main(["keygen", "org", "--out", str(clinic)]) == 0

    def as_(cn: str) -> list[str]:
        pem = ca.issue(cn, server=False)
        return ["--server", f"localhost:{server.service.port}", "--ca-cert", str(ca.ca_file),
                "--client-cert", str(pem.cert), "--client-key", str(pem.key),
                "--log-key-file", str(log_pub), "--state", str(tmp_path / f"{cn}.json")]  # fmt: skip

    capsys.readouterr()
    assert main(["register-party", "--operator-key", str(operator_key), "--party-id", "clinic-7", "--role", "hospital",
                 "--party-key-file", f"{clinic}.pub", "--display-name", "Clinic 7", *as_(OPERATOR)]) == 0  # fmt: skip
    assert main(["grant", "--key", str(alice), "--grantee", "org:clinic-7", "--action", "access", "--purpose", "TREAT",
                 "--data-class", "imaging", *as_("patient-app")]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["check-access", "--patient-key-file", f"{alice}.pub", "--action", "access", "--purpose", "TREAT",
                 "--data", "imaging", "--json", *as_("clinic-7")]) == 0  # fmt: skip
    decision = json.loads(capsys.readouterr().out)
    assert decision["decision"] == "PERMIT" and decision["request"]["requester_id"] == "clinic-7"
    assert main(["consents", "--patient-key-file", str(alice), *as_("patient-app")]) == 0
    assert "1 grant" in capsys.readouterr().out
    # The same app certificate without the patient's key is nobody in particular.
    assert main(["consents", "--patient-key-file", f"{alice}.pub", *as_("patient-app")]) == 1
    assert "PERMISSION_DENIED: unregistered organisation patient-app may not call ListConsents" in capsys.readouterr().err
