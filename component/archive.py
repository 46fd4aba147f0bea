"""The room archive: every room message of each user's legacy memberships, per user.

Writes never hold up delivery: the MUC engine decides a line's stanza id, sends the
stanza and `add`s the line; a writer task stores whatever piled up meanwhile in one
transaction (a burst of 500 lines is one commit, not 500). A crash loses at most the
lines not yet committed. Reads (`latest` for history on join, `page` for MAM) first
wait for the writer, so a client never misses a line it was just sent live.

Each user has an archive of their own (two users in one IRC channel: two copies), as
biboumi does, because each saw the room through their own legacy connection. A replay
of a line already stored (a bouncer after a restart, say) is no second row: the legacy
id (IRC `msgid`) and the XMPP origin-id are unique per user and room, and the stanza id
is derived from the legacy id, so the replay carries the id the archive already has.

The same writer keeps the references of one-to-one chats (`ChatReference`: ids and
reaction sets, never text), which the user's server archives itself; they are kept
whatever the user's archiving switch says, since they hold nothing that was said.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import chain
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Connection, Engine, delete, func, select, tuple_, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bridges.address import Address
from bridges.base import Account, AccountStore, Command, FormField
from bridges.hot_value import hot_value
from component.db import local_reader, writer
from component.models import (
    AccountRow,
    ArchiveLegacyIdRow,
    ArchiveRow,
    ChatReferenceRow,
    RecordRow,
    UserRow,
)

log = logging.getLogger(__name__)

MAX_BATCH = 1_000
"""Lines per transaction; a longer burst is written in several."""
LOOP_BATCH = 256
"""Lines per transaction on an SQLite file, which is written in the event loop's
thread (`_write`): a few milliseconds of the loop, after which everyone else's work
runs before the next. A batch of `MAX_BATCH` lines is 10 to 30 ms of the loop (from
bench/archive_bench.py's rate), and a flood's batches came one after the other without
a break, in front of the other users' lines (bench/irc_vs_biboumi.py --fairness).
Smaller transactions cost more: a commit writes every page it touched again (128
lines: about 4 µs more per line in bench/archive_bench.py, against 1,000)."""
GATHER = 1.0
"""Seconds the writer lets lines pile up after the first before it writes them, unless
a transaction's worth (`batch_size`) is queued first.

An IRC burst arrives a line or a few at a time; writing each as it came made a
transaction per line or two, and the transactions (not the rows) were most of what
the archive cost the gateway. At a busy room's pace (50 msg/s) 0.1 s still made a
transaction per five lines, cold each time: the archive cost 0.3 ms of CPU per line
there, and nothing measurable with a second's gathering (bench/irc_vs_biboumi.py,
paced rows). A crash loses what was gathered, at most this long; a reader (`flush`:
history on join, MAM) does not wait for it, nor does a stop."""
ROWS_PER_INSERT = 64
"""Lines per INSERT statement on SQLite (64 rows of 13 values stay under the 999 an
older SQLite allows): one statement stores them all, where an `executemany` runs the
statement once per row, which cost the gateway more than SQLite's own work."""
RESENT_WITHIN = 100
"""A line of the user's whose origin-id is among their last this many own lines (with
an origin-id) of the room is a re-sent message, and not stored again
(`Archive._not_resent`). A client sends again what it had sent but not seen
acknowledged when its connection broke, right after reconnecting: its last few lines.
Reading 1,000 of them for each batch cost 4 µs per own line more (PostgreSQL, in
bench/archive_pages.py)."""
MAX_QUEUED = 100_000
"""Lines waiting for a database that does not answer; beyond this new lines are dropped."""
RETRACTED = "retracted"
"""The kind of a line removed by its author (XEP-0424): a tombstone without a body."""
REACTION = "reaction"
"""The kind of an XEP-0444 reaction: one sender's whole set for the message `reply_to`
names, one emoji per line of the body (empty: all taken back). The newest such line
of a sender is their current set, also after a restart."""
RETRY_DELAYS = (0.5, 2.0, 10.0)
"""Waits before a failed batch is tried again; after the last it is dropped (logged)."""
CLEANUP_INTERVAL = 3600.0
"""Seconds between two retention runs (`archive.max_days`)."""
CHATS_KEPT = 2_000
"""One-to-one messages per account whose references are kept (the newest); a reply or
reaction to an older one falls back to text, as to one never seen."""
PREFERENCE = ("archive", "settings")
"""The (kind, key) of the record holding a user's own archiving switch."""

_NAMESPACE_BYTES = uuid.UUID("2f1b8c1e-5d0a-4f4e-9a57-0f3c2d1e6b7a").bytes
_HASH_BITS = ~(0xF << 76 | 0x3 << 62) & (1 << 128) - 1
"""A UUID's bits but its version and variant."""
_HASH_BITS_BELOW_TIME = _HASH_BITS & (1 << 80) - 1
"""Those of them after a time-ordered UUID's 48 bits of milliseconds."""
_T = TypeVar("_T")
_random = random.Random()


