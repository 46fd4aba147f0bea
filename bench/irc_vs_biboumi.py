"""IRC bridge benchmark, side by side with biboumi doing the same work.

Starts Prosody, ngIRCd (its flood throttling off, so the servers are not what is
measured) and each gateway as its own process, in four configurations: ours with the
room archive on (the default) and off, biboumi with its history on (its default) and
off. biboumi comes from Debian (`apt-get install biboumi`); without it, or with port
6667 taken (biboumi only reaches IRC servers on the standard ports), its columns are
skipped. CI does not run benchmarks. Each configuration has its own channel and users:

* bursts, over `--rounds` rounds taken in turn by every configuration (the machine's
  load then weighs on all alike): an IRC peer sends `--burst` channel messages to a
  user joined through the gateway (IRC → XMPP), the user sends as many groupchat
  messages (XMPP → IRC, their reflections counted too). For each: messages/s, and
  the gateway's CPU seconds per 1,000 messages (user + system time from
  /proc/<pid>/stat until it is idle again), the figure that does not depend on how
  busy the machine was. Printed as median (range), with the ratios ours with the
  archive on ÷ each other configuration (archive off, each biboumi), round by round.
* Prosody alone: after each IRC → XMPP burst, a raw component writes as many of that
  gateway's room messages (`prosody_alone`: the same elements) straight to a client,
  as fast as Prosody takes them. On two cores Prosody bounds that burst, and each
  child element (occupant-id, stanza-id) costs it more, so this is the burst's ceiling
  for that gateway's stanzas; printed with the burst ÷ it. `--alone` runs only this.
* paced, in the same rounds: `--paced` messages each way at 50 msg/s, a busy room's
  pace rather than a burst, and the gateway's CPU seconds per 1,000 of them. A burst
  shares a wake-up, a socket write and an archive transaction among many messages; at
  a room's pace each message pays for them nearly alone, which is what a gateway
  spends in the everyday case.
* latency: IRC → XMPP at a paced rate, p50/p99 from the peer's send to the arrival,
  next to the same figure for the servers alone (IRC peer to IRC peer through ngIRCd,
  XMPP client to XMPP client through Prosody), which no gateway can go below.
* memory: the gateway process's RSS idle (/proc/<pid>/status), and as users join.
* fairness: while one user floods a channel with `--flood` messages, another user's
  latency in another channel, both ways (p50/p99/max): one user's burst must not hold
  up the others. `--fairness` runs only this (and the servers alone under the flood).

Flood control is opened on both sides, so the pacing is not what is measured: ours
with `flood_rate` very high, biboumi with `throttle_limit` -1 set by each user through
its ad-hoc `configure` command on the IRC server's JID (by default it sends 10 lines,
then one a second); history off is that user's `record_history` set to false.
`--profile` runs our gateways under cProfile and prints where their time went.
`--windows 65536,0` runs each of ours with each of these `write_window` values
(component.fair_writer), to compare them under the same load; `--baseline DIR` runs
each of ours from the source tree in DIR as well (an earlier commit: `git archive
main | tar -x -C DIR`), for a before and after in one run.

    .venv/bin/python bench/irc_vs_biboumi.py [--burst 2000] [--rounds 3] [--users 1,50,200]
        [--flood 5000] [--fairness] [--alone] [--only ours|biboumi] [--profile]
        [--windows 65536,0] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import html
import os
import re
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from crowd import (
    cpu_times,
    end_process,
    in_batches,
    irc_gateway_config,
    prosody_accounts,
    prosody_seconds,
    rss_kib,
)
from prosody_alone import DOMAIN as ALONE_DOMAIN
from prosody_alone import SECRET as ALONE_SECRET
from prosody_alone import SHAPES, ProsodyAlone, Shape
from prosody_alone import biboumi as biboumi_shape
from prosody_alone import ours as our_shape

from bridges.irc.devstack import InspIrcd, NgIrcd
from bridges.timeouts import within
from component.devstack.ejabberd import Ejabberd
from component.devstack.process import free_port
from component.devstack.prosody import Prosody

CHANNEL = "#bench"
FLOOD_CHANNEL = "#flood"
PASSWORD = "pw"
XMPP_TO_IRC_WINDOW = 30
IrcServer = NgIrcd | InspIrcd
"""ngIRCd (no IRCv3) or, with `--ircd inspircd`, InspIRCd (message-tags, msgid,
server-time, echo-message): each line then carries an IRCv3 msgid the archive keeps."""


# --- an IRC peer speaking the protocol directly -----------------------------------------


class IrcPeer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.privmsgs: list[tuple[float, str]] = []
        self.joined: set[str] = set()
        self.registered = False
        self.changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, host: str, port: int, nick: str, channel: str = CHANNEL) -> IrcPeer:
        reader, writer = await asyncio.open_connection(host, port)
        peer = cls(reader, writer)
        peer.send(f"NICK {nick}", f"USER {nick} 0 * :{nick}")
        # InspIRCd refuses commands before its welcome (ngIRCd queues them).
        await peer.wait(lambda: peer.registered)
        peer.send(f"JOIN {channel}")
        await peer.wait(lambda: nick in peer.joined)
        return peer

    def send(self, *lines: str) -> None:
        self.writer.write("".join(f"{line}\r\n" for line in lines).encode())

    async def _read(self) -> None:
        while line := await self.reader.readline():
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            prefix, _, rest = text.partition(" ") if text.startswith(":") else ("", "", text)
            if rest.startswith("PING"):
                self.send("PONG" + rest[4:])
            else:
                self._line(prefix[1:].partition("!")[0], rest)
            self.changed.set()

    def _line(self, nick: str, rest: str) -> None:
        """A line from `nick` (empty for the server's), its command first: peers that
        note more than messages and joins override this."""
        if rest.startswith("PRIVMSG"):
            self.privmsgs.append((time.perf_counter(), rest.partition(" :")[2]))
        elif rest.startswith("JOIN"):
            self.joined.add(nick)
        elif rest.startswith("001 "):
            self.registered = True

    async def wait(self, condition: Callable[[], bool], timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()

    def received(self, prefix: str) -> list[tuple[float, str]]:
        return [(at, body) for at, body in self.privmsgs if body.startswith(prefix)]

    async def wait_count(self, count: int, prefix: str, timeout: float = 120) -> None:
        await self.wait(lambda: len(self.received(prefix)) >= count, timeout)

    async def close(self) -> None:
        self.send("QUIT :bye")
        self._task.cancel()
        self.writer.close()


class Receiver(Protocol):
    def received(self, prefix: str) -> list[tuple[float, str]]: ...

    async def wait_count(self, count: int, prefix: str, timeout: float = 120) -> None: ...


# --- an XMPP user joined to the channel through a gateway --------------------------------


class RoomUser:
    """A minimal XMPP client on a raw socket: it only logs in, joins, counts and sends.

    slixmpp parses every stanza into objects, which costs more per message than the
    gateways being measured; this client finds bodies with a regular expression.
    """

    BODY = re.compile(rb"<message[^>]*>.*?<body>([^<]*)</body>", re.S)

    def __init__(self, jid: str, room: str, nick: str) -> None:
        self.jid, self.room, self.nick = jid, room, nick
        self.messages: list[tuple[float, str]] = []
        self.changed = asyncio.Event()
        self._buffer = b""

    async def login(self, server: Prosody | Ejabberd) -> None:
        local, _, rest = self.jid.partition("@")
        domain, _, resource = rest.partition("/")
        self.reader, self.writer = await asyncio.open_connection(server.host, server.c2s_port)
        opening = (
            f"<stream:stream to='{domain}' xmlns='jabber:client' "
            "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
        )
        self._write(opening)
        await self._read_until(b"</stream:features>")
        token = base64.b64encode(f"\0{local}\0{PASSWORD}".encode()).decode()
        self._write(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        )
        await self._read_until(b"<success")
        self._write(opening)
        await self._read_until(b"</stream:features>")
        self._write(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        await self._read_until(b"</iq>")
        self._write("<presence/>")

    def start_counting(self) -> None:
        self._buffer = b""
        self._task = asyncio.create_task(self._count())

    async def join(
        self,
        server: Prosody | Ejabberd,
        register_with: str | None = None,
        setup: Callable[[RoomUser], Awaitable[None]] | None = None,
        rooms: Sequence[str] = (),
    ) -> None:
        """Log in, register if asked, run `setup` (a gateway's per-user options), join
        the room (and `rooms`, if given, instead)."""
        await self.login(server)
        if register_with:  # XEP-0077 with the classic fields, as an old client would
            self._write(
                f"<iq type='set' id='reg' to='{register_with}'>"
                f"<query xmlns='jabber:iq:register'><nick>{self.nick}</nick></query></iq>"
            )
            await self._read_until(b"id='reg'", b'id="reg"')
        if setup is not None:
            await setup(self)
        for room in rooms or [self.room]:
            self._write(
                f"<presence to='{room}/{self.nick}'>"
                "<x xmlns='http://jabber.org/protocol/muc'/></presence>"
            )
            await self._read_until(b"code='110'", b'code="110"', timeout=120)
        self.start_counting()

    def _write(self, text: str) -> None:
        self.writer.write(text.encode())

    async def request(self, xml: str, iq_id: str) -> ET.Element:
        """Send an iq and return its answer, parsed (before `start_counting`)."""
        self._write(xml)
        answer = re.compile(rf"<iq[^>]*id=['\"]{iq_id}['\"].*?</iq>".encode(), re.S)
        async with asyncio.timeout(30):
            while (match := answer.search(self._buffer)) is None:
                chunk = await self.reader.read(65536)
                if not chunk:
                    raise ConnectionError(f"closed while waiting for iq {iq_id}")
                self._buffer += chunk
        self._buffer = b""
        return ET.fromstring(match.group(0))

    async def configure(self, to: str, values: dict[str, str]) -> None:
        """Run an XEP-0050 `configure` command, submitting its form with `values` changed."""
        ns = "http://jabber.org/protocol/commands"
        form = await self.request(
            f"<iq type='set' id='cfg1' to='{to}'><command xmlns='{ns}' node='configure' "
            "action='execute'/></iq>",
            "cfg1",
        )
        command = form.find(f"{{{ns}}}command")
        fields = form.findall(".//{jabber:x:data}field")
        if command is None or not set(values) <= {f.get("var") for f in fields}:
            raise RuntimeError(f"{to} has no configure form with {sorted(values)}")
        submitted = "".join(
            f"<field var='{field.get('var')}'>"
            + "".join(
                f"<value>{html.escape(value)}</value>"
                for value in (
                    [values[field.get("var", "")]]
                    if field.get("var") in values
                    else [v.text or "" for v in field.findall("{jabber:x:data}value")]
                )
            )
            + "</field>"
            for field in fields
            if field.get("var") and field.get("type") != "fixed"
        )
        done = await self.request(
            f"<iq type='set' id='cfg2' to='{to}'><command xmlns='{ns}' node='configure' "
            f"sessionid='{command.get('sessionid')}' action='complete'>"
            f"<x xmlns='jabber:x:data' type='submit'>{submitted}</x></command></iq>",
            "cfg2",
        )
        if done.get("type") != "result":
            raise RuntimeError(f"configure on {to} failed: {ET.tostring(done)!r}")

    async def _read_until(self, *markers: bytes, timeout: float = 60) -> None:
        try:
            await within(self._fill_until(markers), timeout)
        except TimeoutError:
            raise TimeoutError(f"no {markers} in: {self._buffer[-600:]!r}") from None
        self._buffer = b""

    async def _fill_until(self, markers: tuple[bytes, ...]) -> None:
        while not any(marker in self._buffer for marker in markers):
            chunk = await self.reader.read(65536)
            if not chunk:
                raise ConnectionError(
                    f"closed while waiting for {markers}: {self._buffer[-300:]!r}"
                )
            self._buffer += chunk

    async def _count(self) -> None:
        while chunk := await self.reader.read(262144):
            now = time.perf_counter()
            self._buffer += chunk
            last = 0
            for match in self.BODY.finditer(self._buffer):
                self.messages.append((now, html.unescape(match.group(1).decode())))
                last = match.end()
            self._buffer = self._buffer[last:]
            self.changed.set()

    def send_message(self, mto: str, mbody: str, mtype: str) -> None:
        """As the common clients send it (Conversations, Dino, Gajim, Monal): a random
        id and an XEP-0359 origin-id of the same value, which a gateway that archives
        keeps (and indexes) with the user's own line."""
        client_id = str(uuid.uuid4())
        self._write(
            f"<message to='{mto}' type='{mtype}' id='{client_id}'>"
            f"<body>{html.escape(mbody)}</body>"
            f"<origin-id xmlns='urn:xmpp:sid:0' id='{client_id}'/></message>"
        )

    def disconnect(self) -> None:
        self._write("</stream:stream>")
        self._task.cancel()
        self.writer.close()

    def received(self, prefix: str) -> list[tuple[float, str]]:
        """Messages whose body starts with `prefix` (the room also echoes our own)."""
        return [(at, body) for at, body in self.messages if body.startswith(prefix)]

    async def wait_count(self, count: int, prefix: str, timeout: float = 120) -> None:
        async with asyncio.timeout(timeout):
            while len(self.received(prefix)) < count:
                self.changed.clear()
                await self.changed.wait()


# --- the gateways -------------------------------------------------------------------------


@dataclass
class Gateway:
    """One gateway in one configuration, with its own channel, IRC peer and XMPP user."""

    name: str
    domain: str
    tag: str
    """Short (nicks hold 9 characters) and unique: names its channel, nicks, accounts."""
    process: asyncio.subprocess.Process | None = None
    needs_registration: bool = False
    setup: Callable[[RoomUser], Awaitable[None]] | None = None
    """What each user does before joining (biboumi: its per-user options)."""
    results: dict[str, str] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    """Figures measured once per round: messages/s, CPU seconds per 1,000 messages."""
    peer: IrcPeer | None = None
    user: RoomUser | None = None
    shape: Shape | None = None
    """Its live room message (`prosody_alone`), for Prosody's ceiling of a burst."""

    @property
    def channel(self) -> str:
        return f"{CHANNEL}-{self.tag}"

    @property
    def room(self) -> str:
        return self.room_of(self.channel)

    def room_of(self, channel: str) -> str:
        return f"{channel}%127.0.0.1@{self.domain}"

    async def new_user(self, server: Prosody, name: str, room: str | None = None) -> RoomUser:
        """A fresh account of `server`, joined to `room` (the gateway's channel) through us."""
        jid = await server.register(f"{name}-{self.tag}", PASSWORD)
        user = RoomUser(f"{jid}/bench", room or self.room, f"{name}{self.tag}")
        await user.join(server, self.domain if self.needs_registration else None, self.setup)
        return user

    async def crowd(
        self, server: Prosody, name: str, count: int, rooms: Callable[[int], list[str]]
    ) -> list[RoomUser]:
        """`count` users (accounts written in bulk: `crowd.prosody_accounts`), user `n`
        joined to `rooms(n)` through us, ten at a time."""
        jids = prosody_accounts(server, (f"{name}{n}-{self.tag}" for n in range(count)), PASSWORD)

        async def join(n: int) -> RoomUser:
            user = RoomUser(f"{jids[n]}/bench", "", f"{name}{n}{self.tag}")
            registration = self.domain if self.needs_registration else None
            await user.join(server, registration, self.setup, rooms(n))
            return user

        return await in_batches(count, join, batch=10)

    def rss_kib(self) -> int:
        assert self.process is not None
        return rss_kib(self.process.pid)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the gateway process so far (/proc/<pid>/stat)."""
        user, system = self.cpu_times()
        return user + system

    def cpu_times(self) -> tuple[float, float]:
        """User and system CPU time of the gateway process so far."""
        assert self.process is not None
        return cpu_times(self.process.pid)

    async def settled_cpu(self) -> tuple[float, float]:
        """`cpu_times` once the process has stopped working (batched archive writes and
        the like finish after the last stanza is out), at most 5 s later."""
        last, still = self.cpu_times(), 0
        for _ in range(50):
            await asyncio.sleep(0.1)
            now = self.cpu_times()
            still = still + 1 if now == last else 0
            if still >= 3:
                break
            last = now
        return last


@contextlib.asynccontextmanager
async def run_process(
    *argv: str, log: Path, source: Path | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`argv` as a process logging to `log`; with `source`, its Python packages from that
    directory (run there, so that it comes before this checkout's editable install)."""
    env = None
    if source is not None:
        env = {**os.environ, "PYTHONPATH": str(source), "PYTHONDONTWRITEBYTECODE": "1"}
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=out, stderr=out, env=env, cwd=source
        )
    try:
        yield process
    finally:
        await end_process(process, 10)


async def wait_connected(server: Prosody, domain: str, mark: int) -> None:
    await server.wait_component_connected(domain, timeout=30, since=mark)


def gateway_config(
    server: Prosody,
    irc: IrcServer,
    db_path: Path,
    secret: str,
    domain: str = "irc.localhost",
    **irc_options: Any,
) -> dict[str, Any]:
    """Our gateway's config with only the IRC bridge, on `server` and `irc`, an SQLite
    file and warnings only in its log."""
    return irc_gateway_config(
        server,
        irc,
        f"sqlite+aiosqlite:///{db_path}",
        secret,
        domain=domain,
        irc_options=irc_options,
        log_level="WARNING",
    )


async def start_ours(
    stack: contextlib.AsyncExitStack,
    tmp: Path,
    server: Prosody,
    irc: IrcServer,
    secret: str,
    core: dict[str, Any] | None = None,
    *,
    domain: str = "irc.localhost",
    name: str = "xmpp-gateway",
    tag: str = "irc",
    profile: bool = False,
    source: Path | None = None,
) -> Gateway:
    """Our gateway as its own process; `core` overrides top-level options (`archive`),
    `source` is another source tree to run it from (`--baseline`).

    `profile` runs it under cProfile, whose statistics are written when it stops (to
    `<tmp>/<domain>.prof`, printed by `print_profile`).
    """
    # Flood control opened up: the default paces for real networks (see the docstring).
    unpaced = {"flood_rate": 1_000_000, "flood_burst": 1_000_000}
    db = tmp / f"{domain}.db"
    config = {**gateway_config(server, irc, db, secret, domain, **unpaced), **(core or {})}
    path = tmp / f"{domain}.yaml"
    path.write_text(yaml.safe_dump(config))
    python = sys.executable
    async with run_process(
        python,
        "-m",
        "component",
        "db",
        "upgrade",
        "-c",
        str(path),
        log=tmp / "upgrade.log",
        source=source,
    ) as upgrade:
        await upgrade.wait()
    mark = server.log_mark()
    profiler = ["-m", "cProfile", "-o", str(tmp / f"{domain}.prof")] if profile else []
    argv = [python, *profiler, "-m", "component", "run", "-c", str(path)]
    process = await stack.enter_async_context(
        run_process(*argv, log=tmp / f"{domain}.log", source=source)
    )
    await wait_connected(server, domain, mark)
    archived = bool((core or {}).get("archive", {}).get("enabled", True))
    return Gateway(name, domain, tag, process, needs_registration=True, shape=our_shape(archived))


def print_profile(path: Path, top: int = 30) -> None:
    """The functions that took the most time in a profiled gateway, themselves and below."""
    import pstats

    if not path.exists():
        print(f"no profile at {path}")
        return
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


async def start_biboumi(
    stack: contextlib.AsyncExitStack, tmp: Path, server: Prosody, secret: str
) -> list[Gateway]:
    """biboumi, once: its users with history on (its default), and with it off.

    For both, each user opens `throttle_limit` on the IRC server (biboumi's ad-hoc
    `configure` on `127.0.0.1@biboumi.localhost`), as ours has its flood control
    opened: by default biboumi sends 10 lines at once, then one a second.
    """
    conf = tmp / "biboumi.cfg"
    conf.write_text(
        f"hostname=biboumi.localhost\npassword={secret}\nxmpp_server_ip=127.0.0.1\n"
        f"port={server.component_port}\ndb_name={tmp / 'biboumi.sqlite'}\nlog_level=2\n"
        "identd_port=0\nrealname_customization=false\n"
    )
    mark = server.log_mark()
    domain = "biboumi.localhost"
    process = await stack.enter_async_context(
        run_process("biboumi", str(conf), log=tmp / "biboumi.log")
    )
    await wait_connected(server, domain, mark)

    async def unthrottled(user: RoomUser) -> None:
        await user.configure(f"127.0.0.1@{domain}", {"throttle_limit": "-1"})

    async def no_history(user: RoomUser) -> None:
        await user.configure(domain, {"record_history": "0"})
        await unthrottled(user)

    return [
        Gateway(
            "biboumi, history on",
            domain,
            "bon",
            process,
            setup=unthrottled,
            shape=biboumi_shape(True),
        ),
        Gateway(
            "biboumi, history off",
            domain,
            "bof",
            process,
            setup=no_history,
            shape=biboumi_shape(False),
        ),
    ]


# --- the measurements ---------------------------------------------------------------------

PACED_RATE = 50.0


async def at_pace(send: Callable[[int], None], count: int) -> list[float]:
    """Call `send(n)` for each n below `count` at PACED_RATE; the times of the calls."""
    sent: list[float] = []
    for n in range(count):
        sent.append(time.perf_counter())
        send(n)
        await asyncio.sleep(1 / PACED_RATE)
    return sent


async def paced_latency(send: Callable[[str], None], receiver: Receiver, count: int) -> str:
    """Send `count` messages at PACED_RATE; p50/p99 from each send to its arrival."""
    sent = await at_pace(lambda n: send(f"paced {n}"), count)
    await receiver.wait_count(count, "paced ")
    arrivals = receiver.received("paced ")
    latencies = sorted((arrived - sent[n]) * 1000 for n, (arrived, _) in enumerate(arrivals))
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    return f"p50 {statistics.median(latencies):.2f} ms, p99 {p99:.2f} ms"


async def servers_alone(server: Prosody, irc: IrcServer, count: int) -> dict[str, str]:
    """The same paced latency with no gateway: what the two servers cost on their own.

    A gateway's path crosses both, so their tails bound what any gateway can reach end
    to end on this machine.
    """
    sender = await IrcPeer.connect("127.0.0.1", irc.port, "floora")
    receiver = await IrcPeer.connect("127.0.0.1", irc.port, "floorb")
    irc_figure = await paced_latency(
        lambda text: sender.send(f"PRIVMSG {CHANNEL} :{text}"), receiver, count
    )
    await sender.close()
    await receiver.close()
    users = []
    for name in ("floora", "floorb"):
        jid = await server.register(name, PASSWORD)
        user = RoomUser(f"{jid}/bench", "", name)
        await user.login(server)
        user.start_counting()
        users.append(user)
    to = users[1].jid.partition("/")[0]
    xmpp_figure = await paced_latency(
        lambda text: users[0].send_message(mto=to, mbody=text, mtype="chat"), users[1], count
    )
    for user in users:
        user.disconnect()
    return {
        f"IRC peer → {type(irc).__name__} → IRC peer": irc_figure,
        "XMPP client → Prosody → XMPP client": xmpp_figure,
    }


IN, OUT = "IRC→XMPP", "XMPP→IRC"
RATE, CPU, SYSTEM = "burst, msg/s", "CPU s per 1,000 msgs", "  of which system"
SERVER_CPU = "  Prosody's CPU s per 1,000"
ALONE_RATE, OF_ALONE = "  Prosody alone, msg/s", "  burst ÷ Prosody alone"
ALONE_CPU = "  Prosody alone, CPU s / 1,000"


async def open_alone(server: Prosody) -> ProsodyAlone:
    """A component writing room messages straight to a client of its own (`prosody_alone`)."""
    jid = await server.register("alone", PASSWORD)
    client = RoomUser(f"{jid}/alone", "", "alone")
    await client.login(server)
    client.start_counting()
    alone = ProsodyAlone(server, client)
    await alone.connect()
    return alone


async def prepare(gateway: Gateway, server: Prosody, irc: IrcServer) -> None:
    """RSS idle, then the IRC peer and the XMPP user of the gateway's channel."""
    gateway.results["RSS idle"] = f"{gateway.rss_kib() / 1024:.1f} MiB"
    gateway.peer = await IrcPeer.connect(
        "127.0.0.1", irc.port, f"peer{gateway.tag}", gateway.channel
    )
    gateway.user = await gateway.new_user(server, "bench")


def sample(gateway: Gateway, row: str, value: float) -> None:
    gateway.samples.setdefault(row, []).append(value)


CpuMark = tuple[tuple[float, float], float]
"""The gateway's user and system CPU seconds, and Prosody's CPU seconds, at one moment."""


def cpu_mark(gateway: Gateway, server: Prosody) -> CpuMark:
    return gateway.cpu_times(), prosody_seconds(server)


async def sample_cpu(
    gateway: Gateway, server: Prosody, path: str, before: CpuMark, messages: int
) -> None:
    """The CPU seconds per 1,000 messages since `before`, and the system time's share
    of them (system calls: socket writes and reads, the database's file); and those of
    Prosody, which is what bounds a burst on two cores, so that what a gateway's
    stanzas cost it shows."""
    user, system = await gateway.settled_cpu()
    gateway_before, server_before = before
    used, in_kernel = user + system - sum(gateway_before), system - gateway_before[1]
    sample(gateway, f"{path} {CPU}", used / messages * 1000)
    sample(gateway, f"{path} {SYSTEM}", in_kernel / messages * 1000)
    server_used = prosody_seconds(server) - server_before
    sample(gateway, f"{path} {SERVER_CPU}", server_used / messages * 1000)


PACED = f"at {PACED_RATE:.0f} msg/s"


async def paced(gateway: Gateway, server: Prosody, count: int, round_: int) -> None:
    """One round of `count` messages each way at PACED_RATE: the gateway's CPU seconds
    per 1,000, the reflections of the user's messages included, as in `bursts`."""
    peer, user = gateway.peer, gateway.user
    assert peer is not None and user is not None
    tag = f"pirc{round_} "
    before = cpu_mark(gateway, server)
    await at_pace(lambda n: peer.send(f"PRIVMSG {gateway.channel} :{tag}{n}"), count)
    await user.wait_count(count, tag)
    await sample_cpu(gateway, server, f"{IN} {PACED}", before, count)

    tag = f"pxmpp{round_} "
    peer.privmsgs.clear()
    before = cpu_mark(gateway, server)
    await at_pace(
        lambda n: user.send_message(mto=gateway.room, mbody=f"{tag}{n}", mtype="groupchat"),
        count,
    )
    await peer.wait(lambda: len(peer.privmsgs) >= count, XMPP_TO_IRC_WINDOW)
    await user.wait_count(count, tag, timeout=10)
    await sample_cpu(gateway, server, f"{OUT} {PACED}", before, count)
    user.messages.clear()


async def bursts(
    gateway: Gateway, server: Prosody, alone: ProsodyAlone, burst: int, round_: int
) -> None:
    """One round: `burst` messages each way, their rate and the gateway's CPU time.

    The CPU time counts until the gateway is idle again, the echoes of the XMPP → IRC
    burst to the sender included (both gateways reflect room messages). After the IRC
    → XMPP burst, Prosody alone routes as many of the gateway's stanzas: the ceiling
    that burst had on this machine (`prosody_alone`), and the burst's share of it.
    """
    peer, user = gateway.peer, gateway.user
    assert peer is not None and user is not None
    tag = f"irc{round_} "
    before = cpu_mark(gateway, server)
    started = time.perf_counter()
    for n in range(burst):
        peer.send(f"PRIVMSG {gateway.channel} :{tag}{n}")
    await user.wait_count(burst, tag)
    got = user.received(tag)
    sample(gateway, f"{IN} {RATE}", burst / (got[-1][0] - started))
    await sample_cpu(gateway, server, IN, before, burst)
    if [body for _, body in got] != [f"{tag}{n}" for n in range(burst)]:
        gateway.results[f"{IN} order"] = f"out of order in round {round_}"
    if gateway.shape is not None:
        rate, cpu = await alone.route(gateway.shape, burst, f"alone{round_}{gateway.tag}")
        sample(gateway, f"{IN} {ALONE_RATE}", rate)
        sample(gateway, f"{IN} {ALONE_CPU}", cpu)
        sample(gateway, f"{IN} {OF_ALONE}", gateway.samples[f"{IN} {RATE}"][-1] / rate)

    tag = f"xmpp{round_} "
    peer.privmsgs.clear()
    before = cpu_mark(gateway, server)
    started = time.perf_counter()
    for n in range(burst):
        user.send_message(mto=gateway.room, mbody=f"{tag}{n}", mtype="groupchat")
    with contextlib.suppress(TimeoutError):  # a gateway that paces its sends ends early
        await peer.wait(lambda: len(peer.privmsgs) >= burst, XMPP_TO_IRC_WINDOW)
    count = len(peer.privmsgs)
    elapsed = (peer.privmsgs[-1][0] if count else time.perf_counter()) - started
    sample(gateway, f"{OUT} {RATE}", count / elapsed)
    with contextlib.suppress(TimeoutError):  # the reflections are part of the work
        await user.wait_count(burst, tag, timeout=10)
    await sample_cpu(gateway, server, OUT, before, burst)
    if [body for _, body in peer.privmsgs] != [f"{tag}{n}" for n in range(count)]:
        gateway.results[f"{OUT} order"] = f"out of order in round {round_}"
    if count < burst:
        gateway.results[f"{OUT} complete"] = f"only {count} in {XMPP_TO_IRC_WINDOW} s"
    user.messages.clear()


async def latency_and_memory(
    gateway: Gateway, server: Prosody, paced: int, user_counts: list[int]
) -> None:
    """Paced latency IRC → XMPP, then RSS as more users join the channel."""
    peer, user = gateway.peer, gateway.user
    assert peer is not None and user is not None
    results = gateway.results
    results["latency at 50 msg/s"] = await paced_latency(
        lambda text: peer.send(f"PRIVMSG {gateway.channel} :{text}"), user, paced
    )
    users = [user]
    rss = {1: gateway.rss_kib()}
    for target in user_counts:
        while len(users) < target:
            users.append(await gateway.new_user(server, f"b{len(users)}"))
        rss[target] = gateway.rss_kib()
        results[f"RSS with {target} joined users"] = f"{rss[target] / 1024:.1f} MiB"
    if len(rss) > 1:
        most = max(rss)
        per_user = (rss[most] - rss[1]) / (most - 1) if most > 1 else 0
        results["RSS per extra joined user"] = f"{per_user:.0f} KiB"
    for member in users:
        member.disconnect()
    await peer.close()


async def many_users(
    gateway: Gateway, server: Prosody, irc: IrcServer, users: int, channels: int, each: int
) -> None:
    """`users` users, each in `each` of `channels` channels (user n in channels n, n+1, …):
    RSS once all have joined, then fan-out: an IRC peer in every channel sends
    MANY_MESSAGES lines, and the rate is deliveries (lines times members) per second until
    every user has all of theirs."""
    row = f"{users:,} users in {each} channel{'s' if each > 1 else ''} each"
    names = [f"#m{channels}x{each}-{gateway.tag}-{c}" for c in range(channels)]
    peers = [
        await IrcPeer.connect("127.0.0.1", irc.port, f"p{c}{each}{gateway.tag}", name)
        for c, name in enumerate(names)
    ]
    before, started = gateway.rss_kib(), time.perf_counter()

    def rooms(n: int) -> list[str]:
        return [gateway.room_of(names[(n + k) % channels]) for k in range(each)]

    crowd = await gateway.crowd(server, f"m{each}x", users, rooms)
    joined = time.perf_counter() - started
    rss = gateway.rss_kib()
    results = gateway.results
    results[f"{row}: joined in"] = f"{joined:.0f} s"
    results[f"{row}: RSS"] = f"{rss / 1024:.1f} MiB (+{(rss - before) / users:.0f} KiB/user)"
    started = time.perf_counter()
    for n in range(MANY_MESSAGES):
        for peer, name in zip(peers, names, strict=True):
            peer.send(f"PRIVMSG {name} :many {n}")
    await asyncio.gather(
        *(user.wait_count(MANY_MESSAGES * each, "many ", timeout=300) for user in crowd)
    )
    elapsed = time.perf_counter() - started
    results[f"{row}: fan-out"] = f"{MANY_MESSAGES * each * users / elapsed:,.0f} deliveries/s"
    for user in crowd:
        user.disconnect()
    for peer in peers:
        await peer.close()


MANY_MESSAGES = 20
"""Lines each channel's IRC peer sends in `many_users`."""


def percentiles(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)]
    return f"p50 {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms, max {ordered[-1]:.1f} ms"


