"""component.archive on SQLite and PostgreSQL: batched writes, history, MAM paging."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, event, text

from component import archive as archive_module
from component.archive import (
    REACTION,
    Archive,
    Filter,
    Line,
    PageRequest,
    UnknownId,
    stanza_id_for,
)
from component.models import ArchiveRow

ROOM = "#room%irc.x.org"
T0 = datetime.now(UTC).replace(microsecond=123456) - timedelta(days=1)
"""Recent: the fixture's archive keeps 30 days, and its retention task runs at start."""


def line(user: str, n: int, **fields) -> Line:
    values = {
        "user": user,
        "room": ROOM,
        "stanza_id": stanza_id_for(user, ROOM, None),
        "sent": T0 + timedelta(minutes=n),
        "nick": "bob",
        "body": f"line {n}",
        **fields,
    }
    return Line(**values)


@pytest.fixture
async def archive(engine, store):
    await store.save_account("a@x", "irc", settings={})
    await store.save_account("b@x", "irc", settings={})
    archive = Archive(engine, "irc", max_days=30)
    archive.start()
    yield archive
    await archive.stop()


async def fill(archive: Archive, user: str = "a@x", count: int = 10) -> list[Line]:
    lines = [line(user, n) for n in range(count)]
    for item in lines:
        archive.add(item)
    await archive.flush()
    return lines


def bodies(lines) -> list[str]:
    return [item.body for item in lines]


