"""archive of room messages

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 21:45:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "archive",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("room", sa.String(length=512), nullable=False),
        sa.Column("stanza_id", sa.String(length=36), nullable=False),
        sa.Column("sent", sa.DateTime(timezone=True), nullable=False),
        sa.Column("nick", sa.String(length=255), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("legacy_id", sa.String(length=255), nullable=True),
        sa.Column("origin_id", sa.String(length=255), nullable=True),
        sa.Column("xmpp_id", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_archive_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_archive")),
        sa.UniqueConstraint("account_id", "room", "legacy_id", name="uq_archive_legacy_id"),
        sa.UniqueConstraint("account_id", "room", "origin_id", name="uq_archive_origin_id"),
        sa.UniqueConstraint("stanza_id", name=op.f("uq_archive_stanza_id")),
    )
    with op.batch_alter_table("archive", schema=None) as batch_op:
        batch_op.create_index("ix_archive_page", ["account_id", "room", "id"], unique=False)
        batch_op.create_index("ix_archive_room_sent", ["account_id", "room", "sent"], unique=False)
        batch_op.create_index(batch_op.f("ix_archive_sent"), ["sent"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("archive", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_archive_sent"))
        batch_op.drop_index("ix_archive_room_sent")
        batch_op.drop_index("ix_archive_page")
    op.drop_table("archive")
