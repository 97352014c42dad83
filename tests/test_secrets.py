"""The log's signing key stays secret: key files must be 0600, and neither logs nor spans ever carry it."""

from __future__ import annotations

import base64
import logging
import os

import grpc
import pytest

from consent_ledger.core.errors import InvalidInput
from consent_ledger.core.note import format_signer_key
from consent_ledger.keys import key_from_env_or_file, read_key, write_new_key

from .entries_support import PATIENT, grant_envelope
from .otel_support import installed
from .server_support import ledger_client, log_signer, running_server


def test_key_files_are_0600_and_group_readable_ones_are_refused(tmp_path):
    path = tmp_path / "log.key"
    signer = write_new_key(path, "ledger.test/secret")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert read_key(path).public_key == signer.public_key
    os.chmod(path, 0o640)
    with pytest.raises(InvalidInput, match="readable by others"):
        read_key(path)
    with pytest.raises(FileExistsError):
        write_new_key(path, "ledger.test/secret")


def test_key_from_environment(monkeypatch):
    s = log_signer()
    monkeypatch.setenv("CONSENT_LEDGER_KEY", format_signer_key(s.name, s.private_key))
    assert key_from_env_or_file(None).public_key == s.public_key
    assert s.private_key.seed.hex() not in repr(s) and "PRIVATE" not in repr(s)


def test_the_key_never_reaches_logs_or_spans(tmp_path, caplog):
    exporter, _ = installed()
    exporter.clear()
    caplog.set_level(logging.DEBUG)
    s = log_signer()
    secrets = {
        s.private_key.seed.hex(),
        base64.b64encode(s.private_key.seed).decode(),
        format_signer_key(s.name, s.private_key),
        base64.b64encode(b"\x01" + s.private_key.seed).decode(),
    }
    with running_server(f"sqlite:///{tmp_path / 'l.db'}") as server:
        with ledger_client(server, patient=PATIENT) as c:  # the patient submits and reads its own grant
            c.submit(grant_envelope())
            c.get_entry(0)
            with pytest.raises(grpc.RpcError):
                c.get_entry(10_000)
    text = caplog.text
    for span in exporter.get_finished_spans():
        text += span.to_json()
    assert exporter.get_finished_spans() and caplog.text, "nothing was captured: the test would pass vacuously"
    for secret in secrets:
        assert secret not in text
