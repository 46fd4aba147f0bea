"""End to end: a real slixmpp client on Prosody, our gateway process, ngIRCd, an IRC peer.

What the others test in parts, seen from an XMPP client: registering, the full MUC
join, both message directions with reflection to two resources, private chat, and
PART only when the last resource leaves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from irc_helpers import IrcPeer
from registration_helpers import register_and_subscribe
from slixmpp import Message, Presence
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET
from xmpp_client import TestClient

from bridges.irc.devstack import InspIrcd, NgIrcd
from bridges.irc.session import OFFLINE_AWAY
from bridges.irc.settings import COMMAND_NODE
from component.devstack.gateway import GatewayProcess
from component.devstack.prosody import Prosody
from component.muc import MUC_NS, MUC_USER_NS

IRC_JID, IRC_SECRET = "irc.localhost", "irc-secret"
ROOM = f"#room%127.0.0.1@{IRC_JID}"
PASSWORD = "pw"


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Prosody, NgIrcd]]:
    async with (
        Prosody(components={IRC_JID: IRC_SECRET}) as prosody,
        NgIrcd(flood_throttling=False) as ngircd,
    ):
        yield prosody, ngircd


def irc_section(ircd: NgIrcd | InspIrcd, **options: Any) -> dict[str, Any]:
    """The `bridges.irc` config for `ircd`: flood control opened, only loopback allowed."""
    return {
        "jid": IRC_JID,
        "secret": IRC_SECRET,
        "port": ircd.port,
        "tls": False,
        "flood_rate": 100.0,
        "flood_burst": 100,
        "allowed_servers": ["127.0.0.1"],
        **options,
    }


@pytest.fixture
async def gateway_app(servers, gateway_factory) -> GatewayProcess:
    prosody, ngircd = servers
    return await gateway_factory(prosody, bridges={"irc": irc_section(ngircd)})


@pytest.fixture
async def stack(servers, gateway_app) -> tuple[Prosody, NgIrcd]:
    return servers


async def login(prosody: Prosody, jid: str, resource: str) -> TestClient:
    client = TestClient(f"{jid}/{resource}", PASSWORD)
    return await client.login(prosody.host, prosody.c2s_port)


async def irc_user(ngircd: NgIrcd, peers: list[IrcPeer], nick: str, *channels: str) -> IrcPeer:
    """Someone on IRC, in `channels`; closed by the `peers` fixture."""
    peer = await IrcPeer.connect(ngircd.host, ngircd.port, nick)
    peers.append(peer)
    for channel in channels:
        await peer.join(channel)
    return peer


async def joined_user(prosody: Prosody, name: str) -> TestClient:
    """A new account `name`, registered with the gateway and in ROOM as `name`."""
    jid = await prosody.register(name, PASSWORD)
    client = await login(prosody, jid, "pc")
    await register_and_subscribe(client, IRC_JID, nick=name)
    await join_room(client, name)
    return client


def join_presence(client: TestClient, nick: str, room: str = ROOM) -> int:
    """Send a MUC join; returns the client's mark from just before it (`wait_for(since=)`)."""
    mark = client.mark()
    presence = client.Presence()
    presence["to"] = f"{room}/{nick}"
    ET.SubElement(presence.xml, f"{{{MUC_NS}}}x")
    presence.send()
    return mark


async def join_room(client: TestClient, nick: str, room: str = ROOM, timeout: float = 10.0):
    """Join `room` as `nick`: the self-presence (status 110) answering this join, never
    one left over from an earlier join."""
    mark = join_presence(client, nick, room)
    return await client.wait_for(is_self_presence, timeout, since=mark)


def status_codes(stanza) -> set[str]:
    return {s.get("code") for s in stanza.xml.iter(f"{{{MUC_USER_NS}}}status")}


def is_self_presence(stanza) -> bool:
    return isinstance(stanza, Presence) and "110" in status_codes(stanza)


