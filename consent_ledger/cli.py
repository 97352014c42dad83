"""consent-ledger command line: keys, the server, and verifying client commands.

Every command prints plain text for people by default and one JSON document with --json. Client commands
check every answer with the verifying client library (consent_ledger_client); the CLI itself verifies nothing
on its own. Exit status: 0 success, 1 error (bad input, unreachable server, gRPC error), 2 usage error,
3 verification failed (the server's answer must not be trusted).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import logging
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from consent_ledger_client import (
    ConsentClient,
    IncompleteEvidence,
    LedgerClient,
    StaleEvidence,
)
from consent_ledger_client.audit import Auditor
from consent_ledger_client.bundle import (
    export_consent_bundle,
    export_decision_receipt,
    verify_consent_bundle,
    verify_decision_receipt,
)
from consent_ledger_client.verify import VerifiedEntry

from consent_ledger import bulk_import
from consent_ledger.core import payloads, vocab
from consent_ledger.core.checkpoint import Checkpoint, open_checkpoint
from consent_ledger.core.envelope import sign_envelope
from consent_ledger.core.errors import (
    ConsentLedgerError,
    InconsistentCheckpoints,
    InvalidInput,
    UnknownVerifier,
    VerificationError,
)
from consent_ledger.core.note import Signer, parse_verifier_key
from consent_ledger.core.equivocation import verify_split_view
from consent_ledger.core.splitview import parse_split_view
from consent_ledger.core.timing import MAX_CLOCK_SKEW_MS
from consent_ledger.core.witness_policy import WitnessedCheckpoint, WitnessPolicy
from consent_ledger.keys import (
    MAP_VRF_KEY_ENV,
    key_from_env_or_file,
    map_vrf_key_from_env_or_file,
    read_key,
    verifier_key_of,
    write_new_key,
)
from consent_ledger.presentation import (
    access_event_line,
    access_event_view_json,
    access_event_view_line,
    checkpoint_json,
    closing_commit_line,
    consent_view_json,
    consent_view_line,
    delegation_view_json,
    delegation_view_line,
    consistency_phrase,
    decision_json,
    decision_lines,
    decision_verification,
    describe_entry,
    entry_json,
    entry_summary,
    entry_verification,
    format_time,
    kind_name,
    plural,
    review_state_text,
    short_id,
    short_key,
    state_commit_json,
    state_commit_of,
    verification_json,
    verified_decision_json,
)
from consent_ledger.server.app import TlsFiles
from consent_ledger.server.forwarding import PeerTls
from consent_ledger.server.limits import RateLimit
from consent_ledger.app.consent_state import StatePolicy
from consent_ledger.app.lru import CacheBudget
from consent_ledger.app.errors import Unavailable
from consent_ledger.core.decision import IMPLICIT_DENY, IMPLICIT_POLICIES, Policy
from consent_ledger.app.witnessing import WitnessEndpoint
from consent_ledger.core.note import Verifier
from consent_ledger.core.witness import WitnessKey, format_witness_key, parse_witness_key
from consent_ledger.server.witness_http import WitnessConfig
from consent_ledger.service import (
    DEFAULT_DATABASE_URL,
    DEFAULT_LISTEN,
    DEFAULT_WITNESS_DATABASE_URL,
    DEFAULT_WITNESS_LISTEN,
    ServiceConfig,
    rebuild_map,
    start_service,
    start_witness_service,
    wait_for_signal,
)
from consent_ledger.storage.witness_store import WitnessStore
from consent_ledger.telemetry import EXPORTERS, configure_telemetry

log = logging.getLogger("consent_ledger")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_VERIFICATION = 3
# Like a tool killed by SIGPIPE (128 + 13): the reader of stdout went away, e.g. `consent-ledger ... | head`.
EXIT_BROKEN_PIPE = 141

DEFAULT_SERVER = "127.0.0.1:50051"
STATE_DIR = Path("~/.consent-ledger/state")

ENV_SERVER = "CONSENT_LEDGER_SERVER"
ENV_LOG_KEY = "CONSENT_LEDGER_LOG_KEY"
ENV_LOG_KEY_FILE = "CONSENT_LEDGER_LOG_KEY_FILE"
ENV_MAP_VRF_PUBLIC_KEY = "CONSENT_LEDGER_MAP_VRF_PUBLIC_KEY"
ENV_MAP_VRF_PUBLIC_KEY_FILE = "CONSENT_LEDGER_MAP_VRF_PUBLIC_KEY_FILE"
ENV_STATE = "CONSENT_LEDGER_STATE"
ENV_INSECURE = "CONSENT_LEDGER_INSECURE"
ENV_CA_CERT = "CONSENT_LEDGER_CA_CERT"
ENV_CLIENT_CERT = "CONSENT_LEDGER_CLIENT_CERT"
ENV_CLIENT_KEY = "CONSENT_LEDGER_CLIENT_KEY"
ENV_TLS_SERVER_NAME = "CONSENT_LEDGER_TLS_SERVER_NAME"
ENV_PATIENT_KEY_FILE = "CONSENT_LEDGER_PATIENT_KEY_FILE"
ENV_PARTY = "CONSENT_LEDGER_PARTY"
ENV_SIGN_WITH = "CONSENT_LEDGER_SIGN_WITH"
ENV_WITNESS_KEYS = "CONSENT_LEDGER_WITNESS_KEYS"
ENV_WITNESS_KEY_FILE = "CONSENT_LEDGER_WITNESS_KEY_FILE"
ENV_WITNESS_QUORUM = "CONSENT_LEDGER_WITNESS_QUORUM"
ENV_WITNESS_MAX_AGE = "CONSENT_LEDGER_WITNESS_MAX_AGE"
ENV_EVIDENCE_DIR = "CONSENT_LEDGER_EVIDENCE_DIR"

MS_PER_DAY = 86_400_000
DEFAULT_MAX_STATE_AGE_S = 120.0


class CliError(ConsentLedgerError):
    """A problem with what the user asked for, reported as one line on stderr (exit status 1)."""


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def _float_env(name: str, default: float, unit: str = "seconds") -> float:
    value = _number_env(name, unit)
    return default if value is None else value


def _number_env(name: str, unit: str) -> float | None:
    """The number in environment variable ``name``, or None when it is unset or empty."""
    text = os.environ.get(name)
    try:
        return float(text) if text else None
    except ValueError:
        raise SystemExit(f"{name} must be a number of {unit}, not {text!r}") from None


def _env_flag(name: str) -> bool:
    return (os.environ.get(name) or "").strip().lower() in ("1", "true", "yes", "on")


# The width of a time as format_time writes it ("2026-05-01 12:00:00 UTC").
WHEN_WIDTH = 23


def count(n: int, one: str, many: str) -> str:
    """A count with its noun: "1 entry", "1,024 entries"."""
    return f"{n:,} {one if n == 1 else many}"


def emit(args: argparse.Namespace, human: str, data: dict[str, Any]) -> None:
    """Print a result: plain text, or JSON with --json."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(human)


# -- keygen -------------------------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    name = args.name
    if not name and args.kind == "patient":
        name = "patient"
    elif not name and args.kind == "map-vrf":
        name = "map-vrf"
    elif not name and args.kind == "witness":
        name = "witness"
    elif not name and args.kind == "org":
        # An organisation's key is named after the file (insurer-1.key -> insurer-1) unless --name says otherwise.
        name = _UNSAFE.sub("-", Path(args.out).name.removesuffix(".key")).strip("-") or "org"
    if not name:
        raise SystemExit("keygen log needs --name (the log's origin, e.g. ledger.example.org/consent)")
    signer = write_new_key(Path(args.out), name, overwrite=args.force)
    vkey = verifier_key_of(signer)
    if args.kind == "witness":
        # A witness signs cosignature/v1 lines: its verifier key has algorithm 0x04 (C2SP tlog-cosignature).
        vkey = format_witness_key(WitnessKey(signer.name, signer.public_key))
        Path(args.out + ".pub").write_text(vkey + "\n")
    emit(
        args,
        f"wrote {args.kind} key {args.out} (mode 0600) and {args.out}.pub\n"
        f"public key (hex): {signer.public_key.hex()}\nverifier key:     {vkey}",
        {"kind": args.kind, "key_file": args.out, "public_key": signer.public_key.hex(), "verifier_key": vkey},
    )
    return 0


def cmd_dev_ca(args: argparse.Namespace) -> int:
    from consent_ledger import devca  # needs cryptography; only this command does

    out = Path(args.out)
    try:
        done = devca.issue(out, args.server_name or [], args.client or [], days=args.days, overwrite=args.force)
    except ValueError as e:
        raise CliError(str(e)) from None
    q = shlex.quote
    lines = [
        f"development CA in {out} (valid {count(args.days, 'day', 'days')}; not for production):",
        f"  {done.ca_cert}  CA certificate: clients trust it (--ca-cert), the server checks client certificates "
        "against it (--tls-client-ca)",
        f"  {done.ca_key}  CA key (0600): keep it, or delete it once every certificate is issued",
        f"  {done.server_cert}, {done.server_key}  server certificate for {', '.join(done.server_names)}, "
        "127.0.0.1, ::1",
        *(f"  {cert}, {key}  client certificate for {cn!r}" for cn, cert, key in done.clients),
        "serve with mutual TLS:",
        f"  consent-ledger serve --tls-cert {q(str(done.server_cert))} --tls-key {q(str(done.server_key))} "
        f"--tls-client-ca {q(str(done.ca_cert))} ...",
        "connect:",
        f"  consent-ledger checkpoint --server {done.server_names[0]}:50051 --ca-cert {q(str(done.ca_cert))}"
        + (f" --client-cert {q(str(done.clients[0][1]))} --client-key {q(str(done.clients[0][2]))}" if done.clients else "")
        + " --log-key-file log.key.pub",
    ]
    data = {
        "ca_cert": str(done.ca_cert),
        "ca_key": str(done.ca_key),
        "server_cert": str(done.server_cert),
        "server_key": str(done.server_key),
        "server_names": list(done.server_names),
        "clients": {cn: {"cert": str(cert), "key": str(key)} for cn, cert, key in done.clients},
        "days": args.days,
    }
    emit(args, "\n".join(lines), data)
    return EXIT_OK


# -- serve --------------------------------------------------------------------------------------------------


def tls_from_args(args: argparse.Namespace) -> TlsFiles | None:
    if not args.tls_cert and not args.tls_key:
        return None
    if not (args.tls_cert and args.tls_key):
        raise SystemExit("--tls-cert and --tls-key go together")
    return TlsFiles(Path(args.tls_cert), Path(args.tls_key), Path(args.tls_client_ca) if args.tls_client_ca else None)


def _map_vrf_key(args: argparse.Namespace) -> Any:
    try:
        return map_vrf_key_from_env_or_file(Path(args.map_vrf_key_file) if args.map_vrf_key_file else None)
    except OSError as e:
        raise CliError(f"cannot read --map-vrf-key-file {args.map_vrf_key_file}: {e.strerror or e}") from None


