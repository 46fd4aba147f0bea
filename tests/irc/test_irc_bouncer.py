"""The gateway as a bouncer: persistent channels survive gateway restarts and drops.

Real Prosody, ngIRCd, slixmpp clients and an IRC peer. The gateway runs as its own
process; it is stopped with SIGTERM or killed with SIGKILL, and started again on the
same database while the user is offline: the IRC side must see the user back in their
persistent channels, what is said there must wait for the user's next join, and since
ngIRCd has no chat history the room must say when the gateway was not there.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from harness import has_archived
from irc_helpers import IrcPeer
from registration_helpers import register_and_subscribe
from slixmpp import Message
from test_irc_e2e import (
    IRC_JID,
    IRC_SECRET,
    PASSWORD,
    ROOM,
    groupchat,
    irc_section,
    irc_user,
    join_room,
    login,
    run_settings_command,
    wait_away,
)
from xmpp_client import TestClient, eventually_async

from bridges.irc.devstack import InspIrcd, NgIrcd
from bridges.irc.session import OFFLINE_AWAY
from component.devstack.gateway import GatewayProcess
from component.devstack.prosody import Prosody

GatewayFactory = Callable[..., Awaitable[GatewayProcess]]
GAP = re.compile(
    r"The gateway was not in #room from (\S+ \S+) to (\S+) UTC: "
    r"what was said there meanwhile may be missing\."
)


class Stack:
    """Prosody, an IRC server and a gateway process that can be stopped (SIGTERM),
    killed (SIGKILL) and started again on one database."""

    def __init__(
        self, prosody: Prosody, ircd: NgIrcd | InspIrcd, gateway_factory: GatewayFactory
    ) -> None:
        self.prosody, self.ngircd, self._factory = prosody, ircd, gateway_factory
        self.irc: dict[str, Any] = irc_section(
            ircd, reconnect_initial_delay=0.2, last_seen_interval=0.5
        )
        self.gateway: GatewayProcess | None = None

    async def start_gateway(self) -> GatewayProcess:
        """Start the gateway (the first time on a fresh database, then on the same one)
        and return once its component is connected."""
        if self.gateway is None:
            self.gateway = await self._factory(self.prosody, bridges={"irc": self.irc})
        else:
            await self.gateway.start()
        return self.gateway

    async def stop_gateway(self) -> None:
        """SIGTERM, as an operator stops it: the gateway must exit cleanly."""
        assert self.gateway is not None
        assert await self.gateway.stop() == 0

    async def kill_gateway(self) -> None:
        """SIGKILL: no chance to write anything on the way out."""
        assert self.gateway is not None
        await self.gateway.kill()


@pytest.fixture
async def stack(
    request: pytest.FixtureRequest, gateway_factory: GatewayFactory
) -> AsyncIterator[Stack]:
    """ngIRCd, or InspIRCd when parametrized indirectly with "inspircd"."""
    inspircd = getattr(request, "param", "ngircd") == "inspircd"
    ircd = InspIrcd() if inspircd else NgIrcd(flood_throttling=False)
    async with Prosody(components={IRC_JID: IRC_SECRET}) as prosody, ircd:
        stack = Stack(prosody, ircd, gateway_factory)
        yield stack
        if stack.gateway is not None:
            await stack.gateway.stop()  # before its XMPP and IRC servers go


async def offline_in_persistent_room(stack: Stack, bob: IrcPeer, name: str) -> str:
    """Register `name`, make ROOM's channel persistent, join it, go offline; the JID."""
    jid = await stack.prosody.register(name, PASSWORD)
    client = await login(stack.prosody, jid, "pc")
    await register_and_subscribe(client, IRC_JID, nick=name)
    await run_settings_command(client, f"127.0.0.1@{IRC_JID}", persistent="#room")
    await join_room(client, name, timeout=15)
    await client.close()
    await wait_away(bob, name, OFFLINE_AWAY)
    return jid


def joins_of(peer: IrcPeer, nick: str) -> list[Any]:
    return peer.matching(lambda e: e.type == "join" and e.source.nick == nick)


def gap_of(message: Message) -> tuple[datetime, datetime]:
    """The start and end of the gap a notice names."""
    found = GAP.fullmatch(message["body"])
    assert found, message["body"]
    start = datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    end = datetime.combine(start.date(), datetime.strptime(found[2], "%H:%M:%S").time(), UTC)
    return start, end


def is_gap_notice(stanza: Any) -> bool:
    return isinstance(stanza, Message) and GAP.fullmatch(stanza["body"] or "") is not None


async def rejoin(stack: Stack, jid: str, nick: str) -> tuple[TestClient, float]:
    """Log in on a new resource and join ROOM; the client and seconds to own presence."""
    client = await login(stack.prosody, jid, "laptop")
    started = time.monotonic()
    own = await join_room(client, nick)
    assert own["from"].full == f"{ROOM}/{nick}"
    return client, time.monotonic() - started