async def away_message(peer: IrcPeer, nick: str) -> str | None:
    """What WHOIS shows as `nick`'s AWAY text (None: not away)."""
    seen = len(peer.items)
    peer.conn.whois(nick)
    await peer.wait_until(lambda: any(e.type == "endofwhois" for e in peer.items[seen:]))
    away = [e.arguments[-1] for e in peer.items[seen:] if e.type == "away"]
    return away[0] if away else None


async def wait_away(peer: IrcPeer, nick: str, expected: str | None) -> None:
    """Ask WHOIS until the AWAY state is `expected` (presence reaches us asynchronously)."""
    async with asyncio.timeout(10):
        while await away_message(peer, nick) != expected:
            pass


def groupchat(body: str):
    return lambda s: isinstance(s, Message) and s["type"] == "groupchat" and s["body"] == body


async def test_room_through_prosody_with_two_resources(stack, peers):
    prosody, ngircd = stack
    bob = await irc_user(ngircd, peers, "bob", "#room")
    bob.conn.topic("#room", "welcome all")
    await bob.wait_for(lambda e: e.type == "topic")
    jid = await prosody.register("alice", PASSWORD)
    phone = await login(prosody, jid, "phone")
    await register_and_subscribe(phone, IRC_JID, nick="alice")

    mark = join_presence(phone, "alice")
    occupant = await phone.wait_for(
        lambda s: isinstance(s, Presence) and s["from"].resource == "bob", timeout=15
    )
    assert occupant.xml.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}item").get("role") == (
        "moderator"
    )
    own = await phone.wait_for(is_self_presence, since=mark)
    assert own["from"].full == f"{ROOM}/alice"
    subject = await phone.wait_for(lambda s: isinstance(s, Message) and s["subject"])
    assert subject["subject"] == "welcome all"
    await bob.wait_for(lambda e: e.type == "join" and e.source.nick == "alice")

    laptop = await login(prosody, jid, "laptop")
    await join_room(laptop, "alice")

    message = phone.Message()
    message["to"], message["type"], message["body"], message["id"] = (
        ROOM,
        "groupchat",
        "hello irc",
        "m-1",
    )
    message.send()
    await bob.wait_text("pubmsg", "hello irc")
    for client in (phone, laptop):
        echo = await client.wait_for(groupchat("hello irc"))
        assert (echo["id"], echo["from"].resource) == ("m-1", "alice")

    bob.conn.privmsg("#room", "hello xmpp")
    for client in (phone, laptop):
        got = await client.wait_for(groupchat("hello xmpp"))
        assert got["from"].full == f"{ROOM}/bob"

    mark = phone.mark()
    phone.send_presence(pto=f"{ROOM}/alice", ptype="unavailable")
    await phone.wait_for(lambda s: is_self_presence(s) and s["type"] == "unavailable", since=mark)
    bob.conn.privmsg("#room", "still there?")
    await laptop.wait_for(groupchat("still there?"))
    assert not bob.matching(lambda e: e.type == "part")
    laptop.send_presence(pto=f"{ROOM}/alice", ptype="unavailable")
    await bob.wait_for(lambda e: e.type == "part" and e.source.nick == "alice")
    for client in (phone, laptop):
        await client.close()


async def test_private_chat_and_bad_addresses_through_prosody(stack, peers):
    prosody, ngircd = stack
    bob = await irc_user(ngircd, peers, "bob")
    jid = await prosody.register("carol", PASSWORD)
    client = await login(prosody, jid, "pc")
    await register_and_subscribe(client, IRC_JID, nick="carol")

    client.send_message(mto=f"bob%127.0.0.1@{IRC_JID}", mbody="hi bob", mtype="chat")
    assert (await bob.wait_text("privmsg", "hi bob")).source.nick == "carol"
    bob.conn.privmsg("carol", "hi carol")
    reply = await client.wait_for(
        lambda s: isinstance(s, Message) and s["body"] == "hi carol", timeout=10
    )
    assert reply["from"].bare == f"bob%127.0.0.1@{IRC_JID}"

    client.send_message(mto=f"bad\\20nick%127.0.0.1@{IRC_JID}", mbody="x", mtype="chat")
    error = await client.wait_for(lambda s: isinstance(s, Message) and s["type"] == "error")
    assert error["error"]["condition"] == "jid-malformed"

    await bob.join("#room")
    items = await client.plugin["xep_0030"].get_items(jid=f"127.0.0.1@{IRC_JID}", timeout=15)
    assert (ROOM, None, "#room (1)") in items["disco_items"]["items"]

    await join_room(client, "carol")
    # XEP-0045 private message to an occupant reaches that IRC user directly.
    client.send_message(mto=f"{ROOM}/bob", mbody="psst", mtype="chat")
    assert (await bob.wait_text("privmsg", "psst")).source.nick == "carol"

    await client.close()  # the user goes offline: one QUIT, no PART before it
    await bob.wait_for(lambda e: e.type == "quit" and e.source.nick == "carol")
    assert not bob.matching(lambda e: e.type == "part" and e.source.nick == "carol")
    await eventually_gone(bob, "carol")