async def _serve(args: argparse.Namespace, on_ready: Callable[[Any], Any] | None = None) -> int:
    signer = key_from_env_or_file(Path(args.key_file) if args.key_file else None)
    if args.cache_mb < 0:
        raise SystemExit("--cache-mb must not be negative")
    if args.tile_cache_mb is not None and args.tile_cache_mb < 0:
        raise SystemExit("--tile-cache-mb must not be negative")
    map_vrf_key = _map_vrf_key(args)
    config = ServiceConfig(
        database_url=args.database_url,
        listen=args.listen,
        tls=tls_from_args(args),
        insecure=args.insecure,
        max_batch=args.max_batch,
        policy=Policy(
            implicit=args.implicit_policy,
            decision_ttl_ms=int(args.decision_ttl * 1000),
            break_glass_enabled=not args.no_break_glass,
            break_glass_window_ms=int(args.break_glass_window * 1000),
        ),
        state=StatePolicy(max_age_ms=int(args.state_max_age * 1000), heartbeat_s=args.state_heartbeat),
        rate_limit=RateLimit(
            per_second=args.rate_limit, burst=2 * args.rate_limit,
            max_streams=args.max_streams, max_streams_total=args.max_streams_total,
        ),  # fmt: skip
        operators=tuple(_split(args.operator)),
        auditors=tuple(_split(args.auditor)),
        cache=CacheBudget.megabytes(args.cache_mb, args.tile_cache_mb),
        db_connect_timeout_s=args.db_connect_timeout,
        db_statement_timeout_s=args.db_statement_timeout,
        ack_timeout_s=args.ack_timeout or None,
        witnesses=tuple(_witness_endpoints(args.witness)),
        witness_quorum=args.witness_quorum,
        witness_ca=args.witness_ca,
        replica=args.replica,
        advertise=args.advertise,
        lease_ttl_s=args.lease_ttl,
        replica_count=args.replica_count,
        peer_tls=_peer_tls(args),
    )
    if config.witnesses and not 0 <= config.witness_quorum <= len(config.witnesses):
        raise CliError(f"--witness-quorum must be between 1 and the number of --witness ({len(config.witnesses)})")
    service = await start_service(config, signer, map_vrf_key)
    host = args.listen.rsplit(":", 1)[0]
    if args.port_file:
        Path(args.port_file).write_text(f"{service.port}\n")
    print(
        f"serving log {signer.name} on {host}:{service.port} (tree size {service.ledger.sequencer.latest.size}, "
        f"database {config.database_url})\nverifier key: {verifier_key_of(signer)}\n"
        f"map VRF public key: {service.consents.state.map_keys.public_key.hex()}"
        + ("" if map_vrf_key else " (derived from the log key: no --map-vrf-key-file given)")
        + (f"\nreplica {service.role.holder} at {service.role.address}: {service.role.status().role}"
           if service.role is not None else ""),
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


def _peer_tls(args: argparse.Namespace) -> PeerTls | None:
    given = [args.peer_ca, args.peer_cert, args.peer_key]
    if not any(given):
        return None
    if not all(given):
        raise CliError("--peer-ca, --peer-cert and --peer-key go together")
    return PeerTls(Path(args.peer_ca), Path(args.peer_cert), Path(args.peer_key), args.peer_server_name)


def _witness_endpoints(specs: list[str]) -> list[WitnessEndpoint]:
    """--witness URL=VERIFIER-KEY values."""
    out = []
    for spec in specs or []:
        url, sep, key = spec.partition("=")
        if not sep or not url.startswith(("http://", "https://")):
            raise CliError(f"--witness {spec!r} is not URL=VERIFIER-KEY (an http:// or https:// URL)")
        try:
            out.append(WitnessEndpoint(url, parse_witness_key(key)))
        except InvalidInput as e:
            raise CliError(f"--witness {url}: {e}") from None
    return out


def cmd_rebuild_map(args: argparse.Namespace) -> int:
    signer = key_from_env_or_file(Path(args.key_file) if args.key_file else None)
    done = rebuild_map(args.database_url, signer, _map_vrf_key(args))
    emit(
        args,
        f"rebuilt the consent-state map of {args.database_url} from {count(done.entries, 'entry', 'entries')}: "
        f"{count(done.keys, 'key', 'keys')}, "
        f"root {done.map_root.hex()}\nclosed by StateCommit #{done.state_commit_index}, which names the map VRF key",
        {"entries": done.entries, "keys": done.keys, "map_root": done.map_root.hex(),
         "state_commit_index": done.state_commit_index},
    )
    return 0


def _witness_logs(specs: list[str]) -> dict[str, list[Verifier]]:
    logs: dict[str, list[Verifier]] = {}
    for spec in specs:
        origin, sep, key = spec.partition("=")
        if not sep:
            raise CliError(f"--log {spec!r} is not ORIGIN=VERIFIER-KEY")
        try:
            v = parse_verifier_key(key)
        except InvalidInput as e:
            raise CliError(f"--log {origin}: {e}") from None
        if v.name != origin:
            raise CliError(f"--log {origin}: the verifier key is named {v.name!r}, not the origin")
        logs.setdefault(origin, []).append(v)
    return logs


async def _witness(args: argparse.Namespace) -> int:
    signer = read_key(Path(args.key_file))
    host, _, port = args.listen.rpartition(":")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CliError("--tls-cert and --tls-key go together")
    config = WitnessConfig(
        signer=signer,
        logs=_witness_logs(args.log),
        listen_host=host or "127.0.0.1",
        listen_port=int(port),
        evidence_dir=Path(args.evidence_dir) if args.evidence_dir else None,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
    )
    running = await start_witness_service(config, args.database_url)
    if args.port_file:
        Path(args.port_file).write_text(f"{running.port}\n")
    print(
        f"witness {signer.name} on {config.listen_host}:{running.port} ({'https' if config.tls_cert else 'http'}), "
        f"witnessing {', '.join(sorted(config.logs))}\nverifier key: "
        f"{format_witness_key(WitnessKey(signer.name, signer.public_key))}",
        flush=True,
    )
    try:
        await wait_for_signal()
    finally:
        await running.stop()
    return 0


def cmd_witness(args: argparse.Namespace) -> int:
    return asyncio.run(_witness(args))


def cmd_witness_status(args: argparse.Namespace) -> int:
    if args.url:
        import urllib.request

        try:
            with urllib.request.urlopen(args.url.rstrip("/") + "/status", timeout=10) as resp:
                doc = json.loads(resp.read())
        except (OSError, ValueError) as e:
            raise CliError(f"cannot read {args.url}/status: {e}") from None
        origins = doc["origins"]
    else:
        store = WitnessStore(args.database_url)
        try:
            origins = [{"origin": r.origin, "size": r.size, "root_hash": r.root_hash.hex()} for r in store.all()]
        finally:
            store.close()
    human = "\n".join(f"{o['origin']}  size {o['size']}" for o in origins) or "no checkpoints cosigned yet"
    emit(args, human, {"origins": origins})
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    if not args.insecure and not (args.tls_cert or args.tls_key):
        raise CliError(
            "refusing to serve without TLS: give --tls-cert and --tls-key (and --tls-client-ca for mutual TLS), or "
            "--insecure for a development server on loopback (`consent-ledger dev-ca` makes certificates to try)"
        )
    shutdown = configure_telemetry(args.telemetry)
    try:
        return asyncio.run(_serve(args))
    except ValueError as e:  # refused configuration, e.g. plaintext on a public address
        raise CliError(str(e)) from None
    except Unavailable as e:  # the database cannot be reached (the message names it and the timeouts)
        raise CliError(str(e)) from None
    finally:
        shutdown()


def add_serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database-url", default=_env("CONSENT_LEDGER_DATABASE_URL", DEFAULT_DATABASE_URL),
                   help="SQLAlchemy URL (default: $CONSENT_LEDGER_DATABASE_URL or %(default)s)")
    p.add_argument("--listen", default=_env("CONSENT_LEDGER_LISTEN", DEFAULT_LISTEN),
                   help="host:port to listen on (default: $CONSENT_LEDGER_LISTEN or %(default)s)")
    p.add_argument("--key-file", default=_env("CONSENT_LEDGER_KEY_FILE"),
                   help="the log's signing key file (default: $CONSENT_LEDGER_KEY_FILE, else $CONSENT_LEDGER_KEY)")
    p.add_argument("--map-vrf-key-file", default=_env("CONSENT_LEDGER_MAP_VRF_KEY_FILE"),
                   help=f"the map VRF key file (keygen map-vrf; default: $CONSENT_LEDGER_MAP_VRF_KEY_FILE, else "
                        f"${MAP_VRF_KEY_ENV}, else a key derived from the log key)")
    p.add_argument("--insecure", action="store_true", default=_env_flag(ENV_INSECURE),
                   help=f"serve plaintext (loopback only, for development; or set ${ENV_INSECURE}=1)")
    p.add_argument("--tls-cert", default=_env("CONSENT_LEDGER_TLS_CERT"), help="server certificate (PEM)")
    p.add_argument("--tls-key", default=_env("CONSENT_LEDGER_TLS_KEY"), help="server private key (PEM)")
    p.add_argument("--tls-client-ca", default=_env("CONSENT_LEDGER_TLS_CLIENT_CA"),
                   help="CA for client certificates: enables mutual TLS")
    p.add_argument("--telemetry", choices=EXPORTERS, default=_env("CONSENT_LEDGER_TELEMETRY", "none"),
                   help="OpenTelemetry exporter (default: $CONSENT_LEDGER_TELEMETRY or %(default)s)")
    p.add_argument("--max-batch", type=int, default=4096, help="most submissions per group commit")
    p.add_argument("--rate-limit", type=float, default=10_000.0, metavar="PER_SECOND",
                   help="calls per second per caller before RESOURCE_EXHAUSTED, bursts of twice that; 0: off "
                   "(default: %(default)g). A caller is a signed request's patient key, else the client certificate's "
                   "name, else the peer address")
    p.add_argument("--max-streams", type=int, default=RateLimit.max_streams, metavar="N",
                   help="concurrent streams (watches) per caller before RESOURCE_EXHAUSTED; 0: no cap "
                   "(default: %(default)d)")
    p.add_argument("--max-streams-total", type=int, default=RateLimit.max_streams_total, metavar="N",
                   help="concurrent streams on the whole server before RESOURCE_EXHAUSTED; 0: no cap "
                   "(default: %(default)d)")
    p.add_argument("--implicit-policy", choices=IMPLICIT_POLICIES,
                   default=_env("CONSENT_LEDGER_IMPLICIT_POLICY", IMPLICIT_DENY),
                   help="what decides when no consent matches (default: %(default)s)")
    p.add_argument("--decision-ttl", type=float, default=300.0, metavar="SECONDS",
                   help="how long a decision may be relied on (default: %(default)g)")
    p.add_argument("--break-glass-window", type=float, default=4 * 3600.0, metavar="SECONDS",
                   help="how long a break-glass permit lasts (default: %(default)g)")
    p.add_argument("--no-break-glass", action="store_true", help="refuse break-glass requests")
    p.add_argument("--state-heartbeat", type=float, default=_float_env("CONSENT_LEDGER_STATE_HEARTBEAT", 30.0),
                   metavar="SECONDS", help="write a StateCommit after this long without batches (default: %(default)g)")
    p.add_argument("--state-max-age", type=float, default=5.0, metavar="SECONDS",
                   help="close any batch with a StateCommit once the last one is this old (default: %(default)g)")
    p.add_argument("--cache-mb", type=float, default=_float_env("CONSENT_LEDGER_CACHE_MB", 384.0, "MiB"), metavar="MB",
                   help="memory the server's caches may hold together, in MiB (estimated; default: "
                        "$CONSENT_LEDGER_CACHE_MB or %(default)g)")
    p.add_argument("--tile-cache-mb", type=float, metavar="MB",
                   default=_number_env("CONSENT_LEDGER_TILE_CACHE_MB", "MiB"),
                   help="memory for the log's full tiles, in MiB, instead of a quarter of --cache-mb: about 64 per "
                        "million entries keeps every proof off the database (default: $CONSENT_LEDGER_TILE_CACHE_MB or "
                        "a quarter of --cache-mb)")
    p.add_argument("--operator", action="append", metavar="NAME", default=_split([_env("CONSENT_LEDGER_OPERATORS", "")]),
                   help="a client certificate common name (the --as name on an --insecure server) that acts as the "
                        "operator: registers parties, erases bodies, reviews break-glass access; repeatable "
                        "(default: $CONSENT_LEDGER_OPERATORS, comma-separated)")
    p.add_argument("--auditor", action="append", metavar="NAME", default=_split([_env("CONSENT_LEDGER_AUDITORS", "")]),
                   help="a client certificate common name (or --as name) that reads everything, read-only; "
                        "repeatable (default: $CONSENT_LEDGER_AUDITORS, comma-separated)")
    p.add_argument("--port-file", help="write the bound port to this file (useful with port 0)")
    p.add_argument("--db-connect-timeout", type=float, default=_float_env("CONSENT_LEDGER_DB_CONNECT_TIMEOUT", 5.0),
                   metavar="SECONDS", help="give up connecting to the database after this long (default: "
                   "$CONSENT_LEDGER_DB_CONNECT_TIMEOUT or %(default)g)")
    p.add_argument("--db-statement-timeout", type=float,
                   default=_float_env("CONSENT_LEDGER_DB_STATEMENT_TIMEOUT", 30.0), metavar="SECONDS",
                   help="abandon a database statement after this long (default: $CONSENT_LEDGER_DB_STATEMENT_TIMEOUT "
                   "or %(default)g)")
    p.add_argument("--witness", action="append", default=[], metavar="URL=VERIFIER-KEY",
                   help="a C2SP tlog-witness to send checkpoints to (URL prefix of add-checkpoint) and its cosignature "
                        "verifier key (keygen witness); repeatable")
    p.add_argument("--witness-quorum", type=int, default=0, metavar="K",
                   help="cosignatures a checkpoint needs to be served as witnessed (default: every --witness)")
    p.add_argument("--witness-ca", metavar="FILE",
                   help="CA certificate(s) that HTTPS witnesses' certificates must chain to (default: system roots)")
    r = p.add_argument_group("replicas", "several serve processes over one database (PostgreSQL, MariaDB)")
    r.add_argument("--replica", action="store_true", default=_env_flag("CONSENT_LEDGER_REPLICA"),
                   help="take part in the sequencer election: the replica holding the database's sequencer lease "
                        "integrates, the others forward submissions to it and serve reads from the database "
                        "(or set $CONSENT_LEDGER_REPLICA=1); needs --operator (forwarding is done as the operator)")
    r.add_argument("--advertise", default=_env("CONSENT_LEDGER_ADVERTISE"), metavar="HOST:PORT",
                   help="where the other replicas reach this one (default: the --listen host and the bound port)")
    r.add_argument("--lease-ttl", type=float, default=_float_env("CONSENT_LEDGER_LEASE_TTL", 2.0), metavar="SECONDS",
                   help="the sequencer lease lasts this long unless renewed: a dead leader is replaced within about "
                        "this long (default: %(default)g)")
    r.add_argument("--replica-count", type=int, default=1, metavar="N",
                   help="replicas sharing the per-caller --rate-limit: each enforces 1/N of it (default: %(default)d)")
    r.add_argument("--peer-ca", default=_env("CONSENT_LEDGER_PEER_CA"), metavar="FILE",
                   help="with TLS: the CA the other replicas' server certificates chain to")
    r.add_argument("--peer-cert", default=_env("CONSENT_LEDGER_PEER_CERT"), metavar="FILE",
                   help="with TLS: this replica's client certificate for forwarding (its name a configured --operator)")
    r.add_argument("--peer-key", default=_env("CONSENT_LEDGER_PEER_KEY"), metavar="FILE",
                   help="the private key of --peer-cert")
    r.add_argument("--peer-server-name", default=None, metavar="NAME",
                   help="expect this name in the other replicas' server certificates instead of their host")
    p.add_argument("--ack-timeout", type=float, default=_float_env("CONSENT_LEDGER_ACK_TIMEOUT", 10.0),
                   metavar="SECONDS", help="answer a submission UNAVAILABLE when it is not acknowledged within this "
                   "long; 0: wait for its batch (default: $CONSENT_LEDGER_ACK_TIMEOUT or %(default)g)")


