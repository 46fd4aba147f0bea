"""One TCP/TLS connection to an IRC server: registration, paced sending, keep-alive.

Built on asyncio streams rather than `irc.client_aio`: that client writes every line
straight to the socket (no place for a send queue), answers a lost connection with a
QUIT write, decodes in its reactor with one fixed policy and dispatches through a
thread-locked global handler table. Here one reader task hands parsed lines, in
order, to one awaited callback, and one writer task drains a FIFO through a token
bucket, so a paste is paced but never reordered. `irc` still provides tag parsing
and CTCP helpers (see `protocol`, `formatting`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bridges.fairness import TimeSlice
from bridges.irc.protocol import Line, casefold, decode, format_line, is_valid_nick
from bridges.reachability import is_public, resolved_addresses

LineHandler = Callable[[Line], Awaitable[None]]
READ_LIMIT = 64 * 1024
"""Longest line we accept (IRCv3 tags may add 8 KiB to the 512 bytes)."""
WANTED_CAPS = frozenset(
    {"multi-prefix", "server-time", "away-notify", "message-tags", "batch", "draft/chathistory"}
)
"""IRCv3 capabilities used when offered: every rank of a member in NAMES (a deopped
half-op stays a moderator), when a message was really sent (a bouncer replaying what
came while the user was away), who in a channel is away, and message tags for the
`msgid` that keeps a replayed line out of the archive twice; `batch` and
`draft/chathistory` to fetch what a channel said while we were not in it."""
ECHO_CAPS = frozenset({"echo-message", "labeled-response", "batch"})
"""Used only together: the server's echo of our line, matched by its label, is when
the user's message counts as sent (with the msgid and time everyone else sees). An echo
without a label could not be told from the same line replayed after a reconnect, and
InspIRCd 3 labels an echo only for a client that also has `batch`."""


class RegistrationFailed(ConnectionError):
    """The server refused us (bad password, banned, ...); `text` is its reason."""


@dataclass(frozen=True)
class ConnectParams:
    host: str
    port: int
    nick: str
    username: str
    realname: str
    tls: bool = False
    tls_verify: bool = True
    ca_file: str | None = None
    password: str = ""
    sasl_password: str = ""
    encoding: str = "latin-1"
    timeout: float = 20.0
    public_only: bool = False
    """Refuse servers that resolve to loopback, private or link-local addresses."""


Written = Callable[[list[Line]], Awaitable[None]]
Failed = Callable[[str], Awaitable[None]]


class Ticket:
    """One user message, as the lines it became: `written` runs once the last is out
    (given the server's echoes of all its lines, with echo-message: each line has a
    msgid of its own, and every one of them names the message).

    So that what the user's client shows as sent (a MUC reflection, a receipt) means
    "on the IRC server", not "in our queue": lines still queued when the connection
    goes are `unsent` and are sent again after a reconnect, or `failed` (with a text
    for the user) when the gateway stops or gives up first.
    """

    def __init__(self, lines: int, written: Written, failed: Failed) -> None:
        self.lines = lines
        self.left = lines
        self.written = written
        self.failed = failed
        self.echoes: list[Line] = []

    @property
    def partly_sent(self) -> bool:
        """Some but not all of its lines were written (a paste cut off)."""
        return 0 < self.left < self.lines


@dataclass(frozen=True)
class Outgoing:
    line: str
    ticket: Ticket | None = None


class TokenBucket:
    """Allows `burst` lines at once, then `rate` per second; waits, never drops."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    async def take(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            await asyncio.sleep((1 - self.tokens) / self.rate)
            self.tokens = 1.0
            self.stamp = time.monotonic()
        self.tokens -= 1


