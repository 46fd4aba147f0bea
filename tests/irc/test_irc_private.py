"""Private messages, CTCP, the server's own messages, LIST, errors on delivery."""

from __future__ import annotations

from irc_helpers import Harness

from bridges import events
from bridges.address import AddressKind


async def test_private_messages_both_ways_open_the_connection_lazily(any_irc: Harness):
    bob = await any_irc.peer("bob")
    session, sink = await any_irc.session("alice")
    assert session.networks == {}

    await session.send_message(any_irc.contact("bob"), "hi bob\n/me also waves")
    assert (await bob.wait_text("privmsg", "hi bob")).source.nick == "alice"
    await bob.wait_text("action", "also waves")

    bob.conn.privmsg("alice", "hi alice")
    message = await sink.wait_event(events.Message, text="hi alice")
    assert message.sender == any_irc.contact("Bob")
    assert message.sender.kind is AddressKind.CONTACT
    bob.conn.action("alice", "nods")
    await sink.wait_event(events.Message, text="/me nods", sender=any_irc.contact("bob"))
    bob.conn.notice("alice", "a notice")
    await sink.wait_event(events.Message, text="a notice", sender=any_irc.contact("bob"))


async def test_ctcp_version_and_ping_are_answered(any_irc: Harness):
    bob = await any_irc.peer("bob")
    session, sink = await any_irc.session("alice")
    await session.send_message(any_irc.contact("bob"), "hello")
    await bob.wait_text("privmsg", "hello")

    bob.conn.privmsg("alice", "\x01VERSION\x01")  # irc 20.5 ctcp() without argument is broken
    reply = await bob.wait_for(lambda e: e.type == "ctcpreply" and e.arguments[0] == "VERSION")
    assert "xmpp-gateway" in reply.arguments[1]
    bob.conn.ctcp("PING", "alice", "12345")
    reply = await bob.wait_for(lambda e: e.type == "ctcpreply" and e.arguments[0] == "PING")
    assert reply.arguments[1] == "12345"
    assert not sink.matching(lambda e: isinstance(e, events.Message) and "VERSION" in e.text)


async def test_welcome_and_errors_come_from_the_server_address(any_irc: Harness):
    session, sink = await any_irc.session("alice")
    service = any_irc.bridge().parse_address("127.0.0.1")
    await session.send_message(any_irc.contact("bob"), "anyone?")

    welcome = await sink.wait_event(events.Message, sender=service)
    assert "Welcome" in welcome.text and "message of the day" in welcome.text
    failed = await sink.wait_event(events.DeliveryFailed)
    assert (failed.to, failed.condition) == (any_irc.contact("bob"), "item-not-found")

    await session.send_message(service, "WHOIS nosuchnick")  # raw command to the server
    await sink.wait_for(
        lambda e: isinstance(e, events.Message) and e.sender == service and "nosuchnick" in e.text
    )


async def test_list_groups(irc: Harness):
    await irc.peer("bob", "#one", "#two")
    session, _sink = await irc.session("alice")
    groups = await session.list_groups(irc.bridge().parse_address("127.0.0.1"))
    assert {address for address, _name in groups} >= {irc.room("#one"), irc.room("#two")}