# -- connecting ---------------------------------------------------------------------------------------------


def _read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as e:
        raise CliError(f"cannot read {what} {path}: {e.strerror or e}") from None


def make_channel(args: argparse.Namespace) -> grpc.Channel:
    """A channel to --server: plaintext with --insecure, else TLS (mTLS with --client-cert/--client-key)."""
    target = args.server
    if args.insecure:
        if args.ca_cert or args.client_cert or args.client_key:
            raise CliError("--insecure cannot be combined with --ca-cert/--client-cert/--client-key")
        return grpc.insecure_channel(target)
    if bool(args.client_cert) != bool(args.client_key):
        raise CliError("--client-cert and --client-key go together")
    roots = _read_file(args.ca_cert, "CA certificate") if args.ca_cert else None
    key = _read_file(args.client_key, "client key") if args.client_key else None
    cert = _read_file(args.client_cert, "client certificate") if args.client_cert else None
    options = [("grpc.ssl_target_name_override", args.tls_server_name)] if args.tls_server_name else []
    return grpc.secure_channel(target, grpc.ssl_channel_credentials(roots, key, cert), options=options)


def log_key_from_args(args: argparse.Namespace) -> str:
    """The pinned verifier key text, from --log-key, --log-key-file or the environment; checked for form."""
    if args.log_key and args.log_key_file:
        raise CliError("give --log-key or --log-key-file, not both")
    if args.log_key:
        text, source = args.log_key.strip(), "--log-key"
    elif args.log_key_file:
        text, source = _read_file(args.log_key_file, "log key file").decode("utf-8", "replace").strip(), args.log_key_file
    else:
        raise CliError(
            f"no log key to verify against: pass --log-key-file FILE.pub (or --log-key TEXT), "
            f"or set ${ENV_LOG_KEY_FILE} / ${ENV_LOG_KEY}"
        )
    if text.startswith("PRIVATE+KEY+"):
        raise CliError(f"{source} holds a private (signing) key; pass the log's public verifier key (the .pub file)")
    try:
        parse_verifier_key(text)
    except InvalidInput as e:
        raise CliError(f"{source}: not a verifier key ({e})") from None
    return text


def map_vrf_key_from_args(args: argparse.Namespace) -> bytes | None:
    """The map VRF public key to pin, from --map-vrf-key or --map-vrf-key-file (hex or verifier key text)."""
    text_arg, file_arg = getattr(args, "map_vrf_key", None), getattr(args, "map_vrf_key_file", None)
    if text_arg and file_arg:
        raise CliError("give --map-vrf-key or --map-vrf-key-file, not both")
    if text_arg:
        text, source = text_arg.strip(), "--map-vrf-key"
    elif file_arg:
        text, source = _read_file(file_arg, "map VRF key file").decode("utf-8", "replace").strip(), file_arg
    else:
        return None
    if text.startswith("PRIVATE+KEY+"):
        raise CliError(f"{source} holds a private key; pass the map VRF public key (the .pub file)")
    if re.fullmatch(r"[0-9a-f]{64}", text):
        return bytes.fromhex(text)
    try:
        return parse_verifier_key(text).public_key
    except InvalidInput as e:
        raise CliError(f"{source}: not a map VRF public key ({e})") from None


def witness_policy_from_args(args: argparse.Namespace) -> WitnessPolicy | None:
    """The witness policy of --witness-key (repeatable), --witness-key-file (one key a line, # comments),
    --witness-quorum and --witness-max-age, or their environment variables; None when no witness key is given."""
    texts: list[str] = list(getattr(args, "witness_key", None) or [])
    if not texts:
        texts = (os.environ.get(ENV_WITNESS_KEYS) or "").split()
    path = getattr(args, "witness_key_file", None)
    if path:
        for line in _read_file(path, "witness key file").decode("utf-8", "replace").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                texts.append(line)
    if not texts:
        if getattr(args, "witness_quorum", None) is not None:
            raise CliError("--witness-quorum needs the witnesses' keys: --witness-key VKEY or --witness-key-file FILE")
        return None
    quorum = getattr(args, "witness_quorum", None)
    max_age = getattr(args, "witness_max_age", None)
    max_age = 600 if max_age is None else max_age
    if not max_age > 0:
        raise CliError("--witness-max-age must be a positive number of seconds")
    try:
        return WitnessPolicy.from_keys(texts, quorum=len(texts) if quorum is None else quorum, max_age_s=int(max_age))
    except InvalidInput as e:
        raise CliError(f"witness policy: {e}") from None


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    try:
        return int(text) if text else None
    except ValueError:
        raise CliError(f"${name} is not a whole number: {text!r}") from None


def add_witness_options(p: argparse._ActionsContainer) -> None:
    p.add_argument("--witness-key", action="append", metavar="VKEY",
                   help=f"a witness's cosignature verifier key, name+hash+base64(0x04||key) (repeatable; default: "
                        f"${ENV_WITNESS_KEYS}, space-separated): accept only checkpoints cosigned by the witnesses")
    p.add_argument("--witness-key-file", default=_env(ENV_WITNESS_KEY_FILE), metavar="FILE",
                   help=f"file of witness verifier keys, one a line (default: ${ENV_WITNESS_KEY_FILE})")
    p.add_argument("--witness-quorum", type=int, default=None, metavar="K",
                   help=f"how many of the witnesses must have cosigned (default: ${ENV_WITNESS_QUORUM}, else all)")
    p.add_argument("--witness-max-age", type=float, default=None, metavar="SECONDS",
                   help=f"how old the quorum's cosignatures may be (default: ${ENV_WITNESS_MAX_AGE}, else 600); "
                        "offline, a receipt's against its decision time, and a bundle's not at all")


def _witness_defaults(args: argparse.Namespace) -> None:
    if getattr(args, "witness_quorum", "absent") is None:
        args.witness_quorum = _env_int(ENV_WITNESS_QUORUM)
    if getattr(args, "witness_max_age", "absent") is None:
        age = _env_int(ENV_WITNESS_MAX_AGE)
        args.witness_max_age = 600 if age is None else age


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def default_state_path(verifier_key: str) -> Path:
    """~/.consent-ledger/state/<origin, sanitized>-<key hash>.json: one file per pinned log key."""
    v = parse_verifier_key(verifier_key)
    return (STATE_DIR / f"{_UNSAFE.sub('_', v.name).strip('_') or 'log'}-{v.key_hash:08x}.json").expanduser()


def state_path_from_args(args: argparse.Namespace, verifier_key: str) -> Path:
    return Path(args.state).expanduser() if args.state else default_state_path(verifier_key)


def request_signer_from_args(args: argparse.Namespace, fallback: Signer | None = None) -> Signer | None:
    """The key that signs each request: --sign-with, else the patient key the command already holds (if any)."""
    path = getattr(args, "sign_with", None)
    if not path:
        return fallback
    try:
        return read_key(Path(path).expanduser())
    except OSError as e:
        raise CliError(f"cannot read --sign-with key file {path}: {e.strerror or e}") from None
    except InvalidInput as e:
        raise CliError(f"--sign-with {path}: {e}") from None


@contextmanager
def connect(
    args: argparse.Namespace, *, stateless: bool = False, party: str | None = None, signer: Signer | None = None
) -> Iterator[LedgerClient]:
    """A verifying client for --server, pinned to the log key, remembering checkpoints in the state file.

    Identity: ``party`` (default --as) names the organisation, operator or auditor on a development server (with
    mTLS the client certificate does); requests are signed with --sign-with, else ``signer``, when either is given
    (a patient or delegate proving who is asking)."""
    verifier_key = log_key_from_args(args)
    state = None if stateless else state_path_from_args(args, verifier_key)
    party = party or getattr(args, "as_party", None) or None
    request_signer = request_signer_from_args(args, signer)
    channel = make_channel(args)
    try:
        client = LedgerClient(
            channel=channel,
            verifier_key=verifier_key,
            state_path=state,
            timeout=args.timeout,
            party_id=party,
            patient_key=request_signer.private_key if request_signer and not party else None,
            map_vrf_key=map_vrf_key_from_args(args),
            witness_policy=witness_policy_from_args(args),
            evidence_dir=Path(args.evidence_dir).expanduser() if getattr(args, "evidence_dir", None) else None,
        )
    except BaseException:
        channel.close()
        raise
    with client:
        yield client


def add_connection_options(p: argparse.ArgumentParser, *, call_timeout: bool = True) -> None:
    g = p.add_argument_group("connection")
    g.add_argument("--server", default=_env(ENV_SERVER, DEFAULT_SERVER),
                   help=f"host:port of the ledger (default: ${ENV_SERVER} or %(default)s)")
    g.add_argument("--insecure", action="store_true", default=_env_flag(ENV_INSECURE),
                   help=f"plaintext connection, for a development server on loopback (or ${ENV_INSECURE}=1)")
    g.add_argument("--ca-cert", default=_env(ENV_CA_CERT),
                   help=f"CA certificate(s) to trust for the server (PEM; default: ${ENV_CA_CERT}, else system roots)")
    g.add_argument("--client-cert", default=_env(ENV_CLIENT_CERT),
                   help=f"client certificate for mutual TLS (PEM; default: ${ENV_CLIENT_CERT})")
    g.add_argument("--client-key", default=_env(ENV_CLIENT_KEY),
                   help=f"client private key for mutual TLS (PEM; default: ${ENV_CLIENT_KEY})")
    g.add_argument("--tls-server-name", default=_env(ENV_TLS_SERVER_NAME),
                   help="expect this name in the server certificate instead of the --server host")
    g.add_argument("--as", dest="as_party", metavar="NAME", default=_env(ENV_PARTY),
                   help=f"who is asking, on a development server (--insecure): an organisation's party id, or the "
                        f"server's configured operator or auditor name; with mutual TLS the client certificate "
                        f"says it instead (default: ${ENV_PARTY})")
    g.add_argument("--sign-with", metavar="KEY_FILE", default=_env(ENV_SIGN_WITH),
                   help=f"sign each request with this patient's (or delegate's) private key file: how a patient "
                        f"proves who is asking (default: ${ENV_SIGN_WITH}; commands that take a patient's private "
                        f"key file use it)")
    if call_timeout:
        g.add_argument("--timeout", type=float, default=30.0, help="seconds per call (default: %(default)s)")
    else:
        p.set_defaults(timeout=30.0)


def add_log_key_options(p: argparse._ActionsContainer) -> None:
    p.add_argument("--log-key", default=_env(ENV_LOG_KEY),
                   help=f"the log's verifier key text, name+hash+key (default: ${ENV_LOG_KEY})")
    p.add_argument("--log-key-file", default=_env(ENV_LOG_KEY_FILE),
                   help=f"file holding the log's verifier key, e.g. log.key.pub (default: ${ENV_LOG_KEY_FILE})")


