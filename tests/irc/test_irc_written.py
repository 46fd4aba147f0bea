"""What the user is told was sent has been written to IRC (issue 8, item 3).

A room message is reported `Delivered` (the MUC engine reflects it then) and a private
one too (its XEP-0184 receipt) only once its last line has left the send queue; lines
still queued survive a reconnect and are answered with `DeliveryFailed` at a stop.
"""

from __future__ import annotations

import re
import time

from irc_helpers import Harness, RecordingSink

from bridges import events
from bridges.address import Address

RATE = 4.0
"""Lines per second the session may write (burst 1): slow enough to see the queue."""


def delivered_ids(sink: RecordingSink, to: Address) -> list[str]:
    return [e.xmpp_id for e in sink.items if isinstance(e, events.Delivered) and e.to == to]


async def test_room_messages_are_delivered_as_their_lines_are_written(irc: Harness):
    bob = await irc.peer("bob", "#room")
    session, sink, room = await irc.joined("#room", flood_rate=RATE, flood_burst=1)
    ids = [f"m{n}" for n in range(8)]

    for n, xmpp_id in enumerate(ids):
        await session.send_message(room, f"line {n}", xmpp_id=xmpp_id)
    queued_at = time.monotonic()

    assert len(delivered_ids(sink, room)) <= 1  # the burst; the rest is only queued
    reported: list[float] = []
    for n, xmpp_id in enumerate(ids):
        await sink.wait_event(events.Delivered, to=room, xmpp_id=xmpp_id)
        reported.append(time.monotonic() - queued_at)
        # Reported means written: the server relays it to the channel right away.
        await bob.wait_until(lambda n=n: len(bob.texts("pubmsg", "alice")) > n, timeout=2)
    assert reported[-1] >= (len(ids) - 2) / RATE * 0.8  # paced: one report per line
    assert delivered_ids(sink, room) == ids
    assert bob.texts("pubmsg", "alice") == [f"line {n}" for n in range(8)]


async def test_a_multi_line_message_is_delivered_once_after_its_last_line(irc: Harness):
    bob = await irc.peer("bob", "#room")
    session, sink, room = await irc.joined("#room", flood_rate=RATE, flood_burst=1)

    await session.send_message(room, "one\ntwo\nthree", xmpp_id="paste")

    await sink.wait_event(events.Delivered, to=room, xmpp_id="paste")
    await bob.wait_until(lambda: len(bob.texts("pubmsg", "alice")) == 3, timeout=2)
    assert delivered_ids(sink, room) == ["paste"]


async def test_private_message_is_delivered_only_once_written(irc: Harness):
    bob = await irc.peer("bob")
    session, sink = await irc.session("alice", flood_rate=RATE, flood_burst=1)
    contact = irc.contact("bob")
    await session.send_message(contact, "filler", xmpp_id="p0")  # connects and opens the gap
    await session.send_message(contact, "one\ntwo\nthree", xmpp_id="p1")

    assert delivered_ids(sink, contact) in ([], ["p0"])
    await sink.wait_event(events.Delivered, to=contact, xmpp_id="p1")
    await bob.wait_until(lambda: len(bob.texts("privmsg", "alice")) == 4, timeout=2)
    assert delivered_ids(sink, contact) == ["p0", "p1"]


async def test_queued_lines_are_sent_after_the_rejoin_none_lost_none_twice(irc: Harness):
    bob = await irc.peer("bob", "#room")
    session, sink, room = await irc.joined(
        "#room", flood_rate=RATE, flood_burst=1, reconnect_initial_delay=1.5
    )
    ids = [f"m{n}" for n in range(12)]
    for n, xmpp_id in enumerate(ids):
        await session.send_message(room, f"line {n:02d}", xmpp_id=xmpp_id)
    await sink.wait_event(events.Delivered, to=room, xmpp_id="m1")

    await irc.server.restart()
    # Back in the channel before the gateway's first retry (1.2-1.8 s after the drop).
    bob_again = await irc.peer("bob2", "#room")

    await sink.wait_for(
        lambda e: isinstance(e, events.Message) and e.sender == room and "Reconnected" in e.text,
        timeout=20,
    )
    await sink.wait_event(events.Delivered, to=room, xmpp_id="m11", timeout=20)
    before = bob.texts("pubmsg", "alice")
    await bob_again.wait_until(
        lambda: before + bob_again.texts("pubmsg", "alice") == [f"line {n:02d}" for n in range(12)],
        timeout=5,
    )
    assert delivered_ids(sink, room) == ids
    assert not sink.matching(lambda e: isinstance(e, events.DeliveryFailed))


