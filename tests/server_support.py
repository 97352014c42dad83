"""A real ledger server on port 0, run in its own thread and event loop so tests can use the sync client."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.note import Signer, format_verifier_key
from consent_ledger.service import RunningService, ServiceConfig, start_service

LOG_NAME = "ledger.test/log"
LOG_SEED = bytes(range(32))


def log_signer() -> Signer:
    return Signer(LOG_NAME, Ed25519PrivateKey.from_seed(LOG_SEED))


def log_verifier_key() -> str:
    s = log_signer()
    return format_verifier_key(s.name, s.public_key)


class ServerThread:
    def __init__(self, config: ServiceConfig, signer: Signer) -> None:
        self.config = config
        self.signer = signer
        self.loop = asyncio.new_event_loop()
        self.service: RunningService | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="ledger-server", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            self.service = await start_service(self.config, self.signer)
        except BaseException as e:  # noqa: BLE001 - reported to the starting thread
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.service.stop(grace=0.5)

    def start(self) -> int:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        assert self.service is not None
        return self.service.port

    @property
    def target(self) -> str:
        assert self.service is not None
        return f"127.0.0.1:{self.service.port}"

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)


@contextmanager
def running_server(database_url: str, **config: object) -> Iterator[ServerThread]:
    server = ServerThread(
        ServiceConfig(database_url=database_url, listen="127.0.0.1:0", insecure=True, **config),  # type: ignore[arg-type]
        log_signer(),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