def add_client_options(p: argparse.ArgumentParser, *, call_timeout: bool = True) -> None:
    add_connection_options(p, call_timeout=call_timeout)
    g = p.add_argument_group("trust")
    add_log_key_options(g)
    g.add_argument("--map-vrf-key", default=_env(ENV_MAP_VRF_PUBLIC_KEY),
                   help=f"the map VRF public key to pin (64 hex digits, or the name+hash+key text of keygen map-vrf's "
                        f".pub; default: ${ENV_MAP_VRF_PUBLIC_KEY}); without it the key named by the first verified "
                        f"StateCommit is taken")
    g.add_argument("--map-vrf-key-file", default=_env(ENV_MAP_VRF_PUBLIC_KEY_FILE),
                   help=f"file holding the map VRF public key, e.g. map-vrf.key.pub (default: "
                        f"${ENV_MAP_VRF_PUBLIC_KEY_FILE})")
    g.add_argument("--state", default=_env(ENV_STATE),
                   help=f"client state file: the last verified checkpoint (default: ${ENV_STATE} or "
                        f"{STATE_DIR}/<origin>-<key hash>.json)")
    g.add_argument("--evidence-dir", default=_env(ENV_EVIDENCE_DIR), metavar="DIR",
                   help=f"where a split view's evidence file is written (default: ${ENV_EVIDENCE_DIR}, else beside "
                        "the state file); check one with verify-evidence")
    add_witness_options(g)
    p.add_argument("--json", action="store_true", help="print one JSON document")


# -- grant / revoke -----------------------------------------------------------------------------------------


def parse_when(text: str, what: str) -> int:
    """A date (2026-12-31) or an ISO 8601 time (2026-12-31T09:00:00+01:00; no zone means UTC), as ms."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{what}: {text!r} is not a date (YYYY-MM-DD) or ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def _split(values: Sequence[str] | None) -> list[str]:
    """Repeatable options also take comma-separated lists: --purpose TREAT,ETREAT."""
    out: list[str] = []
    for v in values or ():
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def read_patient_key(args: argparse.Namespace) -> Signer:
    if not args.key:
        raise CliError(f"no signing key: pass --key PATIENT.key (or set ${ENV_PATIENT_KEY_FILE})")
    path = Path(args.key).expanduser()
    try:
        return read_key(path)
    except FileNotFoundError:
        raise CliError(f"key file {args.key} does not exist (create one with: consent-ledger keygen patient --out {args.key})") from None
    except OSError as e:
        raise CliError(f"cannot read key file {args.key}: {e.strerror or e}") from None
    except InvalidInput as e:
        raise CliError(f"key file {args.key}: {e}") from None


def validity_from_args(args: argparse.Namespace, now_ms: int) -> payloads.Period | None:
    if args.valid_days is not None and (args.valid_from or args.valid_until):
        raise CliError("give --valid-days or --valid-from/--valid-until, not both")
    if args.valid_days is not None:
        if args.valid_days <= 0:
            raise CliError("--valid-days must be positive")
        return payloads.Period(now_ms, now_ms + int(args.valid_days * MS_PER_DAY))
    if args.valid_from or args.valid_until:
        start = parse_when(args.valid_from, "--valid-from") if args.valid_from else 0
        end = parse_when(args.valid_until, "--valid-until") if args.valid_until else 0
        return payloads.Period(start, end)
    return None


def submit_and_report(
    args: argparse.Namespace,
    payload_type: str,
    payload: bytes,
    signer: Signer,
    extra: dict[str, Any],
    notes: Sequence[str] = (),
) -> int:
    envelope = sign_envelope(payload_type, payload, [signer.private_key])
    with connect(args, signer=signer) as client:
        previous = client.last_checkpoint
        receipt = client.submit(envelope)
        closing = None if receipt.duplicate else _closing_commit(client, receipt.entry)
    entry = receipt.entry
    cid = payloads.consent_id(payload)
    dup = " (already in the log: identical entry submitted before)" if receipt.duplicate else ""
    lines = [
        f"{kind_name(payload_type)} appended{dup}",
        f"  index            {entry.index}",
        f"  consent id       {cid}",
        f"  checkpoint size  {entry.checkpoint.size}",
        *notes,
        entry_verification(entry, previous),
    ]
    if closing is not None:
        lines.append(closing_commit_line(*closing))
    data = {
        "index": entry.index,
        "consent_id": cid,
        "duplicate": receipt.duplicate,
        "payload_type": payload_type,
        "checkpoint": checkpoint_json(entry.checkpoint),
        "checkpoint_note": receipt.note.decode("utf-8"),
        "verified": verification_json(entry, previous),
        "state_commit": state_commit_json(*closing) if closing is not None else None,
        **extra,
    }
    emit(args, "\n".join(lines), data)
    return EXIT_OK


def _closing_commit(
    client: LedgerClient, entry: VerifiedEntry
) -> tuple[VerifiedEntry, payloads.StateCommitPayload] | None:
    """The StateCommit right after a consent change, which closes its batch (when the checkpoint covers it and
    nothing else was batched in between): fetched and verified like any entry."""
    if entry.index + 1 >= entry.checkpoint.size:
        return None
    after = client.get_entry(entry.index + 1)
    commit = state_commit_of(after, client.log_public_key)
    return (after, commit) if commit is not None else None


def for_patient_from_args(args: argparse.Namespace, signer: Signer) -> tuple[bytes, list[str], dict[str, Any]]:
    """The patient an entry is for: --for-patient (the signer is a delegate) or the signer itself; with the lines
    and JSON fields that say who signed."""
    if not args.for_patient:
        return signer.public_key, [], {}
    patient = public_key_from_text(args.for_patient, "--for-patient")
    if patient == signer.public_key:
        return patient, [], {}
    line = f"  signed by        delegate {short_key(signer.public_key)} for patient {short_key(patient)}"
    return patient, [line], {"patient": patient.hex(), "signed_by_delegate": signer.public_key.hex()}


def cmd_grant(args: argparse.Namespace) -> int:
    signer = read_patient_key(args)
    patient, notes, extra = for_patient_from_args(args, signer)
    now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    legal_basis = None
    if args.legal_basis or args.legal_basis_text:
        legal_basis = payloads.LegalBasis(code=args.legal_basis or "", text=args.legal_basis_text or "")
    payload = payloads.build_grant(
        patient=patient,
        grantee=args.grantee,
        decision=payloads.DENY if args.deny else payloads.PERMIT,
        actions=_split(args.action),
        purposes=_split(args.purpose),
        data_classes=_split(args.data_class),
        sensitivity_labels=_split(args.label),
        validity=validity_from_args(args, now_ms),
        supersedes=args.supersedes,
        legal_basis=legal_basis,
        issued_at_ms=now_ms,
    )
    return submit_and_report(
        args, payloads.CONSENT_GRANT, payload, signer, {"grantee": args.grantee, **extra}, notes
    )


def cmd_revoke(args: argparse.Namespace) -> int:
    signer = read_patient_key(args)
    patient, notes, extra = for_patient_from_args(args, signer)
    payload = payloads.build_revocation(patient=patient, consent_id=args.consent_id, reason=args.reason)
    extra = {"revoked_consent_id": args.consent_id, **extra}
    return submit_and_report(args, payloads.CONSENT_REVOCATION, payload, signer, extra, notes)


def cmd_delegate(args: argparse.Namespace) -> int:
    signer = read_patient_key(args)
    if args.attested_by and not args.for_patient:
        raise CliError("an organisation attests a guardian for a patient: give --for-patient KEY with --attested-by")
    if args.for_patient and not args.attested_by:
        raise CliError("only the patient signs its own delegations; an organisation attesting a guardian gives --attested-by")
    patient = public_key_from_text(args.for_patient, "--for-patient") if args.for_patient else signer.public_key
    delegate = (
        public_key_from_file(args.delegate_key_file, "delegate key file")
        if args.delegate_key_file
        else public_key_from_text(args.delegate or "", "--delegate")
    )
    now_ms = _now_ms()
    payload = payloads.build_delegation(
        patient=patient,
        delegate=delegate,
        relationship=args.relationship,
        scope=_split(args.scope),
        validity=validity_from_args(args, now_ms),
        majority_date_ms=parse_when(args.majority_date, "--majority-date") if args.majority_date else 0,
        evidence_reference=args.evidence or "",
        attested_by=args.attested_by or "",
        issued_at_ms=now_ms,
    )
    who = f"attested by {args.attested_by}" if args.attested_by else "signed by the patient"
    notes = [
        f"  delegate         {short_key(delegate)} ({args.relationship}, may {','.join(_split(args.scope))})",
        f"  patient          {short_key(patient)} ({who})",
    ]
    extra = {"patient": patient.hex(), "delegate": delegate.hex(), "delegation_id": payloads.consent_id(payload)}
    return submit_and_report(args, payloads.DELEGATION, payload, signer, extra, notes)


# -- reading ------------------------------------------------------------------------------------------------


def _index(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; entry indices start at 0")
    return value


def cmd_get(args: argparse.Namespace) -> int:
    with connect(args) as client:
        previous = client.last_checkpoint
        entry = client.get_entry(args.index)
        log_key = client.log_public_key
    human = [*describe_entry(entry, log_key=log_key), entry_verification(entry, previous, log_key=log_key)]
    emit(args, "\n".join(human), entry_json(entry, previous))
    return EXIT_OK


def cmd_entries(args: argparse.Namespace) -> int:
    if args.end <= args.start:
        raise CliError(f"END ({args.end}) must be larger than START ({args.start}); the range is [START, END)")
    with connect(args) as client:
        previous = client.last_checkpoint
        entries = client.get_entries(args.start, args.end)
        cp = entries[0].checkpoint if entries else client.checkpoint().checkpoint
        log_key = client.log_public_key
    if entries:
        lines = [entry_summary(e, log_key=log_key) for e in entries]
        last = entries[-1].index
        more = f" (the log holds {cp.size}; asked up to {args.end})" if last + 1 < args.end else ""
        lines.append(
            f"verified: inclusion of leaves {entries[0].index}..{last} in checkpoint of size {cp.size} signed by "
            f"{cp.origin}{more}; every body hash matches its leaf commitment and every envelope signature "
            f"verifies; {consistency_phrase(previous, cp)}"
        )
    else:
        lines = [f"no entries in [{args.start}, {args.end}): the log holds {cp.size} (checkpoint signed by {cp.origin})"]
    data = {
        "start": args.start,
        "end": args.end,
        "checkpoint": checkpoint_json(cp),
        "entries": [entry_json(e, previous) for e in entries],
    }
    emit(args, "\n".join(lines), data)
    return EXIT_OK


def _progress_printer(stream: Any) -> Callable[[int, int], None]:
    """A one-line progress bar on a terminal, a line per 10% otherwise."""
    started = time.monotonic()
    last_decile = [-1]

    def show(done: int, total: int) -> None:
        frac = done / total if total else 1.0
        rate = done / max(time.monotonic() - started, 1e-6)
        if stream.isatty():
            bar = "#" * int(frac * 30)
            stream.write(f"\r  [{bar:<30}] {done:,}/{total:,} entries  {rate:,.0f}/s")
            if done >= total:
                stream.write("\n")
        elif int(frac * 10) > last_decile[0]:
            last_decile[0] = int(frac * 10)
            stream.write(f"  audited {done:,}/{total:,} entries ({frac:.0%}, {rate:,.0f}/s)\n")
        stream.flush()

    return show


def cmd_audit(args: argparse.Namespace) -> int:
    resume = Path(args.resume_file) if args.resume_file else None
    with connect(args) as client:
        auditor = Auditor(client, resume_file=resume)
        progress = None if args.json else _progress_printer(sys.stderr)
        report = auditor.run(end=args.end, progress=progress)
    kinds = ", ".join(count(n, kind_name(k), kind_name(k) + "s") for k, n in sorted(report.by_kind.items()))
    lines = [
        f"audited entries {report.start:,}..{report.end - 1:,} of a log of {report.checkpoint_size:,}"
        + (f" (resumed from {resume})" if resume and report.start else ""),
        f"  {count(report.entries, 'entry', 'entries')}: {kinds or 'none'}",
        f"  every entry's inclusion, body and {count(report.signatures, 'signature', 'signatures')} verified; every "
        "checkpoint seen was signed by the log and consistent with the one before",
        f"  {count(report.state_commits, 'StateCommit', 'StateCommits')}: map root recomputed from the log and compared",
    ]
    data: dict[str, Any] = {
        "start": report.start,
        "end": report.end,
        "checkpoint_size": report.checkpoint_size,
        "entries": report.entries,
        "by_kind": report.by_kind,
        "signatures": report.signatures,
        "state_commits": report.state_commits,
        "ok": report.ok,
        "finding": None,
        # Entries an honest ledger refuses at admission (the replay went on past them).
        "refusals": [{"index": r.index, "problem": r.problem, "evidence": r.evidence} for r in report.refusals],
    }
    if report.finding is not None:
        f = report.finding
        data["finding"] = {"index": f.index, "problem": f.problem, "evidence": f.evidence}
        lines.append(f"AUDIT FAILED at entry {f.index}: {f.problem}")
        lines.extend(f"  {k}: {v}" for k, v in f.evidence.items())
        lines.extend(f"  also entry {r.index}: {r.problem}" for r in report.refusals if r is not f)
        emit(args, "\n".join(lines), data)
        return EXIT_VERIFICATION
    lines.append("audit passed")
    emit(args, "\n".join(lines), data)
    return EXIT_OK


def _checkpoint_human(cp: Checkpoint) -> list[str]:
    return [
        f"  origin     {cp.origin}",
        f"  size       {cp.size}",
        f"  root hash  {base64.b64encode(cp.root_hash).decode('ascii')}",
    ]


def cmd_checkpoint(args: argparse.Namespace) -> int:
    with connect(args) as client:
        previous = client.last_checkpoint
        verified = client.checkpoint()
    cp = verified.checkpoint
    if args.save:
        Path(args.save).write_bytes(verified.note)
    lines = [
        "latest checkpoint",
        *_checkpoint_human(cp),
        f"verified: signature by {cp.origin} with the pinned log key; {consistency_phrase(previous, cp)}",
    ]
    if args.save:
        lines.append(f"saved the signed note to {args.save}")
    if args.show_note:
        lines += ["", verified.note.decode("utf-8").rstrip("\n")]
    data = {
        "checkpoint": checkpoint_json(cp),
        "note": verified.note.decode("utf-8"),
        "previous_size": previous.size if previous else None,
        "consistent_with_previous": True if previous else None,
    }
    if verified.witnessed is not None:
        lines.append(witnessed_line(verified.witnessed, cp.size))
        data["witnessed"] = witnessed_json(verified.witnessed)
    emit(args, "\n".join(lines), data)
    return EXIT_OK


def cmd_consistency(args: argparse.Namespace) -> int:
    if args.old_note:
        old_note = _read_file(args.old_note, "checkpoint note")
        # A client with no memory: the old note becomes its first checkpoint, so fetching the latest one makes
        # the library verify the consistency proof from the old size to the latest.
        with connect(args, stateless=True) as client:
            old = client.accept_checkpoint(old_note)
            latest = client.checkpoint().checkpoint
        source = f"the signed note in {args.old_note}"
    else:
        state = state_path_from_args(args, log_key_from_args(args))
        with connect(args) as client:
            old = client.last_checkpoint
            latest = client.checkpoint().checkpoint
        source = f"the state file {state}"
        if old is None:
            human = (
                f"no earlier checkpoint in {state} to compare with.\n"
                f"latest checkpoint (size {latest.size}) verified and saved there: the next run checks against it"
            )
            emit(args, human, {"compared": False, "old": None, "latest": checkpoint_json(latest), "consistent": None})
            return EXIT_OK
    if old.size == latest.size:
        result = "consistent: the same tree (equal size and root hash)"
    elif old.size < latest.size:
        result = (
            f"consistent: the consistency proof from size {old.size} to size {latest.size} verified; the log of size "
            f"{latest.size} is an append-only extension of the log of size {old.size}"
        )
    else:
        result = (
            f"consistent, but the server's latest checkpoint (size {latest.size}) is OLDER than the one compared "
            f"(size {old.size}): the proof from {latest.size} to {old.size} verified"
        )
    human = "\n".join(
        [
            f"old checkpoint     size {old.size}  ({source})",
            f"latest checkpoint  size {latest.size}  (from {args.server})",
            f"both signed by {latest.origin} with the pinned log key",
            result,
        ]
    )
    data = {"compared": True, "old": checkpoint_json(old), "latest": checkpoint_json(latest), "consistent": True}
    emit(args, human, data)
    return EXIT_OK


def cmd_verify_note(args: argparse.Namespace) -> int:
    verifier_key = log_key_from_args(args)
    note = _read_file(args.file, "checkpoint note")
    cp = open_checkpoint(note, parse_verifier_key(verifier_key))
    emit(
        args,
        "\n".join([f"{args.file}: a checkpoint signed by {cp.origin} (signature verified with the pinned key)",
                   *_checkpoint_human(cp)]),
        {"file": args.file, "checkpoint": checkpoint_json(cp), "signature_verified": True},
    )
    return EXIT_OK


# -- parties, patients and data items -----------------------------------------------------------------------


def public_key_from_file(path_text: str, what: str) -> bytes:
    """The Ed25519 public key in a key file: a public (.pub, verifier key) file, or a private key file (mode 0600
    required, as for every private key file)."""
    path = Path(path_text).expanduser()
    text = _read_file(path_text, what).decode("utf-8", "replace").strip()
    try:
        if text.startswith("PRIVATE+KEY+"):
            return read_key(path).public_key
        return parse_verifier_key(text).public_key
    except InvalidInput as e:
        raise CliError(f"{what} {path_text}: {e}") from None


def public_key_from_text(text: str, what: str) -> bytes:
    """64 hex digits, a verifier key (name+hash+base64) as in a .pub file, or the path of such a file (a .pub, or
    a private key file: its public key)."""
    t = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", t):
        return bytes.fromhex(t)
    try:
        return parse_verifier_key(t).public_key
    except InvalidInput:
        pass
    if Path(t).expanduser().is_file():
        return public_key_from_file(t, f"{what} file")
    raise CliError(
        f"{what}: {text!r:.80} is neither 64 hex digits, a public key (name+hash+key) nor a key file"
    )


def patient_signer_from_args(args: argparse.Namespace) -> Signer | None:
    """The patient's private key, when --patient-key-file (or its environment default) names a private key file:
    the patient's own commands then sign their requests with it."""
    path = None if args.patient else (args.patient_key_file or _env(ENV_PATIENT_KEY_FILE))
    if not path:
        return None
    try:
        head = Path(path).expanduser().read_text(errors="replace")[:12]
    except OSError:
        return None  # patient_from_args reports the unreadable file
    return read_key(Path(path).expanduser()) if head.startswith("PRIVATE+KEY+") else None


