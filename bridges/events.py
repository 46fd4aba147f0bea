"""What a legacy network tells the XMPP side: frozen value objects, one per kind of event.

`Message` and `Delivered`, built for every message, are frozen for the type checker
only (`bridges.hot_value`): building them cost several times as much otherwise.

Bridges build these and hand them to `Sink.deliver`; only the component turns them into
stanzas, so no bridge ever needs to know XMPP stanza syntax. Import the module
(`from bridges import events`) and write `events.Message`, so it never shadows slixmpp's
`Message`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from bridges.address import Address
from bridges.hot_value import hot_value


class Role(Enum):
    """XEP-0045 roles, as a bridge maps its network's ranks onto them."""

    MODERATOR = "moderator"
    PARTICIPANT = "participant"
    VISITOR = "visitor"


class MessageKind(Enum):
    """What kind of line a message is, as the room archive records it."""

    MESSAGE = "message"
    ACTION = "action"
    """A `/me` action; its text also starts with "/me " (XEP-0245)."""
    NOTICE = "notice"


class GroupFeature(Enum):
    """What a group carries natively beyond text, as `Session.group_features` reports it.

    Replies and corrections are not listed: every group takes them, as text at worst
    (`Session.send_reply`, `Session.send_correction`).
    """

    REACTIONS = "reactions"
    RETRACTIONS = "retractions"
    CHAT_STATES = "chat-states"
    DISPLAYED_MARKERS = "displayed-markers"


@dataclass(frozen=True, slots=True)
class SharedFile:
    """A file the user can open: shown inline by clients (XEP-0066 out-of-band data)."""

    url: str
    name: str
    size: int


@hot_value
class Message:
    """A message from the legacy side.

    `sender` is a contact (one-to-one chat), a group (then `nick` names the occupant),
    or a service address (server notices). A `/me` action is sent as text starting with
    "/me " (XEP-0245). `legacy_id` is the network's own id for the message (IRCv3
    `msgid`), which keeps a line the network replays from being archived twice;
    `timestamp` is set only for a line that was held back (it becomes a delay stamp),
    `sent` whenever the network says when the line was sent (IRCv3 server-time), for
    the archive. `highlight`: a room line that names the user (their nick there) and
    should reach them as a private message when none of their clients is in the room;
    the bridge sets it only for users who want that. `file`: the message is that file
    (its text is the URL). `markable`: the user's client may say when it showed it
    (XEP-0333), which comes back as `Session.mark_message_displayed` with `legacy_id`.
    `quiet`: nothing new to the user (read elsewhere): sent as a `normal` message
    rather than `chat`, which clients show with less fuss.
    """

    sender: Address
    text: str
    nick: str | None = None
    subject: str | None = None
    thread: str | None = None
    legacy_id: str | None = None
    timestamp: datetime | None = None
    kind: MessageKind = MessageKind.MESSAGE
    sent: datetime | None = None
    highlight: bool = False
    occupant_id: str | None = None
    """For a room message: the sender's stable identity, as for `Occupant.occupant_id`."""
    reply_to: str | None = None
    """The legacy id of the message this one answers (IRCv3 `+draft/reply`)."""
    file: SharedFile | None = None
    markable: bool = False
    quiet: bool = False


@dataclass(frozen=True, slots=True)
class Quoted:
    """An earlier room message the user refers to (a reply, reaction, correction...),
    as the archive has it: what a bridge needs to point at it natively (`legacy_id`)
    or to quote it in text (`nick`, `text`) where the network has no such reference."""

    legacy_id: str | None
    nick: str | None
    text: str
    sent: datetime | None = None
    legacy_ids: tuple[str, ...] = ()
    """Every legacy id of the message, in order, where it became several legacy
    messages (one IRC line and msgid per line) and the caller knows them all; a
    retraction removes each (`every_legacy_id`)."""

    @property
    def every_legacy_id(self) -> tuple[str, ...]:
        """`legacy_ids`, else the one `legacy_id` (or none)."""
        return self.legacy_ids or ((self.legacy_id,) if self.legacy_id else ())


class ChatState(Enum):
    """XEP-0085 states a bridge can carry (IRCv3 `+typing` has exactly these three)."""

    COMPOSING = "composing"
    PAUSED = "paused"
    ACTIVE = "active"
    """Not typing (any more): XEP-0085 active, IRC `typing=done`."""


@dataclass(frozen=True, slots=True)
class Reaction:
    """`nick` in `room` reacted with `emoji` to the message with legacy id `target`
    (IRCv3 `+draft/react`); `removed` when the reaction was taken back."""

    room: Address
    nick: str
    target: str
    emoji: str
    removed: bool = False
    legacy_id: str | None = None
    """The reaction's own id (IRC msgid of the TAGMSG): a replay is archived once."""
    sent: datetime | None = None
    occupant_id: str | None = None
    """The reacting occupant's stable identity, as for `Message.occupant_id`."""


@dataclass(frozen=True, slots=True)
class Retraction:
    """`nick` in `room` removed the message with legacy id `target` (IRC REDACT); in
    a one-to-one chat (`room` is the contact) `target` is the id the user's clients
    know the message by (`ChatReferences.xmpp_id`)."""

    room: Address
    nick: str
    target: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Typing:
    """`nick` in `room` is typing, paused or stopped (IRCv3 `+typing`)."""

    room: Address
    nick: str
    state: ChatState


