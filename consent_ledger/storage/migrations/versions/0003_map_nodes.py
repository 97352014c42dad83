"""Consent-state map: map_nodes (the sparse Merkle map's nodes by position).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

Written by hand; see consent_ledger/storage/schema.py and consent_ledger/core/smt.py for the rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HASH = sa.LargeBinary().with_variant(mysql.VARBINARY(32), "mysql", "mariadb")
MAP_PATH = sa.LargeBinary().with_variant(mysql.VARBINARY(33), "mysql", "mariadb")
MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "map_nodes",
        sa.Column("path", MAP_PATH, nullable=False),
        sa.Column("left_hash", HASH, nullable=True),
        sa.Column("right_hash", HASH, nullable=True),
        sa.Column("leaf_key", HASH, nullable=True),
        sa.Column("value_hash", HASH, nullable=True),
        sa.PrimaryKeyConstraint("path", name="pk_map_nodes"),
        **MYSQL,
    )


def downgrade() -> None:
    op.drop_table("map_nodes")
