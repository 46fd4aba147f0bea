"""component.wire writes the live room message exactly as slixmpp would have built it,
and reads a user's plain room message exactly as the general path does.

Out: each case builds the stanza both ways from one `Line`: `GroupChats.line_stanza`
(the slixmpp objects, cleaned by `to_component_stream` and serialized as the stream
does) and `wire.groupchat` through `GroupChats` with text stanzas on. They must be
equal by canonical XML, also for text no XML may carry.

In: `wire.plain_groupchat` must read what slixmpp's interfaces give the general path
(`Gateway._on_message`, `GroupChats.on_groupchat`), find nothing that path would act
on, and take the same way to the bridge and back; anything else is None.
"""

from __future__ import annotations

import re
from dataclasses import fields, replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from xml.etree.ElementTree import canonicalize

import pytest
from hypothesis import given
from hypothesis import strategies as st
from slixmpp import JID, Message
from slixmpp.xmlstream import ET, tostring

from bridges import events
from bridges.irc import IrcBridge
from bridges.irc.options import IrcOptions
from bridges.xml_text import xml_safe
from component import references, wire
from component.archive import Archive, Line
from component.db import create_engine
from component.gateway import to_component_stream
from component.muc import GroupChats, RoomState, Sending

COMPONENT = "irc.localhost"
STREAM_NS = "jabber:component:accept"
TO = "user@localhost/phone"
HOSTILE = "bell\x07 esc\x1b[31m nul\x00 \ud800 <b>&amp;</b> 'single' \"double\" \r\n\t😀 ]]>"

texts = st.text(alphabet=st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF))
nicks = st.text(alphabet=st.characters(codec=None, exclude_categories=("Cs",)), min_size=1)


def line(**changes: object) -> Line:
    plain = Line("user@localhost", "#room%irc.x.org", "sid-1", datetime.now(UTC), "alice", "hello")
    return replace(plain, **changes)  # type: ignore[arg-type]


def make_muc(archived: bool) -> GroupChats:
    """The engine as the gateway has it; the archive is never written to here."""
    archive = Archive(create_engine("sqlite+aiosqlite://"), "irc") if archived else None
    return GroupChats(
        lambda _: None, COMPONENT, IrcBridge(IrcOptions()), archive, text_stanzas=True
    )


@pytest.fixture(params=[False, True], ids=["no archive", "archive"])
def muc(request: pytest.FixtureRequest) -> GroupChats:
    return make_muc(request.param)


def canonical(stanza: str) -> str:
    """`stanza` as the server reads it inside the component stream."""
    return canonicalize(f'<stream xmlns="{STREAM_NS}">{stanza}</stream>')


def both_ways(muc: GroupChats, shown: Line) -> tuple[str, str]:
    room = muc.bridge.parse_address(shown.room)
    built = muc.line_stanza(room, TO, shown, delayed=False)
    to_component_stream(built.xml)
    written = muc._live_stanza(room, TO, shown)
    assert isinstance(written, str), "a plain line must take the text path"
    return canonical(tostring(built.xml, xmlns=STREAM_NS, top_level=True)), canonical(written)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"body": HOSTILE},
        {"nick": HOSTILE.replace("\ud800", "")},  # nick_resources fails on lone surrogates
        {"nick": "we%rd nick"},
        {"nick": None},
        {"legacy_id": "msgid-from-irc"},
        {"xmpp_id": 'client\'s "id" & <more>', "origin_id": HOSTILE},
        {"stanza_id": "a'b\"c&d<e>"},
        {"kind": "action", "body": "/me waves"},
    ],
)
def test_plain_lines_are_written_as_slixmpp_builds_them(muc, changes):
    built, written = both_ways(muc, line(**changes))
    assert written == built


@pytest.mark.parametrize("identity", ["account alice", "nick " + HOSTILE])
def test_an_occupant_id_is_written_as_slixmpp_builds_it(muc, identity):
    built, written = both_ways(muc, line(occupant_id=identity))
    assert "occupant-id" in written
    assert written == built


@given(texts, nicks, texts, texts)
def test_any_text_is_written_as_slixmpp_builds_it(body, nick, origin_id, identity):
    muc = make_muc(archived=True)
    shown = line(body=body or "x", nick=nick, origin_id=origin_id or None)
    built, written = both_ways(muc, replace(shown, occupant_id=identity or None))
    assert written == built


def test_a_user_who_turned_the_archive_off_gets_no_stanza_id():
    muc = make_muc(archived=True)
    assert muc.archive is not None
    muc.archive._accounts["user@localhost"] = type("Off", (), {"enabled": False})()  # type: ignore[assignment]
    built, written = both_ways(muc, line())
    assert "stanza-id" not in written
    assert written == built


