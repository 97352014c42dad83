"""The nonces of signed requests in the database (storage/nonces.py): each claimed once, across stores on the same
database (server processes), atomically under concurrency, and pruned once expired. Every backend."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from consent_ledger.app.ports import SpentNonce
from consent_ledger.storage import open_store
from consent_ledger.storage import nonces as nonces_module
from consent_ledger.storage.nonces import SqlNonceStore
from consent_ledger.storage.schema import request_nonces

from .db_support import database_url, store  # noqa: F401 - fixtures

K1, K2 = b"\x01" * 32, b"\x02" * 32
NOW = 1_800_000_000_000


def _n(key: bytes, i: int, expires: int = NOW + 240_000) -> SpentNonce:
    return SpentNonce(key, i.to_bytes(16, "big"), expires)


def test_a_nonce_is_claimed_once_per_signer(store):  # noqa: F811
    nonces = SqlNonceStore(store)
    assert nonces.claim([_n(K1, 1), _n(K2, 1), _n(K1, 2)], NOW) == [True, True, True]
    # Replays, alone or in a batch with new nonces and with themselves.
    assert nonces.claim([_n(K1, 1)], NOW) == [False]
    assert nonces.claim([_n(K1, 3), _n(K2, 1), _n(K1, 3), _n(K1, 4)], NOW) == [True, False, False, True]
    assert nonces.claim([], NOW) == []


def test_another_store_on_the_same_database_sees_the_nonces(database_url):  # noqa: F811
    a, b = open_store(database_url), open_store(database_url)
    try:
        assert SqlNonceStore(a).claim([_n(K1, 7)], NOW) == [True]
        assert SqlNonceStore(b).claim([_n(K1, 7), _n(K1, 8)], NOW) == [False, True]
    finally:
        a.close()
        b.close()


def test_racing_claims_of_one_nonce_accept_exactly_one(database_url):  # noqa: F811
    stores = [open_store(database_url) for _ in range(4)]
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(len(stores))

    def claim(s) -> None:  # type: ignore[no-untyped-def]
        start.wait()
        got = SqlNonceStore(s).claim([_n(K2, i) for i in range(20)], NOW)
        with lock:
            results.extend(got)

    threads = [threading.Thread(target=claim, args=(s,)) for s in stores]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for s in stores:
            s.close()
    assert len(results) == 80 and results.count(True) == 20


def test_expired_nonces_are_pruned(store, monkeypatch):  # noqa: F811
    monkeypatch.setattr(nonces_module, "PRUNE_EVERY_S", 0.0)
    nonces = SqlNonceStore(store)
    nonces.claim([_n(K1, 1, expires=NOW - 1), _n(K1, 2, expires=NOW + 1)], NOW - 10)
    nonces.claim([_n(K1, 3, expires=NOW + 5)], NOW)
    with store.connect() as conn:
        left = {r.nonce for r in conn.execute(select(request_nonces.c.nonce))}
        assert conn.execute(select(func.count()).select_from(request_nonces)).scalar() == 2
    assert left == {(2).to_bytes(16, "big"), (3).to_bytes(16, "big")}
