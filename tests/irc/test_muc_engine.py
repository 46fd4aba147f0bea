"""component.muc.GroupChats as a unit: stanzas in, Session calls and stanzas out.

The Session is a fake recording calls; the stanzas are real slixmpp objects, checked
the way a client reads them (muc#user items and status codes).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slixmpp import Iq, Message, Presence
from slixmpp.exceptions import XMPPError
from slixmpp.xmlstream import ET

from bridges import events
from bridges.irc import IrcBridge
from bridges.irc.options import IrcOptions
from component.archive import Archive
from component.crypto import SecretBox, generate_key
from component.db import create_engine, upgrade
from component.muc import (
    MUC_ADMIN_NS,
    MUC_NS,
    MUC_USER_NS,
    OCCUPANT_ID_NS,
    SID_NS,
    GroupChats,
)
from component.store import Store

COMPONENT = "irc.localhost"
USER = "user@localhost"
PHONE, LAPTOP = f"{USER}/phone", f"{USER}/laptop"
ROOM_JID = f"#room%irc.x.org@{COMPONENT}"


class FakeSession:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def join(self, room, nick, password=None):
        self.calls.append(("join", room, nick, password))

    async def leave(self, room):
        self.calls.append(("leave", room))

    async def send_message(self, to, text, *, xmpp_id=None, subject=None, thread=None, origin=None):
        self.calls.append(("send", to, text, xmpp_id))

    async def set_subject(self, room, subject):
        self.calls.append(("subject", room, subject))

    async def change_nick(self, room, nick):
        self.calls.append(("nick", room, nick))

    async def kick(self, room, nick, reason):
        self.calls.append(("kick", room, nick, reason))

    async def set_role(self, room, nick, role):
        self.calls.append(("role", room, nick, role))


@pytest.fixture
def bridge() -> IrcBridge:
    return IrcBridge(IrcOptions())


@pytest.fixture
def room(bridge):
    return bridge.parse_address("#room%irc.x.org")


@pytest.fixture
def sent() -> list:
    return []


@pytest.fixture
def muc(sent, bridge) -> GroupChats:
    return GroupChats(sent.append, COMPONENT, bridge)


def presence(frm: str, nick: str, ptype: str | None = None, password: str | None = None):
    stanza = Presence()
    stanza["from"], stanza["to"] = frm, f"{ROOM_JID}/{nick}"
    if ptype:
        stanza["type"] = ptype
    x = ET.SubElement(stanza.xml, f"{{{MUC_NS}}}x")
    if password:
        ET.SubElement(x, f"{{{MUC_NS}}}password").text = password
    return stanza


def codes(stanza) -> set[str]:
    return {s.get("code") for s in stanza.xml.iter(f"{{{MUC_USER_NS}}}status")}


def item(stanza):
    return stanza.xml.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}item")


def joined_event(room, nick="alice"):
    return events.RoomJoined(
        room,
        nick,
        (events.Occupant("op", events.Role.MODERATOR), events.Occupant("bob")),
        "the topic",
        "op",
    )


async def join(muc, session, room, frm=PHONE, nick="alice"):
    await muc.on_presence(presence(frm, nick), session, room)


async def in_room(muc, sent, room, *others: str) -> FakeSession:
    """A session of USER, who joined `room` from PHONE and then from each of `others`
    before the legacy join completed; what the join sent is cleared from `sent`."""
    session = FakeSession()
    for frm in (PHONE, *others):
        await join(muc, session, room, frm=frm)
    await muc.on_event(USER, joined_event(room))
    sent.clear()
    return session


def groupchat(**fields: str) -> Message:
    """A groupchat message from PHONE to the room, with `fields` (body, id, subject)."""
    message = Message()
    message["from"], message["to"], message["type"] = PHONE, ROOM_JID, "groupchat"
    for name, value in fields.items():
        message[name] = value
    return message


async def test_full_join_occupants_self_last_then_subject(muc, sent, room):
    session = FakeSession()
    await muc.on_presence(presence(PHONE, "alice", password="key"), session, room)
    assert session.calls == [("join", room, "alice", "key")]
    assert sent == []

    assert await muc.on_event(USER, joined_event(room)) is True

    assert [str(s["from"]) for s in sent] == [
        f"{ROOM_JID}/op",
        f"{ROOM_JID}/bob",
        f"{ROOM_JID}/alice",
        f"{ROOM_JID}/op",
    ]
    assert all(str(s["to"]) == PHONE for s in sent)
    assert item(sent[0]).get("role") == "moderator"
    assert item(sent[1]).get("role") == "participant"
    assert codes(sent[2]) == {"110"}
    assert sent[3]["type"] == "groupchat" and sent[3]["subject"] == "the topic"


async def test_join_with_changed_nick_has_210_and_empty_subject(muc, sent, room):
    await join(muc, FakeSession(), room, nick="alice")
    await muc.on_event(USER, events.RoomJoined(room, "alice_"))
    assert codes(sent[0]) == {"110", "210"}
    assert str(sent[0]["from"]) == f"{ROOM_JID}/alice_"
    assert sent[1].xml.find("{jabber:client}subject").text in ("", None)


async def test_second_resource_joins_from_memory_and_both_get_messages(muc, sent, room):
    session = await in_room(muc, sent, room)

    await join(muc, session, room, frm=LAPTOP)
    assert [c[0] for c in session.calls] == ["join"]  # no second legacy join
    assert codes(sent[2]) == {"110"} and str(sent[2]["to"]) == LAPTOP
    sent.clear()

    await muc.on_event(USER, events.Message(room, "hi", nick="bob"))
    assert {str(s["to"]) for s in sent} == {PHONE, LAPTOP}
    assert all(s["body"] == "hi" and str(s["from"]) == f"{ROOM_JID}/bob" for s in sent)


async def test_groupchat_is_sent_and_reflected_with_the_same_id(muc, sent, room):
    session = await in_room(muc, sent, room, LAPTOP)
    message = groupchat(body="hello", id="abc123")

    await muc.on_groupchat(message, session, room)
    (kind, to, text, token) = session.calls[-1]
    assert (kind, to, text) == ("send", room, "hello")
    assert sent == []  # not yet written to the legacy network: not shown as sent

    await muc.on_event(USER, events.Delivered(room, token))

    assert {str(s["to"]) for s in sent} == {PHONE, LAPTOP}
    assert all(s["id"] == "abc123" and str(s["from"]) == f"{ROOM_JID}/alice" for s in sent)


async def test_a_report_from_another_users_session_takes_no_line(muc, sent, room):
    """The token names a pending line of one user only: another user's bridge session
    reporting it (a client can choose the ids it sends) neither reflects nor fails it."""
    session = await in_room(muc, sent, room)
    message = groupchat(body="hello", id="abc123")
    await muc.on_groupchat(message, session, room)
    token = session.calls[-1][3]

    other = "mallory@example.org"
    await muc.on_event(other, events.Delivered(room, token))
    await muc.on_event(other, events.DeliveryFailed(room, token, "item-not-found", "no"))
    assert sent == []

    await muc.on_event(USER, events.Delivered(room, token))
    assert [(str(s["to"]), s["body"]) for s in sent] == [(PHONE, "hello")]


async def test_groupchat_not_sent_gets_an_error_with_its_id_and_no_reflection(muc, sent, room):
    session = await in_room(muc, sent, room, LAPTOP)
    message = groupchat(body="hello", id="abc123")
    await muc.on_groupchat(message, session, room)
    token = session.calls[-1][3]

    await muc.on_event(
        USER, events.DeliveryFailed(room, token, "remote-server-timeout", "the gateway stopped")
    )
    await muc.on_event(USER, events.Delivered(room, token))  # too late: already failed

    [error] = sent
    assert (str(error["to"]), str(error["from"]), error["type"], error["id"]) == (
        PHONE,
        ROOM_JID,
        "error",
        "abc123",
    )
    assert error["error"]["condition"] == "remote-server-timeout"
    assert error["error"]["text"] == "the gateway stopped"


def with_origin(message: Message, origin_id: str, frm: str = PHONE) -> Message:
    message["from"] = frm
    ET.SubElement(message.xml, f"{{{SID_NS}}}origin-id", {"id": origin_id})
    return message


async def test_a_line_re_sent_on_its_way_is_sent_once_and_a_failure_reaches_the_last_sender(
    muc, sent, room
):
    session = await in_room(muc, sent, room, LAPTOP)
    await muc.on_groupchat(with_origin(groupchat(body="hello", id="a1"), "o1"), session, room)
    again = with_origin(groupchat(body="hello", id="a1"), "o1", frm=LAPTOP)
    await muc.on_groupchat(again, session, room)
    other_body = with_origin(groupchat(body="bye", id="a2"), "o1")
    await muc.on_groupchat(other_body, session, room)
    assert [call[2] for call in session.calls if call[0] == "send"] == ["hello", "bye"]
    first_token = session.calls[-2][3]

    await muc.on_event(USER, events.DeliveryFailed(room, first_token, "not-allowed", "banned"))
    [error] = sent
    assert (str(error["to"]), error["id"], error["type"]) == (LAPTOP, "a1", "error")

    await muc.on_groupchat(again, session, room)  # it failed: sent again this time
    assert [call[2] for call in session.calls if call[0] == "send"] == ["hello", "bye", "hello"]

    for call in session.calls[-2:]:
        await muc.on_event(USER, events.Delivered(room, call[3]))
    assert muc._sending == {} and muc._sending_origins == {}  # nothing stays behind


async def test_subject_change_from_xmpp(muc, sent, room):
    session = FakeSession()
    await join(muc, session, room)
    await muc.on_event(USER, joined_event(room))
    message = groupchat(subject="new topic")
    await muc.on_groupchat(message, session, room)
    assert session.calls[-1] == ("subject", room, "new topic")


async def test_groupchat_from_a_non_occupant_is_refused(muc, room):
    message = groupchat(body="hello")
    with pytest.raises(XMPPError) as caught:
        await muc.on_groupchat(message, FakeSession(), room)
    assert caught.value.condition == "not-acceptable"


async def test_leave_parts_only_with_the_last_resource(muc, sent, room):
    session = await in_room(muc, sent, room, LAPTOP)

    await muc.on_presence(presence(PHONE, "alice", "unavailable"), session, room)
    assert session.calls[-1][0] == "join"
    assert sent[0]["type"] == "unavailable" and codes(sent[0]) == {"110"}
    await muc.on_presence(presence(LAPTOP, "alice", "unavailable"), session, room)
    assert session.calls[-1] == ("leave", room)


async def test_resource_gone_returns_rooms_left_empty(muc, room):
    session = FakeSession()
    await join(muc, session, room)
    await join(muc, session, room, frm=LAPTOP)
    await muc.on_event(USER, joined_event(room))
    assert muc.resource_gone(PHONE) == []
    assert muc.resource_gone(LAPTOP) == [room]


async def test_join_failure_becomes_presence_error(muc, sent, room):
    await join(muc, FakeSession(), room)
    await muc.on_event(USER, events.RoomJoinFailed(room, "forbidden", "#room: banned"))
    assert sent[0]["type"] == "error"
    assert sent[0]["error"]["condition"] == "forbidden"
    assert sent[0]["error"]["text"] == "#room: banned"
    assert str(sent[0]["from"]) == f"{ROOM_JID}/alice"
    assert muc.rooms == {}


async def test_kick_of_occupant_and_of_the_user(muc, sent, room):
    await in_room(muc, sent, room)
    await muc.on_event(USER, events.OccupantLeft(room, "bob", "spam", kicked_by="op"))
    assert sent[0]["type"] == "unavailable" and codes(sent[0]) == {"307"}
    assert item(sent[0]).find(f"{{{MUC_USER_NS}}}actor").get("nick") == "op"
    assert item(sent[0]).findtext(f"{{{MUC_USER_NS}}}reason") == "spam"

    await muc.on_event(USER, events.RoomLeft(room, "bye", kicked_by="op"))
    assert codes(sent[1]) == {"110", "307"}
    assert muc.rooms == {}


async def test_nick_changes_send_303_pairs(muc, sent, room):
    session = await in_room(muc, sent, room)

    await muc.on_event(USER, events.NickChanged(room, "bob", "robert"))
    assert codes(sent[0]) == {"303"} and item(sent[0]).get("nick") == "robert"
    assert str(sent[1]["from"]) == f"{ROOM_JID}/robert" and sent[1]["type"] == "available"

    await muc.on_presence(presence(PHONE, "alicia"), session, room)
    assert session.calls[-1] == ("nick", room, "alicia")
    await muc.on_event(USER, events.NickChanged(room, "alice", "alicia", own=True))
    assert codes(sent[2]) == {"303", "110"}
    assert codes(sent[3]) == {"110"} and str(sent[3]["from"]) == f"{ROOM_JID}/alicia"


async def test_nick_conflict_is_a_conflict_error(muc, sent, room):
    await in_room(muc, sent, room)
    await muc.on_event(USER, events.NickConflict(room, "bob", "Nickname already in use"))
    assert sent[0]["type"] == "error" and sent[0]["error"]["condition"] == "conflict"
    assert str(sent[0]["from"]) == f"{ROOM_JID}/bob"


async def test_roles_and_subject_updates(muc, sent, room):
    await in_room(muc, sent, room)
    await muc.on_event(
        USER, events.OccupantJoined(room, events.Occupant("bob", events.Role.MODERATOR))
    )
    assert item(sent[0]).get("role") == "moderator"
    await muc.on_event(USER, events.SubjectChanged(room, "news", "op"))
    assert sent[1]["subject"] == "news" and str(sent[1]["from"]) == f"{ROOM_JID}/op"


async def test_non_room_events_are_left_to_the_router(muc, bridge):
    contact = bridge.parse_address("bob%irc.x.org")
    assert await muc.on_event(USER, events.Message(contact, "hi")) is False
    assert await muc.on_event(USER, events.Notice("hello")) is False


async def test_iq_admin_kick_and_role(muc, sent, room):
    session = await in_room(muc, sent, room)

    for role in ("none", "moderator"):
        iq = Iq()
        iq["from"], iq["to"], iq["type"], iq["id"] = PHONE, ROOM_JID, "set", f"q-{role}"
        query = ET.SubElement(iq.xml, f"{{{MUC_ADMIN_NS}}}query")
        entry = ET.SubElement(query, f"{{{MUC_ADMIN_NS}}}item", {"nick": "bob", "role": role})
        ET.SubElement(entry, f"{{{MUC_ADMIN_NS}}}reason").text = "why not"
        await muc.on_iq_admin(iq, session, room)

    assert session.calls[-2] == ("kick", room, "bob", "why not")
    assert session.calls[-1] == ("role", room, "bob", events.Role.MODERATOR)
    assert [(r["type"], r["id"]) for r in sent] == [("result", "q-none"), ("result", "q-moderator")]


def test_disco_info(muc, room):
    info = muc.disco_info(room)
    assert ("conference", "text", room.legacy_id) in info.identities
    assert MUC_NS in info.features
    assert f"{MUC_NS}#self-ping-optimization" in info.features


async def test_own_role_update_is_a_self_presence(muc, sent, room):
    await join(muc, FakeSession(), room)
    await muc.on_event(USER, events.RoomJoined(room, "alice"))
    sent.clear()
    await muc.on_event(
        USER, events.OccupantJoined(room, events.Occupant("alice", events.Role.MODERATOR))
    )
    assert codes(sent[0]) == {"110"} and item(sent[0]).get("role") == "moderator"


async def test_replayed_message_keeps_its_time(muc, sent, room):
    """A line a bouncer replays (IRCv3 server-time) carries an XEP-0203 delay; live ones do not."""
    await in_room(muc, sent, room)

    then = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    await muc.on_event(USER, events.Message(room, "while you were out", nick="bob", timestamp=then))
    await muc.on_event(USER, events.Message(room, "live", nick="bob"))
    replayed, live = sent
    delay = replayed.xml.find("{urn:xmpp:delay}delay")
    assert delay is not None
    assert (delay.get("stamp"), delay.get("from")) == ("2026-01-02T03:04:05Z", ROOM_JID)
    assert live.xml.find("{urn:xmpp:delay}delay") is None


def history_presence(frm: str, **attributes: str):
    stanza = presence(frm, "alice")
    x = stanza.xml.find(f"{{{MUC_NS}}}x")
    ET.SubElement(x, f"{{{MUC_NS}}}history", attributes)
    return stanza


@pytest.fixture
async def archive(tmp_path):
    """A real archive on SQLite, with an account for USER."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'archive.db'}")
    await upgrade(engine)
    await Store(engine, SecretBox(generate_key())).save_account(USER, "irc", settings={})
    archive = Archive(engine, "irc")
    archive.start()
    yield archive
    await archive.stop()
    await engine.dispose()


