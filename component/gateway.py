"""One XEP-0114 component per bridge: receives stanzas, routes them, answers errors.

The data path is short on purpose: a stanza is queued on its sender's lane
(component.lanes), one routing decision picks the handler by stanza kind and what the
`to` localpart names (component JID, contact, room), and one call reaches the bridge's
Session. Everything a bridge sends back comes through `Outbound`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from slixmpp import JID, Iq, Message, Presence
from slixmpp.componentxmpp import ComponentXMPP
from slixmpp.exceptions import XMPPError
from slixmpp.xmlstream import ET, StanzaBase, tostring

from bridges import events
from bridges.address import Address
from bridges.base import Bridge, MessageExtras, Session
from bridges.xml_text import xml_safe
from component import metrics, references, wire
from component.archive import Archive
from component.chats import PrivateChats
from component.commands import AdHocCommands
from component.config import FileSettings
from component.disco import Disco
from component.errors import registration_text, stanza_error
from component.fair_writer import MARKER_ID, WINDOW, FairWriter
from component.files import HttpFiles
from component.lanes import Handler, Lanes
from component.nick_resources import to_nick
from component.outbound import MARKERS_NS, OOB_NS, RECEIPTS_NS, Outbound
from component.ownership import DatabaseSlow, Ownership
from component.ratelimit import RateLimit
from component.registration import Registration
from component.sessions import ResourcePresence, SessionManager, UserSink
from component.store import AccountStorage, Store
from component.version import software_version
from component.xep_0100 import presence

if TYPE_CHECKING:
    from component.mam import ArchiveQueries
    from component.muc import GroupChats

log = logging.getLogger(__name__)

CLIENT_NS, COMPONENT_NS = "{jabber:client}", "{jabber:component:accept}"
FORWARDED = "{urn:xmpp:forward:0}forwarded"
SUBSCRIPTION_TYPES = ("subscribe", "subscribed", "unsubscribe", "unsubscribed")
CORRECT_NS = "urn:xmpp:message-correct:0"
REPLY_NS = "urn:xmpp:reply:0"
FALLBACK_NS = "urn:xmpp:fallback:0"
HELP_TEXT = "This is the {name} gateway: write to or join addresses at {jid}."
LOCATE_ID = "xgw-locate-"
"""Id prefix of the pings to registered users' bare JIDs (component.ownership)."""
LOCATE_CHECK = 10.0
"""Seconds after the locating pings went out that their answers show whether the
server's slots match `cluster.slots` (`Ownership.check_slots`)."""
OWNED_ELSEWHERE = (
    "another instance of the gateway serves you at the moment; send it again in a few seconds"
)
DATABASE_SLOW = "the gateway's database is slow at the moment; send it again in a few seconds"


def to_component_stream(xml: ET.Element, *, rename: bool = True) -> None:
    """Make a stanza built anywhere fit to write on the component stream, in place.

    `Message()` made standalone (as Outbound and the MUC engine do) is in jabber:client,
    and so are slixmpp's error elements even in replies; a server rejects or mangles
    those on a component stream. A stanza quoted inside an XEP-0297 `<forwarded/>` (MAM
    results) stays jabber:client, as clients expect. And no text or attribute anywhere
    may hold a character XML forbids: one BEL from one IRC user would make the server
    close the stream for all.
    """
    if rename and xml.tag.startswith(CLIENT_NS):
        xml.tag = COMPONENT_NS + xml.tag[len(CLIENT_NS) :]
    if xml.text:
        xml.text = xml_safe(xml.text)
    if xml.tail:
        xml.tail = xml_safe(xml.tail)
    for name, value in xml.attrib.items():
        xml.attrib[name] = xml_safe(value)
    for child in xml:
        to_component_stream(child, rename=rename and child.tag != FORWARDED)


def message_extras(message: Message) -> tuple[str, MessageExtras]:
    """The text of a user's message, and what else it carries (see `MessageExtras`).

    An XEP-0461 reply's XEP-0428 fallback (the quoted text, by code point range) and the
    bare URL of an XEP-0066 file are cut from the text: the network gets them as what
    they are, a quote and a file.
    """
    text = str(message["body"])
    reply = message.xml.find(f"{{{REPLY_NS}}}reply")
    quote = None
    if reply is not None:
        for fallback in message.xml.findall(f"{{{FALLBACK_NS}}}fallback"):
            if fallback.get("for") != REPLY_NS:
                continue
            span = fallback.find(f"{{{FALLBACK_NS}}}body")
            start, end = (span.get("start"), span.get("end")) if span is not None else (None, None)
            if start and end and start.isdigit() and end.isdigit() and int(start) < int(end):
                quote = text[int(start) : int(end)]
                text = text[: int(start)] + text[int(end) :]
    files = tuple(
        url.strip()
        for oob in message.xml.findall(f"{{{OOB_NS}}}x")
        if (url := oob.findtext(f"{{{OOB_NS}}}url"))
    )
    for url in files:
        text = text.replace(url, "")
    extras = MessageExtras(
        reply_to=reply.get("id") if reply is not None else None, quote=quote, files=files
    )
    return text.strip() if files or quote else text, extras


