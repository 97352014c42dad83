"""The nonces of signed requests in the log's database (app.ports.NonceStore), so that a replay is refused by a
restarted server and by every other server process on the same database (docs/design.md section 7)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError

from consent_ledger.app.ports import SpentNonce
from consent_ledger.storage.schema import request_nonces
from consent_ledger.storage.sql import SqlLogStore

# Expired rows are deleted at most this often (seconds), by whichever claim comes first.
PRUNE_EVERY_S = 10.0


class SqlNonceStore:
    """Claims nonces with one INSERT per batch; the primary key (signer, nonce) makes each claim atomic."""

    def __init__(self, store: SqlLogStore) -> None:
        self._store = store
        self._pruned = 0.0
        self._lock = threading.Lock()

    def claim(self, nonces: Sequence[SpentNonce], now_ms: int) -> list[bool]:
        firsts: dict[tuple[bytes, bytes], int] = {}
        for i, n in enumerate(nonces):
            firsts.setdefault((n.signer, n.nonce), i)
        # In key order, so two batches that share nonces (a replay sent to two replicas) lock rows in the same
        # order and queue rather than deadlock.
        firsts = dict(sorted(firsts.items()))
        rows = [
            {"signer": nonces[i].signer, "nonce": nonces[i].nonce, "expires_ms": nonces[i].expires_ms}
            for i in firsts.values()
        ]
        fresh: set[int] = set()
        try:
            if rows:
                with self._store.begin() as conn:
                    conn.execute(insert(request_nonces), rows)
            fresh = set(firsts.values())
        except IntegrityError:
            # Some nonce was used before (a replay, rare): the batch rolled back; claim one by one to find which.
            for i, row in zip(firsts.values(), rows, strict=True):
                try:
                    with self._store.begin() as conn:
                        conn.execute(insert(request_nonces), [row])
                    fresh.add(i)
                except IntegrityError:
                    pass
        self._prune(now_ms)
        return [i in fresh for i in range(len(nonces))]

    def _prune(self, now_ms: int) -> None:
        with self._lock:
            if time.monotonic() - self._pruned < PRUNE_EVERY_S:
                return
            self._pruned = time.monotonic()
        with self._store.begin() as conn:
            conn.execute(delete(request_nonces).where(request_nonces.c.expires_ms < now_ms))