@pytest.fixture
def archived(sent, bridge, archive) -> GroupChats:
    return GroupChats(sent.append, COMPONENT, bridge, archive, history_stanzas=20)


def stanza_id(stanza) -> str | None:
    element = stanza.xml.find(f"{{{SID_NS}}}stanza-id")
    if element is None:
        return None
    assert element.get("by") == ROOM_JID
    return element.get("id")


def bodies(stanzas) -> list[str]:
    return [s["body"] for s in stanzas if s.name == "message" and s["body"]]


async def test_messages_while_nobody_is_in_are_served_on_the_next_join(archived, sent, room):
    """A channel the bridge stays in while the user is offline: what was said meanwhile
    arrives as discussion history, after the user's own presence and before the subject."""
    session = FakeSession()
    await join(archived, session, room)
    await archived.on_event(USER, joined_event(room))
    assert archived.resource_gone(PHONE) == [room]
    then = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    for n in range(3):
        await archived.on_event(
            USER, events.Message(room, f"missed {n}", nick="bob", timestamp=then + timedelta(n))
        )
    sent.clear()

    await join(archived, session, room, frm=LAPTOP)
    await archived.on_event(USER, joined_event(room))
    texts = [s["body"] or s["subject"] for s in sent if s.name == "message"]
    assert texts == ["missed 0", "missed 1", "missed 2", "the topic"]
    stamps = [s.xml.find("{urn:xmpp:delay}delay").get("stamp") for s in sent if s["body"]]
    assert stamps == ["2026-01-02T03:04:05Z", "2026-01-03T03:04:05Z", "2026-01-04T03:04:05Z"]
    assert all(stanza_id(s) for s in sent if s["body"])
    assert codes(sent[2]) == {"110"}  # own presence comes first