@pytest.mark.parametrize("stack", ["ngircd", "inspircd"], indirect=True)
async def test_gateway_restart_rejoins_persistent_channels_without_the_user(
    stack: Stack, peers: list[IrcPeer]
) -> None:
    await stack.start_gateway()
    bob = await irc_user(stack.ngircd, peers, "bob", "#room")
    jid = await offline_in_persistent_room(stack, bob, "dora")

    stopped_at = datetime.now(UTC)
    await stack.stop_gateway()
    await bob.wait_for(lambda e: e.type == "quit" and e.source.nick == "dora")
    bob.conn.privmsg("#room", "said while the gateway was down")
    gateway = await stack.start_gateway()  # nobody is online

    await bob.wait_until(lambda: len(joins_of(bob, "dora")) == 2, timeout=15)
    await wait_away(bob, "dora", OFFLINE_AWAY)
    offline_line = "said while dora was offline"
    bob.conn.privmsg("#room", offline_line)
    # Join only once the gateway has the line: joined first, it would arrive live.
    await eventually_async(lambda: has_archived(gateway.config, jid, "irc", offline_line))

    client, seconds = await rejoin(stack, jid, "dora")
    assert seconds < 2  # answered from the live connection, no JOIN on IRC
    missed = await client.wait_for(groupchat(offline_line))
    assert missed["from"].resource == "bob"
    assert missed.xml.find("{urn:xmpp:delay}delay") is not None  # discussion history
    notice = await client.wait_for(is_gap_notice)
    # History, in order. InspIRCd's server-time comes from a clock it updates once a
    # second, so its stamp may trail the gateway's own by up to a second.
    assert notice["delay"]["stamp"] <= missed["delay"]["stamp"] + timedelta(seconds=1)
    start, end = gap_of(notice)
    assert stopped_at - timedelta(seconds=1) <= start <= end <= datetime.now(UTC)
    assert not any(groupchat("said while the gateway was down")(s) for s in client.stanzas)
    assert len(joins_of(bob, "dora")) == 2
    await wait_away(bob, "dora", None)  # back
    await client.close()


async def test_irc_reconnect_of_a_persistent_channel_reports_the_gap(
    stack: Stack, peers: list[IrcPeer]
) -> None:
    await stack.start_gateway()
    bob = await irc_user(stack.ngircd, peers, "bob", "#room")
    jid = await offline_in_persistent_room(stack, bob, "erin")
    await bob.close()

    lost_at = datetime.now(UTC)
    await stack.ngircd.restart()
    carol = await irc_user(stack.ngircd, peers, "carol", "#room")
    await carol.wait_for(lambda e: e.type == "join" and e.source.nick == "erin", timeout=20)
    carol.conn.privmsg("#room", "after the reconnect")

    client, _seconds = await rejoin(stack, jid, "erin")
    await client.wait_for(groupchat("after the reconnect"))
    reconnected = await client.wait_for(
        lambda s: (
            isinstance(s, Message)
            and s["type"] == "groupchat"  # the room's notice, not the server's one line
            and (s["body"] or "").startswith("Reconnected to")
        )
    )
    text = reconnected["body"]
    assert text.startswith("Reconnected to 127.0.0.1. ")
    reconnected["body"] = text.removeprefix("Reconnected to 127.0.0.1. ")
    start, end = gap_of(reconnected)
    assert lost_at - timedelta(seconds=1) <= start <= end <= datetime.now(UTC)
    await client.close()


async def test_kill_9_of_the_gateway_process_loses_at_most_the_last_note(
    stack: Stack, peers: list[IrcPeer]
) -> None:
    """No clean stop: the gap starts at the last periodic note (`last_seen_interval`)."""
    await stack.start_gateway()
    bob = await irc_user(stack.ngircd, peers, "bob", "#room")
    jid = await offline_in_persistent_room(stack, bob, "fay")
    joined_at = datetime.now(UTC)

    await stack.kill_gateway()
    await bob.wait_for(lambda e: e.type == "quit" and e.source.nick == "fay")
    killed_at = datetime.now(UTC)
    await stack.start_gateway()

    await bob.wait_until(lambda: len(joins_of(bob, "fay")) == 2, timeout=15)
    await wait_away(bob, "fay", OFFLINE_AWAY)
    bob.conn.privmsg("#room", "said after the crash")
    client, seconds = await rejoin(stack, jid, "fay")
    assert seconds < 2
    await client.wait_for(groupchat("said after the crash"))
    start, end = gap_of(await client.wait_for(is_gap_notice))
    # The notice has whole seconds, and the last note may be an interval old.
    slack = timedelta(seconds=stack.irc["last_seen_interval"] + 1)
    assert joined_at - slack <= start <= killed_at <= end + timedelta(seconds=1)
    assert killed_at - start <= slack
    await client.close()
