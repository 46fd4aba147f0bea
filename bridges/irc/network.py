"""One user's presence on one IRC server: connection life and the user's actions.

`IrcSession` owns one `Network` per server the user touches. The Network opens its
connection lazily (or at once for persistent channels, `stay_in`) and after a drop
reconnects with backoff and rejoins the channels, telling the user in each room. What
the server sends is handled in `incoming`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine, Sequence
from contextlib import suppress
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from bridges import events
from bridges.address import Address
from bridges.base import Account, AccountStore, BridgeError, ChatReferences, SessionLog
from bridges.events import GroupFeature
from bridges.irc import rich
from bridges.irc.address import make_address
from bridges.irc.channel import Channel, ServerModes
from bridges.irc.chathistory import MAX_PAGES, NEEDED_CAPS, Anchor, Fetch, request
from bridges.irc.connection import (
    ConnectPacing,
    ConnectParams,
    IrcConnection,
    Outgoing,
    StsUpgrade,
    Ticket,
    WebIrc,
)
from bridges.irc.formatting import (
    ctcp,
    outgoing_lines,
    privmsg_budget,
    relay_prefix_bytes,
)
from bridges.irc.gaps import LastSeen, gap_text
from bridges.irc.incoming import Deliver, IncomingLines
from bridges.irc.options import IrcOptions
from bridges.irc.protocol import (
    Line,
    casefold,
    format_line,
    format_tags,
    is_channel,
    nick_from_jid,
)
from bridges.irc.settings import RECONNECT_FIELDS, NetworkSettings, load_settings
from bridges.irc.sts import StsRecord
from bridges.timeouts import within
from bridges.timestamps import parse_timestamp


class Network(IncomingLines):
    """The user's connection to `server` and the channels they are in there."""

    # One per user and network: slotted, its attributes take 0.3 KiB instead of a
    # 1.5 KiB dict (issue #14); IncomingLines slots the ones its handlers assign.
    __slots__ = (
        "_connect_lock",
        "_dialing",
        "_held",
        "_last_private_id",
        "_opened_with",
        "_reaction_texts",
        "_reconnecting",
        "_stopping",
        "_sts_port",
        "_timers",
        "_typing",
        "_watch",
        "account",
        "away",
        "conn",
        "deliver",
        "last_seen",
        "log",
        "modes",
        "options",
        "pacing",
        "references",
        "server",
        "service",
        "settings",
        "sts",
        "user_offline",
    )

    def __init__(
        self,
        server: str,
        options: IrcOptions,
        account: Account,
        deliver: Deliver,
        store: AccountStore,
        log: SessionLog,
        *,
        references: ChatReferences,
        pacing: ConnectPacing | None = None,
    ) -> None:
        self.server = server
        self.pacing = pacing or ConnectPacing(options.connect_rate, options.connect_burst)
        self.options = options
        self.account = account
        self.deliver = deliver
        self.log = log.child(server)
        self.last_seen = LastSeen(store, server, self.log)
        self.sts = StsRecord(store, server, self.log)
        self._sts_port: int | None = None
        """The TLS port a plain connection was sent to by CAP NEW: later connections of
        this network use it too (STS: stay on TLS for the session, even without a
        persistence policy to store)."""
        self.service = make_address("", server)
        self.conn: IrcConnection | None = None
        self._dialing: IrcConnection | None = None
        """The connection being registered (a server asks identd about it now)."""
        self.settings: NetworkSettings | None = None
        """The user's settings as last loaded (at connect, or when they saved new ones)."""
        self._opened_with: NetworkSettings | None = None
        """The settings the live connection registered with."""
        self.nick = ""
        self.userhost: tuple[str, str] | None = None
        self.logged_in_as: str | None = None
        self.modes = ServerModes()
        self.channels: dict[str, Channel] = {}
        self._nick_request: tuple[Address | None, str] | None = None
        self._last_private_id: dict[str, str] = {}
        self._private_sent: dict[str, datetime] = {}
        self.references = references
        """Private messages' ids as the user's clients and IRC know them."""
        self._lists: list[tuple[asyncio.Future[None], list[tuple[Address, str]]]] = []
        self._connect_lock = asyncio.Lock()
        self._reconnecting: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._in_welcome = False
        self._welcome: list[tuple[str, str]] = []
        """The greeting being collected: (command, text) for each line."""
        self._greeted = False
        """Whether the user has seen this server's greeting in this session."""
        self._server_version = ""
        self._history_batches: dict[str, tuple[Channel, list[Line]]] = {}
        self._stopping = False
        self._timers: set[asyncio.Task[None]] = set()
        self._held: list[Outgoing] = []
        """The user's lines a lost connection had not written: sent after the rejoin."""
        self.away = ""
        """AWAY text to carry on this server (set again after every reconnect)."""
        self.user_offline = False
        """Connections opened while the user is offline join persistent channels only."""
        self._typing = rich.TypingThrottle()
        self._reaction_texts = rich.TextBudget()

    # --- connection life -------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.conn is not None and not self.conn.closed.is_set()

    async def ensure_connected(self, nick_hint: str | None = None) -> IrcConnection:
        """The live connection, opened now if needed; raise BridgeError if impossible."""
        if self._reconnecting_now:
            raise BridgeError(f"reconnecting to {self.server}, try again", "remote-server-timeout")
        conn = self.conn
        if conn is not None and not conn.closed.is_set() and not self._connect_lock.locked():
            return conn  # what the lock would give at once: every line of a burst asks
        async with self._connect_lock:
            if self.conn is not None and not self.conn.closed.is_set():
                return self.conn
            if self._stopping:
                raise BridgeError("the session is stopping", "service-unavailable")
            try:
                return await self._open(nick_hint)
            except (OSError, ConnectionError, TimeoutError) as exc:
                raise BridgeError(
                    f"cannot connect to {self.server}: {exc or type(exc).__name__}",
                    "remote-server-not-found",
                ) from exc

    def _params(self, settings: NetworkSettings, nick_hint: str | None) -> ConnectParams:
        nick = settings.nick or nick_hint or self.nick or nick_from_jid(self.account.user)
        webirc = self.options.webirc.get(self.server)
        address = webirc.address_for(self.account.user) if webirc is not None else ""
        return ConnectParams(
            host=self.server,
            port=settings.port,
            nick=nick,
            username=settings.username or nick,
            realname=settings.realname or self.options.realname,
            tls=settings.tls,
            tls_verify=settings.tls_verify,
            ca_file=self.options.ca_file,
            password=settings.server_password,
            sasl_password=settings.sasl_password,
            encoding=settings.encoding,
            timeout=self.options.connect_timeout,
            public_only=self.options.checks_addresses,
            client_cert=settings.client_cert,
            webirc=None
            if webirc is None
            else WebIrc(webirc.password.get_secret_value(), webirc.gateway, address, address),
        )

    async def _open(self, nick_hint: str | None) -> IrcConnection:
        self.settings = settings = load_settings(self.options, self.account, self.server)
        self._opened_with = settings
        params = self._params(settings, nick_hint)
        sts = await self.sts.port() or self._sts_port
        if sts is not None:  # the server told us to use TLS there, and it still holds
            params = replace(params, tls=True, port=sts, tls_verify=True)
        try:
            conn = await self._dial(params)
        except StsUpgrade as upgrade:
            self.log.info("%s asks for TLS on port %s (STS)", self.server, upgrade.port)
            conn = await self._dial(replace(params, tls=True, port=upgrade.port, tls_verify=True))
        await self.sts.seen(conn.sts, conn.params.port)
        if self._stopping:  # stopped while we waited for the server's welcome
            await conn.close()
            raise ConnectionAbortedError("the session stopped while connecting")
        self.conn, self.nick, self.userhost, self.logged_in_as = conn, conn.nick, None, None
        self._in_welcome, self._welcome = True, []
        self._history_batches = {}  # batch ids are per connection
        welcome, conn.welcome = conn.welcome, []  # not kept: a MOTD per user for nothing
        for line in welcome:
            await self._on_line(line)
        if settings.nickserv_password:
            conn.send(format_line("PRIVMSG", "NickServ", f"IDENTIFY {settings.nickserv_password}"))
        if self.away:
            conn.send(format_line("AWAY", self.away))
        for command in settings.after_connect_commands:
            conn.send(command)  # paced like everything else, before the JOINs
        for name in () if self.user_offline else settings.autojoin:
            if casefold(name) not in self.channels:
                self.channels[casefold(name)] = Channel(name, make_address(name, self.server))
        # Autojoin, persistent channels waiting for this connection, rooms to rejoin.
        for ch in self.channels.values():
            if not ch.joined:
                conn.send(format_line("JOIN", ch.name, *([ch.key] if ch.key else [])))
        held, self._held = self._held, []
        for item in held:  # behind the JOINs: the server handles them first
            conn.send(item.line, item.ticket)
        self._watch = asyncio.create_task(self._watch_connection(conn))
        self._start_timer(self._keep_noting_seen(conn))
        return conn

    async def _dial(self, params: ConnectParams) -> IrcConnection:
        conn = IrcConnection(
            params,
            self._on_line,
            flood_rate=self.options.flood_rate,
            flood_burst=self.options.flood_burst,
            ping_interval=self.options.ping_interval,
            ping_timeout=self.options.ping_timeout,
            log=self.log,
        )
        tls = " with TLS" if params.tls else ""
        self.log.info("connecting to %s:%s%s as %s", self.server, params.port, tls, conn.nick)
        self._dialing = conn
        try:
            await conn.connect()
        finally:
            self._dialing = None
        return conn

    def has_ports(self, ports: tuple[int, int]) -> bool:
        """Whether our connection here has these (local, server) ports: the one in use
        or the one registering, which is when servers ask identd about it."""
        return any(c is not None and c.ports() == ports for c in (self.conn, self._dialing))

    def _autojoin(self, conn: IrcConnection, names: tuple[str, ...]) -> None:
        """JOIN the channels to join on connect that we do not have yet.

        Channels already known are joined (or being joined, with their key) by `_open`;
        joining them here too would send a second JOIN.
        """
        for name in names:
            if casefold(name) not in self.channels:
                self.channels[casefold(name)] = Channel(name, make_address(name, self.server))
                conn.send(format_line("JOIN", name))

    def apply_settings(self) -> list[str] | None:
        """Use the settings just saved at once; None when there is no live connection.

        The nick (NICK; a refusal is told from the server address), new channels to
        join (JOIN; removed ones are not parted, see README), the persistent channels
        (read when the user goes offline), the charset and the NickServ password
        (IDENTIFY) apply to this connection. Returns the labels of changed settings that
        only registration uses, which wait for the next connection.
        """
        old = self.settings
        self.settings = new = load_settings(self.options, self.account, self.server)
        conn, opened = self.conn, self._opened_with
        if old is None or opened is None or conn is None or conn.closed.is_set():
            return None
        conn.encoding = new.encoding
        renamed = bool(new.nick) and new.nick not in (old.nick, self.nick)
        if renamed:
            self._nick_request = (None, new.nick)
            conn.send(format_line("NICK", new.nick))
        if new.nickserv_password and (renamed or new.nickserv_password != old.nickserv_password):
            conn.send(format_line("PRIVMSG", "NickServ", f"IDENTIFY {new.nickserv_password}"))
        self._autojoin(conn, new.autojoin)
        return [
            label
            for name, label in RECONNECT_FIELDS.items()
            if getattr(new, name) != getattr(opened, name)
        ]

    def stay_in(self, names: Sequence[str]) -> None:
        """Join `names` now, with nobody waiting: persistent channels at session start
        or when the user goes offline.

        A server that cannot be reached is retried with the reconnect backoff; the
        RoomJoined events go to rooms nobody is in yet, so they only prime the state a
        later join from a client is answered from.
        """
        added = [Channel(name, make_address(name, self.server)) for name in names]
        added = [ch for ch in added if casefold(ch.name) not in self.channels]
        for ch in added:
            self.channels[casefold(ch.name)] = ch
        if not added or self._reconnecting_now:
            return  # the reconnect joins every channel in `channels`
        if self.connected:
            for ch in added:
                self.send("JOIN", ch.name)
        else:
            self._start_timer(self._connect_unattended())

    @property
    def _reconnecting_now(self) -> bool:
        return self._reconnecting is not None and not self._reconnecting.done()

    async def _connect_unattended(self) -> None:
        await self.pacing.wait(self.server)  # a thousand users start at once
        if self.connected:
            return  # the user joined meanwhile and connected themselves
        try:
            await self.ensure_connected()
        except BridgeError as exc:
            if self._stopping or self._reconnecting_now:
                return
            self.log.info("could not connect for the persistent channels: %s", exc.text)
            self._reconnecting = asyncio.create_task(self._reconnect(exc.text))

    def _start_timer(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` until it ends or the network stops."""
        task = asyncio.create_task(work)
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    async def _irc_cap(self, line: Line) -> None:
        """cap-notify brought an STS policy (IRCv3 STS holds at any time, not only at
        CAP LS): a TLS connection stores it, a plain one is closed and the network
        reconnects with TLS on the given port."""
        conn = self.conn
        if conn is None or line.param(1).upper() != "NEW" or "sts" not in line.param(-1).lower():
            return
        if conn.sts_upgrade is not None:
            self._sts_port, conn.sts_upgrade = conn.sts_upgrade, None
            self.log.info("%s asks for TLS on port %s (STS, CAP NEW)", self.server, self._sts_port)
            conn.close_reason = f"the server asks for TLS on port {self._sts_port} (STS)"
            self._start_timer(conn.close())  # not from its own dispatcher, which it ends
        else:
            await self.sts.seen(conn.sts, conn.params.port)

    async def _watch_connection(self, conn: IrcConnection) -> None:
        await conn.closed.wait()
        if self._stopping or conn is not self.conn:
            return
        self.conn = None
        reason = conn.close_reason or "connection lost"
        self._held += [item for item in conn.unsent() if item.ticket is not None]
        await conn.report_unechoed()
        await self._note_seen()
        await self._flush_welcome()
        rooms = [ch for ch in self.channels.values() if ch.joined]
        for ch in self.channels.values():
            # Rooms the user was in get a summary of changes after the rejoin; joins
            # still pending get their RoomJoined then, as if nothing had happened.
            ch.rejoining, ch.joined, ch.synced = ch.rejoining or ch.joined, False, False
        if not rooms:
            pending, self.channels = list(self.channels.values()), {}
            for ch in pending:
                await self.deliver(
                    events.RoomJoinFailed(
                        ch.address, "remote-server-timeout", f"{self.server}: {reason}"
                    )
                )
            await self._fail_held(f"lost the connection to {self.server} ({reason})")
            await self._service(f"Disconnected from {self.server}: {reason}")
            return
        for ch in rooms:
            await self.deliver(
                events.Message(
                    ch.address, f"Lost the connection to {self.server} ({reason}); reconnecting…"
                )
            )
        self._reconnecting = asyncio.create_task(self._reconnect(reason))

    async def _reconnect(self, reason: str) -> None:
        """Backoff (doubling, capped, jittered) until connected, then rejoin."""
        attempt = 0
        delay = self.options.reconnect_initial_delay
        nick = self.nick
        while not self._stopping:
            attempt += 1
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            await self.pacing.wait(self.server)  # everyone reconnects after a restart
            try:
                async with self._connect_lock:
                    conn = await self._open(nick)
            except (OSError, ConnectionError, TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
                self.log.info("reconnect attempt %d to %s failed: %s", attempt, self.server, reason)
                limit = self.options.reconnect_max_attempts
                if limit and attempt >= limit:
                    await self._give_up(f"could not reconnect to {self.server}: {reason}")
                    return
                delay = min(delay * 2, self.options.reconnect_max_delay)
                continue
            for ch in self.channels.values():  # `_open` has sent the JOINs
                own = ch.remove(nick)
                if conn.nick != nick and own is not None:
                    # Our nick was taken meanwhile: the rooms must learn the new one.
                    await self.deliver(events.NickChanged(ch.address, nick, conn.nick, own=True))
            return

    async def _give_up(self, reason: str) -> None:
        await self._fail_held(reason)
        for ch in list(self.channels.values()):
            await self.deliver(events.RoomLeft(ch.address, reason))
        self.channels.clear()

    async def stop(self, message: str) -> None:
        if not self._stopping and self.connected:
            await self._note_seen()
        self._stopping = True
        tasks = (self._reconnecting, self._watch, *self._timers)
        own = [t for t in tasks if t is not None and t is not asyncio.current_task()]
        for task in own:
            task.cancel()
        # Ended before the caller goes on: none of them touches the store afterwards.
        await asyncio.gather(*own, return_exceptions=True)
        conn = self.conn
        try:
            if conn is not None:
                await conn.close(message)
        finally:  # also when a bounded shutdown cuts the close short
            self.conn = None
            if conn is not None:
                self._held += [item for item in conn.unsent() if item.ticket is not None]
                await conn.report_unechoed()
            await self._fail_held(f"the gateway stopped before this was sent to {self.server}")

    async def _fail_held(self, reason: str) -> None:
        """Answer each held message with an error: its client marks it as not sent."""
        held, self._held = self._held, []
        for ticket in dict.fromkeys(item.ticket for item in held if item.ticket is not None):
            await ticket.failed(
                f"{reason}; only part of it was sent" if ticket.partly_sent else reason
            )

    def set_away(self, text: str) -> None:
        """Mark the user AWAY with `text` (empty: back), now if connected, else on connect."""
        if text == self.away:
            return
        self.away = text
        if self.connected:
            self.send("AWAY", *([text] if text else []))

    # --- last seen in persistent channels (see `gaps`) ------------------------------

    def _persistent(self) -> set[str]:
        """The user's persistent channels here, as now saved (casefolded)."""
        return {
            casefold(n) for n in load_settings(self.options, self.account, self.server).persistent
        }

    async def _note_seen(self) -> None:
        """Note that we are in each joined persistent channel as of now."""
        persistent = self._persistent()
        for ch in list(self.channels.values()):
            if ch.joined and casefold(ch.name) in persistent:
                await self.last_seen.put(ch.name, datetime.now(UTC), ch.last.msgid)

    async def _keep_noting_seen(self, conn: IrcConnection) -> None:
        while True:
            with suppress(TimeoutError):
                await within(conn.closed.wait(), self.options.last_seen_interval)
                return
            await self._note_seen()

    async def _catch_up(self, ch: Channel) -> str | None:
        """At a join: fetch what the channel said since the last line seen, where the
        server offers chat history; else, for a persistent channel, the text saying
        when we were not in it. A persistent channel is then noted as in."""
        since: datetime | None = None
        anchor = ch.last
        if casefold(ch.name) in self._persistent():
            since, stored_msgid = await self.last_seen.read(ch.name)
            msgid = ch.last.msgid or stored_msgid
            anchor = anchor or Anchor(msgid, since)
            await self.last_seen.put(ch.name, datetime.now(UTC), msgid)
        if self.conn is not None and self.conn.caps >= NEEDED_CAPS:
            if anchor:
                ch.fetch = Fetch()
                self._ask_history(ch, anchor)
            return None
        return None if since is None else gap_text(ch.name, since, datetime.now(UTC))

    def _ask_history(self, ch: Channel, anchor: Anchor) -> None:
        assert ch.fetch is not None
        ch.fetch.pages += 1
        self.send("CHATHISTORY", *request(ch.name, anchor, self.modes.chathistory_limit))

    async def _history_page(self, ch: Channel, lines: list[Line]) -> None:
        """One answer to CHATHISTORY: deliver what is new, ask for more if it was full."""
        fetch = ch.fetch
        if fetch is None:
            return
        for line in fetch.fresh(lines, ch.name):
            await self._on_text(line, notice=line.command == "NOTICE", history=True)
        last = Anchor.of(lines[-1]) if lines else Anchor()
        full = len(lines) >= self.modes.chathistory_limit
        if full and last and fetch.pages < MAX_PAGES and self.connected:
            self._ask_history(ch, last)
            return
        ch.fetch = None
        if full and last:
            await self.deliver(
                events.Message(
                    ch.address,
                    f"Fetched {fetch.pages} pages of history from {self.server}, the most the "
                    "gateway asks for: the newest lines said while it was away may be missing.",
                )
            )

    def send(self, command: str, *params: str) -> None:
        self._connection().send(format_line(command, *params))

    def _connection(self) -> IrcConnection:
        if self.conn is None or self.conn.closed.is_set():
            raise BridgeError(f"not connected to {self.server}", "remote-server-timeout")
        return self.conn

    # --- user actions ----------------------------------------------------------------

    async def join(self, name: str, address: Address, nick: str, key: str | None) -> None:
        ch = self.channels.get(casefold(name))
        if ch is not None and ch.synced:
            await self.deliver(self._joined_event(ch))
            return
        try:
            await self.ensure_connected(nick)
        except BridgeError as exc:
            await self.deliver(events.RoomJoinFailed(address, exc.condition, exc.text))
            return
        if ch is None:
            ch = self.channels[casefold(name)] = Channel(name, address, key)
            self.send("JOIN", name, *([key] if key else []))
            self._start_timer(self._join_deadline(ch))

    async def _join_deadline(self, ch: Channel) -> None:
        """A server that never answers a JOIN must not leave the user waiting forever."""
        await asyncio.sleep(self.options.join_timeout)
        if self.channels.get(casefold(ch.name)) is ch and not ch.synced and not ch.rejoining:
            del self.channels[casefold(ch.name)]
            await self.deliver(
                events.RoomJoinFailed(
                    ch.address,
                    "remote-server-timeout",
                    f"{self.server} did not answer the join of {ch.name}",
                )
            )

    async def leave(self, name: str, reason: str = "") -> None:
        ch = self.channels.pop(casefold(name), None)
        if ch is not None and self.connected:
            self.send("PART", ch.name, *([reason] if reason else []))
        if ch is not None and ch.joined and casefold(ch.name) in self._persistent():
            # Left on purpose: a later join is no gap to report.
            await self.last_seen.forget(ch.name)

    async def message(
        self, target: str, text: str, xmpp_id: str | None, tags: dict[str, str] | None = None
    ) -> None:
        """PRIVMSGs for `text`, split to fit the server's relay of our own lines; the
        first carries `tags` (client tags are outside the 512 bytes)."""
        conn = await self.ensure_connected()
        user, host = self.userhost or (None, None)
        budget = privmsg_budget(relay_prefix_bytes(self.nick, user, host, "PRIVMSG", target))
        lines = outgoing_lines(text, budget)
        limit = self.options.max_lines_per_message
        if limit and len(lines) > limit:
            raise BridgeError(
                f"too long for IRC: {len(lines)} lines, the limit is {limit}; nothing was sent",
                "policy-violation",
            )
        ticket = self._ticket(target, len(lines), xmpp_id) if xmpp_id else None
        prefix = format_tags(tags) if tags and self._has_tags() else ""
        for piece, action in lines:
            line = format_line("PRIVMSG", target, ctcp("ACTION", piece) if action else piece)
            conn.send(prefix + line, ticket)
            prefix = ""
        self._typing.message_sent(casefold(target))
        if xmpp_id and not is_channel(target):
            self._last_private_id[casefold(target)] = xmpp_id

    # --- message features (see `rich`) -----------------------------------------------

    def group_features(self) -> frozenset[GroupFeature]:
        """What this connection carries natively now; nothing while it is down."""
        if self.conn is None or not self.connected:
            return frozenset()
        return rich.features(self.conn.caps, self.modes)

    def _has_tags(self) -> bool:
        return self.conn is not None and "message-tags" in self.conn.caps

    def _tag(self, names: tuple[str, ...]) -> str | None:
        """The first of the client tags `names` this server takes, if it takes tags."""
        return rich.first_allowed(self.modes, names) if self._has_tags() else None

    def _reply_tags(self, quoted: events.Quoted) -> dict[str, str]:
        tag = self._tag(rich.REPLY_TAGS) if quoted.legacy_id else None
        return {tag: quoted.legacy_id} if tag and quoted.legacy_id else {}

    async def _known(self, target: str, quoted: events.Quoted) -> events.Quoted:
        """In a private chat the client names a message by the id it saw: the msgids
        it stands for (the first, else None and the text fallback; all of them for a
        retraction), if known."""
        if is_channel(target):
            return quoted
        named = quoted.legacy_id
        ids = await self.references.legacy_ids(named) if named else ()
        return replace(quoted, legacy_id=ids[0] if ids else None, legacy_ids=ids)

    async def reply(
        self, target: str, text: str, quoted: events.Quoted, xmpp_id: str | None
    ) -> None:
        """`+draft/reply` where the server takes it, else the author's nick and a quote."""
        await self.ensure_connected()
        quoted = await self._known(target, quoted)
        tags = self._reply_tags(quoted)
        await self.message(target, text if tags else rich.reply_text(text, quoted), xmpp_id, tags)

    async def correct(
        self, target: str, text: str, quoted: events.Quoted, xmpp_id: str | None
    ) -> None:
        """A line that reads as a correction, tagged as a reply to the original if it can."""
        await self.ensure_connected()
        tags = self._reply_tags(await self._known(target, quoted))
        await self.message(target, rich.correction_text(text), xmpp_id, tags)

    async def react(
        self, target: str, quoted: events.Quoted, added: list[str], removed: list[str]
    ) -> None:
        """TAGMSGs with `+draft/react` (`+draft/unreact` to take one back), else, for
        new reactions only, rate-limited `/me reacted …` lines unless switched off."""
        await self.ensure_connected()
        quoted = await self._known(target, quoted)
        react, reply = self._tag(rich.REACT_TAGS), self._reply_tags(quoted)
        if react and reply:
            for emoji in added:
                self._send_tagged({react: emoji, **reply}, "TAGMSG", target)
            if self._tag((rich.UNREACT_TAG,)):
                for emoji in removed:
                    self._send_tagged({rich.UNREACT_TAG: emoji, **reply}, "TAGMSG", target)
            return
        if not added:
            return  # a reaction sent as text cannot be taken back
        if self.settings is not None and not self.settings.reactions_as_text:
            raise BridgeError(
                f"{self.server} has no reactions, and your network settings do not send them "
                "as text",
                "feature-not-implemented",
            )
        for emoji in added:
            if not self._reaction_texts.take():
                raise BridgeError(
                    f"{self.server} has no reactions; as text, at most {rich.REACTION_TEXTS} "
                    f"are sent per {rich.REACTION_TEXT_WINDOW:.0f} s",
                    "feature-not-implemented",
                )
            await self.message(target, rich.reaction_text(emoji, quoted), None)

    async def redact(self, target: str, quoted: events.Quoted) -> None:
        """REDACT where the server offers `draft/message-redaction`, in a channel or to
        a nick, one per line of the message (`Quoted.every_legacy_id`); the server's
        REDACT back (or, without echo-message, our own word)
        removes it from the room. In a private chat the user's other clients learn it
        from their server (carbons), not from us."""
        conn = await self.ensure_connected()
        if rich.REDACTION_CAP not in conn.caps:
            raise BridgeError(
                f"{self.server} cannot remove a message once it is sent "
                "(it does not offer draft/message-redaction)",
                "feature-not-implemented",
            )
        quoted = await self._known(target, quoted)
        if not quoted.legacy_id:
            raise BridgeError(
                f"{self.server} gave that message no msgid, so it cannot be removed",
                "feature-not-implemented",
            )
        # Every line of a multi-line message; the room shows one retraction of it.
        for legacy_id in quoted.every_legacy_id:
            self.send("REDACT", target, legacy_id)
        if "echo-message" not in conn.caps and is_channel(target):
            await self.deliver(
                events.Retraction(make_address(target, self.server), self.nick, quoted.legacy_id)
            )

    def typing(self, target: str, state: events.ChatState) -> None:
        """`+typing`, throttled; nothing where the server takes no such tag."""
        tag = self._tag(rich.TYPING_TAGS) if self.connected else None
        value = self._typing.value(casefold(target), state) if tag else None
        if tag and value:
            self._send_tagged({tag: value}, "TAGMSG", target)

    def mark_private_read(self, nick: str, msgid: str) -> None:
        """The user's client showed `nick`'s message `msgid`: MARKREAD up to its time,
        if it is one of the latest (`_private_sent`), where the server offers it."""
        sent = self._private_sent.get(msgid)
        if sent is not None:
            self.mark_read(nick, events.Quoted(msgid, nick, "", sent))

    def mark_read(self, target: str, quoted: events.Quoted) -> None:
        """MARKREAD up to `quoted` where the server offers `draft/read-marker`."""
        if self.conn is None or not self.connected or rich.READ_MARKER_CAP not in self.conn.caps:
            return
        if quoted.sent is not None:
            moment = quoted.sent.astimezone(UTC)
            stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
            self.send("MARKREAD", target, f"timestamp={stamp}")

    def _send_tagged(self, tags: dict[str, str], command: str, *params: str) -> None:
        self._connection().send(format_tags(tags) + format_line(command, *params))

    def _ticket(self, target: str, lines: int, xmpp_id: str) -> Ticket:
        """Report the message as Delivered once its last line is written, or as
        DeliveryFailed if the gateway stops first (`_fail_held`)."""
        to = make_address(target, self.server)

        async def written(echoes: list[Line]) -> None:
            if not echoes:  # no echo-message: nothing but that it is written
                await self.deliver(events.Delivered(to, xmpp_id))
                return
            # The first line's msgid and time name the message (in a private chat
            # too: the component remembers it for replies and reactions); every
            # line's msgid is kept, since a reply or reaction on IRC may point at any.
            ids = tuple(msgid for echo in echoes if (msgid := echo.tags.get("msgid")))
            await self.deliver(
                events.Delivered(
                    to,
                    xmpp_id,
                    legacy_id=ids[0] if ids else None,
                    sent=parse_timestamp(echoes[0].tags.get("time")),
                    legacy_ids=ids,
                )
            )

        async def failed(text: str) -> None:
            await self.deliver(events.DeliveryFailed(to, xmpp_id, "remote-server-timeout", text))

        return Ticket(lines, written, failed)

    async def raw(self, text: str) -> None:
        """Lines typed to the server's JID go out as raw IRC commands."""
        conn = await self.ensure_connected()
        for line in text.splitlines():
            if line.strip():
                conn.send(line.strip())

    def request_nick(self, room: Address, nick: str) -> None:
        self._nick_request = (room, nick)
        self.send("NICK", nick)

    def channel(self, name: str) -> Channel:
        ch = self.channels.get(casefold(name))
        if ch is None or not ch.joined:
            raise BridgeError(f"not in {name}", "not-acceptable")
        return ch

    def is_operator(self, ch: Channel) -> bool:
        member = ch.member(self.nick)
        return member is not None and bool(member.modes & set("qaoh"))

    async def list_channels(self, timeout: float = 30.0) -> list[tuple[Address, str]]:
        await self.ensure_connected()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        result: list[tuple[Address, str]] = []
        self._lists.append((done, result))
        self.send("LIST")
        try:
            await within(done, timeout)
        except TimeoutError:
            self._lists = [item for item in self._lists if item[0] is not done]
        return result
