"""IRC bridge benchmark, side by side with biboumi when it is installed.

Starts Prosody, ngIRCd (its flood throttling off, so the servers are not what is
measured) and each gateway as its own process, then for each gateway:

* IRC → XMPP: an IRC peer sends a burst of channel messages; a slixmpp client joined
  through the gateway receives them (count, order, messages/s).
* XMPP → IRC: the client sends a burst of groupchat messages; the IRC peer counts them.
* latency: IRC → XMPP at a paced rate, p50/p99 from the peer's send to the arrival,
  next to the same figure for the servers alone (IRC peer to IRC peer through ngIRCd,
  XMPP client to XMPP client through Prosody), which no gateway can go below.
* memory: the gateway process's RSS idle, and after 1, 50 and 200 users joined.
* fairness: while one user floods a channel with 5,000 messages, another user's
  latency in another channel, both ways (p50/p99/max): one user's burst must not hold
  up the others.

Our gateway runs with flood control opened up (`flood_rate` very high) for the XMPP →
IRC burst: its default (2 lines/s) is for real networks and would measure the pacing,
not the gateway. biboumi does not pace by default.

    .venv/bin/python bench/irc_vs_biboumi.py [--burst 2000] [--users 1,50,200] [--flood 5000]
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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from bridges.irc.devstack import NgIrcd
from component.crypto import generate_key
from component.devstack.process import free_port
from component.devstack.prosody import Prosody

CHANNEL = "#bench"
FLOOD_CHANNEL = "#flood"
PASSWORD = "pw"
XMPP_TO_IRC_WINDOW = 30


# --- an IRC peer speaking the protocol directly -----------------------------------------


class IrcPeer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.privmsgs: list[tuple[float, str]] = []
        self.joined: set[str] = set()
        self.changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, host: str, port: int, nick: str, channel: str = CHANNEL) -> IrcPeer:
        reader, writer = await asyncio.open_connection(host, port)
        peer = cls(reader, writer)
        peer.send(f"NICK {nick}", f"USER {nick} 0 * :{nick}", f"JOIN {channel}")
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
            elif rest.startswith("PRIVMSG"):
                self.privmsgs.append((time.perf_counter(), rest.partition(" :")[2]))
            elif rest.startswith("JOIN"):
                self.joined.add(prefix[1:].partition("!")[0])
            self.changed.set()

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

    async def login(self, server: Prosody) -> None:
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

    async def join(self, server: Prosody, register_with: str | None = None) -> None:
        await self.login(server)
        if register_with:  # XEP-0077 with the classic fields, as an old client would
            self._write(
                f"<iq type='set' id='reg' to='{register_with}'>"
                f"<query xmlns='jabber:iq:register'><nick>{self.nick}</nick></query></iq>"
            )
            await self._read_until(b"id='reg'", b'id="reg"')
        self._write(
            f"<presence to='{self.room}/{self.nick}'><x xmlns='http://jabber.org/protocol/muc'/>"
            "</presence>"
        )
        await self._read_until(b"code='110'", b'code="110"')
        self.start_counting()

    def _write(self, text: str) -> None:
        self.writer.write(text.encode())

    async def _read_until(self, *markers: bytes) -> None:
        try:
            await asyncio.wait_for(self._fill_until(markers), 60)
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
        self._write(
            f"<message to='{mto}' type='{mtype}'><body>{html.escape(mbody)}</body></message>"
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
    name: str
    domain: str
    room: str
    process: asyncio.subprocess.Process | None = None
    needs_registration: bool = False
    results: dict[str, str] = field(default_factory=dict)

    def rss_kib(self) -> int:
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(
            next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))
        )


@contextlib.asynccontextmanager
async def run_process(*argv: str, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=out)
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 10)
            if process.returncode is None:
                process.kill()


async def wait_connected(server: Prosody, domain: str, mark: int) -> None:
    await server.wait_component_connected(domain, timeout=30, since=mark)


def gateway_config(
    server: Prosody, irc: NgIrcd, db_path: Path, secret: str, **irc_options: Any
) -> dict[str, Any]:
    """Our gateway's config with only the IRC bridge, on `server` and `irc`."""
    bridge = {"jid": "irc.localhost", "secret": secret, "port": irc.port, "tls": False}
    return {
        "server": {"host": server.host, "port": server.component_port},
        "database_url": f"sqlite+aiosqlite:///{db_path}",
        "secret_key": generate_key(),
        "allowed_domains": [server.domain],
        "log_level": "WARNING",
        "bridges": {"irc": {**bridge, "allowed_servers": ["127.0.0.1"], **irc_options}},
    }


