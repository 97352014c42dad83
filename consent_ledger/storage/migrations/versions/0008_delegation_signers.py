"""Signers: every key that signed an entry, with the first entry it signed (attested delegations are refused for
a patient whose key already signed one). Existing entries are indexed from their bodies, page by page.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-06

Written by hand; see consent_ledger/storage/schema.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from consent_ledger.core import payloads
from consent_ledger.core.envelope import parse_envelope

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HASH = sa.LargeBinary().with_variant(mysql.VARBINARY(32), "mysql", "mariadb")
MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}
PAGE = 1000


def upgrade() -> None:
    signers = op.create_table(
        "signers",
        sa.Column("signer", HASH, nullable=False),
        sa.Column("idx", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.PrimaryKeyConstraint("signer", name="pk_signers"),
        **MYSQL,
    )
    bind = op.get_bind()
    bodies = sa.table("bodies", sa.column("idx", sa.BigInteger()), sa.column("envelope", sa.LargeBinary()))
    first: dict[bytes, int] = {}
    after = -1
    while True:
        rows = bind.execute(
            sa.select(bodies.c.idx, bodies.c.envelope).where(bodies.c.idx > after).order_by(bodies.c.idx).limit(PAGE)
        ).all()
        if not rows:
            break
        for idx, envelope in rows:
            if envelope is None:
                continue  # erased: who signed it is gone with the body
            env = parse_envelope(bytes(envelope))
            if env.payload_type == payloads.STATE_COMMIT:
                continue
            for key in env.signers:
                first.setdefault(key, idx)
        after = rows[-1][0]
    if first:
        op.bulk_insert(signers, [{"signer": k, "idx": i} for k, i in first.items()])


def downgrade() -> None:
    op.drop_table("signers")