def patient_from_args(args: argparse.Namespace) -> bytes:
    """The patient's public key: --patient HEX, --patient-key-file FILE, or $CONSENT_LEDGER_PATIENT_KEY_FILE."""
    if args.patient and args.patient_key_file:
        raise CliError("give --patient or --patient-key-file, not both")
    if args.patient:
        return public_key_from_text(args.patient, "--patient")
    path = args.patient_key_file or _env(ENV_PATIENT_KEY_FILE)
    if not path:
        raise CliError(
            "which patient? pass --patient HEX (the public key) or --patient-key-file FILE "
            f"(e.g. alice.key.pub), or set ${ENV_PATIENT_KEY_FILE}"
        )
    return public_key_from_file(path, "patient key file")


def party_from_args(args: argparse.Namespace, command: str) -> str | None:
    """The organisation the caller speaks for: --as on a development server; with mTLS its certificate says."""
    if args.as_party:
        return str(vocab.check_party_id(args.as_party, "--as"))
    if args.client_cert:
        return None
    raise CliError(
        f"{command} is asked by an organisation: pass --as PARTY_ID (a development server with --insecure), "
        f"or --client-cert/--client-key (mutual TLS; the certificate names the organisation); or set ${ENV_PARTY}"
    )


def parse_data_item(text: str) -> payloads.DataItem:
    """CLASS or CLASS:LABEL,LABEL (the sensitivity labels the data carries), e.g. clinical-notes:MH."""
    cls, _, labels = text.partition(":")
    data_class = vocab.check_data_class(cls.strip(), "--data")
    codes = tuple(x.strip() for x in labels.split(",") if x.strip())
    for code in codes:
        vocab.check_sensitivity_label(code, f"--data {text}")
    return payloads.DataItem(data_class, codes)


def add_patient_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("patient")
    g.add_argument("--patient", metavar="KEY", help="the patient's public key: 64 hex digits or name+hash+key")
    g.add_argument("--patient-key-file", metavar="FILE",
                   help=f"the patient's key file, public (alice.key.pub) or private (default: ${ENV_PATIENT_KEY_FILE})")


# -- register-party -----------------------------------------------------------------------------------------


def read_operator_key(path: str) -> Signer:
    try:
        return read_key(Path(path).expanduser())
    except FileNotFoundError:
        raise CliError(f"operator key file {path} does not exist") from None
    except OSError as e:
        raise CliError(f"cannot read operator key file {path}: {e.strerror or e}") from None
    except InvalidInput as e:
        raise CliError(f"operator key file {path}: {e}") from None


def cmd_register_party(args: argparse.Namespace) -> int:
    keys = [public_key_from_file(f, "party key file") for f in args.party_key_file]
    roles = _split(args.role)
    capabilities = _split(args.capability or [])
    payload = payloads.build_party_registration(
        party_id=args.party_id, roles=roles, public_keys=keys, display_name=args.display_name,
        capabilities=capabilities,
    )
    details = [
        f"party            {args.party_id} ({args.display_name})",
        f"roles            {', '.join(roles)}",
        f"capabilities     {', '.join(capabilities) or 'none'}",
        f"keys             {', '.join(short_key(k) for k in keys)}",
    ]
    extra = {
        "party_id": args.party_id, "roles": roles, "capabilities": capabilities,
        "public_keys": [k.hex() for k in keys], "display_name": args.display_name,
    }
    return operator_submit(args, args.operator_key, payloads.PARTY_REGISTRATION, payload, details, extra)


def operator_submit(
    args: argparse.Namespace,
    key_path: str,
    payload_type: str,
    payload: bytes,
    details: Sequence[str],
    extra: dict[str, Any] | None = None,
) -> int:
    """Sign an operator entry (registration, review, erasure) with the operator's key file, submit it, verify the
    receipt and report it."""
    operator = read_operator_key(key_path)
    envelope = sign_envelope(payload_type, payload, [operator.private_key])
    with connect(args) as client:
        previous = client.last_checkpoint
        receipt = client.submit(envelope)
    entry = receipt.entry
    dup = " (already in the log: identical entry submitted before)" if receipt.duplicate else ""
    human = "\n".join(
        [
            f"{kind_name(payload_type)} appended{dup}",
            *(f"  {line}" for line in details),
            f"  index            {entry.index}",
            f"  checkpoint size  {entry.checkpoint.size}",
            entry_verification(entry, previous),
        ]
    )
    data = {
        "index": entry.index,
        "duplicate": receipt.duplicate,
        "payload_type": payload_type,
        **(extra or {}),
        "checkpoint": checkpoint_json(entry.checkpoint),
        "verified": verification_json(entry, previous),
    }
    emit(args, human, data)
    return EXIT_OK


# -- check-access -------------------------------------------------------------------------------------------


def _write_output(path: str, text: str) -> None:
    if path == "-":
        sys.stdout.write(text)
        return
    try:
        Path(path).expanduser().write_text(text)
    except OSError as e:
        raise CliError(f"cannot write {path}: {e.strerror or e}") from None


def cmd_check_access(args: argparse.Namespace) -> int:
    patient = patient_from_args(args)
    party = party_from_args(args, "check-access")
    vocab.check_action(args.action, "--action")
    vocab.check_purpose(args.purpose, "--purpose")
    data = [parse_data_item(d) for d in args.data]
    if args.reason and not args.break_glass:
        raise CliError("--reason goes with --break-glass")
    if args.break_glass and not (args.reason or "").strip():
        raise CliError("--break-glass needs --reason TEXT: why this is an emergency (it is recorded and reviewed)")
    if not args.max_state_age > 0:
        raise CliError("--max-state-age must be a positive number of seconds")
    if not args.max_clock_skew >= 0:
        raise CliError("--max-clock-skew must be a number of seconds, 0 or more")
    max_age_ms = round(args.max_state_age * 1000)
    skew_ms = round(args.max_clock_skew * 1000)
    with connect(args, party=party) as client:
        previous = client.last_checkpoint
        vd = ConsentClient(client, max_state_age_ms=max_age_ms, max_clock_skew_ms=skew_ms).check_access(
            patient,
            action=args.action,
            purpose=args.purpose,
            data=data,
            break_glass=args.break_glass,
            break_glass_reason=args.reason or "",
            record=args.record,
        )
    now = _now_ms()
    lines = [
        *decision_lines(vd.decision, now_ms=now),
        decision_verification(vd, previous, now_ms=now, max_state_age_ms=max_age_ms),
    ]
    if vd.access_event_index is not None:
        lines.append(f"recorded as access event #{vd.access_event_index} (signed by the ledger)")
    if args.receipt_out:
        witnessed = (vd.witnessed.note, vd.witnessed_consistency) if vd.witnessed is not None else None
        _write_output(args.receipt_out, json.dumps(export_decision_receipt(vd.receipt, witnessed), indent=2) + "\n")
        if args.receipt_out != "-":
            lines.append(f"signed receipt saved to {args.receipt_out} (check it offline with verify-receipt)")
    data_out = verified_decision_json(vd, previous, max_state_age_ms=max_age_ms)
    data_out["receipt_out"] = args.receipt_out
    if vd.witnessed is not None:
        lines.append(witnessed_line(vd.witnessed, vd.checkpoint.size))
        data_out["witnessed"] = witnessed_json(vd.witnessed)
    emit(args, "\n".join(lines), data_out)
    return EXIT_OK


