"""archive: the index of a client's own message ids in arrival order

The index on (account, room, xmpp_id) put each own line on a random page of the
index, as clients' ids are random: at every commit each of those pages went to
SQLite's write-ahead log again, 15-20 µs per own line at 10,000 to 50,000 lines,
growing with the archive. Ordered by (account, room, id), new lines go at the end of
their room's part; a lookup by id reads the user's own lines of the room newest
first from the index alone (the id is in it), which is where a correction's target
is.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 12:45:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

NAME = "ix_archive_xmpp_id"
WHERE = sa.text("xmpp_id IS NOT NULL")


def _index(columns: list[str]) -> None:
    op.drop_index(NAME, table_name="archive")
    op.create_index(NAME, "archive", columns, sqlite_where=WHERE, postgresql_where=WHERE)


def upgrade() -> None:
    _index(["account_id", "room", "id", "xmpp_id"])


def downgrade() -> None:
    _index(["account_id", "room", "xmpp_id"])
