"""One user's burst does not hold up another user's messages on the component stream
(issue 8, head-of-line delay; component.fair_writer). Seen from slixmpp clients on
Prosody, with the gateway as its own process and ngIRCd.

The backlog is made certain instead of raced for: Prosody is stopped (SIGSTOP) while
the gateway takes a flood of IRC lines for one user and then one line for another,
until its metrics say it has delivered them all to the component stream; then it runs
again. Without the window all of the flood was written ahead of the quiet line and
Prosody works through it first; with it, the quiet line waits behind at most one
window of it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import urllib.request
from collections.abc import AsyncIterator

import pytest
from irc_helpers import IrcPeer
from registration_helpers import register_and_subscribe
from slixmpp import Message
from test_irc_e2e import IRC_JID, IRC_SECRET, PASSWORD, irc_section, join_room, joined_user, login
from xmpp_client import eventually

from bridges.irc.devstack import NgIrcd
from component.devstack.process import free_port
from component.devstack.prosody import Prosody
from component.fair_writer import WINDOW

FLOOD = 1_000
FLOOD_ROOM = f"#flood%127.0.0.1@{IRC_JID}"
STANZA_AT_LEAST = 250
"""Characters of a flood line's groupchat stanza, at the least (JIDs, ids, stanza-id,
occupant-id): the window holds no more than WINDOW // STANZA_AT_LEAST of them."""


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Prosody, NgIrcd]]:
    async with (
        Prosody(components={IRC_JID: IRC_SECRET}) as prosody,
        NgIrcd(flood_throttling=False) as ngircd,
    ):
        yield prosody, ngircd


@pytest.fixture
async def metrics_port(servers, gateway_factory) -> int:
    prosody, ngircd = servers
    port = free_port()
    await gateway_factory(prosody, bridges={"irc": irc_section(ngircd)}, metrics={"port": port})
    return port


@pytest.fixture
async def peers() -> AsyncIterator[list[IrcPeer]]:
    made: list[IrcPeer] = []
    yield made
    for peer in made:
        await peer.close()


def _delivered(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    counted = "xmpp_gateway_events_delivered_total{"
    return sum(float(line.rpartition(" ")[2]) for line in lines if line.startswith(counted))


async def delivered(port: int) -> float:
    """Legacy events the gateway has handed to the component stream, all kinds."""
    return await asyncio.to_thread(_delivered, port)


async def test_a_quiet_users_message_overtakes_another_users_queued_flood(
    servers: tuple[Prosody, NgIrcd], metrics_port: int, peers: list[IrcPeer]
) -> None:
    prosody, ngircd = servers
    quiet = await joined_user(prosody, "quiet")
    flooded = await login(prosody, await prosody.register("flooded", PASSWORD), "pc")
    await register_and_subscribe(flooded, IRC_JID, nick="flooded")
    await join_room(flooded, "flooded", FLOOD_ROOM)
    flooder = await IrcPeer.connect(ngircd.host, ngircd.port, "flooder")
    peers.append(flooder)
    await flooder.join("#flood")
    talker = await IrcPeer.connect(ngircd.host, ngircd.port, "talker")
    peers.append(talker)
    await talker.join("#room")

    flood_seen: list[str] = []
    seen_before_quiet: list[int] = []

    def on_flood(message: Message) -> None:
        if str(message["body"]).startswith("flood "):
            flood_seen.append(str(message["body"]))

    def on_quiet(message: Message) -> None:
        if message["body"] == "quiet line":
            seen_before_quiet.append(len(flood_seen))

    flooded.add_event_handler("groupchat_message", on_flood)
    quiet.add_event_handler("groupchat_message", on_quiet)

    before = await delivered(metrics_port)
    assert prosody.pid is not None
    os.kill(prosody.pid, signal.SIGSTOP)
    try:
        flooder.send_raw_bytes(
            b"\r\n".join(f"PRIVMSG #flood :flood {n}".encode() for n in range(FLOOD))
        )
        await eventually_delivered(metrics_port, before + FLOOD)
        talker.conn.privmsg("#room", "quiet line")
        await eventually_delivered(metrics_port, before + FLOOD + 1)
    finally:
        os.kill(prosody.pid, signal.SIGCONT)

    await quiet.wait_for(lambda s: isinstance(s, Message) and s["body"] == "quiet line", 30)
    await eventually(lambda: len(flood_seen) >= FLOOD, 30)
    assert flood_seen == [f"flood {n}" for n in range(FLOOD)]  # the flood kept its order
    # The first window, then one turn each: flood, quiet. (The client may lag behind
    # Prosody on the flooded user's stream, never ahead of it.)
    # The two clients' streams are read in this one event loop in whatever order the
    # selector gives, so the quiet client can trail the flooded one by a few of
    # Prosody's writes: allowed a window more. Without the window all 1,000 come first.
    assert len(seen_before_quiet) == 1
    assert seen_before_quiet[0] <= 2 * (WINDOW // STANZA_AT_LEAST) + 2, seen_before_quiet
    for client in (quiet, flooded):
        await client.close()


async def eventually_delivered(port: int, count: float) -> None:
    async with asyncio.timeout(10):
        while await delivered(port) < count:  # noqa: ASYNC110 - another process's counter
            await asyncio.sleep(0.01)
