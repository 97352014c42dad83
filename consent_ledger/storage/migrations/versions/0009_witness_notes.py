"""The witnessed checkpoint: the newest checkpoint note with a quorum of witness cosignatures (one row).

Revision ID: 0009_witness
Revises: 0008
Create Date: 2026-12-06

Written by hand; see consent_ledger/storage/schema.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_witness"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "witnessed_checkpoint",
        sa.Column("id", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("note", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_witnessed_checkpoint"),
        **MYSQL,
    )


def downgrade() -> None:
    op.drop_table("witnessed_checkpoint")
