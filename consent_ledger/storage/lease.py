"""The sequencer lease in the database (migration 0010) and what a follower reads to catch up.

One row (id 1): holder, fencing token, the holder's address for forwarded submissions, expiry (milliseconds of
the replicas' clocks) and a count of the integrations written under it. Only portable SQL: conditional UPDATEs
whose row count says who won, and one INSERT for the first lease, so it works the same on SQLite, PostgreSQL,
MariaDB/MySQL and the distributed SQL engines that speak their protocols (no advisory locks).

- ``acquire``: ``UPDATE ... SET holder = me, token = token + 1 WHERE id = 1 AND expires_ms < now`` (or the first
  INSERT). Two replicas racing for an expired lease: the row lock serialises them, and the second one's WHERE no
  longer holds (the expiry moved), so exactly one gets row count 1.
- ``renew``: ``UPDATE ... SET expires_ms = now + ttl WHERE holder = me AND token = mine``.
- ``check_fence``: the first statement of every integration transaction of a replica:
  ``UPDATE ... SET commits = commits + 1 WHERE holder = me AND token = mine``; row count 0 raises Fenced and the
  transaction writes nothing. The row lock it takes is held to COMMIT, so a takeover waits for an integration in
  flight and every later integration of the old holder fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, event, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from consent_ledger.app.ports import Fence, Fenced, StateCommitRow
from consent_ledger.app.replica import LeaseRow
from consent_ledger.storage import schema

if TYPE_CHECKING:
    from consent_ledger.storage.sql import SqlLogStore

__all__ = ["SqlLease", "SqlFollowerRows", "bound_lock_holding", "check_fence"]

_lease = schema.sequencer_lease
LEASE_ID = 1
# How long taking the lease waits for an integration holding the lease row (then it tries again later).
_LOCK_WAIT_MS = 1000


def check_fence(conn: Connection, fence: Fence) -> None:
    """Inside an integration transaction: raise Fenced unless ``fence`` still holds the lease (see the module
    docstring). Locks the lease row until the transaction ends."""
    done = conn.execute(
        update(_lease)
        .where(_lease.c.id == LEASE_ID, _lease.c.holder == fence.holder, _lease.c.token == fence.token)
        .values(commits=_lease.c.commits + 1)
    ).rowcount
    if done != 1:
        raise Fenced(
            f"this replica's sequencer lease (token {fence.token}) was taken over by another replica: the batch was "
            "not written"
        )


def bound_lock_holding(store: SqlLogStore, seconds: float) -> None:
    """A replica's sessions: a transaction left idle (a leader paused inside an integration, holding the lease row)
    is ended by the server after ``seconds``, and a lock is waited for no longer than that, so a takeover never
    waits on a paused leader for long. PostgreSQL: ``idle_in_transaction_session_timeout``; MariaDB:
    ``idle_transaction_timeout`` and ``innodb_lock_wait_timeout`` (MySQL has the latter only). Applies to new
    connections: the pool is emptied."""
    ms = max(1000, int(seconds * 1000))
    engine = store.engine
    backend = engine.dialect.name
    if backend == "postgresql":
        statements = [f"SET idle_in_transaction_session_timeout = {ms}"]
    elif backend in ("mysql", "mariadb"):
        statements = [f"SET SESSION innodb_lock_wait_timeout = {max(1, ms // 1000)}",
                      f"SET SESSION idle_transaction_timeout = {max(1, ms // 1000)}"]  # fmt: skip
    else:
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        for sql in statements:
            cur = dbapi_conn.cursor()
            try:
                cur.execute(sql)
            except Exception:  # noqa: BLE001 - MySQL: no idle_transaction_timeout
                if backend == "postgresql":
                    raise
            finally:
                cur.close()
        if backend == "postgresql":
            dbapi_conn.commit()

    engine.dispose()


def _row(r: Any) -> LeaseRow:
    return LeaseRow(str(r.holder), int(r.token), str(r.address), int(r.expires_ms), int(r.commits))


def _bound_lock_wait(conn: Connection) -> None:
    backend = conn.dialect.name
    if backend == "postgresql":
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {_LOCK_WAIT_MS}")


class SqlLease:
    """The LeaseStore port (app/replica.py) over the store's database."""

    def __init__(self, store: SqlLogStore) -> None:
        self._store = store

    def read(self) -> LeaseRow | None:
        with self._store.connect() as conn:
            r = conn.execute(select(_lease).where(_lease.c.id == LEASE_ID)).first()
        return None if r is None else _row(r)

    def acquire(self, holder: str, address: str, now_ms: int, ttl_ms: int) -> LeaseRow | None:
        """Take the lease if it expired before ``now_ms`` (or was never taken): the new lease, else None."""
        try:
            with self._store.begin() as conn:
                _bound_lock_wait(conn)
                done = conn.execute(
                    update(_lease)
                    .where(_lease.c.id == LEASE_ID, _lease.c.expires_ms < now_ms)
                    .values(holder=holder, token=_lease.c.token + 1, address=address, expires_ms=now_ms + ttl_ms)
                ).rowcount
                if done == 1:
                    return _row(conn.execute(select(_lease).where(_lease.c.id == LEASE_ID)).one())
                if conn.execute(select(_lease.c.id).where(_lease.c.id == LEASE_ID)).first() is not None:
                    return None
        except DBAPIError as e:  # the row is locked by an integration in flight (lock timeout): try again later
            if "lock" in str(e.orig).lower():
                return None
            raise
        try:
            with self._store.begin() as conn:
                conn.execute(
                    insert(_lease).values(
                        id=LEASE_ID, holder=holder, token=1, address=address, expires_ms=now_ms + ttl_ms, commits=0
                    )
                )
        except IntegrityError:
            return None  # another replica took the first lease
        return LeaseRow(holder, 1, address, now_ms + ttl_ms, 0)

    def renew(self, fence: Fence, now_ms: int, ttl_ms: int) -> bool:
        """Extend the lease ``fence`` holds; False when it is no longer the lease (another replica took it)."""
        with self._store.begin() as conn:
            _bound_lock_wait(conn)
            done = conn.execute(
                update(_lease)
                .where(_lease.c.id == LEASE_ID, _lease.c.holder == fence.holder, _lease.c.token == fence.token)
                .values(expires_ms=now_ms + ttl_ms)
            ).rowcount
        return done == 1

    def release(self, fence: Fence) -> None:
        """Let the lease expire now (a replica stopping cleanly), if it is still ``fence``'s."""
        with self._store.begin() as conn:
            conn.execute(
                update(_lease)
                .where(_lease.c.id == LEASE_ID, _lease.c.holder == fence.holder, _lease.c.token == fence.token)
                .values(expires_ms=0)
            )


