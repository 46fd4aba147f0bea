"""component.wire writes the live room message exactly as slixmpp would have built it.

Each case builds the stanza both ways from one `Line`: `GroupChats.line_stanza` (the
slixmpp objects, cleaned by `to_component_stream` and serialized as the stream does)
and `wire.groupchat` through `GroupChats` with text stanzas on. They must be equal by
canonical XML, also for text no XML may carry.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from xml.etree.ElementTree import canonicalize

import pytest
from hypothesis import given
from hypothesis import strategies as st
from slixmpp import Message
from slixmpp.xmlstream import tostring

from bridges.irc import IrcBridge
from bridges.irc.options import IrcOptions
from component import wire
from component.archive import Archive, Line
from component.db import create_engine
from component.gateway import to_component_stream
from component.muc import GroupChats, RoomState

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
