"""Hot standby with the fake bridge: who serves is PostgreSQL's advisory lock.

Two `xmpp-gateway run` processes on one config and one PostgreSQL database: one serves,
the other waits, takes over when the first stops (SIGTERM) or dies (kill -9), and a
process that loses its lock connection stops serving. With SQLite a second process is
refused.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator

import asyncpg
import pytest
from harness import FAKE_JID, FAKE_SECRET
from registration_helpers import register_and_subscribe
from slixmpp import Message
from xmpp_client import eventually

from component.devstack.ejabberd import Ejabberd
from component.devstack.gateway import CONNECTED, GatewayProcess
from component.devstack.process import free_port
from component.devstack.prosody import Prosody
from component.leadership import LOCK_CLASS


@pytest.fixture(params=["prosody", "ejabberd"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Prosody | Ejabberd]:
    """Prosody (refuses a second component connection) and ejabberd (would accept it
    and route each stanza to either): on both, only the active process connects."""
    cls = Prosody if request.param == "prosody" else Ejabberd
    async with cls(components={FAKE_JID: FAKE_SECRET}) as started:
        yield started


async def echo(client, text: str) -> Message:
    """Send `text` to a fake contact and return the bridge's echo: someone serves."""
    client.send_message(mto=f"bob@{FAKE_JID}", mbody=text, mtype="chat")
    return await client.wait_for(
        lambda s: isinstance(s, Message) and s["body"] == f"echo: {text}", timeout=10
    )


async def connected_after(gateway: GatewayProcess, mark: int, started: float) -> float:
    """Seconds from `started` until `gateway` logged its component up after `mark`."""
    await gateway.wait_connected(since=mark, timeout=10)
    return time.monotonic() - started


def active_metric(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("xmpp_gateway_active "):
                return float(line.split()[1])
    raise AssertionError("no xmpp_gateway_active metric")


async def test_sigterm_hands_over_to_the_standby_in_under_a_second(
    server, gateway_factory, client_factory, database_url
):
    first_port, second_port = free_port(), free_port()
    first = await gateway_factory(server, database_url=database_url, metrics={"port": first_port})
    second = await gateway_factory(server, standby_of=first, metrics={"port": second_port})
    assert CONNECTED not in second.log_text()
    assert await asyncio.to_thread(active_metric, first_port) == 1
    assert await asyncio.to_thread(active_metric, second_port) == 0
    client = await client_factory(server)
    await register_and_subscribe(client, FAKE_JID, username="alice", password="pw")
    await echo(client, "before")

    mark, started = second.log_mark(), time.monotonic()
    stopping = asyncio.ensure_future(first.stop())
    seconds = await connected_after(second, mark, started)
    assert await stopping == 0
    assert "a standby waits: handing over" in first.log_text()
    print(f"graceful hand-over: {seconds:.3f} s from SIGTERM to the standby's component up")
    assert seconds < 1.0
    await echo(client, "after")  # the standby serves, the stored account came along
    assert await asyncio.to_thread(active_metric, second_port) == 1


async def test_kill_9_lets_the_standby_take_over(
    server, gateway_factory, client_factory, database_url
):
    first = await gateway_factory(server, database_url=database_url)
    second = await gateway_factory(server, standby_of=first)
    client = await client_factory(server)
    await register_and_subscribe(client, FAKE_JID, username="alice", password="pw")

    mark, started = second.log_mark(), time.monotonic()
    await first.kill()
    seconds = await connected_after(second, mark, started)
    print(f"kill -9 take-over: {seconds:.3f} s to the standby's component up")
    assert seconds < 3.0
    await echo(client, "after the kill")


async def test_losing_the_lock_connection_stops_serving(
    own_prosody, gateway_factory, client_factory, postgres, database_url
):
    """The active process's lock connection is cut: it stands down, the standby serves."""
    first = await gateway_factory(own_prosody, database_url=database_url)
    second = await gateway_factory(own_prosody, standby_of=first)
    client = await client_factory(own_prosody)
    await register_and_subscribe(client, FAKE_JID, username="alice", password="pw")

    first_mark, second_mark = first.log_mark(), second.log_mark()
    connection = await asyncpg.connect(postgres.dsn)
    try:
        holder = await connection.fetchval(
            "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND l.classid = $1 AND l.granted"
            " AND d.datname = $2",
            LOCK_CLASS,
            database_url.rsplit("/", 1)[1],
        )
        assert holder is not None
        await connection.execute("SELECT pg_terminate_backend($1)", holder)
    finally:
        await connection.close()
    await first.wait_for_log("lost the lock", since=first_mark, timeout=5)
    await second.wait_connected(since=second_mark, timeout=10)
    await first.wait_for_log("standby: .* is active", since=first_mark, timeout=10)
    await echo(client, "served by the second")
    assert first.running  # standing by again, not gone


async def test_a_second_process_on_a_sqlite_database_is_refused(own_prosody, gateway_factory):
    first = await gateway_factory(own_prosody, metrics={"port": free_port()})
    # the same file, metrics port included
    second = await gateway_factory(own_prosody, standby_of=first, wait_connected=False)
    assert await second.wait_exit() == 4
    assert "a SQLite database serves one process only" in second.log_text()
    assert "gateway.db.lock" in second.log_text()
    assert first.running


async def test_a_standby_stops_at_once_and_the_active_serves_on(
    own_prosody, gateway_factory, client_factory, database_url
):
    first = await gateway_factory(own_prosody, database_url=database_url)
    second = await gateway_factory(own_prosody, standby_of=first)
    client = await client_factory(own_prosody)
    await register_and_subscribe(client, FAKE_JID, username="alice", password="pw")

    started = time.monotonic()
    assert await second.stop() == 0  # woken from its wait for the lock
    assert time.monotonic() - started < 2.0
    await echo(client, "still served")


async def test_a_postgresql_restart_leaves_one_process_serving(
    own_prosody, gateway_factory, client_factory, postgres, database_url
):
    """Both lock connections drop: the active process stands down, and once the server
    is back exactly one of the two serves again."""
    first = await gateway_factory(own_prosody, database_url=database_url)
    second = await gateway_factory(own_prosody, standby_of=first)
    client = await client_factory(own_prosody)
    await register_and_subscribe(client, FAKE_JID, username="alice", password="pw")

    marks = [first.log_mark(), second.log_mark()]
    await postgres.restart()
    await first.wait_for_log("lost the lock", since=marks[0], timeout=10)
    gateways = list(zip((first, second), marks, strict=True))
    await eventually(lambda: any(CONNECTED in g.log_text(mark) for g, mark in gateways))
    await echo(client, "after the restart")  # someone serves again
    logs = [g.log_text(mark) for g, mark in gateways]
    assert sum("holds the lock and serves" in log for log in logs) == 1, logs
    assert first.running and second.running
