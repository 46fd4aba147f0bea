"""The XEP-0045 side of group chats, for any bridge with `supports_groups`.

The bridge speaks in room events (`RoomJoined`, `OccupantLeft`, ...) about one legacy
membership per user and room; XMPP has one occupant per *resource*. This engine keeps,
per (user, room), the legacy view (own nick, occupants, subject) and which of the
user's resources are in, so a second resource gets the full join from memory, every
event fans out to all joined resources, and the legacy side leaves only when the
user's last resource does.

With an archive (component.archive) every room message is stored for its user, also
while none of their resources is in the room (a channel the bridge stays in while they
are offline). Each live message carries its archive id as an XEP-0359 stanza-id, so
clients match live and MAM copies; every join (the first resource's or a later one's)
serves the last lines as discussion history (XEP-0045 §7.2.15).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import logging
import secrets
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from slixmpp import JID, Iq, Message, Presence
from slixmpp.plugins.xep_0045.stanza import MUCAdminQuery
from slixmpp.xmlstream import ET, StanzaBase, register_stanza_plugin
from sqlalchemy.exc import SQLAlchemyError

from bridges import events
from bridges.address import Address
from bridges.base import Bridge, Session
from bridges.events import GroupFeature
from bridges.timestamps import parse_timestamp
from component import references, wire
from component.archive import REACTION, RETRACTED, Archive, Line, stanza_id_for
from component.errors import error_type, stanza_error
from component.nick_resources import to_nick, to_resource
from component.xep_0203 import add_delay

log = logging.getLogger(__name__)

# The gateway routes muc#admin iqs by this plugin ("iq/mucadmin_query"). slixmpp
# registers it only for a stream that loads its xep_0045 plugin, which a component does
# not: without this line a kick is answered feature-not-implemented.
register_stanza_plugin(Iq, MUCAdminQuery)

MUC_NS = "http://jabber.org/protocol/muc"
MUC_USER_NS = MUC_NS + "#user"
MUC_ADMIN_NS = MUC_NS + "#admin"
CONFERENCE_NS = "jabber:x:conference"
SELF_PING_OPTIMIZATION = MUC_NS + "#self-ping-optimization"
"""XEP-0410: the service answers occupant pings itself (see `check_occupant`)."""
SID_NS = "urn:xmpp:sid:0"
HINTS_NS = "urn:xmpp:hints"
MAM_NS = "urn:xmpp:mam:2"
ARCHIVE_FEATURES = (MAM_NS, MAM_NS + "#extended", SID_NS)
OCCUPANT_ID_NS = "urn:xmpp:occupant-id:0"

SELF = "110"
NICK_MODIFIED = "210"
CONFIG_CHANGED = "104"
NEW_NICK = "303"
KICKED = "307"
SHUTDOWN = "332"
"""Removed because of a system shutdown: the nearest code for a lost legacy link."""

ROOM_JIDS_KEPT = 10_000
REACTIONS_KEPT = 10_000
"""Reaction sets kept in memory (XEP-0444 sends whole sets, IRC single changes); the
archive has every set, so a set evicted or lost with a restart is read back from it."""
HISTORY_LIMIT = 250
"""Most discussion history lines served on a join, whatever `<history>` asks for."""
RESENT_KEPT = 1_000
"""The users' newest own lines with an origin-id, in this process (`_sent_lines`): one
a client sends again (the same origin-id, after a reconnect, when it had not seen the
reflection) is reflected again instead of going to the network a second time."""

ROOM_EVENTS = (
    events.RoomJoined,
    events.RoomJoinFailed,
    events.RoomLeft,
    events.OccupantJoined,
    events.OccupantLeft,
    events.NickChanged,
    events.NickConflict,
    events.SubjectChanged,
    events.Reaction,
    events.Retraction,
    events.Typing,
)


class Sending(NamedTuple):
    """A room message of the user's that the bridge has not yet reported written: its
    archive `Line` but for what the network decides when it takes it (the time, the
    legacy ids), so the line is built once, by `written` (a frozen `Line` costs about
    2 µs to build; tests/unit/test_wire.py holds every other field carried through)."""

    sender: str
    """The full JID of the resource that sent it."""
    user: str
    room: str
    stanza_id: str
    nick: str | None
    body: str
    kind: str
    origin_id: str | None
    xmpp_id: str | None
    reply_to: str | None
    replaces: str | None
    occupant_id: str | None

    def written(
        self, sent: datetime, legacy_id: str | None, more_legacy_ids: tuple[str, ...]
    ) -> Line:
        """The line as the network took it, at `sent` with those legacy ids."""
        return Line(
            self.user,
            self.room,
            self.stanza_id,
            sent,
            self.nick,
            self.body,
            self.kind,
            legacy_id,
            self.origin_id,
            self.xmpp_id,
            self.reply_to,
            self.replaces,
            more_legacy_ids,
            self.occupant_id,
        )


class Invite(NamedTuple):
    room: Address
    contact: Address
    reason: str | None


class RoomInfo(NamedTuple):
    """What disco#info says about a room: (category, type, name) identities, features,
    and XEP-0128 forms (the reaction restrictions)."""

    identities: list[tuple[str, str, str]]
    features: list[str]
    forms: tuple[ET.Element, ...] = ()


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """What a joining client asked for in `<history/>`; unset limits take the default."""

    max_stanzas: int | None = None
    max_chars: int | None = None
    since: datetime | None = None

    @classmethod
    def of(cls, presence: Presence) -> HistoryRequest:
        element = presence.xml.find(f"{{{MUC_NS}}}x/{{{MUC_NS}}}history")
        if element is None:
            return cls()
        since = parse_timestamp(element.get("since"))
        seconds = _int(element.get("seconds"))
        if seconds is not None:
            recent = datetime.now(UTC) - timedelta(seconds=seconds)
            since = max(since, recent) if since else recent
        return cls(_int(element.get("maxstanzas")), _int(element.get("maxchars")), since)

    def limit(self, default: int) -> int:
        wanted = default if self.max_stanzas is None else self.max_stanzas
        return 0 if self.max_chars == 0 else min(wanted, HISTORY_LIMIT)

    def within_chars(self, stanzas: list[tuple[str, Message]]) -> list[tuple[str, Message]]:
        """The newest stanzas whose XML fits in `maxchars` (XEP-0045 counts the XML)."""
        if self.max_chars is None:
            return stanzas
        kept, total = [], 0
        for stanza_id, stanza in reversed(stanzas):
            total += len(str(stanza))
            if total > self.max_chars:
                break
            kept.append((stanza_id, stanza))
        kept.reverse()
        return kept


@dataclass
class RoomState:
    """One user's membership of one room, shared by all their resources."""

    room: Address
    user: str
    nick: str = ""
    joined: bool = False
    occupants: dict[str, events.Occupant] = field(default_factory=dict)
    subject: str | None = None
    subject_by: str | None = None
    subject_at: datetime | None = None
    resources: dict[str, str] = field(default_factory=dict)
    """Joined full JIDs → the nick each asked for (to flag 210 when it differs)."""
    pending: dict[str, str] = field(default_factory=dict)
    """Full JIDs waiting for the legacy join to complete → requested nick."""
    history: dict[str, HistoryRequest] = field(default_factory=dict)
    """Joining full JIDs → the discussion history they asked for."""
    catching_up: dict[str, list[tuple[str, Message | str]]] = field(default_factory=dict)
    """Resources whose history is being read → live messages held until it is sent."""

    @property
    def empty(self) -> bool:
        return not self.resources and not self.pending


