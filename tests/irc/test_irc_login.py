"""Login details ngIRCd cannot show: SASL PLAIN, server password, NickServ, dead links."""

from __future__ import annotations

import asyncio
import base64

from irc_helpers import Harness, MemoryStore, RecordingSink, ScriptedIrcd

from bridges import events
from bridges.base import Account

WELCOME = [":srv 001 alice :Welcome", ":srv 376 alice :End of MOTD"]


def sasl_server(line: str) -> list[str]:
    if line == "CAP REQ :sasl":
        return [":srv CAP * ACK :sasl"]
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
    assert sent[0] == "PASS :server-pw"
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
