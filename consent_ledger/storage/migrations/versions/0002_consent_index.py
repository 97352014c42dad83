"""Consent index: consents, parties, access_events (look-ups for access checks and the patient's view).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

Written by hand; see consent_ledger/storage/schema.py for what each table is for.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HASH = sa.LargeBinary().with_variant(mysql.VARBINARY(32), "mysql", "mariadb")
MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "consents",
        sa.Column("idx", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("patient", HASH, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("consent_id", sa.String(64), nullable=False),
        sa.Column("grantee", sa.String(80), nullable=True),
        sa.Column("target", sa.String(64), nullable=True),
        sa.Column("integrated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("idx", name="pk_consents"),
        **MYSQL,
    )
    op.create_index("ix_consents_patient_grantee", "consents", ["patient", "grantee"])
    op.create_index("ix_consents_consent_id", "consents", ["consent_id"])
    op.create_index("ix_consents_target", "consents", ["target"])
    op.create_table(
        "parties",
        sa.Column("idx", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("party_id", sa.String(64), nullable=False),
        sa.Column("roles", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("idx", name="pk_parties"),
        **MYSQL,
    )
    op.create_index("ix_parties_party_id", "parties", ["party_id"])
    op.create_table(
        "access_events",
        sa.Column("idx", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("patient", HASH, nullable=False),
        sa.Column("party_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("idx", name="pk_access_events"),
        **MYSQL,
    )
    op.create_index("ix_access_events_patient_idx", "access_events", ["patient", "idx"])


def downgrade() -> None:
    op.drop_table("access_events")
    op.drop_table("parties")
    op.drop_table("consents")