async def start_ours(
    stack: contextlib.AsyncExitStack,
    tmp: Path,
    server: Prosody,
    irc: NgIrcd,
    secret: str,
    core: dict[str, Any] | None = None,
) -> Gateway:
    """Our gateway as its own process; `core` overrides top-level options (`archive`)."""
    # Flood control opened up: the default paces for real networks (see the docstring).
    unpaced = {"flood_rate": 1_000_000, "flood_burst": 1_000_000}
    config = {**gateway_config(server, irc, tmp / "ours.db", secret, **unpaced), **(core or {})}
    path = tmp / "ours.yaml"
    path.write_text(yaml.safe_dump(config))
    python = sys.executable
    for args in (["db", "upgrade"],):
        upgrade = await asyncio.create_subprocess_exec(
            python, "-m", "component", *args, "-c", str(path)
        )
        await upgrade.wait()
    mark = server.log_mark()
    process = await stack.enter_async_context(
        run_process(python, "-m", "component", "run", "-c", str(path), log=tmp / "ours.log")
    )
    await wait_connected(server, "irc.localhost", mark)
    room = f"{CHANNEL}%127.0.0.1@irc.localhost"
    return Gateway("xmpp-gateway", "irc.localhost", room, process, needs_registration=True)


async def start_biboumi(
    stack: contextlib.AsyncExitStack, tmp: Path, server: Prosody, secret: str
) -> Gateway:
    conf = tmp / "biboumi.cfg"
    conf.write_text(
        f"hostname=biboumi.localhost\npassword={secret}\nxmpp_server_ip=127.0.0.1\n"
        f"port={server.component_port}\ndb_name={tmp / 'biboumi.sqlite'}\nlog_level=2\n"
        "identd_port=0\nrealname_customization=false\n"
    )
    mark = server.log_mark()
    process = await stack.enter_async_context(
        run_process("biboumi", str(conf), log=tmp / "biboumi.log")
    )
    await wait_connected(server, "biboumi.localhost", mark)
    return Gateway(
        "biboumi", "biboumi.localhost", f"{CHANNEL}%127.0.0.1@biboumi.localhost", process
    )


# --- the measurements ---------------------------------------------------------------------

PACED_RATE = 50.0


async def paced_latency(send: Callable[[str], None], receiver: Receiver, count: int) -> str:
    """Send `count` messages at PACED_RATE; p50/p99 from each send to its arrival."""
    sent: list[float] = []
    for n in range(count):
        sent.append(time.perf_counter())
        send(f"paced {n}")
        await asyncio.sleep(1 / PACED_RATE)
    await receiver.wait_count(count, "paced ")
    arrivals = receiver.received("paced ")
    latencies = sorted((arrived - sent[n]) * 1000 for n, (arrived, _) in enumerate(arrivals))
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    return f"p50 {statistics.median(latencies):.2f} ms, p99 {p99:.2f} ms"


async def servers_alone(server: Prosody, irc: NgIrcd, count: int) -> dict[str, str]:
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
        "IRC peer → ngIRCd → IRC peer": irc_figure,
        "XMPP client → Prosody → XMPP client": xmpp_figure,
    }