def stanza_id_for(user: str, room: str, legacy_id: str | None, sent: datetime | None = None) -> str:
    """The archive id of a line: derived from its legacy id when it has one.

    Deriving it (a hash of user, room and legacy id) gives a replayed line the id the
    archive already holds without a database lookup before delivery; a line without a
    legacy id gets a random one. Both start with the time, in the layout of RFC 9562's
    time-ordered UUIDs, so the archive's unique index on them grows at its end (see
    `_time_ordered_uuid`): a derived id starts with `sent`, the time the network gave
    the line (IRCv3 server-time, which a replay repeats), and is the hash alone only
    where the network gives no time. A hash alone put each IRCv3 line on a random page
    of that index: 0.55 of the 1.37 pages each such line wrote (bench/archive_pages.py).
    """
    if not legacy_id:
        return _time_ordered_uuid()
    # uuid.uuid5's hash, without its UUID object (a third of an IRCv3 line's id).
    name = f"{user}\0{room}\0{legacy_id}".encode()
    digest = int.from_bytes(hashlib.sha1(_NAMESPACE_BYTES + name).digest()[:16])
    if sent is None:  # uuid.uuid5(_NAMESPACE, name): version 5, RFC 4122 variant
        return _uuid_text(digest & _HASH_BITS | 0x5 << 76 | 0x2 << 62)
    milliseconds = int(_utc(sent).timestamp() * 1000) & 0xFFFF_FFFF_FFFF
    value = milliseconds << 80 | 0x8 << 76 | 0x2 << 62  # version 8: derived
    return _uuid_text(value | digest & _HASH_BITS_BELOW_TIME)


