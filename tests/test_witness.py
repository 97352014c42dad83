"""The witness (C2SP tlog-witness) through a real HTTP server on loopback: every protocol outcome, races, Go's
sumdb checkpoints and proofs, split-view evidence, the CLI, and cosignatures checked by an independent
implementation of the C2SP text."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.note import Signer, parse_verifier_key
from consent_ledger.core.splitview import parse_split_view
from consent_ledger.core.witness import format_add_checkpoint

from .witness_support import SmallLog, WitnessThread, get, independent_cosignature_check, post

VECTORS = json.loads((Path(__file__).parent / "data" / "tlog_vectors.json").read_text())


@pytest.fixture
def log() -> SmallLog:
    lg = SmallLog("example.test/log-a")
    lg.grow(10)
    return lg


@pytest.fixture
def witness(log: SmallLog, tmp_path: Path):
    with WitnessThread("witness.test/w1", {log.origin: [log.verifier]}, f"sqlite:///{tmp_path / 'w.db'}",
                       evidence_dir=tmp_path / "evidence") as w:
        yield w


def test_every_protocol_outcome(witness: WitnessThread, log: SmallLog, tmp_path: Path) -> None:
    url = witness.url
    # 404: an origin the witness does not follow.
    other = SmallLog("example.test/unknown")
    other.grow(2)
    assert post(url, other.request(0, 2)).status == 404
    # 403: the right origin, signed by a key the witness does not trust for it.
    impostor = SmallLog(log.origin)
    impostor.signer = Signer(log.origin, Ed25519PrivateKey.from_seed(bytes([7]) * 32))
    impostor.leaves = list(log.leaves)
    assert post(url, impostor.request(0, 3)).status == 403
    # 400: malformed bodies, and an old size larger than the checkpoint's.
    for bad in (b"", b"old 0\n", b"old x\n\n" + log.note(2), b"old 01\n\n" + log.note(2),
                b"old 0\nnot-base64!\n\n" + log.note(2), b"new 0\n\n" + log.note(2)):
        assert post(url, bad).status == 400, bad
    assert post(url, format_add_checkpoint(5, [], log.note(3))).status == 400
    # Old size 0 with an empty proof: cosigned.
    first = post(url, log.request(0, 3))
    assert first.status == 200, first.body
    independent_cosignature_check(first.body, witness.signer.name, witness.signer.public_key, log.body(3))
    # 409 with the size it last cosigned, as text/x.tlog.size.
    stale = post(url, log.request(0, 5))
    assert (stale.status, stale.content_type, stale.body) == (409, "text/x.tlog.size", b"3\n")
    # 422: a consistency proof that does not verify.
    bad_proof = format_add_checkpoint(3, [bytes(32)] * len(log.proof(3, 5)), log.note(5))
    assert post(url, bad_proof).status == 422
    assert post(url, bad_proof).status == 422  # repeated: still one evidence file for this pair of notes
    # 200 again with the right proof; a repeat of the same checkpoint is cosigned again.
    ok = post(url, log.request(3, 5))
    assert ok.status == 200
    independent_cosignature_check(ok.body, witness.signer.name, witness.signer.public_key, log.body(5))
    assert post(url, log.request(5, 5)).status == 200
    # 409: the same size with another root (a fork of the log), and its evidence.
    fork = SmallLog(log.origin)
    fork.leaves = log.leaves[:4] + [b"forked"]
    forked = post(url, fork.request(5, 5))
    assert forked.status == 409 and forked.content_type != "text/x.tlog.size"
    status = json.loads(get(url, "/status").body)
    assert status["origins"] == [{"origin": log.origin, "size": 5, "root_hash": log.root(5).hex()}]
    files = sorted((tmp_path / "evidence").iterdir())
    assert len(files) == 2  # the failed proof and the fork
    views = [parse_split_view(f.read_bytes()) for f in files]
    assert {len(v.proof) > 0 for v in views} == {True, False}
    same = next(v for v in views if not v.proof)
    assert same.smaller_note.startswith(log.note(5).split(b"\n\n")[0]) and same.larger_note == fork.note(5)


def test_old_size_zero_needs_an_empty_proof(witness: WitnessThread, log: SmallLog) -> None:
    assert post(witness.url, format_add_checkpoint(0, [bytes(32)], log.note(3))).status == 422
    assert post(witness.url, log.request(0, 3)).status == 200


def test_request_size_is_capped(witness: WitnessThread, log: SmallLog) -> None:
    assert post(witness.url, b"old 0\n\n" + b"x" * 2_000_000).status == 413


def test_racing_add_checkpoints_one_wins_and_never_rolls_back(tmp_path: Path, database_url: str) -> None:
    logs = [SmallLog(f"example.test/race-{i}") for i in range(6)]
    for lg in logs:
        lg.grow(40)
    with WitnessThread("witness.test/race", {lg.origin: [lg.verifier] for lg in logs}, database_url) as w:
        for lg in logs:
            assert post(w.url, lg.request(0, 10)).status == 200
            results: dict[int, int] = {}
            barrier = threading.Barrier(2)

            def send(new: int, lg: SmallLog = lg) -> None:
                barrier.wait()
                results[new] = post(w.url, lg.request(10, new)).status

            threads = [threading.Thread(target=send, args=(n,)) for n in (20, 30)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(results.values()) == [200, 409], results
            winner = next(n for n, s in results.items() if s == 200)
            # The loser's old size is stale now: the witness holds the winner's size, never an older one.
            again = post(w.url, lg.request(10, 40))
            assert (again.status, again.body) == (409, b"%d\n" % winner)
            assert post(w.url, lg.request(winner, 40)).status == 200
        sizes = {o["origin"]: o["size"] for o in json.loads(get(w.url, "/status").body)["origins"]}
        assert sizes == {lg.origin: 40 for lg in logs}


def test_cosigns_go_sumdb_checkpoints_and_proofs(tmp_path: Path) -> None:
    """Checkpoints signed and consistency proofs made by Go's golang.org/x/mod/sumdb (tlog, note)."""
    verifier = parse_verifier_key(VECTORS["verifier_key"])
    origin = VECTORS["signer_name"]
    proofs = {(c["old_size"], c["new_size"]): [base64.b64decode(h) for h in c["proof"]] for c in VECTORS["consistency"]}
    notes = {c["size"]: c["note"].encode() for c in VECTORS["checkpoints"]}
    with WitnessThread("witness.test/go", {origin: [verifier]}, f"sqlite:///{tmp_path / 'w.db'}") as w:
        old = 0
        cosigned = []
        for size in sorted(notes):
            if old and (old, size) not in proofs:
                continue
            resp = post(w.url, format_add_checkpoint(old, proofs.get((old, size), []) if old else [], notes[size]))
            assert resp.status == 200, (old, size, resp.body)
            body = notes[size].decode().split("\n\n")[0] + "\n"
            independent_cosignature_check(resp.body, w.signer.name, w.signer.public_key, body)
            cosigned.append(size)
            old = size
        assert len(cosigned) >= 3, cosigned
        # A Go proof for another pair of sizes does not verify: 422.
        last = cosigned[-1]
        bigger = [s for s in sorted(notes) if s > last]
        if bigger:
            wrong = next(p for (a, b), p in proofs.items() if a != last and p)
            assert post(w.url, format_add_checkpoint(last, wrong, notes[bigger[0]])).status == 422


