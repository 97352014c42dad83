"""The command line, run in-process (main([...])) and once as a subprocess, against a real server on port 0."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from consent_ledger_client import LedgerClient

from consent_ledger.cli import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_VERIFICATION,
    build_parser,
    main,
)
from consent_ledger.core import payloads
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.envelope import sign_envelope
from consent_ledger.core.note import Signer, format_verifier_key

from .entries_support import grant_envelope
from .server_support import log_verifier_key, running_server


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CONSENT_LEDGER_* settings from the caller's shell, and a HOME of our own for default state files."""
    for name in list(os.environ):
        if name.startswith("CONSENT_LEDGER_") and not name.startswith("CONSENT_LEDGER_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[object]:
    with running_server(f"sqlite:///{tmp_path / 'ledger.db'}") as s:
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


def test_grant_get_revoke_checkpoint_consistency(
    conn: list[str], patient_key: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    first = run_json(capsys, "grant", "--key", str(patient_key), *GRANT, "--legal-basis", "PIPL-29", *conn)
    assert first["index"] == 0 and not first["duplicate"]
    assert len(first["consent_id"]) == 64
    assert first["checkpoint"]["size"] == 1 and first["checkpoint"]["origin"] == "ledger.test/log"
    assert first["verified"]["inclusion"] == {"leaf_index": 0, "tree_size": 1, "signed_by": "ledger.test/log"}
    assert first["verified"]["body_hash_matches_leaf"] is True
    assert first["verified"]["previous_checkpoint_size"] is None

    saved = tmp_path / "first.note"
    cp = run_json(capsys, "checkpoint", "--save", str(saved), *conn)
    assert cp["checkpoint"]["size"] == 1 and cp["previous_size"] == 1
    assert saved.read_text() == cp["note"]

    second = run_json(capsys, "grant", "--key", str(patient_key), "--grantee", "role:insurer", "--action", "access,use",
                      "--purpose", "HPAYMT", "--data-class", "coverage-and-billing", "--deny", *conn)
    assert second["index"] == 1 and second["verified"]["previous_checkpoint_size"] == 1

    got = run_json(capsys, "get", "0", *conn)
    assert got["consent_id"] == first["consent_id"]
    assert got["kind"] == "consent grant"
    assert got["payload"]["grantee"] == "org:hospital-1"
    assert got["payload"]["purposes"] == ["TREAT"]
    assert got["payload"]["data_classes"] == ["laboratory-results", "imaging"]
    assert got["payload"]["legal_basis"] == {"code": "PIPL-29", "text": ""}
    assert got["verified"]["inclusion"]["tree_size"] == 2
    assert got["payload"]["validity"]["end_ms"] - got["payload"]["validity"]["start_ms"] == 30 * 86_400_000

    revoked = run_json(capsys, "revoke", "--key", str(patient_key), "--consent-id", first["consent_id"],
                       "--reason", "moved", *conn)
    assert revoked["index"] == 2 and revoked["revoked_consent_id"] == first["consent_id"]
    assert revoked["payload_type"] == payloads.CONSENT_REVOCATION

    listed = run_json(capsys, "entries", "0", "10", *conn)
    assert [e["index"] for e in listed["entries"]] == [0, 1, 2]
    assert listed["entries"][1]["payload"]["decision"] == "DENY"
    assert listed["entries"][2]["payload"]["consent_id"] == first["consent_id"]

    state = run_json(capsys, "consistency", *conn)
    assert state == {"compared": True, "consistent": True, "old": state["latest"], "latest": state["latest"]}
    old = run_json(capsys, "consistency", "--old-note", str(saved), *conn)
    assert old["consistent"] is True and old["old"]["size"] == 1 and old["latest"]["size"] == 3

    note = run_json(capsys, "verify-note", str(saved), "--log-key-file", conn[conn.index("--log-key-file") + 1])
    assert note["checkpoint"]["size"] == 1 and note["signature_verified"] is True


def test_human_output_says_what_was_verified(conn: list[str], patient_key: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["grant", "--key", str(patient_key), *GRANT, *conn]) == 0
    out = capsys.readouterr().out
    assert "index            0" in out and "checkpoint size  1" in out
    assert "verified: inclusion of leaf 0 in checkpoint of size 1 signed by ledger.test/log" in out
    assert "body hash matches leaf commitment" in out
    assert main(["grant", "--key", str(patient_key), *GRANT, *conn]) == 0
    assert "consistent with previous checkpoint size 1" in capsys.readouterr().out
    assert main(["get", "1", *conn]) == 0
    out = capsys.readouterr().out
    assert "purposes" in out and "TREAT (treatment)" in out and "org:hospital-1" in out
    assert main(["checkpoint", *conn]) == 0
    assert "size       2" in capsys.readouterr().out


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
    code, err = run_fail(capsys, "get", "5", *conn)
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
    for db, count in (("a.db", 2), ("b.db", 3)):
        with running_server(f"sqlite:///{tmp_path / db}") as s:
            with LedgerClient.connect(s.target, verifier_key=log_verifier_key(), insecure=True) as c:
                for _ in range(count):
                    c.submit(grant_envelope())
            code = main(["checkpoint", "--server", s.target, *trust])
    err = capsys.readouterr().err
    assert code == EXIT_VERIFICATION
    assert "split view" in err and "--- smaller checkpoint ---" in err and "ledger.test/log\n2\n" in err


# -- as a program, and the demo -------------------------------------------------------------------------------


def test_runs_as_a_subprocess(conn: list[str], patient_key: Path, server) -> None:
    with LedgerClient.connect(server.target, verifier_key=log_verifier_key(), insecure=True) as c:
        key = Ed25519PrivateKey.from_seed(b"\x22" * 32)
        payload = payloads.build_grant(patient=key.public_key, grantee="any", actions=["access"], purposes=["TREAT"],
                                       data_classes=["*"])
        c.submit(sign_envelope(payloads.CONSENT_GRANT, payload, [key]))
    proc = subprocess.run(
        [sys.executable, "-m", "consent_ledger.cli", "get", "0", *conn, "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["payload"]["grantee"] == "any"


def test_demo_plays_the_story_and_exits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--no-serve", "--port", "0"]) == 0
    out = capsys.readouterr().out
    for expected in (
        "[1/6] Alice grants Hospital One TREAT access to her laboratory results and imaging",
        "verified: inclusion of leaf 0 in checkpoint of size 1 signed by demo.consent-ledger.local/log",
        "consistent with previous checkpoint size 1",
        "purposes            TREAT (treatment)",
        "the consistency proof from size 1 to size 3 holds",
        "Try the CLI yourself",
    ):
        assert expected in out
    demo = tmp_path / ".consent-ledger" / "demo"
    for name in ("log.key", "alice.key"):
        assert stat.S_IMODE((demo / name).stat().st_mode) == 0o600
    assert (demo / "ledger.db").exists() and (demo / "checkpoint-first.note").exists()

    # Every command it suggests is valid CLI syntax with the right connection flags.
    commands = [line.strip() for line in out.splitlines() if " --insecure" in line and line.startswith("  ")]
    assert len(commands) >= 8
    parser = build_parser()
    for command in commands:
        words = shlex.split(command)
        start = next(i for i, w in enumerate(words) if w in parser._subparsers._group_actions[0].choices)
        args = parser.parse_args(words[start:])
        assert args.insecure and args.server.startswith("127.0.0.1:")
        if args.command not in ("health",):
            assert args.log_key_file == ".consent-ledger/demo/log.key.pub"
        if args.command in ("grant", "revoke"):
            assert args.key == ".consent-ledger/demo/alice.key"

    # A second run starts afresh (new keys, new database) and works again.
    assert main(["demo", "--no-serve", "--port", "0"]) == 0
    assert "[6/6]" in capsys.readouterr().out
