"""The sequencer lease: which replica integrates, until when, and its fencing token (one row).

Revision ID: 0010_replicas
Revises: 0009_witness
Create Date: 2026-12-07

Written by hand; see consent_ledger/storage/schema.py and consent_ledger/storage/lease.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_replicas"
down_revision: str | None = "0009_witness"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "sequencer_lease",
        sa.Column("id", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.Column("commits", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sequencer_lease"),
        **MYSQL,
    )


def downgrade() -> None:
    op.drop_table("sequencer_lease")
