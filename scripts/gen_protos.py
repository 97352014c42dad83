"""Regenerate the protobuf and gRPC modules in consent_ledger/v1 from protos/.

Usage: python scripts/gen_protos.py [--out DIR]

The generated files are committed; tests/test_generated_stubs.py fails when they are stale.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE_DIR = pathlib.Path("consent_ledger") / "v1"


def generate(out: pathlib.Path) -> list[pathlib.Path]:
    """Run protoc (from grpcio-tools) over every .proto file; return the generated paths."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    (out / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    init = out / PACKAGE_DIR / "__init__.py"
    init.write_text('"""Generated protobuf and gRPC code for consent_ledger.v1. Do not edit: run scripts/gen_protos.py."""\n')
    return sorted(p for p in (out / PACKAGE_DIR).iterdir() if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT, help="output root (default: the repository)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path.relative_to(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