class SqlFollowerRows:
    """What a follower reads to follow the log written by the leader: the index rows of a range of entries (the
    ``extra`` rows the leader wrote with them, for the listeners of new entries) and a StateCommit by index."""

    def __init__(self, store: SqlLogStore) -> None:
        self._store = store

    def rows_between(self, start: int, end: int) -> Mapping[str, Sequence[Mapping[str, object]]]:
        t = schema
        out: dict[str, list[dict[str, object]]] = {}
        with self._store.connect() as conn:
            for table, col in (
                (t.consents, t.consents.c.idx),
                (t.access_events, t.access_events.c.idx),
                (t.parties, t.parties.c.idx),
                (t.state_commits, t.state_commits.c.idx),
                (t.break_glass_reviews, t.break_glass_reviews.c.idx),
                (t.erasures, t.erasures.c.erasure_idx),
            ):
                rows = conn.execute(select(table).where(col >= start, col < end).order_by(col)).mappings().all()
                if rows:
                    out[table.name] = [
                        {k: bytes(v) if isinstance(v, memoryview) else v for k, v in r.items()} for r in rows
                    ]
        return out

    def state_commit(self, index: int) -> StateCommitRow | None:
        sc = schema.state_commits
        with self._store.connect() as conn:
            r = conn.execute(select(sc).where(sc.c.idx == index)).first()
        return None if r is None else StateCommitRow(int(r.idx), bytes(r.map_root), int(r.batch_time_ms))