def test_what_is_not_plain_is_built_by_slixmpp(muc):
    room = muc.bridge.parse_address("#room%irc.x.org")
    assert not wire.is_plain(line(body=""))
    assert isinstance(muc._live_stanza(room, TO, line(body="")), Message)
    state = RoomState(room, "user@localhost", resources={TO: "nick"})
    sent: list[object] = []
    muc._send = sent.append
    muc._archive_and_send(state, line(), delayed=True)  # a replayed line: with its delay
    muc._archive_and_send(state, line())
    assert isinstance(sent[0], Message)
    assert sent[0].xml.find("{urn:xmpp:delay}delay") is not None
    assert isinstance(sent[1], str)


# --- in: a user's plain room message ----------------------------------------------------

USER = "user@localhost"
PHONE = f"{USER}/phone"
ROOM_JID = f"#room%irc.x.org@{COMPONENT}"
BODY_TAG = f"{{{STREAM_NS}}}body"
HEAD = f"<message from='{PHONE}' to='{ROOM_JID}' type='groupchat'"


def received(stanza: str) -> Message:
    """`stanza` as the gateway gets it: parsed inside the component stream, a Message of
    that stream (whose namespace slixmpp's interfaces look in)."""
    element = ET.fromstring(f"<stream xmlns='{STREAM_NS}'>{stanza}</stream>")[0]
    return Message(SimpleNamespace(default_ns=STREAM_NS), element)  # type: ignore[arg-type]


def general_reading(message: Message) -> tuple[str, str, str, str, str | None]:
    """What the general path reads from `message`, through slixmpp's interfaces."""
    origin = message.xml.find(f"{{{wire.SID_NS}}}origin-id")
    origin_id = (origin.get("id") if origin is not None else None) or None
    return (message["from"].full, message["to"].full, message["id"], message["body"], origin_id)


def plain_reading(plain: wire.PlainGroupchat) -> tuple[str, str, str, str, str | None]:
    return (JID(plain.sender).full, JID(plain.to).full, plain.id, plain.body, plain.origin_id)


def assert_read_alike(stanza: str) -> wire.PlainGroupchat:
    message = received(stanza)
    plain = wire.plain_groupchat(message.xml, BODY_TAG)
    assert plain is not None, "a plain room message must take the fast path"
    assert plain_reading(plain) == general_reading(message)
    # ... and nothing the general path would act on instead of sending the body
    assert message["type"] == "groupchat" and message["body"] and not message["subject"]
    assert references.retract_id(message) is None and references.reactions(message) is None
    assert references.replace_id(message) is None and references.reply_id(message) is None
    muc = make_muc(archived=False)
    assert muc.invitation(message, muc.bridge.parse_address("#room%irc.x.org")) is None
    return plain


PLAIN = [
    f"{HEAD}><body>hello</body></message>",
    f"{HEAD} id='abc'><body>hello</body></message>",
    f"{HEAD} id='abc'><body>hi</body><origin-id xmlns='urn:xmpp:sid:0' id='o-1'/></message>",
    f"{HEAD}><origin-id xmlns='urn:xmpp:sid:0' id=''/><body>an empty origin-id</body></message>",
    f"{HEAD} xml:lang='de'><body>the message's language</body></message>",
    f"{HEAD} id='c'><active xmlns='http://jabber.org/protocol/chatstates'/><body>x</body>"
    "<markable xmlns='urn:xmpp:chat-markers:0'/><request xmlns='urn:xmpp:receipts'/></message>",
    f"{HEAD} id='&apos;&quot;&amp;'><body>&lt;b&gt; &amp;amp; ]]&gt; 'q' \"d\" 😀 \t</body>"
    "<origin-id xmlns='urn:xmpp:sid:0' id='&lt;&gt;'/></message>",
    f"{HEAD}><body>  two\nlines  </body></message>",
]


@pytest.mark.parametrize("stanza", PLAIN)
def test_a_plain_room_message_is_read_as_the_general_path_reads_it(stanza):
    assert_read_alike(stanza)


NOT_PLAIN = {
    "a chat message": PLAIN[0].replace("groupchat", "chat"),
    "no type": f"<message from='{PHONE}' to='{ROOM_JID}'><body>x</body></message>",
    "an error": PLAIN[0].replace("groupchat", "error"),
    "no sender": f"<message to='{ROOM_JID}' type='groupchat'><body>x</body></message>",
    "no body": f"{HEAD}><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
    "an empty body": f"{HEAD}><body/></message>",
    "two bodies": f"{HEAD}><body>x</body><body xml:lang='en'>y</body></message>",
    "a body in a language": f"{HEAD}><body xml:lang='en'>x</body></message>",
    "markup in the body": f"{HEAD}><body>x<b>y</b></body></message>",
    "a body in another namespace": f"{HEAD}><body xmlns='jabber:client'>x</body></message>",
    "two origin-ids": f"{HEAD}><body>x</body><origin-id xmlns='urn:xmpp:sid:0' id='1'/>"
    "<origin-id xmlns='urn:xmpp:sid:0' id='2'/></message>",
    "a subject": f"{HEAD}><subject>topic</subject><body>x</body></message>",
    "a thread": f"{HEAD}><body>x</body><thread>t</thread></message>",
    "a reply": f"{HEAD}><body>&gt; q\nx</body><reply xmlns='urn:xmpp:reply:0' id='s1'/>"
    "<fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'>"
    "<body start='0' end='4'/></fallback></message>",
    "a correction": f"{HEAD}><body>x</body>"
    "<replace xmlns='urn:xmpp:message-correct:0' id='m1'/></message>",
    "reactions": f"{HEAD}><body>x</body><reactions xmlns='urn:xmpp:reactions:0' id='s1'>"
    "<reaction>👍</reaction></reactions></message>",
    "a retraction": f"{HEAD}><body>x</body>"
    "<retract xmlns='urn:xmpp:message-retract:1' id='s1'/></message>",
    "an attachment": f"{HEAD}><body>https://x.org/f.png</body>"
    "<x xmlns='jabber:x:oob'><url>https://x.org/f.png</url></x></message>",
    "an invitation": f"{HEAD}><body>x</body><x xmlns='http://jabber.org/protocol/muc#user'>"
    f"<invite to='bob%irc.x.org@{COMPONENT}'/></x></message>",
    "a displayed marker": f"{HEAD}><body>x</body>"
    "<displayed xmlns='urn:xmpp:chat-markers:0' id='s1'/></message>",
    "anything unknown": f"{HEAD}><body>x</body><new xmlns='urn:example:new'/></message>",
}


