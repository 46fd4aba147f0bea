"""Login details ngIRCd cannot show: SASL PLAIN, server password, NickServ, dead links."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta

from irc_helpers import Harness, MemoryStore, RecordingSink, ScriptedIrcd

from bridges import events
from bridges.base import Account

WELCOME = [":srv 001 alice :Welcome", ":srv 376 alice :End of MOTD"]


def sasl_server(line: str) -> list[str]:
    if line == "CAP LS 302":  # IRCv3.2: a long list comes in several lines
        return [":srv CAP * LS * :multi-prefix away-notify", ":srv CAP * LS :sasl=PLAIN,EXTERNAL"]
    if line.startswith("CAP REQ "):
        return [f":srv CAP * ACK {line[8:]}"]
    if line == "AUTHENTICATE PLAIN":
        return ["AUTHENTICATE +"]
    if line.startswith("AUTHENTICATE "):
        return [":srv 903 alice :SASL authentication successful"]
    if line == "CAP END":
        return WELCOME
    return []


async def test_sasl_plain_server_password_and_nickserv():
    secrets = {
        "127.0.0.1/sasl_password": "sasl-pw",
        "127.0.0.1/server_password": "server-pw",
        "127.0.0.1/nickserv_password": "ns-pw",
    }
    async with ScriptedIrcd(sasl_server) as server:
        harness = Harness(server)
        session, _sink = await harness.session("alice", secrets=secrets)
        await session.send_message(harness.contact("bob"), "hi")
        await server.lines.wait_for(lambda line: line == "PRIVMSG bob :hi")
        await harness.close()

    sent = server.lines.items
    assert sent[:2] == ["CAP LS 302", "PASS :server-pw"]
    assert "CAP REQ :away-notify multi-prefix sasl" in sent  # what we use of what is offered
    auth = next(line for line in sent if line.startswith("AUTHENTICATE ") and "PLAIN" not in line)
    assert base64.b64decode(auth.split()[1]) == b"alice\0alice\0sasl-pw"
    assert sent.index("CAP END") > sent.index(auth)
    assert "PRIVMSG NickServ :IDENTIFY ns-pw" in sent


async def test_silent_server_is_detected_by_ping_timeout():
    async with ScriptedIrcd(lambda line: WELCOME if line.startswith("USER") else []) as server:
        harness = Harness(server)
        session, sink = await harness.session("alice", ping_interval=0.3, ping_timeout=0.3)
        await session.send_message(harness.contact("bob"), "hi")
        await server.lines.wait_for(lambda line: line.startswith("PING"))
        lost = await sink.wait_for(
            lambda e: isinstance(e, events.Message) and "Disconnected" in e.text
        )
        assert "ping timeout" in lost.text
        await harness.close()


class StalledSink(RecordingSink):
    """Delivery that waits, as it does while the XMPP link is down."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def deliver(self, event, *, state=None) -> None:
        await self.gate.wait()
        self.record(event)


async def test_pings_are_answered_while_delivery_is_stalled():
    def script(line: str) -> list[str]:
        return [*WELCOME, "PING :probe"] if line.startswith("USER") else []

    async with ScriptedIrcd(script) as server:
        harness = Harness(server)
        bridge = harness.bridge()
        account = Account("alice@localhost", "irc", settings={"nick": "alice"})
        sink = StalledSink()
        session = bridge.create_session(account, sink, MemoryStore(account))
        harness.sessions.append(session)
        await session.send_message(harness.contact("bob"), "hi")

        await server.lines.wait_for(lambda line: line == "PONG :probe")
        assert sink.items == []  # the welcome is still waiting for the XMPP side
        sink.gate.set()
        await sink.wait_for(lambda e: isinstance(e, events.Message) and "Welcome" in e.text)
        await harness.close()


async def test_hostile_command_names_select_no_internal_method():
    hostile = [":srv LINE x", ":srv TEXT x", ":srv __INIT__ x", ":srv 999 alice :odd numeric"]

    def script(line: str) -> list[str]:
        return [*WELCOME, *hostile] if line.startswith("USER") else []

    async with ScriptedIrcd(script) as server:
        harness = Harness(server)
        session, sink = await harness.session("alice")
        await session.send_message(harness.contact("bob"), "hi")
        odd = await sink.wait_for(lambda e: isinstance(e, events.Message) and "odd" in e.text)
        assert odd.sender.kind.value == "service"
        assert session.networks["127.0.0.1"].connected
        await harness.close()


async def test_unanswered_join_times_out():
    async with ScriptedIrcd(lambda line: WELCOME if line.startswith("USER") else []) as server:
        harness = Harness(server)
        session, sink = await harness.session("alice", join_timeout=0.3)
        await session.join(harness.room("#void"), "alice")
        failed = await sink.wait_event(events.RoomJoinFailed)
        assert failed.condition == "remote-server-timeout"
        assert session.networks["127.0.0.1"].channels == {}
        await harness.close()


