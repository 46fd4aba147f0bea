import asyncio
import subprocess
import sys

import pytest
from sqlalchemy import event, text

import migrations
from component.crypto import SecretBox, generate_key
from component.db import (
    SchemaOutdated,
    create_engine,
    current_revision,
    ensure_current,
    script_head,
)
from component.store import AccountStorage, Store

BRIDGES = ("irc", "mail", "fake")


async def test_account_life(store, engine):
    assert await store.get_account("a@x", "irc") is None
    await store.save_account("a@x", "irc", settings={"nick": "a"}, secrets={"pw": "hunter2"})
    account = await store.get_account("a@x", "irc")
    assert (account.settings, account.secrets, account.state) == (
        {"nick": "a"},
        {"pw": "hunter2"},
        {},
    )

    await store.save_account("a@x", "irc", state={"uid": 7})
    account = await store.get_account("a@x", "irc")
    assert (account.settings, account.secrets, account.state) == (
        {"nick": "a"},
        {"pw": "hunter2"},
        {"uid": 7},
    )

    async with engine.connect() as db:
        raw = (await db.execute(text("SELECT secrets FROM accounts"))).scalar_one()
    assert "hunter2" not in raw


async def test_an_account_without_secrets_stores_no_token_and_never_uses_the_cipher(
    store, engine, monkeypatch
):
    """Most IRC users register no password: sealing their empty secrets loaded
    `cryptography` (about 8 MiB resident) into the gateway for the first of them."""
    await store.save_account("a@x", "irc", secrets={"pw": "hunter2"})
    await store.save_account("a@x", "irc", secrets={})  # the password removed

    def no_cipher(_box: SecretBox) -> None:
        raise AssertionError("the cipher was used")

    monkeypatch.setattr(SecretBox, "_fernet", property(no_cipher))
    await store.save_account("b@x", "irc", settings={"nick": "b"}, secrets={})
    for user in ("a@x", "b@x"):
        account = await store.get_account(user, "irc")
        assert account is not None and account.secrets == {}
    async with engine.connect() as db:
        stored = (await db.execute(text("SELECT secrets FROM accounts"))).scalars().all()
    assert stored == ["", ""]


async def test_accounts_per_bridge_and_removal_cascades(store, engine):
    await store.save_account("a@x", "irc", settings={})
    await store.save_account("a@x", "mail", settings={})
    await store.save_account("b@x", "mail", settings={})
    await store.put_record("a@x", "mail", "outbox", "1", {"to": "c"})
    assert await store.registrations() == [("a@x", "irc"), ("a@x", "mail"), ("b@x", "mail")]
    assert [a.user for a in await store.accounts("mail")] == ["a@x", "b@x"]

    assert await store.remove_account("a@x", "mail")
    assert not await store.remove_account("a@x", "mail")
    assert await store.registrations() == [("a@x", "irc"), ("b@x", "mail")]
    assert await store.remove_account("a@x", "irc")
    async with engine.connect() as db:
        users = (await db.execute(text("SELECT jid FROM users"))).scalars().all()
        records = (await db.execute(text("SELECT count(*) FROM records"))).scalar_one()
    assert (users, records) == (["b@x"], 0)


async def test_records_keep_insertion_order_and_update_in_place(store):
    await store.save_account("a@x", "mail", settings={})
    storage = AccountStorage(store, "a@x", "mail")
    for key in ("b", "a", "c"):
        await storage.put_record("outbox", key, {"n": key})
    await storage.put_record("outbox", "a", {"n": "A"})
    await storage.put_record("threads", "a", {"other": True})
    assert await storage.list_records("outbox") == [
        ("b", {"n": "b"}),
        ("a", {"n": "A"}),
        ("c", {"n": "c"}),
    ]
    assert await storage.get_record("outbox", "a") == {"n": "A"}
    await storage.delete_record("outbox", "a")
    assert await storage.get_record("outbox", "a") is None
    assert await storage.get_record("threads", "a") == {"other": True}


async def test_records_need_an_account(store):
    with pytest.raises(LookupError):
        await store.put_record("nobody@x", "mail", "outbox", "1", {})


async def test_schema_check(engine, tmp_path):
    await ensure_current(engine)  # upgraded by the fixture
    assert await current_revision(engine) is not None
    empty = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(SchemaOutdated, match="db upgrade"):
        await ensure_current(empty)
    await empty.dispose()


def test_the_head_a_start_checks_for_is_the_newest_migration():
    """A start reads migrations.HEAD instead of loading Alembic: it must not lag behind."""
    assert script_head() == migrations.HEAD


def test_a_gateway_loads_neither_alembic_nor_prometheus_unless_used():
    """Idle RSS: migrations and metrics libraries are imported when they are needed."""
    code = (
        "import sys, component.app, bridges.irc, bridges.mail; "
        "print(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'alembic', 'mako', 'prometheus_client'}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"


async def test_a_thousand_callers_at_once_take_turns_instead_of_timing_out_in_the_pool(engine):
    """A failover starts a thousand sessions, each reading its records at once: the
    store lets `concurrency` of them use the pool at a time, and none fails."""
    store = Store(engine, SecretBox(generate_key()), concurrency=3)
    await store.save_account("a@x", "irc", settings={})
    out, most = 0, 0

    def checked_out(*_: object) -> None:
        nonlocal out, most
        out += 1
        most = max(most, out)

    def checked_in(*_: object) -> None:
        nonlocal out
        out -= 1

    event.listen(engine.sync_engine.pool, "checkout", checked_out)
    event.listen(engine.sync_engine.pool, "checkin", checked_in)
    try:
        found = await asyncio.gather(
            *(store.get_record("a@x", "irc", "irc-last-seen", str(n)) for n in range(1000))
        )
    finally:
        event.remove(engine.sync_engine.pool, "checkout", checked_out)
        event.remove(engine.sync_engine.pool, "checkin", checked_in)
    assert found == [None] * 1000
    assert most <= 3


async def test_simultaneous_first_writes_all_succeed(store):
    """Writes that look a row up and add it when missing, started together, all land.

    A user registering with two bridges at once (two `users` rows wanted), and a bridge
    saving one record from two tasks: on SQLite each lookup ran outside the write
    transaction, so both callers missed the row and the second insert broke the unique
    key, failing a registration with an internal error.
    """
    users = [f"u{i}@x" for i in range(10)]
    await asyncio.gather(
        *(store.save_account(user, bridge, settings={}) for user in users for bridge in BRIDGES)
    )
    assert await store.registrations() == [
        (user, bridge) for user in sorted(users) for bridge in sorted(BRIDGES)
    ]
    await asyncio.gather(
        *(store.put_record(user, "irc", "k", "same", {"n": n}) for user in users for n in range(5))
    )
    for user in users:
        assert [key for key, _ in await store.list_records(user, "irc", "k")] == ["same"]