async def measure(
    gateway: Gateway, server: Prosody, irc: NgIrcd, burst: int, paced: int, user_counts: list[int]
) -> None:
    results = gateway.results
    results["RSS idle"] = f"{gateway.rss_kib() / 1024:.1f} MiB"
    peer = await IrcPeer.connect("127.0.0.1", irc.port, f"peer{gateway.domain[:3]}")
    jid = await server.register(f"bench-{gateway.domain[:3]}", PASSWORD)
    user = RoomUser(f"{jid}/bench", gateway.room, f"{gateway.domain[:3]}user")
    await user.join(server, gateway.domain if gateway.needs_registration else None)

    started = time.perf_counter()
    for n in range(burst):
        peer.send(f"PRIVMSG {CHANNEL} :irc {n}")
    await user.wait_count(burst, "irc ")
    got = user.received("irc ")
    elapsed = got[-1][0] - started
    in_order = [body for _, body in got] == [f"irc {n}" for n in range(burst)]
    results["IRC→XMPP burst"] = f"{burst / elapsed:,.0f} msg/s (in order: {in_order})"

    started = time.perf_counter()
    for n in range(burst):
        user.send_message(mto=gateway.room, mbody=f"xmpp {n}", mtype="groupchat")
    with contextlib.suppress(TimeoutError):  # a gateway that paces its sends ends early
        await peer.wait(lambda: len(peer.privmsgs) >= burst, XMPP_TO_IRC_WINDOW)
    count = len(peer.privmsgs)
    elapsed = (peer.privmsgs[-1][0] if count else time.perf_counter()) - started
    in_order = [body for _, body in peer.privmsgs] == [f"xmpp {n}" for n in range(count)]
    complete = "" if count == burst else f", only {count} in {XMPP_TO_IRC_WINDOW} s"
    results["XMPP→IRC burst"] = f"{count / elapsed:,.0f} msg/s (in order: {in_order}{complete})"

    with contextlib.suppress(TimeoutError):  # let the reflections of that burst drain
        await user.wait_count(burst, "xmpp ", timeout=10)
    user.messages.clear()
    results["latency at 50 msg/s"] = await paced_latency(
        lambda text: peer.send(f"PRIVMSG {CHANNEL} :{text}"), user, paced
    )

    users = [user]
    rss = {1: gateway.rss_kib()}
    for target in user_counts:
        while len(users) < target:
            n = len(users)
            extra_jid = await server.register(f"b{gateway.domain[:3]}{n}", PASSWORD)
            extra = RoomUser(f"{extra_jid}/bench", gateway.room, f"{gateway.domain[:3]}{n}")
            await extra.join(server, gateway.domain if gateway.needs_registration else None)
            users.append(extra)
        rss[target] = gateway.rss_kib()
        results[f"RSS with {target} joined users"] = f"{rss[target] / 1024:.1f} MiB"
    if len(rss) > 1:
        most = max(rss)
        per_user = (rss[most] - rss[1]) / (most - 1) if most > 1 else 0
        results["RSS per extra joined user"] = f"{per_user:.0f} KiB"
    for member in users:
        member.disconnect()
    await peer.close()


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


async def servers_under_flood(server: Prosody, irc: NgIrcd, flood: int) -> dict[str, str]:
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
        "IRC peer → ngIRCd → IRC peer": await latencies(sent, irc_b, "pair "),
        "XMPP client → Prosody → XMPP client": await latencies(sent, xmpp_b, "pair "),
    }
    for client in clients:
        client.disconnect()
    for peer in (flooder, watcher, irc_a, irc_b):
        await peer.close()
    return figures


