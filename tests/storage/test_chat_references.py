"""component.chats over the archive's writer, on SQLite and PostgreSQL: the ids and
reaction sets of one-to-one chats outlive the process, bounded, and go with the account."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from component import archive as archive_module
from component.archive import Archive
from component.chats import PrivateChats


@pytest.fixture
async def archive(engine, store):
    await store.save_account("a@x", "irc", settings={})
    archive = Archive(engine, "irc", max_days=30)
    archive.start()
    yield archive
    await archive.stop()


async def restarted(archive: Archive) -> tuple[Archive, PrivateChats]:
    """What a new process sees: the archive stopped (its writer flushed), a new one."""
    await archive.stop()
    fresh = Archive(archive.engine, "irc", max_days=30)
    fresh.start()
    return fresh, PrivateChats(fresh)


async def test_ids_and_reaction_sets_outlive_the_process(archive):
    chats = PrivateChats(archive)
    chats.note("a@x", "msgid-bob", "msgid-bob")  # a contact's message, known by its msgid
    chats.note("a@x", "client-1", "msgid-fred")  # the user's, once IRC echoed it
    assert await chats.users_change("a@x", "msgid-bob", ["👍"]) == (["👍"], [])
    chats.users_set("a@x", "msgid-bob", ["👍"])
    assert await chats.contacts_change("a@x", "client-1", "🎉", removed=False) == ["🎉"]

    archive, chats = await restarted(archive)
    assert await chats.legacy_id("a@x", "client-1") == "msgid-fred"
    assert await chats.legacy_id("a@x", "msgid-bob") == "msgid-bob"
    assert await chats.xmpp_id("a@x", "msgid-fred") == "client-1"
    assert await chats.legacy_id("a@x", "never-seen") is None
    assert await chats.xmpp_id("a@x", "never-seen") is None
    assert await chats.users_change("a@x", "msgid-bob", ["🎉"]) == (["🎉"], ["👍"])
    assert await chats.contacts_change("a@x", "client-1", "👀", removed=False) == ["🎉", "👀"]
    # A replayed message (a bouncer after a reconnect) keeps the sets it had.
    chats.note("a@x", "msgid-bob", "msgid-bob")
    chats.users_set("a@x", "msgid-bob", [])

    archive, chats = await restarted(archive)
    assert await chats.users_change("a@x", "msgid-bob", ["👍"]) == (["👍"], [])
    assert await chats.contacts_change("a@x", "client-1", "🎉", removed=True) == ["👀"]
    await archive.stop()


async def test_every_msgid_of_a_multi_line_message_outlives_the_process(archive):
    """A retraction REDACTs each line; a reaction's set change (another field) keeps them."""
    chats = PrivateChats(archive)
    chats.note("a@x", "client-1", "msgid-1", ("msgid-2", "msgid-3"))
    assert await chats.xmpp_id("a@x", "msgid-2") == "client-1"  # any line names it
    assert await chats.contacts_change("a@x", "client-1", "🎉", removed=False) == ["🎉"]

    archive, chats = await restarted(archive)
    assert await chats.legacy_ids("a@x", "client-1") == ("msgid-1", "msgid-2", "msgid-3")
    assert await chats.legacy_id("a@x", "client-1") == "msgid-1"
    assert await chats.legacy_ids("a@x", "never-seen") == ()
    await archive.stop()


async def test_each_account_keeps_its_newest(archive, monkeypatch):
    monkeypatch.setattr(archive_module, "CHATS_KEPT", 3)
    chats = PrivateChats(archive)
    for n in range(5):
        chats.note("a@x", f"id-{n}", f"msgid-{n}")
    await archive.flush()
    await archive.expire()
    archive, chats = await restarted(archive)
    kept = [await chats.legacy_id("a@x", f"id-{n}") for n in range(5)]
    assert kept == [None, None, "msgid-2", "msgid-3", "msgid-4"]
    # and the archive's retention: nothing is older than max_days
    await archive.expire(datetime.now(UTC) + timedelta(days=31))
    archive, chats = await restarted(archive)
    assert await chats.legacy_id("a@x", "id-4") is None
    await archive.stop()


async def test_unregistering_deletes_them(archive, store):
    chats = PrivateChats(archive)
    chats.note("a@x", "client-1", "msgid-fred")
    await archive.flush()
    assert await store.remove_account("a@x", "irc")
    chats.forget("a@x")
    archive.forget("a@x")
    await store.save_account("a@x", "irc", settings={})  # registered again: a clean slate
    assert await chats.legacy_id("a@x", "client-1") is None
    archive, chats = await restarted(archive)
    assert await chats.legacy_id("a@x", "client-1") is None
    await archive.stop()
