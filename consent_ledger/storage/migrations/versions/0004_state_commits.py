"""State commits: where each StateCommit entry is, with its map root and batch time.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

Written by hand; see consent_ledger/storage/schema.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HASH = sa.LargeBinary().with_variant(mysql.VARBINARY(32), "mysql", "mariadb")
MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "state_commits",
        sa.Column("idx", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("map_root", HASH, nullable=False),
        sa.Column("batch_time_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("idx", name="pk_state_commits"),
        **MYSQL,
    )


def downgrade() -> None:
    op.drop_table("state_commits")
