"""archive: the index on a client's own message id only holds lines that have one

Most archived lines (everything others said) have no xmpp_id; indexing them made
every archived line pay for one more b-tree insert. Lookups name an id (`xmpp_id =
?`), which implies it is not null, so the partial index still serves them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 04:45:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = ["account_id", "room", "xmpp_id"]


def upgrade() -> None:
    op.drop_index("ix_archive_xmpp_id", table_name="archive")
    where = sa.text("xmpp_id IS NOT NULL")
    op.create_index(
        "ix_archive_xmpp_id", "archive", COLUMNS, sqlite_where=where, postgresql_where=where
    )


def downgrade() -> None:
    op.drop_index("ix_archive_xmpp_id", table_name="archive")
    op.create_index("ix_archive_xmpp_id", "archive", COLUMNS)
