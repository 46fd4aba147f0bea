"""archive: every legacy id of a multi-line message; leaner indexes in time order

The archive is read in time order (then arrival) through one index instead of two;
the unique keys on msgid and origin-id become partial (most lines have neither).

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-02 00:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("archive", schema=None) as batch_op:
        batch_op.drop_index("ix_archive_room_sent")
        batch_op.drop_index("ix_archive_page")
        batch_op.drop_constraint("uq_archive_legacy_id", type_="unique")
        batch_op.drop_constraint("uq_archive_origin_id", type_="unique")
        for column in ("legacy_id", "origin_id"):
            batch_op.create_index(
                f"uq_archive_{column}",
                ["account_id", "room", column],
                unique=True,
                sqlite_where=sa.text(f"{column} IS NOT NULL"),
                postgresql_where=sa.text(f"{column} IS NOT NULL"),
            )
        batch_op.create_index("ix_archive_order", ["account_id", "room", "sent", "id"])
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
    with op.batch_alter_table("archive", schema=None) as batch_op:
        batch_op.drop_index("ix_archive_order")
        batch_op.drop_index("uq_archive_origin_id")
        batch_op.drop_index("uq_archive_legacy_id")
        batch_op.create_unique_constraint(
            "uq_archive_legacy_id", ["account_id", "room", "legacy_id"]
        )
        batch_op.create_unique_constraint(
            "uq_archive_origin_id", ["account_id", "room", "origin_id"]
        )
        batch_op.create_index("ix_archive_page", ["account_id", "room", "id"])
        batch_op.create_index("ix_archive_room_sent", ["account_id", "room", "sent"])