async def test_stop_answers_each_unsent_message_with_a_failure(irc: Harness):
    bob = await irc.peer("bob", "#room")
    session, sink, room = await irc.joined("#room", flood_rate=2.0, flood_burst=1)
    ids = [f"m{n}" for n in range(10)]
    for n, xmpp_id in enumerate(ids):
        await session.send_message(room, f"line {n}", xmpp_id=xmpp_id)

    await session.stop()  # waits 2 s for the queue: some lines go, most do not

    sent = delivered_ids(sink, room)
    failed = [e for e in sink.items if isinstance(e, events.DeliveryFailed)]
    assert sent == ids[: len(sent)] and 0 < len(sent) < len(ids)
    assert [e.xmpp_id for e in failed] == ids[len(sent) :]
    assert all(e.to == room and e.condition == "remote-server-timeout" for e in failed)
    assert "stopped" in failed[0].text
    await bob.wait_until(lambda: any(e.type == "quit" for e in bob.items), timeout=5)
    assert bob.texts("pubmsg", "alice") == [f"line {n}" for n in range(len(sent))]


def own_lines_shown(sink: RecordingSink, room: Address) -> list[events.Message]:
    """Our own lines coming back as if someone had sent them (an echo leaking)."""
    return sink.matching(
        lambda e: isinstance(e, events.Message) and e.sender == room and e.nick == "alice"
    )


async def test_with_echo_message_delivered_on_the_labelled_echo(inspircd: Harness):
    bob = await inspircd.peer("bob", "#room")
    session, sink, room = await inspircd.joined("#room", flood_rate=RATE, flood_burst=1)

    await session.send_message(room, "one\ntwo", xmpp_id="paste")

    delivered = await sink.wait_event(events.Delivered, to=room, xmpp_id="paste")
    assert delivered.legacy_id is not None and re.fullmatch(r"\w+~\d+~\d+", delivered.legacy_id)
    # Each line got a msgid of its own; the message keeps them all, the first first.
    first, second = delivered.legacy_ids
    assert first == delivered.legacy_id and second != first
    assert re.fullmatch(r"\w+~\d+~\d+", second)
    assert delivered.sent is not None and delivered.sent.tzinfo is not None
    await bob.wait_until(lambda: bob.texts("pubmsg", "alice") == ["one", "two"])
    assert delivered_ids(sink, room) == ["paste"]
    assert own_lines_shown(sink, room) == []


async def test_with_echo_message_a_reconnect_sends_the_rest_once(inspircd: Harness):
    bob = await inspircd.peer("bob", "#room")
    session, sink, room = await inspircd.joined(
        "#room", flood_rate=RATE, flood_burst=1, reconnect_initial_delay=1.5
    )
    ids = [f"m{n}" for n in range(10)]
    for n, xmpp_id in enumerate(ids):
        await session.send_message(room, f"line {n:02d}", xmpp_id=xmpp_id)
    await sink.wait_event(events.Delivered, to=room, xmpp_id="m1")

    await inspircd.server.restart()
    bob_again = await inspircd.peer("bob2", "#room")  # registering takes InspIRCd 1 s

    await sink.wait_event(events.Delivered, to=room, xmpp_id="m9", timeout=30)
    before = bob.texts("pubmsg", "alice")
    await bob_again.wait_until(
        lambda: before + bob_again.texts("pubmsg", "alice") == [f"line {n:02d}" for n in range(10)],
        timeout=5,
    )
    assert delivered_ids(sink, room) == ids
    assert own_lines_shown(sink, room) == []
    assert not sink.matching(lambda e: isinstance(e, events.DeliveryFailed))
