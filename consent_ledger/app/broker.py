"""In-process fan-out of newly integrated entries to watchers (server-streaming RPCs).

The sequencer's integration thread publishes; each watcher owns a bounded asyncio queue on the server's event
loop. A watcher that falls too far behind is closed with an overflow marker rather than slowing the log down.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable, Iterable
from typing import Any

OVERFLOW = object()


class Broker:
    def __init__(self, loop: asyncio.AbstractEventLoop, *, queue_size: int = 1000) -> None:
        self._loop = loop
        self._queue_size = queue_size
        self._subs: dict[Hashable, set[asyncio.Queue[Any]]] = {}
        self._lock = threading.Lock()

    def subscribe(self, keys: Iterable[Hashable]) -> asyncio.Queue[Any]:
        """One queue receiving items published under any of ``keys``, each item once, in publish order."""
        q: asyncio.Queue[Any] = asyncio.Queue(self._queue_size)
        with self._lock:
            for key in keys:
                self._subs.setdefault(key, set()).add(q)
        return q

    def unsubscribe(self, keys: Iterable[Hashable], q: asyncio.Queue[Any]) -> None:
        with self._lock:
            for key in keys:
                subs = self._subs.get(key)
                if subs is not None:
                    subs.discard(q)
                    if not subs:
                        del self._subs[key]

    def subscribers(self, key: Hashable) -> int:
        """How many watchers listen under ``key`` (lets tests and the demo wait until a watch is live)."""
        with self._lock:
            return len(self._subs.get(key, ()))

    def publish_threadsafe(self, items: Iterable[tuple[Hashable, Any]]) -> None:
        """Deliver (key, item) pairs from any thread, in order. An item published under several keys that one
        queue watches reaches that queue once."""
        with self._lock:
            targets = [(list(self._subs.get(key, ())), item) for key, item in items if key in self._subs]
        if targets:
            self._loop.call_soon_threadsafe(self._deliver, targets)

    def _deliver(self, targets: list[tuple[list[asyncio.Queue[Any]], Any]]) -> None:
        sent: set[tuple[int, int]] = set()
        for queues, item in targets:
            for q in queues:
                if (id(q), id(item)) in sent or q.full():
                    continue
                sent.add((id(q), id(item)))
                q.put_nowait(OVERFLOW if q.qsize() == self._queue_size - 1 else item)
