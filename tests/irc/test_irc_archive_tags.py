"""What the IRC bridge tells the room archive: msgid, server-time and the line's kind."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from irc_helpers import Harness, RecordingSink, ScriptedIrcd

from bridges import events
from bridges.irc.session import IrcSession

WELCOME = [":srv 001 alice :Welcome", ":srv 376 alice :End of MOTD"]
CAPS = "message-tags server-time"


@contextlib.asynccontextmanager
async def alice_in_room(
    joins: dict[str, list[str]],
) -> AsyncIterator[tuple[Harness, IrcSession, RecordingSink]]:
    """alice's session joining #room on a server that acknowledges CAPS and answers her
    JOIN of each channel in `joins` with its lines."""
    replies = {
        "CAP LS 302": [f":srv CAP * LS :{CAPS}"],
        f"CAP REQ :{CAPS}": [f":srv CAP * ACK :{CAPS}"],
        "CAP END": WELCOME,
        **{f"JOIN :{channel}": lines for channel, lines in joins.items()},
    }
    async with ScriptedIrcd(lambda line: replies.get(line, [])) as server:
        harness = Harness(server)
        session, sink = await harness.session("alice")
        await session.join(harness.room("#room"), "alice")
        yield harness, session, sink


async def test_channel_lines_carry_msgid_server_time_and_kind():
    async with alice_in_room(
        {
            "#room": [
                ":alice!a@h JOIN #room",
                ":srv 353 alice = #room :alice bob",
                ":srv 366 alice #room :End of NAMES",
                "@msgid=abc;time=2026-12-01T10:00:00.250Z :bob!b@h PRIVMSG #room :hello",
                ":bob!b@h PRIVMSG #room :\x01ACTION waves\x01",
                ":bob!b@h NOTICE #room :note this",
            ]
        }
    ) as (_, _, sink):
        await sink.wait_for(lambda e: isinstance(e, events.Message) and e.text == "note this")
        said = [e for e in sink.items if isinstance(e, events.Message) and e.sender.is_group]
        assert [(e.text, e.legacy_id, e.kind) for e in said] == [
            ("hello", "abc", events.MessageKind.MESSAGE),
            ("/me waves", None, events.MessageKind.ACTION),
            ("note this", None, events.MessageKind.NOTICE),
        ]
        assert said[0].sent == datetime(2026, 12, 1, 10, 0, 0, 250000, tzinfo=UTC)
        assert said[1].sent is None


async def test_the_topic_comes_with_who_set_it_and_when():
    async with alice_in_room(
        {
            "#room": [
                ":alice!a@h JOIN #room",
                ":srv 332 alice #room :the topic",
                ":srv 333 alice #room op!o@h 1764576000",
                ":srv 353 alice = #room :alice op",
                ":srv 366 alice #room :End of NAMES",
                "@time=2026-12-01T10:00:00.000Z :op!o@h TOPIC #room :new topic",
            ],
            "#other": [
                ":alice!a@h JOIN #other",
                ":srv 332 alice #other :hostile",
                ":srv 333 alice #other op!o@h 99999999999999999999999",
                ":srv 366 alice #other :End of NAMES",
            ],
        }
    ) as (harness, session, sink):
        joined = await sink.wait_event(events.RoomJoined)
        assert (joined.subject, joined.subject_by) == ("the topic", "op")
        assert joined.subject_at == datetime(2025, 12, 1, 8, 0, tzinfo=UTC)
        changed = await sink.wait_event(events.SubjectChanged)
        assert changed.at == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
        await session.join(harness.room("#other"), "alice")
        other = await sink.wait_event(events.RoomJoined, room=harness.room("#other"))
        assert other.subject == "hostile" and other.subject_at is None
