"""Per-user leases between two instances on a real PostgreSQL (component.ownership).

Each instance is registered as the gateway registers itself: a row naming an open
connection of its own (its lock connection), which is what makes it alive.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from xmpp_client import eventually

from bridges.timeouts import within
from component import advisory_lock
from component import ownership as ownership_module
from component.advisory_lock import AdvisoryLock
from component.db import create_engine, upgrade
from component.devstack.postgres import Postgres
from component.devstack.process import free_port
from component.leadership import LOCK_CLASS, REGISTER
from component.ownership import DatabaseSlow, Ownership, instances

USER = "alice@example.org"
_databases = itertools.count()


@pytest.fixture
async def pg(postgres: Postgres) -> AsyncIterator[tuple[AsyncEngine, str]]:
    url = await postgres.create_database(f"owners{next(_databases)}")
    engine = create_engine(url)
    await upgrade(engine)
    yield engine, url.replace("postgresql+asyncpg", "postgresql")
    await engine.dispose()


async def alive(dsn: str, instance: str, slot: int) -> asyncpg.Connection:
    """An instance's lock connection with its registry row: open means alive."""
    connection = await asyncpg.connect(dsn)
    await connection.execute(REGISTER, instance, "host", 4000 + slot, "active", slot)
    return connection


class Moves:
    """An Ownership whose on_lost notes the users whose sessions it had to stop."""

    def __init__(self, engine: AsyncEngine, instance: str) -> None:
        self.stopped: list[str] = []
        self.started: list[str] = []
        self.ownership = Ownership(engine, instance, "irc", "irc.localhost", 2)

        async def on_lost(user: str) -> None:
            self.stopped.append(user)

        async def on_gained(user: str) -> None:
            self.started.append(user)

        self.ownership.on_lost = on_lost
        self.ownership.on_gained = on_gained


async def test_a_dead_holders_users_are_taken_at_once(pg) -> None:
    engine, dsn = pg
    a_lock, b_lock = await alive(dsn, "a", 0), await alive(dsn, "b", 1)
    a, b = Moves(engine, "a"), Moves(engine, "b")
    assert await a.ownership.claim(USER)
    assert {row.id: row.users for row in await instances(engine)} == {"a": 1, "b": 0}
    await a_lock.close()  # kill -9: PostgreSQL drops the connection
    assert await within(b.ownership.claim(USER), 1)
    await a.ownership.renew()  # a (were it still running) learns and stops the session
    assert a.stopped == [USER] and not a.ownership.owns(USER)
    assert [row.id for row in await instances(engine)] == ["b"]
    await b_lock.close()


async def test_a_live_holder_hands_over_a_user_it_no_longer_hears_from(pg) -> None:
    engine, dsn = pg
    locks = [await alive(dsn, "a", 0), await alive(dsn, "b", 1)]
    a, b = Moves(engine, "a"), Moves(engine, "b")
    assert await a.ownership.claim(USER)
    a.ownership._seen[USER] -= 60  # its stanzas stopped coming to a a minute ago
    wanting = asyncio.ensure_future(b.ownership.claim(USER))
    await asyncio.sleep(0.3)  # b has asked; a's renewal comes once a second
    assert not wanting.done()
    await a.ownership.renew()
    assert await wanting and a.stopped == [USER]  # stopped at a before b owns it
    assert not a.ownership.owns(USER) and b.ownership.owns(USER)
    for lock in locks:
        await lock.close()


async def test_stanzas_at_two_live_instances_are_random_routing_and_stay_put(
    pg, caplog: pytest.LogCaptureFixture
) -> None:
    engine, dsn = pg
    locks = [await alive(dsn, "a", 0), await alive(dsn, "b", 1)]
    a, b = Moves(engine, "a"), Moves(engine, "b")
    assert await a.ownership.claim(USER)
    await a.ownership.renew()  # writes when a last heard from the user
    caplog.set_level(logging.WARNING)
    wanting = asyncio.ensure_future(b.ownership.claim(USER))
    await asyncio.sleep(0.3)
    await a.ownership.renew()  # a heard from the user just now: it keeps them
    assert not await wanting
    assert a.ownership.owns(USER) and not a.stopped
    assert "spreads one user's stanzas over several connections" in caplog.text
    assert "no domain_balancing for irc.localhost" in caplog.text
    assert "or its type is source" in caplog.text
    assert "{irc.localhost: {type: bare_source, component_number: 2}}" in caplog.text
    for lock in locks:
        await lock.close()


async def test_a_slow_database_refuses_a_routing_decision_in_bounded_time(
    pg, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user_owners table is locked (a slow database): the claim gives up after
    QUERY_TIMEOUT instead of holding the user's lane; the query runs on, and the lease
    it took once the table is free counts (the user's sessions are started)."""
    engine, dsn = pg
    lock = await alive(dsn, "a", 0)
    monkeypatch.setattr(ownership_module, "QUERY_TIMEOUT", 0.3)
    a = Moves(engine, "a")
    blocker = await asyncpg.connect(dsn)
    transaction = blocker.transaction()
    await transaction.start()
    await blocker.execute("LOCK TABLE user_owners IN ACCESS EXCLUSIVE MODE")
    with pytest.raises(DatabaseSlow, match=r"within 0\.3 s"):
        await within(a.ownership.claim(USER), 5)  # a bound for the test only
    assert not a.ownership.owns(USER) and not a.started
    await transaction.rollback()
    await eventually(lambda: a.started == [USER])
    assert a.ownership.owns(USER)
    assert {row.id: row.users for row in await instances(engine)} == {"a": 1}
    await blocker.close()
    await lock.close()


async def test_a_standby_whose_xmpp_server_accepts_nothing_lets_a_free_slot_go(
    pg, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both slots are free, but the standby's XMPP server (a cluster node that is
    down) accepts no connection: it holds no slot lock, so that a standby on a live
    node takes it; once the server listens, it takes the first slot."""
    _engine, dsn = pg
    monkeypatch.setattr(advisory_lock, "CUT_OFF_RETRY", 0.1)
    caplog.set_level(logging.INFO)
    port = free_port()
    lock = AdvisoryLock(dsn, [11, 12], server=("127.0.0.1", port))
    acquiring = asyncio.ensure_future(lock.acquire(asyncio.Event()))
    await eventually(lambda: f"127.0.0.1:{port} accepts no connection" in caplog.text)
    observer = await asyncpg.connect(dsn)
    held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND granted"
    assert await observer.fetchval(held, LOCK_CLASS) == 0
    assert not acquiring.done()
    server = await asyncio.start_server(lambda _r, writer: writer.close(), "127.0.0.1", port)
    assert await within(acquiring, 5)
    assert lock.slot == 0 and await observer.fetchval(held, LOCK_CLASS) == 1
    await lock.close()
    server.close()
    await observer.close()