class GroupChats:
    """Turns MUC stanzas into Session calls and room events into MUC stanzas."""

    def __init__(
        self,
        send: Callable[[StanzaBase | str], None],
        component_jid: str,
        bridge: Bridge,
        archive: Archive | None = None,
        history_stanzas: int = 20,
        occupant_salt: bytes | None = None,
        *,
        text_stanzas: bool = False,
    ) -> None:
        """`text_stanzas`: send live room messages written as text (component.wire),
        as the gateway does; unit tests that read what is sent as objects do not."""
        self._send = send
        self._salt = occupant_salt or secrets.token_bytes(32)
        """Keys the XEP-0421 occupant ids: without it, hashing known account names
        would tell who is behind an id. The gateway passes a stable secret."""
        self.text_stanzas = text_stanzas
        self.component_jid = component_jid
        self.bridge = bridge
        self.archive = archive
        self.history_stanzas = history_stanzas
        self.rooms: dict[tuple[str, Address], RoomState] = {}
        self._bare_jids: dict[Address, str] = {}
        self._occupant_jids: dict[tuple[Address, str | None], str] = {}
        self._occupant_ids: dict[tuple[Address, str], str] = {}
        self._sending: dict[tuple[str, str], Sending] = {}
        """(user, token) → what to reflect once written: the token is handed to the
        bridge as the xmpp_id, a bridge's report names it, and only the user whose
        session reported it may take that line."""
        self._sending_origins: dict[tuple[str, str, str], str] = {}
        """(user, room's legacy id, origin-id) → the token of that line while the bridge
        has not reported it, so that a copy re-sent meanwhile is not sent too. Keyed as
        `Sending` names the room, so the entry leaves with the line whatever address
        the bridge's report gives."""
        self._sent_lines: OrderedDict[tuple[str, str, str], Line] = OrderedDict()
        """(user, room's legacy id, origin-id) → the line as written, the newest `RESENT_KEPT`
        (an OrderedDict: a dict's oldest key, taken once per line, cost 2 µs)."""
        self._token_prefix = secrets.token_hex(16)
        self._tokens = itertools.count()
        self._reactions: dict[tuple[str, Address, str, str | None], tuple[str, ...]] = {}
        """(user, room, stanza id, nick or None for the user) → current reactions: XEP-0444
        sends whole sets, legacy networks (IRC) single changes."""

    # --- addresses -------------------------------------------------------------------

    def room_bare_jid(self, room: Address) -> str:
        """`room_jid(room)` as text, remembered: every archived line names it twice."""
        known = self._bare_jids.get(room)
        if known is None:
            if len(self._bare_jids) > ROOM_JIDS_KEPT:
                self._bare_jids.clear()
            known = self._bare_jids[room] = str(self.room_jid(room))
        return known

    def occupant_jid(self, room: Address, nick: str | None) -> str:
        """`room_jid(room, nick)` as text, remembered: each live message names its sender."""
        key = (room, nick)
        known = self._occupant_jids.get(key)
        if known is None:
            if len(self._occupant_jids) > ROOM_JIDS_KEPT:
                self._occupant_jids.clear()
            known = self._occupant_jids[key] = str(self.room_jid(room, nick))
        return known

    def room_jid(self, room: Address, nick: str | None = None) -> JID:
        jid = JID(f"{self.bridge.format_address(room)}@{self.component_jid}")
        if nick:
            jid.resource = to_resource(nick)
        return jid

    def disco_info(self, room: Address, native: frozenset[GroupFeature] = frozenset()) -> RoomInfo:
        """Identity conference/text and the MUC features a legacy room has, with the
        message features the user's connection carries there right now (`native`), so
        clients offer only what reaches the other side.

        This is all XMPP has to say what messages can do: XEP-0461, 0444, 0308, 0424,
        0085 and 0333 define no hint on a single message, and every message of an IRC
        channel can do the same (the room's), so clients read it here.
        """
        reactions = GroupFeature.REACTIONS in native
        return RoomInfo(
            [("conference", "text", room.legacy_id)],
            [
                MUC_NS,
                SELF_PING_OPTIMIZATION,
                "muc_public",
                "muc_open",
                "muc_temporary",
                "muc_semianonymous",
                *(ARCHIVE_FEATURES if self.archive is not None else ()),
                *((OCCUPANT_ID_NS,) if self.bridge.occupant_ids else ()),
                *references.ALWAYS,
                *(references.FEATURES[feature] for feature in GroupFeature if feature in native),
            ],
            (references.restrictions_form(),) if reactions else (),
        )

    def occupant_id(self, room: Address, identity: str) -> str:
        """XEP-0421 §4: the same for every observer in this room, different in every
        other room, and no way back to the identity (a keyed hash). Remembered: each
        live message carries its sender's."""
        key = (room, identity)
        known = self._occupant_ids.get(key)
        if known is None:
            if len(self._occupant_ids) > ROOM_JIDS_KEPT:
                self._occupant_ids.clear()
            data = f"{self.room_bare_jid(room)}\0{identity}".encode(errors="surrogatepass")
            digest = hmac.new(self._salt, data, hashlib.sha256).digest()
            known = self._occupant_ids[key] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        return known

    # --- from the user ---------------------------------------------------------------

    async def on_presence(self, presence: Presence, session: Session, room: Address) -> None:
        """Join, nick change or leave for the resource that sent `presence`."""
        full, user = presence["from"].full, presence["from"].bare
        nick = to_nick(presence["to"].resource)
        key = (user, room)
        state = self.rooms.get(key)
        if presence["type"] == "error":
            return
        if presence["type"] == "unavailable":
            await self._resource_leaves(key, state, full, session)
            return
        if not nick:
            raise stanza_error("jid-malformed", "join with a nickname: room@service/nick")
        if state is not None and full in state.resources:
            if nick != state.nick:
                await session.change_nick(room, nick)
            return
        if state is not None and state.joined:
            state.resources[full] = nick
            await self._send_full_join(state, full, nick, HistoryRequest.of(presence))
            return
        if state is None:
            state = self.rooms[key] = RoomState(room, user)
        if full in state.pending:
            return
        state.history[full] = HistoryRequest.of(presence)
        first = not state.pending
        state.pending[full] = nick
        if first:
            try:
                await session.join(room, nick, _muc_password(presence))
            except Exception:
                state.pending.pop(full, None)
                if state.empty:
                    self.rooms.pop(key, None)
                raise

    async def _resource_leaves(
        self, key: tuple[str, Address], state: RoomState | None, full: str, session: Session
    ) -> None:
        if state is None or (full not in state.resources and full not in state.pending):
            return
        nick = state.resources.pop(full, None)
        state.pending.pop(full, None)
        if nick is not None:
            self._send(self._self_presence(state, full, available=False))
        if state.empty:
            del self.rooms[key]
            await session.leave(state.room)

    async def on_groupchat(self, message: Message, session: Session, room: Address) -> None:
        """A message to the room: send it; it is reflected (and archived) when the
        bridge reports it written to the legacy network (`_on_sent`), so what the
        client shows as sent is on the network, and a line lost with the gateway gets
        an error instead (`_on_not_sent`)."""
        full, user = message["from"].full, message["from"].bare
        state = self._joined(user, full, room)
        body, subject = message["body"], message["subject"]
        if subject and not body:
            await session.set_subject(room, subject)
            return
        if await self._refers(message, state, session):
            return
        if not body:
            return
        origin = message.xml.find(f"{{{SID_NS}}}origin-id")
        origin_id = (origin.get("id") if origin is not None else None) or None
        replaces = references.replace_id(message)
        answered = references.reply_id(message)
        if answered and not replaces:
            body = references.without_fallback(message, body, references.REPLY_NS)
        target = await self._find(user, room, replaces or answered)
        await self._send_line(
            state,
            session,
            full,
            body,
            message["id"] or None,
            origin_id,
            reply_to=target.stanza_id if answered and target else None,
            replaces=replaces,
            target=target,
        )

    async def on_plain_groupchat(
        self, full: str, user: str, room: Address, session: Session, plain: wire.PlainGroupchat
    ) -> None:
        """`on_groupchat` for a message `wire.plain_groupchat` recognised (from the
        resource `full` of `user`): nothing in it refers to another message."""
        state = self._joined(user, full, room)
        await self._send_line(state, session, full, plain.body, plain.id or None, plain.origin_id)

    def _joined(self, user: str, full: str, room: Address) -> RoomState:
        state = self.rooms.get((user, room))
        if state is None or full not in state.resources:
            raise stanza_error("not-acceptable", "join the room before sending to it")
        return state

    async def _send_line(
        self,
        state: RoomState,
        session: Session,
        full: str,
        body: str,
        xmpp_id: str | None,
        origin_id: str | None,
        *,
        reply_to: str | None = None,
        replaces: str | None = None,
        target: Line | None = None,
    ) -> None:
        """Hand the user's line to the bridge as a message, a reply to `target` or a
        correction of `replaces`, remembering what to reflect once it is written."""
        room, user = state.room, state.user
        if origin_id and self._sent_before(state, full, body, origin_id):
            return
        # Unguessable (the prefix is never shown): a Delivered naming another user's
        # token would show them that user's line. A counter spares a system call.
        token = f"{self._token_prefix}{next(self._tokens)}"
        self._sending[user, token] = Sending(
            full,
            user,
            room.legacy_id,
            # Random: a client re-sending its message (same origin-id) is archived once
            # all the same (`Archive._not_resent`), and an id derived from the
            # origin-id would land on a random page of the archive's index.
            stanza_id_for(user, room.legacy_id, None),
            state.nick,
            body,
            _kind(body, events.MessageKind.MESSAGE),
            origin_id,
            xmpp_id,
            reply_to,
            replaces,
            self._own_occupant(state).occupant_id,
        )
        if origin_id:
            self._sending_origins[user, room.legacy_id, origin_id] = token
        try:
            if replaces:
                quoted = _quoted(target) if target else events.Quoted(None, None, "")
                await session.send_correction(room, body, quoted, xmpp_id=token)
            elif target is not None:
                await session.send_reply(room, body, _quoted(target), xmpp_id=token)
            else:
                await session.send_message(room, body, xmpp_id=token)
        except BaseException:
            self._taken(user, token)
            raise

    def _sent_before(self, state: RoomState, full: str, body: str, origin_id: str) -> bool:
        """Whether the line with this origin-id and body was sent already: a client
        sends again, with the same origin-id, what it had not seen reflected when its
        connection broke. Written, it is reflected again to `full`; still on its way,
        its reflection reaches every resource in the room, and an error would reach
        `full`, the resource that asked last."""
        user, room = state.user, state.room
        written = self._sent_lines.get((user, room.legacy_id, origin_id))
        if written is not None and written.body == body:
            log.info("%s: %s sent %r again; reflected, not sent again", user, full, origin_id)
            self._send(self._live_stanza(room, full, written))
            return True
        token = self._sending_origins.get((user, room.legacy_id, origin_id))
        if token is None:
            return False
        sending = self._sending.get((user, token))
        if sending is None or sending.body != body:
            return False
        log.info("%s: %s sent %r again before it was written; sent once", user, full, origin_id)
        self._sending[user, token] = sending._replace(sender=full)
        return True

    def _taken(self, user: str, token: str) -> Sending | None:
        """The line of `token`, no longer on its way (written, failed or not sent)."""
        sending = self._sending.pop((user, token), None)
        if sending is not None and sending.origin_id:
            key = (user, sending.room, sending.origin_id)
            if self._sending_origins.get(key) == token:  # not a later line's, same id
                del self._sending_origins[key]
        return sending

    async def _refers(self, message: Message, state: RoomState, session: Session) -> bool:
        """A retraction, reactions, a displayed marker or a chat state without a body:
        passed on (or refused with an error); False for anything else."""
        room, body = state.room, message["body"]
        retracted = references.retract_id(message)
        if retracted is not None:
            target = await self._find_own(state, retracted, "retract")
            await session.retract(room, _quoted(target))
            return True
        reacted = references.reactions(message)
        if reacted is not None:
            await self._react(message, state, session, *reacted)
            return True
        if body:
            return False
        displayed = references.displayed_id(message)
        if displayed is not None:
            seen = await self._find(state.user, room, displayed)
            if seen is not None:
                await session.mark_displayed(room, _quoted(seen))
            return True
        chat_state = references.chat_state(message)
        if chat_state is not None:
            await session.set_chat_state(room, chat_state)
        return True

    async def _find(
        self, user: str, room: Address, message_id: str | None, *, every_legacy_id: bool = False
    ) -> Line | None:
        """The archived line a client or the legacy side names, if it is known."""
        if self.archive is None or not message_id:
            return None
        try:
            return await self.archive.find(
                user, room.legacy_id, message_id, every_legacy_id=every_legacy_id
            )
        except (SQLAlchemyError, OSError) as exc:
            log.warning("%s: cannot look up %r in %s: %s", user, message_id, room.legacy_id, exc)
            return None

    async def _find_own(self, state: RoomState, message_id: str, action: str) -> Line:
        """The user's own line `message_id`, with every legacy id of it (a retraction
        removes each line of a multi-line message)."""
        line = await self._find(state.user, state.room, message_id, every_legacy_id=True)
        if line is None:
            raise stanza_error("item-not-found", f"cannot {action} {message_id!r}: unknown here")
        if line.nick != state.nick and line.xmpp_id is None and line.origin_id is None:
            raise stanza_error("forbidden", f"you can only {action} your own messages")
        return line

    async def _react(
        self,
        message: Message,
        state: RoomState,
        session: Session,
        target_id: str,
        emojis: list[str],
    ) -> None:
        """XEP-0444 sends the user's whole set; the bridge gets what changed. Every
        resource of the user sees the new set (the room's reflection)."""
        refusal = references.reaction_refusal(emojis)
        if refusal is not None:
            raise stanza_error("not-acceptable", refusal)
        target = await self._find(state.user, state.room, target_id)
        if target is None:
            raise stanza_error("item-not-found", f"cannot react to {target_id!r}: unknown here")
        before = await self._current_reactions(state, target.stanza_id, None)
        added = [emoji for emoji in emojis if emoji not in before]
        removed = [emoji for emoji in before if emoji not in emojis]
        if added or removed:
            await session.react(state.room, _quoted(target), added, removed)
        line = self._reaction_line(
            state,
            target.stanza_id,
            emojis,
            stanza_id_for(state.user, state.room.legacy_id, None),
            nick=state.nick,
            xmpp_id=message["id"] or uuid.uuid4().hex,
            occupant_id=self._own_occupant(state).occupant_id,
        )
        self._archive_reactions(state, line, None)

    async def _current_reactions(
        self, state: RoomState, target: str, nick: str | None
    ) -> tuple[str, ...]:
        """The set `nick` (None: the user) has on the line `target` now: remembered,
        else the archive's newest (after a restart, or once evicted)."""
        key = (state.user, state.room, target, nick)
        known = self._reactions.get(key)
        if known is not None or self.archive is None:
            return known or ()
        try:
            found = await self.archive.reactions(state.user, state.room.legacy_id, target, nick)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("%s: cannot read the reactions to %s: %s", state.user, target, exc)
            return ()
        return found or ()

    def _reaction_line(
        self,
        state: RoomState,
        target: str,
        emojis: list[str],
        stanza_id: str,
        *,
        nick: str,
        sent: datetime | None = None,
        legacy_id: str | None = None,
        xmpp_id: str | None = None,
        occupant_id: str | None = None,
    ) -> Line:
        """A sender's whole set of reactions to `target` as an archive line."""
        return Line(
            state.user,
            state.room.legacy_id,
            stanza_id,
            sent or datetime.now(UTC),
            nick,
            "\n".join(emojis),
            REACTION,
            legacy_id=legacy_id,
            xmpp_id=xmpp_id,
            reply_to=target,
            occupant_id=occupant_id,
        )

    def _archive_reactions(self, state: RoomState, line: Line, nick: str | None) -> None:
        """Remember and archive a sender's new set (`line`), and show it to every
        joined resource as MAM will show it later (same id, occupant id, stanza-id)."""
        key = (state.user, state.room, line.reply_to or "", nick)
        emojis = tuple(line.body.split("\n")) if line.body else ()
        self._reactions.pop(key, None)
        if len(self._reactions) >= REACTIONS_KEPT:
            del self._reactions[next(iter(self._reactions))]
        self._reactions[key] = emojis
        if self.archive is not None:
            self.archive.add(line)
        for resource in state.resources:
            self._send(self.line_stanza(state.room, resource, line, delayed=False))

    def _on_sent(self, user: str, event: events.Delivered) -> None:
        """The bridge wrote the message: reflect and archive it, stamped with the
        network's time and id if it gave them (the echo), else now."""
        sending = self._taken(user, event.xmpp_id) if event.xmpp_id else None
        if sending is None:
            return
        line = sending.written(
            event.sent or datetime.now(UTC), event.legacy_id, event.legacy_ids[1:]
        )
        if line.origin_id:
            if len(self._sent_lines) >= RESENT_KEPT:
                self._sent_lines.popitem(last=False)
            self._sent_lines[user, sending.room, line.origin_id] = line
        state = self.rooms.get((user, event.to))
        if state is not None:
            self._archive_and_send(state, line)
            return
        # Every resource left meanwhile (the gateway is stopping, the user went): the
        # sender still learns that its message went out, the archive still has it.
        if self.archive is not None:
            self.archive.add(line)
        self._send(self._live_stanza(event.to, sending.sender, line))

    def _on_not_sent(self, user: str, event: events.DeliveryFailed) -> None:
        """XEP-0045 §7.4 / RFC 6120 §8.3: a message error with the original id, to the
        resource that sent it, so its client marks the message as failed."""
        sending = self._taken(user, event.xmpp_id) if event.xmpp_id else None
        if sending is None:
            return
        error = Message()
        error["from"], error["to"], error["type"] = self.room_jid(event.to), sending.sender, "error"
        if sending.xmpp_id:
            error["id"] = sending.xmpp_id
        error["body"] = sending.body
        error["error"]["condition"] = event.condition
        error["error"]["type"] = error_type(event.condition)
        error["error"]["text"] = event.text
        self._send(error)

    async def on_iq_admin(self, iq: Iq, session: Session, room: Address) -> None:
        """muc#admin: role `none` kicks, other roles map to the legacy rank change."""
        state = self.rooms.get((iq["from"].bare, room))
        if state is None or not state.resources:
            raise stanza_error("not-acceptable", "join the room first")
        if iq["type"] != "set":
            raise stanza_error("feature-not-implemented", "only role changes and kicks")
        items = iq.xml.findall(f"{{{MUC_ADMIN_NS}}}query/{{{MUC_ADMIN_NS}}}item")
        if not items:
            raise stanza_error("bad-request", "no item in the muc#admin query")
        for item in items:
            nick, role = to_nick(item.get("nick") or ""), item.get("role")
            if not nick or not role:
                raise stanza_error("feature-not-implemented", "only changes by nick and role")
            reason = item.findtext(f"{{{MUC_ADMIN_NS}}}reason") or None
            if role == "none":
                await session.kick(room, nick, reason)
            elif role in {r.value for r in events.Role}:
                await session.set_role(room, nick, events.Role(role))
            else:
                raise stanza_error("bad-request", f"unknown role {role!r}")
        self._send(iq.reply(clear=True))

    def resource_gone(self, user_full_jid: str) -> list[Address]:
        """Forget an offline resource; return the rooms it was the user's last one in."""
        emptied = []
        for key, state in list(self.rooms.items()):
            if key[0] != JID(user_full_jid).bare:
                continue
            state.resources.pop(user_full_jid, None)
            state.pending.pop(user_full_jid, None)
            if state.empty:
                del self.rooms[key]
                emptied.append(state.room)
        return emptied

    def in_any_room(self, user: str) -> bool:
        """Whether any resource of `user` is in a room or joining one."""
        return any(key[0] == user for key in self.rooms)

    def invitation(self, message: Message, to: Address) -> Invite | None:
        """The invite `message` carries, if any: XEP-0045 mediated (sent to the room)
        or XEP-0249 direct (sent to the contact). Both ends must be on this gateway."""
        if to.is_group:
            item = message.xml.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}invite")
            if item is None:
                return None
            contact = self._local_address(item.get("to"), "invitee")
            reason = item.findtext(f"{{{MUC_USER_NS}}}reason")
            room = to
        else:
            direct = message.xml.find(f"{{{CONFERENCE_NS}}}x")
            if direct is None:
                return None
            room = self._local_address(direct.get("jid"), "room")
            reason = direct.get("reason")
            contact = to
        if not room.is_group or contact.is_group:
            raise stanza_error("bad-request", "invite a contact to a room")
        return Invite(room, contact, reason or None)

    def _local_address(self, jid: str | None, what: str) -> Address:
        parsed = JID(jid or "")
        if parsed.domain != self.component_jid or not parsed.node:
            raise stanza_error("not-acceptable", f"the {what} must be on {self.component_jid}")
        return self.bridge.parse_address(parsed.node)

    def check_occupant(self, full_jid: str, room: Address, nick: str) -> None:
        """XEP-0410 self-ping: raise unless `full_jid` is in `room` and `nick` is there.

        Clients ping their own occupant JID to learn whether they are still joined
        (after a gateway restart, say); answering for a room they are not in would keep
        them from ever rejoining.
        """
        nick = to_nick(nick)
        state = self.rooms.get((JID(full_jid).bare, room))
        if state is None or full_jid not in state.resources:
            raise stanza_error("not-acceptable", "you are not in this room; join it again")
        if nick != state.nick and nick not in state.occupants:
            raise stanza_error("item-not-found", f"nobody is called {nick} in this room")

    def leave_all(self, reason: str) -> None:
        """Tell every joined resource it is out of every room (332: service shut down)."""
        for (user, _), state in list(self.rooms.items()):
            self._on_left(user, state, events.RoomLeft(state.room, reason))

    def forget_user(self, user: str) -> None:
        """Drop every room of a user who unregistered (their archive goes with the account)."""
        for key in [key for key in self.rooms if key[0] == user]:
            del self.rooms[key]
        for sent in [sent for sent in self._sent_lines if sent[0] == user]:
            del self._sent_lines[sent]
        if self.archive is not None:
            self.archive.forget(user)

    # --- from the legacy side --------------------------------------------------------

    async def on_event(self, user: str, event: events.Event) -> bool:
        """Fan a room event out to the joined resources; False if not a room event."""
        if (
            isinstance(event, events.Typing | events.Reaction | events.Retraction)
            and not event.room.is_group
        ):
            return False  # in a one-to-one chat (component.outbound)
        if isinstance(event, events.Delivered | events.DeliveryFailed):
            if not event.to.is_group:
                return False
            if isinstance(event, events.Delivered):
                self._on_sent(user, event)
            else:
                self._on_not_sent(user, event)
            return True
        if isinstance(event, events.Message):
            if not event.sender.is_group:
                return False
            await self._on_message(user, event)
            return True
        if not isinstance(event, ROOM_EVENTS):
            return False
        state = self.rooms.get((user, event.room))
        if isinstance(event, events.Retraction | events.Reaction):
            # Also while nobody is in (a persistent channel): the archive must know it.
            if isinstance(event, events.Retraction):
                await self._on_retraction(state or RoomState(event.room, user), event)
            else:
                await self._on_reaction(state or RoomState(event.room, user), event)
            return True
        if state is None:
            return True  # no resource is in that room (e.g. joined on connect): nothing to show
        match event:
            case events.RoomJoined():
                await self._on_joined(state, event)
            case events.RoomJoinFailed():
                self._on_join_failed(user, state, event)
            case events.RoomLeft():
                self._on_left(user, state, event)
            case events.OccupantJoined():
                self._on_occupant(state, event.occupant)
            case events.OccupantLeft():
                self._on_occupant_left(state, event)
            case events.NickChanged():
                self._on_nick_changed(state, event)
            case events.NickConflict():
                self._on_nick_conflict(state, event)
            case events.SubjectChanged():
                state.subject, state.subject_by = event.subject, event.by
                state.subject_at = event.at
                for resource in state.resources:
                    self._send(self._subject(state, resource, live=True))
            case events.Typing():
                for resource in state.resources:
                    shown = self._bodiless(state, event.nick, resource)
                    references.add_chat_state(shown, event.state)
                    self._send(shown)
        return True

    def _bodiless(self, state: RoomState, nick: str, to: str, msg_id: str = "") -> Message:
        shown = Message()
        shown["from"], shown["to"], shown["type"] = self.room_jid(state.room, nick), to, "groupchat"
        shown["id"] = msg_id or uuid.uuid4().hex
        return shown

    async def _on_reaction(self, state: RoomState, event: events.Reaction) -> None:
        """A legacy reaction changes the occupant's set; XEP-0444 shows the whole set.
        Archived also while nobody is in, like a message."""
        target = await self._find(state.user, state.room, event.target)
        if target is None:
            log.info("%s: a reaction to %r, which is not archived", state.user, event.target)
            return
        before = await self._current_reactions(state, target.stanza_id, event.nick)
        emojis = [e for e in before if e != event.emoji]
        if not event.removed:
            emojis.append(event.emoji)
        line = self._reaction_line(
            state,
            target.stanza_id,
            emojis[-references.MAX_REACTIONS :],
            stanza_id_for(state.user, state.room.legacy_id, event.legacy_id, event.sent),
            nick=event.nick,
            sent=event.sent,
            legacy_id=event.legacy_id,
            occupant_id=event.occupant_id,
        )
        self._archive_reactions(state, line, event.nick)

    async def _on_retraction(self, state: RoomState, event: events.Retraction) -> None:
        """The archive keeps a tombstone; clients remove the message (XEP-0424)."""
        target = await self._find(state.user, state.room, event.target)
        if target is None:
            log.info("%s: a retraction of %r, which is not archived", state.user, event.target)
            return
        if target.kind == RETRACTED:
            # Already removed: the REDACT of another line of the same message (one per
            # line), or a replay; clients saw the retraction once.
            return
        if self.archive is not None:
            try:
                await self.archive.retract(state.user, state.room.legacy_id, target.stanza_id)
            except (SQLAlchemyError, OSError) as exc:
                log.warning(
                    "%s: could not mark %s retracted: %s", state.user, target.stanza_id, exc
                )
        # Someone else's line removed (an IRC operator): XEP-0425 moderation, from the
        # room, since clients ignore a retraction that is not from the author.
        moderator = (
            None if event.nick == target.nick else str(self.room_jid(state.room, event.nick))
        )
        for resource in state.resources:
            shown = self._bodiless(state, event.nick, resource)
            if moderator is not None:
                shown["from"] = self.room_jid(state.room)
            references.add_retraction(shown, target.stanza_id, event.nick, moderator, event.reason)
            self._send(shown)

    async def _on_message(self, user: str, event: events.Message) -> None:
        """Archive a room message (whoever is in) and show it to the joined resources."""
        room = event.sender
        answered = await self._find(user, room, event.reply_to)
        line = Line(
            user,
            room.legacy_id,
            stanza_id_for(user, room.legacy_id, event.legacy_id, event.sent),
            event.timestamp or event.sent or datetime.now(UTC),
            event.nick,
            event.text,
            _kind(event.text, event.kind),
            legacy_id=event.legacy_id,
            reply_to=answered.stanza_id if answered else None,
            occupant_id=event.occupant_id,
        )
        state = self.rooms.get((user, room))
        if state is None or not state.resources:
            if self.archive is not None:
                self.archive.add(line)  # served as history on the next join
            if event.highlight:
                self._send(self._highlight(user, room, line, event.timestamp))
            return
        self._archive_and_send(state, line, delayed=event.timestamp is not None)

    def _highlight(self, user: str, room: Address, line: Line, sent: datetime | None) -> Message:
        """A line naming the user while none of their clients is in the room, as a
        private message from the occupant to their bare JID: their server keeps it
        offline (a groupchat message to nobody would be dropped) and phones notify."""
        message = Message()
        message["from"], message["to"] = self.room_jid(room, line.nick), user
        message["type"], message["body"], message["id"] = "chat", line.body, uuid.uuid4().hex
        ET.SubElement(message.xml, f"{{{MUC_USER_NS}}}x")  # XEP-0045 §7.5: a room PM
        ET.SubElement(message.xml, f"{{{HINTS_NS}}}store")
        if sent is not None:
            add_delay(message, sent, str(self.room_jid(room)))
        return message

    def _archive_and_send(self, state: RoomState, line: Line, *, delayed: bool = False) -> None:
        """Queue `line` for the archive, then send it to every joined resource.

        A resource still reading its history on join gets it after that history.
        """
        if self.archive is not None:
            self.archive.add(line)
        for resource in state.resources:
            stanza = (
                self.line_stanza(state.room, resource, line, delayed=delayed)
                if delayed
                else self._live_stanza(state.room, resource, line)
            )
            held = state.catching_up.get(resource)
            if held is not None:
                held.append((line.stanza_id, stanza))
            else:
                self._send(stanza)

    async def _on_joined(self, state: RoomState, event: events.RoomJoined) -> None:
        state.joined, state.nick = True, event.nick
        state.occupants = {o.nick: o for o in event.occupants}
        if event.own is not None:
            state.occupants[event.nick] = event.own
        state.subject, state.subject_by = event.subject, event.subject_by
        state.subject_at = event.subject_at
        waiting, state.pending = state.pending, {}
        for resource, requested in waiting.items():
            state.resources[resource] = requested
            wanted = state.history.pop(resource, HistoryRequest())
            await self._send_full_join(state, resource, requested, wanted)
            if event.features:
                # A client asked disco#info before the connection was open, and saw
                # none of these: 104 (configuration changed) makes it ask again.
                self._send(self._status_message(state, resource, CONFIG_CHANGED))

    def _on_join_failed(self, user: str, state: RoomState, event: events.RoomJoinFailed) -> None:
        waiting, state.pending = state.pending, {}
        for resource, requested in waiting.items():
            self._send(
                self._error_presence(state.room, requested, resource, event.condition, event.text)
            )
        if state.empty:
            self.rooms.pop((user, state.room), None)

    def _on_left(self, user: str, state: RoomState, event: events.RoomLeft) -> None:
        codes = [SELF, KICKED] if event.kicked_by else [SELF, SHUTDOWN]
        for resource in state.resources:
            presence = self._occupant_presence(
                state.room,
                state.nick,
                resource,
                self._own_role(state),
                codes,
                available=False,
                occupant=self._own_occupant(state),
            )
            _add_actor_reason(presence, event.kicked_by, event.reason)
            if event.reason:
                presence["status"] = event.reason
            self._send(presence)
        for resource, requested in state.pending.items():
            self._send(
                self._error_presence(
                    state.room, requested, resource, "service-unavailable", event.reason or "left"
                )
            )
        self.rooms.pop((user, state.room), None)

    def _on_occupant(self, state: RoomState, occupant: events.Occupant) -> None:
        if occupant.nick == state.nick:
            state.occupants[occupant.nick] = occupant
            for resource in state.resources:
                self._send(self._self_presence(state, resource))
            return
        state.occupants[occupant.nick] = occupant
        for resource in state.resources:
            self._send(
                self._occupant_presence(
                    state.room,
                    occupant.nick,
                    resource,
                    occupant.role,
                    away=occupant.away,
                    occupant=occupant,
                )
            )

    def _on_occupant_left(self, state: RoomState, event: events.OccupantLeft) -> None:
        gone = state.occupants.pop(event.nick, events.Occupant(event.nick))
        codes = [KICKED] if event.kicked_by else []
        for resource in state.resources:
            presence = self._occupant_presence(
                state.room, event.nick, resource, gone.role, codes, available=False, occupant=gone
            )
            _add_actor_reason(presence, event.kicked_by, event.reason)
            if not event.kicked_by and event.reason:
                presence["status"] = event.reason
            self._send(presence)

    def _on_nick_changed(self, state: RoomState, event: events.NickChanged) -> None:
        occupant = state.occupants.pop(event.old, None) or self._own_occupant(state)
        renamed = replace(occupant, nick=event.new)
        own = event.own or event.old == state.nick
        if own:
            state.nick = event.new
        state.occupants[event.new] = renamed
        extra = [SELF] if own else []
        for resource in state.resources:
            gone = self._occupant_presence(
                state.room,
                event.old,
                resource,
                renamed.role,
                [NEW_NICK, *extra],
                available=False,
                occupant=renamed,
            )
            _item(gone).set("nick", to_resource(event.new))
            self._send(gone)
            self._send(
                self._occupant_presence(
                    state.room,
                    event.new,
                    resource,
                    renamed.role,
                    extra,
                    away=renamed.away,
                    occupant=renamed,
                )
            )
        if own:
            for resource in state.resources:
                state.resources[resource] = event.new

    def _on_nick_conflict(self, state: RoomState, event: events.NickConflict) -> None:
        for resource in state.resources:
            self._send(
                self._error_presence(state.room, event.nick, resource, "conflict", event.text)
            )

    # --- stanzas ---------------------------------------------------------------------

    async def _send_full_join(
        self, state: RoomState, resource: str, requested: str, wanted: HistoryRequest
    ) -> None:
        """Occupants, own presence (110, 210 if renamed), history, the subject.

        Live messages arriving while the history is read wait, and come after the
        subject unless the history already had them.
        """
        for occupant in state.occupants.values():
            if occupant.nick != state.nick:
                self._send(
                    self._occupant_presence(
                        state.room,
                        occupant.nick,
                        resource,
                        occupant.role,
                        away=occupant.away,
                        occupant=occupant,
                    )
                )
        extra = [NICK_MODIFIED] if requested != state.nick else []
        self._send(self._self_presence(state, resource, extra=extra))
        state.catching_up[resource] = []
        try:
            history = await self._history(state, resource, wanted)
        finally:
            held = state.catching_up.pop(resource, [])
        for _, stanza in history:
            self._send(stanza)
        self._send(self._subject(state, resource))
        served = {stanza_id for stanza_id, _ in history}
        for stanza_id, live in held:
            if stanza_id not in served:
                self._send(live)

    async def _history(
        self, state: RoomState, resource: str, wanted: HistoryRequest
    ) -> list[tuple[str, Message]]:
        """The discussion history `resource` asked for, from the archive, with delays."""
        limit = wanted.limit(self.history_stanzas)
        if self.archive is None or not limit:
            return []
        try:
            lines = await self.archive.latest(state.user, state.room.legacy_id, limit, wanted.since)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("%s: no history for %s: %s", state.user, state.room.legacy_id, exc)
            return []
        stanzas = [
            (line.stanza_id, self.line_stanza(state.room, resource, line, delayed=True))
            for line in lines
        ]
        return wanted.within_chars(stanzas)

    def _live_stanza(self, room: Address, to: str, line: Line) -> Message | str:
        """`line_stanza` for a line shown as it happens; a plain one written as text."""
        if not (self.text_stanzas and wire.is_plain(line)):
            return self.line_stanza(room, to, line, delayed=False)
        by = self.room_bare_jid(room) if self._stamped(line) else None
        identity = line.occupant_id
        hashed = self.occupant_id(room, identity) if identity is not None else None
        return wire.groupchat(self.occupant_jid(room, line.nick), to, line, by, hashed)

    def _stamped(self, line: Line) -> bool:
        """Whether `line` carries its archive id (XEP-0359 stanza-id)."""
        return self.archive is not None and self.archive.keeps(line.user)

    def line_stanza(self, room: Address, to: str, line: Line, *, delayed: bool) -> Message:
        """An archived (or about to be) line as the groupchat message `to` receives."""
        element = self.line_element(room, line)
        element.set("to", to)
        if delayed:
            add_delay(element, line.sent, self.room_bare_jid(room))
        return Message(xml=element)

    def line_element(self, room: Address, line: Line) -> ET.Element:
        """A line as a bare `<message/>` element (no `to`, no delay): what MAM
        forwards, and what `line_stanza` addresses; live or archived, it carries the
        sender's XEP-0421 occupant id, so clients tie both to one occupant.

        Built as plain XML: going through slixmpp's stanza interfaces for each field
        cost more than the database did for a MAM page of 50.
        """
        element = ET.Element(
            "{jabber:client}message",
            {
                "from": self.occupant_jid(room, line.nick),
                "type": "groupchat",
                "id": line.message_id,
            },
        )
        if line.kind == REACTION:
            reactions = ET.SubElement(
                element, f"{{{references.REACTIONS_NS}}}reactions", {"id": line.reply_to or ""}
            )
            for emoji in line.body.split("\n") if line.body else ():
                ET.SubElement(reactions, f"{{{references.REACTIONS_NS}}}reaction").text = emoji
            ET.SubElement(element, f"{{{HINTS_NS}}}store")
        elif line.kind != RETRACTED:
            ET.SubElement(element, "{jabber:client}body").text = line.body
        if line.occupant_id is not None:
            attributes = {"id": self.occupant_id(room, line.occupant_id)}
            ET.SubElement(element, f"{{{OCCUPANT_ID_NS}}}occupant-id", attributes)
        if line.kind == RETRACTED:
            references.add_tombstone(element, line.sent)
        if line.reply_to and line.kind != REACTION:
            references.add_reply(element, line.reply_to)
        if line.replaces:
            references.add_replace(element, line.replaces)
        if self._stamped(line):
            ET.SubElement(
                element,
                f"{{{SID_NS}}}stanza-id",
                {"id": line.stanza_id, "by": self.room_bare_jid(room)},
            )
        if line.origin_id:
            ET.SubElement(element, f"{{{SID_NS}}}origin-id", {"id": line.origin_id})
        return element

    def _own_occupant(self, state: RoomState) -> events.Occupant:
        return state.occupants.get(state.nick) or events.Occupant(state.nick)

    def _own_role(self, state: RoomState) -> events.Role:
        return self._own_occupant(state).role

    def _self_presence(
        self,
        state: RoomState,
        resource: str,
        *,
        available: bool = True,
        extra: Iterable[str] = (),
    ) -> Presence:
        return self._occupant_presence(
            state.room,
            state.nick,
            resource,
            self._own_role(state),
            [SELF, *extra],
            available,
            occupant=self._own_occupant(state),
        )

    def _occupant_presence(
        self,
        room: Address,
        nick: str,
        to: str,
        role: events.Role,
        codes: Iterable[str] = (),
        available: bool = True,
        *,
        away: bool = False,
        occupant: events.Occupant | None = None,
    ) -> Presence:
        """`occupant`, when given, adds what the network tells about them: their
        XEP-0421 id, and their real name and account as the status text."""
        presence = Presence()
        presence["from"], presence["to"] = self.room_jid(room, nick), to
        if not available:
            presence["type"] = "unavailable"
        elif away:
            presence["show"] = "away"
        if occupant is not None:
            if available and (status := _status_of(occupant)):
                presence["status"] = status
            if occupant.occupant_id is not None:
                self._add_occupant_id(presence, room, occupant.occupant_id)
        x = ET.SubElement(presence.xml, f"{{{MUC_USER_NS}}}x")
        ET.SubElement(
            x,
            f"{{{MUC_USER_NS}}}item",
            {"affiliation": "none", "role": role.value if available else "none"},
        )
        for code in codes:
            ET.SubElement(x, f"{{{MUC_USER_NS}}}status", {"code": code})
        return presence

    def _add_occupant_id(self, stanza: StanzaBase, room: Address, identity: str) -> None:
        ET.SubElement(
            stanza.xml, f"{{{OCCUPANT_ID_NS}}}occupant-id", {"id": self.occupant_id(room, identity)}
        )

    def _error_presence(
        self, room: Address, nick: str, to: str, condition: str, text: str
    ) -> Presence:
        presence = Presence()
        presence["from"], presence["to"], presence["type"] = self.room_jid(room, nick), to, "error"
        ET.SubElement(presence.xml, f"{{{MUC_NS}}}x")
        presence["error"]["condition"] = condition
        presence["error"]["type"] = error_type(condition)
        presence["error"]["text"] = text
        return presence

    def _status_message(self, state: RoomState, to: str, code: str) -> Message:
        message = Message()
        message["from"], message["to"], message["type"] = self.room_jid(state.room), to, "groupchat"
        message["id"] = uuid.uuid4().hex
        x = ET.SubElement(message.xml, f"{{{MUC_USER_NS}}}x")
        ET.SubElement(x, f"{{{MUC_USER_NS}}}status", {"code": code})
        return message

    def _subject(self, state: RoomState, to: str, *, live: bool = False) -> Message:
        """The subject message ends a join (XEP-0045 §7.2.15); empty when there is none.

        On a join it carries a delay with when the subject was set, when known, as
        Prosody does, so a client can tell an old subject from a change. Subject
        changes are room state, not archive lines: neither MAM nor the discussion
        history holds them (XEP-0313 archives messages with content, as Prosody's
        mod_muc_mam keeps only messages with a body; and XEP-0045 §8.1 makes a
        message with a subject and no body a subject change, so a client paging
        through MAM would set old subjects again). The join always ends with the
        current one.
        """
        message = Message()
        message["from"], message["to"] = self.room_jid(state.room, state.subject_by), to
        message["type"] = "groupchat"
        message["id"] = uuid.uuid4().hex
        subject = ET.SubElement(message.xml, "{jabber:client}subject")
        subject.text = state.subject or ""
        if state.subject and state.subject_at is not None and not live:
            add_delay(message, state.subject_at, self.room_bare_jid(state.room))
        return message


