"""Regenerate the protobuf and gRPC code from protos/: the Python modules in clients/python/consent_ledger/v1 (the
client distribution ships them) and the TypeScript
modules in clients/typescript/src/gen, with one `buf generate` (buf.gen.yaml).

Usage: python scripts/gen_protos.py [--out DIR] [--python-only]

buf comes from clients/typescript/node_modules (`npm ci` there); the Python generators are those built into the
protoc of grpcio-tools (scripts/lib/protoc_gen_python.py), run with this interpreter. Without buf installed, or with
--python-only, the Python modules are made by that protoc directly (the same bytes) and the TypeScript ones are left
alone. The generated files are committed; tests/test_generated_stubs.py fails when either set is stale.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE_DIR = pathlib.Path("consent_ledger") / "v1"
# The Python modules go to the client distribution (clients/python), which ships them; the server depends on it.
PY_ROOT = pathlib.Path("clients") / "python"
TS_DIR = pathlib.Path("clients") / "typescript" / "src" / "gen"
BUF = ROOT / "clients" / "typescript" / "node_modules" / ".bin" / "buf"
INIT_TEXT = '"""Generated protobuf and gRPC code for consent_ledger.v1. Do not edit: run scripts/gen_protos.py."""\n'


def buf_available() -> bool:
    return BUF.exists()


def _generate_with_protoc(out: pathlib.Path) -> None:
    """The Python modules from grpcio-tools' protoc run on the .proto files (what buf's local plugins reproduce)."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    py_out = out / PY_ROOT
    (py_out / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={py_out}",
        f"--pyi_out={py_out}",
        f"--grpc_python_out={py_out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def _generate_with_buf(out: pathlib.Path) -> None:
    """`buf generate` into ``out`` (Python and TypeScript). Stale TypeScript files are removed first."""
    ts = out / TS_DIR
    if ts.is_dir():
        for p in ts.rglob("*_pb.ts"):
            p.unlink()
    env = {**os.environ, "CONSENT_LEDGER_PYTHON": sys.executable}
    result = subprocess.run(
        [str(BUF), "generate", "--output", str(out)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"buf generate failed:\n{result.stdout}{result.stderr}")


def generate(out: pathlib.Path, *, python_only: bool = False) -> list[pathlib.Path]:
    """Generate into ``out``; return the generated paths (Python package files, then TypeScript files)."""
    if python_only or not buf_available():
        _generate_with_protoc(out)
    else:
        _generate_with_buf(out)
    init = out / PY_ROOT / PACKAGE_DIR / "__init__.py"
    init.write_text(INIT_TEXT)
    made = sorted(p for p in (out / PY_ROOT / PACKAGE_DIR).iterdir() if p.is_file())
    if (out / TS_DIR).is_dir():
        made += sorted(p for p in (out / TS_DIR).rglob("*") if p.is_file())
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT, help="output root (default: the repository)")
    parser.add_argument("--python-only", action="store_true", help="only the Python modules, with protoc (no buf)")
    args = parser.parse_args(argv)
    if not args.python_only and not buf_available():
        print(
            "buf is not installed (run `npm ci` in clients/typescript): generated the Python modules only",
            file=sys.stderr,
        )
    for path in generate(args.out, python_only=args.python_only):
        print(path.relative_to(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
