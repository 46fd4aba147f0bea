"""Lines a server (or someone who controls one) sends to break the client.

A missing parameter must not end the dispatch of every later line, and a line longer
than the reader's limit must be dropped whole, not cut into a second, forged line.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from irc_helpers import Harness, ScriptedIrcd
from xmpp_client import eventually

from bridges import events
from bridges.base import BridgeError, SessionLog
from bridges.irc.connection import READ_LIMIT, ConnectParams, IrcConnection
from bridges.irc.inbox import INBOX_BYTES, INBOX_LINES
from bridges.irc.protocol import Line
from bridges.timeouts import within

WELCOME = [":srv 001 alice :Welcome", ":srv 376 alice :End of MOTD"]
FLOOD_LINES = 100_000
"""About 20 MB: more than the loopback socket buffers of both sides hold."""


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
        log=SessionLog(logging.getLogger("test"), "test"),
    )  # fmt: skip
    connection._reader = reader
    reader.feed_data(b"x" * (READ_LIMIT + 10))  # a line that has not ended yet
    reading = asyncio.create_task(connection._read_line())
    await asyncio.sleep(0)  # one step: the reader drops what it has and waits for more
    assert not reading.done()
    reader.feed_data(b":evil!e@h PRIVMSG alice :forged\r\n:bob!b@h PRIVMSG alice :after\r\n")
    line = await within(reading, 5)
    assert (line.nick, line.param(-1)) == ("bob", "after")


class StuckHandler:
    """The connection's line handler while the XMPP side takes nothing, until `release`."""

    def __init__(self) -> None:
        self.handled: list[int] = []
        self.release = asyncio.Event()

    async def __call__(self, line: Line) -> None:
        if line.command == "PRIVMSG":
            await self.release.wait()
            self.handled.append(int(line.param(-1).split()[0]))


def flooded_connection(server: ScriptedIrcd, handler: StuckHandler) -> IrcConnection:
    return IrcConnection(
        ConnectParams(server.host, server.port, "alice", "alice", "Alice", timeout=5),
        handler,
        flood_rate=10, flood_burst=10, ping_interval=0.1, ping_timeout=60,
        log=SessionLog(logging.getLogger("test"), "test"),
    )  # fmt: skip


@pytest.mark.timeout(120)
async def test_a_flooding_server_is_slowed_by_tcp_not_by_our_memory():
    """While the handler is stuck, reading stops once INBOX_LINES wait: the rest of the
    flood stays with the server (TCP flow control), and nothing is dropped."""
    flood = [f":bob!b@h PRIVMSG alice :{n} {'x' * 180}" for n in range(FLOOD_LINES)]

    def script(line: str) -> list[str]:
        return [*WELCOME, *flood] if line.startswith("USER") else []

    stuck = StuckHandler()
    handled, release = stuck.handled, stuck.release
    async with ScriptedIrcd(script) as server:
        connection = flooded_connection(server, stuck)
        await connection.connect()
        await eventually(lambda: len(connection._inbox) >= INBOX_LINES)
        await eventually(lambda: server.unsent() > 0)  # the server cannot write the rest
        assert len(connection._inbox) == INBOX_LINES
        # Quiet for longer than the ping interval: because we stopped reading, which
        # is no reason to PING the server (nor, later, to call the link dead).
        await eventually(lambda: time.monotonic() - connection._last_seen > 0.5)
        release.set()
        await eventually(lambda: len(handled) == FLOOD_LINES, timeout=90)
        assert handled == list(range(FLOOD_LINES))
        assert not connection.closed.is_set()
        assert not [line for line in server.lines.items if line.startswith("PING")]
        await connection.close()


@pytest.mark.timeout(120)
async def test_long_lines_are_bounded_by_bytes_not_only_by_count():
    """Fewer lines than INBOX_LINES, each near the 64 KiB limit (12 MiB in all): the
    inbox holds about INBOX_BYTES of them, the rest waits with the server, and every
    line is still handled, in order, once the handler takes them."""
    count, body = 200, "x" * (READ_LIMIT - 100)
    flood = [f":bob!b@h PRIVMSG alice :{n} {body}" for n in range(count)]

    def script(line: str) -> list[str]:
        return [*WELCOME, *flood] if line.startswith("USER") else []

    stuck = StuckHandler()
    async with ScriptedIrcd(script) as server:
        connection = flooded_connection(server, stuck)
        await connection.connect()
        await eventually(lambda: connection._inbox.full())
        await eventually(lambda: server.unsent() > 0)  # the server cannot write the rest
        assert len(connection._inbox) < INBOX_LINES
        assert connection._inbox.size <= INBOX_BYTES + READ_LIMIT
        assert len(connection._inbox) * len(flood[0]) <= INBOX_BYTES + READ_LIMIT
        stuck.release.set()
        await eventually(lambda: len(stuck.handled) == count, timeout=90)
        assert stuck.handled == list(range(count))
        assert not connection.closed.is_set()
        await connection.close()
