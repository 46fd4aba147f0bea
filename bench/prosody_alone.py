"""How fast Prosody alone routes a gateway's room messages: the ceiling of a burst.

A raw XEP-0114 component writes prepared groupchat stanzas as fast as Prosody reads
them, to a raw client that only counts bodies, so nothing but Prosody does real work.
Each gateway's stanza shape is measured, because on two cores Prosody is what bounds
an IRC → XMPP burst, and what it costs per stanza grows with every child element: our
messages carry a XEP-0421 occupant-id and, archived, a XEP-0359 stanza-id, biboumi's a
stanza-id only with its history on. `irc_vs_biboumi.py` runs this for each gateway in
every round, next to its IRC → XMPP burst, and prints the burst ÷ this ceiling
(`--alone`: only this, for every shape).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from crowd import prosody_seconds

from component import wire
from component.archive import Line, stanza_id_for
from component.devstack.prosody import Prosody

DOMAIN = "alone.localhost"
"""The component the stanzas come from (each gateway's own domain is in use)."""
SECRET = "s-alone"
OCCUPANT_ID = "-1j_7OYZtnMmihtfU-Nn1mqEVNmtwYIMcQzD7EovqSI"
"""As long as the room's hash of an occupant (`GroupChats.occupant_id`)."""

Shape = Callable[[str, str, str, str], str]
"""A stanza from the occupant JID (room, nick) to a full JID, with a body."""


def ours(archived: bool) -> Shape:
    """Our live room message (`component.wire.groupchat`), as the IRC bridge sends it."""

    def shape(room: str, nick: str, to: str, body: str) -> str:
        line = Line(to, room, stanza_id_for(to, room, None), datetime.now(UTC), nick, body)
        by = room if archived else None
        return wire.groupchat(f"{room}/{nick}", to, line, by, OCCUPANT_ID)

    return shape


def biboumi(history: bool) -> Shape:
    """biboumi 9.0's, as it writes it (taken from its socket with strace)."""

    def shape(room: str, nick: str, to: str, body: str) -> str:
        stanza_id = (
            f"<stanza-id by='{room}' id='{uuid.uuid4()}' xmlns='urn:xmpp:sid:0'/>"
            if history
            else ""
        )
        return (
            f"<message from='{room}/{nick}' id='{uuid.uuid4()}' to='{to}' type='groupchat'>"
            f"<body>{body}</body>{stanza_id}</message>"
        )

    return shape


SHAPES: dict[str, Shape] = {
    "ours, archive on": ours(True),
    "ours, archive off": ours(False),
    "biboumi, history on": biboumi(True),
    "biboumi, history off": biboumi(False),
}


class Counter(Protocol):
    """The logged-in client the stanzas go to (`irc_vs_biboumi.RoomUser`)."""

    jid: str
    messages: list[tuple[float, str]]

    async def wait_count(self, count: int, prefix: str, timeout: float = 120) -> None: ...


class ProsodyAlone:
    """A component connection to `server` (as `DOMAIN`) writing to `client`."""

    def __init__(self, server: Prosody, client: Counter) -> None:
        self.server, self.client = server, client

    async def connect(self) -> None:
        """The component's handshake (XEP-0114)."""
        self.reader, self.writer = await asyncio.open_connection(
            self.server.host, self.server.component_port
        )
        self.writer.write(
            f"<stream:stream xmlns='jabber:component:accept' to='{DOMAIN}'"
            " xmlns:stream='http://etherx.jabber.org/streams'>".encode()
        )
        header = await self._read(re.compile(rb"<stream:stream[^>]*>"))
        found = re.search(rb"""\sid=['"]([^'"]+)""", header)
        assert found is not None, header
        digest = hashlib.sha1(found.group(1) + SECRET.encode()).hexdigest()
        self.writer.write(f"<handshake>{digest}</handshake>".encode())
        await self._read(re.compile(rb"<handshake\s*/>|<handshake>\s*</handshake>"))

    async def _read(self, until: re.Pattern[bytes]) -> bytes:
        data = b""
        async with asyncio.timeout(30):
            while until.search(data) is None:
                chunk = await self.reader.read(65536)
                if not chunk:
                    raise ConnectionError(f"closed by Prosody: {data[-300:]!r}")
                data += chunk
        return data

    async def route(self, shape: Shape, count: int, tag: str) -> tuple[float, float]:
        """`count` stanzas of `shape` (bodies `<tag> n`): messages per second until the
        client has them all, and Prosody's CPU s per 1,000 messages."""
        room = f"#alone%127.0.0.1@{DOMAIN}"
        to = self.client.jid
        data = "".join(shape(room, "peer", to, f"{tag} {n}") for n in range(count)).encode()
        before, started = prosody_seconds(self.server), time.perf_counter()
        for start in range(0, len(data), 16384):  # as fast as Prosody reads
            self.writer.write(data[start : start + 16384])
            await self.writer.drain()
        await self.client.wait_count(count, f"{tag} ", timeout=300)
        elapsed = time.perf_counter() - started
        used = prosody_seconds(self.server) - before
        self.client.messages.clear()
        return count / elapsed, used / count * 1000
