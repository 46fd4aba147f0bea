"""archive: a client's ids of the user's own lines indexed in arrival order

The indexes on (account, room, xmpp_id) and the unique one on (account, room,
origin_id) put each own line on a random page of each, as clients' ids are random: at
every commit each of those pages went to SQLite's write-ahead log again, 2.3 pages per
own line of a client that sends both ids (bench/archive_pages.py), growing with the
archive. Ordered by (account, room, id), new lines go at the end of their room's part;
a lookup by id reads the user's own lines of the room newest first from the index
alone (the id is in it), which is where a correction's or a re-sent message's match
is. The origin-id is no longer unique: the writer skips a line whose origin-id is
among the room's last own lines (component.archive).

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


def _partial(name: str, column: str, columns: list[str], *, unique: bool = False) -> None:
    where = sa.text(f"{column} IS NOT NULL")
    op.create_index(
        name, "archive", columns, unique=unique, sqlite_where=where, postgresql_where=where
    )


def upgrade() -> None:
    op.drop_index("ix_archive_xmpp_id", table_name="archive")
    op.drop_index("uq_archive_origin_id", table_name="archive")
    _partial("ix_archive_xmpp_id", "xmpp_id", ["account_id", "room", "id", "xmpp_id"])
    _partial("ix_archive_origin_id", "origin_id", ["account_id", "room", "id", "origin_id"])


def downgrade() -> None:
    op.drop_index("ix_archive_xmpp_id", table_name="archive")
    op.drop_index("ix_archive_origin_id", table_name="archive")
    _partial("ix_archive_xmpp_id", "xmpp_id", ["account_id", "room", "xmpp_id"])
    _partial("uq_archive_origin_id", "origin_id", ["account_id", "room", "origin_id"], unique=True)
