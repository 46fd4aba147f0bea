"""IRC needs no registration: what clients that cannot register (Conversations, Dino)
see, through Prosody with real slixmpp clients and ngIRCd.

A user of an allowed domain who joins a room or writes to a nick without ever having
registered gets an account made from the IRC defaults; `require_registration: true`
keeps the old refusal, and the mail bridge, which needs a password, says how to
register with an XEP-0147 URI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from harness import stored_account
from registration_helpers import get_registration
from slixmpp import Iq, Message, Presence
from test_irc_e2e import (
    IRC_JID,
    IRC_SECRET,
    PASSWORD,
    ROOM,
    eventually_gone,
    groupchat,
    irc_section,
    irc_user,
    is_self_presence,
    join_presence,
    join_room,
    login,
    run_settings_command,
)
from xmpp_client import TestClient

from bridges.irc import IrcBridge
from bridges.irc.devstack import NgIrcd
from bridges.irc.options import IrcOptions
from bridges.jid_escaping import escape_node
from bridges.mail import MailBridge
from bridges.mail.config import MailOptions
from component.devstack.gateway import GatewayProcess
from component.devstack.prosody import Prosody

MAIL_JID, MAIL_SECRET = "mail.localhost", "mail-secret"
SERVER_JID = f"127.0.0.1@{IRC_JID}"


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Prosody, NgIrcd]]:
    async with (
        Prosody(components={IRC_JID: IRC_SECRET, MAIL_JID: MAIL_SECRET}) as prosody,
        NgIrcd(flood_throttling=False) as ngircd,
    ):
        yield prosody, ngircd


@pytest.fixture
async def start(servers, gateway_factory):
    """Start the gateway with both bridges; keyword arguments go to the IRC section,
    `allowed_domains` to the top level."""
    prosody, ngircd = servers

    async def run(allowed_domains: list[str] | None = None, **irc: Any) -> GatewayProcess:
        bridges = {
            "irc": irc_section(ngircd, **irc),
            "mail": {"jid": MAIL_JID, "secret": MAIL_SECRET},
        }
        top = {"allowed_domains": allowed_domains} if allowed_domains else {}
        return await gateway_factory(prosody, bridges=bridges, **top)

    return run


@pytest.fixture
async def clients() -> AsyncIterator[list[TestClient]]:
    made: list[TestClient] = []
    yield made
    for client in made:
        await client.close()


async def newcomer(prosody: Prosody, clients: list[TestClient], name: str) -> TestClient:
    """A fresh XMPP account that never registered with the gateway nor subscribed to it."""
    client = await login(prosody, await prosody.register(name, PASSWORD), "phone")
    clients.append(client)
    return client


def error_from(jid: str, kind: type = Presence):
    return lambda s: isinstance(s, kind) and s["type"] == "error" and s["from"].bare == jid


def subscription_requests(client: TestClient) -> list[Any]:
    return [s for s in client.stanzas if isinstance(s, Presence) and s["type"] == "subscribe"]


async def stored(gateway: GatewayProcess, user: str, bridge: str = "irc") -> Any:
    """`user`'s account on `bridge` as the gateway process stored it in its database."""
    return await stored_account(gateway.config, user, bridge)


@pytest.mark.parametrize(
    ("user", "join_nick", "nick"),
    [
        ("alice@localhost", "Wonder[1]", "Wonder[1]"),  # the join's nick, when IRC allows it
        ("alice@localhost", None, "alice"),  # a message came first: the localpart
        ("alice@localhost", "Jürgen", "alice"),
        ("alice@localhost", "two words", "alice"),
        ("alice@localhost", "n" * 31, "alice"),  # over nick_max_length
        ("9lives@localhost", None, "x9lives"),
        ("averyverylongname@localhost", None, "averyvery"),  # RFC 2812 length
        ("john.doe+irc@localhost", "-dash", "johndoeir"),
        ("ünïcode@localhost", None, "ncode"),
    ],
)
def test_default_nick_is_always_a_valid_irc_nick(user, join_nick, nick):
    data = IrcBridge(IrcOptions()).default_account(user, join_nick)
    assert data is not None and data.settings["nick"] == nick and not data.secrets


