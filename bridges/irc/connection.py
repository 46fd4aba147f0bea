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
import contextlib
import os
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bridges.base import SessionLog
from bridges.fairness import TimeSlice
from bridges.flag import Flag
from bridges.hot_value import hot_value
from bridges.irc import sasl
from bridges.irc.caps import ECHO_CAPS, MAX_OFFERED, StsPolicy, parse_offer, to_request
from bridges.irc.inbox import Inbox
from bridges.irc.protocol import Line, casefold, decode, format_line, is_valid_nick
from bridges.reachability import is_public, resolved_addresses
from bridges.timeouts import within

LineHandler = Callable[[Line], Awaitable[None]]
READ_LIMIT = 64 * 1024
"""Longest line we accept (IRCv3 tags may add 8 KiB to the 512 bytes)."""


class RegistrationFailed(ConnectionError):
    """The server refused us (bad password, banned, ...); `text` is its reason."""


class StsUpgrade(ConnectionError):
    """The server's STS policy asks for TLS on `port` (offered over plain text)."""

    def __init__(self, port: int) -> None:
        super().__init__(f"the server asks for TLS on port {port} (STS)")
        self.port = port


@dataclass(frozen=True)
class WebIrc:
    """`WEBIRC password gateway hostname ip`: the host and address the server shows for
    this user instead of the gateway's own (IRCv3 WebIRC, for trusted gateways)."""

    password: str
    gateway: str
    hostname: str
    ip: str


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
    client_cert: str = ""
    """PEM certificate and key for TLS, used for SASL EXTERNAL when the server offers it."""
    webirc: WebIrc | None = None


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


