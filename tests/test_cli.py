"""The command line, run in-process (main([...])) and once as a subprocess, against a real server on port 0."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from consent_ledger.cli import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_VERIFICATION,
    build_parser,
    main,
)
from consent_ledger.core import payloads
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.envelope import keyid_for, sign_envelope
from consent_ledger.core.note import Signer, format_signer_key, format_verifier_key
from consent_ledger.presentation import format_time
from consent_ledger.core.payloads import DataItem
from consent_ledger.keys import read_key
from consent_ledger.storage import schema
from consent_ledger_client import ConsentClient, LedgerClient

from .entries_support import grant_envelope
from .crash_support import ServerProcess, make_log_key
from .server_support import AUDITOR, OPERATOR, log_signer, log_verifier_key, running_server


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CONSENT_LEDGER_* settings from the caller's shell, and a HOME of our own for default state files."""
    for name in list(os.environ):
        if name.startswith("CONSENT_LEDGER_") and not name.startswith("CONSENT_LEDGER_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[object]:
    """A development server (plaintext on loopback, the party header names callers) whatever the suite's transport:
    the CLI chooses its transport by its own flags, and tests/test_tls.py runs it over mutual TLS."""
    with running_server(f"sqlite:///{tmp_path / 'ledger.db'}", insecure=True, tls=None) as s:
        yield s


@pytest.fixture
def log_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "log.key.pub"
    path.write_text(log_verifier_key() + "\n")
    return path


@pytest.fixture
def patient_key(tmp_path: Path) -> Path:
    path = tmp_path / "patient.key"
    assert main(["keygen", "patient", "--out", str(path)]) == 0
    return path


@pytest.fixture
def conn(server, log_key_file: Path, tmp_path: Path) -> list[str]:
    """Connection and trust options for the test server."""
    return [
        "--server", server.target, "--insecure",
        "--log-key-file", str(log_key_file),
        "--state", str(tmp_path / "state.json"),
    ]  # fmt: skip


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    return json.loads(out)


def run_fail(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code != EXIT_OK, out
    return code, err


# Who is asking, on the test server (its configured auditor and operator names).
AS_AUDITOR = ["--as", AUDITOR]
AS_OPERATOR = ["--as", OPERATOR]

GRANT = [
    "--grantee", "org:hospital-1",
    "--action", "access",
    "--purpose", "TREAT",
    "--data-class", "laboratory-results", "--data-class", "imaging",
    "--valid-days", "30",
]  # fmt: skip


# -- keygen ---------------------------------------------------------------------------------------------------


def test_keygen_writes_private_key_0600_and_public_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(capsys, "keygen", "log", "--name", "ledger.example.org/log", "--out", str(tmp_path / "k" / "log.key"))
    key = tmp_path / "k" / "log.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("PRIVATE+KEY+ledger.example.org/log+")
    assert (tmp_path / "k" / "log.key.pub").read_text().strip() == out["verifier_key"]
    assert out["verifier_key"].startswith("ledger.example.org/log+")
    # Never replaces a key unless asked.
    code, err = run_fail(capsys, "keygen", "log", "--name", "ledger.example.org/log", "--out", str(key))
    assert code == EXIT_ERROR and "File exists" in err


def test_keygen_patient(patient_key: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert stat.S_IMODE(patient_key.stat().st_mode) == 0o600
    assert patient_key.with_name("patient.key.pub").read_text().startswith("patient+")


# -- the client commands --------------------------------------------------------------------------------------


LOG_KEY_ID = keyid_for(log_signer().public_key)


def assert_closed_by_state_commit(submitted: dict, conn: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    """A consent change's batch ends with a StateCommit signed by the log key, right after it, inside the
    checkpoint the submission reported; the command said so. Returns the StateCommit entry (JSON)."""
    index, size = submitted["index"], submitted["checkpoint"]["size"]
    assert size == index + 2, "a lone consent change is followed by exactly its StateCommit"
    commit = run_json(capsys, "get", str(index + 1), *conn, *AS_AUDITOR)
    assert commit["kind"] == "state commit" and commit["payload_type"] == payloads.STATE_COMMIT
    assert commit["signers"] == [LOG_KEY_ID]
    assert len(commit["payload"]["map_root"]) == 64
    assert commit["payload"]["batch_time_ms"] == commit["integrated_time_ms"]
    reported = dict(submitted["state_commit"])
    assert reported.pop("batch_time").startswith(commit["integrated_time"][:19])
    assert reported == {"index": index + 1, "map_root": commit["payload"]["map_root"],
                        "map_vrf_public_key": commit["payload"]["map_vrf_public_key"],
                        "batch_time_ms": commit["payload"]["batch_time_ms"], "signed_by_log_key": True}
    assert len(reported["map_vrf_public_key"]) == 64
    return commit


def test_grant_get_revoke_checkpoint_consistency(
    conn: list[str], patient_key: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    first = run_json(capsys, "grant", "--key", str(patient_key), *GRANT, "--legal-basis", "PIPL-29", *conn)
    assert first["index"] == 0 and not first["duplicate"]
    assert len(first["consent_id"]) == 64
    size1 = first["checkpoint"]["size"]
    assert first["checkpoint"]["origin"] == "ledger.test/log"
    assert first["verified"]["inclusion"] == {"leaf_index": 0, "tree_size": size1, "signed_by": "ledger.test/log"}
    assert first["verified"]["body_hash_matches_leaf"] is True
    assert first["verified"]["previous_checkpoint_size"] is None

    saved = tmp_path / "first.note"
    cp = run_json(capsys, "checkpoint", "--save", str(saved), *conn)
    assert cp["checkpoint"]["size"] == size1 and cp["previous_size"] == size1
    assert saved.read_text() == cp["note"]
    root1 = assert_closed_by_state_commit(first, conn, capsys)["payload"]["map_root"]

    second = run_json(capsys, "grant", "--key", str(patient_key), "--grantee", "role:insurer", "--action", "access,use",
                      "--purpose", "HPAYMT", "--data-class", "coverage-and-billing", "--deny", *conn)
    assert second["index"] == size1 and second["verified"]["previous_checkpoint_size"] == size1
    root2 = assert_closed_by_state_commit(second, conn, capsys)["payload"]["map_root"]
    assert root2 != root1  # the new grant is in force: the consent state changed

    got = run_json(capsys, "get", "0", *conn, *AS_AUDITOR)
    assert got["consent_id"] == first["consent_id"]
    assert got["kind"] == "consent grant"
    assert got["payload"]["grantee"] == "org:hospital-1"
    assert got["payload"]["purposes"] == ["TREAT"]
    assert got["payload"]["data_classes"] == ["laboratory-results", "imaging"]
    assert got["payload"]["legal_basis"] == {"code": "PIPL-29", "text": ""}
    assert got["verified"]["inclusion"]["tree_size"] == second["checkpoint"]["size"]
    assert got["payload"]["validity"]["end_ms"] - got["payload"]["validity"]["start_ms"] == 30 * 86_400_000

    revoked = run_json(capsys, "revoke", "--key", str(patient_key), "--consent-id", first["consent_id"],
                       "--reason", "moved", *conn)
    assert revoked["index"] == second["checkpoint"]["size"] and revoked["revoked_consent_id"] == first["consent_id"]
    assert revoked["payload_type"] == payloads.CONSENT_REVOCATION
    root3 = assert_closed_by_state_commit(revoked, conn, capsys)["payload"]["map_root"]
    assert root3 not in (root1, root2)  # the revoked grant left the in-force set

    # The log: each consent change, then the StateCommit that closed its batch; nothing else.
    listed = run_json(capsys, "entries", "0", "10", *conn, *AS_AUDITOR)
    assert [(e["index"], e["kind"]) for e in listed["entries"]] == [
        (0, "consent grant"), (1, "state commit"), (2, "consent grant"), (3, "state commit"),
        (4, "consent revocation"), (5, "state commit")]  # fmt: skip
    assert listed["entries"][2]["payload"]["decision"] == "DENY"
    assert listed["entries"][4]["payload"]["consent_id"] == first["consent_id"]
    assert [e["payload"]["map_root"] for e in listed["entries"][1::2]] == [root1, root2, root3]

    state = run_json(capsys, "consistency", *conn)
    assert state == {"compared": True, "consistent": True, "old": state["latest"], "latest": state["latest"]}
    old = run_json(capsys, "consistency", "--old-note", str(saved), *conn)
    assert old["consistent"] is True and old["old"]["size"] == size1
    assert old["latest"]["size"] == revoked["checkpoint"]["size"] == 6

    note = run_json(capsys, "verify-note", str(saved), "--log-key-file", conn[conn.index("--log-key-file") + 1])
    assert note["checkpoint"]["size"] == size1 and note["signature_verified"] is True


def test_human_output_says_what_was_verified(conn: list[str], patient_key: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["grant", "--key", str(patient_key), *GRANT, *conn]) == 0
    out = capsys.readouterr().out
    assert "index            0" in out and "checkpoint size  2" in out
    assert "verified: inclusion of leaf 0 in checkpoint of size 2 signed by ledger.test/log" in out
    assert "body hash matches leaf commitment" in out
    assert "the ledger closed the batch with StateCommit #1: consent-state map root " in out
    assert main(["grant", "--key", str(patient_key), *GRANT, *conn]) == 0
    out = capsys.readouterr().out
    assert "index            2" in out and "consistent with previous checkpoint size 2" in out
    assert main(["get", "2", *conn, *AS_AUDITOR]) == 0
    out = capsys.readouterr().out
    assert "entry 2: consent grant" in out
    assert "purposes" in out and "TREAT (treatment)" in out and "org:hospital-1" in out
    # A StateCommit reads as what it is: the map root, its time, signed by the log key.
    root = run_json(capsys, "get", "3", *conn, *AS_AUDITOR)["payload"]["map_root"]
    assert main(["get", "3", *conn, *AS_AUDITOR]) == 0
    out = capsys.readouterr().out
    assert "entry 3: state commit" in out and f"map root    {root}" in out and "batch time  " in out
    assert f"signed by   the log key (ed25519:{log_signer().public_key.hex()[:16]}...)" in out
    assert "envelope signature by the log key (ed25519:" in out
    assert main(["entries", "0", "4", *conn, *AS_AUDITOR]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "consent grant  PERMIT org:hospital-1" in lines[0]
    assert "state commit  map root " in lines[1] and lines[1].endswith("signed by the log key")
    assert f"map root {root[:16]}...  as of " in lines[3]
    assert main(["checkpoint", *conn]) == 0
    assert "size       4" in capsys.readouterr().out


def test_consistency_with_no_saved_state(conn: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(capsys, "consistency", *conn)
    assert out["compared"] is False and out["latest"]["size"] == 0
    # The checkpoint was saved: the next run compares.
    assert run_json(capsys, "consistency", *conn)["compared"] is True


def test_default_state_file_and_environment(
    server, log_key_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONSENT_LEDGER_SERVER", server.target)
    monkeypatch.setenv("CONSENT_LEDGER_INSECURE", "1")
    monkeypatch.setenv("CONSENT_LEDGER_LOG_KEY_FILE", str(log_key_file))
    assert run_json(capsys, "checkpoint")["checkpoint"]["origin"] == "ledger.test/log"
    states = list((tmp_path / "home" / ".consent-ledger" / "state").iterdir())
    assert [p.name for p in states] == [f"ledger.test_log-{log_verifier_key().split('+')[1]}.json"]
    assert stat.S_IMODE(states[0].stat().st_mode) == 0o600


def test_health(server, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_json(capsys, "health", "--server", server.target, "--insecure")["status"] == "SERVING"


# -- errors ---------------------------------------------------------------------------------------------------


def test_unknown_purpose_is_refused_before_anything_is_sent(
    conn: list[str], patient_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    code, err = run_fail(capsys, "grant", "--key", str(patient_key), "--grantee", "org:hospital-1", "--action", "access",
                         "--purpose", "NOPE", "--data-class", "imaging", *conn)
    assert code == EXIT_ERROR
    assert err.startswith("consent-ledger: purposes: unknown purpose of use 'NOPE'")
    assert run_json(capsys, "checkpoint", *conn)["checkpoint"]["size"] == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data-class", "x-rays"], "unknown data class"),
        (["--data-class", "imaging", "--grantee", "hospital"], "grantee"),
        (["--data-class", "imaging", "--valid-from", "tomorrow"], "--valid-from: 'tomorrow' is not a date"),
        (["--data-class", "imaging", "--valid-days", "3", "--valid-until", "2030-01-01"], "not both"),
    ],
)
def test_bad_grant_input(
    conn: list[str], patient_key: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    capsys.readouterr()
    argv = ["grant", "--key", str(patient_key), "--grantee", "org:h", "--action", "access", "--purpose", "TREAT"]
    code, err = run_fail(capsys, *argv, *extra, *conn)
    assert code == EXIT_ERROR and message in err


def test_missing_key_file(conn: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_fail(capsys, "grant", "--key", str(tmp_path / "nope.key"), *GRANT, *conn)
    assert code == EXIT_ERROR and "nope.key does not exist" in err


def test_key_file_readable_by_others_is_refused(
    conn: list[str], patient_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    patient_key.chmod(0o644)
    code, err = run_fail(capsys, "revoke", "--key", str(patient_key), "--consent-id", "0" * 64, *conn)
    assert code == EXIT_ERROR and "readable by others" in err


def test_wrong_log_key_is_a_verification_failure(server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = Signer("ledger.test/log", Ed25519PrivateKey.from_seed(b"\x07" * 32))
    wrong = format_verifier_key(other.name, other.public_key)
    code, err = run_fail(capsys, "checkpoint", "--server", server.target, "--insecure", "--log-key", wrong,
                         "--state", str(tmp_path / "s.json"))
    assert code == EXIT_VERIFICATION
    assert "verification failed" in err and "not signed by the pinned log key" in err
    assert not (tmp_path / "s.json").exists()


def test_private_key_given_as_log_key(server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "log.key"
    assert main(["keygen", "log", "--name", "ledger.test/log", "--out", str(key)]) == 0
    capsys.readouterr()
    code, err = run_fail(capsys, "checkpoint", "--server", server.target, "--insecure", "--log-key-file", str(key))
    assert code == EXIT_ERROR and "private (signing) key" in err


def test_malformed_log_key_and_no_log_key(server, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_fail(capsys, "checkpoint", "--server", server.target, "--insecure", "--log-key", "nonsense")
    assert code == EXIT_ERROR and "--log-key: not a verifier key" in err
    code, err = run_fail(capsys, "checkpoint", "--server", server.target, "--insecure")
    assert code == EXIT_ERROR and "no log key" in err


def test_grpc_errors_show_code_and_details(conn: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_fail(capsys, "get", "5", *conn, *AS_AUDITOR)
    assert code == EXIT_ERROR and "NOT_FOUND: " in err


def test_unreachable_server(log_key_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_fail(capsys, "checkpoint", "--server", "127.0.0.1:1", "--insecure", "--timeout", "2",
                         "--log-key-file", str(log_key_file), "--state", str(tmp_path / "s.json"))
    assert code == EXIT_ERROR and "UNAVAILABLE: " in err and "is the ledger running" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["get", "-1"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["grant", "--grantee", "org:x"])
    assert e.value.code == 2


def test_split_view_is_reported_with_evidence(log_key_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two servers with the same log key but different histories: the second checkpoint cannot extend the first."""
    state = tmp_path / "state.json"
    trust = ["--insecure", "--log-key-file", str(log_key_file), "--state", str(state)]
    sizes = []
    for db, count in (("a.db", 2), ("b.db", 3)):
        with running_server(f"sqlite:///{tmp_path / db}", insecure=True, tls=None) as s:
            with LedgerClient.connect(s.target, verifier_key=log_verifier_key(), insecure=True, party_id=OPERATOR) as c:
                for _ in range(count):
                    c.submit(grant_envelope())
                sizes.append(c.checkpoint().checkpoint.size)
            code = main(["checkpoint", "--server", s.target, *trust])
    err = capsys.readouterr().err
    assert code == EXIT_VERIFICATION and sizes[0] < sizes[1]
    assert "split view" in err and "--- smaller checkpoint ---" in err and f"ledger.test/log\n{sizes[0]}\n" in err


# -- as a program, and the demo -------------------------------------------------------------------------------


def test_runs_as_a_subprocess(conn: list[str], patient_key: Path, server) -> None:
    with LedgerClient.connect(server.target, verifier_key=log_verifier_key(), insecure=True, party_id=OPERATOR) as c:
        key = Ed25519PrivateKey.from_seed(b"\x22" * 32)
        payload = payloads.build_grant(patient=key.public_key, grantee="any", actions=["access"], purposes=["TREAT"],
                                       data_classes=["*"])
        c.submit(sign_envelope(payloads.CONSENT_GRANT, payload, [key]))
    proc = subprocess.run(
        [sys.executable, "-m", "consent_ledger.cli", "get", "0", *conn, *AS_AUDITOR, "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["payload"]["grantee"] == "any"


# -- organisations, access checks and the patient's view ------------------------------------------------------


@pytest.fixture
def operator_key(tmp_path: Path) -> Path:
    """The test log's signing key (the operator's key) in a 0600 file, as register-party wants it."""
    path = tmp_path / "log.key"
    signer = log_signer()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(format_signer_key(signer.name, signer.private_key) + "\n")
    return path


@pytest.fixture
def parties(conn: list[str], operator_key: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, dict]:
    """hospital-1, insurer-1 and ed-1 (role hospital), registered through the CLI."""
    out = {}
    for party, role, name in (("hospital-1", "hospital", "General Hospital"), ("insurer-1", "insurer", "Acme"),
                              ("ed-1", "hospital", "City ED")):
        key = tmp_path / f"{party}.key"
        assert main(["keygen", "org", "--out", str(key)]) == 0
        capsys.readouterr()
        # The private key file works too: only its public key is used.
        key_arg = str(key) if party == "ed-1" else f"{key}.pub"
        out[party] = run_json(capsys, "register-party", "--operator-key", str(operator_key), "--party-id", party,
                              "--role", role, "--party-key-file", key_arg, "--display-name", name, *conn, *AS_OPERATOR)
    return out


def test_keygen_org_is_named_after_its_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(capsys, "keygen", "org", "--out", str(tmp_path / "insurer-1.key"))
    assert out["verifier_key"].startswith("insurer-1+")
    assert (tmp_path / "insurer-1.key.pub").read_text().startswith("insurer-1+")


def test_register_party(
    parties: dict[str, dict], conn: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ed = parties["ed-1"]
    # Each registration changes its party's key in the consent-state map, so a StateCommit closes its batch.
    assert [p["index"] for p in parties.values()] == [0, 2, 4]
    kinds = [e["kind"] for e in run_json(capsys, "entries", "0", "10", *conn, *AS_AUDITOR)["entries"]]
    assert kinds[:6] == ["party registration", "state commit"] * 3
    assert ed["roles"] == ["hospital"] and ed["display_name"] == "City ED" and ed["capabilities"] == []
    pub = (tmp_path / "ed-1.key.pub").read_text().strip()
    assert ed["public_keys"] == [parse_pub(pub).hex()]
    assert ed["verified"]["inclusion"]["tree_size"] == 6


def parse_pub(text: str) -> bytes:
    from consent_ledger.core.note import parse_verifier_key

    return parse_verifier_key(text).public_key


def test_register_party_human_output_and_refusals(
    conn: list[str], operator_key: Path, patient_key: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    base = ["register-party", "--party-id", "lab-1", "--role", "hospital", "--party-key-file", f"{patient_key}.pub",
            "--display-name", "City Lab", *conn, *AS_OPERATOR]
    assert main([base[0], "--operator-key", str(operator_key), *base[1:]]) == 0
    out = capsys.readouterr().out
    assert "party registration appended" in out and "lab-1 (City Lab)" in out
    # The log's first batch: the registration and the StateCommit that closes it.
    assert "verified: inclusion of leaf 0 in checkpoint of size 2" in out
    size = run_json(capsys, "checkpoint", *conn)["checkpoint"]["size"]
    # Signed by a key that is not the operator's: the ledger refuses, and says why.
    code, err = run_fail(capsys, base[0], "--operator-key", str(patient_key), *base[1:])
    assert code == EXIT_ERROR and "PERMISSION_DENIED: only the ledger operator may register a party" in err
    code, err = run_fail(capsys, base[0], "--operator-key", str(operator_key), *base[1:3], "--role", "boss",
                         *base[5:])
    assert code == EXIT_ERROR and "unknown role 'boss'" in err
    code, err = run_fail(capsys, base[0], "--operator-key", str(operator_key), *base[1:], "--capability", "root")
    assert code == EXIT_ERROR and "unknown capability 'root'" in err
    assert run_json(capsys, "checkpoint", *conn)["checkpoint"]["size"] == size  # refusals append nothing
    # The operator lets lab-1 attest guardians; a newer registration without the flag takes it away.
    assert main([base[0], "--operator-key", str(operator_key), *base[1:], "--capability", "attest-guardianship"]) == 0
    assert "capabilities     attest-guardianship" in capsys.readouterr().out
    again = run_json(capsys, base[0], "--operator-key", str(operator_key), *base[1:])
    assert again["capabilities"] == []


def test_check_access_consents_who_asked(
    parties: dict[str, dict], conn: list[str], patient_key: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    pub = f"{patient_key}.pub"
    patient_hex = parse_pub(Path(pub).read_text().strip()).hex()
    ask = ["check-access", "--patient-key-file", pub, "--action", "access", *conn]

    refused = run_json(capsys, *ask, "--as", "insurer-1", "--purpose", "HPAYMT", "--data", "laboratory-results")
    assert refused["decision"] == "DENY" and refused["consent_ids"] == []
    assert refused["outcomes"][0]["reasons"][0]["code"] == "NO_MATCHING_CONSENT"
    # Only the insurer's registration and the StateCommit: proven absent for each selector, no consent shown.
    state = refused["verified"]["consent_state"]
    assert sorted(refused["verified"]["evidence"]) == sorted([parties["insurer-1"]["index"], state["state_commit_index"]])
    assert run_json(capsys, "get", str(state["state_commit_index"]), *conn, *AS_AUDITOR)["kind"] == "state commit"
    assert state["selectors"] == ["org:insurer-1", "role:insurer", "any"]
    assert state["in_force"] == {"org:insurer-1": [], "role:insurer": [], "any": []}
    assert state["map_proofs_verified"] and state["evidence_is_exactly_the_in_force_set"]
    assert state["signed_by_log_key"] and state["max_state_age_ms"] == 120_000
    assert len(state["map_root"]) == 64 and state["batch_time_ms"] <= refused["request"]["time_ms"]

    grant = run_json(capsys, "grant", "--key", str(patient_key), "--grantee", "org:insurer-1", "--action", "access",
                     "--purpose", "HPAYMT", "--data-class", "laboratory-results", *conn)
    receipt = tmp_path / "receipt.json"
    mixed = run_json(capsys, *ask, "--as", "insurer-1", "--purpose", "HPAYMT", "--data", "laboratory-results",
                     "--data", "clinical-notes:MH", "--record", "--receipt-out", str(receipt))
    assert mixed["decision"] == "PARTIAL"
    assert [(o["data_class"], o["sensitivity_labels"], o["decision"]) for o in mixed["outcomes"]] == [
        ("laboratory-results", [], "PERMIT"), ("clinical-notes", ["MH"], "DENY")]
    assert mixed["consent_ids"] == [grant["consent_id"]]
    assert mixed["access_event_index"] is not None
    in_force = mixed["verified"]["consent_state"]
    assert in_force["state_commit_index"] == grant["state_commit"]["index"] == grant["index"] + 1
    assert in_force["map_root"] == grant["state_commit"]["map_root"]
    assert in_force["in_force"] == {"org:insurer-1": [grant["consent_id"]], "role:insurer": [], "any": []}
    assert mixed["verified"]["decision_recomputed_equal"] is True
    assert mixed["valid_until_ms"] > mixed["request"]["time_ms"]

    # The same question in words: the decision, each category, and what was verified.
    assert main([*ask, "--as", "insurer-1", "--purpose", "HPAYMT", "--data", "laboratory-results",
                 "--data", "clinical-notes:MH"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "decision: PARTIAL  (insurer-1 asks to access data of patient" in out
    assert "laboratory-results   PERMIT  CONSENT_PERMIT" in out
    assert "clinical-notes [MH]  DENY" in out
    assert "verified: 3 evidence entries proven in checkpoint of size" in out
    assert "decision re-computed from the evidence: PARTIAL, equal to the server's" in out
    assert f"verified: consent state as of {format_time(in_force['batch_time_ms'])} (StateCommit " in out
    assert ", signed by the log key, " in out and " s old, at most 120 s accepted): " in out
    assert "map proofs for org:insurer-1, role:insurer, any hold; the evidence is exactly the in-force set for each " \
           "(1 consent for org:insurer-1; none for role:insurer, any), so nothing was left out" in out
    assert "receipt signature by the log key verifies" in out and "valid until" in out

    # The receipt verifies offline (no --server at all) and carries the decision.
    got = run_json(capsys, "verify-receipt", str(receipt), "--log-key-file", conn[conn.index("--log-key-file") + 1])
    assert got["decision"] == "PARTIAL" and got["verified"]["receipt_signature"] is True
    assert main(["verify-receipt", str(receipt), "--log-key", log_verifier_key()]) == EXIT_OK
    assert "decision receipt, checked offline" in capsys.readouterr().out

    glass = run_json(capsys, *ask, "--as", "ed-1", "--purpose", "ETREAT", "--data", "clinical-notes:MH",
                     "--break-glass", "--reason", "unconscious on arrival", "--record")
    assert glass["decision"] == "PERMIT" and glass["outcomes"][0]["break_glass"] is True
    assert {o["code"] for o in glass["obligations"]} == {"record-access-event", "notify-patient", "review-queue"}
    assert glass["break_glass_until_ms"] > glass["request"]["time_ms"]
    assert glass["access_event_index"] is not None

    revoked = run_json(capsys, "revoke", "--key", str(patient_key), "--consent-id", grant["consent_id"], *conn)
    after = run_json(capsys, *ask, "--as", "insurer-1", "--purpose", "HPAYMT", "--data", "laboratory-results")
    assert after["decision"] == "DENY"
    # The revoked grant left the in-force set: proven against the StateCommit that closed the revocation's batch.
    gone = after["verified"]["consent_state"]
    assert gone["state_commit_index"] == revoked["state_commit"]["index"] == revoked["index"] + 1
    assert gone["in_force"] == {"org:insurer-1": [], "role:insurer": [], "any": []}
    assert main([*ask, "--as", "insurer-1", "--purpose", "HPAYMT", "--data", "laboratory-results"]) == EXIT_OK
    assert "no consent is in force for any of them, so none can have been left out" in capsys.readouterr().out

    listing = run_json(capsys, "consents", "--patient", patient_hex, *conn, *AS_AUDITOR)
    assert [(c["consent_id"], c["state"]) for c in listing["consents"]] == [(grant["consent_id"], "revoked")]
    assert len(listing["revocations"]) == 1
    assert main(["consents", "--patient-key-file", str(patient_key), *conn]) == EXIT_OK
    out = capsys.readouterr().out
    assert "1 grant, 1 revocation" in out and "revoked" in out and "every state re-computed" in out

    # Without her private key (or an auditor's identity) nobody may list them.
    code, err = run_fail(capsys, "who-asked", "--patient-key-file", pub, *conn)
    assert code == EXIT_ERROR and "PERMISSION_DENIED: anonymous may not call ListAccessEvents" in err
    events = run_json(capsys, "who-asked", "--patient-key-file", str(patient_key), *conn)
    assert [(e["event"]["party_id"], e["event"]["decision"]) for e in events["events"]] == [
        ("insurer-1", "PARTIAL"), ("ed-1", "PERMIT")]
    assert all(e["recorded_by_ledger"] for e in events["events"])
    assert main(["who-asked", "--patient", patient_hex, *conn, *AS_AUDITOR]) == EXIT_OK
    out = capsys.readouterr().out
    assert "2 access events" in out and "BREAK-GLASS ('unconscious on arrival')" in out


def test_check_access_errors(
    parties: dict[str, dict], conn: list[str], patient_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    ask = ["check-access", "--patient-key-file", f"{patient_key}.pub", "--action", "access", *conn]
    code, err = run_fail(capsys, *ask, "--as", "insurer-1", "--purpose", "NOPE", "--data", "imaging")
    assert code == EXIT_ERROR and "--purpose: unknown purpose of use 'NOPE'" in err
    code, err = run_fail(capsys, *ask, "--as", "insurer-1", "--purpose", "TREAT", "--data", "clinical-notes:ZZ")
    assert code == EXIT_ERROR and "unknown sensitivity label 'ZZ'" in err
    code, err = run_fail(capsys, *ask, "--as", "nobody", "--purpose", "TREAT", "--data", "imaging")
    assert code == EXIT_ERROR and "PERMISSION_DENIED: unregistered organisation nobody may not call CheckAccess" in err
    code, err = run_fail(capsys, *ask, "--purpose", "TREAT", "--data", "imaging")
    assert code == EXIT_ERROR and "pass --as PARTY_ID" in err
    code, err = run_fail(capsys, *ask, "--as", "ed-1", "--purpose", "ETREAT", "--data", "imaging", "--break-glass")
    assert code == EXIT_ERROR and "--break-glass needs --reason" in err
    code, err = run_fail(capsys, "check-access", "--patient", "abc", "--as", "ed-1", "--action", "access",
                         "--purpose", "TREAT", "--data", "imaging", *conn)
    assert code == EXIT_ERROR and "--patient: 'abc' is neither 64 hex digits" in err
    code, err = run_fail(capsys, "consents", *conn)
    assert code == EXIT_ERROR and "which patient?" in err


def test_max_state_age(
    parties: dict[str, dict], conn: list[str], patient_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    ask = ["check-access", "--as", "insurer-1", "--patient-key-file", f"{patient_key}.pub", "--action", "access",
           "--purpose", "HPAYMT", "--data", "imaging", *conn]
    fresh = run_json(capsys, *ask, "--max-state-age", "60")
    assert fresh["verified"]["consent_state"]["max_state_age_ms"] == 60_000
    # Nothing is written while we wait (no --record): the consent state ages past what we accept.
    time.sleep(0.2)
    code, err = run_fail(capsys, *ask, "--max-state-age", "0.1")
    assert code == EXIT_VERIFICATION
    assert "verification failed: the consent state is" in err and "--max-state-age SECONDS accepts older" in err
    code, err = run_fail(capsys, *ask, "--max-state-age", "0")
    assert code == EXIT_ERROR and "--max-state-age must be a positive number of seconds" in err


def test_tampered_receipt_fails_verification(
    parties: dict[str, dict], conn: list[str], patient_key: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    receipt = tmp_path / "r.json"
    run_json(capsys, "check-access", "--as", "insurer-1", "--patient-key-file", f"{patient_key}.pub", "--action",
             "access", "--purpose", "HPAYMT", "--data", "imaging", "--receipt-out", str(receipt), *conn)
    doc = json.loads(receipt.read_text())
    raw = bytearray(base64.b64decode(doc["receipt"]))
    raw[-1] ^= 1
    doc["receipt"] = base64.b64encode(bytes(raw)).decode()
    receipt.write_text(json.dumps(doc))
    code, err = run_fail(capsys, "verify-receipt", str(receipt), "--log-key", log_verifier_key())
    assert code == EXIT_VERIFICATION and "verification failed" in err


def test_export_and_verify_bundle(
    conn: list[str], patient_key: Path, operator_key: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    grant = run_json(capsys, "grant", "--key", str(patient_key), *GRANT, *conn)
    run_json(capsys, "grant", "--key", str(patient_key), *GRANT, *conn)  # a tree of 2: proofs are not empty
    bundle = tmp_path / "bundle.json"
    exported = run_json(capsys, "export-consent", "0", "--out", str(bundle), *conn, *AS_AUDITOR)
    assert exported["consent_record"]["record_id"] == grant["consent_id"]
    data = json.loads(bundle.read_text())
    assert data["format"] == "consent-ledger-consent-bundle/v1"

    checked = run_json(capsys, "verify-bundle", str(bundle), "--log-key", log_verifier_key())
    assert checked["consent_record"]["purposes"] == ["TREAT"] and checked["verified"]["consent_record_matches"]
    assert main(["verify-bundle", str(bundle), "--log-key", log_verifier_key()]) == EXIT_OK
    out = capsys.readouterr().out
    assert "consent bundle, checked offline" in out and "the consent record matches the signed consent" in out

    # Tampering anywhere is a verification failure (exit 3): the description, the body, the proof.
    for change in (
        lambda d: d["consent_record"].update(purposes=["HRESCH"]),
        lambda d: d["log"].update(index=1),
        lambda d: d["log"].update(inclusion_proof=[]),
    ):
        bad = json.loads(bundle.read_text())
        change(bad)
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        code, err = run_fail(capsys, "verify-bundle", str(tmp_path / "bad.json"), "--log-key", log_verifier_key())
        assert code == EXIT_VERIFICATION and "verification failed" in err

    # A bundle of another log: the pinned key decides, not the key written in the bundle.
    other = Signer("ledger.test/log", Ed25519PrivateKey.from_seed(b"\x07" * 32))
    code, err = run_fail(capsys, "verify-bundle", str(bundle), "--log-key",
                         format_verifier_key(other.name, other.public_key))
    assert code == EXIT_VERIFICATION

    # Only consents make consent bundles: not a registration, not a StateCommit.
    lab = run_json(capsys, "register-party", "--operator-key", str(operator_key), "--party-id", "lab-1", "--role",
                   "hospital", "--party-key-file", f"{patient_key}.pub", "--display-name", "Lab", *conn, *AS_OPERATOR)
    code, err = run_fail(capsys, "export-consent", str(lab["index"]), "--out", str(tmp_path / "x.json"), *conn, *AS_AUDITOR)
    assert code == EXIT_ERROR and f"entry {lab['index']} is a party registration" in err
    code, err = run_fail(capsys, "export-consent", str(grant["state_commit"]["index"]), "--out",
                         str(tmp_path / "x.json"), *conn, *AS_AUDITOR)
    assert code == EXIT_ERROR and "is a state commit: only consent grants and revocations" in err


def _wait_for_watch(server, key: tuple[str, object]) -> None:
    broker = server.service.consents.broker
    deadline = time.monotonic() + 10
    while not broker.subscribers(key):
        assert time.monotonic() < deadline, "the watch never subscribed"
        time.sleep(0.01)


def test_watch_revocations_and_patient(
    server, parties: dict[str, dict], conn: list[str], patient_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    grant = run_json(capsys, "grant", "--key", str(patient_key), "--grantee", "role:insurer", "--action", "access",
                     "--purpose", "HPAYMT", "--data-class", "laboratory-results", *conn)
    codes: list[int] = []
    watcher = threading.Thread(target=lambda: codes.append(main(
        ["watch", "--revocations", "--as", "insurer-1", "--count", "1", "--timeout", "20", *conn])))
    watcher.start()
    _wait_for_watch(server, ("grantee", "role:insurer"))
    assert main(["revoke", "--key", str(patient_key), "--consent-id", grant["consent_id"], *conn]) == EXIT_OK
    watcher.join(20)
    assert codes == [EXIT_OK]
    out = capsys.readouterr().out
    assert "watching revocations of consents granted to insurer-1" in out
    assert f"consent revocation  revokes {grant['consent_id'][:16]}" in out
    assert "[verified: inclusion in checkpoint of size" in out and "stopped: --count 1 reached; 1 entry received" in out

    patient = parse_pub(Path(f"{patient_key}.pub").read_text().strip())
    watcher = threading.Thread(target=lambda: codes.append(main(
        ["watch", "--patient-key-file", str(patient_key), "--count", "1", "--json", *conn])))
    watcher.start()
    _wait_for_watch(server, ("patient", patient))
    assert main(["grant", "--key", str(patient_key), *GRANT, *conn]) == EXIT_OK  # in words: not mixed with the JSON
    watcher.join(20)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"')]
    assert codes == [EXIT_OK, EXIT_OK]
    assert [e["kind"] for e in lines] == ["consent grant"] and lines[0]["payload"]["grantee"] == "org:hospital-1"


def test_watch_stops_at_timeout_and_refuses_the_unregistered(
    parties: dict[str, dict], conn: list[str], patient_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["watch", "--patient-key-file", str(patient_key), "--timeout", "0.5", *conn]) == EXIT_OK
    assert "stopped: --timeout 0.5 s reached; 0 entries received" in capsys.readouterr().out
    code, err = run_fail(capsys, "watch", "--revocations", "--as", "nobody", "--timeout", "5", *conn)
    assert code == EXIT_ERROR and "PERMISSION_DENIED" in err
    code, err = run_fail(capsys, "watch", *conn)
    assert code == EXIT_ERROR and "watch what?" in err


# -- the demo -------------------------------------------------------------------------------------------------


def test_demo_plays_the_story_and_exits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--no-serve", "--port", "0"]) == 0
    out = capsys.readouterr().out
    # With --no-serve the server is gone when the story ends: the closing words must not send people to it.
    assert "against the same server" not in out and "the server has stopped (--no-serve)" in out
    # The numbers the story prints depend on where the ledger put its StateCommits: read them from the story.
    first_size = int(re.search(r"kept this signed checkpoint \(size (\d+)\)", out).group(1))
    hospital = int(re.search(r"signed with Alice's key, appended as entry #(\d+), valid until", out).group(1))
    revocation = int(re.search(r"Alice's revocation of consent \S+ appended as entry #(\d+)", out).group(1))
    assert hospital == first_size  # nothing between the registrations' checkpoint and the first grant
    for expected in (
        "[1/10] The operator registers a hospital, an insurer and an emergency department",
        "insurer-1   Acme Insurance",
        "entry #1 is the ledger's own StateCommit: the signed root of its consent-state map",
        "[2/10] Alice grants General Hospital TREAT access",
        f"verified: inclusion of leaf {hospital} in checkpoint of size {hospital + 2} signed by demo.consent-ledger",
        f"the ledger closed the batch with StateCommit #{hospital + 1}: consent-state map root ",
        # refused, provably complete, citing nothing of the hospital's
        "decision: DENY  (insurer-1 asks to access data of patient",
        "verified: consent state as of ",
        f"(StateCommit #{hospital + 1}, signed by the log key, ",
        "map proofs for org:insurer-1, role:insurer, any hold; no consent is in force for any of them",
        "so the refusal is provably complete, and it cites no consent: its only entries are the insurer's "
        "registration and the StateCommit",
        # per-category outcome
        "decision: PARTIAL",
        "laboratory-results   PERMIT  CONSENT_PERMIT",
        "clinical-notes [MH]  DENY",
        "decision re-computed from the evidence: PARTIAL, equal to the server's",
        "the evidence is exactly the in-force set for each (1 consent for org:insurer-1; none for role:insurer, any)",
        # revocation pushed to the insurer, next check refused, the grant out of the in-force set
        f"the insurer's watch received the revocation (entry #{revocation})",
        f"the ledger closed the batch with StateCommit #{revocation + 1}",
        f"the map proof for org:insurer-1 against StateCommit #{revocation + 1} shows it is gone",
        # break-glass
        "BREAK_GLASS: emergency access (break-glass)",
        "obligation: notify-patient",
        "break-glass window until",
        # who asked, consents
        "who asked (4 access events",
        "ed-1  access for ETREAT on laboratory-results, clinical-notes [MH]: PERMIT  BREAK-GLASS",
        "(recorded by the ledger)  [UNREVIEWED]",
        "revoked    PERMIT org:insurer-1",
        # the privacy officer's review, seen by Alice
        "[9/10] The privacy officer reviews the emergency access, and Alice sees the review",
        "the review queue holds 1 break-glass access awaiting review: #",
        "[reviewed #",
        ": JUSTIFIED: 'unconscious on arrival; overdose confirmed by toxicology']",
        # log level
        f"the consistency proof from the first checkpoint (size {first_size}) to size",
        "consent record matches the signed consent",
        "carries the log's signature on the PARTIAL decision for insurer-1",
        # the two witnesses beside the ledger cosigned a checkpoint; each cosignature verified
        "witnessed checkpoint: size ",
        "cosigned by witness-1 (at ",
        "and witness-2 (at ",
        "each C2SP tlog-cosignature/v1 with its witness key",
        "The story is over",
    ):
        assert expected in out, expected
    assert out.count("decision: DENY") == 2
    assert "verification failed" not in out and "received nothing" not in out
    demo = tmp_path / ".consent-ledger" / "demo"
    for name in ("log.key", "alice.key", "hospital-1.key", "insurer-1.key", "ed-1.key"):
        assert stat.S_IMODE((demo / name).stat().st_mode) == 0o600
    for name in ("ledger.db", "checkpoint-first.note", "consent-hospital.json", "receipt-insurer.json"):
        assert (demo / name).exists()

    # The commands it suggests are valid CLI syntax, once the printed `export` line is applied.
    lines = [line.strip() for line in out.split("The story is over", 1)[1].splitlines()]
    export = next(line for line in lines if line.startswith("export "))
    for assignment in shlex.split(export)[1:]:
        name, _, value = assignment.partition("=")
        monkeypatch.setenv(name, value)
    commands = [line for line in lines[lines.index(export) + 1:] if line and not line.startswith("#")]
    parser = build_parser()
    names = set(parser._subparsers._group_actions[0].choices)
    seen = set()
    for command in commands:
        words = shlex.split(command)
        start = next(i for i, w in enumerate(words) if w in names)
        args = parser.parse_args(words[start:])
        seen.add(args.command)
        if hasattr(args, "server"):
            assert args.insecure and args.server.startswith("127.0.0.1:")
        if hasattr(args, "log_key_file"):
            assert args.log_key_file == ".consent-ledger/demo/log.key.pub"
        if args.command == "revoke":
            assert args.key == ".consent-ledger/demo/alice.key"
    assert {"check-access", "verify-receipt", "consents", "who-asked", "watch", "export-consent", "verify-bundle",
            "register-party", "checkpoint", "consistency"} <= seen

    # A second run starts afresh (new keys, new database) and works again.
    assert main(["demo", "--no-serve", "--port", "0"]) == 0
    assert "[10/10]" in capsys.readouterr().out


# -- audit --------------------------------------------------------------------------------------------------


def test_audit_passes_resumes_and_fails_on_corruption(
    server, conn: list[str], patient_key: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(3):
        run_json(capsys, "grant", "--key", str(patient_key), *GRANT, *conn)
    resume = tmp_path / "audit.json"
    first = run_json(capsys, "audit", "--resume-file", str(resume), "--end", "3", *conn, *AS_AUDITOR)
    assert first["ok"] and first["end"] == 3
    rest = run_json(capsys, "audit", "--resume-file", str(resume), *conn, *AS_AUDITOR)
    assert rest["ok"] and rest["start"] > 0 and rest["end"] == rest["checkpoint_size"]
    assert main(["audit", *conn, *AS_AUDITOR]) == EXIT_OK
    out, err = capsys.readouterr()
    assert "audit passed" in out and "StateCommits: map root recomputed" in out and "entries" in err

    # Corrupt the last StateCommit's stored body: the audit stops there with exit 3.
    sc = server.service.consents.state.latest.index
    with server.service.ledger.store.begin() as c:
        body = c.execute(schema.bodies.select().where(schema.bodies.c.idx == sc)).one().envelope
        c.execute(update(schema.bodies).where(schema.bodies.c.idx == sc).values(envelope=body[:-1] + bytes([body[-1] ^ 1])))
    code = main(["audit", *conn, *AS_AUDITOR])
    out, _ = capsys.readouterr()
    assert code == EXIT_VERIFICATION and "AUDIT FAILED" in out


def test_serve_policy_and_state_options(tmp_path: Path) -> None:
    """`serve` flags reach the service: the implicit policy decides, and idle heartbeats write StateCommits."""
    key_file, verifier_key = make_log_key(tmp_path)
    server = ServerProcess(
        tmp_path, key_file, f"sqlite:///{tmp_path / 'l.db'}",
        extra_args=("--implicit-policy", "basic-normal", "--state-heartbeat", "0.3", "--operator", OPERATOR),
    )  # fmt: skip
    server.start()
    try:
        c = ConsentClient(LedgerClient.connect(server.target, verifier_key=verifier_key, insecure=True, party_id=OPERATOR))
        patient = Ed25519PrivateKey.from_seed(b"\x91" * 32)
        c.register_party(read_key(key_file).private_key, party_id="hospital-1", roles=["hospital"],
                         public_keys=[patient.public_key], display_name="H")  # fmt: skip
        h = ConsentClient(LedgerClient.connect(server.target, verifier_key=verifier_key, insecure=True, party_id="hospital-1"))
        d = h.check_access(patient.public_key, action="access", purpose="TREAT", data=[DataItem("imaging")])
        assert d.permitted and d.decision.outcomes[0].reasons[0].code == "IMPLICIT_PERMIT"
        assert d.decision.policy.implicit == "basic-normal"
        before = c.ledger.checkpoint().checkpoint.size
        time.sleep(1.2)
        after = c.ledger.checkpoint().checkpoint.size
        kinds = {e.leaf.payload_type for e in c.ledger.get_entries(before, after)}
        assert after > before and kinds == {payloads.STATE_COMMIT}
    finally:
        server.stop()


# -- delegation -----------------------------------------------------------------------------------------------


def test_delegate_then_grant_and_revoke_for_the_patient(
    conn: list[str], patient_key: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    guardian = tmp_path / "guardian.key"
    assert main(["keygen", "patient", "--out", str(guardian)]) == 0
    capsys.readouterr()
    patient_hex = read_key(patient_key).public_key.hex()
    guardian_pub = read_key(guardian).public_key

    code = main(["delegate", "--key", str(patient_key), "--delegate-key-file", f"{guardian}.pub",
                 "--relationship", "guardian", "--scope", "grant,revoke", "--majority-date", "2090-01-01", *conn])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    assert "delegation appended" in out and "guardian, may grant,revoke" in out

    granted = run_json(capsys, "grant", "--key", str(guardian), "--for-patient", patient_hex, *GRANT, *conn)
    assert granted["signed_by_delegate"] == guardian_pub.hex() and granted["patient"] == patient_hex
    code = main(["revoke", "--key", str(guardian), "--for-patient", patient_hex, "--consent-id", granted["consent_id"], *conn])
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    assert f"signed by        delegate ed25519:{guardian_pub.hex()[:16]}..." in out

    assert main(["consents", "--patient", patient_hex, *conn, "--sign-with", str(guardian)]) == EXIT_OK
    out, _ = capsys.readouterr()
    assert f"signed by delegate ed25519:{guardian_pub.hex()[:16]}... (guardian, delegation " in out
    assert "delegations: 1" in out and "active" in out and "(majority date)" in out

    got = run_json(capsys, "get", str(granted["index"]), *conn, "--sign-with", str(guardian))
    assert got["signers"] == [keyid_for(guardian_pub)]

    # Without a delegation, another key is refused with the reason.
    stranger = tmp_path / "stranger.key"
    assert main(["keygen", "patient", "--out", str(stranger)]) == 0
    capsys.readouterr()
    code, err = run_fail(capsys, "grant", "--key", str(stranger), "--for-patient", patient_hex, *GRANT, *conn)
    assert "PERMISSION_DENIED" in err and "holds no delegation" in err


# -- break-glass reviews and erasure ------------------------------------------------------------------------


def test_reviews_review_erase_and_who_asked(
    parties: dict[str, dict], conn: list[str], patient_key: Path, operator_key: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    pub = f"{patient_key}.pub"
    glass = run_json(capsys, "check-access", "--patient-key-file", pub, "--action", "access", "--as", "ed-1",
                     "--purpose", "ETREAT", "--data", "clinical-notes:MH", "--break-glass", "--reason", "unconscious", *conn)
    event = glass["access_event_index"]
    assert event is not None  # recorded although --record was not given

    queue = run_json(capsys, "reviews", "--unreviewed", *conn, *AS_OPERATOR)
    assert [(i["index"], i["review_state"]) for i in queue["items"]] == [(event, "unreviewed")]
    assert main(["reviews", *conn, *AS_OPERATOR]) == EXIT_OK
    out = capsys.readouterr().out
    assert "1 (1 awaiting review)" in out and f"#{event}" in out and "ed-1" in out and "UNREVIEWED" in out
    assert main(["who-asked", "--patient-key-file", str(patient_key), *conn]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"1 break-glass access NOT YET REVIEWED by the privacy officer: #{event}" in out and "[UNREVIEWED]" in out

    # Only an operator key may review: an organisation's key is refused by the ledger.
    code, err = run_fail(capsys, "review", str(event), "--outcome", "justified", "--key", str(tmp_path / "ed-1.key"), *conn, *AS_OPERATOR)
    assert code == EXIT_ERROR and "PERMISSION_DENIED" in err
    done = run_json(capsys, "review", str(event), "--outcome", "justified", "--notes", "overdose confirmed",
                    "--key", str(operator_key), *conn, *AS_OPERATOR)
    assert done["index"] > event and done["payload_type"] == payloads.BREAK_GLASS_REVIEW
    code, err = run_fail(capsys, "review", str(event), "--outcome", "unjustified", "--key", str(operator_key), *conn, *AS_OPERATOR)
    assert code == EXIT_ERROR and "ALREADY_EXISTS" in err
    assert run_json(capsys, "reviews", "--unreviewed", *conn, *AS_OPERATOR)["items"] == []
    asked = run_json(capsys, "who-asked", "--patient-key-file", str(patient_key), *conn)
    assert asked["unreviewed_break_glass"] == [] and asked["events"][0]["review_state"] == "justified"
    assert main(["who-asked", "--patient-key-file", str(patient_key), *conn]) == EXIT_OK
    assert f"[reviewed #{done['index']}: JUSTIFIED: 'overdose confirmed']" in capsys.readouterr().out

    # Erasure: refused while the body is evidence, then done; get shows the Erasure record.
    grant = run_json(capsys, "grant", "--key", str(patient_key), *GRANT, *conn)
    code, err = run_fail(capsys, "erase", str(grant["index"]), "--reason", "entered in error", "--key", str(operator_key), *conn, *AS_OPERATOR)
    assert code == EXIT_ERROR and "FAILED_PRECONDITION" in err and "revoke it first" in err
    run_json(capsys, "revoke", "--key", str(patient_key), "--consent-id", grant["consent_id"], *conn)
    erased = run_json(capsys, "erase", str(grant["index"]), "--reason", "entered in error", "--key", str(operator_key), *conn, *AS_OPERATOR)
    got = run_json(capsys, "get", str(grant["index"]), *conn, *AS_AUDITOR)
    assert got["payload"] is None and got["verified"]["body_erased"]
    assert main(["get", str(grant["index"]), *conn, *AS_AUDITOR]) == EXIT_OK
    assert f"erased by entry {erased['index']}" in capsys.readouterr().out
    assert run_json(capsys, "audit", *conn, *AS_AUDITOR)["ok"]
