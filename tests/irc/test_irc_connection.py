"""Connection life: reconnect and rejoin after a server restart, flood pacing, close."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest
from irc_helpers import SERVER, Harness, ScriptedIrcd

from bridges import events
from bridges.base import SessionLog
from bridges.irc.connection import ConnectParams, IrcConnection
from bridges.irc.protocol import Line
from bridges.timeouts import within


async def test_reconnect_after_server_restart_rejoins_rooms(any_irc: Harness):
    session, sink, room = await any_irc.joined("#room")

    await any_irc.server.restart()

    lost = await sink.wait_for(
        lambda e: isinstance(e, events.Message) and e.sender == room and "reconnecting" in e.text
    )
    assert "Lost the connection" in lost.text
    await sink.wait_for(
        lambda e: isinstance(e, events.Message) and e.sender == room and "Reconnected" in e.text,
        timeout=20,
    )
    bob = await any_irc.peer("bob", "#room")
    assert bob.matching(lambda e: e.type == "namreply" and "alice" in e.arguments[2])
    await session.send_message(room, "back again")
    await bob.wait_text("pubmsg", "back again")
    assert not sink.matching(lambda e: isinstance(e, events.RoomLeft))


async def test_reconnect_gets_one_line_instead_of_the_welcome_again(irc: Harness):
    _session, sink, room = await irc.joined("#room")
    service = irc.bridge().parse_address(SERVER)
    await sink.wait_for(lambda e: isinstance(e, events.Message) and e.sender == service)

    await irc.server.restart()

    await sink.wait_for(
        lambda e: isinstance(e, events.Message) and e.sender == room and "Reconnected" in e.text,
        timeout=20,
    )
    greetings = [
        e.text
        for e in sink.items
        if isinstance(e, events.Message) and e.sender == service and "Welcome" in e.text
    ]
    assert len(greetings) == 1 and "message of the day" in greetings[0]
    again = sink.matching(
        lambda e: isinstance(e, events.Message) and e.sender == service and "Reconn" in e.text
    )
    assert len(again) == 1
    assert re.fullmatch(
        rf"Reconnected to {SERVER} \(irc\.localhost ngircd-[\d.]+\) as alice\.", again[0].text
    )


async def test_failed_rejoin_tells_the_user(irc: Harness):
    _session, sink, room = await irc.joined("#room")

    await irc.server.restart()
    # Someone else takes the channel first and locks it with a key.
    op = await irc.peer("opnick", "#room")
    op.conn.mode("#room", "+k sesame")
    await op.wait_for(lambda e: e.type == "mode")

    left = await sink.wait_event(events.RoomLeft, room=room, timeout=20)
    assert "could not rejoin" in left.reason


@pytest.mark.timeout(200)
async def test_paste_of_200_lines_arrives_complete_and_in_order_under_throttling(
    throttled_irc: Harness,
):
    """ngIRCd's default penalties let about 3 lines a second through; nothing is lost."""
    bob = await throttled_irc.peer("bob", "#room")
    session, sink = await throttled_irc.session("alice", flood_rate=3.0, flood_burst=5)
    room = throttled_irc.room("#room")
    await session.join(room, "alice")
    await sink.wait_event(events.RoomJoined, timeout=20)
    lines = [f"line {n:03d}" for n in range(200)]
    started = time.monotonic()

    await session.send_message(room, "\n".join(lines))

    await bob.wait_until(lambda: len(bob.texts("pubmsg", "alice")) >= 200, timeout=150)
    assert bob.texts("pubmsg", "alice") == lines
    assert time.monotonic() - started > 30  # paced, not dumped
    assert session.networks["127.0.0.1"].connected


async def test_rooms_are_left_when_reconnecting_gives_up(irc: Harness):
    _session, sink, room = await irc.joined("#room", reconnect_max_attempts=2)

    await irc.server.stop()

    left = await sink.wait_event(events.RoomLeft, room=room, timeout=20)
    assert "could not reconnect" in left.reason


async def test_nick_taken_during_reconnect_is_a_nick_change(irc: Harness):
    # The first retry comes 0.8-1.2 s after the drop; the peer connects well before.
    _session, sink, room = await irc.joined("#room", reconnect_initial_delay=1.0)

    await irc.server.restart()
    await irc.peer("alice")  # takes the nick before the session is back

    changed = await sink.wait_event(events.NickChanged, own=True, timeout=20)
    assert (changed.room, changed.old) == (room, "alice")
    service = irc.bridge().parse_address(SERVER)
    again = await sink.wait_for(
        lambda e: isinstance(e, events.Message) and e.sender == service and "Reconn" in e.text
    )
    assert again.text.endswith(f" as {changed.new}.")
    await sink.wait_for(
        lambda e: isinstance(e, events.Message) and e.sender == room and "Reconnected" in e.text,
        timeout=20,
    )
    assert not sink.matching(lambda e: isinstance(e, events.OccupantLeft) and e.nick == "alice")


async def test_open_gateway_refuses_private_addresses(irc: Harness):
    session, sink = await irc.session("alice", allow_private_networks=False)
    await session.join(irc.room("#room"), "alice")
    failed = await sink.wait_event(events.RoomJoinFailed)
    assert failed.condition == "remote-server-not-found"
    assert "not on a public network" in failed.text


async def test_close_returns_after_the_line_handler_has_ended():
    """A handler still running after close would touch the database after the gateway
    disposed of it; a query cancelled then strands its connection and the process
    cannot exit."""
    welcome = [":srv 001 alice :Welcome", ":srv 376 alice :End of MOTD"]

    def script(line: str) -> list[str]:
        if line.startswith("USER"):
            return [*welcome, ":bob!b@h PRIVMSG alice :slow to handle"]
        return []

    handling, ended = asyncio.Event(), asyncio.Event()

    async def on_line(line: Line) -> None:
        if line.command != "PRIVMSG":
            return
        handling.set()
        try:
            await asyncio.Event().wait()  # a query that takes its time
        finally:
            ended.set()

    async with ScriptedIrcd(script) as server:
        connection = IrcConnection(
            ConnectParams(server.host, server.port, "alice", "alice", "Alice", timeout=5),
            on_line,
            flood_rate=10, flood_burst=10, ping_interval=60, ping_timeout=60,
            log=SessionLog(logging.getLogger("test"), "test"),
        )  # fmt: skip
        await connection.connect()
        await within(handling.wait(), 5)
        await connection.close("bye")
        assert ended.is_set()
        await server.lines.wait_for(lambda text: text.startswith("QUIT"))
