"""Pure functions: line parsing, nick syntax, formatting codes, splitting, CTCP."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from irc.message import Tag

from bridges.irc.channel import ServerModes
from bridges.irc.chathistory import Anchor, request
from bridges.irc.formatting import (
    outgoing_lines,
    parse_ctcp,
    relay_prefix_bytes,
    split_utf8,
    strip_formatting,
    to_styling,
)
from bridges.irc.protocol import (
    Line,
    casefold,
    decode,
    format_line,
    is_valid_nick,
    names_nick,
    parse_tags,
)


def test_line_parsing():
    line = Line.parse("@time=2024-01-01T00:00:00Z :bob!~b@h PRIVMSG #c :hi: there ")
    assert (line.command, line.nick, line.params) == ("PRIVMSG", "bob", ["#c", "hi: there "])
    assert line.tags == {"time": "2024-01-01T00:00:00Z"}
    assert Line.parse("PING :x y").params == ["x y"]
    assert Line.parse(":srv 005 me PREFIX=(ov)@+ :are supported").params[1] == "PREFIX=(ov)@+"
    with pytest.raises(ValueError):
        Line.parse("")


@given(st.text(alphabet=st.sampled_from("ab=;\\:snr+/.-é"), min_size=1))
def test_tags_are_read_as_the_irc_library_reads_them(group):
    """Our tag reader (faster, `parse_tags`) must read every group as the library did,
    escapes, empty values, repeated keys and stray `=` included."""
    library = {tag["key"]: tag["value"] for tag in Tag.from_group(group) or []}
    assert parse_tags(group) == library


def test_escaped_tag_values():
    assert parse_tags(r"a=x\:y\sz\\w\n;b;c=;d=\q") == {
        "a": "x;y z\\w\n",
        "b": None,
        "c": None,
        "d": "q",
    }


def test_format_line_refuses_injection():
    assert format_line("PRIVMSG", "#c", "a b") == "PRIVMSG #c :a b"
    with pytest.raises(ValueError):
        format_line("PRIVMSG", "#c", "a\r\nQUIT")
    with pytest.raises(ValueError):
        format_line("KICK", "#c x", "why")


@pytest.mark.parametrize("nick", ["alice", "[m]bot", "a-b_c^", "`x", "a" * 30])
def test_valid_nicks(nick):
    assert is_valid_nick(nick)


@pytest.mark.parametrize("nick", ["", "1abc", "-a", "a b", "a,b", "é", "a" * 31, "#chan"])
def test_invalid_nicks(nick):
    assert not is_valid_nick(nick)


def test_casefold_and_decode():
    assert casefold("Nick[1]") == casefold("nick{1}")
    assert decode("é".encode()) == "é"
    assert decode(b"caf\xe9") == "café"


def test_strip_formatting():
    assert strip_formatting("\x02b\x02 \x0304,12c\x03 \x1di\x1d \x0fx\x04ff0000y") == "b c i xy"
    assert strip_formatting("\x0312,4text") == "text"


@pytest.mark.parametrize(
    ("irc", "styled"),
    [
        ("\x02bold\x02 text", "*bold* text"),
        ("\x02\x1dboth\x1d\x02", "*_both_*"),
        ("\x11code\x11 and \x1eold\x1e", "`code` and ~old~"),
        ("\x02 spaced \x02", " spaced "),  # XEP-0393 would not read it back
        ("a\x02b\x0fc", "abc"),  # nor inside a word
        ("\x0304red\x03 \x1funderline\x1f", "red underline"),
        ("\x02unclosed", "*unclosed*"),
        ("2*3\x02x\x02", "2*3x"),
    ],
)
def test_styling_maps_what_xep_0393_can_show(irc, styled):
    assert to_styling(irc) == styled


def test_split_keeps_characters_whole_and_prefers_spaces():
    text = "€" * 100
    pieces = split_utf8(text, 20)
    assert "".join(pieces) == text and all(len(p.encode()) <= 20 for p in pieces)
    assert split_utf8("aaaa bbbb cccc", 10) == ["aaaa bbbb", "cccc"]
    assert split_utf8("short", 10) == ["short"]


def test_outgoing_lines_split_actions_and_drop_blank_lines():
    lines = outgoing_lines("a\n\n/me waves\n" + "x" * 50, 20)
    assert lines[:2] == [("a", False), ("waves", True)]
    assert "".join(p for p, _ in lines[2:]) == "x" * 50
    assert all(len(p) <= 20 for p, _ in lines)


def test_relay_prefix_assumes_long_host_until_known():
    known = relay_prefix_bytes("n", "~u", "127.0.0.1", "PRIVMSG", "#c")
    assert known == len(":n!~u@127.0.0.1 PRIVMSG #c :\r\n")
    assert relay_prefix_bytes("n", None, None, "PRIVMSG", "#c") > known + 50


def test_ctcp():
    assert parse_ctcp("\x01ACTION waves\x01").argument == "waves"
    assert parse_ctcp("\x01VERSION\x01").command == "VERSION"
    assert parse_ctcp("plain") is None


def test_server_modes_from_isupport():
    modes = ServerModes()
    modes.apply_isupport(["PREFIX=(qaohv)~&@%+", "CHANMODES=beI,k,l,imnst"])
    assert modes.split_names_entry("~@bob") == ("bob", {"q", "o"})
    assert modes.split_names_entry("+carol!c@h") == ("carol", {"v"})
    assert modes.parse_changes(["+ov-l+k", "a", "b", "key"]) == [
        (True, "o", "a"),
        (True, "v", "b"),
        (False, "l", None),
        (True, "k", "key"),
    ]


def test_chathistory_request_by_msgid_else_by_server_time():
    at = datetime(2026, 12, 1, 10, 0, 5, 250000, tzinfo=timezone(timedelta(hours=1)))
    assert request("#room", Anchor("m1", at), 50) == ("AFTER", "#room", "msgid=m1", "50")
    by_time = request("#room", Anchor(None, at), 50)
    assert by_time == ("AFTER", "#room", "timestamp=2026-12-01T09:00:05.250Z", "50")


def test_chathistory_limit_from_isupport():
    modes = ServerModes()
    assert not modes.chathistory
    modes.apply_isupport(["CHATHISTORY=1000"])
    assert modes.chathistory and modes.chathistory_limit == 1000


@pytest.mark.parametrize(
    ("text", "nick", "named"),
    [
        ("dora: ping", "dora", True),
        ("hi DORA!", "dora", True),
        ("ping [x]", "{X}", True),  # RFC 1459: [ is the upper case of {
        ("adora and doras", "dora", False),
        ("dora_ is someone else", "dora", False),
        ("x-dora", "dora", False),
    ],
)
def test_names_nick_as_a_whole_word(text, nick, named):
    assert names_nick(text, nick) is named
