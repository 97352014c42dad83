"""Signed-request nonces kept in the database for the freshness window (docs/design.md section 7).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

Written by hand; see consent_ledger/storage/schema.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HASH = sa.LargeBinary().with_variant(mysql.VARBINARY(32), "mysql", "mariadb")
MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "request_nonces",
        sa.Column("signer", HASH, nullable=False),
        sa.Column("nonce", HASH, nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("signer", "nonce", name="pk_request_nonces"),
        **MYSQL,
    )
    op.create_index("ix_request_nonces_expires_ms", "request_nonces", ["expires_ms"])


def downgrade() -> None:
    op.drop_index("ix_request_nonces_expires_ms", table_name="request_nonces")
    op.drop_table("request_nonces")
