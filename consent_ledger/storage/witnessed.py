"""The ledger's witnessed checkpoint (migration 0009): the newest note with a quorum of witness cosignatures."""

from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from consent_ledger.storage.schema import witnessed_checkpoint as table
from consent_ledger.storage.sql import SqlLogStore

__all__ = ["SqlWitnessedCheckpoint"]


class SqlWitnessedCheckpoint:
    def __init__(self, store: SqlLogStore) -> None:
        self._store = store

    def load(self) -> tuple[int, bytes] | None:
        """(size, note) of the stored witnessed checkpoint, or None."""
        with self._store.connect() as conn:
            row = conn.execute(select(table.c.size, table.c.note).where(table.c.id == 1)).first()
        return None if row is None else (row.size, bytes(row.note))

    def save(self, size: int, note: bytes) -> None:
        """Store (size, note) unless a larger witnessed checkpoint is stored already."""
        with self._store.begin() as conn:
            done = conn.execute(
                update(table).where(table.c.id == 1, table.c.size < size).values(size=size, note=note)
            ).rowcount
            if done:
                return
            exists = conn.execute(select(table.c.size).where(table.c.id == 1)).first()
        if exists is None:
            try:
                with self._store.begin() as conn:
                    conn.execute(insert(table).values(id=1, size=size, note=note))
            except IntegrityError:
                self.save(size, note)