async def paced_until(done: Callable[[], bool], send: Callable[[int], None]) -> list[float]:
    """Call `send(n)` at PACED_RATE until `done()` (at least a second's worth); the times."""
    sent: list[float] = []
    started = time.perf_counter()
    while not done() or len(sent) < PACED_RATE:
        sent.append(time.perf_counter())
        send(len(sent) - 1)
        await asyncio.sleep(1 / PACED_RATE)
        if time.perf_counter() - started > 120:
            break
    return sent


async def latencies(sent: list[float], receiver: Receiver, prefix: str) -> str:
    """Percentiles from each send to the arrival of `prefix n`."""
    await receiver.wait_count(len(sent), prefix)
    arrived = receiver.received(prefix)
    return percentiles([(at - sent[int(body.split()[1])]) * 1000 for at, body in arrived])


async def servers_under_flood(server: Prosody, irc: IrcServer, flood: int) -> dict[str, str]:
    """The servers alone under the same load: what no gateway can go below.

    An IRC peer floods #flood and an XMPP client floods another client with `flood`
    messages each, while two IRC peers and two XMPP clients exchange at PACED_RATE.
    """
    nicks = ("sflood", "swatch", "sa", "sb")
    channels = (FLOOD_CHANNEL, FLOOD_CHANNEL, CHANNEL, CHANNEL)
    flooder, watcher, irc_a, irc_b = [
        await IrcPeer.connect("127.0.0.1", irc.port, nick, channel)
        for nick, channel in zip(nicks, channels, strict=True)
    ]
    clients = []
    for name in ("xflood", "xsink", "xa", "xb"):
        jid = await server.register(name, PASSWORD)
        client = RoomUser(f"{jid}/bench", "", name)
        await client.login(server)
        client.start_counting()
        clients.append(client)
    xflooder, sink, xmpp_a, xmpp_b = clients
    bare = [client.jid.partition("/")[0] for client in clients]
    for n in range(flood):
        flooder.send(f"PRIVMSG {FLOOD_CHANNEL} :flood {n}")
        xflooder.send_message(mto=bare[1], mbody=f"flood {n}", mtype="chat")

    def exchange(n: int) -> None:
        irc_a.send(f"PRIVMSG {CHANNEL} :pair {n}")
        xmpp_a.send_message(mto=bare[3], mbody=f"pair {n}", mtype="chat")

    def done() -> bool:
        return len(watcher.received("flood ")) >= flood and len(sink.received("flood ")) >= flood

    sent = await paced_until(done, exchange)
    figures = {
        f"IRC peer → {type(irc).__name__} → IRC peer": await latencies(sent, irc_b, "pair "),
        "XMPP client → Prosody → XMPP client": await latencies(sent, xmpp_b, "pair "),
    }
    for client in clients:
        client.disconnect()
    for peer in (flooder, watcher, irc_a, irc_b):
        await peer.close()
    return figures