async def test_live_ids_are_the_archive_ids_and_a_second_resource_gets_history(
    archived, sent, room, archive
):
    session = await in_room(archived, sent, room)
    await archived.on_event(USER, events.Message(room, "live", nick="bob", legacy_id="msg-1"))
    [live] = sent
    assert live["id"] == "msg-1" and live.xml.find("{urn:xmpp:delay}delay") is None
    [stored] = await archive.latest(USER, room.legacy_id, 5)
    assert stored.stanza_id == stanza_id(live) and stored.legacy_id == "msg-1"
    sent.clear()

    await archived.on_presence(presence(LAPTOP, "alice"), session, room)  # XEP-0045 §7.2.15
    history = [s for s in sent if s.name == "message" and s["body"]]
    assert [(s["body"], s["id"], stanza_id(s)) for s in history] == [
        ("live", "msg-1", stored.stanza_id)
    ]
    assert history[0].xml.find("{urn:xmpp:delay}delay") is not None
    assert [s["subject"] for s in sent if s.name == "message"][-1] == "the topic"


async def test_own_message_keeps_origin_id_and_id_live_and_archived(archived, sent, room, archive):
    session = await in_room(archived, sent, room)
    message = groupchat(body="/me waves", id="client-1")
    ET.SubElement(message.xml, f"{{{SID_NS}}}origin-id", {"id": "origin-1"})
    await archived.on_groupchat(message, session, room)
    await archived.on_event(USER, events.Delivered(room, session.calls[-1][3]))
    [echo] = sent
    assert echo["id"] == "client-1"
    assert echo.xml.find(f"{{{SID_NS}}}origin-id").get("id") == "origin-1"
    [stored] = await archive.latest(USER, room.legacy_id, 5)
    assert (stored.stanza_id, stored.origin_id, stored.xmpp_id, stored.kind, stored.nick) == (
        stanza_id(echo),
        "origin-1",
        "client-1",
        "action",
        "alice",
    )