@pytest.mark.parametrize("stanza", NOT_PLAIN.values(), ids=NOT_PLAIN.keys())
def test_anything_else_takes_the_general_path(stanza):
    assert wire.plain_groupchat(received(stanza).xml, BODY_TAG) is None


xml_texts = texts.map(xml_safe).filter(lambda text: "\ufffd" not in text)


@given(xml_texts, xml_texts, xml_texts)
def test_any_text_is_read_as_the_general_path_reads_it(body, message_id, origin_id):
    element = ET.Element(
        f"{{{STREAM_NS}}}message", {"from": PHONE, "to": ROOM_JID, "type": "groupchat"}
    )
    if message_id:
        element.set("id", message_id)
    ET.SubElement(element, BODY_TAG).text = body or "x"
    ET.SubElement(element, f"{{{wire.SID_NS}}}origin-id", {"id": origin_id})
    assert_read_alike(tostring(element, xmlns=STREAM_NS, top_level=True))


class Sent:
    """The session side of a room: records what reaches the bridge."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def send_message(self, to: Any, text: str, *, xmpp_id: str | None = None) -> None:
        self.calls.append((to, text, xmpp_id))


async def sent_and_reflected(stanza: str, *, fast: bool) -> tuple[tuple[Any, ...], list[str]]:
    """What the bridge gets for `stanza`, and the reflections once it is written."""
    muc = make_muc(archived=True)
    room = muc.bridge.parse_address("#room%irc.x.org")
    resources = {PHONE: "alice", f"{USER}/laptop": "alice"}
    muc.rooms[(USER, room)] = RoomState(room, USER, "alice", True, resources=resources)
    shown: list[str] = []
    muc._send = lambda stanza: shown.append(canonical(str(stanza)))
    session = Sent()
    message = received(stanza)
    if fast:
        plain = wire.plain_groupchat(message.xml, BODY_TAG)
        assert plain is not None
        sender = JID(plain.sender)
        await muc.on_plain_groupchat(sender.full, sender.bare, room, session, plain)  # type: ignore[arg-type]
    else:
        await muc.on_groupchat(message, session, room)  # type: ignore[arg-type]
    [(to, text, token)] = session.calls
    await muc.on_event(USER, events.Delivered(room, token))
    return (to, text), [without_archive_id(stanza) for stanza in shown]


def without_archive_id(stanza: str) -> str:
    """Without an origin-id the archive id is random (and the `id` when the client
    gave none): the same shape is what counts."""
    found = re.search(r'<stanza-id [^>]*\bid="([^"]*)"', stanza)
    return stanza.replace(found.group(1), "<archive id>") if found else stanza


@pytest.mark.parametrize("stanza", PLAIN)
async def test_a_plain_room_message_reaches_the_bridge_and_comes_back_alike(stanza):
    general = await sent_and_reflected(stanza, fast=False)
    assert await sent_and_reflected(stanza, fast=True) == general
    assert len(general[1]) == 2


def test_a_written_line_keeps_every_other_field():
    """`Sending.written` (the reflection's line, built once, when the network took it)
    sets the time and legacy ids and carries every other field of `Line`, whatever
    fields it has."""
    values: dict[str, Any] = {field.name: f"{field.name}-value" for field in fields(Line)}
    values.update(sent=datetime(2026, 1, 2, tzinfo=UTC), more_legacy_ids=("msgid-0",))
    line = Line(**values)
    taken = {"sent", "legacy_id", "more_legacy_ids"}
    sending = Sending("sender", **{k: v for k, v in values.items() if k not in taken})
    later = datetime(2026, 1, 3, tzinfo=UTC)
    written = sending.written(later, "msgid-1", ("msgid-2",))
    assert written == replace(line, sent=later, legacy_id="msgid-1", more_legacy_ids=("msgid-2",))