class ConnectPacing:
    """New connections to each IRC server: `burst` at once, then `rate` per second.

    Shared by every session of the bridge, so a gateway start with a thousand users
    holding persistent channels (or their reconnects after a server restart) does not
    open a thousand connections to one server in the same second, which servers meet
    with throttles and bans (InspIRCd's connflood and connectban, ngIRCd's
    MaxConnectionsIP). Waiters go in turn, never dropped.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[asyncio.Lock, TokenBucket]] = {}

    async def wait(self, server: str) -> None:
        """Return when a new connection to `server` may be opened."""
        lock, bucket = self._buckets.setdefault(
            server.lower(), (asyncio.Lock(), TokenBucket(self.rate, self.burst))
        )
        async with lock:
            await bucket.take()


class IrcConnection:
    """Connect, register (PASS, CAP/SASL, NICK, USER), then pump lines both ways."""

    def __init__(
        self,
        params: ConnectParams,
        on_line: LineHandler,
        *,
        flood_rate: float,
        flood_burst: int,
        ping_interval: float,
        ping_timeout: float,
        log: logging.Logger,
    ) -> None:
        self.params = params
        self.nick = params.nick
        self.encoding = params.encoding
        """Charset for lines that are not UTF-8; the user may change it while connected."""
        self.on_line = on_line
        self.bucket = TokenBucket(flood_rate, flood_burst)
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.log = log
        self.welcome: list[Line] = []
        """What the server said while we registered (welcome numerics, MOTD)."""
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._queue: asyncio.Queue[Outgoing] = asyncio.Queue()
        self._current: Outgoing | None = None
        """The line the writer has taken off the queue but not yet written."""
        self._inbox: asyncio.Queue[Line | None] = asyncio.Queue()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_seen = time.monotonic()
        self._quitting = False
        self._offered: dict[str, str] = {}
        self.caps: set[str] = set()
        """IRCv3 capabilities the server acknowledged."""
        self._echo_wait: dict[str, Ticket] = {}
        """Labels of the user's lines written but not yet echoed → their message."""
        self._labels = 0

    # --- life ------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the socket and register; raise ConnectionError/OSError on failure."""
        p = self.params
        context = self._tls_context() if p.tls else None
        self._reader, self._writer = await asyncio.wait_for(self._open(context), p.timeout)
        try:
            await asyncio.wait_for(self._register(), p.timeout)
        except BaseException:
            self._abort()
            raise
        self._last_seen = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._read_loop(), name=f"irc-read-{p.host}"),
            asyncio.create_task(self._dispatch_loop(), name=f"irc-dispatch-{p.host}"),
            asyncio.create_task(self._write_loop(), name=f"irc-write-{p.host}"),
            asyncio.create_task(self._keepalive(), name=f"irc-ping-{p.host}"),
        ]

    async def _open(
        self, context: ssl.SSLContext | None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Try each resolved address in turn (`localhost` may give ::1 first).

        Addresses are checked once and then connected to directly, so a DNS answer
        cannot change between the check and the connect.
        """
        p = self.params
        addresses = await resolved_addresses(p.host, p.port)
        if p.public_only:
            addresses = [a for a in addresses if is_public(a)]
            if not addresses:
                raise ConnectionRefusedError(f"{p.host} is not on a public network")
        failure: OSError | None = None
        for address in addresses:
            try:
                return await asyncio.open_connection(
                    address,
                    p.port,
                    ssl=context,
                    limit=READ_LIMIT,
                    server_hostname=p.host if context else None,
                )
            except ssl.SSLError:
                raise  # a certificate problem is not fixed by another address
            except OSError as exc:
                failure = exc
        assert failure is not None
        raise failure

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.params.ca_file)
        if not self.params.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def _register(self) -> None:
        p = self.params
        # Servers without IRCv3 answer 421 or nothing and register us all the same.
        self._write("CAP LS 302")
        if p.password:
            self._write(format_line("PASS", p.password))
        self._write(format_line("NICK", p.nick))
        self._write(format_line("USER", p.username or p.nick, "0", "*", p.realname))
        tries = 0
        turns = TimeSlice()
        while True:
            line = await self._read_line()
            await turns.turn()  # a busy channel must not hold the other users up
            if line is None:
                raise RegistrationFailed(self.close_reason or "connection closed while registering")
            match line.command:
                case "PING":
                    self._write(format_line("PONG", *line.params))
                case "001":
                    self.nick = line.param(0, self.nick)
                    self.welcome.append(line)
                    return
                case "433" | "432" | "437":
                    tries += 1
                    if tries > 5:
                        raise RegistrationFailed(f"nick {p.nick} not available: {line.param(-1)}")
                    self.nick = _alternative_nick(p.nick, tries)
                    self._write(format_line("NICK", self.nick))
                case "CAP":
                    self._cap_step(line)
                case "AUTHENTICATE":
                    token = f"{p.nick}\0{p.nick}\0{p.sasl_password}".encode()
                    self._write(format_line("AUTHENTICATE", base64.b64encode(token).decode()))
                case "903" | "904" | "905" | "906" | "907" | "908":
                    self.welcome.append(line)
                    self._write("CAP END")
                case "ERROR" | "464" | "465":
                    raise RegistrationFailed(line.param(-1) or f"the server said {line.command}")
                case _:
                    self.welcome.append(line)

    def _cap_step(self, line: Line) -> None:
        """IRCv3 capability negotiation: ask for what we use, SASL last, then CAP END."""
        sub = line.param(1).upper()
        if sub == "LS":
            for token in line.param(-1).split():
                name, _, value = token.partition("=")
                self._offered[name.lower()] = value
            if line.param(2) == "*" and len(line.params) > 3:
                return  # more LS lines follow (302 multi-line reply)
            echo = ECHO_CAPS if self._offered.keys() >= ECHO_CAPS else frozenset()
            wanted = sorted((WANTED_CAPS & self._offered.keys()) | echo)
            if self.params.sasl_password:
                if _offers_plain(self._offered):
                    wanted.append("sasl")
                else:
                    self._note("The server does not offer SASL PLAIN: not logged in with SASL.")
            if wanted:
                self._write(format_line("CAP", "REQ", " ".join(wanted)))
            else:
                self._write("CAP END")
        elif sub == "ACK":
            acked = {name.lower() for name in line.param(-1).split() if not name.startswith("-")}
            self.caps |= acked
            if "sasl" in acked:
                self._write("AUTHENTICATE PLAIN")
            else:
                self._write("CAP END")
        elif sub == "NAK":
            self._note(f"The server refused the capabilities {line.param(-1)}.")
            self._write("CAP END")

    def _note(self, text: str) -> None:
        """Something the user should read with the server's greeting."""
        self.welcome.append(Line("NOTICE", [self.nick, text], self.params.host))

    async def close(self, message: str = "") -> None:
        """QUIT after the queued lines (bounded wait), then close the socket."""
        if self.closed.is_set():
            return
        self._quitting = True
        self.send(format_line("QUIT", message) if message else "QUIT")
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._queue.join(), 2.0)
        finally:  # also when cancelled: what is left is `unsent`, the socket closes
            self._abort("closed by us")
        # The reader's and dispatcher's handlers end before the caller goes on (to
        # close the database, say) instead of some time after.
        current = asyncio.current_task()
        await asyncio.gather(*(t for t in self._tasks if t is not current), return_exceptions=True)

    def _abort(self, reason: str = "") -> None:
        if reason and not self.close_reason:
            self.close_reason = reason
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        if self._writer is not None:
            self._writer.close()
        self.closed.set()

    # --- sending ---------------------------------------------------------------------

    def send(self, line: str, ticket: Ticket | None = None) -> None:
        """Queue a line; it leaves in order, paced by the token bucket."""
        if "\r" in line or "\n" in line:
            raise ValueError("one IRC line at a time")
        self._queue.put_nowait(Outgoing(line, ticket))

    def unsent(self) -> list[Outgoing]:
        """The lines not written (once closed: what the connection took with it)."""
        pending = [] if self._current is None else [self._current]
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
            self._queue.task_done()
        self._current = None
        return pending

    def _write(self, line: str) -> None:
        assert self._writer is not None
        self._writer.write(line.encode() + b"\r\n")

    async def _write_loop(self) -> None:
        assert self._writer is not None
        turns = TimeSlice()
        try:
            while True:
                self._current = item = await self._queue.get()
                try:
                    await self.bucket.take()
                    if item.ticket is not None and self.echoes:
                        self._labels += 1
                        self._echo_wait[label := str(self._labels)] = item.ticket
                        self._write(f"@label={label} {item.line}")
                        self._current = None
                    else:
                        self._write(item.line)
                        self._current = None
                        if item.ticket is not None:
                            await self._written(item.ticket, None)
                    await self._writer.drain()
                finally:
                    self._queue.task_done()
                await turns.turn()  # an unpaced paste must not hold the other users up
        except (OSError, ConnectionError) as exc:
            self._lost(f"write failed: {exc}")

    @property
    def echoes(self) -> bool:
        """The server echoes our messages, with the label we give them."""
        return self.caps >= ECHO_CAPS

    async def _written(self, ticket: Ticket, echo: Line | None) -> None:
        ticket.left -= 1
        if echo is not None:
            ticket.echoes.append(echo)
        if ticket.left == 0:
            try:
                await ticket.written(ticket.echoes)
            except Exception:
                self.log.exception("failed to report a written message")

    async def _on_echo(self, line: Line) -> bool:
        """Take the server's echo of one of our lines; False for anything else.

        A labelled echo completes its message; echoes of lines the gateway sent for
        itself (CTCP replies, NickServ, raw commands) are dropped. Our own lines in a
        batch are a replay (chat history), not echoes.
        """
        if line.command not in ("PRIVMSG", "NOTICE") or not self.echoes or "batch" in line.tags:
            return False
        ticket = self._echo_wait.pop(line.tags.get("label") or "", None)
        if ticket is not None:
            await self._written(ticket, line)
            return True
        return casefold(line.nick) == casefold(self.nick)

    async def report_unechoed(self) -> None:
        """Once closed: lines written whose echo never came count as written. The
        server most likely has them, and sending them again could show them twice."""
        waiting, self._echo_wait = self._echo_wait, {}
        for ticket in waiting.values():
            await self._written(ticket, None)

    # --- receiving -------------------------------------------------------------------

    async def _read_line(self) -> Line | None:
        """The next parsable line; None at the end of the stream.

        A line longer than the reader's limit (64 KiB) is dropped whole: its tail, read
        on its own, would otherwise pass for a line of its own (a smuggled message).
        """
        assert self._reader is not None
        overlong = False
        while True:
            try:
                data = await self._reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                return None
            except asyncio.LimitOverrunError as exc:
                await self._reader.readexactly(exc.consumed)
                overlong = True
                continue
            except (OSError, ConnectionError) as exc:
                self.close_reason = str(exc)
                return None
            self._last_seen = time.monotonic()
            if overlong:
                self.log.info("dropped a line over 64 KiB from %s", self.params.host)
                overlong = False
                continue
            text = decode(data.rstrip(b"\r\n"), self.encoding)
            if not text:
                continue
            try:
                return Line.parse(text)
            except ValueError:
                self.log.info("unparsable line from %s: %r", self.params.host, text)

    async def _read_loop(self) -> None:
        """Read and answer PINGs at once; everything else goes to the dispatcher.

        Handling can stall (the XMPP link is down and delivery waits for it); reading
        must not, or the server would time us out for not answering its PINGs.
        """
        turns = TimeSlice()
        while True:
            line = await self._read_line()
            await turns.turn()  # a busy channel must not hold the other users up
            if line is None:
                self._inbox.put_nowait(None)
                return
            if line.command == "PING":
                self._write(format_line("PONG", *line.params))
            else:
                self._inbox.put_nowait(line)

    async def _dispatch_loop(self) -> None:
        """Hand lines to the callback one at a time, in order; EOF after the last one."""
        turns = TimeSlice()
        while (line := await self._inbox.get()) is not None:
            await turns.turn()
            if line.command == "ERROR":
                self.close_reason = line.param(-1)
            elif line.command == "NICK" and casefold(line.nick) == casefold(self.nick):
                self.nick = line.param(0, self.nick)  # for telling our echoes apart
            try:
                if not await self._on_echo(line):
                    await self.on_line(line)
            except Exception:
                self.log.exception("failed to handle %r", line)
        self._lost(self.close_reason or "connection closed by the server")

    async def _keepalive(self) -> None:
        """PING after a quiet interval; no answer within the timeout means a dead link."""
        while True:
            await asyncio.sleep(self.ping_interval / 4)
            quiet = time.monotonic() - self._last_seen
            if quiet > self.ping_interval + self.ping_timeout:
                self._lost(f"ping timeout ({quiet:.0f} s)")
                return
            if quiet > self.ping_interval:
                self._write(format_line("PING", self.params.host))

    def _lost(self, reason: str) -> None:
        if not self.closed.is_set():
            self.log.info("connection to %s lost: %s", self.params.host, reason)
            self._abort(reason)


def _offers_plain(offered: dict[str, str]) -> bool:
    """`sasl` alone (3.1) or `sasl=PLAIN,EXTERNAL` (3.2) that names PLAIN."""
    if "sasl" not in offered:
        return False
    mechanisms = offered["sasl"]
    return not mechanisms or "PLAIN" in mechanisms.upper().split(",")


def _alternative_nick(nick: str, attempt: int) -> str:
    """`nick_`, `nick__`, ... then numbered: what to try when the nick is taken."""
    candidate = nick + "_" * attempt
    return candidate if is_valid_nick(candidate, 9) else f"{nick[:6]}{attempt:03d}"