async def test_own_message_is_archived_with_the_networks_echo_id_and_time(
    archived, sent, room, archive
):
    session = await in_room(archived, sent, room)
    message = groupchat(body="hello", id="client-1")
    await archived.on_groupchat(message, session, room)
    echoed = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)

    delivered = events.Delivered(room, session.calls[-1][3], legacy_id="1~2~3", sent=echoed)
    await archived.on_event(USER, delivered)
    await archived.on_event(USER, delivered)  # reported again: still archived once

    [echo] = sent
    [stored] = await archive.latest(USER, room.legacy_id, 5)
    assert (stored.legacy_id, stored.sent, stored.xmpp_id) == ("1~2~3", echoed, "client-1")
    assert stanza_id(echo) == stored.stanza_id


@pytest.mark.parametrize(
    ("attributes", "served"),
    [
        ({}, ["missed 1", "missed 2"]),  # history_stanzas=2 below
        ({"maxstanzas": "1"}, ["missed 2"]),
        ({"maxstanzas": "0"}, []),
        ({"maxchars": "0"}, []),
        ({"maxchars": "700"}, ["missed 2"]),  # one stanza is some 400 characters
        ({"since": "2026-01-03T00:00:00Z"}, ["missed 1", "missed 2"]),
        ({"seconds": "60"}, []),
    ],
)
async def test_history_request_limits_what_is_served(
    sent, bridge, archive, room, attributes, served
):
    muc = GroupChats(sent.append, COMPONENT, bridge, archive, history_stanzas=2)
    then = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    for n in range(3):
        await muc.on_event(
            USER, events.Message(room, f"missed {n}", nick="bob", timestamp=then + timedelta(n))
        )
    await muc.on_presence(history_presence(PHONE, **attributes), FakeSession(), room)
    await muc.on_event(USER, joined_event(room))
    assert bodies(sent) == served


