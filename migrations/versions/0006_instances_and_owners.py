"""gateway_instances and user_owners: several active processes on one database

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 04:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_instances",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("backend_pid", sa.Integer(), nullable=False),
        sa.Column("backend_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_instances")),
    )
    op.create_table(
        "user_owners",
        sa.Column("bridge", sa.String(length=64), nullable=False),
        sa.Column("jid", sa.String(length=3071), nullable=False),
        sa.Column("instance", sa.String(length=36), nullable=False),
        sa.Column("wanted_by", sa.String(length=36), nullable=True),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("bridge", "jid", name=op.f("pk_user_owners")),
    )
    with op.batch_alter_table("user_owners", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_user_owners_instance"), ["instance"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("user_owners", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_user_owners_instance"))
    op.drop_table("user_owners")
    op.drop_table("gateway_instances")
