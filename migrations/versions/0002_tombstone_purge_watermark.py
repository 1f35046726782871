"""Tombstone purging: each collection remembers the newest change sequence it purged.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add collections.tombstones_purged_seq (0: nothing purged yet)."""
    with op.batch_alter_table("collections") as batch:
        batch.add_column(
            sa.Column("tombstones_purged_seq", sa.BigInteger(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    """Drop collections.tombstones_purged_seq."""
    with op.batch_alter_table("collections") as batch:
        batch.drop_column("tombstones_purged_seq")
