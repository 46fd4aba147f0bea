"""Lines a server (or someone who controls one) sends to break the client.

A missing parameter must not end the dispatch of every later line, and a line longer
than the reader's limit must be dropped whole, not cut into a second, forged line.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from irc_helpers import Harness, ScriptedIrcd

from bridges import events
from bridges.base import BridgeError
from bridges.irc.connection import READ_LIMIT, ConnectParams, IrcConnection
from bridges.irc.protocol import Line

WELCOME = [":srv 001 alice :Welcome", ":srv 376 alice :End of MOTD"]


def test_missing_parameters_read_as_empty():
    line = Line.parse("ERROR")
    assert (line.param(-1), line.param(0), line.param(-1, "none")) == ("", "", "none")


async def test_error_without_parameters_does_not_stop_the_connection_reading():
    def script(line: str) -> list[str]:
        if line.startswith("USER"):
            return [*WELCOME, "ERROR", ":bob!b@h PRIVMSG alice :still here"]
        return []

    async with ScriptedIrcd(script) as server:
        harness = Harness(server)
        session, sink = await harness.session("alice")
        await session.send_message(harness.contact("bob"), "hi")  # connects
        message = await sink.wait_event(events.Message, sender=harness.contact("bob"))
        assert message.text == "still here"
        await harness.close()


async def test_error_without_parameters_while_registering_is_a_clear_failure():
    async with ScriptedIrcd(lambda line: ["ERROR"] if line.startswith("USER") else []) as server:
        harness = Harness(server)
        session, _sink = await harness.session("alice")
        with pytest.raises(BridgeError, match="the server said ERROR") as refused:
            await session.send_message(harness.contact("bob"), "hi")
        assert refused.value.condition != "internal-server-error"
        await harness.close()


async def test_a_line_over_the_limit_is_dropped_whole():
    reader = asyncio.StreamReader(limit=READ_LIMIT)
    connection = IrcConnection(
        ConnectParams("srv", 6667, "alice", "alice", "Alice"),
        on_line=lambda line: asyncio.sleep(0),
        flood_rate=1, flood_burst=1, ping_interval=60, ping_timeout=60,
        log=logging.getLogger("test"),
    )  # fmt: skip
    connection._reader = reader
    reader.feed_data(b"x" * (READ_LIMIT + 10))  # a line that has not ended yet
    reading = asyncio.create_task(connection._read_line())
    await asyncio.sleep(0)  # one step: the reader drops what it has and waits for more
    assert not reading.done()
    reader.feed_data(b":evil!e@h PRIVMSG alice :forged\r\n:bob!b@h PRIVMSG alice :after\r\n")
    line = await asyncio.wait_for(reading, 5)
    assert (line.nick, line.param(-1)) == ("bob", "after")