def _time_ordered_uuid() -> str:
    """A random UUID that starts with the time (the layout of RFC 9562's version 7).

    The archive's unique index on stanza ids then grows at its end, like the table,
    instead of touching a random page of a large index for every line: that halved
    the database's share of archiving a line. The 74 random bits come from `random`,
    not the kernel: an archive id needs to be unique, not secret, and a system call
    per room line showed in a burst's profile.
    """
    value = (time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | 0x2 << 62
    value |= _random.getrandbits(12) << 64 | _random.getrandbits(62)
    return _uuid_text(value)


def _uuid_text(value: int) -> str:
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


@hot_value
class Line:
    """One archived room message, as it was (or will be) shown to the user."""

    user: str
    room: str
    stanza_id: str
    sent: datetime
    nick: str | None
    body: str
    kind: str = "message"
    legacy_id: str | None = None
    origin_id: str | None = None
    """XEP-0359 origin-id of the user's own message."""
    xmpp_id: str | None = None
    """The stanza id attribute the user's client gave its own message."""
    reply_to: str | None = None
    """The stanza id of the line this one answers (XEP-0461)."""
    replaces: str | None = None
    """The id of the line this one corrects (XEP-0308), as the client named it."""
    more_legacy_ids: tuple[str, ...] = ()
    """The legacy ids of the message's further legacy messages (an XMPP message of
    several lines is one IRC PRIVMSG and msgid per line; `legacy_id` is the first)."""
    occupant_id: str | None = None
    """The sender's stable identity on the network (events.Occupant.occupant_id),
    which the room shows hashed as the XEP-0421 occupant id, live and archived."""

    @property
    def message_id(self) -> str:
        """The `id` attribute the live stanza had, so archived and live copies match."""
        return self.xmpp_id or self.legacy_id or self.stanza_id


@dataclass(frozen=True, slots=True)
class ChatReference:
    """A message of a one-to-one chat as references name it (`ChatReferenceRow`).

    None in a field means "not changed" when written and "not known" when read.
    """

    user: str
    xmpp_id: str
    """The id the user's clients know the message by."""
    legacy_id: str | None = None
    mine: tuple[str, ...] | None = None
    """The user's current reactions to it."""
    theirs: tuple[str, ...] | None = None
    """The contact's current reactions to it."""
    more_legacy_ids: tuple[str, ...] | None = None
    """The legacy ids of its further legacy messages (as `Line.more_legacy_ids`)."""

    def merged(self, newer: ChatReference) -> ChatReference:
        """This reference with what `newer` changed."""
        return ChatReference(
            self.user,
            self.xmpp_id,
            _newer(newer.legacy_id, self.legacy_id),
            _newer(newer.mine, self.mine),
            _newer(newer.theirs, self.theirs),
            _newer(newer.more_legacy_ids, self.more_legacy_ids),
        )


@dataclass(frozen=True, slots=True)
class Filter:
    """The MAM form: which lines of one room qualify (all given conditions hold)."""

    start: datetime | None = None
    end: datetime | None = None
    nick: str | None = None
    after_id: str | None = None
    before_id: str | None = None
    ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PageRequest:
    """RSM paging: `after` pages forward, `before` (or `last`) backward from the end."""

    max: int
    after: str | None = None
    before: str | None = None
    last: bool = False


@dataclass(frozen=True, slots=True)
class Page:
    lines: list[Line]
    complete: bool
    """No more lines beyond this page in the paging direction."""


class UnknownId(LookupError):
    """A stanza id named in a query is not in this user's archive of this room."""


@dataclass
class _Account:
    id: int
    enabled: bool


@dataclass
class Archive:
    """The archive of one bridge's rooms, with its batched writer and retention task."""

    engine: AsyncEngine
    bridge: str
    max_days: int = 30
    _sessions: async_sessionmaker[AsyncSession] = field(init=False)
    _accounts: dict[str, _Account] = field(default_factory=dict, init=False)
    _queue: list[Line] = field(default_factory=list, init=False)
    _chats: list[ChatReference] = field(default_factory=list, init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _hurry: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _idle: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)
    _dropping: bool = field(default=False, init=False)
    _insert: str = field(init=False)
    """The row insert as the driver's own SQL (see `_write_rows`)."""
    _recent_origins: str = field(init=False)
    _sent: Callable[[datetime], Any] = field(init=False)
    """A line's time as the driver takes it: text on SQLite, as SQLAlchemy stores it."""
    _insert_ids: Any = field(init=False)
    _upsert_chats: Any = field(init=False)
    _has_more_ids: bool | None = field(default=None, init=False)
    """Whether `archive_legacy_ids` has rows (None: not looked yet)."""
    _local: Engine | None = field(default=None, init=False)
    """An SQLite file, used in the event loop's thread (see `_read`, `_write`)."""
    _per_insert: int = field(default=1, init=False)
    """Lines per INSERT statement (`_insert_rows`)."""

    def __post_init__(self) -> None:
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        dialect = self.engine.dialect
        # The dialect's own INSERT (ON CONFLICT), imported from the dialect in use only:
        # PostgreSQL's is 2.2 MiB that a gateway on SQLite does not need.
        insert = importlib.import_module(f"sqlalchemy.dialects.{dialect.name}").insert
        self._insert = _insert_text(dialect.paramstyle)
        self._recent_origins = _recent_origins_text(dialect.paramstyle)
        self._sent = _sqlite_time if dialect.name == "sqlite" else _utc
        self._per_insert = ROWS_PER_INSERT if dialect.name == "sqlite" else 1
        self._insert_ids = insert(ArchiveLegacyIdRow).on_conflict_do_nothing()
        chats = insert(ChatReferenceRow)
        self._upsert_chats = chats.on_conflict_do_update(
            index_elements=[ChatReferenceRow.account_id, ChatReferenceRow.xmpp_id],
            set_={
                name: func.coalesce(chats.excluded[name], getattr(ChatReferenceRow, name))
                for name in ("legacy_id", "more_legacy_ids", "mine", "theirs")
            }
            | {"updated": chats.excluded.updated},
        )
        self._local = local_reader(self.engine)
        self._idle.set()

    # --- life ------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._write_loop(), name="archive writer"))
        self._tasks.append(asyncio.create_task(self._cleanup_loop(), name="archive cleanup"))

    @property
    def tasks(self) -> tuple[asyncio.Task[None], ...]:
        """The writer (and cleanup) tasks, which `stop` ends after a last flush."""
        return tuple(self._tasks)

    async def stop(self) -> None:
        """Write what is queued, then end the tasks."""
        await self.flush()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._local is not None:
            self._local.dispose()

    # --- writing ---------------------------------------------------------------------

    def add(self, line: Line) -> None:
        """Queue `line` for the next batch; returns at once."""
        if len(self._queue) >= MAX_QUEUED:
            if not self._dropping:
                log.error("archive: the database is not keeping up; dropping new lines")
                self._dropping = True
            return
        self._queue.append(line)
        self._queued()

    def note_chat(self, reference: ChatReference) -> None:
        """Queue what changed about a one-to-one message for the next batch."""
        if len(self._chats) >= MAX_QUEUED:
            return  # the lines' warning covers a database that does not keep up
        self._chats.append(reference)
        self._queued()

    def _queued(self) -> None:
        """Wake the writer; a transaction's worth is written without gathering more."""
        self._idle.clear()
        self._wake.set()
        if self._batch_queued:
            self._hurry.set()

    @property
    def _batch_queued(self) -> bool:
        """A whole transaction's worth waits: no reason to gather more (`GATHER`)."""
        return len(self._queue) + len(self._chats) >= self.batch_size

    async def flush(self) -> None:
        """Wait until every line added so far is committed (or given up on)."""
        if not self._tasks:  # not started (a one-off command): write here
            await self._drain()
            return
        if not self._idle.is_set():
            self._hurry.set()
        await self._idle.wait()

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            if not self._batch_queued:
                # In this task (not wait_for's own, which a shutdown ending stray
                # tasks would cancel, killing the writer before its last flush).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(GATHER):
                        await self._hurry.wait()
            self._wake.clear()
            self._hurry.clear()
            await self._drain()

    @property
    def batch_size(self) -> int:
        """Lines per transaction: `LOOP_BATCH` where the writer holds the event loop
        (an SQLite file), else `MAX_BATCH`."""
        return MAX_BATCH if self._local is None else LOOP_BATCH

    async def _drain(self) -> None:
        """Write what is queued now, in transactions of `batch_size` with the others'
        turn between them; what arrives meanwhile waits for the next gathering.

        Taking new lines after each turn instead made a flood's transactions as small
        as what one turn brought (about 6 lines, 700 commits for 4,000 lines).
        """
        size = self.batch_size
        lines, self._queue = self._queue, []
        chats, self._chats = self._chats, []
        for start in range(0, max(len(lines), len(chats)), size):
            end = start + size
            await self._write_retrying(lines[start:end], chats[start:end])
            await asyncio.sleep(0)  # the others' turn (`LOOP_BATCH`)
        if not self._queue and not self._chats:
            self._dropping = False
            self._idle.set()

    async def _write_retrying(self, batch: list[Line], chats: list[ChatReference]) -> None:
        for delay in (*RETRY_DELAYS, None):
            try:
                await self._write(batch, chats)
                return
            except IntegrityError:
                # An account removed while its lines were queued: write the others.
                self._accounts.clear()
                alone: list[tuple[list[Line], list[ChatReference]]] = [
                    *(([line], []) for line in batch),
                    *(([], [chat]) for chat in chats),
                ]
                for lines, refs in alone:
                    try:
                        await self._write(lines, refs)
                    except IntegrityError:
                        user = (lines or refs)[0].user
                        log.info("archive: dropped a line of %s (account gone)", user)
                return
            except (SQLAlchemyError, OSError) as exc:
                if delay is None:
                    log.error("archive: gave up on %d lines: %s", len(batch) + len(chats), exc)
                    return
                count = len(batch) + len(chats)
                log.warning("archive: writing %d lines failed (%s); retrying", count, exc)
                await asyncio.sleep(delay)

    async def _write(self, batch: Sequence[Line], chats: Sequence[ChatReference] = ()) -> None:
        """One transaction; on an SQLite file in this thread, like the reads (`_read`).

        Handing each statement of a batch to aiosqlite's thread made the event loop
        wait for the GIL at every hand-off: in an IRC burst that wait, not SQLite, was
        what archiving cost. A batch of a thousand lines holds the loop for about ten
        milliseconds; a database locked by another writer makes it wait off the loop
        (`_transaction`). A thread of the
        writer's own, handed each transaction whole, was measured too (14 interleaved
        rounds): 3 to 8 µs more CPU per line, for a change in the burst rate smaller
        than the machine's noise, so the writer stays in this thread.
        """

        # Core on a connection: the ORM's unit of work is not needed for plain rows.
        def write(db: Connection) -> None:
            self._write_rows(db, batch)
            if chats:
                self._write_chats(db, chats)

        await self._transaction(write)

    async def _transaction(self, work: Callable[[Connection], None]) -> None:
        """Run `work` in one transaction: in this thread on an SQLite file (`_write`).

        There the lock is waited for 50 ms only (`local_reader`): when another writer
        holds it longer (the account store, the retention run, another process),
        the transaction is run again in aiosqlite's thread, which waits for the lock
        as long as every other write does, with the event loop free meanwhile.
        A retraction written while the retention run held the lock was lost before.
        """
        if self._local is not None:
            try:
                with self._local.begin() as db:
                    work(db)
                return
            except OperationalError as exc:
                if not _locked(exc):
                    raise
        async with writer(self.engine).begin() as db:
            await db.run_sync(work)

    def _write_rows(self, db: Connection, batch: Sequence[Line]) -> None:
        """Insert the batch's lines of users who keep an archive, replays skipped.

        The rows go to the driver as tuples in one `executemany`, past SQLAlchemy's
        per-row parameter processing (a dict, a bind processor per column, the time
        formatted by `%`), which cost the gateway more per archived line than SQLite's
        own insert did.
        """
        kept = []
        for line in batch:
            account = self._account(db, line.user)
            if account is not None and account.enabled:
                kept.append((account.id, line))
        kept = self._not_resent(db, self._not_replays(db, kept))
        if not kept:
            return
        sent = self._sent
        rows = [
            (
                account_id,
                line.room,
                line.stanza_id,
                sent(line.sent),
                line.nick,
                line.body,
                line.kind,
                line.legacy_id,
                line.origin_id,
                line.xmpp_id,
                line.reply_to,
                line.replaces,
                line.occupant_id,
            )
            for account_id, line in kept
        ]
        self._insert_rows(db, rows)
        more_ids = [
            row
            for account_id, line in kept
            if line.more_legacy_ids
            for row in _more_ids(account_id, line)
        ]
        if more_ids:
            db.execute(self._insert_ids, more_ids)
            self._has_more_ids = True

    def _write_chats(self, db: Connection, chats: Sequence[ChatReference]) -> None:
        """Upsert the references, each changed field over the stored one; several
        changes to one message in the batch are one row (an upsert may not touch a row
        twice in one statement)."""
        merged: dict[tuple[str, str], ChatReference] = {}
        for chat in chats:
            key = (chat.user, chat.xmpp_id)
            known = merged.get(key)
            merged[key] = chat if known is None else known.merged(chat)
        now = datetime.now(UTC)
        rows = []
        for n, chat in enumerate(merged.values()):
            account = self._account(db, chat.user)
            if account is not None:
                rows.append(
                    {
                        "account_id": account.id,
                        "xmpp_id": chat.xmpp_id,
                        "legacy_id": chat.legacy_id,
                        "more_legacy_ids": _joined(chat.more_legacy_ids),
                        "mine": _joined(chat.mine),
                        "theirs": _joined(chat.theirs),
                        # Distinct times in queue order, so the bound cuts a burst too.
                        "updated": now + timedelta(microseconds=n),
                    }
                )
        if rows:
            db.execute(self._upsert_chats, rows)

    def _insert_rows(self, db: Connection, rows: list[tuple[Any, ...]]) -> None:
        """`rows` in INSERTs of `_per_insert` rows (SQLite), else in one `executemany`
        (asyncpg sends those in one round trip)."""
        if self._per_insert == 1:
            db.exec_driver_sql(self._insert, rows)
            return
        for start in range(0, len(rows), self._per_insert):
            part = rows[start : start + self._per_insert]
            db.exec_driver_sql(_sqlite_insert_text(len(part)), tuple(chain.from_iterable(part)))

    def _not_replays(self, db: Connection, kept: list[tuple[int, Line]]) -> list[tuple[int, Line]]:
        """`kept` without the lines the archive holds as a further line of a message.

        A replay (IRC chat history after a reconnect) brings each line of the user's
        multi-line message back on its own, under that line's msgid; the unique keys
        only know the first. One query per batch, and none while no multi-line message
        is archived.
        """
        named = {line.legacy_id for _, line in kept if line.legacy_id}
        if not named:
            return kept
        if self._has_more_ids is None:
            self._has_more_ids = (
                db.execute(select(ArchiveLegacyIdRow.legacy_id).limit(1)).first() is not None
            )
        if not self._has_more_ids:
            return kept
        found = db.execute(
            select(
                ArchiveLegacyIdRow.account_id, ArchiveLegacyIdRow.room, ArchiveLegacyIdRow.legacy_id
            ).where(ArchiveLegacyIdRow.legacy_id.in_(named))
        )
        known = {tuple(row) for row in found}
        if not known:
            return kept
        return [
            (account_id, line)
            for account_id, line in kept
            if (account_id, line.room, line.legacy_id) not in known
        ]

    def _not_resent(self, db: Connection, kept: list[tuple[int, Line]]) -> list[tuple[int, Line]]:
        """`kept` without the own lines whose origin-id the room's last `RESENT_WITHIN`
        own lines (or an earlier line of the batch) already have: a message the client
        sent again. One query per room of the batch that has such lines, reading the
        end of the room's part of the origin-id index (a list of the batch's origin-ids
        in the query cost more than reading them all); an index unique on the
        origin-id did it before, at a random page of it per own line (0010)."""
        named = {(account_id, line.room) for account_id, line in kept if line.origin_id}
        if not named:
            return kept
        known: set[tuple[int, str, str | None]] = set()
        for account_id, room in named:
            recent = db.exec_driver_sql(
                self._recent_origins, (account_id, room, RESENT_WITHIN)
            ).fetchall()
            known.update((account_id, room, origin_id) for (origin_id,) in recent)
        fresh = []
        for account_id, line in kept:
            key = (account_id, line.room, line.origin_id)
            if line.origin_id:
                if key in known:
                    continue
                known.add(key)  # a second copy in this batch
            fresh.append((account_id, line))
        return fresh

    # --- accounts and the per-user switch ----------------------------------------------

    def _account(self, db: Connection, user: str) -> _Account | None:
        if user in self._accounts:
            return self._accounts[user]
        found = db.execute(
            select(AccountRow.id)
            .join(UserRow, AccountRow.user_id == UserRow.id)
            .where(UserRow.jid == user, AccountRow.bridge == self.bridge)
        ).scalar_one_or_none()
        if found is None:
            return None  # not cached: they may register later
        preference = db.execute(
            select(RecordRow.data).where(
                RecordRow.account_id == found,
                RecordRow.kind == PREFERENCE[0],
                RecordRow.key == PREFERENCE[1],
            )
        ).scalar_one_or_none()
        account = self._accounts[user] = _Account(
            found, bool((preference or {}).get("enabled", True))
        )
        return account

    def keeps(self, user: str) -> bool:
        """Whether `user`'s new lines will be stored, as far as known without a query.

        Unknown (not looked up yet) counts as yes: archiving is on unless turned off.
        """
        account = self._accounts.get(user)
        return account is None or account.enabled

    async def enabled(self, user: str) -> bool:
        """Whether the user keeps an archive (their switch; on unless they turned it off)."""
        account = await self._read(lambda db: self._account(db, user), flush=False)
        return account is not None and account.enabled

    async def set_enabled(self, user: str, enabled: bool) -> None:
        """The user's switch; turning it off also deletes what is archived for them."""
        await self.flush()
        async with self._sessions.begin() as db:
            account = await db.run_sync(lambda sync: self._account(sync.connection(), user))
            if account is None:
                raise LookupError(f"{user} has no account on {self.bridge}")
            record = (
                await db.execute(
                    select(RecordRow).where(
                        RecordRow.account_id == account.id,
                        RecordRow.kind == PREFERENCE[0],
                        RecordRow.key == PREFERENCE[1],
                    )
                )
            ).scalar_one_or_none()
            if record is None:
                db.add(
                    RecordRow(
                        account_id=account.id,
                        kind=PREFERENCE[0],
                        key=PREFERENCE[1],
                        data={"enabled": enabled},
                    )
                )
            else:
                record.data = {"enabled": enabled}
            if not enabled:
                await db.execute(delete(ArchiveRow).where(ArchiveRow.account_id == account.id))
            account.enabled = enabled

    def forget(self, user: str) -> None:
        """The user unregistered (their rows go with the account): drop the cached id."""
        self._accounts.pop(user, None)

    # --- reading ---------------------------------------------------------------------

    async def _read(self, query: Callable[[Connection], _T], *, flush: bool = True) -> _T:
        """Run `query` on a connection, after the writer caught up (`flush`).

        On an SQLite file, in this thread: a page of 50 takes SQLite a tenth of a
        millisecond, while handing each statement to aiosqlite's thread and back costs
        milliseconds, and tens of them when the thread waits for the GIL behind a busy
        event loop (the p99 of a MAM page was that wait). WAL lets this read run beside
        the writer's transaction without waiting for its lock.
        """
        if flush:
            await self.flush()
        if self._local is not None:
            with self._local.connect() as db:
                return query(db)
        async with self.engine.connect() as db:
            return await db.run_sync(query)

    async def latest(
        self, user: str, room: str, limit: int, since: datetime | None = None
    ) -> list[Line]:
        """The last `limit` messages of `room` (after `since`), oldest first, with the
        reaction sets to them (REACTION lines, also after `since`) in their places.

        Reactions count toward no limit (XEP-0045 `maxstanzas` counts messages), and
        a set to a message not in the history is left out: it would point at nothing.
        """
        if limit <= 0:
            return []

        def query(db: Connection) -> list[Line]:
            account = self._account(db, user)
            if account is None:
                return []
            where = [*_room_is(account.id, room)]
            if since is not None:
                where.append(ArchiveRow.sent > _utc(since))
            columns = (*_COLUMNS, ArchiveRow.id)
            messages = db.execute(
                select(*columns)
                .where(*where, ArchiveRow.kind != REACTION)
                .order_by(*_NEWEST)
                .limit(limit)
            ).all()
            reactions = db.execute(
                select(*columns).where(
                    *where,
                    ArchiveRow.kind == REACTION,
                    ArchiveRow.reply_to.in_([row.stanza_id for row in messages]),
                )
            ).all()
            rows = sorted([*messages, *reactions], key=lambda row: (_utc(row.sent), row.id))
            return [_line(user, row) for row in rows]

        return await self._read(query)

    async def page(self, user: str, room: str, wanted: Filter, paging: PageRequest) -> Page:
        """One MAM page; raise UnknownId for an id (form or RSM) the archive lacks."""

        def query(db: Connection) -> Page:
            account = self._account(db, user)
            named = {wanted.after_id, wanted.before_id, paging.after, paging.before, *wanted.ids}
            named.discard(None)
            if account is None:
                if named:
                    raise UnknownId(", ".join(sorted(str(n) for n in named)))
                return Page([], True)
            positions = self._positions(db, account.id, room, named)
            where = [*_room_is(account.id, room)]
            if wanted.start is not None:
                where.append(ArchiveRow.sent >= _utc(wanted.start))
            if wanted.end is not None:
                where.append(ArchiveRow.sent <= _utc(wanted.end))
            if wanted.nick is not None:
                where.append(ArchiveRow.nick == wanted.nick)
            if wanted.ids:
                where.append(ArchiveRow.stanza_id.in_(wanted.ids))
            for after in (wanted.after_id, paging.after):
                if after is not None:
                    where.append(tuple_(*positions[after]) < _ORDER)
            for before in (wanted.before_id, paging.before):
                if before is not None:
                    where.append(tuple_(*positions[before]) > _ORDER)
            backward = paging.before is not None or paging.last
            rows = list(
                db.execute(
                    select(*_COLUMNS)
                    .where(*where)
                    .order_by(*(_NEWEST if backward else _OLDEST))
                    .limit(paging.max + 1)
                ).all()
            )
            complete = len(rows) <= paging.max
            rows = rows[: paging.max]
            if backward:
                rows.reverse()
            return Page([_line(user, row) for row in rows], complete)

        return await self._read(query)

    def _positions(
        self, db: Connection, account_id: int, room: str, ids: Iterable[str | None]
    ) -> dict[str, tuple[datetime, int]]:
        """Where each named line is in the archive's order (time, then arrival)."""
        wanted = {i for i in ids if i is not None}
        if not wanted:
            return {}
        rows = db.execute(
            select(ArchiveRow.stanza_id, ArchiveRow.sent, ArchiveRow.id).where(
                *_room_is(account_id, room), ArchiveRow.stanza_id.in_(wanted)
            )
        )
        found = {stanza_id: (_utc(sent), row_id) for stanza_id, sent, row_id in rows}
        missing = wanted - found.keys()
        if missing:
            raise UnknownId(", ".join(sorted(missing)))
        return found

    async def find(
        self, user: str, room: str, message_id: str, *, every_legacy_id: bool = False
    ) -> Line | None:
        """The line of `room` a client or the legacy side refers to by `message_id`.

        Clients name a room message by its stanza-id (XEP-0461, 0444, 0424), by the
        `id` attribute they saw (XEP-0308: a legacy id, or their own id or origin-id),
        the legacy side by its own id (IRC msgid); any of them finds it, also after a
        restart. One indexed query per kind of id, in that order (an OR over the four
        columns made SQLite scan the room: 9-13 ms at 20,000 lines, now 1-3 ms). A
        reaction line is never found: nothing replies to, corrects or reacts to one.
        `every_legacy_id` also loads the message's further legacy ids (a retraction
        removes every line of it); the lookups that name one line skip that query.
        """

        def query(db: Connection) -> Line | None:
            account = self._account(db, user)
            if account is None:
                return None
            for column in _ID_COLUMNS:
                row = db.execute(
                    select(*_COLUMNS)
                    .where(*_targets(account.id, room), column == message_id)
                    .order_by(ArchiveRow.id.desc())
                    .limit(1)
                ).first()
                if row is not None:
                    more = _more_legacy_ids(db, row.stanza_id) if every_legacy_id else ()
                    return _line(user, row, more)
            return None

        # A further line's msgid (a multi-line message) names the message too.
        return await self._read(query) or await self.find_by_legacy_id(user, room, message_id)

    async def reactions(
        self, user: str, room: str, target: str, nick: str | None
    ) -> tuple[str, ...] | None:
        """The current reactions of `nick` (None: of the user, whose reactions carry
        their client's id) to the line `target` (a stanza id); None when they never
        reacted to it."""

        def query(db: Connection) -> tuple[str, ...] | None:
            account = self._account(db, user)
            if account is None:
                return None
            sender = (
                ArchiveRow.xmpp_id.is_not(None)
                if nick is None
                else (ArchiveRow.nick == nick) & ArchiveRow.xmpp_id.is_(None)
            )
            body = db.execute(
                select(ArchiveRow.body)
                .where(
                    *_room_is(account.id, room),
                    ArchiveRow.kind == REACTION,
                    ArchiveRow.reply_to == target,
                    sender,
                )
                .order_by(ArchiveRow.id.desc())
                .limit(1)
            ).scalar()
            return None if body is None else tuple(body.split("\n")) if body else ()

        return await self._read(query)

    async def chat_reference(
        self, user: str, *, xmpp_id: str | None = None, legacy_id: str | None = None
    ) -> ChatReference | None:
        """The one-to-one message the user's clients know as `xmpp_id`, or the legacy
        side names `legacy_id` (the newest, should two share it)."""

        def query(db: Connection) -> ChatReference | None:
            account = self._account(db, user)
            if account is None:
                return None
            where = (
                ChatReferenceRow.xmpp_id == xmpp_id
                if xmpp_id is not None
                else ChatReferenceRow.legacy_id == legacy_id
            )
            row = db.execute(
                select(
                    ChatReferenceRow.xmpp_id,
                    ChatReferenceRow.legacy_id,
                    ChatReferenceRow.mine,
                    ChatReferenceRow.theirs,
                    ChatReferenceRow.more_legacy_ids,
                )
                .where(ChatReferenceRow.account_id == account.id, where)
                .order_by(ChatReferenceRow.updated.desc())
                .limit(1)
            ).first()
            if row is None:
                return None
            return ChatReference(
                user,
                row.xmpp_id,
                row.legacy_id,
                _split(row.mine),
                _split(row.theirs),
                _split(row.more_legacy_ids),
            )

        return await self._read(query)

    async def retract(self, user: str, room: str, stanza_id: str) -> None:
        """Turn a line into a tombstone: its body is gone, its place and ids stay."""

        def tombstone(db: Connection) -> None:
            account = self._account(db, user)
            if account is not None:
                db.execute(
                    update(ArchiveRow)
                    .where(*_room_is(account.id, room), ArchiveRow.stanza_id == stanza_id)
                    .values(body="", kind=RETRACTED)
                )

        await self.flush()
        await self._transaction(tombstone)

    async def bounds(self, user: str, room: str) -> tuple[Line, Line] | None:
        """The first and the last line of `room` (MAM metadata); None when empty."""

        def query(db: Connection) -> tuple[Line, Line] | None:
            account = self._account(db, user)
            if account is None:
                return None
            ends = []
            for order in (_OLDEST, _NEWEST):
                row = db.execute(
                    select(*_COLUMNS).where(*_room_is(account.id, room)).order_by(*order).limit(1)
                ).first()
                if row is None:
                    return None
                ends.append(_line(user, row))
            return ends[0], ends[1]

        return await self._read(query)

    async def find_by_legacy_id(self, user: str, room: str, legacy_id: str) -> Line | None:
        """The archived message of `room` that `legacy_id` (an IRC msgid) names: the
        message's first legacy id or any further one (another line of it); never a
        reaction line (a TAGMSG's msgid)."""

        def query(db: Connection) -> Line | None:
            account = self._account(db, user)
            if account is None:
                return None
            row = db.execute(
                select(*_COLUMNS).where(
                    *_targets(account.id, room), ArchiveRow.legacy_id == legacy_id
                )
            ).first()
            if row is None:
                row = db.execute(
                    select(*_COLUMNS)
                    .join(ArchiveLegacyIdRow, ArchiveLegacyIdRow.stanza_id == ArchiveRow.stanza_id)
                    .where(
                        ArchiveRow.kind != REACTION,
                        ArchiveLegacyIdRow.legacy_id == legacy_id,
                        ArchiveLegacyIdRow.account_id == account.id,
                        ArchiveLegacyIdRow.room == room,
                    )
                ).first()
            if row is None:
                return None
            return _line(user, row, _more_legacy_ids(db, row.stanza_id))

        return await self._read(query)

    # --- retention -------------------------------------------------------------------

    async def expire(self, now: datetime | None = None) -> int:
        """Delete lines and chat references older than `max_days` (none when it is 0),
        and the chat references of each account beyond its newest CHATS_KEPT; return
        how many lines went."""
        await self._bound_chats()
        if not self.max_days:
            return 0
        await self.flush()
        cutoff = _utc((now or datetime.now(UTC)) - timedelta(days=self.max_days))
        async with self._sessions.begin() as db:
            result: Any = await db.execute(delete(ArchiveRow).where(ArchiveRow.sent < cutoff))
            await db.execute(delete(ChatReferenceRow).where(ChatReferenceRow.updated < cutoff))
        removed = int(result.rowcount or 0)
        if removed:
            log.info("archive: removed %d lines older than %d days", removed, self.max_days)
        return removed

    async def _bound_chats(self) -> None:
        """Each account's chat references beyond its newest CHATS_KEPT are deleted
        (a transaction only when there are such)."""
        over = (
            select(ChatReferenceRow.account_id)
            .group_by(ChatReferenceRow.account_id)
            .having(func.count() > CHATS_KEPT)
        )
        accounts = await self._read(lambda db: db.execute(over).scalars().all(), flush=False)
        if not accounts:
            return
        async with self._sessions.begin() as db:
            await self._delete_beyond(db, accounts)

    async def _delete_beyond(self, db: AsyncSession, accounts: Sequence[int]) -> None:
        for account_id in accounts:
            oldest_kept = (
                await db.execute(
                    select(ChatReferenceRow.updated)
                    .where(ChatReferenceRow.account_id == account_id)
                    .order_by(ChatReferenceRow.updated.desc())
                    .offset(CHATS_KEPT - 1)
                    .limit(1)
                )
            ).scalar_one()
            await db.execute(
                delete(ChatReferenceRow).where(
                    ChatReferenceRow.account_id == account_id,
                    ChatReferenceRow.updated < oldest_kept,
                )
            )

    async def _cleanup_loop(self) -> None:
        while True:
            try:
                await self.expire()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("archive: retention cleanup failed: %s", exc)
            await asyncio.sleep(CLEANUP_INTERVAL)


SETTINGS_NODE = "archive"


def settings_command(archive: Archive) -> Command:
    """The ad-hoc command on the component JID with the user's archiving switch."""

    async def form(account: Account, _address: Address | None) -> list[FormField]:
        return [
            FormField(
                "enabled",
                "Archive my rooms (discussion history and MAM)",
                type="boolean",
                default=await archive.enabled(account.user),
                desc="Turning it off deletes everything archived for you.",
            )
        ]

    async def submit(
        account: Account, _address: Address | None, _store: AccountStore, values: dict[str, Any]
    ) -> str:
        enabled = bool(values.get("enabled"))
        await archive.set_enabled(account.user, enabled)
        if enabled:
            return "Your rooms are archived."
        return "Your rooms are no longer archived; what was archived is deleted."

    return Command(SETTINGS_NODE, "Room archive", form, submit)


def _room_is(account_id: int, room: str) -> tuple[ColumnElement[bool], ...]:
    return ArchiveRow.account_id == account_id, ArchiveRow.room == room


def _targets(account_id: int, room: str) -> tuple[ColumnElement[bool], ...]:
    """The lines of `room` a reply, correction, reaction or retraction can name."""
    return (*_room_is(account_id, room), ArchiveRow.kind != REACTION)


def _locked(exc: OperationalError) -> bool:
    """Whether SQLite failed for a lock another connection holds (SQLITE_BUSY)."""
    return str(getattr(exc.orig, "sqlite_errorname", "")).startswith("SQLITE_BUSY")


def _utc(moment: datetime) -> datetime:
    """UTC for storage and comparison: SQLite keeps the wall-clock digits it is given."""
    if moment.tzinfo is UTC:
        return moment
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


_WRITTEN = (
    *("account_id", "room", "stanza_id", "sent", "nick", "body", "kind"),
    *("legacy_id", "origin_id", "xmpp_id", "reply_to", "replaces", "occupant_id"),
)
"""The columns `Archive._write_rows` fills, in the order of its tuples."""


def _placeholders(paramstyle: str, count: int) -> list[str]:
    """`count` positional placeholders as the driver's `paramstyle` writes them (SQLite:
    `?`, asyncpg: `$1`), for `Connection.exec_driver_sql`."""
    if paramstyle == "qmark":
        return ["?"] * count
    if paramstyle in ("numeric", "numeric_dollar"):
        sign = "$" if paramstyle == "numeric_dollar" else ":"
        return [f"{sign}{n}" for n in range(1, count + 1)]
    return ["%s"] * count  # format, pyformat (psycopg)


def _insert_text(paramstyle: str, rows: int = 1) -> str:
    """The archive's insert of `rows` rows, a replay (a unique key taken) a no-op, in
    the driver's own SQL."""
    width = len(_WRITTEN)
    marks = _placeholders(paramstyle, width * rows)
    values = ", ".join(
        f"({', '.join(marks[start : start + width])})" for start in range(0, len(marks), width)
    )
    return (
        f"INSERT INTO {ArchiveRow.__tablename__} ({', '.join(_WRITTEN)})"
        f" VALUES {values} ON CONFLICT DO NOTHING"
    )


def _recent_origins_text(paramstyle: str) -> str:
    """The origin-ids of a room's last `RESENT_WITHIN` own lines (`Archive._not_resent`),
    in the driver's own SQL and read by one `fetchall`: built by SQLAlchemy and read
    row by row, it cost 0.5 ms a batch against 0.09, which at a few lines a batch (a
    room's usual pace) was most of archiving them."""
    account, room, limit = _placeholders(paramstyle, 3)
    return (
        f"SELECT origin_id FROM {ArchiveRow.__tablename__}"
        f" WHERE account_id = {account} AND room = {room} AND origin_id IS NOT NULL"
        f" ORDER BY id DESC LIMIT {limit}"
    )


@lru_cache(maxsize=ROWS_PER_INSERT)
def _sqlite_insert_text(rows: int) -> str:
    return _insert_text("qmark", rows)


def _sqlite_time(moment: datetime) -> str:
    """`moment` (UTC) as SQLAlchemy's SQLite DateTime stores it: `2026-01-31
    12:00:00.000000`, so stored times compare with the ones queries bind."""
    if moment.tzinfo is UTC:  # a live line: "…+00:00" cut off
        return moment.isoformat(" ", "microseconds")[:26]
    return _utc(moment).replace(tzinfo=None).isoformat(" ", "microseconds")


def _newer(new: _T | None, old: _T | None) -> _T | None:
    return old if new is None else new


def _joined(items: tuple[str, ...] | None) -> str | None:
    """Emojis or ids, one a line, as `chat_references` keeps them (None: not known)."""
    return None if items is None else "\n".join(items)


def _split(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(text.split("\n")) if text else ()


def _more_ids(account_id: int, line: Line) -> list[dict[str, Any]]:
    return [
        {
            "legacy_id": legacy_id,
            "account_id": account_id,
            "room": line.room,
            "stanza_id": line.stanza_id,
            "position": position,
        }
        for position, legacy_id in enumerate(line.more_legacy_ids, 1)
        if legacy_id != line.legacy_id
    ]


_ORDER = tuple_(ArchiveRow.sent, ArchiveRow.id)
"""The archive's order: by time, then arrival. A line filled in from the network's
chat history after a reconnect, stored after lines received live meanwhile, takes
its place in time, where the user would have seen it had they been online; its
index (ix_archive_order) serves paging, start/end and history alike."""
_OLDEST = (ArchiveRow.sent.asc(), ArchiveRow.id.asc())
_NEWEST = (ArchiveRow.sent.desc(), ArchiveRow.id.desc())

_COLUMNS = (
    ArchiveRow.room,
    ArchiveRow.stanza_id,
    ArchiveRow.sent,
    ArchiveRow.nick,
    ArchiveRow.body,
    ArchiveRow.kind,
    ArchiveRow.legacy_id,
    ArchiveRow.origin_id,
    ArchiveRow.xmpp_id,
    ArchiveRow.reply_to,
    ArchiveRow.replaces,
    ArchiveRow.occupant_id,
)
"""What reads load: plain rows (Core), not ORM objects, which cost more than the query."""
_ID_COLUMNS = (ArchiveRow.stanza_id, ArchiveRow.legacy_id, ArchiveRow.origin_id, ArchiveRow.xmpp_id)
"""The ids a message is named by, each with an index (see `Archive.find`)."""


def _more_legacy_ids(db: Connection, stanza_id: str) -> tuple[str, ...]:
    """The further legacy ids of the message `stanza_id`, in order."""
    return tuple(
        db.execute(
            select(ArchiveLegacyIdRow.legacy_id)
            .where(ArchiveLegacyIdRow.stanza_id == stanza_id)
            .order_by(ArchiveLegacyIdRow.position)
        ).scalars()
    )


def _line(user: str, row: Any, more_legacy_ids: tuple[str, ...] = ()) -> Line:
    return Line(
        user=user,
        room=row.room,
        stanza_id=row.stanza_id,
        sent=_utc(row.sent),
        nick=row.nick,
        body=row.body,
        kind=row.kind,
        legacy_id=row.legacy_id,
        origin_id=row.origin_id,
        xmpp_id=row.xmpp_id,
        reply_to=row.reply_to,
        replaces=row.replaces,
        more_legacy_ids=more_legacy_ids,
        occupant_id=row.occupant_id,
    )
