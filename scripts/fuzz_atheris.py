#!/usr/bin/env python3
"""Coverage-guided fuzzing of the parsers and verifiers with atheris (libFuzzer), one target per run.

The targets and their rules are those of tests/fuzz_support.py (the hypothesis tests use the same ones): only
the documented error types, values re-encode to their input, nothing verifies that was not signed or proven.
consent_ledger and consent_ledger_client are instrumented for coverage. Needs the optional extra:
`pip install -e '.[fuzz]'`.

    .venv/bin/python scripts/fuzz_atheris.py --list
    .venv/bin/python scripts/fuzz_atheris.py envelope -runs=100000
    .venv/bin/python scripts/fuzz_atheris.py envelope -max_total_time=60 -jobs=2

The corpus lives in .fuzz/corpus/<target> (created and seeded with the target's valid inputs on first use;
libFuzzer adds what finds new coverage). A failing input is written to .fuzz/crashes/<target>-crash-<sha1>;
replay it with `scripts/fuzz_atheris.py <target> .fuzz/crashes/<target>-crash-<sha1>` (a file argument runs
that input once) or in Python: `tests.fuzz_support.TARGETS["<target>"].check(open(path, "rb").read())`.
Exit status 0 when the run finished without a failure.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import atheris  # noqa: E402

with atheris.instrument_imports(include=["consent_ledger", "consent_ledger_client", "tests.fuzz_support"]):
    from tests import fuzz_support  # noqa: E402

FUZZ_DIR = ROOT / ".fuzz"


def seed_corpus(name: str, corpus: Path) -> None:
    """Write the target's valid inputs into its corpus directory (file name: SHA-1, as libFuzzer names them)."""
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in fuzz_support.TARGETS[name].seeds:
        path = corpus / hashlib.sha1(seed).hexdigest()
        if not path.exists():
            path.write_bytes(seed)


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(argv) >= 2 else 2)
    if argv[1] == "--list":
        for t in fuzz_support.TARGETS.values():
            print(f"{t.name:18} {t.doc}")
        return
    name, rest = argv[1], argv[2:]
    if name not in fuzz_support.TARGETS:
        sys.exit(f"unknown target {name!r}; --list shows them")
    check = fuzz_support.TARGETS[name].check
    options = [a for a in rest if a.startswith("-")]
    paths = [a for a in rest if not a.startswith("-")]
    if not paths:  # the default corpus, seeded with valid inputs
        corpus = FUZZ_DIR / "corpus" / name
        seed_corpus(name, corpus)
        paths = [str(corpus)]
    if not any(o.startswith("-artifact_prefix=") for o in options):
        (FUZZ_DIR / "crashes").mkdir(parents=True, exist_ok=True)
        options.append(f"-artifact_prefix={FUZZ_DIR / 'crashes'}/{name}-")
    # The map proof seeds are the largest valid inputs (a proof of 168 siblings): leave room above them.
    if not any(o.startswith("-max_len=") for o in options):
        options.append("-max_len=8192")

    def test_one_input(data: bytes) -> None:
        check(data)

    atheris.enabled_hooks.add("RegEx")  # regex matches guide the mutator towards what the parsers accept
    atheris.enabled_hooks.add("str")
    atheris.Setup([argv[0], *options, *paths], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
