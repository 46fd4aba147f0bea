"""chat_references: ids and reaction sets of one-to-one chats survive a restart

A reply, reaction or correction in a private chat names the message by the id the
user's clients saw; its legacy id (IRC msgid) and each side's reactions are kept
here, without the text, bounded per account and by the archive's retention.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 07:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chat_references",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("xmpp_id", sa.String(length=255), nullable=False),
        sa.Column("legacy_id", sa.String(length=255), nullable=True),
        sa.Column("mine", sa.Text(), nullable=True),
        sa.Column("theirs", sa.Text(), nullable=True),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_chat_references_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "xmpp_id", name=op.f("pk_chat_references")),
    )
    where = sa.text("legacy_id IS NOT NULL")
    op.create_index(
        "ix_chat_references_legacy_id",
        "chat_references",
        ["account_id", "legacy_id"],
        sqlite_where=where,
        postgresql_where=where,
    )
    op.create_index("ix_chat_references_updated", "chat_references", ["account_id", "updated"])


def downgrade() -> None:
    op.drop_index("ix_chat_references_updated", table_name="chat_references")
    op.drop_index("ix_chat_references_legacy_id", table_name="chat_references")
    op.drop_table("chat_references")
