"""The client verifies, not trusts: a tampering proxy alters every kind of field the server returns, and the
client raises every time, while the same proxy passing answers through untouched never makes it raise."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from consent_ledger.core.rfc6962 import hash_leaf
from consent_ledger.v1 import log_pb2
from consent_ledger_client import LedgerClient, SubmitReceipt, VerificationError

from .entries_support import PATIENT, grant_envelope
from .server_support import AUDITOR, ledger_client, running_server
from .tamper_support import TamperProxy


def _flip(b: bytes, i: int = -1) -> bytes:
    a = bytearray(b)
    a[i] ^= 0x01
    return bytes(a)


def _note_mutations() -> dict[str, Callable[[bytes], bytes]]:
    def change_line(i: int, new: Callable[[str], str]) -> Callable[[bytes], bytes]:
        def f(note: bytes) -> bytes:
            lines = note.decode().split("\n")
            lines[i] = new(lines[i])
            return "\n".join(lines).encode()

        return f

    return {
        "checkpoint signature bit": lambda n: _flip(n, -3),
        "checkpoint size": change_line(1, lambda s: str(int(s) + 1)),
        "checkpoint root": change_line(2, lambda s: ("A" if s[0] != "A" else "B") + s[1:]),
        "checkpoint origin": change_line(0, lambda s: s + "x"),
        "checkpoint extra line": lambda n: n.replace(b"\n\n", b"\nextra\n\n", 1),
        "checkpoint truncated": lambda n: n[: n.index(b"\n\n") + 2],
    }


def _cases() -> list[tuple[str, str, Callable[[object], None]]]:
    """(name, method to tamper, mutation of that method's response)."""
    cases: list[tuple[str, str, Callable[[object], None]]] = []
    for method in ("Submit", "GetEntry", "GetEntries", "GetCheckpoint"):
        for name, mut in _note_mutations().items():
            def m(resp, mut=mut):
                resp.checkpoint.note = mut(resp.checkpoint.note)

            cases.append((f"{method}: {name}", method, m))

    def proof_mutations(get: Callable[[object], object]):
        def flip(resp):
            p = get(resp)
            p[0] = _flip(p[0])

        def drop(resp):
            del get(resp)[-1]

        def add(resp):
            get(resp).append(b"\x00" * 32)

        return {"proof bit": flip, "proof dropped hash": drop, "proof extra hash": add}

    for name, m in proof_mutations(lambda r: r.inclusion_proof).items():
        cases.append((f"Submit: {name}", "Submit", m))
        cases.append((f"GetEntry: {name}", "GetEntry", m))
    for name, m in proof_mutations(lambda r: r.proofs[1].hashes).items():
        cases.append((f"GetEntries: {name}", "GetEntries", m))
    for name, m in proof_mutations(lambda r: r.hashes).items():
        cases.append((f"GetConsistencyProof: {name}", "GetConsistencyProof", m))
        cases.append((f"GetInclusionProof: {name}", "GetInclusionProof", m))

    def setf(path: str, value: Callable[[object], object]):
        def m(resp):
            obj = resp
            *parents, last = path.split(".")
            for p in parents:
                obj = obj[int(p)] if p.isdigit() else getattr(obj, p)
            setattr(obj, last, value(getattr(obj, last)))

        return m

    cases += [
        ("Submit: leaf byte", "Submit", setf("leaf", _flip)),
        ("Submit: index", "Submit", setf("index", lambda i: i + 1)),
        ("GetEntry: leaf byte", "GetEntry", setf("entry.leaf", _flip)),
        ("GetEntry: body byte", "GetEntry", setf("entry.envelope", lambda b: _flip(b, 40))),
        ("GetEntry: body swapped", "GetEntry", setf("entry.envelope", lambda b: grant_envelope())),
        ("GetEntry: index", "GetEntry", setf("entry.index", lambda i: i + 1)),
        ("GetEntries: body byte", "GetEntries", setf("entries.1.envelope", lambda b: _flip(b, 40))),
        ("GetEntries: leaf byte", "GetEntries", setf("entries.0.leaf", _flip)),
        ("GetEntries: index", "GetEntries", setf("entries.1.index", lambda i: i + 1)),
        ("GetEntries: entries swapped", "GetEntries", _swap_entries),
        ("GetEntries: all dropped", "GetEntries", _drop_entries),
        ("GetInclusionProof: index", "GetInclusionProof", setf("index", lambda i: i ^ 1)),
        ("GetInclusionProof: size", "GetInclusionProof", setf("tree_size", lambda i: i - 1)),
    ]
    return cases


def _swap_entries(resp) -> None:
    a, b = log_pb2.Entry(), log_pb2.Entry()
    a.CopyFrom(resp.entries[0])
    b.CopyFrom(resp.entries[1])
    resp.entries[0].CopyFrom(b)
    resp.entries[1].CopyFrom(a)


def _drop_entries(resp) -> None:
    del resp.entries[:]
    del resp.proofs[:]


def _operation(client: LedgerClient, method: str, entry_leaf_hash: bytes) -> None:
    if method == "Submit":
        client.submit(grant_envelope())
    elif method == "GetEntry":
        client.get_entry(2)
    elif method == "GetEntries":
        client.get_entries(0, 4)
    elif method in ("GetCheckpoint", "GetConsistencyProof"):
        client.checkpoint()
    elif method == "GetInclusionProof":
        client.prove_included(entry_leaf_hash)


def _client(target, method: str, **kw: object) -> LedgerClient:
    """A client with the identity ``method`` needs: whole ranges of the log are an auditor's to read; everything
    else here the patient whose grants these are may do (submit them, read them, checkpoints and proofs)."""
    if method == "GetEntries":
        return ledger_client(target, party=AUDITOR, **kw)
    return ledger_client(target, patient=PATIENT, **kw)


def _history(server, state) -> SubmitReceipt:
    """An honest history first: the client remembers a checkpoint, then the log grows. The last receipt."""
    with _client(server, "Submit", state_path=state) as honest:
        for _ in range(3):
            receipt = honest.submit(grant_envelope())
    with _client(server, "Submit") as other:
        other.submit(grant_envelope())
    return receipt


@pytest.fixture(scope="module")
def tamper_setup(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('tamper') / 'log.db'}"
    with running_server(url) as server:
        with TamperProxy(server.target) as proxy:
            yield server, proxy


@pytest.mark.parametrize("name,method,mutation", _cases(), ids=[c[0] for c in _cases()])
def test_client_catches_tampering(tamper_setup, tmp_path, name, method, mutation):
    server, proxy = tamper_setup
    state = tmp_path / "state.json"
    receipt = _history(server, state)
    with proxy.tampering(method, mutation):
        with _client(proxy.target, method, state_path=state) as c:
            with pytest.raises(VerificationError):
                _operation(c, method, _leaf_hash(receipt))


def _leaf_hash(receipt) -> bytes:
    return hash_leaf(receipt.entry.leaf_bytes)


@pytest.mark.parametrize("method", ["Submit", "GetEntry", "GetEntries", "GetCheckpoint", "GetInclusionProof"])
def test_client_accepts_honest_answers_through_the_proxy(tamper_setup, tmp_path, method):
    server, proxy = tamper_setup
    state = tmp_path / "state.json"
    receipt = _history(server, state)
    with _client(proxy.target, method, state_path=state) as c:
        _operation(c, method, _leaf_hash(receipt))