async def test_live_lines_during_the_history_read_follow_the_subject(archived, sent, room):
    """The archive read awaits; a line arriving meanwhile must neither be lost nor
    overtake the history, and a line the history already holds is not sent twice."""
    session = FakeSession()
    await join(archived, session, room)
    await archived.on_event(USER, joined_event(room))
    await archived.on_event(USER, events.Message(room, "before", nick="bob"))
    reading = asyncio.Event()
    original = archived.archive.latest

    async def slow_latest(*args, **kwargs):
        await archived.on_event(USER, events.Message(room, "during", nick="bob"))
        reading.set()
        return await original(*args, **kwargs)

    archived.archive.latest = slow_latest
    sent.clear()
    await archived.on_presence(presence(LAPTOP, "alice"), session, room)
    to_laptop = [s for s in sent if s.name == "message" and str(s["to"]) == LAPTOP]
    assert [s["body"] or f"subject: {s['subject']}" for s in to_laptop] == [
        "before",
        "during",  # already in the archive read: served once, as history
        "subject: the topic",
    ]


async def test_without_an_archive_there_is_no_history_and_no_stanza_id(muc, sent, room):
    await muc.on_event(USER, events.Message(room, "nobody is in", nick="bob"))
    await join(muc, FakeSession(), room)
    await muc.on_event(USER, joined_event(room))
    assert not bodies(sent)
    await muc.on_event(USER, events.Message(room, "live", nick="bob"))
    assert stanza_id(sent[-1]) is None
    assert not {"urn:xmpp:mam:2", SID_NS} & set(muc.disco_info(room).features)


