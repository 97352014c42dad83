"""consent-ledger command line: keys, the server, and verifying client commands.

Every command prints plain text for people by default and one JSON document with --json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from consent_ledger.core.errors import ConsentLedgerError
from consent_ledger.keys import key_from_env_or_file, verifier_key_of, write_new_key
from consent_ledger.server.app import TlsFiles
from consent_ledger.service import DEFAULT_DATABASE_URL, DEFAULT_LISTEN, ServiceConfig, start_service
from consent_ledger.telemetry import EXPORTERS, configure_telemetry

log = logging.getLogger("consent_ledger")


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def emit(args: argparse.Namespace, human: str, data: dict[str, Any]) -> None:
    """Print a result: plain text, or JSON with --json."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(human)


# -- keygen -------------------------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    name = args.name or ("patient" if args.kind == "patient" else None)
    if not name:
        raise SystemExit("keygen log needs --name (the log's origin, e.g. ledger.example.org/consent)")
    signer = write_new_key(Path(args.out), name, overwrite=args.force)
    vkey = verifier_key_of(signer)
    emit(
        args,
        f"wrote {args.kind} key {args.out} (mode 0600) and {args.out}.pub\n"
        f"public key (hex): {signer.public_key.hex()}\nverifier key:     {vkey}",
        {"kind": args.kind, "key_file": args.out, "public_key": signer.public_key.hex(), "verifier_key": vkey},
    )
    return 0


# -- serve --------------------------------------------------------------------------------------------------


def tls_from_args(args: argparse.Namespace) -> TlsFiles | None:
    if not args.tls_cert and not args.tls_key:
        return None
    if not (args.tls_cert and args.tls_key):
        raise SystemExit("--tls-cert and --tls-key go together")
    return TlsFiles(Path(args.tls_cert), Path(args.tls_key), Path(args.tls_client_ca) if args.tls_client_ca else None)


async def _serve(args: argparse.Namespace, on_ready: Callable[[Any], Any] | None = None) -> int:
    signer = key_from_env_or_file(Path(args.key_file) if args.key_file else None)
    config = ServiceConfig(
        database_url=args.database_url,
        listen=args.listen,
        tls=tls_from_args(args),
        insecure=args.insecure,
        max_batch=args.max_batch,
    )
    service = await start_service(config, signer)
    host = args.listen.rsplit(":", 1)[0]
    if args.port_file:
        Path(args.port_file).write_text(f"{service.port}\n")
    print(
        f"serving log {signer.name} on {host}:{service.port} (tree size {service.ledger.sequencer.latest.size}, "
        f"database {config.database_url})\nverifier key: {verifier_key_of(signer)}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if on_ready is not None:
            await on_ready(service)
        await stop.wait()
    finally:
        print("stopping: finishing in-flight requests", flush=True)
        await service.stop()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    shutdown = configure_telemetry(args.telemetry)
    try:
        return asyncio.run(_serve(args))
    finally:
        shutdown()


def add_serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database-url", default=_env("CONSENT_LEDGER_DATABASE_URL", DEFAULT_DATABASE_URL),
                   help="SQLAlchemy URL (default: $CONSENT_LEDGER_DATABASE_URL or %(default)s)")
    p.add_argument("--listen", default=_env("CONSENT_LEDGER_LISTEN", DEFAULT_LISTEN),
                   help="host:port to listen on (default: $CONSENT_LEDGER_LISTEN or %(default)s)")
    p.add_argument("--key-file", default=_env("CONSENT_LEDGER_KEY_FILE"),
                   help="the log's signing key file (default: $CONSENT_LEDGER_KEY_FILE, else $CONSENT_LEDGER_KEY)")
    p.add_argument("--insecure", action="store_true", help="serve plaintext (loopback only, for development)")
    p.add_argument("--tls-cert", default=_env("CONSENT_LEDGER_TLS_CERT"), help="server certificate (PEM)")
    p.add_argument("--tls-key", default=_env("CONSENT_LEDGER_TLS_KEY"), help="server private key (PEM)")
    p.add_argument("--tls-client-ca", default=_env("CONSENT_LEDGER_TLS_CLIENT_CA"),
                   help="CA for client certificates: enables mutual TLS")
    p.add_argument("--telemetry", choices=EXPORTERS, default=_env("CONSENT_LEDGER_TELEMETRY", "none"),
                   help="OpenTelemetry exporter (default: %(default)s)")
    p.add_argument("--max-batch", type=int, default=4096, help="most submissions per group commit")
    p.add_argument("--port-file", help="write the bound port to this file (useful with port 0)")


# -- main ---------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="consent-ledger", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("keygen", help="create a key (log, patient or organisation)")
    p.add_argument("kind", choices=["log", "patient", "org"])
    p.add_argument("--name", help="key name; for a log key, the log's origin")
    p.add_argument("--out", required=True, help="private key file to create (mode 0600); FILE.pub gets the public key")
    p.add_argument("--force", action="store_true", help="replace an existing key file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("serve", help="run the ledger service")
    add_serve_options(p)
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except ConsentLedgerError as e:
        print(f"consent-ledger: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
