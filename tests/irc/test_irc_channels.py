"""IrcSession against a real ngIRCd (and InspIRCd, for `any_irc`): joining, talking and
room life in channels."""

from __future__ import annotations

import pytest
from irc_helpers import SERVER, Harness

from bridges import events
from bridges.base import BridgeError
from bridges.irc.devstack import NgIrcd


def occupant_is(nick: str, role: events.Role = events.Role.PARTICIPANT):
    """An OccupantJoined for `nick` with `role` (InspIRCd adds the real name as well)."""
    return lambda e: (
        isinstance(e, events.OccupantJoined)
        and (e.occupant.nick, e.occupant.role) == (nick, role)
        and e.occupant.occupant_id == f"nick {nick}"
    )


async def test_join_reports_occupants_roles_and_topic(any_irc: Harness):
    op = await any_irc.peer("opnick", "#room")
    op.conn.topic("#room", "the topic")
    await op.wait_for(lambda e: e.type == "topic")
    voiced = await any_irc.peer("voiced", "#room")
    op.conn.mode("#room", "+v voiced")
    await voiced.wait_for(lambda e: e.type == "mode" and e.arguments == ["+v", "voiced"])
    session, sink = await any_irc.session("alice")

    await session.join(any_irc.room("#room"), "alice")

    joined = await sink.wait_event(events.RoomJoined)
    assert joined.room == any_irc.room("#Room")
    assert joined.nick == "alice"
    assert set(joined.occupants) == {
        events.Occupant("opnick", events.Role.MODERATOR, occupant_id="nick opnick"),
        events.Occupant("voiced", events.Role.PARTICIPANT, occupant_id="nick voiced"),
    }
    assert (joined.subject, joined.subject_by) == ("the topic", "opnick")
    await op.wait_for(lambda e: e.type == "join" and e.source.nick == "alice")


async def test_channel_messages_both_ways(any_irc: Harness):
    bob = await any_irc.peer("bob", "#room")
    session, sink, room = await any_irc.joined("#room")

    await session.send_message(room, "hello from xmpp")
    assert (await bob.wait_text("pubmsg", "hello from xmpp")).source.nick == "alice"

    bob.conn.privmsg("#room", "\x02hello\x02 \x0304from\x03 irc")
    message = await sink.wait_event(events.Message, sender=room)
    assert (message.nick, message.text) == ("bob", "*hello* from irc")  # XEP-0393 bold


async def test_me_action_both_ways(any_irc: Harness):
    bob = await any_irc.peer("bob", "#room")
    session, sink, room = await any_irc.joined("#room")

    await session.send_message(room, "/me waves")
    assert (await bob.wait_text("action", "waves")).source.nick == "alice"

    bob.conn.action("#room", "bows")
    assert (await sink.wait_event(events.Message, sender=room)).text == "/me bows"


async def test_multiline_body_becomes_several_privmsgs(irc: Harness):
    bob = await irc.peer("bob", "#room")
    session, _sink, room = await irc.joined("#room")

    await session.send_message(room, "one\ntwo\n\nthree")
    await bob.wait_text("pubmsg", "three")
    assert bob.texts("pubmsg", "alice") == ["one", "two", "three"]


async def test_message_over_the_line_limit_is_refused_whole(irc: Harness):
    bob = await irc.peer("bob", "#room")
    session, _sink, room = await irc.joined("#room", max_lines_per_message=2)

    with pytest.raises(BridgeError) as refused:
        await session.send_message(room, "one\ntwo\nthree")
    assert refused.value.condition == "policy-violation"
    assert "3 lines, the limit is 2" in refused.value.text
    await session.send_message(room, "four\nfive")
    await bob.wait_text("pubmsg", "five")
    assert bob.texts("pubmsg", "alice") == ["four", "five"]  # nothing of the refused one