def _now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


# -- the patient's view -------------------------------------------------------------------------------------


def cmd_consents(args: argparse.Namespace) -> int:
    patient = patient_from_args(args)
    time_ms = parse_when(args.at, "--at") if args.at else 0
    views, revocations, delegations = [], [], []
    with connect(args, signer=patient_signer_from_args(args)) as client:
        previous = client.last_checkpoint
        consents = ConsentClient(client)
        token = ""
        while True:
            page = consents.list_consents(patient, page_token=token, time_ms=time_ms)
            views.extend(page.consents)
            revocations.extend(page.revocations)
            delegations.extend(page.delegations)
            cp = page.checkpoint
            token = page.next_page_token
            if not token:
                break
    now = time_ms or _now_ms()
    head = (
        f"consents of patient {short_key(patient)}: {plural(len(views), 'grant', 'grants')}, "
        f"{plural(len(revocations), 'revocation', 'revocations')} (states as of {format_time(now)})"
    )
    lines = [head, *(f"  {consent_view_line(v)}" for v in views)]
    if delegations:
        lines.append(f"delegations: {len(delegations)}")
        lines.extend(f"  {delegation_view_line(d)}" for d in delegations)
    lines.append(
        f"verified: every entry proven in checkpoint of size {cp.size} signed by {cp.origin} (inclusion, body hash, "
        f"the patient's signature or a delegate's under a delegation in force); every state re-computed from the "
        f"entries and equal to the server's; {consistency_phrase(previous, cp)}"
    )
    data = {
        "patient": patient.hex(),
        "consents": [consent_view_json(v) for v in views],
        "delegations": [delegation_view_json(d) for d in delegations],
        "revocations": [entry_json(r, previous) for r in revocations],
        "checkpoint": checkpoint_json(cp),
    }
    emit(args, "\n".join(lines), data)
    return EXIT_OK


def cmd_who_asked(args: argparse.Namespace) -> int:
    patient = patient_from_args(args)
    events = []
    with connect(args, signer=patient_signer_from_args(args)) as client:
        previous = client.last_checkpoint
        consents = ConsentClient(client)
        log_key = client.log_public_key
        token = ""
        while True:
            page = consents.list_access_events(patient, page_token=token)
            events.extend(page.events)
            token = page.next_page_token
            if not token:
                break
        cp = client.last_checkpoint
    assert cp is not None
    unreviewed = [v for v in events if v.review_state == "unreviewed"]
    lines = [f"who asked about patient {short_key(patient)}: {plural(len(events), 'access event', 'access events')}"]
    if unreviewed:
        lines.append(
            f"  !! {plural(len(unreviewed), 'break-glass access', 'break-glass accesses')} NOT YET REVIEWED by the "
            f"privacy officer: {', '.join(f'#{v.index}' for v in unreviewed)}"
        )
    lines += [f"  {access_event_view_line(v, log_key)}" for v in events]
    lines.append(
        f"verified: every event proven in checkpoint of size {cp.size} signed by {cp.origin}, its body hash and "
        f"signature checked, and about this patient; every review shown proven an operator's review of its event "
        f"(that an event is unreviewed is the server's word); {consistency_phrase(previous, cp)}"
    )
    data = {
        "patient": patient.hex(),
        "events": [access_event_view_json(v, log_key) for v in events],
        "unreviewed_break_glass": [v.index for v in unreviewed],
        "checkpoint": checkpoint_json(cp),
    }
    emit(args, "\n".join(lines), data)
    return EXIT_OK


# -- the operator: break-glass reviews and erasure -----------------------------------------------------------


def cmd_reviews(args: argparse.Namespace) -> int:
    items = []
    with connect(args) as client:
        previous = client.last_checkpoint
        consents = ConsentClient(client)
        log_key = client.log_public_key
        token = ""
        while True:
            page = consents.break_glass_queue(unreviewed_only=args.unreviewed, page_token=token)
            items.extend(page.items)
            cp = page.checkpoint
            token = page.next_page_token
            if not token:
                break
    open_items = [v for v in items if v.review is None]
    party_width = max([16, *(len(v.event.party_id) for v in items if v.event)])
    what = "unreviewed break-glass accesses" if args.unreviewed else "break-glass accesses"
    lines = [f"{what}: {len(items)} ({len(open_items)} awaiting review)"]
    if items:
        lines.append(f"  {'EVENT':<7} {'WHEN':<{WHEN_WIDTH}} {'PARTY':<{party_width}} {'PURPOSE':<8} {'REASON':<32} REVIEW")
    for v in items:
        e = v.event
        when = format_time(e.accessed_at_ms if e else v.entry.leaf.integrated_time_ms)
        party, purpose = (e.party_id, e.purpose) if e else ("(erased)", "-")
        reason = (e.break_glass_reason if e else "-").replace("\n", " ")
        reason = reason if len(reason) <= 32 else reason[:29] + "..."
        lines.append(
            f"  #{v.index:<6} {when:<{WHEN_WIDTH}} {party:<{party_width}} {purpose:<8} {reason:<32} {review_state_text(v)}"
        )
    lines.append(
        f"verified: every event and review proven in checkpoint of size {cp.size} signed by {cp.origin}; each review "
        f"signed by an operator key and about its event (that the list is complete, and that an event has no review, "
        f"is the server's word); {consistency_phrase(previous, cp)}"
    )
    data = {
        "unreviewed_only": args.unreviewed,
        "items": [access_event_view_json(v, log_key) for v in items],
        "checkpoint": checkpoint_json(cp),
    }
    emit(args, "\n".join(lines), data)
    return EXIT_OK


def cmd_review(args: argparse.Namespace) -> int:
    payload = payloads.build_break_glass_review(event_index=args.index, outcome=args.outcome, notes=args.notes)
    return operator_submit(
        args, args.key, payloads.BREAK_GLASS_REVIEW, payload, [f"event #{args.index} reviewed: {args.outcome}"]
    )


def cmd_erase(args: argparse.Namespace) -> int:
    if not args.reason.strip():
        raise CliError("--reason must say why the body is erased (it is recorded in the log)")
    with connect(args) as client:
        payload = ConsentClient(client).erasure_payload(args.index, args.reason)
    return operator_submit(
        args, args.key, payloads.ERASURE, payload, [f"body of entry #{args.index} erased: {args.reason!r}"]
    )


def _pushed_line(v: VerifiedEntry, log_key: bytes) -> str:
    payload = None
    if v.envelope is not None:
        try:
            payload = payloads.parse_payload(v.envelope.payload_type, v.envelope.payload)
        except InvalidInput:
            payload = None
    if isinstance(payload, payloads.AccessEventPayload):
        text = f"access event {access_event_line(v, payload, log_key)}"
    else:
        text = entry_summary(v, log_key=log_key)
    return f"{text}  [verified: inclusion in checkpoint of size {v.checkpoint.size}]"


def cmd_watch(args: argparse.Namespace) -> int:
    if args.revocations == bool(args.patient or args.patient_key_file):
        raise CliError("watch what? give --patient/--patient-key-file (a patient's entries) or --revocations --as PARTY")
    if args.count is not None and args.count < 1:
        raise CliError("--count must be at least 1")
    if args.watch_timeout is not None and args.watch_timeout <= 0:
        raise CliError("--timeout must be positive")
    party = party_from_args(args, "watch --revocations") if args.revocations else None
    patient = None if args.revocations else patient_from_args(args)
    seen = 0
    ended = "the server ended the watch; run it again to go on"
    signer = None if args.revocations else patient_signer_from_args(args)
    with connect(args, party=party, signer=signer) as client:
        consents = ConsentClient(client)
        log_key = client.log_public_key
        if patient is None:
            what = f"revocations of consents granted to {party or 'this organisation'}"
            stream = consents.watch_revocations(timeout=args.watch_timeout)
        else:
            what = f"new entries about patient {short_key(patient)}"
            stream = consents.watch_patient(patient, timeout=args.watch_timeout)
        if not args.json:
            limits = [f"{args.count} received"] if args.count else []
            limits += [f"{args.watch_timeout:g} s"] if args.watch_timeout else []
            limits.append("Ctrl-C")
            print(f"watching {what}, until {' or '.join(limits)}; each entry is proven before it is shown", flush=True)
        try:
            for v in stream:
                seen += 1
                if args.json:
                    print(json.dumps(entry_json(v, None), sort_keys=True), flush=True)
                else:
                    print(_pushed_line(v, log_key), flush=True)
                if args.count and seen >= args.count:
                    ended = f"--count {args.count} reached"
                    break
        except grpc.RpcError as e:
            if e.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            ended = f"--timeout {args.watch_timeout:g} s reached"
        except KeyboardInterrupt:
            ended = "interrupted"
    if not args.json:
        print(f"stopped: {ended}; {plural(seen, 'entry', 'entries')} received")
    return EXIT_OK


# -- bundles and receipts -----------------------------------------------------------------------------------


def cmd_export_consent(args: argparse.Namespace) -> int:
    verifier_key = log_key_from_args(args)
    with connect(args) as client:
        entry, note = client.get_entry_with_note(args.index)
        witnessed = None
        if client.witness_policy is not None:
            wc, w_proof = client.witness_proof(entry.checkpoint)
            witnessed = (wc.note, w_proof)
    if entry.leaf.payload_type not in (payloads.CONSENT_GRANT, payloads.CONSENT_REVOCATION):
        raise CliError(
            f"entry {args.index} is a {kind_name(entry.leaf.payload_type)}: only consent grants and revocations are "
            "exported as consent bundles"
        )
    try:
        bundle = export_consent_bundle(entry, note, verifier_key, witnessed)
    except InvalidInput as e:
        raise CliError(f"entry {args.index} cannot be exported: {e}") from None
    policy = witness_policy_from_args(args)
    verify_consent_bundle(bundle, verifier_key, witness_policy=policy)  # what we write must verify offline
    _write_output(args.out, json.dumps(bundle, indent=2) + "\n")
    record = bundle["consent_record"]
    human = "\n".join(
        [
            f"wrote the consent bundle of entry #{entry.index} ({kind_name(entry.leaf.payload_type)}, "
            f"consent id {short_id(record['record_id'])}) to {args.out}",
            entry_verification(entry, None, with_previous=False),
            f"anyone can check it offline with the log's public key: consent-ledger verify-bundle {args.out} "
            + (f"--log-key-file {shlex.quote(args.log_key_file)}" if args.log_key_file else "--log-key KEY"),
        ]
    )
    if args.out == "-":
        return EXIT_OK
    emit(args, human, {"file": args.out, "index": entry.index, "consent_record": record,
                       "checkpoint": checkpoint_json(entry.checkpoint)})
    return EXIT_OK


def cmd_verify_bundle(args: argparse.Namespace) -> int:
    verifier_key = log_key_from_args(args)
    text = _read_file(args.file, "bundle").decode("utf-8", "replace")
    verified = verify_consent_bundle(text, verifier_key, witness_policy=witness_policy_from_args(args))
    entry, cp = verified.entry, verified.checkpoint
    assert entry.envelope is not None  # a bundle always carries the body
    patient = verified.consent_record["pii_principal_id"]
    lines = [
        f"{args.file}: consent bundle, checked offline (no server asked)",
        *describe_entry(entry),
        f"verified: checkpoint of size {cp.size} signed by {cp.origin} (the pinned log key); inclusion of leaf "
        f"{entry.index}; body hash matches leaf commitment; envelope signature by "
        f"{', '.join(short_key(k) for k in entry.envelope.signers)} verifies; the consent record matches the "
        "signed consent",
        f"this proves the consent was in the log at size {cp.size}, not that it is still in force; ask the ledger: "
        f"consent-ledger consents --patient {patient}",
    ]
    data = {
        "file": args.file,
        "index": entry.index,
        "consent_record": verified.consent_record,
        "checkpoint": checkpoint_json(cp),
        "verified": {
            "checkpoint_signature": True,
            "inclusion": {"leaf_index": entry.index, "tree_size": cp.size},
            "body_hash_matches_leaf": True,
            "envelope_signature": True,
            "consent_record_matches": True,
        },
    }
    if verified.witnessed is not None:
        lines.append(witnessed_line(verified.witnessed, cp.size, age_checked=False))
        data["verified"]["witnessed"] = witnessed_json(verified.witnessed)
    emit(args, "\n".join(lines), data)
    return EXIT_OK