async def fairness(gateway: Gateway, server: Prosody, irc: NgIrcd, flood: int) -> None:
    """Another user's latency both ways while one user floods a channel of their own.

    The flooder sends `flood` groupchat messages at once (flood control opened up);
    meanwhile the other user and an IRC peer exchange messages at PACED_RATE in #bench
    until an IRC watcher has seen the whole flood.
    """
    tag = gateway.domain[:3]
    flood_room = gateway.room.replace(CHANNEL, FLOOD_CHANNEL, 1)
    watcher = await IrcPeer.connect("127.0.0.1", irc.port, f"watch{tag}", FLOOD_CHANNEL)
    peer = await IrcPeer.connect("127.0.0.1", irc.port, f"fair{tag}")
    users = []
    for name, room in (("flooder", flood_room), ("other", gateway.room)):
        jid = await server.register(f"{name}-{tag}", PASSWORD)
        user = RoomUser(f"{jid}/bench", room, f"{name}{tag}")
        await user.join(server, gateway.domain if gateway.needs_registration else None)
        users.append(user)
    flooder, other = users
    await peer.wait(lambda: f"other{tag}" in peer.joined)
    started = time.perf_counter()
    for n in range(flood):
        flooder.send_message(mto=flood_room, mbody=f"flood {n}", mtype="groupchat")

    def exchange(n: int) -> None:
        other.send_message(mto=gateway.room, mbody=f"out {n}", mtype="groupchat")
        peer.send(f"PRIVMSG {CHANNEL} :in {n}")

    sent = await paced_until(lambda: len(watcher.received("flood ")) >= flood, exchange)
    flood_time = watcher.privmsgs[-1][0] - started if watcher.privmsgs else float("nan")
    seen = len(watcher.received("flood "))
    results = gateway.results
    results[f"flood of {flood} reaches IRC"] = f"{seen} in {flood_time:.2f} s"
    results["other user XMPP→IRC meanwhile"] = await latencies(sent, peer, "out ")
    results["other user IRC→XMPP meanwhile"] = await latencies(sent, other, "in ")
    for member in users:
        member.disconnect()
    await peer.close()
    await watcher.close()


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def main(burst: int, paced: int, user_counts: list[int], which: set[str], flood: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="xgw-bench-"))
    os.chmod(tmp, 0o755)
    secrets = {"irc.localhost": "s-ours", "biboumi.localhost": "s-biboumi"}
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(Prosody(components=secrets))
        # biboumi reaches IRC servers on the standard ports only (6697, 6670, then 6667).
        port = 6667 if port_is_free(6667) else free_port()
        irc = await stack.enter_async_context(NgIrcd(port=port, flood_throttling=False))
        gateways = []
        if "ours" in which:
            gateways.append(await start_ours(stack, tmp, server, irc, secrets["irc.localhost"]))
        if "biboumi" in which and shutil.which("biboumi") and port == 6667:
            gateways.append(await start_biboumi(stack, tmp, server, secrets["biboumi.localhost"]))
        elif "biboumi" in which:
            print("biboumi skipped: not installed, or port 6667 is taken")
        floor = await servers_alone(server, irc, paced)
        flooded = await servers_under_flood(server, irc, flood) if flood else {}
        for gateway in gateways:
            await measure(gateway, server, irc, burst, paced, user_counts)
            if flood:
                await fairness(gateway, server, irc, flood)
    print(f"{burst}-message bursts, {paced} paced messages, ngIRCd throttling off\n")
    print(f"The servers alone, {paced} messages at {PACED_RATE:.0f} msg/s:")
    for path, figure in floor.items():
        print(f"  {path:36} {figure}")
    if flooded:
        print(f"The servers alone, the same while one client floods {flood} messages:")
        for path, figure in flooded.items():
            print(f"  {path:36} {figure}")
    print()
    keys = list(gateways[0].results)
    print(f"{'':34}" + "".join(f"{g.name:>46}" for g in gateways))
    for key in keys:
        print(f"{key:34}" + "".join(f"{g.results.get(key, '-'):>46}" for g in gateways))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--paced", type=int, default=500)
    parser.add_argument("--users", default="1,50,200")
    parser.add_argument("--only", choices=["ours", "biboumi"], help="run one gateway")
    parser.add_argument("--flood", type=int, default=5000, help="0: skip the fairness run")
    args = parser.parse_args()
    which = {args.only} if args.only else {"ours", "biboumi"}
    users = [int(n) for n in args.users.split(",")]
    asyncio.run(main(args.burst, args.paced, users, which, args.flood))
