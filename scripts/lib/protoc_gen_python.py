"""A protoc plugin (CodeGeneratorRequest on stdin, CodeGeneratorResponse on stdout) that runs one of the generators
built into the protoc of grpcio-tools: ``python``, ``pyi`` or ``grpc_python`` (the first argument). buf.gen.yaml uses
it through scripts/lib/protoc-gen-py-{python,pyi,grpc}, so `buf generate` makes the same Python stubs, byte for byte,
as running that protoc on the .proto files did before (scripts/gen_protos.py).

The files to generate, with the descriptors buf compiled, go to that protoc as a descriptor set. buf fills in every
field's ``json_name``; protoc leaves it out of the descriptor a _pb2 module embeds unless a .proto sets it, so a
``json_name`` equal to the default (protoc's lowerCamelCase of the field name) is cleared first.
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc

GENERATORS = ("python", "pyi", "grpc_python")


def default_json_name(name: str) -> str:
    """protoc's ToJsonName: drop each underscore and capitalise the letter after it."""
    out, upper = [], False
    for ch in name:
        if ch == "_":
            upper = True
        elif upper:
            out.append(ch.upper())
            upper = False
        else:
            out.append(ch)
    return "".join(out)


def _strip_default_json_names(messages: list[descriptor_pb2.DescriptorProto]) -> None:
    for m in messages:
        for f in [*m.field, *m.extension]:
            if f.HasField("json_name") and f.json_name == default_json_name(f.name):
                f.ClearField("json_name")
        _strip_default_json_names(list(m.nested_type))


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in GENERATORS:
        print(f"usage: protoc_gen_python.py {{{','.join(GENERATORS)}}}", file=sys.stderr)
        return 2
    generator = argv[0]
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse()
    files = list(request.proto_file)
    for f in files:
        _strip_default_json_names(list(f.message_type))
        for ext in f.extension:
            if ext.HasField("json_name") and ext.json_name == default_json_name(ext.name):
                ext.ClearField("json_name")
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp, "out")
        out.mkdir()
        fds = pathlib.Path(tmp, "in.binpb")
        fds.write_bytes(descriptor_pb2.FileDescriptorSet(file=files).SerializeToString())
        param = f"{request.parameter}:" if request.parameter else ""
        args = ["protoc", f"--descriptor_set_in={fds}", f"--{generator}_out={param}{out}", *request.file_to_generate]
        if protoc.main(args) != 0:
            response.error = f"{generator} generation failed (grpc_tools.protoc)"
        else:
            for path in sorted(p for p in out.rglob("*") if p.is_file()):
                response.file.add(name=path.relative_to(out).as_posix(), content=path.read_text("utf-8"))
    sys.stdout.buffer.write(response.SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
