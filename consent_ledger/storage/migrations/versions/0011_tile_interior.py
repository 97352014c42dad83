"""Full tiles keep their interior hashes, so reading one back needs no hashing.

Revision ID: 0011_tile_interior
Revises: 0010_replicas
Create Date: 2026-12-07

Written by hand; see consent_ledger/storage/schema.py (tiles.interior). Tiles written before this revision keep
NULL there and are hashed when read, as before: nothing is backfilled, so the upgrade is instant at any size.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_tile_interior"
down_revision: str | None = "0010_replicas"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tiles", sa.Column("interior", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tiles") as batch:
        batch.drop_column("interior")