def cmd_verify_receipt(args: argparse.Namespace) -> int:
    verifier_key = log_key_from_args(args)
    raw = _read_file(args.file, "receipt")
    doc: str | bytes = raw.decode("utf-8", "replace") if raw.lstrip().startswith(b"{") else raw
    verified = verify_decision_receipt(doc, verifier_key, witness_policy=witness_policy_from_args(args))
    d, cp = verified.decision, verified.checkpoint
    lines = [
        f"{args.file}: decision receipt, checked offline (no server asked)",
        *decision_lines(d, now_ms=_now_ms()),
        f"verified: receipt signature by the log key ({cp.origin}); bound to checkpoint of size {cp.size} signed by "
        f"{cp.origin}: the ledger stated this decision, made {format_time(d.request.time_ms)}",
    ]
    data = {
        "file": args.file,
        **decision_json(d),
        "checkpoint": checkpoint_json(cp),
        "verified": {"receipt_signature": True, "checkpoint_signature": True, "signed_by": cp.origin},
    }
    if verified.witnessed is not None:
        lines.append(witnessed_line(verified.witnessed, cp.size) + " (ages against the decision's time)")
        data["verified"]["witnessed"] = witnessed_json(verified.witnessed)
    emit(args, "\n".join(lines), data)


def witnessed_line(wc: WitnessedCheckpoint, size: int, *, age_checked: bool = True) -> str:
    """What the witness policy checked, in one line."""
    names = ", ".join(f"{n} at {format_time(t * 1000)}" for n, t in wc.cosignatures)
    extends = "is" if wc.checkpoint.size == size else f"extends (consistency proof from size {wc.checkpoint.size})"
    age = "within the maximum age" if age_checked else "(age not checked: a bundle proves a past fact)"
    return f"witnessed: the checkpoint {extends} a checkpoint cosigned by {len(wc.cosignatures)} pinned witness(es) {age}: {names}"


def witnessed_json(wc: WitnessedCheckpoint) -> dict[str, Any]:
    return {
        "checkpoint": checkpoint_json(wc.checkpoint),
        "cosignatures": [{"witness": n, "time_s": t} for n, t in wc.cosignatures],
    }


def cmd_verify_evidence(args: argparse.Namespace) -> int:
    """Check a split-view evidence file with the log's verifier key alone."""
    verifier_key = log_key_from_args(args)
    verifier = parse_verifier_key(verifier_key)
    raw = _read_file(args.file, "evidence file")
    try:
        sv = parse_split_view(raw)
        verify_split_view(sv, verifier)
    except (InvalidInput, VerificationError) as e:
        message = f"{args.file}: does NOT prove equivocation: {e}"
        if args.json:
            print(json.dumps({"file": args.file, "proven": False, "reason": str(e)}, indent=2, sort_keys=True))
        else:
            print(message, file=sys.stderr)
        return EXIT_VERIFICATION
    small, large = open_checkpoint(sv.smaller_note, verifier), open_checkpoint(sv.larger_note, verifier)
    if small.size == large.size:
        how = f"both are of size {small.size} with different roots"
    else:
        how = (
            f"the consistency proof from size {small.size} to {large.size} leads to the larger checkpoint's root and "
            f"shows another root at size {small.size} than the smaller checkpoint's"
        )
    lines = [
        f"{args.file}: equivocation proven (checked offline with the log key alone)",
        f"checked: two checkpoints of {sv.origin}, each signed by the pinned log key; {how}: the log signed two "
        "histories that cannot both be true (a split view)",
    ]
    data = {
        "file": args.file,
        "proven": True,
        "origin": sv.origin,
        "smaller": checkpoint_json(small),
        "larger": checkpoint_json(large),
        "checked": {"signatures": True, "same_size_different_roots": small.size == large.size,
                    "proof_leads_to_larger_root": small.size != large.size},
    }
    emit(args, "\n".join(lines), data)
    return EXIT_OK


# -- health -------------------------------------------------------------------------------------------------


def cmd_health(args: argparse.Namespace) -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with make_channel(args) as channel:
        resp = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
        )
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    emit(args, f"{args.server}: {status}", {"server": args.server, "service": args.service, "status": status})
    return EXIT_OK if resp.status == health_pb2.HealthCheckResponse.SERVING else EXIT_ERROR


# -- demo ---------------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from consent_ledger.demo import run_demo

    return run_demo(Path(args.dir), port=args.port, serve=not args.no_serve)


# -- main ---------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="consent-ledger",
        description=__doc__.splitlines()[0],
        epilog="Exit status: 0 ok, 1 error, 2 usage error, 3 verification failed.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("keygen", help="create a key (log, patient, organisation, the map VRF key or a witness key)")
    p.add_argument("kind", choices=["log", "patient", "org", "map-vrf", "witness"],
                   help="map-vrf: the ledger's map VRF key (derives the consent-state map's keys; never signs)")
    p.add_argument("--name", help="key name; for a log key, the log's origin")
    p.add_argument("--out", required=True, help="private key file to create (mode 0600); FILE.pub gets the public key")
    p.add_argument("--force", action="store_true", help="replace an existing key file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("dev-ca", help="make a throwaway CA with server and client certificates for TLS and mutual TLS "
                                      "(development, Docker trials)")
    p.add_argument("--out", required=True, help="directory for ca.crt/ca.key, server.crt/server.key and NAME.crt/NAME.key")
    p.add_argument("--server-name", action="append", metavar="NAME",
                   help="a DNS name clients use to reach the server (repeatable; localhost, 127.0.0.1 and ::1 are "
                        "always included)")
    p.add_argument("--client", action="append", metavar="NAME",
                   help="issue a client certificate whose common name is NAME: a party id, the operator's or an "
                        "auditor's configured name, or e.g. patient-app (repeatable)")
    p.add_argument("--days", type=int, default=365, help="validity in days (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_dev_ca)

    p = sub.add_parser("witness", help="run a C2SP tlog-witness that cosigns the checkpoints of configured logs")
    p.add_argument("--listen", default=_env("CONSENT_LEDGER_WITNESS_LISTEN", DEFAULT_WITNESS_LISTEN),
                   help="host:port to listen on (default: $CONSENT_LEDGER_WITNESS_LISTEN or %(default)s)")
    p.add_argument("--database-url", default=_env("CONSENT_LEDGER_WITNESS_DATABASE_URL", DEFAULT_WITNESS_DATABASE_URL),
                   help="SQLAlchemy URL of the witness's state (default: %(default)s)")
    p.add_argument("--key-file", required=True, help="the witness key (keygen witness)")
    p.add_argument("--log", action="append", default=[], metavar="ORIGIN=VERIFIER-KEY", required=True,
                   help="a log to witness: its origin and a verifier key trusted for it; repeatable")
    p.add_argument("--evidence-dir", help="write split-view evidence files here")
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", help="the certificate's private key (PEM)")
    p.add_argument("--port-file", help="write the bound port to this file (useful with port 0)")
    p.set_defaults(func=cmd_witness)

    p = sub.add_parser("witness-status", help="the origins a witness follows and the sizes it cosigned")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--database-url", help="read the witness's database")
    where.add_argument("--url", help="ask a running witness (GET URL/status)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_witness_status)

    p = sub.add_parser("serve", help="run the ledger service")
    add_serve_options(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "rebuild-map",
        help="rebuild the consent-state map with the map VRF key's keys from the log (server stopped), and append "
             "a StateCommit with the new root",
    )
    p.add_argument("--database-url", default=_env("CONSENT_LEDGER_DATABASE_URL", DEFAULT_DATABASE_URL),
                   help="SQLAlchemy URL (default: $CONSENT_LEDGER_DATABASE_URL or %(default)s)")
    p.add_argument("--key-file", default=_env("CONSENT_LEDGER_KEY_FILE"),
                   help="the log's signing key file (default: $CONSENT_LEDGER_KEY_FILE, else $CONSENT_LEDGER_KEY)")
    p.add_argument("--map-vrf-key-file", default=_env("CONSENT_LEDGER_MAP_VRF_KEY_FILE"),
                   help=f"the map VRF key file (default: $CONSENT_LEDGER_MAP_VRF_KEY_FILE, else ${MAP_VRF_KEY_ENV}, "
                        f"else the key serve derives from the log key)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_rebuild_map)

    p = sub.add_parser("demo", help="start a server on a fresh SQLite file and play a short verified story")
    p.add_argument("--dir", default=".consent-ledger/demo", help="working directory for keys and data (default: %(default)s)")
    p.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: 50051 or the next free one; 0: any)")
    p.add_argument("--no-serve", action="store_true", help="exit after the story instead of serving until Ctrl-C")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("grant", help="sign and submit a consent grant, then verify it is in the log")
    p.add_argument("--key", default=_env(ENV_PATIENT_KEY_FILE), help=f"the patient's key file (default: ${ENV_PATIENT_KEY_FILE})")
    p.add_argument("--grantee", required=True, help="org:<party id>, role:<hospital|insurer|research|public-health> or any")
    p.add_argument("--action", action="append", required=True, metavar="ACTION",
                   help=f"repeatable or comma-separated: {', '.join(vocab.ACTIONS)}")
    p.add_argument("--purpose", action="append", required=True, metavar="CODE",
                   help="HL7 PurposeOfUse code, e.g. TREAT, HPAYMT, HRESCH (repeatable)")
    p.add_argument("--data-class", action="append", required=True, metavar="CLASS",
                   help=f"repeatable: {', '.join(vocab.DATA_CLASSES)} or '*'")
    p.add_argument("--label", action="append", metavar="CODE", help="sensitivity label the consent names, e.g. MH, HIV (repeatable)")
    p.add_argument("--deny", action="store_true", help="record a DENY instead of a PERMIT")
    p.add_argument("--valid-days", type=float, help="valid from now for this many days")
    p.add_argument("--valid-from", metavar="WHEN", help="start of validity: YYYY-MM-DD or ISO 8601 time (UTC unless given)")
    p.add_argument("--valid-until", metavar="WHEN", help="end of validity (exclusive)")
    p.add_argument("--legal-basis", metavar="CODE", help="legal basis code, e.g. PIPL-29 or GDPR-9.2.a")
    p.add_argument("--legal-basis-text", metavar="TEXT", help="legal basis in words")
    p.add_argument("--supersedes", metavar="CONSENT_ID", help="consent id of an earlier grant this one replaces")
    p.add_argument("--for-patient", metavar="KEY",
                   help="sign as a delegate (--key is the delegate's key) for this patient: 64 hex digits, name+hash+key "
                        "or the patient's .pub file")
    add_client_options(p)
    p.set_defaults(func=cmd_grant)

    p = sub.add_parser("revoke", help="sign and submit the revocation of a consent, then verify it is in the log")
    p.add_argument("--key", default=_env(ENV_PATIENT_KEY_FILE), help=f"the patient's key file (default: ${ENV_PATIENT_KEY_FILE})")
    p.add_argument("--consent-id", required=True, help="the consent id (64 hex digits) printed by grant")
    p.add_argument("--reason", default="", help="why (free text)")
    p.add_argument("--for-patient", metavar="KEY",
                   help="sign as a delegate, or as the organisation that attested a delegation, for this patient")
    add_client_options(p)
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser("delegate", help="let a guardian or proxy key sign grants and/or revocations for a patient")
    p.add_argument("--key", default=_env(ENV_PATIENT_KEY_FILE),
                   help=f"the signing key file: the patient's, or the attesting organisation's (default: ${ENV_PATIENT_KEY_FILE})")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--delegate", metavar="KEY", help="the delegate's public key: 64 hex digits or name+hash+key")
    g.add_argument("--delegate-key-file", metavar="FILE", help="the delegate's key file (e.g. guardian.key.pub)")
    p.add_argument("--relationship", choices=["guardian", "proxy"], required=True)
    p.add_argument("--scope", action="append", required=True, metavar="SCOPE",
                   help="what the delegate may sign: grant, revoke or * (repeatable or comma-separated)")
    p.add_argument("--valid-days", type=float, help="valid from now for this many days")
    p.add_argument("--valid-from", metavar="WHEN", help="start of validity: YYYY-MM-DD or ISO 8601 time (UTC unless given)")
    p.add_argument("--valid-until", metavar="WHEN", help="end of validity (exclusive)")
    p.add_argument("--majority-date", metavar="WHEN", help="for a minor: the delegation ends when the patient comes of age")
    p.add_argument("--evidence", metavar="REF", help="where the authority is documented (required with --attested-by)")
    p.add_argument("--attested-by", metavar="PARTY_ID",
                   help="an organisation attests a guardian for a patient without a key: --key is the organisation's")
    p.add_argument("--for-patient", metavar="KEY",
                   help="the patient (with --attested-by): 64 hex digits, name+hash+key or the patient's .pub file")
    add_client_options(p)
    p.set_defaults(func=cmd_delegate)

    p = sub.add_parser("register-party", help="register an organisation (signed with the operator's key, i.e. the log key)")
    p.add_argument("--operator-key", required=True, metavar="FILE",
                   help="the operator's private key file (the log's signing key, mode 0600)")
    p.add_argument("--party-id", required=True, help="the organisation's id, e.g. insurer-1 (grants name it as org:<id>)")
    p.add_argument("--role", action="append", required=True, metavar="ROLE",
                   help=f"repeatable or comma-separated: {', '.join(vocab.ROLES)}")
    p.add_argument("--party-key-file", action="append", required=True, metavar="FILE",
                   help="the organisation's key file (its .pub, or the private key file; only the public key is "
                        "used); repeatable. Create one with: consent-ledger keygen org --out ID.key")
    p.add_argument("--display-name", required=True, help="the organisation's name for people")
    p.add_argument("--capability", action="append", metavar="CAPABILITY",
                   help=f"repeatable or comma-separated: {', '.join(vocab.CAPABILITIES)} (none by default; a newer "
                        "registration without it takes it away)")
    add_client_options(p)
    p.set_defaults(func=cmd_register_party)

    p = sub.add_parser("check-access", help="as an organisation, ask whether it may use a patient's data; verify the answer")
    add_patient_options(p)
    p.add_argument("--action", required=True, metavar="ACTION", help=f"one of {', '.join(vocab.ACTIONS)}")
    p.add_argument("--purpose", required=True, metavar="CODE", help="HL7 PurposeOfUse code, e.g. TREAT, HPAYMT, ETREAT")
    p.add_argument("--data", action="append", required=True, metavar="CLASS[:LABEL,...]",
                   help="a data class and the sensitivity labels the data carries, e.g. laboratory-results or "
                        "clinical-notes:MH (repeatable: each is decided on its own)")
    p.add_argument("--break-glass", action="store_true", help="emergency access (purpose ETREAT or BTG, role hospital)")
    p.add_argument("--reason", help="why the glass is broken (required with --break-glass; recorded and reviewed)")
    p.add_argument("--record", action="store_true", help="record an access event for this decision in the same call")
    p.add_argument("--max-clock-skew", type=float, default=MAX_CLOCK_SKEW_MS / 1000, metavar="SECONDS",
                   help="decisions are made for now: refuse the answer (exit 3) if the decision's time is further than "
                        "this from this machine's clock, or the consent state is dated later than that "
                        "(default: %(default)g)")
    p.add_argument("--max-state-age", type=float, default=DEFAULT_MAX_STATE_AGE_S, metavar="SECONDS",
                   help="refuse the answer (exit 3) if the signed consent state it rests on is older than this "
                        "(default: %(default)g; a ledger commits its state every 30 s by default, even when idle)")
    p.add_argument("--receipt-out", metavar="FILE", help="save the signed decision receipt as JSON ('-': stdout)")
    add_client_options(p)
    p.set_defaults(func=cmd_check_access)

    p = sub.add_parser("consents", help="a patient's consents and their current states, verified")
    add_patient_options(p)
    p.add_argument("--at", metavar="WHEN", help="states as of this time (default: now)")
    add_client_options(p)
    p.set_defaults(func=cmd_consents)

    p = sub.add_parser("who-asked", help="the access events about a patient: who asked, when, for what, the decision")
    add_patient_options(p)
    add_client_options(p)
    p.set_defaults(func=cmd_who_asked)

    p = sub.add_parser("reviews", help="the break-glass review queue (privacy officer): break-glass accesses and reviews")
    p.add_argument("--unreviewed", action="store_true", help="only the accesses not reviewed yet")
    add_client_options(p)
    p.set_defaults(func=cmd_reviews)

    p = sub.add_parser("review", help="record the review of a break-glass access (signed with an operator key)")
    p.add_argument("index", type=_index, metavar="INDEX", help="the break-glass access event's index (see: reviews)")
    p.add_argument("--outcome", required=True, choices=payloads.REVIEW_OUTCOMES)
    p.add_argument("--notes", default="", help="what was checked, what follows (free text, recorded in the log)")
    p.add_argument("--key", required=True, metavar="FILE", help="an operator's private key file (mode 0600)")
    add_client_options(p)
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("erase", help="erase an entry's body, recording why (signed with an operator key)")
    p.add_argument("index", type=_index, metavar="INDEX")
    p.add_argument("--reason", required=True, help="why: retention period over, entered in error, ...")
    p.add_argument("--key", required=True, metavar="FILE", help="an operator's private key file (mode 0600)")
    add_client_options(p)
    p.set_defaults(func=cmd_erase)

    p = sub.add_parser("watch", help="print entries as they are integrated: about a patient, or revocations for an organisation")
    add_patient_options(p)
    p.add_argument("--revocations", action="store_true", help="watch revocations of consents granted to --as PARTY")
    p.add_argument("--count", type=int, metavar="N", help="stop after N entries")
    p.add_argument("--timeout", dest="watch_timeout", type=float, metavar="SECONDS",
                   help="stop after this many seconds (default: watch until Ctrl-C)")
    add_client_options(p, call_timeout=False)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("export-consent", help="export a consent entry with its proof as a JSON bundle anyone can verify offline")
    p.add_argument("index", type=_index, metavar="INDEX")
    p.add_argument("--out", required=True, metavar="FILE", help="bundle file to write ('-': stdout)")
    add_client_options(p)
    p.set_defaults(func=cmd_export_consent)

    p = sub.add_parser("verify-bundle", help="verify a consent bundle offline with the log key")
    p.add_argument("file", metavar="FILE")
    add_log_key_options(p)
    add_witness_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify_bundle)

    p = sub.add_parser("verify-receipt", help="verify a signed decision receipt offline with the log key")
    p.add_argument("file", metavar="FILE")
    add_log_key_options(p)
    add_witness_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify_receipt)

    p = sub.add_parser("verify-evidence", help="check a split-view evidence file with the log key alone")
    p.add_argument("file", metavar="FILE")
    add_log_key_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify_evidence)

    p = sub.add_parser("import", help="bulk-load a file of signed envelopes (JSON Lines), every answer verified")
    bulk_import.add_arguments(p)
    add_client_options(p)
    p.set_defaults(func=lambda a: bulk_import.cmd_import(a, connect=connect, emit=emit))

    p = sub.add_parser("get", help="fetch an entry, verify it, and show its decoded payload")
    p.add_argument("index", type=_index, metavar="INDEX")
    add_client_options(p)
    p.set_defaults(func=cmd_get)

    p = sub.add_parser("entries", help="fetch and verify the entries START <= index < END")
    p.add_argument("start", type=_index, metavar="START")
    p.add_argument("end", type=_index, metavar="END")
    add_client_options(p)
    p.set_defaults(func=cmd_entries)

    p = sub.add_parser(
        "audit",
        help="replay the log: verify every entry and signature, recompute every StateCommit's map root",
    )
    p.add_argument("--resume-file", metavar="FILE", help="save progress here and resume from it on the next run")
    p.add_argument("--end", type=_index, default=None, help="stop before this index (default: the latest checkpoint)")
    add_client_options(p)
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("checkpoint", help="show the latest checkpoint, verified and consistent with the last one seen")
    p.add_argument("--save", metavar="FILE", help="write the signed checkpoint note to FILE")
    p.add_argument("--show-note", action="store_true", help="print the signed note as well")
    add_client_options(p)
    p.set_defaults(func=cmd_checkpoint)

    p = sub.add_parser("consistency", help="verify the latest checkpoint is consistent with the saved one or an older note")
    p.add_argument("--old-note", metavar="FILE", help="an older signed checkpoint note (e.g. from checkpoint --save)")
    add_client_options(p)
    p.set_defaults(func=cmd_consistency)

    p = sub.add_parser("verify-note", help="verify a signed checkpoint note offline with the log key")
    p.add_argument("file", metavar="FILE")
    add_log_key_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify_note)

    p = sub.add_parser("health", help="gRPC health check: exit 0 when the server is SERVING")
    add_connection_options(p)
    p.add_argument("--service", default="", help="service name to check (default: the whole server)")
    p.add_argument("--json", action="store_true")
    # A health check gives up sooner than a client call.
    p.set_defaults(func=cmd_health, timeout=5.0)

    # Commands kept in their own modules (registered here, dispatched through func like the rest).
    from consent_ledger.cli_disclosures import add_disclosures_command
    from consent_ledger.cli_fhir import add_fhir_commands

    add_fhir_commands(sub)
    add_disclosures_command(sub)
    return parser


