"""IRCv3 chat history after a reconnect: what a channel said meanwhile, once, in order.

Neither Debian ircd offers `draft/chathistory`, so a scripted server does: it offers
the capability with `batch`, `server-time` and `message-tags`, announces
`CHATHISTORY=2` and answers CHATHISTORY from its own list of lines, two at a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import pytest
from irc_helpers import SERVER, Harness, MemoryStore, RecordingSink, ScriptedIrcd
from registration_helpers import register_and_subscribe
from slixmpp import Message
from test_irc_e2e import (
    IRC_JID,
    IRC_SECRET,
    PASSWORD,
    groupchat,
    join_room,
    login,
)

from bridges import events
from bridges.base import Account
from bridges.irc.chathistory import MAX_PAGES
from bridges.irc.gaps import SEEN_KIND
from bridges.irc.protocol import Line
from bridges.irc.settings import STATE_KEY
from bridges.timestamps import parse_timestamp
from component.devstack.prosody import Prosody

CAPS = "batch draft/chathistory message-tags server-time"
SAID = [  # (msgid, server-time, text), what #room saw; the gateway was away for m2-m4
    ("m1", "2026-12-01T10:00:00.000Z", "one"),
    ("m2", "2026-12-01T10:01:00.000Z", "two"),
    ("m3", "2026-12-01T10:02:00.000Z", "three"),
    ("m4", "2026-12-01T10:03:00.000Z", "four"),
]


IN_ROOM = {STATE_KEY: {SERVER: {"persistent": ["#room"]}}}
"""The bridge state of an account whose session joins #room on its own."""


def tagged(msgid: str, time: str, text: str, batch: str = "") -> str:
    tags = f"batch={batch};" if batch else ""
    return f"@{tags}msgid={msgid};time={time} :bob!b@h PRIVMSG #room :{text}"


def history_server(live: bool = True, nick: str = "alice") -> ScriptedIrcd:
    """`live`: the first join sees m1 live, the second m4 before history is asked."""
    joins = 0

    def script(line: str) -> list[str]:
        nonlocal joins
        if line == "CAP LS 302":
            return [f":srv CAP * LS :{CAPS}"]
        if line == f"CAP REQ :{CAPS}":
            return [f":srv CAP * ACK :{CAPS}"]
        if line == "CAP END":
            return [
                f":srv 001 {nick} :Welcome",
                f":srv 005 {nick} CHATHISTORY=2 :are supported",
                f":srv 376 {nick} :End of MOTD",
            ]
        if line == "JOIN :#room":
            joins += 1
            names = [
                f":{nick}!a@h JOIN #room",
                f":srv 353 {nick} = #room :{nick} bob",
                f":srv 366 {nick} #room :End of NAMES",
            ]
            return [*names, *([tagged(*SAID[0] if joins == 1 else SAID[3])] if live else [])]
        asked = Line.parse(line)
        if asked.command == "CHATHISTORY" and asked.params[:2] == ["AFTER", "#room"]:
            after, limit = asked.param(2).removeprefix("msgid="), int(asked.param(3))
            ids = [m for m, _, _ in SAID]
            page = SAID[ids.index(after) + 1 :][:limit]
            ref = f"h{after}"
            return [
                f":srv BATCH +{ref} chathistory #room",
                *(tagged(*said, batch=ref) for said in page),
                f":srv BATCH -{ref}",
                # After the last page, a live line: the test knows the fetch is over.
                *([tagged("m5", "2026-12-01T10:04:00.000Z", "five")] if len(page) < limit else []),
            ]
        return []

    return ScriptedIrcd(script)


async def test_reconnect_fetches_missed_lines_once_in_order_paging_without_gap_notice():
    async with history_server() as server:
        harness = Harness(server)
        _, sink = await harness.session("alice", state=IN_ROOM)
        room = harness.room("#room")
        await sink.wait_event(events.Message, text="one")

        server.drop()
        await sink.wait_event(events.Message, text="four")
        await sink.wait_event(events.Message, text="five")

        said = [e for e in sink.items if isinstance(e, events.Message) and e.nick == "bob"]
        assert [(e.text, e.legacy_id) for e in said] == [
            ("one", "m1"),
            ("four", "m4"),  # live after the rejoin; page 2 brings it again: skipped
            ("two", "m2"),
            ("three", "m3"),
            ("five", "m5"),
        ]
        for event in said[2:4]:  # history: a delay stamp with the server's time
            sent = parse_timestamp(dict((t, s) for _, s, t in SAID)[event.text])
            assert isinstance(sent, datetime) and event.timestamp == sent == event.sent
        asked = server.lines.matching(lambda t: t.startswith("CHATHISTORY"))
        assert asked == [
            "CHATHISTORY AFTER #room msgid=m1 :2",
            "CHATHISTORY AFTER #room msgid=m3 :2",
        ]
        notices = [e.text for e in sink.items if isinstance(e, events.Message) and e.sender == room]
        assert not [text for text in notices if "was not in" in text]
        await harness.close()