async def fairness(gateway: Gateway, server: Prosody, irc: IrcServer, flood: int) -> None:
    """Another user's latency both ways while one user floods a channel of their own.

    The flooder sends `flood` groupchat messages at once (flood control opened up);
    meanwhile the other user and an IRC peer exchange messages at PACED_RATE in another
    channel until the flood is through: an IRC watcher has seen all of it and the
    flooder has all its reflections back (the reflections, on the component stream
    to the XMPP server, are what the other user's IRC→XMPP messages could wait
    behind). The bench's own event loop delay is printed too: this process runs the
    flooding clients as well, and its delay is in every figure.
    """
    tag = gateway.tag
    flood_channel, channel = f"{FLOOD_CHANNEL}-{tag}", f"#fair-{tag}"
    watcher = await IrcPeer.connect("127.0.0.1", irc.port, f"watch{tag}", flood_channel)
    peer = await IrcPeer.connect("127.0.0.1", irc.port, f"fair{tag}", channel)
    flooder = await gateway.new_user(server, "flood", gateway.room_of(flood_channel))
    other = await gateway.new_user(server, "other", gateway.room_of(channel))
    users = [flooder, other]
    await peer.wait(lambda: f"other{tag}" in peer.joined)
    delays: list[float] = []
    measuring = asyncio.create_task(loop_delay(delays))
    started = time.perf_counter()
    for n in range(flood):
        flooder.send_message(mto=flooder.room, mbody=f"flood {n}", mtype="groupchat")

    def exchange(n: int) -> None:
        other.send_message(mto=other.room, mbody=f"out {n}", mtype="groupchat")
        peer.send(f"PRIVMSG {channel} :in {n}")

    def through() -> bool:
        return len(watcher.received("flood ")) >= flood and len(flooder.received("flood ")) >= flood

    sent = await paced_until(through, exchange)
    measuring.cancel()
    seen, back = watcher.received("flood "), flooder.received("flood ")
    on_irc = seen[-1][0] - started if seen else float("nan")
    reflected = back[-1][0] - started if back else float("nan")
    results = gateway.results
    results[f"flood of {flood}: on IRC, reflected"] = (
        f"{len(seen)} in {on_irc:.2f} s, {reflected:.2f} s"
    )
    results["other user XMPP→IRC meanwhile"] = await latencies(sent, peer, "out ")
    results["other user IRC→XMPP meanwhile"] = await latencies(sent, other, "in ")
    results["the bench's own loop delay"] = percentiles(delays)
    for member in users:
        member.disconnect()
    await peer.close()
    await watcher.close()


