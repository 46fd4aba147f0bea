"""Persistent channels at the session level: joined without the user, kept joined.

A session starts in its persistent channels (the gateway starts such sessions with
itself, for users who are offline), going offline joins persistent channels not joined
yet, and a server that is down at start is retried until it is back.
"""

from __future__ import annotations

from irc_helpers import SERVER, Harness

from bridges import events
from bridges.irc.settings import STATE_KEY


def persistent(*channels: str, autojoin: tuple[str, ...] = ()) -> dict[str, object]:
    return {STATE_KEY: {SERVER: {"persistent": list(channels), "autojoin": list(autojoin)}}}


async def test_session_start_joins_persistent_channels_and_a_later_join_is_immediate(
    irc: Harness,
):
    bob = await irc.peer("bob", "#room")
    session, sink = await irc.session("alice", state=persistent("#room"))
    await bob.wait_for(lambda e: e.type == "join" and e.source.nick == "alice")
    room = irc.room("#room")
    await sink.wait_event(events.RoomJoined, room=room)  # primes the state, nobody asked
    assert await session.user_offline()  # offline from the start: stays

    bob.conn.privmsg("#room", "while nobody reads")
    await sink.wait_event(events.Message, text="while nobody reads")
    await session.join(room, "alice")
    joined = sink.matching(lambda e: isinstance(e, events.RoomJoined))
    assert len(joined) == 2 and [o.nick for o in joined[1].occupants] == ["bob"]
    assert len(bob.matching(lambda e: e.type == "join" and e.source.nick == "alice")) == 1


async def test_going_offline_joins_persistent_channels_not_joined_yet(irc: Harness):
    bob = await irc.peer("bob", "#room", "#other")
    session, sink = await irc.session("alice")
    await session.join(irc.room("#other"), "alice")
    await sink.wait_event(events.RoomJoined, room=irc.room("#other"))
    session.account.state = persistent("#room")  # saved meanwhile by the settings command

    assert await session.user_offline()
    await bob.wait_for(
        lambda e: e.type == "join" and e.source.nick == "alice" and e.target == "#room"
    )
    await bob.wait_for(lambda e: e.type == "part" and e.source.nick == "alice")
    assert [e.target for e in bob.matching(lambda e: e.type == "part")] == ["#other"]


async def test_persistent_channels_wait_for_a_server_that_is_down_at_start(irc: Harness):
    await irc.server.stop()
    session, sink = await irc.session("alice", state=persistent("#room"))
    assert await session.user_offline()
    await irc.server.start()
    await sink.wait_event(events.RoomJoined, room=irc.room("#room"), timeout=15)
    bob = await irc.peer("bob", "#room")
    assert bob.matching(lambda e: e.type == "namreply" and "alice" in e.arguments[2])


async def test_a_connection_opened_while_offline_skips_autojoin(irc: Harness):
    bob = await irc.peer("bob", "#room", "#auto")
    session, sink = await irc.session("alice", state=persistent("#room", autojoin=("#auto",)))
    assert await session.user_offline()  # as the gateway says at start, before connecting
    await sink.wait_event(events.RoomJoined, room=irc.room("#room"))
    await session.send_message(irc.contact("bob"), "after my joins")  # same connection
    await bob.wait_text("privmsg", "after my joins")
    joins = bob.matching(lambda e: e.type == "join" and e.source.nick == "alice")
    assert [e.target for e in joins] == ["#room"]