async def test_a_gateway_restart_fetches_after_the_msgid_its_record_kept():
    async with history_server(live=False) as server:
        harness = Harness(server)
        account = Account(
            "alice@localhost",
            "irc",
            settings={"nick": "alice"},
            state=IN_ROOM,
        )
        store = MemoryStore(account)
        record = {"at": "2026-12-01T10:01:30+00:00", "msgid": "m2"}
        store.records[SEEN_KIND, f"{SERVER} #room"] = record
        sink = RecordingSink()
        session = harness.bridge().create_session(account, sink, store)
        await session.start()
        harness.sessions.append(session)  # type: ignore[arg-type]

        await sink.wait_event(events.Message, text="five")
        said = [e.legacy_id for e in sink.items if isinstance(e, events.Message) and e.nick]
        assert said == ["m3", "m4", "m5"]
        assert server.lines.matching(lambda t: t.startswith("CHATHISTORY")) == [
            "CHATHISTORY AFTER #room msgid=m2 :2",
            "CHATHISTORY AFTER #room msgid=m4 :2",  # the first page was full: an empty one
        ]
        assert store.records[SEEN_KIND, f"{SERVER} #room"]["msgid"] == "m2"
        await harness.close()


async def reconnecting(
    server: ScriptedIrcd, history: Callable[[str], list[str]]
) -> tuple[Harness, RecordingSink]:
    """alice's session in #room on `server`, which drops her once "one" was said and
    answers the CHATHISTORY requests of her reconnection with `history(line)`."""
    base = server.script
    server.script = lambda line: history(line) if line.startswith("CHATHISTORY") else base(line)
    harness = Harness(server)
    _, sink = await harness.session("alice", state=IN_ROOM)
    await sink.wait_event(events.Message, text="one")
    server.drop()
    return harness, sink


async def test_a_refused_history_request_is_told_in_the_room():
    def history(_line: str) -> list[str]:
        return [":srv FAIL CHATHISTORY MESSAGE_ERROR AFTER #room :history is off"]

    async with history_server() as server:
        harness, sink = await reconnecting(server, history)
        refused = await sink.wait_for(
            lambda e: isinstance(e, events.Message) and "did not send" in e.text
        )
        assert refused.sender == harness.room("#room")
        assert refused.text == (
            "127.0.0.1 did not send what #room said while the gateway was away: history is off"
        )
        await harness.close()


async def test_a_server_with_endless_history_is_asked_at_most_max_pages_times():
    served = 0

    def history(_line: str) -> list[str]:
        nonlocal served
        page = []
        for _ in range(2):  # always a full page of new lines
            served += 1
            page.append(tagged(f"x{served}", "2026-12-01T10:05:00.000Z", f"line {served}", "b"))
        return [":srv BATCH +b chathistory #room", *page, ":srv BATCH -b"]

    async with history_server() as server:
        harness, sink = await reconnecting(server, history)
        await sink.wait_for(lambda e: isinstance(e, events.Message) and "pages" in e.text)
        assert len(server.lines.matching(lambda t: t.startswith("CHATHISTORY"))) == MAX_PAGES
        history = [e for e in sink.items if isinstance(e, events.Message) and e.nick == "bob"]
        assert len(history) == 2 + 2 * MAX_PAGES  # "one", "four" live, every line fetched
        await harness.close()


@pytest.fixture
async def prosody() -> AsyncIterator[Prosody]:
    async with Prosody(components={IRC_JID: IRC_SECRET}) as server:
        yield server


async def test_missed_lines_reach_the_xmpp_client_once_as_delayed_history(
    prosody: Prosody, gateway_factory: Any
) -> None:
    async with history_server(nick="dora") as server:
        irc = {
            "jid": IRC_JID,
            "secret": IRC_SECRET,
            "port": server.port,
            "tls": False,
            "reconnect_initial_delay": 0.2,
            "allowed_servers": [SERVER],
        }
        await gateway_factory(prosody, bridges={"irc": irc})
        jid = await prosody.register("dora", PASSWORD)
        client = await login(prosody, jid, "pc")
        await register_and_subscribe(client, IRC_JID, nick="dora")
        await join_room(client, "dora")
        await client.wait_for(groupchat("one"))

        server.drop()
        await client.wait_for(groupchat("five"))
        said = [
            s
            for s in client.stanzas
            if isinstance(s, Message) and s["type"] == "groupchat" and s["from"].resource == "bob"
        ]
        assert [s["body"] for s in said] == ["four", "two", "three"]  # "one" and "five" taken
        for stanza, (_, time, _) in zip(said[1:], SAID[1:3], strict=True):
            delay = stanza.xml.find("{urn:xmpp:delay}delay")
            assert delay is not None and delay.get("stamp") == time.replace(".000", "")
            assert stanza.xml.find("{urn:xmpp:sid:0}stanza-id") is not None  # archived
        notices = [s["body"] for s in client.stanzas if isinstance(s, Message)]
        assert not [body for body in notices if "was not in" in (body or "")]
        await client.close()
