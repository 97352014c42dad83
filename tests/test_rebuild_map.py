"""`consent-ledger rebuild-map` on a log written before map keys were VRF outputs (tests/data/legacy_map_log.db,
made by tests/data/make_legacy_map_log.py at commit f2f72cc): the map is rebuilt with VRF keys and party keys,
a StateCommit naming the VRF key closes it, access checks verify again, and the audit recomputes the new root."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import grpc
import pytest

from consent_ledger.cli import main
from consent_ledger.core import payloads, vrf
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.note import format_signer_key
from consent_ledger.core.payloads import DataItem
from consent_ledger.keys import read_key
from consent_ledger_client.consent import ConsentClient
from consent_ledger_client.audit import Auditor

from .server_support import AUDITOR, connect, ledger_client, log_signer, running_server

LEGACY = Path(__file__).parent / "data" / "legacy_map_log.db"
ALICE = Ed25519PrivateKey.from_seed(b"\x61" * 32)


def _ask(c):
    return c.check_access(ALICE.public_key, action="access", purpose="HPAYMT", data=[DataItem("laboratory-results")])


def _write_key(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


def test_rebuild_map_on_a_log_with_old_keys(tmp_path, capsys):
    db = tmp_path / "log.db"
    shutil.copy(LEGACY, db)
    url = f"sqlite:///{db}"
    signer = log_signer()
    log_key = tmp_path / "log.key"
    _write_key(log_key, format_signer_key(signer.name, signer.private_key))
    assert main(["keygen", "map-vrf", "--out", str(tmp_path / "map-vrf.key")]) == 0
    vrf_key = vrf.VrfPrivateKey.from_seed(read_key(tmp_path / "map-vrf.key").private_key.seed)
    capsys.readouterr()

    # Before: the map holds no party keys (and its consent keys are SHA-256 ones): the access check is refused.
    with running_server(url, map_vrf_key=vrf_key) as server:
        with pytest.raises(grpc.RpcError) as info:
            _ask(connect(server, party="insurer-1"))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "rebuild-map" in info.value.details()

    assert main(["rebuild-map", "--database-url", url, "--key-file", str(log_key),
                 "--map-vrf-key-file", str(tmp_path / "map-vrf.key"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # Alice's two grants in force and the two parties; the erased (revoked) grant is in force nowhere.
    assert out["keys"] == 4

    with running_server(url, map_vrf_key=vrf_key) as server:
        pinned = ConsentClient(ledger_client(server, party="insurer-1", map_vrf_key=vrf_key.public_key))
        decision = _ask(pinned)
        assert decision.permitted and decision.state_commit_index >= out["state_commit_index"]
        report = Auditor(ledger_client(server, party=AUDITOR, map_vrf_key=vrf_key.public_key)).run()
        assert report.ok, report.finding
        assert report.legacy_state_commits >= 1


def test_rebuilt_log_verifies_and_audits(tmp_path):
    db = tmp_path / "log.db"
    shutil.copy(LEGACY, db)
    url = f"sqlite:///{db}"
    from consent_ledger.service import rebuild_map

    done = rebuild_map(url, log_signer())  # the VRF key serve derives from the log key
    assert done.keys == 4
    with running_server(url) as server:
        insurer = connect(server, party="insurer-1")
        decision = _ask(insurer)
        assert decision.permitted and decision.state_commit_index >= done.state_commit_index
        auditor = connect(server, party=AUDITOR)
        report = Auditor(auditor.ledger).run()
        assert report.ok, report.finding
        assert report.legacy_state_commits >= 1 and report.state_commits > report.legacy_state_commits
        sc = auditor.ledger.get_entry(done.state_commit_index)
        p = payloads.parse_payload(sc.envelope.payload_type, sc.envelope.payload)
        assert p.map_root == done.map_root and p.map_vrf_public_key
