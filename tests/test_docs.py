"""The repository explains itself: every "docs/design.md section N" cited by code, protos, tests, scripts or docs
names a numbered section of docs/design.md, and nothing cites the upstream brief ("DESIGN section N"), which a
reader of the repository does not have."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"


def _tracked_text_files() -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.decode().split("\0")
    out = []
    for name in names:
        path = ROOT / name
        if name and path.is_file() and path.suffix in {".py", ".pyi", ".proto", ".md", ".json", ".toml", ".sh", ".ts", ".yaml", ""}:
            out.append(path)
    return out


def _sections() -> set[int]:
    return {int(m) for m in re.findall(r"^## (\d+)\. ", DESIGN.read_text(encoding="utf-8"), re.MULTILINE)}


def test_design_sections_are_numbered_one_to_ten() -> None:
    assert _sections() >= set(range(1, 11))


def test_every_citation_names_an_existing_section() -> None:
    sections = _sections()
    bad = []
    for path in _tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for m in re.finditer(r"design\.md,? sections? ((?:\d+(?:, | and |-))*\d+)", text):
            for n in re.findall(r"\d+", m.group(1)):
                if int(n) not in sections:
                    bad.append(f"{path.relative_to(ROOT)}: {m.group(0)}")
    assert not bad, bad


def test_nothing_cites_the_upstream_brief() -> None:
    pattern = re.compile(r"DESIGN sections? \d|/work/shared|\.\./shared/DESIGN")
    bad = []
    for path in _tracked_text_files():
        if path == Path(__file__).resolve():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        bad += [f"{path.relative_to(ROOT)}:{i}" for i, line in enumerate(text.splitlines(), 1) if pattern.search(line)]
    assert not bad, bad
