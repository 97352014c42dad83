"""The committed protobuf/gRPC modules in consent_ledger/v1 are exactly what scripts/gen_protos.py makes from protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "consent_ledger" / "v1"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in (".py", ".pyi")}


def test_generated_stubs_are_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = _files(tmp_path / "consent_ledger" / "v1")
    committed = _files(GENERATED)
    assert fresh, "scripts/gen_protos.py generated nothing"
    assert sorted(committed) == sorted(fresh), "generated files differ in name: run `python scripts/gen_protos.py`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated stubs {stale}: run `python scripts/gen_protos.py` and commit the result"