def test_bridges_that_need_registration_offer_no_default():
    assert IrcBridge(IrcOptions(require_registration=True)).default_account("a@b", "a") is None
    assert MailBridge(MailOptions()).default_account("a@b", None) is None


async def test_unregistered_user_joins_with_the_join_nick(servers, start, peers, clients):
    prosody, ngircd = servers
    gateway = await start()
    bob = await irc_user(ngircd, peers, "bob", "#room")
    bob.conn.topic("#room", "no forms here")
    await bob.wait_for(lambda e: e.type == "topic")
    client = await newcomer(prosody, clients, "alice")

    mark = join_presence(client, "wonder")
    occupant = await client.wait_for(
        lambda s: isinstance(s, Presence) and s["from"].resource == "bob", timeout=15
    )
    assert occupant["from"].bare == ROOM
    own = await client.wait_for(is_self_presence, since=mark)
    assert own["from"].full == f"{ROOM}/wonder" and own["type"] == "available"
    subject = await client.wait_for(lambda s: isinstance(s, Message) and s["subject"])
    assert subject["subject"] == "no forms here"
    await bob.wait_for(lambda e: e.type == "join" and e.source.nick == "wonder")

    message = client.Message()
    message["to"], message["type"], message["body"] = ROOM, "groupchat", "hi from xmpp"
    message.send()
    assert (await bob.wait_text("pubmsg", "hi from xmpp")).source.nick == "wonder"
    bob.conn.privmsg("#room", "hi from irc")
    assert (await client.wait_for(groupchat("hi from irc")))["from"].resource == "bob"

    # A real stored account: XEP-0077 shows it with the nick it was made with...
    form = (await get_registration(client, IRC_JID))["register"]
    assert form["registered"] and form["nick"] == "wonder"
    assert (await stored(gateway, client.boundjid.bare)).settings["nick"] == "wonder"
    # ...but unlike a registration it asks for no place in the user's roster,
    assert subscription_requests(client) == []
    # though the user may put the gateway there, as a registered user can.
    client.send_presence(pto=IRC_JID, ptype="subscribe")
    await client.presence_from(IRC_JID, "subscribed")


async def test_unregistered_user_writes_to_a_nick(servers, start, peers, clients):
    prosody, ngircd = servers
    await start()
    bob = await irc_user(ngircd, peers, "bob")
    client = await newcomer(prosody, clients, "9lives")  # no valid IRC nick as it is

    client.send_message(mto=f"bob%127.0.0.1@{IRC_JID}", mbody="hello bob", mtype="chat")
    assert (await bob.wait_text("privmsg", "hello bob")).source.nick == "x9lives"
    bob.conn.privmsg("x9lives", "hello you")
    reply = await client.wait_for(lambda s: isinstance(s, Message) and s["body"] == "hello you")
    assert reply["from"].bare == f"bob%127.0.0.1@{IRC_JID}"


async def test_settings_command_works_without_registration(servers, start, peers, clients):
    prosody, ngircd = servers
    await start()
    bob = await irc_user(ngircd, peers, "bob", "#room")
    client = await newcomer(prosody, clients, "carol")

    await run_settings_command(client, SERVER_JID, nick="chosen")
    own = await join_room(client, "carol", timeout=15)
    assert own["from"].resource == "chosen"  # the network's nick wins, with status 210
    await bob.wait_for(lambda e: e.type == "join" and e.source.nick == "chosen")


async def test_require_registration_refuses_unregistered_users(servers, start, clients):
    prosody, _ngircd = servers
    gateway = await start(require_registration=True)
    client = await newcomer(prosody, clients, "dave")
    how = f"Register with {IRC_JID} first: xmpp:{IRC_JID}?register"

    join_presence(client, "dave")
    refused = await client.wait_for(error_from(ROOM))
    assert refused["error"]["condition"] == "registration-required"
    assert refused["error"]["text"] == how
    client.send_message(mto=f"bob%127.0.0.1@{IRC_JID}", mbody="hello", mtype="chat")
    refused = await client.wait_for(error_from(f"bob%127.0.0.1@{IRC_JID}", Message))
    assert refused["error"]["condition"] == "registration-required"
    assert await stored(gateway, client.boundjid.bare) is None