async def test_without_sasl_on_offer_the_user_is_told():
    def script(line: str) -> list[str]:
        if line == "CAP LS 302":
            return [":srv CAP * LS :multi-prefix"]
        if line.startswith("CAP REQ "):
            return [f":srv CAP * ACK {line[8:]}"]
        return WELCOME if line == "CAP END" else []

    async with ScriptedIrcd(script) as server:
        harness = Harness(server)
        secrets = {"127.0.0.1/sasl_password": "sasl-pw"}
        session, sink = await harness.session("alice", secrets=secrets)
        await session.send_message(harness.contact("bob"), "hi")
        greeting = await sink.wait_for(
            lambda e: isinstance(e, events.Message) and "Welcome" in e.text
        )
        assert "none of the SASL mechanisms" in greeting.text
        assert "AUTHENTICATE PLAIN" not in server.lines.items
        await harness.close()


async def test_reconnect_line_still_shows_a_failed_sasl_login():
    connections: list[str] = []

    def script(line: str) -> list[str]:
        if line == "CAP LS 302":
            connections.append(line)
        elif line.startswith("AUTHENTICATE ") and "PLAIN" not in line and len(connections) > 1:
            return [":srv 904 alice :SASL authentication failed"]
        elif line == "JOIN :#room":
            return [":alice!a@h JOIN #room", ":srv 366 alice #room :End of NAMES"]
        return sasl_server(line)

    async with ScriptedIrcd(script) as server:
        harness = Harness(server)
        secrets = {"127.0.0.1/sasl_password": "sasl-pw"}
        session, sink = await harness.session("alice", secrets=secrets)
        await session.join(harness.room("#room"), "alice")
        await sink.wait_event(events.RoomJoined)

        server.drop()

        service = harness.bridge().parse_address("127.0.0.1")
        again = await sink.wait_for(
            lambda e: isinstance(e, events.Message) and e.sender == service and "Rec" in e.text
        )
        assert again.text == "Reconnected to 127.0.0.1 as alice.\nSASL authentication failed"
        await harness.close()


async def test_server_time_dates_replayed_lines_only():
    now = datetime.now(UTC)
    replayed = (now - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    live = now.strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def script(line: str) -> list[str]:
        if line == "CAP LS 302":
            return [":srv CAP * LS :server-time"]
        if line == "CAP REQ :server-time":
            return [":srv CAP * ACK :server-time"]
        if line == "CAP END":
            return [
                *WELCOME,
                f"@time={replayed} :carol!c@h PRIVMSG alice :from the backlog",
                f"@time={live} :carol!c@h PRIVMSG alice :just now",
            ]
        return []

    async with ScriptedIrcd(script) as server:
        harness = Harness(server)
        session, sink = await harness.session("alice")
        await session.send_message(harness.contact("bob"), "hi")
        old = await sink.wait_for(lambda e: isinstance(e, events.Message) and "backlog" in e.text)
        new = await sink.wait_for(lambda e: isinstance(e, events.Message) and "just now" in e.text)
        assert old.timestamp is not None
        assert old.timestamp.strftime("%Y-%m-%dT%H:%M:%S.000Z") == replayed
        assert new.timestamp is None
        await harness.close()


async def test_away_notify_marks_away_members():
    def script(line: str) -> list[str]:
        replies = {
            "CAP LS 302": [":srv CAP * LS :away-notify multi-prefix"],
            "CAP REQ :away-notify multi-prefix": [":srv CAP * ACK :away-notify multi-prefix"],
            "CAP END": WELCOME,
            "JOIN :#room": [
                ":alice!a@h JOIN #room",
                ":srv 353 alice = #room :alice bob carol",
                ":srv 366 alice #room :End of NAMES",
            ],
            "WHO :#room": [
                ":srv 352 alice #room b h srv bob G :0 Bob",
                ":srv 352 alice #room c h srv carol H :0 Carol",
                ":srv 315 alice #room :End of WHO",
                ":bob!b@h AWAY",
                ":carol!c@h AWAY :gone fishing",
            ],
        }
        return replies.get(line, [])

    async with ScriptedIrcd(script) as server:
        harness = Harness(server)
        session, sink = await harness.session("alice")
        room = harness.room("#room")
        await session.join(room, "alice")
        joined = await sink.wait_event(events.RoomJoined)
        assert {o.nick: o.away for o in joined.occupants} == {"bob": False, "carol": False}
        await sink.wait_for(
            lambda e: isinstance(e, events.OccupantJoined) and e.occupant.nick == "carol"
        )
        changes = [
            (e.occupant.nick, e.occupant.away)
            for e in sink.items
            if isinstance(e, events.OccupantJoined)
        ]
        assert changes == [("bob", True), ("bob", False), ("carol", True)]
        await harness.close()
