"""archive: every legacy id of a message that became several legacy messages

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-02 00:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "archive_legacy_ids",
        sa.Column("legacy_id", sa.String(length=255), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("room", sa.String(length=512), nullable=False),
        sa.Column("stanza_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_archive_legacy_ids_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["stanza_id"],
            ["archive.stanza_id"],
            name=op.f("fk_archive_legacy_ids_stanza_id_archive"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "legacy_id", "account_id", "room", name=op.f("pk_archive_legacy_ids")
        ),
    )
    with op.batch_alter_table("archive_legacy_ids", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_archive_legacy_ids_stanza_id"), ["stanza_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("archive_legacy_ids", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_archive_legacy_ids_stanza_id"))
    op.drop_table("archive_legacy_ids")