JIDS_KEPT = 10_000
"""Parsed `from`/`to` JIDs and room addresses remembered for plain room messages."""

READ_PIECE = 64 * 1024
"""Bytes of the server's stream parsed per turn of the event loop (~300 stanzas, ~10 ms)."""

LaneOf = Callable[[StanzaBase], str | None]
"""Which lane a stanza waits on (None: none, it needs no order)."""


def _user_lane(stanza: StanzaBase) -> str:
    return str(stanza["from"].bare)


def _registration_lane(stanza: StanzaBase) -> str:
    """A lane of its own ("/" never occurs in a bare JID): checking a registration logs in
    to the legacy servers, which may take their whole timeout, and the user's messages,
    room joins and pings must not wait for that."""
    return f"{stanza['from'].bare}/register"


def _ping_lane(stanza: StanzaBase) -> str | None:
    """A ping to the component itself depends on nothing and is answered at once."""
    return _user_lane(stanza) if stanza["to"].node else None


async def _answered(_stanza: StanzaBase) -> None:
    """A locating ping's answer says only where the user's stanzas arrive (`_owned`)."""


class Gateway(ComponentXMPP):
    """The component serving one bridge; several run side by side in one process."""

    def __init__(
        self,
        *,
        bridge: Bridge,
        jid: str,
        secret: str,
        store: Store,
        allowed_domains: list[str],
        archive: Archive | None = None,
        history_stanzas: int = 20,
        registration_limit: RateLimit,
        files: FileSettings | None = None,
        ownership: Ownership | None = None,
        admins: list[str] | None = None,
        write_window: int = WINDOW,
    ) -> None:
        """`write_window`: see `component.fair_writer` (0: none)."""
        super().__init__(jid, secret)  # type: ignore[no-untyped-call]  # via super(): not excluded
        self.bridge = bridge
        self.store = store
        self.link_up = asyncio.Event()
        self._started_once = False
        self._closing = asyncio.Event()
        self._delivered: dict[type, Any] = {}
        self.writer = FairWriter(
            self._write, self._marker, self.loop, name=self.boundjid.bare, window=write_window
        )
        """Serialized stanzas: this event loop turn's written together, and in turns by
        recipient while the server is behind (component.fair_writer)."""
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0004")
        self.register_plugin("xep_0199")
        self.register_plugin(
            "xep_0092", {"software_name": "xmpp-gateway", "version": software_version()}
        )
        self._disable_roster_automation()
        self.groups: GroupChats | None = None
        self.mam: ArchiveQueries | None = None
        if bridge.supports_groups:
            from component.mam import ArchiveQueries
            from component.muc import GroupChats

            self.groups = GroupChats(
                self.send,
                self.boundjid.bare,
                bridge,
                archive,
                history_stanzas,
                occupant_salt=secret.encode(),  # stable across restarts, never shown
                text_stanzas=True,
            )
            if archive is not None:
                self.mam = ArchiveQueries(self.groups, self.send)
        self.outbound = Outbound(
            self.boundjid.bare,
            bridge.format_address,
            self.send,
            self.groups.on_event if self.groups else None,
            lambda jid: self.sessions.is_available(jid.bare, jid.resource),
            PrivateChats(archive),
        )
        self.files = HttpFiles(self, files or FileSettings())
        self.admins = frozenset(admins or ())
        """Bare JIDs allowed the operators' ad-hoc commands."""
        self.ownership = ownership
        """With several active processes (`cluster.slots`): which users are ours."""
        self._slot_check: asyncio.Task[None] | None = None
        if ownership is not None:
            ownership.on_lost = self._user_moved
        self.sessions = SessionManager(bridge, store, self._make_sink, self._may_start)
        if ownership is not None:
            ownership.on_gained = self.sessions.start_if_wanted  # a late claim (DatabaseSlow)
        self.registration = Registration(self, allowed_domains, registration_limit)
        self.commands = AdHocCommands(self)
        self.disco = Disco(self)
        self.lanes = Lanes(bridge.name)
        self._message_route = self._route("message", self._on_message)
        self._messages_in = metrics.STANZAS_IN.labels(bridge.name, "message")
        self._message_tag = f"{{{self.default_ns}}}message"
        self._body_tag = f"{{{self.default_ns}}}body"
        self._iq_tag = f"{{{self.default_ns}}}iq"
        self._jids: dict[str, JID] = {}
        self._rooms: dict[str, Address] = {}
        if ownership is not None:
            self._located = self._owned(_answered)
        self._presence_route = self._route("presence", self._on_presence)
        self._iq_routes: dict[tuple[str, str], Callable[[StanzaBase], None]] = {}
        self._route_iq("register", self.registration.handle, _registration_lane)
        self._route_iq("gateway", self._on_gateway_query)
        self._route_iq("command", self._on_command)
        if self.groups is not None:
            self._route_iq("mucadmin_query", self._on_muc_admin, name="muc-admin")
        if self.mam is not None:
            self._route_iq("mam", self._on_mam)
            self._route_iq("mam_metadata", self._on_mam_metadata, name="mam-metadata")
        # A self-ping to an occupant goes through the lane, so it sees the join before it.
        self.remove_handler("Ping")
        self._route_iq("ping", self._on_ping, _ping_lane, types=("get",))
        # Sync, so it runs right after slixmpp's own: what the writer held goes before
        # what slixmpp held while the stream was down.
        self.add_event_handler("session_start", lambda _event: self.writer.resume())
        self.add_event_handler("session_start", self._on_link_up)
        self.add_event_handler("disconnected", self._on_link_down)

    # --- plumbing -----------------------------------------------------------------

    def send(self, data: StanzaBase | str, use_filters: bool = True) -> None:
        """Send a stanza, made fit for the component stream (see `to_component_stream`).

        Once the stream is up a stanza is serialized at once and written with all the
        others of this turn of the event loop (`self.writer`): one system call for a
        burst instead of one per stanza, which cost more than building the stanza. No
        outgoing filter is registered on a gateway, so skipping slixmpp's send queue
        skips none; that queue still carries the handshake and what is sent while the
        stream is down, which slixmpp holds until the session starts.
        """
        if isinstance(data, StanzaBase):
            to_component_stream(data.xml)
            data.stream = self
            data.namespace = self.default_ns
        # A str is a stanza component.wire wrote, every value in it already XML-safe
        # (tests/unit/test_wire.py parses them): cleaning it again cost 2 µs a stanza.
        if not self._session_started or self.transport is None:
            super().send(data, use_filters)
            return
        if isinstance(data, StanzaBase):
            data = tostring(data.xml, xmlns=self.default_ns, stream=self, top_level=True)
        self.writer.add(data)

    def send_raw(self, data: str | bytes) -> None:
        """Whatever slixmpp writes itself (stream close, keepalive) comes after our
        stanzas, the queued ones too: the stream's end must not wait for the server."""
        self.writer.write_all()
        super().send_raw(data)

    def _marker(self, marker: str) -> str:
        """The window marker `marker`: a ping to ourselves, which any server routes back
        (mod_ping or not); `_spawn_event` takes it, unanswered."""
        jid = self.boundjid.bare
        return (
            f'<iq type="get" id="{marker}" from="{jid}" to="{jid}">'
            '<ping xmlns="urn:xmpp:ping" /></iq>'
        )

    def _write(self, data: str) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            log.warning("%s: stream closed, %d bytes not sent", self.boundjid.bare, len(data))
            return
        transport.write(data.encode())

    def data_received(self, data: bytes | str) -> None:
        """Parse a large read in pieces, with the other users' work between them.

        asyncio hands over up to 256 KiB at once: over a thousand stanzas of one user's
        burst, whose parsing and dispatch would hold everyone else for ~100 ms. Reading
        pauses until the rest is parsed, so the stream keeps its order.
        """
        super().data_received(data[:READ_PIECE])
        rest, transport = data[READ_PIECE:], self.transport
        if transport is None or transport.is_closing():
            return
        if rest:
            transport.pause_reading()
            self.loop.call_soon(self._parse_rest, transport, rest)
        elif not transport.is_reading():
            transport.resume_reading()

    def _parse_rest(self, transport: asyncio.BaseTransport, rest: bytes | str) -> None:
        if not transport.is_closing() and transport is self.transport:  # not a lost stream's
            self.data_received(rest)

    def _spawn_event(self, xml: ET.Element) -> None:
        """slixmpp's, with a user's plain room message (`wire.plain_groupchat`) queued
        at once, for `_on_plain_groupchat`, its slixmpp stanza built only if needed
        (see `lanes.Stanza`). slixmpp's tries of every stanza class and its look-up
        of the stanza's language (`stanza['lang'] is None` never holds) cost more than
        building the stanza, and change nothing for it."""
        xml = self.incoming_filter(xml)  # type: ignore[no-untyped-call]
        tag = xml.tag
        if tag == self._message_tag and self.groups is not None:
            plain = wire.plain_groupchat(xml, self._body_tag)
            if plain is not None and self._owns(user := self._jid(plain.sender).bare):
                self._messages_in.inc()
                handler = partial(self._on_plain_groupchat, plain)
                message = partial(Message, self, xml, recv=True)
                self.lanes.submit(user, message, handler)
                return
        elif tag == self._iq_tag and xml.get("id", "").startswith(MARKER_ID):
            self.writer.confirm(xml.get("id", ""))  # our own marker, back (or bounced)
            return
        super()._spawn_event(xml)

    def _owns(self, user: str) -> bool:
        """Whether `user`'s stanza needs no lease taken first: there are no slots, or
        this process owns the user already (and notes it saw them). Otherwise the
        stanza takes the general route, whose `_owned` claims the user first (their
        first stanza after a failover may well be a room message)."""
        ownership = self.ownership
        if ownership is None:
            return True
        if not ownership.owns(user):
            return False
        ownership.saw(user)
        return True

    def recv_stanza(self, stanza: StanzaBase) -> None:
        """Hand a parsed stanza to its route, decided once by its kind and payload.

        slixmpp would try every registered handler's matcher on every stanza (a route
        each used to be one), which cost more than the rest of parsing; messages and
        presences only ever go to ours. Iqs without a route (disco, version, answers
        to our own requests) and other elements still go through slixmpp's handlers;
        so do answers that have a route, whose requests may wait for them.
        """
        if isinstance(stanza, Message):
            self._message_route(stanza)
        elif isinstance(stanza, Presence):
            self._presence_route(stanza)
        elif self.ownership is not None and stanza["id"].startswith(LOCATE_ID):
            self.lanes.submit(_user_lane(stanza), stanza, self._located)  # see _locate
        elif isinstance(stanza, Iq) and (route := self._iq_route(stanza)) is not None:
            route(stanza)
            if stanza["type"] in ("result", "error"):
                super().recv_stanza(stanza)
        else:
            super().recv_stanza(stanza)

    def _jid(self, text: str) -> JID:
        """`JID(text)`, remembered: a burst names the same sender and room each time.
        Callers only read it (slixmpp's JIDs can be changed in place)."""
        jid = self._jids.get(text)
        if jid is None:
            if len(self._jids) >= JIDS_KEPT:
                self._jids.clear()
            jid = self._jids[text] = JID(text)
        return jid

    def _iq_route(self, iq: Iq) -> Callable[[StanzaBase], None] | None:
        kind = iq.xml.get("type", "")
        for child in iq.xml:
            route = self._iq_routes.get((kind, child.tag))
            if route is not None:
                return route
        return None

    def _route(
        self, name: str, handler: Handler, lane: LaneOf = _user_lane
    ) -> Callable[[StanzaBase], None]:
        """What queues a stanza on the lane `lane` picks (the sender's), in arrival order."""
        received = metrics.STANZAS_IN.labels(self.bridge.name, name)
        if self.ownership is not None:
            handler = self._owned(handler)

        def enqueue(stanza: StanzaBase) -> None:
            received.inc()
            self.lanes.submit(lane(stanza), stanza, handler)

        return enqueue

    def _owned(self, handler: Handler) -> Handler:
        """`handler`, after this process took the sender's ownership (component.ownership).

        The first stanza of a user this process did not own yet (a probe's answer, at
        start or after a failover) also starts what runs while the user is offline.
        Someone who may not use the gateway (`Registration.may_use`) gets no lease: a
        lease row per stranger's JID would let anyone fill the table, and the handler
        refuses what they ask anyway.
        """
        ownership = self.ownership
        assert ownership is not None

        async def claim_then_handle(stanza: StanzaBase) -> None:
            sender = stanza["from"]
            if sender.node:  # a user, not the server
                user = sender.bare
                if ownership.owns(user):
                    ownership.saw(user)
                elif await self.registration.may_use(user) and not await self._claim(stanza):
                    return
            await handler(stanza)

        return claim_then_handle

    async def _claim(self, stanza: StanzaBase) -> bool:
        """Take the sender's lease; False: drop the stanza (an answer or a departure
        another process owns). Refuses what the user asked when another process
        keeps the user, or when the database does not answer in time."""
        ownership = self.ownership
        assert ownership is not None
        user = stanza["from"].bare
        answer = stanza["type"] in ("unavailable", "error", "result")
        try:
            claimed = await ownership.claim(user)
        except DatabaseSlow as exc:
            log.warning("%s: no routing decision for the user's stanza: %s", user, exc)
            if answer:
                return False
            raise stanza_error("resource-constraint", DATABASE_SLOW) from None
        if claimed:
            await self.sessions.start_if_wanted(user)
            return True
        if answer:
            return False
        raise stanza_error("service-unavailable", OWNED_ELSEWHERE)

    def _may_start(self, user: str) -> None:
        if self.ownership is not None and not self.ownership.owns(user):
            raise stanza_error("service-unavailable", OWNED_ELSEWHERE)

    async def _user_moved(self, user: str) -> None:
        """Another process serves `user` from now: stop what runs here for them."""
        if self.groups is not None:
            self.groups.forget_user(user)
        self.outbound.chats.forget(user)
        await self.sessions.stop(user, "another instance serves the user now")

    def _route_iq(
        self,
        plugin: str,
        handler: Handler,
        lane: LaneOf = _user_lane,
        *,
        name: str | None = None,
        types: tuple[str, ...] = ("get", "set", "result", "error"),
    ) -> None:
        """Route iqs of `types` whose payload is the registered Iq stanza plugin `plugin`."""
        tag = Iq.plugin_attrib_map[plugin].tag_name()
        route = self._route(name or plugin, handler, lane)
        for kind in types:
            self._iq_routes[(kind, tag)] = route

    def _disable_roster_automation(self) -> None:
        """Take subscriptions and probes away from slixmpp's in-memory roster."""
        for event, handler in (
            ("presence_available", self._handle_available),
            ("presence_dnd", self._handle_available),
            ("presence_xa", self._handle_available),
            ("presence_chat", self._handle_available),
            ("presence_away", self._handle_available),
            ("presence_unavailable", self._handle_unavailable),
            ("presence_subscribe", self._handle_subscribe),
            ("presence_subscribed", self._handle_subscribed),
            ("presence_unsubscribe", self._handle_unsubscribe),
            ("presence_unsubscribed", self._handle_unsubscribed),
            ("roster_subscription_request", self._handle_new_subscription),
            ("presence_probe", self._handle_probe),
        ):
            self.del_event_handler(event, handler)
        # BaseXMPP's own presence handler feeds that roster too; ours replaces it.
        self.remove_handler("Presence")

    def _make_sink(self, user: str) -> UserSink:
        return UserSink(
            user,
            self._deliver,
            AccountStorage(self.store, user, self.bridge.name),
            lambda: self.files if self.files.available else None,
            self.outbound.chats,
        )

    async def _deliver(self, user: str, event: events.Event) -> None:
        if not self.link_up.is_set():
            await self._wait_for_link()
        await self.outbound.deliver(user, event)
        kind = type(event)
        counter = self._delivered.get(kind)
        if counter is None:  # labels() costs ~10 µs: look each child up once
            counter = self._delivered[kind] = metrics.EVENTS_OUT.labels(
                self.bridge.name, kind.__name__
            )
        counter.inc()

    async def _wait_for_link(self) -> None:
        """Hold a legacy event while the server link is down rather than dropping it.

        Shutting down ends the wait with an error instead: the bridge learns the event
        was not delivered (mail keeps it for the next start) and nothing waits forever.
        """
        up = asyncio.ensure_future(self.link_up.wait())
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait([up, closing], return_when=asyncio.FIRST_COMPLETED)
        finally:
            up.cancel()
            closing.cancel()
        if not self.link_up.is_set():
            raise ConnectionError("the gateway is stopping and the XMPP server is unreachable")

    async def _on_link_up(self, _event: object) -> None:
        self.link_up.set()
        metrics.LINK_UP.labels(self.bridge.name).set(1)
        log.info("%s: connected to the XMPP server", self.boundjid.bare)
        # Learn who is online: the server answers probes with each user's presence.
        users = [
            user for user, bridge in await self.store.registrations() if bridge == self.bridge.name
        ]
        for user in users:
            self.send(presence(self.boundjid.bare, user, "probe"))
            if self.ownership is not None:
                # ejabberd leaves a probe to an offline user unanswered, but answers
                # a ping to the bare JID itself, and routes the answer like all the
                # user's stanzas: to the process that is to own the user.
                self._locate(user)
        if self.ownership is not None and users:
            if self._slot_check is not None:
                self._slot_check.cancel()
            self._slot_check = asyncio.create_task(
                self._check_slots(self.ownership, users), name=f"{self.boundjid.bare} slots"
            )
        if not self._started_once:
            self._started_once = True
            if self.bridge.uses_files:  # before the first catch-up hands over attachments
                await self.files.discover()
            if self.ownership is not None:
                # Offline sessions start where the probes' answers arrive (_owned).
                self.ownership.start()
            else:
                await self.sessions.start_offline_sessions()

    async def _check_slots(self, ownership: Ownership, users: list[str]) -> None:
        await asyncio.sleep(LOCATE_CHECK)  # the answers' time to arrive and be claimed
        try:
            await ownership.check_slots(users)
        except Exception as exc:  # only a warning is lost
            log.warning("%s: could not check the slots: %s", self.boundjid.bare, exc)

    def _locate(self, user: str) -> None:
        ping = self.Iq(stype="get", sto=user, sfrom=self.boundjid.bare)
        ping["id"] = f"{LOCATE_ID}{ping['id']}"
        ping.enable("ping")
        self.send(ping)

    def _on_link_down(self, _event: object) -> None:
        if self.link_up.is_set() and not self._closing.is_set():
            log.warning("%s: lost the connection to the XMPP server", self.boundjid.bare)
        self.link_up.clear()
        self.writer.hold()
        metrics.LINK_UP.labels(self.bridge.name).set(0)

    # --- sessions -------------------------------------------------------------------

    async def session_for(self, user: str, nick: str | None = None) -> Session:
        """The user's session, for a join (as `nick`) or a message they sent.

        A user without an account gets one from the bridge's defaults if it offers them
        (IRC); only joins and messages come here, so mere presence creates nothing.
        """
        session = await self.sessions.ensure(user)
        if session is None and await self.registration.default_account(user, nick) is not None:
            session = await self.sessions.ensure(user)
        if session is None:
            raise self.registration_required()
        return session

    def registration_required(self) -> XMPPError:
        return stanza_error("registration-required", registration_text(self.boundjid.bare))

    async def restart_session(self, user: str) -> None:
        """Apply changed registration data: a fresh session if one should run."""
        await self.sessions.restart(user, "registration changed")

    async def forget_user(self, user: str, reason: str) -> None:
        """Stop everything for `user` and delete what is stored for them."""
        if self.groups is not None:
            self.groups.forget_user(user)
        self.outbound.chats.forget(user)
        await self.sessions.stop(
            user, reason, then=lambda: self.store.remove_account(user, self.bridge.name)
        )

    async def shutdown(self, timeout: float) -> None:
        """Tell online users we are going and stop every session (the Link closes the stream).

        Bounded by `timeout` seconds: stanzas still queued then are answered with an
        error, and sessions still stopping are cancelled (mail keeps what it had not
        sent in its stored outbox), so one unresponsive legacy server cannot hold the
        process for minutes.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._closing.set()
        if self.groups is not None:
            self.groups.leave_all("the gateway is shutting down")
        for user in list(self.sessions.resources):
            self.send(presence(self.boundjid.bare, user, "unavailable", "gateway shutting down"))
        await self.lanes.close(timeout)
        await self.sessions.stop_all("gateway shutting down", max(0.0, deadline - loop.time()))
        if self.ownership is not None:
            if self._slot_check is not None:
                self._slot_check.cancel()
            await self.ownership.stop()
        await self.bridge.close()
        await self.files.close()

    # --- routing --------------------------------------------------------------------

    def _address(self, stanza: StanzaBase) -> Address:
        """What the `to` localpart names; the lane answers an AddressError for us."""
        return self.bridge.parse_address(stanza["to"].node)

    async def _on_message(self, message: Message) -> None:
        if message["type"] == "error":
            log.info("error from %s about %s: %s", message["from"], message["to"], message["error"])
            return
        user = message["from"].bare
        if not message["to"].node:
            if message["body"]:
                self.outbound.notice(user, await self._help(user))
            return
        address = self._address(message)
        session = await self.session_for(user)
        invite = self.groups.invitation(message, address) if self.groups is not None else None
        if invite is not None:
            await session.invite(*invite)
            return
        if address.is_group and self.groups is not None:
            if message["type"] == "groupchat":
                await self.groups.on_groupchat(message, session, address)
                return
            if message["to"].resource:  # XEP-0045 private message to an occupant
                nick = to_nick(message["to"].resource)
                address = self.bridge.occupant_address(address, nick)
        displayed = message.xml.find(f"{{{MARKERS_NS}}}displayed")
        if displayed is not None and displayed.get("id"):
            await session.mark_message_displayed(address, str(displayed.get("id")))
        if await self._chat_refers(message, session, address):
            return
        if not message["body"]:
            return  # receipts, other markers: nothing to carry over
        replaces = references.replace_id(message)
        refusal = self.bridge.refuse_corrections
        if refusal and replaces is not None:
            raise stanza_error("not-acceptable", refusal)
        origin = None
        if message["id"]:
            wants_receipt = message.xml.find(f"{{{RECEIPTS_NS}}}request") is not None
            self.outbound.remember_sender(message["from"], message["id"], wants_receipt)
            origin = events.Origin(str(message["from"]), wants_receipt)
        text, extras = message_extras(message)
        if replaces is not None:  # XEP-0308: a line that reads as a correction
            quoted = events.Quoted(replaces, None, "")
            await session.send_correction(address, text, quoted, xmpp_id=message["id"] or None)
            return
        await session.send_message(
            address,
            text,
            xmpp_id=message["id"] or None,
            subject=message["subject"] or None,
            thread=message["thread"] or None,
            origin=origin,
            extras=extras,
        )

    async def _on_plain_groupchat(
        self, plain: wire.PlainGroupchat, message: Callable[[], Message]
    ) -> None:
        """`_on_message` for what `wire.plain_groupchat` recognised: the same steps in
        the same order (so the same errors), with what it read instead of slixmpp's
        interfaces and the room's address remembered. It carries no invitation; one
        to the component or to a contact takes the general path (with the `message`
        built then)."""
        assert self.groups is not None
        to = self._jid(plain.to)
        room = self._room(to.node) if to.node else None
        if room is None or not room.is_group:
            await self._on_message(message())
            return
        sender = self._jid(plain.sender)
        session = await self.session_for(sender.bare)
        await self.groups.on_plain_groupchat(sender.full, sender.bare, room, session, plain)

    def _room(self, localpart: str) -> Address:
        """`bridge.parse_address(localpart)`, remembered when it names a room; an
        AddressError is raised each time."""
        room = self._rooms.get(localpart)
        if room is None:
            room = self.bridge.parse_address(localpart)
            if room.is_group:
                if len(self._rooms) >= JIDS_KEPT:
                    self._rooms.clear()
                self._rooms[localpart] = room
        return room

    async def _chat_refers(self, message: Message, session: Session, address: Address) -> bool:
        """XEP-0424 retractions, XEP-0444 reactions and XEP-0085 chat states to a
        contact, passed on to the bridge (as tags, as text, or refused with an error);
        False for anything else. The client names the message by the id it saw
        (XEP-0444 §5). A retraction's XEP-0428 fallback body is never sent as a line:
        a network that cannot retract refuses it (`Session.retract`)."""
        retracted = references.retract_id(message)
        if retracted is not None:
            if address.is_group:  # the room's engine knows its messages' ids
                raise stanza_error("bad-request", "retract a room message with a groupchat one")
            # A contact's message is known by its own legacy id (Outbound.deliver).
            if await self.outbound.chats.legacy_id(message["from"].bare, retracted) == retracted:
                raise stanza_error("forbidden", "you can only retract your own messages")
            await session.retract(address, events.Quoted(retracted, None, ""))
            return True
        reacted = references.reactions(message)
        if reacted is not None:
            target, emojis = reacted
            refusal = references.reaction_refusal(emojis)
            if refusal is not None:
                raise stanza_error("not-acceptable", refusal)
            user = message["from"].bare
            chats = self.outbound.chats
            added, removed = await chats.users_change(user, target, emojis)
            if added or removed:
                await session.react(address, events.Quoted(target, None, ""), added, removed)
            chats.users_set(user, target, emojis)
            return True
        chat_state = references.chat_state(message)
        if chat_state is not None and not message["body"]:
            await session.set_chat_state(address, chat_state)
            return True
        return False

    async def _help(self, user: str) -> str:
        """What a message to the component is answered with; how to register, if needed."""
        jid = self.boundjid.bare
        text = HELP_TEXT.format(name=self.bridge.display_name, jid=jid)
        if (
            self.bridge.default_account(user, None) is None
            and await self.store.get_account(user, self.bridge.name) is None
        ):
            text += " " + registration_text(jid)
        return text

    async def _on_presence(self, stanza: Presence) -> None:
        ptype = stanza["type"]
        user = stanza["from"].bare
        if ptype in SUBSCRIPTION_TYPES:
            await self._on_subscription(stanza)
        elif ptype == "probe":
            await self._on_probe(stanza)
        elif not stanza["to"].node:
            await self._on_user_presence(stanza)
        else:
            address = self._address(stanza)
            if address.is_group and self.groups is not None:
                session = self.sessions.get(user)
                if session is None and ptype in ("unavailable", "error"):
                    return
                session = session or await self.session_for(user, to_nick(stanza["to"].resource))
                await self.groups.on_presence(stanza, session, address)
                if ptype == "unavailable":
                    await self._left_a_room(user)
            elif ptype != "error" and await self.store.get_account(user, self.bridge.name) is None:
                raise self.registration_required()

    async def _left_a_room(self, user: str) -> None:
        """A user seen only in rooms is gone with their last room, as in biboumi.

        Their presence never reaches the gateway when it is not in their roster (no
        XEP-0100 subscription, as for users who never registered), so without this
        their legacy connection would stay open for good.
        """
        assert self.groups is not None
        if not self.sessions.is_online(user) and not self.groups.in_any_room(user):
            await self.sessions.user_gone(user)

    async def _on_user_presence(self, stanza: Presence) -> None:
        """Presence to the component: a user's resource came, changed or went."""
        user, resource = stanza["from"].bare, stanza["from"].resource
        if stanza["type"] in ("unavailable", "error"):
            await self._resource_gone(user, resource or None)
            return
        if await self.store.get_account(user, self.bridge.name) is None:
            return
        shown = ResourcePresence(int(stanza["priority"] or 0), stanza["show"], stanza["status"])
        first = await self.sessions.resource_available(user, resource, shown)
        if first:
            log.info("%s: online", user)
        self.send(presence(self.boundjid.bare, stanza["from"].full))

    async def _resource_gone(self, user: str, resource: str | None) -> None:
        if self.groups is not None:
            known = list(self.sessions.resources.get(user, {}))
            gone = [resource] if resource else known
            # When the user goes offline the session decides what to leave (IRC: QUIT, or
            # PART all but persistent channels); leaving each room first would be noise.
            going_offline = set(known) <= set(gone)
            session = self.sessions.get(user)
            for res in gone:
                for room in self.groups.resource_gone(f"{user}/{res}"):
                    if session is not None and not going_offline:
                        await session.leave(room)
        if await self.sessions.resource_unavailable(user, resource):
            log.info("%s: offline", user)

    async def _on_subscription(self, stanza: Presence) -> None:
        user, ptype, to = stanza["from"].bare, stanza["type"], stanza["to"].bare
        registered = await self.store.get_account(user, self.bridge.name) is not None
        if ptype == "subscribe":
            if stanza["to"].node:
                self._address(stanza)  # refuse addresses that name nothing
            if not registered:
                self.send(presence(to, user, "unsubscribed", registration_text(self.boundjid.bare)))
                return
            self.send(presence(to, user, "subscribed"))
            if not stanza["to"].node and self.sessions.is_online(user):
                self.send(presence(to, user))
        elif ptype == "unsubscribe":
            self.send(presence(to, user, "unsubscribed"))
        log.info("%s: %s to %s", user, ptype, to)

    async def _on_probe(self, stanza: Presence) -> None:
        user, to = stanza["from"].bare, stanza["to"].bare
        if await self.store.get_account(user, self.bridge.name) is None:
            self.send(presence(to, user, "unsubscribed"))
        elif not stanza["to"].node:
            self.send(presence(to, stanza["from"].full))

    async def _on_gateway_query(self, iq: Iq) -> None:
        """XEP-0100 §6.3: turn what a user typed into the JID of that legacy address."""
        reply = iq.reply()
        if iq["type"] == "get":
            reply["gateway"]["desc"] = self.bridge.gateway_desc
            reply["gateway"]["prompt"] = self.bridge.gateway_prompt
        elif iq["type"] == "set":
            address = self.bridge.translate_legacy_id(iq["gateway"]["prompt"])
            reply["gateway"]["jid"] = str(self.outbound.jid_of(address))
        else:
            raise stanza_error("bad-request", "expected a get or set")
        reply.send()

    async def _on_command(self, iq: Iq) -> None:
        address = self._address(iq) if iq["to"].node else None
        await self.commands.handle(iq, address)

    async def _on_ping(self, iq: Iq) -> None:
        """XEP-0199; a ping to an occupant is XEP-0410's "am I still in the room?"."""
        if self.groups is not None and iq["to"].node and iq["to"].resource:
            address = self._address(iq)
            if address.is_group:
                self.groups.check_occupant(iq["from"].full, address, iq["to"].resource)
        iq.reply().send()

    async def _on_muc_admin(self, iq: Iq) -> None:
        assert self.groups is not None
        address = self._address(iq)
        await self.groups.on_iq_admin(iq, await self.session_for(iq["from"].bare), address)

    async def _archived_room(self, iq: Iq) -> Address:
        """The room a MAM request is for; only rooms, and only registered users, have one."""
        address = self._address(iq)
        if not address.is_group or iq["to"].resource:
            raise stanza_error("service-unavailable", "only room JIDs have an archive here")
        if await self.store.get_account(iq["from"].bare, self.bridge.name) is None:
            raise self.registration_required()
        return address

    async def _on_mam(self, iq: Iq) -> None:
        assert self.mam is not None
        if iq["type"] in ("get", "set"):  # a result or error is nobody's question
            await self.mam.query(iq, await self._archived_room(iq))

    async def _on_mam_metadata(self, iq: Iq) -> None:
        assert self.mam is not None
        if iq["type"] in ("get", "set"):
            await self.mam.metadata(iq, await self._archived_room(iq))