def _quoted(line: Line) -> events.Quoted:
    more = line.more_legacy_ids
    every = (line.legacy_id, *more) if line.legacy_id and more else ()
    return events.Quoted(line.legacy_id, line.nick, line.body, line.sent, every)


def _kind(text: str, kind: events.MessageKind) -> str:
    """The archive's kind: an action is known by its "/me " text whatever the bridge said."""
    return events.MessageKind.ACTION.value if text.startswith("/me ") else kind.value


def _status_of(occupant: events.Occupant) -> str:
    """ "Alice Liddell, logged in as alice": what IRC says of someone, for the status."""
    parts = [occupant.realname] if occupant.realname else []
    if occupant.account:
        parts.append(f"logged in as {occupant.account}")
    return ", ".join(parts)


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def _muc_password(presence: Presence) -> str | None:
    return presence.xml.findtext(f"{{{MUC_NS}}}x/{{{MUC_NS}}}password") or None


def _item(presence: Presence) -> ET.Element:
    """The muc#user item that `_occupant_presence` always adds."""
    item = presence.xml.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}item")
    assert item is not None
    return item


def _add_actor_reason(presence: Presence, actor: str | None, reason: str | None) -> None:
    item = _item(presence)
    if actor:
        ET.SubElement(item, f"{{{MUC_USER_NS}}}actor", {"nick": actor})
    if actor and reason:
        ET.SubElement(item, f"{{{MUC_USER_NS}}}reason").text = reason
