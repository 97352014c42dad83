"""The witness's HTTP service: C2SP tlog-witness ``POST <prefix>/add-checkpoint`` (aiohttp), and ``GET /status``.

The rule is core.witness.witness_decision; this module reads the stored state, applies the rule, persists an
accepted checkpoint in one atomic step (the store's ``advance``: the old size is re-checked inside it) and only
then cosigns. A request that loses a race is decided again against the new state (a 409). Split views are written
as evidence files (core.splitview) into the evidence directory.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aiohttp import web

from consent_ledger.core.errors import InvalidInput
from consent_ledger.core.note import Signer, Verifier, cosign_checkpoint
from consent_ledger.core.splitview import format_split_view
from consent_ledger.core.witness import Accept, Reject, Witnessed, request_origin, witness_decision

__all__ = ["MAX_REQUEST_BYTES", "RunningWitness", "WitnessConfig", "WitnessStateStore", "start_witness"]

log = logging.getLogger(__name__)

# 63 proof lines of 45 bytes, the header and a note of at most 1 MB (core.note.MAX_NOTE_SIZE).
MAX_REQUEST_BYTES = 1_100_000
_RACE_RETRIES = 8


class WitnessStateStore(Protocol):
    def latest(self, origin: str) -> Witnessed | None: ...

    def all(self) -> list[Witnessed]: ...

    def advance(self, expected: Witnessed | None, new: Witnessed) -> bool: ...


@dataclass(frozen=True)
class WitnessConfig:
    signer: Signer
    logs: dict[str, Sequence[Verifier]]
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    evidence_dir: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None


@dataclass
class RunningWitness:
    runner: web.AppRunner
    port: int
    store: WitnessStateStore

    async def stop(self) -> None:
        await self.runner.cleanup()
        close = getattr(self.store, "close", None)
        if close is not None:
            close()


class _Witness:
    def __init__(self, config: WitnessConfig, store: WitnessStateStore) -> None:
        self.config = config
        self.store = store

    def decide(self, body: bytes) -> tuple[int, bytes, str]:
        """(status, body, content type) for one add-checkpoint body. Blocking (database)."""
        try:
            origin = request_origin(body.partition(b"\n\n")[2])
        except InvalidInput as e:
            return 400, f"{e}\n".encode(), "text/plain"
        for _ in range(_RACE_RETRIES):
            last = self.store.latest(origin) if origin in self.config.logs else None
            outcome = witness_decision(body, self.config.logs, last)
            if isinstance(outcome, Reject):
                if outcome.split_view is not None:
                    self._write_evidence(*outcome.split_view)
                if outcome.status == 409 and outcome.body:
                    return 409, outcome.body, outcome.content_type
                return outcome.status, f"{outcome.reason}\n".encode(), "text/plain"
            assert isinstance(outcome, Accept)
            cp = outcome.checkpoint
            new = Witnessed(cp.origin, cp.size, cp.root_hash, body.partition(b"\n\n")[2])
            unchanged = last is not None and last.size == cp.size and last.root_hash == cp.root_hash
            if unchanged or self.store.advance(last, new):
                line = cosign_checkpoint(
                    outcome.body, self.config.signer.name, self.config.signer.private_key, int(time.time())
                )
                return 200, line.encode("utf-8"), "text/plain; charset=utf-8"
            # Another request advanced the origin between our read and our write: decide again.
        return 503, b"too much contention\n", "text/plain"

    def _write_evidence(self, smaller: bytes, larger: bytes, proof: Sequence[bytes]) -> None:
        d = self.config.evidence_dir
        log.error("split view: two checkpoints of one log that cannot both be true")
        if d is None:
            return
        try:
            data = format_split_view(smaller, larger, list(proof))
        except InvalidInput as e:
            log.error("cannot write split-view evidence: %s", e)
            return
        d.mkdir(parents=True, exist_ok=True)
        # Named by the two notes: one file per pair of log-signed notes, however often a request repeats them
        # (anyone may send a signed note with a bad proof: the files stay bounded by the log's checkpoints).
        digest = hashlib.sha256(smaller + b"\0" + larger).hexdigest()[:32]
        path = d / f"split-view-{digest}.json"
        if path.exists():
            return
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        log.error("split-view evidence written to %s", path)

    async def add_checkpoint(self, request: web.Request) -> web.Response:
        body = await request.read()
        status, text, ctype = await asyncio.to_thread(self.decide, body)
        return web.Response(status=status, body=text, headers={"Content-Type": ctype})

    async def status(self, request: web.Request) -> web.Response:
        rows = await asyncio.to_thread(self.store.all)
        doc = {
            "witness": self.config.signer.name,
            "origins": [
                {"origin": o, "size": next((r.size for r in rows if r.origin == o), 0),
                 "root_hash": next((r.root_hash.hex() for r in rows if r.origin == o), "")}
                for o in sorted(self.config.logs)
            ],
        }
        return web.Response(text=json.dumps(doc, sort_keys=True) + "\n", content_type="application/json")


async def start_witness(config: WitnessConfig, store: WitnessStateStore) -> RunningWitness:
    """Serve the witness on ``config.listen_host:listen_port`` (port 0: any free port); TLS if a certificate is
    given. Request bodies above MAX_REQUEST_BYTES are refused (413) before they are read."""
    w = _Witness(config, store)
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app.router.add_post("/add-checkpoint", w.add_checkpoint)
    app.router.add_get("/status", w.status)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ctx = None
    if config.tls_cert is not None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(config.tls_cert), str(config.tls_key) if config.tls_key else None)
    site = web.TCPSite(runner, config.listen_host, config.listen_port, ssl_context=ctx)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return RunningWitness(runner, port, store)