def test_rooms_with_an_archive_advertise_mam_and_stable_ids(archived, room):
    features = set(archived.disco_info(room).features)
    assert {"urn:xmpp:mam:2", "urn:xmpp:mam:2#extended", SID_NS} <= features


async def test_away_occupants_show_away(muc, sent, room):
    await join(muc, FakeSession(), room)
    await muc.on_event(USER, events.RoomJoined(room, "alice", (events.Occupant("bob", away=True),)))
    assert sent[0]["show"] == "away"  # in the full join
    sent.clear()
    await muc.on_event(USER, events.OccupantJoined(room, events.Occupant("bob")))
    assert sent[0]["show"] == ""  # back
    await muc.on_event(USER, events.NickChanged(room, "bob", "bobby"))
    await muc.on_event(USER, events.OccupantJoined(room, events.Occupant("bobby", away=True)))
    assert sent[-1]["show"] == "away" and str(sent[-1]["from"]) == f"{ROOM_JID}/bobby"


async def test_a_nick_no_jid_resource_can_hold_still_completes_the_join(muc, sent, room):
    """A hostile server's NAMES with a BEL in a nick used to leave the join unanswered."""
    session = FakeSession()
    await muc.on_presence(presence(PHONE, "alice"), session, room)
    odd = events.Occupant("m\x07llory")
    await muc.on_event(USER, events.RoomJoined(room, "alice", occupants=(odd,)))
    assert [str(s["from"]) for s in sent[:2]] == [f"{ROOM_JID}/m%07llory", f"{ROOM_JID}/alice"]
    assert codes(sent[1]) == {"110"}
    # Addressed by that resource, the user reaches the nick as IRC knows it.
    kick = Iq(sfrom=PHONE, sto=ROOM_JID, stype="set")
    query = ET.SubElement(kick.xml, f"{{{MUC_ADMIN_NS}}}query")
    ET.SubElement(query, f"{{{MUC_ADMIN_NS}}}item", {"nick": "m%07llory", "role": "none"})
    await muc.on_iq_admin(kick, session, room)
    assert ("kick", room, "m\x07llory") in [call[:3] for call in session.calls]