async def eventually_gone(peer: IrcPeer, nick: str) -> None:
    """WHOIS until the server no longer knows `nick`; each round trip is the wait."""
    for _ in range(50):
        seen = len(peer.items)
        peer.conn.whois(nick)
        await peer.wait_until(
            lambda seen=seen: any(e.type in ("nosuchnick", "endofwhois") for e in peer.items[seen:])
        )
        if any(e.type == "nosuchnick" for e in peer.items[seen:]):
            return
    raise AssertionError(f"{nick} is still connected")


async def test_server_restart_is_announced_in_the_room(stack, peers):
    prosody, ngircd = stack
    jid = await prosody.register("dave", PASSWORD)
    client = await login(prosody, jid, "pc")
    await register_and_subscribe(client, IRC_JID, nick="dave")
    await join_room(client, "dave", timeout=15)

    await ngircd.restart()

    lost = await client.wait_for(
        lambda s: isinstance(s, Message) and "reconnecting" in s["body"], timeout=15
    )
    assert lost["from"].full == ROOM and lost["type"] == "groupchat"
    await client.wait_for(
        lambda s: isinstance(s, Message) and "Reconnected" in s["body"], timeout=20
    )
    bob = await irc_user(ngircd, peers, "bob", "#room")
    message = client.Message()
    message["to"], message["type"], message["body"] = ROOM, "groupchat", "survived"
    message.send()
    await bob.wait_text("pubmsg", "survived")
    await client.close()


async def test_nick_changes_and_kicks_through_prosody(stack, peers):
    prosody, ngircd = stack
    jid = await prosody.register("erin", PASSWORD)
    client = await login(prosody, jid, "pc")
    await register_and_subscribe(client, IRC_JID, nick="erin")
    mark = join_presence(client, "erin")  # first in: channel operator
    await client.wait_for(
        lambda s: is_self_presence(s) and _role(s) == "moderator", timeout=15, since=mark
    )
    bob = await irc_user(ngircd, peers, "bob", "#room")
    await client.wait_for(lambda s: isinstance(s, Presence) and s["from"].resource == "bob")

    mark = join_presence(client, "bob")  # nick change to a taken nick
    error = await client.wait_for(
        lambda s: isinstance(s, Presence) and s["type"] == "error", since=mark
    )
    assert error["error"]["condition"] == "conflict"
    mark = join_presence(client, "erin2")
    gone = await client.wait_for(lambda s: "303" in status_codes(s), since=mark)
    assert gone["from"].resource == "erin" and "110" in status_codes(gone)
    own = await client.wait_for(is_self_presence, since=mark)
    assert own["from"].resource == "erin2"

    iq = client.make_iq_to(ROOM, "set")
    query = ET.SubElement(iq.xml, "{http://jabber.org/protocol/muc#admin}query")
    ET.SubElement(
        query, "{http://jabber.org/protocol/muc#admin}item", {"nick": "bob", "role": "none"}
    )
    await iq.send(timeout=10)
    kicked = await client.wait_for(lambda s: "307" in status_codes(s))
    assert kicked["from"].resource == "bob" and kicked["type"] == "unavailable"
    await bob.wait_for(lambda e: e.type == "kick" and e.arguments[0] == "bob")
    await client.close()


