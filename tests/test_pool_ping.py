"""Pooled connections are pinged only after they have been idle (storage.engine.PING_IDLE_S): one cut while idle is
replaced before a caller gets it, one cut a moment after its last use fails that one read with UNAVAILABLE and the
next read connects afresh. A real TCP cut (tests/fault_proxy.py), on PostgreSQL and MariaDB."""

from __future__ import annotations

import os
import time

import pytest

from consent_ledger.app.errors import StorageUnavailable
from consent_ledger.storage import engine as engine_mod
from consent_ledger.storage import open_store

from .db_support import BACKENDS, MYSQL_ENV, POSTGRES_ENV, reset_database
from .fault_proxy import proxied


@pytest.fixture(params=[b for b in BACKENDS if b.id != "sqlite"])  # SQLite has no connections to cut
def networked_url(request: pytest.FixtureRequest) -> str:
    env = POSTGRES_ENV if request.param == "postgres" else MYSQL_ENV
    url = os.environ.get(env)
    if not url:
        pytest.skip(f"{env} is not set")
    reset_database(url)
    return url


def test_an_idle_connection_cut_meanwhile_is_replaced_before_use(networked_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(engine_mod, "PING_IDLE_S", 0.3)
    with proxied(networked_url) as (proxy, url):
        store = open_store(url, pool_size=1)
        try:
            assert store.tree_size() == 0
            proxy.refuse(True)  # cut the pooled connection...
            proxy.refuse(False)
            time.sleep(0.5)  # ...and let it sit idle past the window: the checkout's ping finds it dead
            assert store.tree_size() == 0
            assert proxy.accepted == 2  # the first connection, and the one that replaced it
        finally:
            store.close()


def test_a_connection_cut_right_after_use_fails_one_read_then_the_pool_reconnects(networked_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(engine_mod, "PING_IDLE_S", 60.0)
    with proxied(networked_url) as (proxy, url):
        store = open_store(url, pool_size=1)
        try:
            assert store.tree_size() == 0
            proxy.refuse(True)
            proxy.refuse(False)
            with pytest.raises(StorageUnavailable):
                store.tree_size()  # no ping inside the window: the read itself meets the cut
            assert store.tree_size() == 0  # the failed connection was dropped; a new one answers
        finally:
            store.close()
