"""A real C2SP tlog-witness (consent_ledger.server.witness_http) on loopback, in its own thread and event loop;
HTTP requests to it with urllib; an independent cosignature check from the C2SP text with PyNaCl; small logs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nacl.exceptions
import nacl.signing

from consent_ledger.core.checkpoint import Checkpoint, format_checkpoint, sign_checkpoint
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.note import Signer, Verifier
from consent_ledger.core.witness import WitnessKey, format_add_checkpoint, format_witness_key
from consent_ledger.server.witness_http import RunningWitness, WitnessConfig
from consent_ledger.service import start_witness_service

from . import merkle_reference


class WitnessThread:
    def __init__(
        self,
        name: str,
        logs: dict[str, Sequence[Verifier]],
        database_url: str,
        evidence_dir: Path | None = None,
        port: int = 0,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.signer = Signer(name, Ed25519PrivateKey.from_seed(hashlib.sha256(name.encode()).digest()))
        self.config = WitnessConfig(
            self.signer, logs, "127.0.0.1", port, evidence_dir, *(tls if tls is not None else (None, None))
        )
        self.database_url = database_url
        self.loop = asyncio.new_event_loop()
        self.running: RunningWitness | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name=f"witness-{name}", daemon=True)

    @property
    def key(self) -> WitnessKey:
        return WitnessKey(self.signer.name, self.signer.public_key)

    @property
    def verifier_key(self) -> str:
        return format_witness_key(self.key)

    @property
    def url(self) -> str:
        assert self.running is not None
        return f"http://127.0.0.1:{self.running.port}"

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            self.running = await start_witness_service(self.config, self.database_url)
        except BaseException as e:  # noqa: BLE001 - reported to the starting thread
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.running.stop()

    def start(self) -> WitnessThread:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)

    def __enter__(self) -> WitnessThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes


def post(url: str, body: bytes, path: str = "/add-checkpoint", context: ssl.SSLContext | None = None) -> Response:
    req = urllib.request.Request(url + path, data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return Response(resp.status, resp.headers.get("Content-Type", ""), resp.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, e.headers.get("Content-Type", ""), e.read())


def get(url: str, path: str) -> Response:
    with urllib.request.urlopen(url + path, timeout=10) as resp:
        return Response(resp.status, resp.headers.get("Content-Type", ""), resp.read())


@dataclass
class SmallLog:
    """A small log: its signer, leaves and signed checkpoints at any size."""

    origin: str
    leaves: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.signer = Signer(self.origin, Ed25519PrivateKey.from_seed(hashlib.sha256(self.origin.encode()).digest()))

    @property
    def verifier(self) -> Verifier:
        return self.signer.verifier()

    def grow(self, n: int, tag: bytes = b"") -> None:
        self.leaves += [tag + b"leaf-%d" % (len(self.leaves) + i) for i in range(n)]

    def root(self, size: int) -> bytes:
        return merkle_reference.mth(self.leaves[:size])

    def note(self, size: int) -> bytes:
        return sign_checkpoint(Checkpoint(self.origin, size, self.root(size)), self.signer)

    def body(self, size: int) -> str:
        return format_checkpoint(Checkpoint(self.origin, size, self.root(size)))

    def proof(self, old: int, new: int) -> list[bytes]:
        if old == 0 or old == new:
            return []
        return merkle_reference.consistency(old, self.leaves[:new])

    def request(self, old: int, new: int) -> bytes:
        return format_add_checkpoint(old, self.proof(old, new), self.note(new))


def independent_cosignature_check(line: bytes, witness_name: str, public_key: bytes, body: str) -> int:
    """Check a tlog-cosignature/v1 line from the C2SP text alone (PyNaCl, no consent_ledger code); its time.

    c2sp.org/tlog-cosignature: the signed message is "cosignature/v1\\ntime <decimal>\\n" followed by the
    checkpoint body; the signature line is "— <name> <base64(key ID || timestamp || signature)>" with key ID
    SHA-256(<name> || "\\n" || 0x04 || public key)[:4] and an 8-byte big-endian timestamp."""
    text = line.decode("utf-8")
    assert text.endswith("\n") and text.count("\n") == 1
    prefix = "\u2014 " + witness_name + " "
    assert text.startswith(prefix), text
    raw = base64.b64decode(text[len(prefix):-1], validate=True)
    assert len(raw) == 4 + 8 + 64
    key_id = hashlib.sha256(witness_name.encode() + b"\n" + b"\x04" + public_key).digest()[:4]
    assert raw[:4] == key_id
    timestamp = int.from_bytes(raw[4:12], "big")
    message = b"cosignature/v1\ntime " + str(timestamp).encode() + b"\n" + body.encode("utf-8")
    try:
        nacl.signing.VerifyKey(public_key).verify(message, raw[12:])
    except nacl.exceptions.BadSignatureError:
        raise AssertionError("cosignature does not verify") from None
    return timestamp
