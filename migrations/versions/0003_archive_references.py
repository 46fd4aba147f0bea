"""archive: replies, corrections and lookups by a client's own message id

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 00:45:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("archive", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reply_to", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("replaces", sa.String(length=255), nullable=True))
        batch_op.create_index("ix_archive_xmpp_id", ["account_id", "room", "xmpp_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("archive", schema=None) as batch_op:
        batch_op.drop_index("ix_archive_xmpp_id")
        batch_op.drop_column("replaces")
        batch_op.drop_column("reply_to")
