"""archive: the sender's XEP-0421 identity of each line; reactions found by target

A line shown from the archive (MAM, history on join) carries the occupant id it had
live; reactions are archived lines too, looked up by the message they react to.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 04:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("archive", schema=None) as batch_op:
        batch_op.add_column(sa.Column("occupant_id", sa.String(length=255), nullable=True))
        batch_op.create_index(
            "ix_archive_reactions",
            ["account_id", "room", "reply_to"],
            unique=False,
            sqlite_where=sa.text("kind = 'reaction'"),
            postgresql_where=sa.text("kind = 'reaction'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("archive", schema=None) as batch_op:
        batch_op.drop_index("ix_archive_reactions")
        batch_op.drop_column("occupant_id")
