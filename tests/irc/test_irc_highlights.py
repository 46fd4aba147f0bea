"""Highlights while away, through Prosody: a line naming the user's nick in a
persistent channel, while none of their clients is in the room, also comes as a
private message from the room occupant, which Prosody keeps offline (mod_offline)."""

from __future__ import annotations

from irc_helpers import SERVER, Harness, IrcPeer, ScriptedIrcd
from registration_helpers import register_and_subscribe
from slixmpp import Message
from test_irc_e2e import (  # noqa: F401 - fixtures used by name
    IRC_JID,
    PASSWORD,
    ROOM,
    gateway_app,
    groupchat,
    irc_user,
    join_room,
    login,
    run_settings_command,
    servers,
    stack,
    wait_away,
)
from xmpp_client import TestClient

from bridges import events
from bridges.irc.session import OFFLINE_AWAY
from bridges.irc.settings import STATE_KEY


def chat_from_bob(body: str):  # type: ignore[no-untyped-def]
    return lambda s: (
        isinstance(s, Message)
        and s["type"] == "chat"
        and s["from"].full == f"{ROOM}/bob"
        and s["body"] == body
    )


async def go_offline(client: TestClient, bob: IrcPeer) -> None:
    await client.close()
    await wait_away(bob, "dora", OFFLINE_AWAY)  # the gateway knows: no client in the room


async def back_in_room(prosody, jid: str, resource: str, history: str) -> TestClient:  # type: ignore[no-untyped-def]
    """Log in (offline messages arrive with the initial presence) and rejoin, until
    the room's history shows `history`: every chat message would have come before."""
    client = await login(prosody, jid, resource)
    await join_room(client, "dora")
    await client.wait_for(groupchat(history))
    return client


def room_chats(client: TestClient) -> list[str]:
    """Bodies of the private messages from room occupants that arrived so far."""
    return [
        s["body"]
        for s in client.stanzas
        if isinstance(s, Message) and s["type"] == "chat" and s["from"].bare == ROOM
    ]


async def test_a_line_naming_the_user_while_away_arrives_from_offline_storage(
    stack,  # noqa: F811
    peers,
):
    prosody, ngircd = stack
    bob = await irc_user(ngircd, peers, "bob", "#room")
    jid = await prosody.register("dora", PASSWORD)
    client = await login(prosody, jid, "pc")
    await register_and_subscribe(client, IRC_JID, nick="dora")
    await run_settings_command(client, f"127.0.0.1@{IRC_JID}", persistent="#room")
    await join_room(client, "dora")
    bob.conn.privmsg("#room", "dora: while you are here")
    await client.wait_for(groupchat("dora: while you are here"))
    await go_offline(client, bob)

    bob.conn.privmsg("#room", "just chatting, adora")
    bob.conn.privmsg("#room", "Dora: ping")
    phone = await back_in_room(prosody, jid, "phone", "Dora: ping")
    ping = await phone.wait_for(chat_from_bob("Dora: ping"))
    assert ping.xml.find("{http://jabber.org/protocol/muc#user}x") is not None
    assert ping.xml.find("{urn:xmpp:delay}delay") is not None  # stored offline by Prosody
    assert room_chats(phone) == []  # neither "just chatting" nor the line said live

    await run_settings_command(phone, f"127.0.0.1@{IRC_JID}", highlights="false")
    await go_offline(phone, bob)
    bob.conn.privmsg("#room", "dora: are you there?")
    laptop = await back_in_room(prosody, jid, "laptop", "dora: are you there?")
    assert room_chats(laptop) == []
    await laptop.close()


async def test_the_bridge_marks_lines_naming_the_nick_unless_switched_off():
    def script(line: str) -> list[str]:
        replies = {
            "CAP LS 302": [":srv CAP * LS :"],
            "CAP END": [":srv 001 dora :Welcome", ":srv 376 dora :End of MOTD"],
            "JOIN :#room": [
                ":dora!d@h JOIN #room",
                ":srv 353 dora = #room :dora bob",
                ":srv 366 dora #room :End of NAMES",
                ":bob!b@h PRIVMSG #room :DORA: ping",
                ":bob!b@h PRIVMSG #room :adora is someone else",
                ":dora!d@h PRIVMSG #room :dora talks about herself",
                ":bob!b@h NOTICE #room :end",
            ],
        }
        return replies.get(line, [])

    for switch, expected in ((None, [True, False, False]), (False, [False, False, False])):
        async with ScriptedIrcd(script) as server:
            harness = Harness(server)
            state = {} if switch is None else {STATE_KEY: {SERVER: {"highlights": switch}}}
            session, sink = await harness.session("dora", user="dora@localhost", state=state)
            await session.join(harness.room("#room"), "dora")
            await sink.wait_event(events.Message, text="end")
            said = [e for e in sink.items if isinstance(e, events.Message) and e.text != "end"]
            assert [e.highlight for e in said if e.nick] == expected
            await harness.close()