async def loop_delay(delays: list[float], every: float = 0.001) -> None:
    """How late this process's event loop wakes up from a short sleep, in ms, until cancelled."""
    while True:
        before = time.perf_counter()
        await asyncio.sleep(every)
        delays.append((time.perf_counter() - before - every) * 1000)


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def spread(values: list[float], unit: str = "") -> str:
    """The median of the rounds, and their range."""
    digits = 3 if max(values) < 10 else 0
    low, mid, high = (
        f"{v:,.{digits}f}" for v in (min(values), statistics.median(values), max(values))
    )
    return f"{mid}{unit} ({low} to {high})" if len(values) > 1 else f"{mid}{unit}"


def print_table(gateways: list[Gateway]) -> None:
    """Per row each gateway's figure, then ours with the archive on ÷ each other.

    Ratios are taken round by round (the machine's load changes less within a round)
    and shown as median (range). Rates: above 1 we are faster; CPU: below 1 we use less.
    """
    names = {g.name: g for g in gateways}
    ours = names.get("ours, archive on")
    versus = [g for g in gateways if g is not ours] if ours else []
    header = [g.name for g in gateways] + [f"on ÷ {g.name.removeprefix('ours, ')}" for g in versus]
    width = max(
        [28, *(len(name) + 2 for name in header)]
        + [len(figure) + 2 for g in gateways for figure in g.results.values()]
    )
    print(f"{'':40}" + "".join(f"{name:>{width}}" for name in header))
    rows = list(dict.fromkeys(row for g in gateways for row in g.samples))
    for row in rows:
        cells = [spread(g.samples[row]) if row in g.samples else "-" for g in gateways]
        for other in versus:
            assert ours is not None
            pairs = zip(ours.samples.get(row, []), other.samples.get(row, []), strict=False)
            ratios = [a / b for a, b in pairs if b]
            cells.append(spread(ratios, "x") if ratios else "-")
        print(f"{row:40}" + "".join(f"{cell:>{width}}" for cell in cells))
    for row in dict.fromkeys(row for g in gateways for row in g.results):
        cells = [g.results.get(row, "-") for g in gateways]
        print(f"{row:40}" + "".join(f"{cell:>{width}}" for cell in cells))
    for on in gateways:  # each variant's own on ÷ off (`--windows`, `--baseline`)
        off = names.get(on.name.replace("archive on", "archive off"))
        if off is None or off is on:  # an archive-off gateway, or biboumi
            continue
        print(f"\n{on.name} ÷ {off.name}, round by round:")
        for row in rows:
            pairs = zip(on.samples.get(row, []), off.samples.get(row, []), strict=False)
            ratios = [a / b for a, b in pairs if b]
            if ratios:
                print(f"  {row:38}{spread(ratios, 'x'):>{width}}")


