"""Collections and documents: the bit-indexed table.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create collections and documents with the (collection, address) and change-sequence indexes."""
    op.create_table(
        "collections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("bundle_id", sa.String(length=128), nullable=False),
        sa.Column("bundle_fingerprint", sa.String(length=128), nullable=False),
        sa.Column("address_bits", sa.Integer(), nullable=False),
        sa.Column("long_bits", sa.Integer(), nullable=False),
        sa.Column("change_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collections")),
        sa.UniqueConstraint("name", name=op.f("uq_collections_name")),
    )
    op.create_table(
        "documents",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=256), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("metadata", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column("address", sa.BigInteger(), nullable=False),
        sa.Column("long_code", sa.LargeBinary(), nullable=False),
        sa.Column("deleted", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("change_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            ["collections.id"],
            name=op.f("fk_documents_collection_id_collections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_documents")),
        sa.UniqueConstraint("collection_id", "external_id", name="uq_documents_collection_id_external_id"),
    )
    op.create_index("ix_documents_collection_id_address", "documents", ["collection_id", "address"])
    op.create_index("ix_documents_collection_id_change_seq", "documents", ["collection_id", "change_seq"])


def downgrade() -> None:
    """Drop both tables (and their indexes)."""
    op.drop_index("ix_documents_collection_id_change_seq", table_name="documents")
    op.drop_index("ix_documents_collection_id_address", table_name="documents")
    op.drop_table("documents")
    op.drop_table("collections")
