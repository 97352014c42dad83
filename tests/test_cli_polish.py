"""What a newcomer met in the CLI (issue 13 item 8): connection hints that fit the failure, errors as JSON with
--json, a quiet end when the reader of stdout goes away, counted nouns, the reviews table's columns, --for-patient
taking a key file, the demo's closing words and the files its suggested commands create, and `dev-ca`, whose
certificates a real server and the CLI use for mutual TLS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.note import Signer, format_verifier_key
from consent_ledger.cli import EXIT_BROKEN_PIPE, EXIT_ERROR, EXIT_OK, EXIT_VERIFICATION, main, public_key_from_text
from consent_ledger.demo import TRY_IT_ORG, prepare_workdir
from consent_ledger.keys import read_key
from consent_ledger.server.app import TlsFiles

from .server_support import OPERATOR, running_server
from .test_cli import (  # noqa: F401 - fixtures
    AS_OPERATOR,
    GRANT,
    clean_env,
    conn,
    log_key_file,
    operator_key,
    parties,
    patient_key,
    run_fail,
    run_json,
    server,
)


def _mtls_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "tls"
    assert main(["dev-ca", "--out", str(out), "--server-name", "ledger.test", "--client", OPERATOR,
                 "--client", "hospital-1"]) == EXIT_OK  # fmt: skip
    capsys.readouterr()
    return out


@pytest.fixture
def mtls_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    tls = _mtls_dir(tmp_path, capsys)
    files = TlsFiles(tls / "server.crt", tls / "server.key", tls / "ca.crt")
    with running_server(f"sqlite:///{tmp_path / 'tls.db'}", tls=files, insecure=False) as s:
        yield s, tls


def _base(tmp_path: Path, log_key_file: Path) -> list[str]:
    return ["checkpoint", "--log-key-file", str(log_key_file), "--state", str(tmp_path / "st.json"), "--timeout", "10"]


# -- dev-ca ---------------------------------------------------------------------------------------------------


def test_dev_ca_certificates_serve_and_connect_with_mutual_tls(
    mtls_server, tmp_path: Path, log_key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, tls = mtls_server
    port = server.target.rsplit(":", 1)[1]
    for host in ("localhost", "127.0.0.1"):  # the names the server certificate always carries
        code = main([*_base(tmp_path, log_key_file), "--server", f"{host}:{port}", "--ca-cert", str(tls / "ca.crt"),
                     "--client-cert", str(tls / "operator.crt"), "--client-key", str(tls / "operator.key")])  # fmt: skip
        out, err = capsys.readouterr()
        assert code == EXIT_OK, err
        assert "verified: signature by" in out
    # And by the name given (what a container's clients use), with --tls-server-name as a client not in DNS would.
    code = main([*_base(tmp_path, log_key_file), "--server", f"127.0.0.1:{port}", "--tls-server-name", "ledger.test",
                 "--ca-cert", str(tls / "ca.crt"), "--client-cert", str(tls / "hospital-1.crt"),
                 "--client-key", str(tls / "hospital-1.key")])  # fmt: skip
    assert code == EXIT_OK, capsys.readouterr().err
    for key in ("ca.key", "server.key", "operator.key", "hospital-1.key"):
        assert (tls / key).stat().st_mode & 0o777 == 0o600, key


def test_dev_ca_refuses_to_replace_files_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _mtls_dir(tmp_path, capsys)
    before = (out / "ca.crt").read_bytes()
    code, err = run_fail(capsys, "dev-ca", "--out", str(out), "--server-name", "ledger.test")
    assert code == EXIT_ERROR and "--force" in err
    assert (out / "ca.crt").read_bytes() == before
    assert main(["dev-ca", "--out", str(out), "--server-name", "ledger.test", "--force", "--json"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["server_names"] == ["ledger.test", "localhost"] and (out / "ca.crt").read_bytes() != before
    code, err = run_fail(capsys, "dev-ca", "--out", str(tmp_path / "x"))
    assert code == EXIT_ERROR and "--server-name" in err


# -- connection hints -----------------------------------------------------------------------------------------


def test_hints_fit_the_tls_failure(mtls_server, tmp_path: Path, log_key_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server, tls = mtls_server
    port = server.target.rsplit(":", 1)[1]
    base = [*_base(tmp_path, log_key_file), "--server", f"localhost:{port}"]
    ca = ["--ca-cert", str(tls / "ca.crt")]
    client = ["--client-cert", str(tls / "operator.crt"), "--client-key", str(tls / "operator.key")]

    # A certificate whose names do not include what the client asked for: not an --insecure problem.
    code, err = run_fail(capsys, *base, *ca, *client, "--tls-server-name", "wrong.example")
    assert code == EXIT_ERROR and "--tls-server-name" in err and "needs --insecure" not in err
    # A server certificate from a CA the client does not trust (system roots only).
    code, err = run_fail(capsys, *base, *client)
    assert code == EXIT_ERROR and "--ca-cert" in err and "needs --insecure" not in err
    # No client certificate for a mutual-TLS server.
    code, err = run_fail(capsys, *base, *ca)
    assert code == EXIT_ERROR and "--client-cert" in err
    # Plaintext against a TLS server: --insecure is the problem, not the cure.
    code, err = run_fail(capsys, *base, "--insecure")
    assert code == EXIT_ERROR and "drop --insecure" in err


def test_hints_for_a_development_server_and_no_server(
    server, tmp_path: Path, log_key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_fail(capsys, *_base(tmp_path, log_key_file), "--server", server.target)  # TLS to a plaintext server
    assert code == EXIT_ERROR and "needs --insecure" in err
    code, err = run_fail(capsys, *_base(tmp_path, log_key_file), "--server", "127.0.0.1:1", "--insecure")
    assert code == EXIT_ERROR and "is the ledger running at 127.0.0.1:1?" in err and "TLS" not in err


# -- errors as JSON -------------------------------------------------------------------------------------------


def test_json_errors_are_json(server, tmp_path: Path, log_key_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*_base(tmp_path, log_key_file), "--server", "127.0.0.1:1", "--insecure", "--json"]) == EXIT_ERROR
    out, err = capsys.readouterr()
    error = json.loads(out)["error"]
    assert error["kind"] == "grpc" and error["code"] == "UNAVAILABLE" and error["exit_status"] == EXIT_ERROR
    assert "is the ledger running" in error["hint"] and err == ""

    other = Signer("ledger.test/log", Ed25519PrivateKey.from_seed(b"\x07" * 32))
    code = main(["checkpoint", "--server", server.target, "--insecure",
                 "--log-key", format_verifier_key(other.name, other.public_key),
                 "--state", str(tmp_path / "s2.json"), "--json"])  # fmt: skip
    out, _ = capsys.readouterr()
    assert code == EXIT_VERIFICATION
    error = json.loads(out)["error"]
    assert error["kind"] == "verification" and error["exit_status"] == EXIT_VERIFICATION

    assert main(["grant", "--key", str(tmp_path / "missing.key"), *GRANT, "--server", server.target, "--insecure",
                 "--log-key-file", str(log_key_file), "--json"]) == EXIT_ERROR  # fmt: skip
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["kind"] in ("error", "os") and "missing.key" in error["message"]


# -- broken pipe ----------------------------------------------------------------------------------------------


def test_a_reader_that_went_away_ends_the_command_quietly(conn: list[str], tmp_path: Path) -> None:
    """`consent-ledger ... | head`: the pipe's reading end is closed before the command writes anything, so its
    first write fails with EPIPE; it used to print `consent-ledger: Broken pipe`."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "consent_ledger.cli", "checkpoint", *conn],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120, check=False,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == EXIT_BROKEN_PIPE, proc.stderr
    assert "Broken pipe" not in proc.stderr and "Traceback" not in proc.stderr