def _role(stanza) -> str | None:
    item = stanza.xml.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}item")
    return None if item is None else item.get("role")


async def complete_command(client: TestClient, jid: str, node: str, **values: str):
    """Run ad-hoc command `node` (XEP-0050) as a client does: execute, fill in the form
    it answers with `values`, complete. Returns that form and the completion."""
    start = client.make_iq_to(jid, "set")
    start["command"]["node"], start["command"]["action"] = node, "execute"
    form = await start.send(timeout=10)
    finish = client.make_iq_to(jid, "set")
    finish["command"]["node"], finish["command"]["action"] = node, "complete"
    finish["command"]["sessionid"] = form["command"]["sessionid"]
    submitted = finish["command"]["form"]
    submitted["type"] = "submit"
    for var, value in values.items():
        submitted.add_field(var=var, value=value)
    done = await finish.send(timeout=10)
    assert done["command"]["status"] == "completed"
    return form, done


async def run_settings_command(client: TestClient, server_jid: str, **values: str) -> None:
    """Fill in the network settings command the way a client does."""
    await complete_command(client, server_jid, COMMAND_NODE, **values)


async def test_persistent_channel_survives_going_offline(stack, peers):
    prosody, ngircd = stack
    bob = await irc_user(ngircd, peers, "bob", "#room", "#other")
    jid = await prosody.register("dora", PASSWORD)
    client = await login(prosody, jid, "pc")
    await register_and_subscribe(client, IRC_JID, nick="dora")
    await run_settings_command(client, f"127.0.0.1@{IRC_JID}", persistent="#room")
    other = f"#other%127.0.0.1@{IRC_JID}"
    for room in (ROOM, other):
        own = await join_room(client, "dora", room)
        assert own["from"].bare == room

    await client.close()  # offline: PART the ordinary channel, stay in the persistent one
    await bob.wait_for(lambda e: e.type == "part" and e.source.nick == "dora")
    assert [e.target for e in bob.matching(lambda e: e.type == "part")] == ["#other"]
    assert not bob.matching(lambda e: e.type == "quit" and e.source.nick == "dora")
    await wait_away(bob, "dora", OFFLINE_AWAY)  # IRC users see she is not really there
    bob.conn.privmsg("#room", "message while dora is away")

    again = await login(prosody, jid, "laptop")
    own = await join_room(again, "dora")  # served from the live connection
    assert own["from"].full == f"{ROOM}/dora"
    missed = await again.wait_for(groupchat("message while dora is away"))
    assert missed["from"].resource == "bob"
    assert missed.xml.find("{urn:xmpp:delay}delay") is not None  # discussion history
    bob.conn.privmsg("#room", "welcome back")
    await again.wait_for(groupchat("welcome back"))  # bob has seen all that came before
    joins = bob.matching(lambda e: e.type == "join" and e.source.nick == "dora")
    assert [e.target for e in joins] == ["#room", "#other"]  # no second JOIN of #room
    await wait_away(bob, "dora", None)  # back
    await again.close()


async def test_persistent_channel_set_while_in_it_applies_at_once(stack, peers):
    """Issue 9: a channel made persistent while connected stays when the user goes
    offline right after, and the command's answer says the setting applies now."""
    prosody, ngircd = stack
    bob = await irc_user(ngircd, peers, "bob", "#room")
    client = await joined_user(prosody, "fern")

    _, done = await complete_command(
        client, f"127.0.0.1@{IRC_JID}", COMMAND_NODE, persistent="#room"
    )
    [(_, note)] = done["command"]["notes"]
    assert note == "Settings for 127.0.0.1 saved and applied to your connection."
    await client.close()

    await wait_away(bob, "fern", OFFLINE_AWAY)  # offline handled: away, still there
    assert not bob.matching(lambda e: e.type in ("quit", "part") and e.source.nick == "fern")