@dataclass(frozen=True, slots=True)
class Occupant:
    """One participant of a group as seen on the legacy side."""

    nick: str
    role: Role = Role.PARTICIPANT
    away: bool = False
    """Shown with XMPP's `away` (IRC: AWAY, known where the server offers away-notify)."""
    account: str | None = None
    """The network account the occupant is logged in as, when the network says."""
    realname: str | None = None
    occupant_id: str | None = None
    """A stable identity on the network (its account, else its nick) that the component
    turns into an XEP-0421 occupant id (salted and hashed per room, so it reveals
    nothing); None shows none. Only for bridges with `Bridge.occupant_ids`."""


@dataclass(frozen=True, slots=True)
class RoomJoined:
    """The user's own join of `room` completed; occupants exclude the user."""

    room: Address
    nick: str
    occupants: tuple[Occupant, ...] = ()
    subject: str | None = None
    subject_by: str | None = None
    own: Occupant | None = None
    """The user's own occupant, when the bridge knows more of it than the nick."""
    features: frozenset[GroupFeature] = frozenset()
    """What the room carries natively (`Session.group_features`) as of this join."""
    subject_at: datetime | None = None
    """When the subject was set, if the network says (IRC 333 RPL_TOPICWHOTIME)."""


@dataclass(frozen=True, slots=True)
class RoomJoinFailed:
    """The legacy side refused a join; `condition` is an RFC 6120 stanza error condition."""

    room: Address
    condition: str
    text: str


@dataclass(frozen=True, slots=True)
class RoomLeft:
    """The user is no longer in `room` (parted, kicked, or the connection was lost)."""

    room: Address
    reason: str | None = None
    kicked_by: str | None = None


@dataclass(frozen=True, slots=True)
class OccupantJoined:
    """Someone else joined a room the user is in, or their role changed."""

    room: Address
    occupant: Occupant


@dataclass(frozen=True, slots=True)
class OccupantLeft:
    """Someone else left a room the user is in; `kicked_by` is set for a kick."""

    room: Address
    nick: str
    reason: str | None = None
    kicked_by: str | None = None


@dataclass(frozen=True, slots=True)
class NickChanged:
    """An occupant (possibly the user: `own` is then true) changed nick in `room`."""

    room: Address
    old: str
    new: str
    own: bool = False


@dataclass(frozen=True, slots=True)
class NickConflict:
    """The nick the user asked for in `room` is taken."""

    room: Address
    nick: str
    text: str


@dataclass(frozen=True, slots=True)
class SubjectChanged:
    """The room topic changed; `by` is the nick that changed it, when known."""

    room: Address
    subject: str
    by: str | None = None
    at: datetime | None = None
    """When it was set (the network's time, when it says)."""


@dataclass(frozen=True, slots=True)
class Presence:
    """A legacy contact became available, away or offline."""

    sender: Address
    available: bool = True
    show: str | None = None
    status: str | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionRequest:
    """Ask the user to add a legacy contact to their roster (a presence subscription)."""

    sender: Address


@dataclass(frozen=True, slots=True)
class Origin:
    """Who sent a message the user wrote: the full JID of the resource, and whether it
    asked for an XEP-0184 receipt. The component passes it with the message; a bridge
    that keeps messages across a restart (the mail outbox) stores it and hands it back
    in `Delivered` or `DeliveryFailed`, since the component's own memory of it is gone
    by then."""

    jid: str
    receipt: bool


@dataclass(frozen=True, slots=True)
class DeliveryFailed:
    """A message the user sent could not be delivered; answered with a message error."""

    to: Address
    xmpp_id: str | None
    condition: str
    text: str
    origin: Origin | None = None


@hot_value
class Delivered:
    """The legacy side accepted a message the user sent (XEP-0184 receipt; for a room,
    the reflection). `legacy_id` and `sent` are the network's id and time for it, when
    it says (IRCv3 echo-message: the echo is what everyone else saw), for the archive."""

    to: Address
    xmpp_id: str
    legacy_id: str | None = None
    sent: datetime | None = None
    origin: Origin | None = None
    legacy_ids: tuple[str, ...] = ()
    """Every legacy id the message got, in order, when it became several legacy
    messages (a multi-line message on IRC: one PRIVMSG and msgid per line);
    `legacy_id` is the first."""


@dataclass(frozen=True, slots=True)
class Invitation:
    """Someone on the legacy side invites the user to a group (XEP-0249 for the user)."""

    room: Address
    by: Address | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the user should be told that belongs to no contact (from the component)."""

    text: str


Event = (
    Message
    | RoomJoined
    | RoomJoinFailed
    | RoomLeft
    | OccupantJoined
    | OccupantLeft
    | NickChanged
    | NickConflict
    | SubjectChanged
    | Presence
    | SubscriptionRequest
    | DeliveryFailed
    | Delivered
    | Invitation
    | Notice
    | Reaction
    | Retraction
    | Typing
)
