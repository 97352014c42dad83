"""The committed generated code is exactly what scripts/gen_protos.py (one `buf generate`, buf.gen.yaml) makes from
protos/: the Python modules in clients/python/consent_ledger/v1 and the TypeScript modules in clients/typescript/src/gen.

The Python modules are also checked against grpcio-tools' protoc run directly (--python-only), the way they were made
before buf, so the two routes cannot drift apart. The TypeScript check needs buf (`npm ci` in clients/typescript):
without it the test skips, except under CI, where it fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "clients" / "python" / "consent_ledger" / "v1"
TS_GENERATED = ROOT / "clients" / "typescript" / "src" / "gen"
BUF = ROOT / "clients" / "typescript" / "node_modules" / ".bin" / "buf"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in (".py", ".pyi")}


def _ts_files(folder: Path) -> dict[str, bytes]:
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _generate(out: Path, *extra: str) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(out), *extra],
        check=True,
        capture_output=True,
    )


def _assert_same(fresh: dict[str, bytes], committed: dict[str, bytes], what: str) -> None:
    assert fresh, f"scripts/gen_protos.py generated no {what}"
    assert sorted(committed) == sorted(fresh), f"generated {what} differ in name: run `python scripts/gen_protos.py`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated {what} {stale}: run `python scripts/gen_protos.py` and commit the result"


def test_generated_python_stubs_are_up_to_date(tmp_path: Path) -> None:
    _generate(tmp_path, "--python-only")
    _assert_same(_files(tmp_path / "clients" / "python" / "consent_ledger" / "v1"), _files(GENERATED), "Python stubs")


def test_buf_generate_makes_the_committed_python_and_typescript_code(tmp_path: Path) -> None:
    if not BUF.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("buf is not installed under CI: run `npm ci` in clients/typescript first (.ci/run does)")
        pytest.skip("buf is not installed (run `npm ci` in clients/typescript)")
    _generate(tmp_path)
    _assert_same(
        _files(tmp_path / "clients" / "python" / "consent_ledger" / "v1"), _files(GENERATED), "Python stubs (buf generate)"
    )
    fresh_ts = _ts_files(tmp_path / "clients" / "typescript" / "src" / "gen")
    _assert_same(fresh_ts, _ts_files(TS_GENERATED), "TypeScript modules (buf generate)")
