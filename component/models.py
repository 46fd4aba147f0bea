"""Database tables. Schema changes go through Alembic (migrations/), never create_all.

Three tables serve every bridge: users, their accounts (one per user and bridge) and
records, small JSON documents a bridge keys by (kind, key) so that a new network can
persist what it needs without a migration of its own. The fourth, `archive`, holds the
room messages of each account's legacy memberships (component.archive); the fifth,
`archive_legacy_ids`, the further legacy ids of a message that became several legacy
messages (an XMPP message of three lines is three IRC PRIVMSGs, three msgids). The
sixth, `chat_references`, ties the messages of one-to-one chats to their legacy ids,
with each side's reactions (component.chats), without their text.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql import text


def _now() -> datetime:
    return datetime.now(UTC)


def _partial_index(name: str, *columns: str, where: str, unique: bool = False) -> Index:
    """An index of the rows where `where` holds, as the migrations create it on SQLite and
    PostgreSQL alike (0004, 0005, 0007, 0008).

    Only SQLite's keyword is given here: `postgresql_where` alone makes SQLAlchemy import
    the PostgreSQL dialect to check it, 2.2 MiB in a gateway on SQLite (issue #14), and
    nothing reads it at run time: the schema is the migrations', and Alembic's comparison
    of the models with a database (tests/storage/test_migrations.py) does not compare an
    index's WHERE on either database.
    """
    return Index(name, *columns, unique=unique, sqlite_where=text(where))


class Base(DeclarativeBase):
    # Named constraints make Alembic migrations identical on SQLite and PostgreSQL.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class UserRow(Base):
    """An XMPP account (bare JID) that registered with at least one bridge."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    jid: Mapped[str] = mapped_column(String(3071), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class AccountRow(Base):
    """A user's registration on one bridge; `secrets` is a Fernet token, never plain."""

    __tablename__ = "accounts"
    # The unique constraints double as the indexes for lookups by user and by account.
    __table_args__ = (UniqueConstraint("user_id", "bridge"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    bridge: Mapped[str] = mapped_column(String(64), index=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    secrets: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=_now, onupdate=_now
    )


class RecordRow(Base):
    """A bridge's keyed JSON document for one account (outbox entry, id map, ...)."""

    __tablename__ = "records"
    __table_args__ = (UniqueConstraint("account_id", "kind", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(512))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=_now, onupdate=_now
    )


class ArchiveRow(Base):
    """One room message as one user saw it (each user has an archive of their own).

    `id` orders the archive (arrival order); `stanza_id` is the XEP-0359/MAM id clients
    see. The unique keys make a replayed line (same legacy id, or same archive id, which
    is derived from it) a no-op instead of a second row; a re-sent own message (same
    origin-id) is skipped by the writer."""

    __tablename__ = "archive"
    __table_args__ = (
        # Partial: most lines have no origin-id and, on servers without IRCv3 tags,
        # no msgid; they cost these indexes nothing.
        _partial_index(
            "uq_archive_legacy_id",
            "account_id",
            "room",
            "legacy_id",
            unique=True,
            where="legacy_id IS NOT NULL",
        ),
        # A client's ids of the user's own lines (this origin-id, the `id` below) are
        # random: indexed in arrival order, each line is added at the end of the
        # room's part of the index instead of on a random page, which SQLite wrote
        # to its log whole at the next commit (0010). A line re-sent with the same
        # origin-id is found among the room's last own lines (`Archive._not_resent`).
        _partial_index(
            "ix_archive_origin_id",
            "account_id",
            "room",
            "id",
            "origin_id",
            where="origin_id IS NOT NULL",
        ),
        # The archive's order (time, then arrival): MAM pages, start/end, history.
        Index("ix_archive_order", "account_id", "room", "sent", "id"),
        # Corrections name the user's own line by their client's id.
        _partial_index(
            "ix_archive_xmpp_id",
            "account_id",
            "room",
            "id",
            "xmpp_id",
            where="xmpp_id IS NOT NULL",
        ),
        # The reactions to a message (a user's current set survives a restart).
        _partial_index(
            "ix_archive_reactions",
            "account_id",
            "room",
            "reply_to",
            where="kind = 'reaction'",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    room: Mapped[str] = mapped_column(String(512))
    stanza_id: Mapped[str] = mapped_column(String(36), unique=True)
    sent: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    nick: Mapped[str | None] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))
    legacy_id: Mapped[str | None] = mapped_column(String(255))
    origin_id: Mapped[str | None] = mapped_column(String(255))
    xmpp_id: Mapped[str | None] = mapped_column(String(255))
    reply_to: Mapped[str | None] = mapped_column(String(36))
    """The stanza id of the line this one answers (XEP-0461), or reacts to (XEP-0444)."""
    replaces: Mapped[str | None] = mapped_column(String(255))
    """The id of the line this one corrects (XEP-0308), as the client named it."""
    occupant_id: Mapped[str | None] = mapped_column(String(255))
    """The sender's stable identity on the network (events.Occupant.occupant_id), hashed
    per room into the XEP-0421 id only when shown, as for a live line."""


class ArchiveLegacyIdRow(Base):
    """A further legacy id of an archived message (its first is `ArchiveRow.legacy_id`).

    Only messages that became several legacy messages have rows here, so the common
    single-line message costs nothing; the row goes with its message (retention, the
    user's switch, the account) by the foreign key.
    """

    __tablename__ = "archive_legacy_ids"

    # legacy_id first: the writer looks ids up across accounts (one query per batch).
    legacy_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    room: Mapped[str] = mapped_column(String(512), primary_key=True)
    stanza_id: Mapped[str] = mapped_column(
        ForeignKey("archive.stanza_id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(SmallInteger)
    """Which legacy message of the message this is: 1 for the second, and so on."""


class ChatReferenceRow(Base):
    """A message of a one-to-one chat with a legacy contact, as a reply, a reaction or
    a correction names it: by the id the user's clients know it by (`xmpp_id`).

    Private chats are archived by the user's own server, so only what the gateway needs
    to translate references is here, never the text: the legacy id (IRC msgid) and each
    side's current XEP-0444 set (None: never reacted; "" all taken back). Keyed by the
    account alone, not the contact: the ids are unique on their own (msgids per server,
    clients' ids per user), and a nick's spelling may differ between the JID and IRC.
    Bounded per account (component.archive.CHATS_KEPT) and by `archive.max_days`.
    """

    __tablename__ = "chat_references"
    __table_args__ = (
        # A legacy reply or reaction names the message by its legacy id.
        _partial_index(
            "ix_chat_references_legacy_id",
            "account_id",
            "legacy_id",
            where="legacy_id IS NOT NULL",
        ),
        # The bound per account and the retention go by age.
        Index("ix_chat_references_updated", "account_id", "updated"),
    )

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    xmpp_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    legacy_id: Mapped[str | None] = mapped_column(String(255))
    more_legacy_ids: Mapped[str | None] = mapped_column(Text)
    """The further legacy ids, one a line, of a message that became several legacy
    messages (a multi-line message: one IRC msgid per line); a retraction removes each."""
    mine: Mapped[str | None] = mapped_column(Text)
    """The user's reactions, one emoji a line."""
    theirs: Mapped[str | None] = mapped_column(Text)
    """The contact's reactions, one emoji a line."""
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class InstanceRow(Base):
    """A running `xmpp-gateway run` process on a PostgreSQL database (component.ownership).

    It is alive while its lock connection is: `backend_pid` and `backend_start` name
    that connection in `pg_stat_activity`, so a process killed with -9 is seen dead the
    moment PostgreSQL drops the connection, with no heartbeat to wait for.
    """

    __tablename__ = "gateway_instances"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    backend_pid: Mapped[int]
    backend_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    role: Mapped[str] = mapped_column(String(16))
    """`active` or `standby`."""
    slot: Mapped[int | None]
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    """When it took its role."""


class OwnerRow(Base):
    """Which instance runs a user's legacy session of one bridge: a renewed lease.

    With several active slots (`cluster.slots`) the instance that receives a user's
    stanzas takes this lease before it opens anything for the user; another instance
    takes it only when the holder is dead, its lease expired, or it handed it over
    (`wanted_by`).
    """

    __tablename__ = "user_owners"

    bridge: Mapped[str] = mapped_column(String(64), primary_key=True)
    jid: Mapped[str] = mapped_column(String(3071), primary_key=True)
    instance: Mapped[str] = mapped_column(String(36), index=True)
    wanted_by: Mapped[str | None] = mapped_column(String(36))
    expires: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    """When the holder last received a stanza from the user (renewals carry it)."""