async def test_self_ping_says_whether_the_client_is_still_in_the_room(stack, peers):
    """XEP-0410: clients ping their own occupant JID; an error makes them rejoin."""
    prosody, _ngircd = stack
    client = await joined_user(prosody, "erin")
    await client.plugin["xep_0199"].send_ping(f"{ROOM}/erin", timeout=5)  # joined: a result

    # The same user, but a client that is not in the room:
    phone = await login(prosody, client.boundjid.bare, "phone")
    with pytest.raises(IqError) as outside:
        await phone.plugin["xep_0199"].send_ping(f"{ROOM}/erin", timeout=5)
    assert outside.value.condition == "not-acceptable"
    with pytest.raises(IqError) as nobody:
        await client.plugin["xep_0199"].send_ping(f"{ROOM}/nobody", timeout=5)
    assert nobody.value.condition == "item-not-found"
    await phone.close()
    await client.close()


async def test_shutdown_tells_joined_clients_they_left(servers, gateway_app, peers):
    """Status 332 makes clients rejoin once the gateway is back, instead of sitting in a
    room they are no longer in."""
    prosody, _ngircd = servers
    client = await joined_user(prosody, "fred")

    assert await gateway_app.stop() == 0  # SIGTERM, as an operator stops it
    gone = await client.wait_for(
        lambda s: (
            isinstance(s, Presence)
            and s["type"] == "unavailable"
            and s["from"].full == f"{ROOM}/fred"
        )
    )
    assert status_codes(gone) == {"110", "332"}
    await client.close()


async def test_xmpp_away_is_irc_away(stack, peers):
    prosody, ngircd = stack
    bob = await irc_user(ngircd, peers, "bob")
    client = await joined_user(prosody, "gina")
    assert await away_message(bob, "gina") is None

    client.send_presence(pshow="away", pstatus="at lunch")
    await wait_away(bob, "gina", "at lunch")
    client.send_presence(pshow="dnd")  # no status: a default text
    await wait_away(bob, "gina", "Busy")
    client.send_presence()
    await wait_away(bob, "gina", None)
    await client.close()


async def test_invitations_both_ways(stack, peers):
    prosody, ngircd = stack
    bob = await irc_user(ngircd, peers, "bob", "#room", "#secret")
    client = await joined_user(prosody, "hana")

    bob.conn.invite("hana", "#secret")  # IRC → XMPP: an XEP-0249 direct invitation
    invited = await client.wait_for(
        lambda s: isinstance(s, Message) and s.xml.find("{jabber:x:conference}x") is not None
    )
    assert invited["from"].bare == f"bob%127.0.0.1@{IRC_JID}"
    secret = f"#secret%127.0.0.1@{IRC_JID}"
    assert invited.xml.find("{jabber:x:conference}x").get("jid") == secret

    carol = await irc_user(ngircd, peers, "carol")
    direct = client.Message()  # XEP-0249, as Conversations sends it
    direct["to"] = f"carol%127.0.0.1@{IRC_JID}"
    ET.SubElement(direct.xml, "{jabber:x:conference}x", {"jid": ROOM})
    direct.send()
    await carol.wait_for(lambda e: e.type == "invite" and e.arguments == ["#room"])

    dave = await irc_user(ngircd, peers, "dave")
    mediated = client.Message()  # XEP-0045 §7.8.2, sent to the room
    mediated["to"] = ROOM
    x = ET.SubElement(mediated.xml, f"{{{MUC_USER_NS}}}x")
    ET.SubElement(x, f"{{{MUC_USER_NS}}}invite", {"to": f"dave%127.0.0.1@{IRC_JID}"})
    mediated.send()
    await dave.wait_for(lambda e: e.type == "invite" and e.arguments == ["#room"])

    elsewhere = client.Message()  # a room that is not ours cannot be brought to IRC
    elsewhere["to"] = f"carol%127.0.0.1@{IRC_JID}"
    ET.SubElement(elsewhere.xml, "{jabber:x:conference}x", {"jid": "room@muc.example"})
    elsewhere.send()
    refused = await client.wait_for(lambda s: isinstance(s, Message) and s["type"] == "error")
    assert refused["error"]["condition"] == "not-acceptable"
    await client.close()