async def test_long_line_is_split_on_utf8_boundaries_and_reassembles(irc: Harness):
    bob = await irc.peer("bob", "#room")
    session, _sink, room = await irc.joined("#room")
    text = "début " + "é€𝄞 " * 300 + "fin"  # 2-, 3- and 4-byte characters

    await session.send_message(room, text)

    await bob.wait_for(lambda e: e.type == "pubmsg" and e.arguments[0].endswith("fin"))
    pieces = bob.texts("pubmsg", "alice")
    assert len(pieces) > 1
    assert " ".join(pieces) == text  # cut at spaces, which are not sent
    prefix = len(b":alice!~alice@127.0.0.1 PRIVMSG #room :")
    assert all(prefix + len(p.encode()) + 2 <= 512 for p in pieces)


async def test_non_utf8_input_is_decoded_with_latin1(irc: Harness):
    bob = await irc.peer("bob", "#room")
    _session, sink, room = await irc.joined("#room")

    bob.send_raw_bytes("PRIVMSG #room :café à la crème".encode("latin-1"))

    assert (await sink.wait_event(events.Message, sender=room)).text == "café à la crème"


async def test_topic_both_ways(any_irc: Harness):
    bob = await any_irc.peer("bob", "#room")
    if not isinstance(any_irc.server, NgIrcd):  # InspIRCd makes new channels +t
        bob.conn.mode("#room", "-t")
        await bob.wait_for(lambda e: e.type == "mode" and e.arguments == ["-t"])
    session, sink, room = await any_irc.joined("#room")

    bob.conn.topic("#room", "from irc")
    assert (await sink.wait_event(events.SubjectChanged)).subject == "from irc"
    await session.set_subject(room, "from xmpp")
    topic = await bob.wait_for(lambda e: e.type == "topic" and e.source.nick == "alice")
    assert topic.arguments == ["from xmpp"]


async def test_occupants_join_part_quit_and_nick(any_irc: Harness):
    _session, sink, _room = await any_irc.joined("#room")

    bob = await any_irc.peer("bob", "#room")
    await sink.wait_for(occupant_is("bob"))
    bob.conn.nick("robert")
    await sink.wait_event(events.NickChanged, old="bob", new="robert", own=False)
    bob.conn.send_raw("PART #room :see you")  # jaraco part() drops the colon
    left = await sink.wait_event(events.OccupantLeft, nick="robert")
    assert left.reason == "see you"
    carol = await any_irc.peer("carol", "#room")
    await sink.wait_for(occupant_is("carol"))
    carol.conn.quit("gone")
    quit_reason = (await sink.wait_event(events.OccupantLeft, nick="carol")).reason
    assert quit_reason in ('"gone"', "Quit: gone")  # as ngIRCd and InspIRCd put it


async def test_kick_by_op_and_of_the_user(any_irc: Harness):
    op = await any_irc.peer("opnick", "#room")
    _session, sink, room = await any_irc.joined("#room")
    await any_irc.peer("bob", "#room")
    await sink.wait_for(occupant_is("bob"))

    op.conn.kick("#room", "bob", "behave")
    kicked = await sink.wait_event(events.OccupantLeft, nick="bob")
    assert (kicked.kicked_by, kicked.reason) == ("opnick", "behave")

    op.conn.kick("#room", "alice", "you too")
    left = await sink.wait_event(events.RoomLeft)
    assert (left.room, left.kicked_by, left.reason) == (room, "opnick", "you too")


async def test_kick_and_roles_from_xmpp_need_op(irc: Harness):
    session, sink = await irc.session("alice")
    room = irc.room("#room")
    await session.join(room, "alice")  # first in: ngIRCd makes us op
    await sink.wait_event(events.RoomJoined)
    await sink.wait_for(occupant_is("alice", events.Role.MODERATOR))
    bob = await irc.peer("bob", "#room")
    await sink.wait_for(occupant_is("bob"))

    await session.set_role(room, "bob", events.Role.MODERATOR)
    await sink.wait_for(occupant_is("bob", events.Role.MODERATOR))
    await session.set_role(room, "bob", events.Role.PARTICIPANT)
    await bob.wait_for(lambda e: e.type == "mode" and e.arguments[0] == "-o+v")
    await session.kick(room, "bob", "bye bob")
    kick = await bob.wait_for(lambda e: e.type == "kick")
    assert kick.arguments == ["bob", "bye bob"]


async def test_part_when_leaving(any_irc: Harness):
    bob = await any_irc.peer("bob", "#room")
    session, _sink, room = await any_irc.joined("#room")

    await session.leave(room)
    await bob.wait_for(lambda e: e.type == "part" and e.source.nick == "alice")