@hot_value
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

    def take_now(self) -> bool:
        """Take a token if there is one now; False: none, `take` waits for it."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    async def take(self) -> None:
        if not self.take_now():
            await asyncio.sleep((1 - self.tokens) / self.rate)
            self.tokens = 0.0  # the one that came in, taken
            self.stamp = time.monotonic()


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

    # One per user and network: slotted, its 30 attributes take 0.3 KiB instead of a
    # 1.5 KiB dict (issue #14).
    __slots__ = (
        "_challenge",
        "_current",
        "_echo_wait",
        "_inbox",
        "_labels",
        "_last_seen",
        "_mechanisms",
        "_offered",
        "_paused",
        "_queue",
        "_quitting",
        "_reader",
        "_sasl",
        "_tasks",
        "_unwritten",
        "_writer",
        "bucket",
        "caps",
        "close_reason",
        "closed",
        "encoding",
        "log",
        "nick",
        "on_line",
        "params",
        "ping_interval",
        "ping_timeout",
        "sts",
        "sts_upgrade",
        "welcome",
    )

    def __init__(
        self,
        params: ConnectParams,
        on_line: LineHandler,
        *,
        flood_rate: float,
        flood_burst: int,
        ping_interval: float,
        ping_timeout: float,
        log: SessionLog,
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
        """What the server said while we registered (welcome numerics, MOTD), until
        the network takes it."""
        self.closed = Flag()
        self.close_reason = ""
        self._queue: asyncio.Queue[Outgoing] = asyncio.Queue()
        self._current: Outgoing | None = None
        """The line the writer has taken off the queue but not yet written."""
        self._inbox = Inbox()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._unwritten: list[bytes] = []
        """Lines of this event loop turn, written together by `_flush`."""
        self._tasks: list[asyncio.Task[None]] = []
        self._last_seen = time.monotonic()
        self._paused = False
        """Reading waits for room in the inbox."""
        self._quitting = False
        self._offered: dict[str, str] = {}
        """IRCv3 capabilities the server offers (CAP LS, then CAP NEW and DEL) → values."""
        self.caps: set[str] = set()
        """IRCv3 capabilities the server acknowledged (and has not withdrawn)."""
        self.sts: StsPolicy | None = None
        """The STS policy a TLS connection was given, to be remembered for the server."""
        self.sts_upgrade: int | None = None
        """The TLS port a plain connection was told to move to by CAP NEW (cap-notify)."""
        self._mechanisms: list[str] = []
        self._sasl: sasl.Mechanism | None = None
        self._challenge = sasl.Incoming()
        self._echo_wait: dict[str, Ticket] = {}
        """Labels of the user's lines written but not yet echoed → their message."""
        self._labels = 0

    # --- life ------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the socket and register; raise ConnectionError/OSError on failure."""
        p = self.params
        context = self._tls_context() if p.tls else None
        self._reader, self._writer = await within(self._open(context), p.timeout)
        try:
            await within(self._register(), p.timeout)
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
        if self.params.client_cert:
            try:
                load_client_cert(context, self.params.client_cert)
            except ValueError as exc:
                raise RegistrationFailed(str(exc)) from None
        return context

    async def _register(self) -> None:
        p = self.params
        if p.webirc is not None:  # before anything else, as the server expects it
            w = p.webirc
            self._write(format_line("WEBIRC", w.password, w.gateway, w.hostname, w.ip))
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
                    await self._sasl_step(line.param(0))
                case "904" if self._mechanisms:
                    self._note(f"SASL {self._sasl.name if self._sasl else ''} failed, trying more.")
                    self._next_mechanism()
                case "903" | "902" | "904" | "905" | "906" | "907":
                    self.welcome.append(line)
                    self._sasl = None
                    self._write("CAP END")
                case "ERROR" | "464" | "465":
                    raise RegistrationFailed(line.param(-1) or f"the server said {line.command}")
                case _:
                    self.welcome.append(line)

    def _cap_step(self, line: Line) -> None:
        """IRCv3 capability negotiation: ask for what we use, SASL last, then CAP END."""
        sub = line.param(1).upper()
        if sub == "LS":
            self._remember_offer(line.param(-1))
            if line.param(2) == "*" and len(line.params) > 3:
                return  # more LS lines follow (302 multi-line reply)
            self._check_sts()
            wanted = to_request(self._offered, ())
            p = self.params
            if p.sasl_password or p.client_cert:
                offered = self._offered.get("sasl") if "sasl" in self._offered else None
                certificate = p.tls and bool(p.client_cert)
                self._mechanisms = (
                    sasl.mechanisms_to_try(offered, bool(p.sasl_password), certificate)
                    if offered is not None
                    else []
                )
                if self._mechanisms:
                    wanted.append("sasl")
                else:
                    self._note(
                        "The server offers none of the SASL mechanisms the gateway has "
                        "credentials for: not logged in with SASL."
                    )
            if wanted:
                self._write(format_line("CAP", "REQ", " ".join(wanted)))
            else:
                self._write("CAP END")
        elif sub == "ACK":
            acked = self._acknowledged(line)
            if "sasl" in acked and self._mechanisms:
                self._next_mechanism()
            else:
                self._write("CAP END")
        elif sub == "NAK":
            self._note(f"The server refused the capabilities {line.param(-1)}.")
            self._write("CAP END")
        else:
            self._cap_changed(line)

    def _check_sts(self) -> None:
        """IRCv3 STS at CAP LS: over plain text a policy with a port means "reconnect
        with TLS there" (nothing else is sent); over TLS it is remembered."""
        port = self._read_sts()
        if port is not None:
            raise StsUpgrade(port)

    def _read_sts(self) -> int | None:
        """The offered `sts` value: over TLS a persistence policy (`sts`, for the
        network to store), over plain text the port to move to (returned)."""
        if "sts" not in self._offered:
            return None
        policy = StsPolicy.parse(self._offered["sts"])
        if not self.params.tls:
            return policy.port
        if policy.duration is not None:
            self.sts = policy
        return None

    def _acknowledged(self, line: Line) -> set[str]:
        """Apply a CAP ACK (`-name` disables); return the names now enabled."""
        names = line.param(-1).lower().split()
        self.caps -= {name[1:] for name in names if name.startswith("-")}
        acked = {name for name in names if name and not name.startswith("-")}
        self.caps |= acked
        return acked

    def _cap_changed(self, line: Line) -> None:
        """cap-notify: CAP NEW asks for the new ones we use, CAP DEL forgets withdrawn
        ones (and a later ACK enables what was asked for)."""
        sub = line.param(1).upper()
        if sub == "NEW":
            self._remember_offer(line.param(-1))
            if "sts" in parse_offer(line.param(-1)):  # the network acts on it (`_irc_cap`)
                self.sts_upgrade = self._read_sts()
            wanted = to_request(self._offered, self.caps)
            if wanted:
                self.send(format_line("CAP", "REQ", " ".join(wanted)))
        elif sub == "DEL":
            gone = set(parse_offer(line.param(-1)))
            self.caps -= gone
            for name in gone:
                self._offered.pop(name, None)
        elif sub == "ACK":
            self._acknowledged(line)

    def _remember_offer(self, text: str) -> None:
        """Add offered capabilities, keeping the last `MAX_OFFERED`: a server whose LS
        or NEW lines never stop cannot fill the memory."""
        self._offered.update(parse_offer(text))
        if len(self._offered) > MAX_OFFERED:
            self._offered = dict(list(self._offered.items())[-MAX_OFFERED:])

    def _next_mechanism(self) -> None:
        name = self._mechanisms.pop(0)
        self._sasl = sasl.mechanism(name, self.params.nick, self.params.sasl_password)
        self._challenge = sasl.Incoming()
        self._write(f"AUTHENTICATE {name}")

    async def _sasl_step(self, piece: str) -> None:
        """One AUTHENTICATE from the server: collect the challenge, answer it in pieces;
        a broken or unverifiable exchange is aborted (`*`), which ends with 906."""
        if self._sasl is None:
            return
        try:
            challenge = self._challenge.add(piece)
            if challenge is None:
                return
            response = await self._sasl.respond(challenge)
        except sasl.SaslError as exc:
            self.log.info("SASL with %s aborted: %s", self.params.host, exc)
            self._note(f"SASL {self._sasl.name} aborted: {exc}.")
            self._mechanisms = []
            self._write("AUTHENTICATE *")
            return
        for chunk in sasl.encode_chunks(response):
            self._write(f"AUTHENTICATE {chunk}")  # base64 or `+`: never a space

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
                await within(self._queue.join(), 2.0)
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
            self._flush()
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
        """Write `line` at the end of this turn of the event loop, with the others of it:
        one system call for a burst instead of one per line, which cost more than the
        rest of the line's way through the gateway."""
        if not self._unwritten:
            asyncio.get_running_loop().call_soon(self._flush)
        self._unwritten.append(line.encode() + b"\r\n")

    def _flush(self) -> None:
        if self._unwritten and self._writer is not None and not self._writer.is_closing():
            self._writer.write(b"".join(self._unwritten))
        self._unwritten.clear()

    async def _write_loop(self) -> None:
        assert self._writer is not None
        turns, queue, transport = TimeSlice(), self._queue, self._writer.transport
        try:
            while True:
                # Neither waits while lines and tokens are at hand (a burst): asked
                # without a coroutine each, the way through costs less per line.
                self._current = item = queue.get_nowait() if queue.qsize() else await queue.get()
                try:
                    if not self.bucket.take_now():
                        await self.bucket.take()
                    if item.ticket is not None and self.echoes:
                        self._labels += 1
                        self._echo_wait[label := str(self._labels)] = item.ticket
                        line = item.line  # its own tags (a reply) join the label
                        tagged = f"@label={label};{line[1:]}" if line.startswith("@") else None
                        self._write(tagged or f"@label={label} {line}")
                        self._current = None
                    else:
                        self._write(item.line)
                        self._current = None
                        if item.ticket is not None:
                            await self._written(item.ticket, None)
                    if transport.get_write_buffer_size() or transport.is_closing():
                        await self._writer.drain()  # waits, or raises for a lost connection
                finally:
                    queue.task_done()
                if turns.due():
                    await turns.turn()  # an unpaced paste must not hold the other users up
        except (OSError, ConnectionError) as exc:
            self._lost(f"write failed: {exc}")

    def ports(self) -> tuple[int, int] | None:
        """(our local port, the server's port) of the socket, for the ident server."""
        if self._writer is None or self.closed.is_set():
            return None
        ours, theirs = (
            self._writer.get_extra_info("sockname"),
            self._writer.get_extra_info("peername"),
        )
        return (ours[1], theirs[1]) if ours and theirs else None

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
        """Lines written whose echo never came (the connection closed, or the server
        withdrew echo-message) count as written. The server most likely has them, and
        sending them again could show them twice."""
        waiting, self._echo_wait = self._echo_wait, {}
        for ticket in waiting.values():
            await self._written(ticket, None)

    # --- receiving -------------------------------------------------------------------

    async def _read_line(self) -> Line | None:
        """The next parsable line; None at the end of the stream."""
        read = await self._read_sized_line()
        return None if read is None else read[0]

    async def _read_sized_line(self) -> tuple[Line, int] | None:
        """The next parsable line and its size in bytes; None at the end of the stream.

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
                return Line.parse(text), len(data)
            except ValueError:
                self.log.info("unparsable line from %s: %r", self.params.host, text)

    async def _read_loop(self) -> None:
        """Read and answer PINGs at once; everything else goes to the dispatcher.

        Handling can stall (the XMPP link is down and delivery waits for it); reading
        goes on meanwhile, answering the server's PINGs, until the inbox is full: then
        it pauses (nothing is dropped), and a stall longer than the server's ping
        timeout on a busy connection ends in a reconnect.
        """
        turns = TimeSlice()
        while True:
            read = await self._read_sized_line()
            await turns.turn()  # a busy channel must not hold the other users up
            if read is None:
                await self._hand_over(None, 0)
                return
            line, size = read
            if line.command == "PING":
                self._write(format_line("PONG", *line.params))
            else:
                await self._hand_over(line, size)

    async def _hand_over(self, line: Line | None, size: int) -> None:
        """Queue `line` for the dispatcher, waiting while the inbox is full; the time
        spent waiting is ours, not the server being quiet (see `_keepalive`)."""
        if not self._inbox.full():
            self._inbox.put_nowait(line, size)
            return
        self._paused = True
        try:
            await self._inbox.put(line, size)
        finally:
            self._paused = False
            self._last_seen = time.monotonic()

    async def _dispatch_loop(self) -> None:
        """Hand lines to the callback one at a time, in order; EOF after the last one."""
        turns = TimeSlice()
        while (line := await self._inbox.get()) is not None:
            await turns.turn()
            if line.command == "ERROR":
                self.close_reason = line.param(-1)
            elif line.command == "NICK" and casefold(line.nick) == casefold(self.nick):
                self.nick = line.param(0, self.nick)  # for telling our echoes apart
            elif line.command == "CAP":
                self._cap_changed(line)
                if not self.echoes:  # echo-message withdrawn: no echo will come now
                    await self.report_unechoed()
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
            if self._paused:
                continue  # we stopped reading, not the server talking: nothing to check
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


def load_client_cert(context: ssl.SSLContext, pem: str) -> None:
    """Load a certificate and key given as PEM text (raise ValueError if unusable).

    `ssl` only reads them from a file, so one readable by us alone exists for the
    moment of loading.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as file:
        os.chmod(file.name, 0o600)
        file.write(pem)
        file.flush()
        try:
            context.load_cert_chain(file.name)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                f"the client certificate and key cannot be used ({exc.strerror or exc})"
            ) from None


def _alternative_nick(nick: str, attempt: int) -> str:
    """`nick_`, `nick__`, ... then numbered: what to try when the nick is taken."""
    candidate = nick + "_" * attempt
    return candidate if is_valid_nick(candidate, 9) else f"{nick[:6]}{attempt:03d}"
