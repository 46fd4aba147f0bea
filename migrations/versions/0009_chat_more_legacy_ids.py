"""chat_references.more_legacy_ids: every msgid of a multi-line private message

An XMPP message sent as several IRC lines has a msgid per line; a retraction
REDACTs each, also after a restart, so the further ones are kept with the first.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 08:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("chat_references") as batch:
        batch.add_column(sa.Column("more_legacy_ids", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chat_references") as batch:
        batch.drop_column("more_legacy_ids")