def connection_hint(args: argparse.Namespace, details: str) -> str:
    """What to try when the ledger could not be reached, from what gRPC said and the options given: a certificate
    problem is not solved by --insecure, and --insecure against a TLS server is the problem itself."""
    server = getattr(args, "server", "?")
    insecure = bool(getattr(args, "insecure", False))
    text = details.lower()
    if "hostname verification" in text or "peer name" in text or "no match found for server name" in text:
        return (f"the server's certificate does not name {server.rsplit(':', 1)[0]}: connect by a name in its "
                "certificate, or give --tls-server-name NAME")
    if "certificate_verify_failed" in text or "certificate verify failed" in text:
        return ("the server's certificate is not issued by a CA this client trusts: give --ca-cert with the CA "
                "certificate that issued it")
    if "wrong_version_number" in text and not insecure:
        return f"the server at {server} does not speak TLS: a development server needs --insecure"
    if "connection refused" in text or "failed to connect to remote host" in text or "name resolution" in text:
        return f"is the ledger running at {server}?"
    if insecure:
        return (f"is the ledger running at {server}? If it serves TLS, drop --insecure and give --ca-cert (and "
                "--client-cert/--client-key when it requires client certificates)")
    if "socket closed" in text and not getattr(args, "client_cert", None):
        return (f"the server at {server} closed the connection: a server with mutual TLS requires a client "
                "certificate (--client-cert and --client-key); a development server needs --insecure")
    if "socket closed" in text:
        return (f"the server at {server} closed the connection: is the client certificate issued by the CA it "
                "trusts for clients?")
    return f"is the ledger running at {server}? (a development server needs --insecure)"


def _fail(args: argparse.Namespace | None, message: str, status: int, *, kind: str, **extra: Any) -> int:
    """Report an error: one line (or block) on stderr, or with --json one JSON document on stdout with the same
    message, what kind of error it was and the exit status."""
    if args is not None and getattr(args, "json", False):
        doc = {"error": {"kind": kind, "message": message, "exit_status": status, **extra}}
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(f"consent-ledger: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        _witness_defaults(args)
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as a tool killed by SIGPIPE would, and keep Python
        # from complaining when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except grpc.RpcError as e:
        code = e.code() if hasattr(e, "code") else None
        details = e.details() if hasattr(e, "details") else str(e)
        name = code.name if code is not None else "UNKNOWN"
        hint = connection_hint(args, details or "") if code is grpc.StatusCode.UNAVAILABLE else ""
        message = f"{name}: {details}" + (f"\n  ({hint})" if hint else "")
        return _fail(args, message, EXIT_ERROR, kind="grpc", code=name, details=details, hint=hint or None)
    except InconsistentCheckpoints as e:
        evidence = (
            "VERIFICATION FAILED: the log showed two checkpoints that cannot both be true (a split view).\n"
            "Keep this evidence and give it to an auditor.\n"
            f"--- smaller checkpoint ---\n{e.smaller.decode('utf-8', 'replace')}"
            f"--- larger checkpoint ---\n{e.larger.decode('utf-8', 'replace')}"
            f"--- consistency proof ---\n" + "\n".join(base64.b64encode(h).decode() for h in e.proof)
        )
        if e.evidence_path:
            evidence += (
                f"\nevidence file written: {e.evidence_path}\n"
                f"  (anyone can check it with the log key alone: consent-ledger verify-evidence {e.evidence_path} "
                "--log-key-file LOG.pub)"
            )
        return _fail(
            args, evidence, EXIT_VERIFICATION, kind="split_view",
            smaller_checkpoint=e.smaller.decode("utf-8", "replace"), larger_checkpoint=e.larger.decode("utf-8", "replace"),
            consistency_proof=[base64.b64encode(h).decode() for h in e.proof],
            evidence_path=str(e.evidence_path) if e.evidence_path else None,
        )
    except UnknownVerifier as e:
        return _fail(
            args,
            f"verification failed: the checkpoint is not signed by the pinned log key ({e}); "
            "check --log-key/--log-key-file",
            EXIT_VERIFICATION,
            kind="verification",
        )
    except StaleEvidence as e:
        return _fail(
            args,
            f"verification failed: {e}\n  (a ledger commits its consent state every 30 s by default, even when idle: "
            "older state means the server is behind or holding changes back; --max-state-age SECONDS accepts older)",
            EXIT_VERIFICATION,
            kind="verification",
        )
    except IncompleteEvidence as e:
        return _fail(
            args,
            f"verification failed: {e}\n  (the server left out or added consents compared with the consent state "
            "it signed: do not act on this decision)",
            EXIT_VERIFICATION,
            kind="verification",
        )
    except VerificationError as e:
        return _fail(args, f"verification failed: {e}", EXIT_VERIFICATION, kind="verification")
    except ConsentLedgerError as e:
        return _fail(args, str(e), EXIT_ERROR, kind="error")
    except OSError as e:
        where = f" {e.filename}" if e.filename else ""
        return _fail(args, f"{e.strerror or e}{where}", EXIT_ERROR, kind="os")
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
