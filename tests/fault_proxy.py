"""A TCP proxy between the ledger and its database that injects faults (issue 10): it can cut a connection just
before or just after the COMMIT of the log's batch transaction, refuse or cut every connection (an outage),
stall (forward nothing while keeping connections open) and add latency to every chunk in both directions.

It runs its own asyncio loop in a thread, listens on 127.0.0.1 port 0 and forwards to the database's host and
port. It understands just enough of the wire protocols to spot a COMMIT in the client-to-server stream:
PostgreSQL (a simple-protocol Query or an extended-protocol Parse whose text is ``COMMIT``) and MySQL
(COM_QUERY ``COMMIT``). "The batch transaction" is a transaction whose statements contained a marker (by default
``INSERT INTO checkpoints``, the last write of every batch that appends entries), so reads and other writes pass.

- ``arm("after")``: forward that COMMIT, let the database commit it, then drop its reply and close both sides: the
  client sees a broken connection although the transaction committed (the reply was lost).
- ``arm("before")``: close both sides instead of forwarding the COMMIT: the database rolls the transaction back.
- ``hold_after(marker, n)``: a client stopped in the middle of what it sends, as a paused process (SIGSTOP) or a
  network partition leaves it: after the chunk holding ``marker``, forward ``n`` more bytes of that connection's
  client-to-server stream and then nothing more (the connection stays open, replies still flow), so the database
  sees a statement, a COPY or a pipeline cut off at an arbitrary byte.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.engine import make_url

__all__ = ["FaultProxy", "proxied"]

DEFAULT_MARKER = b"INSERT INTO checkpoints"


def _is_commit(chunk: bytes) -> bool:
    """Whether a client-to-server chunk carries a COMMIT (PostgreSQL Query/Parse or MySQL COM_QUERY)."""
    if b"COMMIT\x00" in chunk:  # PostgreSQL: Q<len>COMMIT\0 or P<len><name>\0COMMIT\0...
        i = chunk.find(b"COMMIT\x00")
        return i >= 5 and (chunk[i - 5 : i - 4] == b"Q" or b"P" in chunk[max(0, i - 64) : i])
    # MySQL: 3-byte length, sequence id, COM_QUERY (0x03), the statement.
    return len(chunk) >= 11 and chunk[4] == 0x03 and chunk[5:].strip().upper() == b"COMMIT"


def _is_rollback(chunk: bytes) -> bool:
    return b"ROLLBACK" in chunk.upper()


@dataclass(eq=False)
class _Pair:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    marked: bool = False
    drop_reply: bool = False
    hold_left: int | None = None  # hold_after: bytes still forwarded before the client's stream stops

    def close(self) -> None:
        for w in (self.client, self.server):
            try:
                w.transport.abort()
            except Exception:  # noqa: BLE001 - already closed
                pass


class FaultProxy:
    """See the module docstring. Controls are thread-safe; counters are read from any thread."""

    def __init__(self, upstream_host: str, upstream_port: int, *, marker: bytes = DEFAULT_MARKER) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.marker = marker
        self.latency_s = 0.0
        self.accepted = 0  # connections accepted over the proxy's life
        self.commit_faults = 0  # faults fired
        self._refusing = False
        self._armed: str | None = None
        self._hold: tuple[bytes, int] | None = None
        self.counted: dict[bytes, int] = {}  # count(marker): client-to-server chunks that held it
        self._held = threading.Event()
        self._fired = threading.Event()
        self._pairs: set[_Pair] = set()
        self._loop = asyncio.new_event_loop()
        self._flowing: asyncio.Event | None = None
        self._server: asyncio.base_events.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="fault-proxy", daemon=True)
        self.port = 0

    # -- life cycle ---------------------------------------------------------------------------------------

    def start(self) -> int:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self.port

    def stop(self) -> None:
        if self._thread.is_alive():
            # Close every connection while the loop still runs (an aborted transport closes its socket in a later
            # loop iteration): the database then ends their sessions now, not when the sockets are collected.
            self._call(self._cut_all)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            for p in list(self._pairs):
                p.close()
            self._server.close()
            self._loop.close()

    def url(self, database_url: str) -> str:
        """``database_url`` pointed at the proxy instead of the database."""
        return make_url(database_url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    # -- controls -----------------------------------------------------------------------------------------

    def _call(self, fn: object, *args: object) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                fn(*args)  # type: ignore[operator]
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)

    def arm(self, when: str) -> threading.Event:
        """Cut the next batch transaction's connection ``before`` or ``after`` its COMMIT; returns an Event set
        when the fault fired."""
        assert when in ("before", "after")
        self._fired.clear()
        self._armed = when
        return self._fired

    def hold_after(self, marker: bytes, extra: int) -> threading.Event:
        """On the next connection whose client sends ``marker``: forward that chunk and ``extra`` more bytes, then
        stop forwarding from its client for good (see the module docstring). Returns an Event set when it holds."""
        self._held.clear()
        self._hold = (marker, extra)
        return self._held

    def count(self, marker: bytes) -> None:
        """Count the client-to-server chunks holding ``marker`` from now on (``counted[marker]``)."""
        self.counted.setdefault(marker, 0)

    def refuse(self, on: bool = True) -> None:
        """An outage: cut every open connection and close new ones at once (or end the outage)."""
        self._refusing = on
        if on:
            self._call(self._cut_all)

    def stall(self, on: bool = True) -> None:
        """Forward nothing (connections stay open) until stall(False)."""
        assert self._flowing is not None
        self._call(self._flowing.clear if on else self._flowing.set)

    @property
    def active(self) -> int:
        return len(self._pairs)

    def _cut_all(self) -> None:
        for p in list(self._pairs):
            p.close()
        self._pairs.clear()

    # -- forwarding ---------------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        pair = _Pair(writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pump(reader, pair, upward=True), self._pump(up_reader, pair, upward=False))
        finally:
            pair.close()
            self._pairs.discard(pair)

    async def _pump(self, reader: asyncio.StreamReader, pair: _Pair, *, upward: bool) -> None:
        assert self._flowing is not None
        out = pair.server if upward else pair.client
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                await self._flowing.wait()
                if self.latency_s:
                    await asyncio.sleep(self.latency_s)
                    await self._flowing.wait()
                if self._refusing:
                    break
                if upward and pair.hold_left is not None:
                    chunk, pair.hold_left = chunk[: pair.hold_left], pair.hold_left - len(chunk)
                    if pair.hold_left <= 0:
                        if chunk:
                            out.write(chunk)
                            await out.drain()
                        self._held.set()
                        while await reader.read(65536):  # stopped: nothing more reaches the database
                            pass
                        break
                if upward:
                    for m in self.counted:
                        if m in chunk:
                            self.counted[m] += 1
                if upward and self._hold is not None and self._hold[0] in chunk:
                    pair.hold_left, self._hold = self._hold[1], None
                if upward:
                    if self.marker in chunk:
                        pair.marked = True
                    if pair.marked and _is_commit(chunk):
                        pair.marked = False
                        if self._armed == "before":
                            self._fire()
                            break
                        if self._armed == "after":
                            self._armed = None
                            pair.drop_reply = True
                    elif _is_rollback(chunk):
                        pair.marked = False
                elif pair.drop_reply:  # the COMMIT's reply: lost on its way to the client
                    self._fire()
                    break
                out.write(chunk)
                await out.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            pair.close()

    def _fire(self) -> None:
        self._armed = None
        self.commit_faults += 1
        self._fired.set()


@contextmanager
def proxied(database_url: str) -> Iterator[tuple[FaultProxy, str]]:
    """A started FaultProxy in front of the database of ``database_url``, and the URL through it."""
    u = make_url(database_url)
    default_port = 5432 if u.get_backend_name() == "postgresql" else 3306
    proxy = FaultProxy(u.host or "127.0.0.1", u.port or default_port)
    proxy.start()
    try:
        yield proxy, proxy.url(database_url)
    finally:
        proxy.stop()