async def test_occupant_ids_are_keyed_hashes_per_room_with_account_and_real_name(sent, bridge):
    """XEP-0421: the same id in presences and messages, another in another room, and
    one no observer can compute from the account; the account and real name show."""
    muc = GroupChats(sent.append, COMPONENT, bridge, occupant_salt=b"secret")
    rooms = [bridge.parse_address(f"#{name}%irc.x.org") for name in ("one", "two")]
    bob = events.Occupant("bob", account="bobacct", realname="Bob B.", occupant_id="account b")
    for room in rooms:
        await muc.on_presence(presence(PHONE, "alice"), FakeSession(), room)
        await muc.on_event(USER, events.RoomJoined(room, "alice", (bob,)))
        await muc.on_event(USER, events.Message(room, "hi", nick="bob", occupant_id="account b"))
    ids = [s.xml.find(f"{{{OCCUPANT_ID_NS}}}occupant-id") for s in sent]
    by_room = {}
    for stanza, element in zip(sent, ids, strict=True):
        if str(stanza["from"].resource) == "bob":
            by_room.setdefault(stanza["from"].bare, set()).add(element.get("id"))
    assert [len(found) for found in by_room.values()] == [1, 1]  # presence = message
    one, two = (found.pop() for found in by_room.values())
    assert one != two and "bob" not in one + two
    again = GroupChats([].append, COMPONENT, bridge, occupant_salt=b"secret")
    assert again.occupant_id(rooms[0], "account b") == one  # stable across restarts
    other_salt = GroupChats([].append, COMPONENT, bridge, occupant_salt=b"other")
    assert other_salt.occupant_id(rooms[0], "account b") != one
    bob_presence = next(s for s in sent if isinstance(s, Presence) and s["from"].resource == "bob")
    assert bob_presence["status"] == "Bob B., logged in as bobacct"
    assert OCCUPANT_ID_NS in muc.disco_info(rooms[0]).features


