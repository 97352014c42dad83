"""The two distributions (docs/design.md section 6): the verifying client installs alone and verifies a live server.

The client distribution (clients/python) is built as a wheel and installed in a fresh virtual environment with
nothing but its declared dependencies (grpcio, protobuf, PyNaCl and theirs); there it imports without SQLAlchemy,
Alembic or OpenTelemetry present, and a script run by that environment's Python signs a grant, submits it to a real
ledger (started by this test from the development environment) and verifies the receipt, the entry and the
checkpoints. The other tests here check the metadata both distributions declare.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

from tests.server_support import LOG_NAME, log_verifier_key, running_server

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "clients" / "python"
SERVER_ONLY = ("sqlalchemy", "alembic", "opentelemetry", "aiohttp", "grpc_health", "grpc_reflection")
# The client's whole dependency tree: what grpcio, protobuf and PyNaCl pull in.
ALLOWED = {"consent-ledger-client", "grpcio", "protobuf", "pynacl", "cffi", "pycparser", "typing-extensions"}


def _pyproject(path: Path) -> dict:  # type: ignore[type-arg]
    return tomllib.loads(path.read_text(encoding="utf-8"))


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_client_declares_only_grpcio_protobuf_pynacl() -> None:
    project = _pyproject(CLIENT / "pyproject.toml")["project"]
    assert sorted(_name(r) for r in project["dependencies"]) == ["grpcio", "protobuf", "pynacl"]
    assert project["license"] == "Apache-2.0"


def test_server_depends_on_the_client_of_the_same_version() -> None:
    client = _pyproject(CLIENT / "pyproject.toml")["project"]
    server = _pyproject(ROOT / "pyproject.toml")["project"]
    assert f"consent-ledger-client=={client['version']}" in server["dependencies"]
    assert server["license"] == "Apache-2.0"


def test_license_files_are_apache_2_and_identical() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert (CLIENT / "LICENSE").read_text(encoding="utf-8") == text


def test_grpcio_floor_is_what_the_committed_stubs_require() -> None:
    stub = (CLIENT / "consent_ledger" / "v1" / "log_pb2_grpc.py").read_text(encoding="utf-8")
    generated = re.search(r"GRPC_GENERATED_VERSION = '([0-9.]+)'", stub)
    assert generated is not None
    for pyproject in (CLIENT / "pyproject.toml", ROOT / "pyproject.toml"):
        deps = _pyproject(pyproject)["project"]["dependencies"]
        assert f"grpcio>={generated.group(1)}" in deps, pyproject
    gencode = re.search(r"Protobuf Python Version: ([0-9.]+)", (CLIENT / "consent_ledger" / "v1" / "log_pb2.py").read_text())
    assert gencode is not None
    assert f"protobuf>={gencode.group(1)}" in _pyproject(CLIENT / "pyproject.toml")["project"]["dependencies"]


def test_the_client_contract_forbids_every_server_module() -> None:
    """Every module the server distribution ships (the root's consent_ledger/) is forbidden to the client, so a
    module added later cannot slip into the client unnoticed."""
    contracts = _pyproject(ROOT / "pyproject.toml")["tool"]["importlinter"]["contracts"]
    (client,) = [c for c in contracts if c.get("source_modules") == ["consent_ledger_client"]]
    shipped = {
        f"consent_ledger.{p.stem}"
        for p in (ROOT / "consent_ledger").iterdir()
        if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))
    }
    assert shipped and shipped <= set(client["forbidden_modules"]), shipped - set(client["forbidden_modules"])
    # The client distribution ships exactly the pure parts.
    assert sorted(p.name for p in (CLIENT / "consent_ledger").iterdir() if p.is_dir() and p.name != "__pycache__") == [
        "core",
        "data",
        "v1",
    ]


VERIFY_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys
    from pathlib import Path

    server_only = [m for m in {server_only!r} if importlib.util.find_spec(m) is not None]
    from consent_ledger.core.crypto import Ed25519PrivateKey
    from consent_ledger_client import ConsentClient, LedgerClient

    patient = Ed25519PrivateKey.from_seed(bytes([7]) * 32)
    with LedgerClient.connect(sys.argv[1], verifier_key=sys.argv[2], state_path=Path(sys.argv[3]),
                              insecure=True, patient_key=patient) as ledger:
        client = ConsentClient(ledger)
        consent_id, receipt = client.grant(patient, grantee="org:hospital-1", actions=["access"],
                                           purposes=["TREAT"], data_classes=["laboratory-results"])
        entry = ledger.get_entry(receipt.index)
        checkpoint = ledger.checkpoint()
    print(json.dumps({{"server_only": server_only, "index": receipt.index, "consent_id": consent_id,
                      "entry_index": entry.index, "size": checkpoint.checkpoint.size,
                      "origin": checkpoint.checkpoint.origin}}))
    """
)


def _build_client_wheel(tmp_path: Path) -> Path:
    """Build the client wheel from a copy of clients/python (a build in place would leave build/ behind)."""
    src = tmp_path / "client-src"
    shutil.copytree(CLIENT, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    wheels = tmp_path / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", wheels, src)
    (wheel,) = wheels.glob("consent_ledger_client-*.whl")
    return wheel


def _run(*args: str | os.PathLike[str], **kw: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, env=env, **kw)  # type: ignore[call-overload, no-any-return]


def test_the_client_installs_alone_and_verifies_a_live_server(tmp_path: Path) -> None:
    """`pip install` of the client wheel into an empty venv: only grpcio, protobuf, PyNaCl (and theirs) come
    with it; it imports without any server-side package, and verifies a grant on a real ledger end to end."""
    wheel = _build_client_wheel(tmp_path)
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)  # empty; this environment's pip installs into it
    python = venv / "bin" / "python"
    pip = (sys.executable, "-m", "pip", "--python", python, "--disable-pip-version-check")
    _run(*pip, "install", "--quiet", "--no-compile", wheel)

    listed = _run(*pip, "list", "--format=freeze").stdout
    installed = {_name(line) for line in listed.splitlines() if line.strip()}
    assert "consent-ledger-client" in installed
    assert installed <= ALLOWED, f"the client pulled in {sorted(installed - ALLOWED)}"

    with running_server(f"sqlite:///{tmp_path / 'ledger.db'}", insecure=True, tls=None) as server:
        out = _run(
            python, "-c", VERIFY_SCRIPT.format(server_only=SERVER_ONLY),
            server.target, log_verifier_key(), tmp_path / "client-state.json",
            cwd=tmp_path,  # not the repository: only the installed distribution can be imported
        ).stdout
    result = json.loads(out)
    assert result["server_only"] == []
    assert result["entry_index"] == result["index"]
    assert result["size"] > result["index"]
    assert result["origin"] == LOG_NAME
    assert result["consent_id"]


def test_the_client_wheel_ships_the_pure_parts_only(tmp_path: Path) -> None:
    wheel = _build_client_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    for server_module in ("consent_ledger/app/", "consent_ledger/cli.py", "consent_ledger/storage/", "consent_ledger/__init__.py"):
        assert not any(n.startswith(server_module) for n in names), server_module
    for shipped in ("consent_ledger/data/hl7_codes.json", "consent_ledger/core/py.typed", "consent_ledger/v1/log_pb2.pyi",
                    "consent_ledger_client/py.typed"):
        assert shipped in names