# -- counted nouns and the reviews table ----------------------------------------------------------------------


def test_audit_counts_its_nouns(conn: list[str], patient_key: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_json(capsys, "grant", "--key", str(patient_key), *GRANT, *conn)
    run_json(capsys, "grant", "--key", str(patient_key), *GRANT, *conn)
    assert main(["audit", "--end", "1", *conn, "--as", "auditor"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "  1 entry: 1 consent grant\n" in out and "0 StateCommits" in out and "1 entries" not in out
    assert main(["audit", *conn, "--as", "auditor"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "2 consent grants" in out and "2 StateCommits" in out


def test_reviews_columns_hold_the_time(
    parties, conn: list[str], patient_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    pub = f"{patient_key}.pub"
    run_json(capsys, "check-access", "--patient-key-file", pub, "--action", "access", "--as", "ed-1",
             "--purpose", "ETREAT", "--data", "clinical-notes:MH", "--break-glass", "--reason", "unconscious", *conn)  # fmt: skip
    assert main(["reviews", *conn, *AS_OPERATOR]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if "WHEN" in line)
    row = next(line for line in lines if line.strip().startswith("#"))
    when = row[header.index("WHEN") : header.index("PARTY")].strip()
    assert when.endswith(" UTC") and len(when) == len("2026-05-01 12:00:00 UTC")
    assert row[header.index("PARTY") :].startswith("ed-1 ")


# -- --for-patient takes a key file ---------------------------------------------------------------------------


def test_a_patient_key_may_be_given_as_its_file(patient_key: Path, tmp_path: Path) -> None:
    public = read_key(patient_key).public_key
    pub_file = Path(f"{patient_key}.pub")
    assert public_key_from_text(str(pub_file), "--for-patient") == public
    assert public_key_from_text(str(patient_key), "--for-patient") == public  # the private key file: its public key
    assert public_key_from_text(pub_file.read_text(), "--for-patient") == public
    assert public_key_from_text(public.hex(), "--for-patient") == public
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key\n")
    with pytest.raises(Exception, match="junk.pub"):
        public_key_from_text(str(junk), "--for-patient")


def test_delegate_grants_for_a_patient_named_by_pub_file(
    conn: list[str], patient_key: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    delegate = tmp_path / "guardian.key"
    assert main(["keygen", "patient", "--name", "guardian", "--out", str(delegate)]) == EXIT_OK
    capsys.readouterr()
    run_json(capsys, "delegate", "--key", str(patient_key), "--delegate-key-file", f"{delegate}.pub",
             "--relationship", "guardian", "--scope", "grant", *conn)  # fmt: skip
    done = run_json(capsys, "grant", "--key", str(delegate), "--for-patient", f"{patient_key}.pub", *GRANT, *conn)
    assert done["patient"] == read_key(patient_key).public_key.hex()


# -- the demo -------------------------------------------------------------------------------------------------


def test_a_new_demo_run_removes_the_key_its_suggestions_create(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    workdir.mkdir()
    for name in (f"{TRY_IT_ORG}.key", f"{TRY_IT_ORG}.key.pub"):
        (workdir / name).write_text("from the last run\n")
    prepare_workdir(workdir)
    assert not (workdir / f"{TRY_IT_ORG}.key").exists() and not (workdir / f"{TRY_IT_ORG}.key.pub").exists()
    # So the suggested `keygen org` works again.
    assert main(["keygen", "org", "--out", str(workdir / f"{TRY_IT_ORG}.key")]) == EXIT_OK


def test_serve_without_tls_or_insecure_speaks_in_cli_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_fail(capsys, "serve", "--database-url", f"sqlite:///{tmp_path / 'x.db'}", "--listen", "127.0.0.1:0")
    assert code == EXIT_ERROR
    assert "--tls-cert" in err and "--insecure" in err and "dev-ca" in err and "insecure=True" not in err
