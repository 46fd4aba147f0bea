"""Test doubles around the IRC bridge: a recording sink, an in-memory store, IRC peers.

The peers are real `irc` (jaraco) asyncio clients, a second implementation of the
protocol, so the bridge is never checked against its own parser. Every wait is on a
recorded event with a timeout: no sleeps.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Mapping
from typing import Any

from irc.client import Event, ServerConnection
from irc.client_aio import AioReactor
from jaraco.stream import buffer

from bridges import events
from bridges.address import Address
from bridges.base import Account
from bridges.irc import IrcBridge
from bridges.irc.devstack import InspIrcd, NgIrcd
from bridges.irc.options import IrcOptions
from bridges.irc.session import IrcSession

TIMEOUT = 10.0
SERVER = "127.0.0.1"
"""Sessions reach ngIRCd by address: `irc.localhost` need not resolve here."""
FAST = {
    "flood_rate": 200.0,
    "flood_burst": 200,
    "reconnect_initial_delay": 0.2,
    "allow_private_networks": True,  # ngIRCd is on loopback
}


class Recorder:
    """A list that can be waited on: `wait_for(predicate)` returns the first match."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = asyncio.Condition()

    def record(self, item: Any) -> None:
        self.items.append(item)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(self, condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancellation
        # that arrives as the awaited result does, and a poller cancelled then runs on.
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(condition)

    async def wait_for(self, predicate: Callable[[Any], bool], timeout: float = TIMEOUT) -> Any:
        found: list[Any] = []

        def check() -> bool:
            found[:] = [item for item in self.items if predicate(item)][:1]
            return bool(found)

        try:
            await self.wait_until(check, timeout)
        except TimeoutError:
            recent = "\n  ".join(self.describe(i) for i in self.items[-15:])
            raise AssertionError(f"nothing matched within {timeout} s; last:\n  {recent}") from None
        return found[0]

    def describe(self, item: Any) -> str:
        return repr(item)

    def matching(self, predicate: Callable[[Any], bool]) -> list[Any]:
        return [item for item in self.items if predicate(item)]


class RecordingSink(Recorder):
    """The Sink a session delivers to: records events in order, and keeps the ids of
    private messages as the component does (component.chats), in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.known_ids: dict[str, tuple[str, ...]] = {}

    async def deliver(self, event: events.Event, *, state: Mapping[str, Any] | None = None) -> None:
        if isinstance(event, events.Message) and event.legacy_id and not event.sender.is_group:
            self.known_ids[event.legacy_id] = (event.legacy_id,)
        if isinstance(event, events.Delivered) and event.legacy_id and not event.to.is_group:
            self.known_ids[event.xmpp_id] = event.legacy_ids or (event.legacy_id,)
        self.record(event)

    async def legacy_ids(self, xmpp_id: str) -> tuple[str, ...]:
        return self.known_ids.get(xmpp_id, ())

    async def xmpp_id(self, legacy_id: str) -> str | None:
        return next((x for x, known in self.known_ids.items() if legacy_id in known), None)

    async def wait_event(self, kind: type, timeout: float = TIMEOUT, **fields: Any) -> Any:
        return await self.wait_for(
            lambda e: isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items()),
            timeout,
        )


class MemoryStore:
    """AccountStore over dicts; like the real one, it never touches live Account objects."""

    def __init__(self, account: Account) -> None:
        self.saved: dict[str, dict[str, Any]] = {
            "settings": dict(account.settings),
            "secrets": dict(account.secrets),
            "state": dict(account.state),
        }
        self.records: dict[tuple[str, str], dict[str, Any]] = {}

    async def save_account(self, *, settings=None, secrets=None, state=None) -> None:
        for name, value in (("settings", settings), ("secrets", secrets), ("state", state)):
            if value is not None:
                self.saved[name] = dict(value)

    async def put_record(self, kind: str, key: str, data: Mapping[str, Any]) -> None:
        self.records[kind, key] = dict(data)

    async def get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        return self.records.get((kind, key))

    async def list_records(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        return [(k, v) for (kd, k), v in self.records.items() if kd == kind]

    async def delete_record(self, kind: str, key: str) -> None:
        self.records.pop((kind, key), None)


class LenientConnection(ServerConnection):
    buffer_class = buffer.LenientDecodingLineBuffer


class IrcPeer(Recorder):
    """Someone on IRC, using the jaraco `irc` asyncio client; records its events."""

    def __init__(self, nick: str) -> None:
        super().__init__()
        self.nick = nick
        self.reactor = AioReactor(loop=asyncio.get_running_loop())
        self.conn = self.reactor.server()
        self.conn.buffer_class = buffer.LenientDecodingLineBuffer
        self.reactor.add_global_handler("all_events", self._on_event, -10)

    def describe(self, item: Any) -> str:
        return f"{item.type} {item.source} -> {item.target} {item.arguments}"

    def _on_event(self, _conn: ServerConnection, event: Event) -> None:
        self.record(event)

    @classmethod
    async def connect(cls, host: str, port: int, nick: str) -> IrcPeer:
        peer = cls(nick)
        await peer.conn.connect(host, port, nick)
        await peer.wait_for(lambda e: e.type == "welcome")
        return peer

    async def join(self, channel: str) -> None:
        """JOIN and wait for the echo (ngIRCd delays a new client's first commands)."""
        self.conn.join(channel)
        await self.wait_for(self.own_event("join", channel))

    def own_event(self, kind: str, target: str) -> Callable[[Event], bool]:
        return lambda e: (
            e.type == kind and e.source.nick == self.nick and e.target.lower() == target.lower()
        )

    async def wait_text(self, kind: str, text: str, timeout: float = TIMEOUT) -> Event:
        return await self.wait_for(
            lambda e: e.type == kind and e.arguments and e.arguments[0] == text, timeout
        )

    def texts(self, kind: str, source: str | None = None) -> list[str]:
        return [
            e.arguments[0]
            for e in self.items
            if e.type == kind and (source is None or e.source.nick == source)
        ]

    def send_raw_bytes(self, data: bytes) -> None:
        """Bypass the client's UTF-8 encoding (to send latin-1, say)."""
        self.conn.transport.write(data + b"\r\n")

    async def close(self) -> None:
        if self.conn.connected:
            self.conn.disconnect("bye")


class TagPeer(Recorder):
    """Someone on IRC whose client negotiates IRCv3 caps (jaraco's cannot): raw lines.

    Records every line exactly as the server sent it, so tests check the exact tags
    (`+draft/reply=…`) without parsing them with the bridge's own code.
    """

    def __init__(self, nick: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        super().__init__()
        self.nick = nick
        self._reader, self._writer = reader, writer
        self._task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(
        cls, host: str, port: int, nick: str, caps: str = "message-tags echo-message"
    ) -> TagPeer:
        reader, writer = await asyncio.open_connection(host, port)
        peer = cls(nick, reader, writer)
        for line in (f"CAP REQ :{caps}", f"NICK {nick}", f"USER {nick} 0 * :{nick}", "CAP END"):
            peer.send(line)
        await peer.wait_for(lambda line: f" 001 {nick} " in line, timeout=20)
        return peer

    async def _read(self) -> None:
        while raw := await self._reader.readline():
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith("PING "):
                self.send("PONG " + line[5:])
            self.record(line)

    def send(self, line: str) -> None:
        self._writer.write(line.encode() + b"\r\n")

    async def join(self, channel: str) -> None:
        self.send(f"JOIN {channel}")
        await self.wait_for(lambda line: f" 366 {self.nick} {channel} " in line)

    async def line_with(self, *parts: str, timeout: float = TIMEOUT) -> str:
        """The first line received that contains every one of `parts`."""
        return await self.wait_for(lambda line: all(p in line for p in parts), timeout)

    async def close(self) -> None:
        self._writer.close()
        self._task.cancel()


class ScriptedIrcd:
    """A loopback IRC server that answers from a script: for what ngIRCd cannot do.

    ngIRCd has no SASL and always answers PING, so SASL, server passwords and a dead
    link are shown against this one; `lines` records everything the client sent.
    """

    host = SERVER

    def __init__(
        self, script: Callable[[str], list[str]], tls: ssl.SSLContext | None = None
    ) -> None:
        self.script = script
        self.tls = tls
        self.lines = Recorder()
        self.port = 0
        self.closed = asyncio.Event()
        self.client_ports: list[int] = []
        """The source port of each connection, in order (what identd is asked about)."""
        self.client_certs: list[bytes | None] = []
        """Over TLS: the certificate each client showed (None: none)."""
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> ScriptedIrcd:
        self._server = await asyncio.start_server(self._serve, self.host, 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    def unsent(self) -> int:
        """Bytes written to clients that they have not taken yet (TCP pushing back)."""
        return sum(writer.transport.get_write_buffer_size() for writer in self._writers)

    def drop(self) -> None:
        """Close every client connection, as a server restart or a netsplit does."""
        for writer in self._writers:
            writer.close()

    def push(self, *lines: str) -> None:
        """Send `lines` to every client now, unasked (what a server does at any time)."""
        for writer in self._writers:
            if writer.is_closing():
                continue
            for line in lines:
                writer.write(line.encode() + b"\r\n")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        self.client_ports.append(writer.get_extra_info("peername")[1])
        tls = writer.get_extra_info("ssl_object")
        if tls is not None:
            self.client_certs.append(tls.getpeercert(binary_form=True))
        while line := await reader.readline():
            text = line.decode().rstrip("\r\n")
            self.lines.record(text)
            for reply in self.script(text):
                writer.write(reply.encode() + b"\r\n")
        self.closed.set()
        writer.close()


class Harness:
    """Sessions and peers made by one test, closed at teardown."""

    def __init__(self, server: NgIrcd | InspIrcd | ScriptedIrcd) -> None:
        self.server = server
        self.sessions: list[IrcSession] = []
        self.peers: list[IrcPeer] = []

    def bridge(self, **options: Any) -> IrcBridge:
        merged = {"port": self.server.port, "tls": False, **FAST, **options}
        return IrcBridge(IrcOptions(**merged))

    async def session(
        self,
        nick: str = "alice",
        user: str = "alice@localhost",
        secrets: dict[str, str] | None = None,
        state: dict[str, Any] | None = None,
        **options: Any,
    ) -> tuple[IrcSession, RecordingSink]:
        bridge = self.bridge(**options)
        account = Account(
            user, "irc", settings={"nick": nick}, secrets=dict(secrets or {}), state=state or {}
        )
        sink = RecordingSink()
        session = bridge.create_session(account, sink, MemoryStore(account))
        assert isinstance(session, IrcSession)
        await session.start()
        self.sessions.append(session)
        return session, sink

    async def peer(self, nick: str, *channels: str) -> IrcPeer:
        peer = await IrcPeer.connect(self.server.host, self.server.port, nick)
        self.peers.append(peer)
        for channel in channels:
            await peer.join(channel)
        return peer

    async def joined(
        self, channel: str, nick: str = "alice", **options: Any
    ) -> tuple[IrcSession, RecordingSink, Address]:
        """A session of `nick` that is in `channel` (its RoomJoined already seen)."""
        session, sink = await self.session(nick, **options)
        room = self.room(channel)
        await session.join(room, nick)
        await sink.wait_event(events.RoomJoined, room=room)
        return session, sink, room

    def room(self, channel: str) -> Address:
        return self.bridge().parse_address(f"{channel}%{SERVER}")

    def contact(self, nick: str) -> Address:
        return self.bridge().parse_address(f"{nick}%{SERVER}")

    async def close(self) -> None:
        for session in self.sessions:
            await session.stop()
        for peer in self.peers:
            await peer.close()