async def prosody_alone(alone: ProsodyAlone, count: int, rounds: int) -> None:
    """`--alone`: Prosody's ceiling for each gateway's room messages, in turns."""
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in SHAPES}
    for round_ in range(rounds):
        for n, (name, shape) in enumerate(SHAPES.items()):
            figures[name].append(await alone.route(shape, count, f"alone{round_}s{n}"))
    print(f"Prosody alone, {count} room messages of each gateway's, {rounds} rounds:")
    for name, values in figures.items():
        rates, cpus = [rate for rate, _ in values], [cpu for _, cpu in values]
        print(f"  {name:22} {spread(rates, ' msg/s'):>30}   its CPU s per 1,000 {spread(cpus)}")


async def main(args: argparse.Namespace) -> None:
    if args.alone:
        async with Prosody(components={ALONE_DOMAIN: ALONE_SECRET}) as server:
            await prosody_alone(await open_alone(server), args.burst, args.rounds)
        return
    tmp = Path(tempfile.mkdtemp(prefix="xgw-bench-"))
    os.chmod(tmp, 0o755)
    ours: dict[str, tuple[str, bool, int | None, Path | None]] = {
        "irc.localhost": ("arc", True, None, None),
        "irc2.localhost": ("noa", False, None, None),
    }
    if args.windows or args.baseline:  # side by side under the same load
        variants: list[tuple[int | None, Path | None]] = [(w, None) for w in args.windows or [None]]
        if args.baseline:
            variants.append((None, args.baseline))
        ours = {
            f"irc-{tag}{n}.localhost": (f"{tag}{n}", archive, window, source)
            for tag, archive in (("a", True), ("n", False))
            for n, (window, source) in enumerate(variants)
        }
    secrets = {domain: f"s-{domain}" for domain in [*ours, "biboumi.localhost"]}
    secrets[ALONE_DOMAIN] = ALONE_SECRET
    which = {args.only} if args.only else {"ours", "biboumi"}
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(Prosody(components=secrets))
        alone = await open_alone(server)
        # biboumi reaches IRC servers on the standard ports only (6697, 6670, then 6667).
        port = 6667 if port_is_free(6667) else free_port()
        ircd = InspIrcd(port=port) if args.ircd == "inspircd" else None
        irc: IrcServer = await stack.enter_async_context(
            ircd or NgIrcd(port=port, flood_throttling=False)
        )
        gateways = []
        if "ours" in which:
            for domain, (tag, archive, window, source) in ours.items():
                name = f"ours, archive {'on' if archive else 'off'}"
                core: dict[str, Any] = {"archive": {"enabled": archive}}
                if window is not None:
                    name += f", write_window {window}"
                    core["write_window"] = window
                if source is not None:
                    name += f", from {source}"
                gateways.append(
                    await start_ours(
                        stack,
                        tmp,
                        server,
                        irc,
                        secrets[domain],
                        core,
                        domain=domain,
                        name=name,
                        tag=tag,
                        profile=args.profile,
                        source=source,
                    )
                )
        if "biboumi" in which and shutil.which("biboumi") and port == 6667:
            gateways += await start_biboumi(stack, tmp, server, secrets["biboumi.localhost"])
        elif "biboumi" in which:
            print("biboumi skipped: not installed (apt-get install biboumi), or port 6667 is taken")
        floor = await servers_alone(server, irc, args.paced)
        flooded = await servers_under_flood(server, irc, args.flood) if args.flood else {}
        if not args.fairness:
            for gateway in gateways:
                await prepare(gateway, server, irc)
            for round_ in range(args.rounds):  # interleaved: each round meets the same load
                for gateway in gateways:
                    await bursts(gateway, server, alone, args.burst, round_)
                    await paced(gateway, server, args.paced, round_)
        for gateway in gateways:
            if not args.fairness:
                await latency_and_memory(gateway, server, args.paced, args.users)
            if (
                args.many and not args.fairness
            ):  # 10 channels of a tenth of the users each; a tenth in all ten
                await many_users(gateway, server, irc, args.many, 10, 1)
                await many_users(gateway, server, irc, args.many // 10, 10, 10)
            if args.flood:
                await fairness(gateway, server, irc, args.flood)
    print(
        f"{args.burst}-message bursts, {args.rounds} rounds, {args.paced} paced messages,"
        f" {'InspIRCd (IRCv3)' if args.ircd == 'inspircd' else 'ngIRCd throttling off'},"
        " biboumi's throttle_limit and our flood control opened\n"
    )
    print(f"The servers alone, {args.paced} messages at {PACED_RATE:.0f} msg/s:")
    for path, figure in floor.items():
        print(f"  {path:36} {figure}")
    if flooded:
        print(f"The servers alone, the same while one client floods {args.flood} messages:")
        for path, figure in flooded.items():
            print(f"  {path:36} {figure}")
    print()
    print_table(gateways)
    if args.profile:
        for domain in ours:
            print(f"\n--- profile of {domain} ---")
            print_profile(tmp / f"{domain}.prof")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paced", type=int, default=500)
    parser.add_argument(
        "--users", type=lambda text: [int(n) for n in text.split(",")], default=[1, 50, 200]
    )
    parser.add_argument(
        "--many", type=int, default=1000, help="users of the many-users rows (0: skip them)"
    )
    parser.add_argument("--only", choices=["ours", "biboumi"], help="run one gateway")
    parser.add_argument("--flood", type=int, default=5000, help="0: skip the fairness run")
    parser.add_argument("--fairness", action="store_true", help="only the fairness run")
    parser.add_argument(
        "--alone", action="store_true", help="only Prosody alone, with each gateway's stanzas"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile our gateways")
    parser.add_argument(
        "--ircd",
        choices=("ngircd", "inspircd"),
        default="ngircd",
        help="the IRC server: ngIRCd (plain RFC 2812) or InspIRCd (IRCv3 tags, echo-message)",
    )
    parser.add_argument(
        "--windows",
        type=lambda text: [int(n) for n in text.split(",")],
        help="run ours with each of these write_window values (e.g. 65536,0)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also run ours from this source tree, e.g. `git archive main | tar -x -C DIR`",
    )
    asyncio.run(main(parser.parse_args()))