def test_cli_witness_and_witness_status(tmp_path: Path, log: SmallLog) -> None:
    """keygen witness, `consent-ledger witness` as a real process, witness-status from its database and its URL."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "consent_ledger.cli"]
    out = subprocess.run([*cli, "keygen", "witness", "--name", "witness.test/cli", "--out", str(tmp_path / "w.key"),
                          "--json"], capture_output=True, text=True, env=env, check=True)
    vkey = json.loads(out.stdout)["verifier_key"]
    assert vkey.startswith("witness.test/cli+") and (tmp_path / "w.key.pub").read_text().strip() == vkey
    db = f"sqlite:///{tmp_path / 'witness.db'}"
    from consent_ledger.core.note import format_verifier_key

    proc = subprocess.Popen(
        [*cli, "witness", "--listen", "127.0.0.1:0", "--database-url", db, "--key-file", str(tmp_path / "w.key"),
         "--log", f"{log.origin}={format_verifier_key(log.origin, log.signer.public_key)}",
         "--port-file", str(tmp_path / "port")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "port").exists() or not (tmp_path / "port").read_text().strip():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        url = f"http://127.0.0.1:{int((tmp_path / 'port').read_text())}"
        resp = post(url, log.request(0, 7))
        assert resp.status == 200
        from consent_ledger.core.witness import parse_witness_key

        key = parse_witness_key(vkey)
        independent_cosignature_check(resp.body, key.name, key.public_key, log.body(7))
        for where in (["--url", url], ["--database-url", db]):
            st = subprocess.run([*cli, "witness-status", *where, "--json"], capture_output=True, text=True,
                                env=env, check=True)
            origins = json.loads(st.stdout)["origins"]
            assert [(o["origin"], o["size"]) for o in origins] == [(log.origin, 7)]
    finally:
        proc.terminate()
        proc.wait(30)


def test_witness_over_tls(tmp_path: Path, log: SmallLog) -> None:
    import ssl

    from .tls_support import ThrowawayCA

    ca = ThrowawayCA(tmp_path)
    pem = ca.issue("localhost", server=True)
    with WitnessThread("witness.test/tls", {log.origin: [log.verifier]}, f"sqlite:///{tmp_path / 'w.db'}",
                       tls=(pem.cert, pem.key)) as w:
        url = w.url.replace("http://", "https://")
        ctx = ssl.create_default_context(cafile=str(ca.ca_file))
        resp = post(url, log.request(0, 4), context=ctx)
        assert resp.status == 200
        independent_cosignature_check(resp.body, w.signer.name, w.signer.public_key, log.body(4))
        with pytest.raises(OSError):  # plaintext HTTP to the TLS port is not served
            post(w.url, log.request(4, 4))