async def test_mail_still_needs_registration_and_says_how(servers, start, clients):
    prosody, _ngircd = servers
    gateway = await start()
    client = await newcomer(prosody, clients, "erin")
    contact = f"{escape_node('bob@example.org')}@{MAIL_JID}"

    client.send_message(mto=contact, mbody="hello", mtype="chat")
    refused = await client.wait_for(error_from(contact, Message))
    assert refused["error"]["condition"] == "registration-required"
    assert refused["error"]["text"] == f"Register with {MAIL_JID} first: xmpp:{MAIL_JID}?register"
    assert await stored(gateway, client.boundjid.bare, "mail") is None


async def test_help_says_how_to_register_only_where_needed(servers, start, clients):
    prosody, _ngircd = servers
    await start()
    client = await newcomer(prosody, clients, "ivy")
    for gateway, hint in ((IRC_JID, False), (MAIL_JID, True)):
        client.send_message(mto=gateway, mbody="help", mtype="chat")
        help_text = (await client.message_from(gateway))["body"]
        assert help_text.startswith("This is the ")
        assert (f"xmpp:{gateway}?register" in help_text) is hint


async def test_users_of_other_domains_get_no_account(servers, start, peers, clients):
    prosody, ngircd = servers
    gateway = await start(allowed_domains=["example.org"])
    bob = await irc_user(ngircd, peers, "bob", "#room")
    client = await newcomer(prosody, clients, "mallory")

    join_presence(client, "mallory")
    refused = await client.wait_for(error_from(ROOM))
    assert refused["error"]["condition"] == "registration-required"
    client.send_message(mto=f"bob%127.0.0.1@{IRC_JID}", mbody="spam", mtype="chat")
    await client.wait_for(error_from(f"bob%127.0.0.1@{IRC_JID}", Message))
    assert await stored(gateway, client.boundjid.bare) is None
    await eventually_gone(bob, "mallory")  # never connected to IRC at all
    assert not bob.matching(lambda e: e.type in ("join", "privmsg") and e.source.nick != "bob")


async def test_presence_alone_creates_no_account(servers, start, clients):
    """Only a join or a message makes an account; presence (to the gateway or a contact,
    as clients send it on their own) must not."""
    prosody, _ngircd = servers
    gateway = await start()
    client = await newcomer(prosody, clients, "frank")

    client.send_presence(pto=IRC_JID)
    client.send_presence(pto=f"bob%127.0.0.1@{IRC_JID}")
    # The user's stanzas are handled in order: once this is answered, so were those.
    ping: Iq = client.make_iq_to(IRC_JID)
    ping.enable("ping")
    await ping.send(timeout=10)
    assert await stored(gateway, client.boundjid.bare) is None


def join(client: TestClient, room: str, nick: str) -> int:
    """Send a join to `room`; returns the client's mark from just before it."""
    mark = client.mark()
    presence = client.Presence()
    presence["to"] = f"{room}/{nick}"
    presence.send()
    return mark


async def test_leaving_the_last_room_leaves_irc(servers, start, peers, clients):
    """The gateway is not in such a user's roster, so it never sees them go offline;
    their last room going is the sign (as in biboumi), else the connection stays."""
    prosody, ngircd = servers
    await start()
    bob = await irc_user(ngircd, peers, "bob", "#room", "#other")
    client = await newcomer(prosody, clients, "gail")
    other = f"#other%127.0.0.1@{IRC_JID}"
    for room in (ROOM, other):
        own = await client.wait_for(is_self_presence, since=join(client, room, "gail"))
        assert own["from"].bare == room

    client.send_presence(pto=f"{ROOM}/gail", ptype="unavailable")
    await bob.wait_for(lambda e: e.type == "part" and e.target == "#room")
    bob.conn.privmsg("#other", "still here?")
    await client.wait_for(groupchat("still here?"))
    assert not bob.matching(lambda e: e.type == "quit")
    client.send_presence(pto=f"{other}/gail", ptype="unavailable")
    await eventually_gone(bob, "gail")  # QUIT (unseen: no channel is shared any more)
