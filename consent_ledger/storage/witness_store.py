"""The witness's state: for each origin, the size, root hash and signed note it last cosigned.

Its own database (``consent-ledger witness --database-url``), not the ledger's: one table, created on open.
`advance` is the one atomic step of the protocol: a conditional UPDATE (or an INSERT for a first checkpoint) that
succeeds only while the stored size and root are the ones the request was checked against, so two racing
requests cannot roll the witness back.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, LargeBinary, MetaData, String, Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from consent_ledger.core.witness import Witnessed as WitnessRow
from consent_ledger.storage.engine import WRITE_OPTION, make_engine

__all__ = ["WitnessRow", "WitnessStore"]

metadata = MetaData()
witnessed = Table(
    "witness_checkpoints",
    metadata,
    Column("origin", String(255), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("note", LargeBinary, nullable=False),
)


class WitnessStore:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def latest(self, origin: str) -> WitnessRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(witnessed).where(witnessed.c.origin == origin)).first()
        return None if row is None else WitnessRow(row.origin, row.size, bytes(row.root_hash), bytes(row.note))

    def all(self) -> list[WitnessRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(witnessed).order_by(witnessed.c.origin)).all()
        return [WitnessRow(r.origin, r.size, bytes(r.root_hash), bytes(r.note)) for r in rows]

    def advance(self, expected: WitnessRow | None, new: WitnessRow) -> bool:
        """Store ``new`` if the origin's row is still ``expected`` (None: no row yet). False if another request
        changed it first."""
        if expected is None:
            try:
                with self.engine.connect().execution_options(**{WRITE_OPTION: True}) as conn, conn.begin():
                    conn.execute(
                        insert(witnessed).values(
                            origin=new.origin, size=new.size, root_hash=new.root_hash, note=new.note
                        )
                    )
            except IntegrityError:
                return False
            return True
        with self.engine.connect().execution_options(**{WRITE_OPTION: True}) as conn, conn.begin():
            result = conn.execute(
                update(witnessed)
                .where(
                    witnessed.c.origin == expected.origin,
                    witnessed.c.size == expected.size,
                    witnessed.c.root_hash == expected.root_hash,
                )
                .values(size=new.size, root_hash=new.root_hash, note=new.note)
            )
            return result.rowcount == 1