async def test_nick_change_and_conflict(any_irc: Harness):
    bob = await any_irc.peer("bob", "#room")
    session, sink, room = await any_irc.joined("#room", nick_max_length=40)

    await session.change_nick(room, "bob")
    conflict = await sink.wait_event(events.NickConflict)
    assert (conflict.room, conflict.nick) == (room, "bob")

    nicklen = 9 if isinstance(any_irc.server, NgIrcd) else 30  # what each announces
    with pytest.raises(BridgeError) as too_long:
        await session.change_nick(room, "a" * (nicklen + 1))
    assert too_long.value.condition == "not-acceptable"
    assert f"allows {nicklen} characters" in too_long.value.text

    await session.change_nick(room, "alicia")
    await sink.wait_event(events.NickChanged, old="alice", new="alicia", own=True)
    await bob.wait_for(lambda e: e.type == "nick" and e.target == "alicia")


async def test_join_refusals_map_to_stanza_conditions(irc: Harness):
    op = await irc.peer("opnick", "#ban", "#inv", "#key", "#full")
    op.conn.mode("#inv", "+i")
    op.conn.mode("#key", "+k sesame")
    op.conn.mode("#full", "+l 1")
    op.conn.mode("#ban", "+b alice!*@*")
    await op.wait_for(lambda e: e.type == "mode" and e.target == "#ban")
    session, sink = await irc.session("alice")

    expected = {
        "#ban": "forbidden",
        "#inv": "registration-required",
        "#key": "not-authorized",
        "#full": "service-unavailable",
    }
    for channel in expected:
        await session.join(irc.room(channel), "alice")
    for channel, condition in expected.items():
        failed = await sink.wait_event(events.RoomJoinFailed, room=irc.room(channel))
        assert failed.condition == condition
        assert channel in failed.text

    await session.join(irc.room("#key"), "alice", password="sesame")
    await sink.wait_event(events.RoomJoined, room=irc.room("#key"))


async def test_one_connection_per_server_and_taken_nick_on_connect(irc: Harness):
    """`127.0.0.1` and `localhost` are two networks to the bridge (same ngIRCd here)."""
    bob = await irc.peer("bob", "#room")
    session, sink = await irc.session("alice")
    first = irc.room("#room")
    second = irc.bridge().parse_address("#room%localhost")

    await session.join(first, "alice")
    assert (await sink.wait_event(events.RoomJoined, room=first)).nick == "alice"
    await session.join(second, "alice")
    renamed = await sink.wait_event(events.RoomJoined, room=second)
    assert renamed.nick == "alice_"  # the other connection holds "alice"
    assert {o.nick for o in renamed.occupants} == {"bob", "alice"}
    assert set(session.networks) == {"127.0.0.1", "localhost"}

    await session.send_message(second, "from the second connection")
    assert (await bob.wait_text("pubmsg", "from the second connection")).source.nick == "alice_"


async def test_multi_prefix_keeps_every_rank(irc: Harness):
    """ngIRCd offers IRCv3 multi-prefix: an op who is also half-op is `@%bob` in NAMES,
    so when bob is deopped he stays a moderator (half-ops may kick) instead of being
    shown as a plain participant."""
    bob = await irc.peer("bob", "#ranks")  # the first one in is op
    bob.conn.mode("#ranks", "+h bob")
    await bob.wait_for(lambda e: e.type == "mode" and e.arguments[:2] == ["+h", "bob"])
    session, sink = await irc.session("alice")
    room = irc.room("#ranks")
    await session.join(room, "alice")
    joined = await sink.wait_event(events.RoomJoined, room=room)
    assert events.Occupant("bob", events.Role.MODERATOR, occupant_id="nick bob") in joined.occupants

    bob.conn.mode("#ranks", "-o bob")
    bob.conn.privmsg("#ranks", "still in charge")
    await sink.wait_for(lambda e: isinstance(e, events.Message) and e.text == "still in charge")
    assert not [e for e in sink.items if isinstance(e, events.OccupantJoined)]
    assert "multi-prefix" in session.networks[SERVER].conn.caps