def transactions(archive: Archive, lines: int) -> int:
    """How many transactions the writer takes for a burst of `lines`."""
    return -(-lines // archive.batch_size)


@pytest.fixture
def commits():
    """Commits on any engine (the archive writes an SQLite file through its own)."""
    seen: list[int] = []

    def note(_conn):
        seen.append(1)

    event.listen(Engine, "commit", note)
    yield seen
    event.remove(Engine, "commit", note)


async def test_a_burst_is_few_transactions_and_keeps_every_field(archive, engine, commits):
    await archive.stop()  # without its retention task, whose commit would be counted
    archive = Archive(engine, "irc", max_days=0)
    archive.start()
    commits.clear()
    own = line(
        "a@x",
        999,
        kind="action",
        origin_id="o-1",
        xmpp_id="x-1",
        legacy_id="msg-1",
        reply_to=stanza_id_for("a@x", ROOM, None),
        replaces="x-0",
        occupant_id="account alice",
    )
    for item in [line("a@x", n) for n in range(200)] + [own]:
        archive.add(item)
    await archive.flush()
    assert len(commits) == transactions(archive, 201)
    [stored] = await archive.latest("a@x", ROOM, 1)
    assert stored == own  # microseconds and UTC survive both databases
    assert stored.message_id == "x-1"
    await archive.stop()


async def test_a_long_burst_leaves_the_event_loop_turns_between_transactions(archive, commits):
    """A flood's lines must not hold everyone else's work until all of them are stored
    (SQLite is written in the loop's thread, PostgreSQL off it)."""
    for n in range(4 * archive.batch_size):
        archive.add(line("a@x", n))
    seen: list[int] = []

    async def tick() -> None:
        while True:
            seen.append(len(commits))
            await asyncio.sleep(0)

    commits.clear()
    ticker = asyncio.create_task(tick())
    await archive.flush()
    ticker.cancel()
    assert len(commits) > 1
    assert any(0 < count < len(commits) for count in seen)


async def test_lines_trickling_in_through_a_flood_are_gathered_not_written_one_by_one(
    archive, engine, commits
):
    """An IRC flood reaches the archive a line or a few per loop turn, for longer than
    the writer gathers: each gathering must be written whole, not turn by turn."""
    await archive.stop()  # without its retention task, whose commit would be counted
    archive = Archive(engine, "irc", max_days=0)
    archive.start()
    commits.clear()
    started = asyncio.get_running_loop().time()
    for n in range(300):
        archive.add(line("a@x", n))
        await asyncio.sleep(0.001)  # the flood's pace, not a synchronisation
    await archive.flush()
    gatherings = (asyncio.get_running_loop().time() - started) / archive_module.GATHER
    assert len(commits) <= gatherings + 2
    assert len(await archive.latest("a@x", ROOM, 300)) == 300
    await archive.stop()


async def test_a_transactions_worth_of_lines_is_written_without_gathering_more(
    archive, engine, commits, monkeypatch
):
    """The writer gathers a slow room's lines for `GATHER` (a second), but once it has
    a whole transaction's worth it writes them at once: a flood is committed batch by
    batch as it comes, not a second of it at a time, and a few lines wait their turn."""
    await archive.stop()  # without its retention task, whose commit would be counted
    monkeypatch.setattr(archive_module, "GATHER", 60.0)
    archive = Archive(engine, "irc", max_days=0)
    archive.start()
    commits.clear()
    for n in range(3):
        archive.add(line("a@x", n))
    for _ in range(20):
        await asyncio.sleep(0)  # the writer's turns: it is gathering, not writing
    assert not commits
    written = asyncio.Event()

    def committed(_conn) -> None:
        written.set()

    event.listen(Engine, "commit", committed)
    try:
        for n in range(3, archive.batch_size):
            archive.add(line("a@x", n))
        async with asyncio.timeout(10):
            await written.wait()
    finally:
        event.remove(Engine, "commit", committed)
    assert len(await archive.latest("a@x", ROOM, archive.batch_size)) == archive.batch_size
    await archive.stop()


def test_the_row_insert_fills_every_column():
    """The writer's own INSERT names its columns: a column added to the model must be
    added there too, or its value would never be stored."""
    assert set(archive_module._WRITTEN) == set(ArchiveRow.__table__.columns.keys()) - {"id"}


async def test_replays_and_resent_messages_are_stored_once(archive, engine):
    replay = line("a@x", 1, legacy_id="msg-1", stanza_id=stanza_id_for("a@x", ROOM, "msg-1"))
    archive.add(replay)
    archive.add(line("a@x", 2, origin_id="o-1"))
    await archive.flush()
    archive.add(replay)  # the same msgid again (a bouncer replay after a restart, say)
    archive.add(line("a@x", 3, origin_id="o-1"))
    await archive.flush()
    async with engine.connect() as db:
        assert (await db.execute(text("SELECT count(*) FROM archive"))).scalar_one() == 2


async def test_each_user_reads_only_their_own_archive(archive):
    await fill(archive, "a@x", 3)
    archive.add(line("b@x", 7, body="for b only"))
    await archive.flush()
    assert bodies(await archive.latest("a@x", ROOM, 10)) == ["line 0", "line 1", "line 2"]
    assert bodies(await archive.latest("b@x", ROOM, 10)) == ["for b only"]
    b_id = (await archive.latest("b@x", ROOM, 1))[0].stanza_id
    with pytest.raises(UnknownId):
        await archive.page("a@x", ROOM, Filter(ids=(b_id,)), PageRequest(10))
    assert await archive.latest("nobody@x", ROOM, 10) == []


async def test_latest_with_since(archive):
    await fill(archive)
    recent = await archive.latest("a@x", ROOM, 3, since=T0 + timedelta(minutes=8, seconds=30))
    assert bodies(recent) == ["line 9"]
    assert bodies(await archive.latest("a@x", ROOM, 3)) == ["line 7", "line 8", "line 9"]


async def test_paging_forward_and_backward(archive):
    lines = await fill(archive)
    first = await archive.page("a@x", ROOM, Filter(), PageRequest(4))
    assert (bodies(first.lines), first.complete) == (
        ["line 0", "line 1", "line 2", "line 3"],
        False,
    )
    after = await archive.page("a@x", ROOM, Filter(), PageRequest(4, after=lines[7].stanza_id))
    assert (bodies(after.lines), after.complete) == (["line 8", "line 9"], True)
    last = await archive.page("a@x", ROOM, Filter(), PageRequest(4, last=True))
    assert (bodies(last.lines), last.complete) == (["line 6", "line 7", "line 8", "line 9"], False)
    before = await archive.page("a@x", ROOM, Filter(), PageRequest(4, before=lines[3].stanza_id))
    assert (bodies(before.lines), before.complete) == (["line 0", "line 1", "line 2"], True)
    empty = await archive.page("a@x", ROOM, Filter(), PageRequest(0))
    assert (empty.lines, empty.complete) == ([], False)


async def test_filters(archive):
    lines = await fill(archive)
    archive.add(line("a@x", 20, nick="carol", body="from carol"))
    await archive.flush()
    by_time = Filter(start=T0 + timedelta(minutes=2), end=T0 + timedelta(minutes=4))
    assert bodies((await archive.page("a@x", ROOM, by_time, PageRequest(10))).lines) == [
        "line 2",
        "line 3",
        "line 4",
    ]
    by_nick = await archive.page("a@x", ROOM, Filter(nick="carol"), PageRequest(10))
    assert bodies(by_nick.lines) == ["from carol"]
    between = Filter(after_id=lines[1].stanza_id, before_id=lines[4].stanza_id)
    assert bodies((await archive.page("a@x", ROOM, between, PageRequest(10))).lines) == [
        "line 2",
        "line 3",
    ]
    chosen = Filter(ids=(lines[5].stanza_id, lines[0].stanza_id))
    assert bodies((await archive.page("a@x", ROOM, chosen, PageRequest(10))).lines) == [
        "line 0",
        "line 5",
    ]
    with pytest.raises(UnknownId):
        await archive.page("a@x", ROOM, Filter(), PageRequest(10, after="no-such-id"))
    with pytest.raises(UnknownId):
        await archive.page(
            "a@x", "#other%irc.x.org", Filter(after_id=lines[0].stanza_id), PageRequest(1)
        )


async def test_bounds(archive):
    assert await archive.bounds("a@x", ROOM) is None
    lines = await fill(archive, count=3)
    assert await archive.bounds("a@x", ROOM) == (lines[0], lines[2])


async def test_retention_removes_old_lines_only(archive):
    await fill(archive, count=3)
    now = T0 + timedelta(days=30, minutes=1, seconds=30)  # lines 0 and 1 are over 30 days old
    assert await archive.expire(now) == 2
    assert bodies(await archive.latest("a@x", ROOM, 10)) == ["line 2"]
    forever = Archive(archive.engine, "irc", max_days=0)
    assert await forever.expire(now + timedelta(days=999)) == 0


async def test_retention_runs_by_itself_from_the_start(archive):
    await archive.stop()  # its own retention task would race the runner's below
    archive.add(line("a@x", 0, sent=datetime.now(UTC) - timedelta(days=31)))
    archive.add(line("a@x", 1))
    await archive.flush()
    assert len(await archive.latest("a@x", ROOM, 10)) == 2
    runner = Archive(archive.engine, "irc", max_days=30)
    runner.start()  # its cleanup task runs now, then hourly
    async with asyncio.timeout(10):
        while len(await runner.latest("a@x", ROOM, 10)) != 1:  # noqa: ASYNC110 - no event
            await asyncio.sleep(0.05)
    await runner.stop()


async def test_user_switch_stops_archiving_and_deletes(archive):
    await fill(archive, count=2)
    assert await archive.enabled("a@x")
    assert archive.keeps("a@x")
    await archive.set_enabled("a@x", False)
    assert not await archive.enabled("a@x") and not archive.keeps("a@x")
    assert await archive.latest("a@x", ROOM, 10) == []
    archive.add(line("a@x", 5))
    await archive.flush()
    assert await archive.latest("a@x", ROOM, 10) == []
    fresh = Archive(archive.engine, "irc")  # the switch is stored, not only cached
    assert not await fresh.enabled("a@x")
    await archive.set_enabled("a@x", True)
    archive.add(line("a@x", 6))
    await archive.flush()
    assert bodies(await archive.latest("a@x", ROOM, 10)) == ["line 6"]


async def test_removing_the_account_removes_its_archive(archive, store, engine):
    await fill(archive, count=2)
    assert await store.remove_account("a@x", "irc")
    archive.forget("a@x")
    async with engine.connect() as db:
        assert (await db.execute(text("SELECT count(*) FROM archive"))).scalar_one() == 0
    archive.add(line("a@x", 3))  # a line still in flight for the removed user
    await archive.flush()
    assert await archive.latest("a@x", ROOM, 10) == []


async def test_restart_keeps_the_archive(archive, engine):
    lines = await fill(archive, count=2)
    await archive.stop()
    again = Archive(engine, "irc")
    again.start()
    assert await again.latest("a@x", ROOM, 10) == lines
    await again.stop()


async def test_batches_are_written_in_order_and_read_at_once(archive, engine, commits):
    """Several batches of a long burst (each in statements of many rows), then a
    retraction: one transaction per batch and one for it, in the order asked for, and
    a MAM page right after sees all of it."""
    await archive.stop()  # without its retention task, whose commit would be counted
    archive = Archive(engine, "irc", max_days=0)
    archive.start()
    commits.clear()
    lines = [line("a@x", n) for n in range(archive_module.MAX_BATCH * 2 + 10)]
    for item in lines:
        archive.add(item)
    await archive.retract("a@x", ROOM, lines[-1].stanza_id)
    page = await archive.page("a@x", ROOM, Filter(), PageRequest(5, last=True))
    assert bodies(page.lines) == [item.body for item in lines[-5:-1]] + [""]
    assert page.lines[-1].kind == archive_module.RETRACTED
    assert await archive.latest("a@x", ROOM, len(lines)) == [*lines[:-1], page.lines[-1]]
    await archive.stop()
    assert len(commits) == transactions(archive, len(lines)) + 1  # the batches, the retraction


async def test_a_batch_that_fails_leaves_nothing_half_written(archive, engine, monkeypatch):
    """A crash (here: an error) in the middle of a batch loses at most that batch: its
    first statements are rolled back with it, the lines committed before stay, and
    the batch tried again is stored once."""
    first = await fill(archive, count=3)
    failing = {"left": 1}
    real = archive._insert_rows

    def fail_after_the_first_rows(db, rows):
        real(db, rows[:1])  # in the transaction, then the failure
        if failing["left"]:
            failing["left"] -= 1
            raise OSError("disk gone")
        real(db, rows[1:])

    monkeypatch.setattr(archive, "_insert_rows", fail_after_the_first_rows)
    monkeypatch.setattr(archive_module, "RETRY_DELAYS", (0.0,))
    second = [line("a@x", n) for n in range(10, 20)]
    for item in second:
        archive.add(item)
    await archive.flush()
    assert await archive.latest("a@x", ROOM, 100) == first + second
    assert await count(engine, "archive") == len(first) + len(second)


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
async def test_a_retraction_waits_for_a_lock_another_writer_holds(archive, engine):
    """The archive writes an SQLite file in the loop's thread, which waits 50 ms for
    the lock: a writer holding it longer (the account store, the retention run,
    another process) must delay the write, not lose it."""
    # Without its retention task: its DELETE, in aiosqlite's thread, could hold the
    # lock that the raw connection below waits for with the event loop blocked.
    await archive.stop()
    [target] = await fill(archive, count=1)
    other = sqlite3.connect(engine.url.database, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    asyncio.get_running_loop().call_later(0.3, other.execute, "COMMIT")
    try:
        await archive.retract("a@x", ROOM, target.stanza_id)
    finally:
        other.close()
    [stored] = await archive.latest("a@x", ROOM, 1)
    assert (stored.kind, stored.body) == (archive_module.RETRACTED, "")


async def test_stopping_writes_what_is_queued(archive, engine):
    lines = [line("a@x", n) for n in range(100)]
    for item in lines:
        archive.add(item)
    await archive.stop()
    again = Archive(engine, "irc")
    assert await again.latest("a@x", ROOM, 200) == lines
    await again.stop()


def multi_line(user: str = "a@x") -> Line:
    """An own message of three lines: three PRIVMSGs, three msgids (issue 10)."""
    return line(
        user,
        7,
        legacy_id="m1",
        more_legacy_ids=("m2", "m3"),
        stanza_id=stanza_id_for(user, ROOM, "origin-id o-7"),
        origin_id="o-7",
    )


async def count(engine, table: str) -> int:
    async with engine.connect() as db:
        return (await db.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()


async def test_every_legacy_id_of_a_multi_line_message_finds_it(archive):
    own = multi_line()
    archive.add(own)
    archive.add(line("b@x", 7, legacy_id="m2"))  # someone else's archive, same msgid
    for legacy_id in ("m1", "m2", "m3"):
        found = await archive.find_by_legacy_id("a@x", ROOM, legacy_id)
        assert found == own, legacy_id
    assert await archive.find_by_legacy_id("a@x", ROOM, "m4") is None
    assert await archive.find_by_legacy_id("a@x", "#other%irc.x.org", "m2") is None
    assert (await archive.find_by_legacy_id("b@x", ROOM, "m2")).body == "line 7"
    assert await archive.find_by_legacy_id("nobody@x", ROOM, "m1") is None
    # A retraction names it by its stanza id or origin-id and needs every msgid.
    for message_id in (own.stanza_id, "o-7", "m1", "m3"):
        assert await archive.find("a@x", ROOM, message_id, every_legacy_id=True) == own


async def test_a_replayed_line_of_a_multi_line_message_is_not_stored_again(archive, engine):
    archive.add(multi_line())
    await archive.flush()
    # Chat history after a reconnect brings each line back on its own, under its msgid.
    for n, legacy_id in enumerate(("m1", "m2", "m3")):
        archive.add(
            line(
                "a@x",
                7,
                body=f"piece {n}",
                legacy_id=legacy_id,
                stanza_id=stanza_id_for("a@x", ROOM, legacy_id),
            )
        )
    archive.add(line("a@x", 8, legacy_id="m9"))  # a new line in the same batch is kept
    await archive.flush()
    assert bodies(await archive.latest("a@x", ROOM, 10)) == ["line 7", "line 8"]


async def test_the_further_ids_go_with_their_message(archive, engine):
    archive.add(multi_line())
    await archive.flush()
    assert await count(engine, "archive_legacy_ids") == 2
    assert await archive.expire(T0 + timedelta(days=31)) == 1
    assert await count(engine, "archive_legacy_ids") == 0
    assert await archive.find_by_legacy_id("a@x", ROOM, "m2") is None


async def test_a_line_filled_in_later_takes_its_place_in_time(archive):
    """Chat history fetched after a reconnect is stored after the live lines received
    meanwhile; history and MAM show it where it was said, and paging past it works."""
    live = [line("a@x", n) for n in (0, 1, 4)]
    for item in live:
        archive.add(item)
    await archive.flush()
    filled = [line("a@x", n, legacy_id=f"h{n}") for n in (2, 3)]
    for item in filled:
        archive.add(item)
    want = ["line 0", "line 1", "line 2", "line 3", "line 4"]
    assert bodies(await archive.latest("a@x", ROOM, 10)) == want
    assert bodies((await archive.page("a@x", ROOM, Filter(), PageRequest(10))).lines) == want
    after = await archive.page("a@x", ROOM, Filter(), PageRequest(2, after=filled[0].stanza_id))
    assert bodies(after.lines) == ["line 3", "line 4"] and after.complete
    before = await archive.page("a@x", ROOM, Filter(), PageRequest(2, before=live[2].stanza_id))
    assert bodies(before.lines) == ["line 2", "line 3"] and not before.complete


async def test_lines_arriving_one_at_a_time_are_written_together(archive, engine, commits):
    """An IRC burst reaches the archive a line per read; the writer gathers them
    instead of committing each (the transactions were most of the archive's cost)."""
    await archive.stop()
    archive = Archive(engine, "irc", max_days=0)
    archive.start()
    commits.clear()
    for n in range(50):
        archive.add(line("a@x", n))
        await asyncio.sleep(0)  # the event loop turns between two lines, as live
    assert len(await archive.latest("a@x", ROOM, 100)) == 50
    assert len(commits) == 1
    await archive.stop()


async def test_the_writer_survives_a_shutdown_ending_stray_tasks(archive):
    """App.stop cancels every task but the archive's before the last flush; the
    writer gathering a burst must own no task of its own that this would cancel."""
    archive.add(line("a@x", 1))
    await asyncio.sleep(0)  # the writer is now gathering
    keep = {asyncio.current_task(), *archive.tasks}
    stray = [task for task in asyncio.all_tasks() if task not in keep]
    for task in stray:
        task.cancel()
    await asyncio.gather(*stray, return_exceptions=True)
    async with asyncio.timeout(10):
        await archive.stop()
    assert bodies(await archive.latest("a@x", ROOM, 10)) == ["line 1"]


async def test_the_newest_reaction_line_of_each_sender_is_their_set(archive):
    [target, other] = await fill(archive, count=2)

    def reacted(n: int, nick: str, emojis: str, **fields) -> Line:
        return line(
            "a@x", n, kind=REACTION, nick=nick, body=emojis, reply_to=target.stanza_id, **fields
        )

    for item in [
        reacted(3, "bob", "🎉"),
        reacted(4, "fred", "👍", xmpp_id="r-1"),  # the user's own (their client's id)
        reacted(5, "bob", "🎉\n❤️"),
        reacted(6, "carol", "👀"),
        reacted(7, "carol", ""),  # all taken back
    ]:
        archive.add(item)
    await archive.flush()
    current = {
        nick: await archive.reactions("a@x", ROOM, target.stanza_id, nick)
        for nick in ("bob", "carol", "dave", None)
    }
    assert current == {"bob": ("🎉", "❤️"), "carol": (), "dave": None, None: ("👍",)}
    assert await archive.reactions("a@x", ROOM, other.stanza_id, "bob") is None
    assert await archive.reactions("b@x", ROOM, target.stanza_id, "bob") is None


async def test_history_counts_messages_and_brings_their_reactions(archive):
    """`maxstanzas` counts messages: reaction lines come with the messages they are
    for, in their places, and those to older messages stay out."""
    lines = await fill(archive, count=4)
    for n, target in ((10, lines[0]), (11, lines[3]), (12, lines[2]), (13, lines[3])):
        archive.add(line("a@x", n, kind=REACTION, body="👍", reply_to=target.stanza_id))
    await archive.flush()
    shown = await archive.latest("a@x", ROOM, 2)
    assert [(item.kind, item.body, item.reply_to) for item in shown] == [
        ("message", "line 2", None),
        ("message", "line 3", None),
        (REACTION, "👍", lines[3].stanza_id),
        (REACTION, "👍", lines[2].stanza_id),
        (REACTION, "👍", lines[3].stanza_id),
    ]


async def test_a_reaction_line_is_no_target(archive):
    """A reply or correction names a message; a TAGMSG's msgid or a reaction's
    own ids find nothing, while the message's do."""
    [target] = await fill(archive, count=1)
    reaction = line(
        "a@x",
        2,
        kind=REACTION,
        body="👍",
        reply_to=target.stanza_id,
        legacy_id="tagmsg-1",
        xmpp_id="react-1",
    )
    archive.add(reaction)
    await archive.flush()
    for named in (reaction.stanza_id, "tagmsg-1", "react-1"):
        assert await archive.find("a@x", ROOM, named) is None, named
    found = await archive.find("a@x", ROOM, target.stanza_id)
    assert found is not None and found.body == "line 0"


async def test_own_lines_are_found_by_their_client_ids_from_indexes_in_arrival_order(
    archive, engine
):
    """A correction or retraction names the user's line by their client's (random)
    id or origin-id; the indexes that find them are ordered by arrival, so archiving
    an own line adds to their end instead of rewriting a random page of each
    (migration 0010), and a lookup reads the room's own lines newest first without
    sorting them."""
    own = [
        line(
            "a@x",
            n,
            xmpp_id=f"client-{(n * 7919) % 1000}-{n}",
            origin_id=f"origin-{n * 31 % 97}-{n}",
        )
        for n in range(300)
    ]
    for item in own:
        archive.add(item)
    await archive.flush()
    statements: dict[str, tuple[str, object]] = {}

    def seen(_conn, _cursor, statement, parameters, _context, _many):
        for column in ("origin_id", "xmpp_id"):
            if f"{column} =" in statement:
                statements.setdefault(column, (statement, parameters))

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        assert await archive.find("a@x", ROOM, own[0].xmpp_id) == own[0]
        assert await archive.find("a@x", ROOM, own[-1].origin_id) == own[-1]
        assert await archive.find("b@x", ROOM, own[0].xmpp_id) is None
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    for column, (statement, parameters) in statements.items():
        index = f"ix_archive_{column}"
        async with engine.connect() as db:
            if engine.dialect.name == "sqlite":
                rows = await db.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
                plan = " | ".join(str(row[-1]) for row in rows)
                columns = await db.exec_driver_sql(f"PRAGMA index_info({index})")
                indexed = [row[2] for row in columns]
            else:
                await db.exec_driver_sql("SET enable_seqscan = off")  # a small table otherwise
                rows = await db.exec_driver_sql(f"EXPLAIN {statement}", parameters)
                plan = " | ".join(str(row[0]) for row in rows)
                found = await db.exec_driver_sql(
                    "SELECT a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
                    f" WHERE c.relname = '{index}'"
                    " ORDER BY array_position(i.indkey::int2[], a.attnum)"
                )
                indexed = [row[0] for row in found]
        assert indexed == ["account_id", "room", "id", column]
        assert index in plan, plan
        assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan


async def test_a_message_re_sent_among_the_rooms_last_own_lines_is_stored_once(
    archive, engine, monkeypatch
):
    """The origin-id is matched against the user's last `RESENT_WITHIN` own lines of
    the room, in the same batch or an earlier one; further back, a line with the same
    origin-id is a new message (clients make a new origin-id for each)."""
    monkeypatch.setattr(archive_module, "RESENT_WITHIN", 3)
    first = line("a@x", 0, origin_id="o-0")
    for item in (first, line("a@x", 1, origin_id="o-0"), line("b@x", 1, origin_id="o-0")):
        archive.add(item)  # the second is the first again; b's is in another archive
    await archive.flush()
    archive.add(line("a@x", 2, origin_id="o-0", room="#other%irc.x.org"))  # another room
    for n in (3, 4):
        archive.add(line("a@x", n, origin_id=f"o-{n}"))
    archive.add(line("a@x", 5, origin_id="o-0"))  # within the last 3: o-0, o-3, o-4
    await archive.flush()
    assert bodies(await archive.latest("a@x", ROOM, 10)) == ["line 0", "line 3", "line 4"]
    archive.add(line("a@x", 6, origin_id="o-6"))
    await archive.flush()
    archive.add(line("a@x", 7, origin_id="o-0"))  # now 4 own lines back
    await archive.flush()
    assert bodies(await archive.latest("a@x", ROOM, 10))[-2:] == ["line 6", "line 7"]
    assert len(await archive.latest("b@x", ROOM, 10)) == 1


def test_derived_archive_ids_stay_those_earlier_versions_stored():
    """A replay of a line archived by an earlier version must get the id stored then,
    or it is stored twice: these ids were computed with uuid.uuid5 (version 5 without
    a time; version 8, the time and uuid5's bits, with one)."""
    sent = datetime(2026, 12, 3, 15, 0, 0, 123456, tzinfo=UTC)
    assert stanza_id_for("a@x", ROOM, "msgid-1") == str(
        uuid.uuid5(uuid.UUID("2f1b8c1e-5d0a-4f4e-9a57-0f3c2d1e6b7a"), f"a@x\0{ROOM}\0msgid-1")
    )
    assert stanza_id_for("a@x", "#room%irc.localhost", "msgid-1", sent) == (
        "01a23c6b-61fb-8006-9a99-b604fd1c6bb8"
    )
    elsewhere = sent.astimezone(timezone(timedelta(hours=2)))
    assert stanza_id_for("a@x", "#room%irc.localhost", "msgid-1", elsewhere) == (
        "01a23c6b-61fb-8006-9a99-b604fd1c6bb8"
    )
    unicode = stanza_id_for("é@x", "#rööm%irc.localhost", "ü")
    assert unicode == "c6691b07-9982-5720-9e20-28270ca023c6"


async def test_archive_ids_follow_time_and_a_replay_keeps_its_id(archive, engine):
    """A line's archive id is derived from its msgid and the time the network gave it,
    which a replay repeats (so the replay is the stored line), and starts with that
    time, like a random id starts with the arrival's: the unique index on the ids grows
    at its end instead of taking each line on a random page (bench/archive_pages.py)."""
    derived = [
        stanza_id_for("a@x", ROOM, f"msgid-{n % 7}-{n}", T0 + timedelta(milliseconds=n))
        for n in range(50)
    ]
    assert derived == sorted(derived)
    assert stanza_id_for("a@x", ROOM, "msgid-0-0", T0) == derived[0]
    assert stanza_id_for("b@x", ROOM, "msgid-0-0", T0) != derived[0]  # the user's own archive
    random_ids = []
    for _ in range(50):
        random_ids.append(stanza_id_for("a@x", ROOM, None))
        await asyncio.sleep(0.001)  # the next millisecond, the next id
    assert random_ids == sorted(random_ids) and len(set(random_ids)) == 50

    sent = T0 + timedelta(minutes=3)
    live = line("a@x", 3, legacy_id="m-3", stanza_id=stanza_id_for("a@x", ROOM, "m-3", sent))
    archive.add(live)
    await archive.flush()
    replayed = line("a@x", 3, legacy_id="m-3", stanza_id=stanza_id_for("a@x", ROOM, "m-3", sent))
    archive.add(replayed)
    await archive.flush()
    assert await archive.latest("a@x", ROOM, 5) == [live]
