"""Break-glass review queue and erasures: break-glass events, their reviews, and which Erasure entry erased a body.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

Written by hand; see consent_ledger/storage/schema.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HASH = sa.LargeBinary().with_variant(mysql.VARBINARY(32), "mysql", "mariadb")
MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "break_glass_events",
        sa.Column("idx", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("patient", HASH, nullable=False),
        sa.Column("party_id", sa.String(64), nullable=False),
        sa.Column("integrated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("idx", name="pk_break_glass_events"),
        **MYSQL,
    )
    op.create_table(
        "break_glass_reviews",
        sa.Column("event_idx", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("idx", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("event_idx", name="pk_break_glass_reviews"),
        sa.UniqueConstraint("idx", name="uq_break_glass_reviews_idx"),
        **MYSQL,
    )
    op.create_table(
        "erasures",
        sa.Column("idx", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("erasure_idx", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("idx", name="pk_erasures"),
        sa.UniqueConstraint("erasure_idx", name="uq_erasures_erasure_idx"),
        **MYSQL,
    )


def downgrade() -> None:
    op.drop_table("erasures")
    op.drop_table("break_glass_reviews")
    op.drop_table("break_glass_events")