async def test_a_retraction_while_nobody_is_in_leaves_a_tombstone(archived, sent, room, archive):
    """A persistent channel: REDACT while the user is offline still removes the line,
    and the next join's history shows the tombstone in its place."""
    await archived.on_event(USER, events.Message(room, "secret", nick="bob", legacy_id="m1"))
    await archived.on_event(USER, events.Message(room, "kept", nick="bob", legacy_id="m2"))
    await archived.on_event(USER, events.Retraction(room, "bob", "m1"))
    lines = await archive.latest(USER, room.legacy_id, 10)
    assert [(line.body, line.kind) for line in lines] == [("", "retracted"), ("kept", "message")]

    await join(archived, FakeSession(), room)
    await archived.on_event(USER, joined_event(room))
    delayed = "{urn:xmpp:delay}delay"
    history = [s for s in sent if s.name == "message" and s.xml.find(delayed) is not None]
    tombstone = history[0].xml.find("{urn:xmpp:message-retract:1}retracted")
    assert tombstone is not None and not history[0]["body"]
    assert history[1]["body"] == "kept"


async def test_a_multi_line_message_is_found_by_the_msgid_of_each_line(
    archived, sent, room, archive
):
    session = FakeSession()
    await join(archived, session, room)
    await archived.on_event(USER, joined_event(room))
    message = groupchat(body="one\ntwo\nthree", id="client-1")
    await archived.on_groupchat(message, session, room)

    ids = ("1~1~1", "1~1~2", "1~1~3")  # one PRIVMSG, one echo, one msgid per line
    await archived.on_event(
        USER, events.Delivered(room, session.calls[-1][3], legacy_id=ids[0], legacy_ids=ids)
    )

    [stored] = await archive.latest(USER, room.legacy_id, 5)
    for legacy_id in ids:
        found = await archive.find_by_legacy_id(USER, room.legacy_id, legacy_id)
        assert found is not None and found.stanza_id == stored.stanza_id, legacy_id


async def test_the_subject_ends_the_join_stamped_with_when_it_was_set_and_is_not_archived(
    archived, sent, room, archive
):
    """XEP-0045 §7.2.15: history, then the subject; the subject carries a delay with
    the time it was set (as Prosody's does). Subject changes are room state, not
    archive lines: MAM and the history never replay them."""
    session = FakeSession()
    set_at = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    await archived.on_event(USER, events.Message(room, "earlier", nick="bob"))
    await join(archived, session, room)
    await archived.on_event(USER, replace(joined_event(room), subject_at=set_at))
    messages = [s for s in sent if s.name == "message"]
    assert [s["body"] or s["subject"] for s in messages] == ["earlier", "the topic"]
    delay = messages[-1].xml.find("{urn:xmpp:delay}delay")
    assert delay is not None and delay.get("stamp") == "2026-11-30T08:00:00Z"
    assert delay.get("from") == ROOM_JID
    sent.clear()

    changed_at = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    await archived.on_event(USER, events.SubjectChanged(room, "news", "op", changed_at))
    [live] = sent
    assert live["subject"] == "news" and live.xml.find("{urn:xmpp:delay}delay") is None
    assert [line.body for line in await archive.latest(USER, room.legacy_id, 10)] == ["earlier"]
    sent.clear()

    await join(archived, session, room, frm=LAPTOP)  # a second resource: from memory
    subject = [s for s in sent if s.name == "message"][-1]
    assert subject["subject"] == "news"
    assert subject.xml.find("{urn:xmpp:delay}delay").get("stamp") == "2026-12-01T09:00:00Z"
