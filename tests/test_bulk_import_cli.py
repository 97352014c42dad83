"""`consent-ledger import FILE` against a real server: a bulk file written by scripts/make_bulk_file.py, mixed with
bad and repeated entries, is loaded through SubmitStream and SubmitBatch; the summary counts each outcome and names
the lines refused; a second import finds everything logged."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from consent_ledger_client import LedgerClient

from consent_ledger.bulk_import import read_envelopes, write_envelopes
from consent_ledger.cli import EXIT_ERROR, EXIT_OK, main

from .entries_support import grant_envelope
from .server_support import OPERATOR, log_verifier_key, running_server

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("CONSENT_LEDGER_") and not name.startswith("CONSENT_LEDGER_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[object]:
    with running_server(f"sqlite:///{tmp_path / 'ledger.db'}", insecure=True, tls=None) as s:
        yield s


@pytest.fixture
def conn(server, tmp_path: Path) -> list[str]:
    key = tmp_path / "log.key.pub"
    key.write_text(log_verifier_key() + "\n")
    return ["--server", server.target, "--insecure", "--log-key-file", str(key), "--state", str(tmp_path / "state.json"),
            "--as", OPERATOR]  # fmt: skip


def _operator(server) -> LedgerClient:  # type: ignore[no-untyped-def]
    """A verifying client as the operator on the plaintext development server (whatever the suite's transport)."""
    return LedgerClient(channel=grpc.insecure_channel(server.target), verifier_key=log_verifier_key(), party_id=OPERATOR)


def _make_file(path: Path, count: int) -> list[bytes]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_bulk_file.py"), "--out", str(path), "--count", str(count)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert f"wrote {count:,} signed grants" in done.stderr
    return [env for _, env in read_envelopes(path)]


@pytest.mark.parametrize("via", ["stream", "batch"])
def test_import_reports_each_outcome(server, conn: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     via: str) -> None:  # fmt: skip
    made = _make_file(tmp_path / "made.jsonl", 40)
    bad = grant_envelope().replace(b"laboratory-results", b"laboratory-resulTs")  # signature no longer verifies
    envelopes = [*made[:20], b"not an envelope", made[3], bad, *made[20:]]
    bulk = tmp_path / "bulk.jsonl"
    write_envelopes(bulk, envelopes, [{"source": f"record-{i}"} for i in range(len(envelopes))])
    errors = tmp_path / "errors.jsonl"
    code = main(["import", str(bulk), "--via", via, "--per-message", "8", "--errors-out", str(errors), *conn, "--json"])
    out, err = capsys.readouterr()
    assert code == EXIT_ERROR, err  # some entries were refused
    report = json.loads(out)
    assert report["entries"] == 43 and report["appended"] == 40 and report["duplicates"] == 1
    assert report["refused"] == {"INVALID_ARGUMENT": 2}
    # Line 1 is the format comment: entry k is on line k + 2.
    assert [r["line"] for r in report["refusals"]] == [22, 24]
    assert [json.loads(line)["line"] for line in errors.read_text().splitlines()] == [22, 24]
    # Every appended entry is in the log, in file order.
    with _operator(server) as client:
        logged = [e.envelope.raw for e in client.get_entries(0, report["checkpoint_size"])
                  if e.envelope is not None and e.leaf.payload_type.endswith("ConsentGrant")]  # fmt: skip
    assert logged == made

    # Again: everything is already there, so the import succeeds with only duplicates.
    code = main(["import", str(tmp_path / "made.jsonl"), "--via", via, *conn])
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    assert "already logged   40" in out and "refused          0" in out
    assert "verified: every logged entry's inclusion" in out
    assert "import: 40/40 entries answered" in err  # plain progress lines when stderr is not a terminal


def test_a_malformed_file_sends_nothing(server, conn: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bulk = tmp_path / "bulk.jsonl"
    good = base64.b64encode(grant_envelope()).decode()
    bulk.write_text(f'{{"envelope": "{good}"}}\n\n{{"envelope": "%%%"}}\n')
    code = main(["import", str(bulk), *conn])
    _, err = capsys.readouterr()
    assert code == EXIT_ERROR and f"{bulk}:3: not a bulk-file line" in err
    with _operator(server) as client:
        assert client.checkpoint().checkpoint.size == 0
