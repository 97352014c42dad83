"""Delegations: delegation entries by (patient, delegate).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Written by hand; see consent_ledger/storage/schema.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HASH = sa.LargeBinary().with_variant(mysql.VARBINARY(32), "mysql", "mariadb")
MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "delegations",
        sa.Column("idx", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("patient", HASH, nullable=False),
        sa.Column("delegate", HASH, nullable=False),
        sa.Column("delegation_id", sa.String(64), nullable=False),
        sa.Column("integrated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("idx", name="pk_delegations"),
        **MYSQL,
    )
    op.create_index("ix_delegations_patient_delegate", "delegations", ["patient", "delegate"])


def downgrade() -> None:
    op.drop_table("delegations")
