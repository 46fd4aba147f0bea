"""The small interface a legacy network implements to plug into the gateway.

A network is a `Bridge` (one per process: its configuration, registration form and
address scheme) that opens one `Session` per registered user (the live legacy
connection). The session talks back only through the `Sink` and the `AccountStore`
the component hands it. Nothing here imports from `component`, so a third-party
bridge depends on this module alone; it is found through the `xmpp_gateway.bridges`
entry point group.

Actions a network cannot do raise `NotImplementedError`, which the component answers
with `feature-not-implemented`; refusals raise `BridgeError` with a stanza error
condition and a human-readable text.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from bridges import events
from bridges.address import Address, AddressError, AddressKind
from bridges.events import GroupFeature
from bridges.jid_escaping import escape_node, unescape_node

FieldType = Literal[
    "text-single", "text-private", "text-multi", "boolean", "list-single", "list-multi", "fixed"
]
JsonValue = str | int | bool | list[str] | None


class BridgeError(Exception):
    """A legacy-side refusal the user should see as an XMPP stanza error.

    `condition` is an RFC 6120 defined condition (`not-acceptable`, `forbidden`,
    `remote-server-not-found`, ...); `text` says what went wrong in words.
    """

    def __init__(self, text: str, condition: str = "undefined-condition") -> None:
        super().__init__(text)
        self.text = text
        self.condition = condition


class RegistrationError(BridgeError):
    """A registration form that cannot be accepted; `field` names the culprit, if one."""

    def __init__(
        self, text: str, field: str | None = None, condition: str = "not-acceptable"
    ) -> None:
        super().__init__(text, condition)
        self.field = field


@dataclass(frozen=True)
class FormField:
    """One XEP-0004 field of a registration or settings form.

    `datatype` follows XEP-0122 (`xs:string`, `xs:integer`, `xs:boolean`); the
    component converts and checks values against it, `required` and `options` before a
    bridge sees them. `secret` values are stored encrypted and never echoed back;
    `text-private` fields are secret by definition. `legacy_name` is the XEP-0077
    element (`username`, `password`, `nick`, `email`, ...) that pre-data-form clients use.
    Every text value is bounded by `max_length` and may not hold control characters: a
    100 KB real name once made the next IRC join hang.
    """

    var: str
    label: str
    type: FieldType = "text-single"
    required: bool = False
    default: JsonValue = None
    options: Sequence[str] = ()
    desc: str = ""
    datatype: Literal["xs:string", "xs:integer", "xs:boolean"] = "xs:string"
    legacy_name: str | None = None
    secret: bool = False
    max_length: int = 200
    """Longest value in characters (each line of a text-multi, each item of a list)."""

    @property
    def is_secret(self) -> bool:
        return self.secret or self.type == "text-private"


@dataclass
class Account:
    """A user's registration on one bridge, with secrets already decrypted (memory only).

    `settings` hold the non-secret form values, `secrets` the secret ones, `state`
    whatever the bridge persists between sessions (watermarks, per-network settings).
    """

    user: str
    bridge: str
    settings: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AccountData:
    """What a bridge wants stored for a registration after validating the form."""

    settings: Mapping[str, Any]
    secrets: Mapping[str, str] = field(default_factory=dict)


class FileError(Exception):
    """A file could not be stored or fetched; `text` says why, in words for the user.

    `too_large` when the size is what the service refused (its limit, if it said, is
    `limit`); `temporary` when trying again later may work (the service is down).
    """

    def __init__(
        self, text: str, *, too_large: bool = False, limit: int | None = None,
        temporary: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(text)
        self.text = text
        self.too_large = too_large
        self.limit = limit
        self.temporary = temporary


@dataclass(frozen=True)
class DownloadedFile:
    """A file fetched from a URL the user sent, stored at `path` (the caller deletes it)."""

    path: Path
    name: str
    content_type: str
    size: int


class FileTransfer(Protocol):
    """Files between the legacy network and the user's XMPP server (XEP-0363 uploads).

    The component implements it; a bridge only sees files on disk and URLs, never
    stanzas or HTTP.
    """

    async def upload_limit(self) -> int | None:
        """The largest file the upload service takes, in bytes (None: it names none)."""
        ...

    async def upload(self, path: Path, name: str, content_type: str) -> str:
        """Store the file at `path` under `name`; return the URL anyone may GET it from.

        Raises FileError.
        """
        ...

    async def download(self, url: str, directory: Path, max_bytes: int) -> DownloadedFile:
        """Fetch `url` into a new file in `directory`, if it is on a host the operator
        allows and at most `max_bytes` long; raises FileError otherwise."""
        ...


@dataclass(frozen=True)
class MessageExtras:
    """What a user's message carries besides its text, for networks that can use it."""

    reply_to: str | None = None
    """XEP-0461: the id of the message answered (a `legacy_id` the bridge delivered)."""
    quote: str | None = None
    """The answered text the client quoted (XEP-0428 fallback), already cut from the text."""
    files: tuple[str, ...] = ()
    """XEP-0066 URLs of files the user sent (their client's upload), cut from the text."""


NO_EXTRAS = MessageExtras()


class ChatReferences(Protocol):
    """How the user's clients and the legacy network name the messages of one-to-one
    chats, from the `Message`s (a contact's, known by its `legacy_id`) and `Delivered`s
    (the user's, by its `xmpp_id`) the session delivered; kept across restarts.

    A client replies or reacts to a message by the id it saw (XEP-0461, XEP-0444), so
    a network whose own replies name legacy ids (IRC `+draft/reply`) translates.
    """

    async def legacy_ids(self, xmpp_id: str) -> tuple[str, ...]:
        """The legacy ids of the message the user's clients know as `xmpp_id`, the
        first first (several where it became several legacy messages: a multi-line
        one on IRC); none when unknown (too old, or never given one)."""
        ...

    async def xmpp_id(self, legacy_id: str) -> str | None:
        """The id the user's clients know the message `legacy_id` by; None when unknown."""
        ...


class Sink(ChatReferences, Protocol):
    """The component side of a session: the only way legacy events reach XMPP."""

    @property
    def files(self) -> FileTransfer | None:
        """The user's server's file upload service, None when there is none."""
        ...

    async def deliver(self, event: events.Event, *, state: Mapping[str, Any] | None = None) -> None:
        """Turn `event` into stanzas for the user; then persist `state` if given.

        Passing the new `Account.state` with the event it covers (an IMAP UID
        watermark with the mail it delivers) means a restart neither repeats nor
        skips it beyond the one event in flight.
        """
        ...


class AccountStore(Protocol):
    """Durable storage for one account, without schema changes for new bridges.

    Records are small JSON documents addressed by (`kind`, `key`): a mail outbox, a
    map of Message-IDs, per-network settings. All writes commit before returning.
    """

    async def save_account(
        self,
        *,
        settings: Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
        state: Mapping[str, Any] | None = None,
    ) -> None: ...

    async def put_record(self, kind: str, key: str, data: Mapping[str, Any]) -> None: ...

    async def get_record(self, kind: str, key: str) -> dict[str, Any] | None: ...

    async def list_records(self, kind: str) -> list[tuple[str, dict[str, Any]]]: ...

    async def delete_record(self, kind: str, key: str) -> None: ...


@dataclass(frozen=True)
class Command:
    """An XEP-0050 ad-hoc command a bridge offers on some of its addresses.

    The address is None for commands on the component itself.

    `form` returns the fields to show, with current values as defaults; `submit` gets
    the checked values and returns a text for the user. Both may raise `BridgeError`.
    """

    node: str
    name: str
    form: Callable[[Account, Address | None], Awaitable[Sequence[FormField]]]
    submit: Callable[[Account, Address | None, AccountStore, dict[str, Any]], Awaitable[str]]


class SessionLog(logging.LoggerAdapter[logging.Logger]):
    """A session's log: its bridge's logger (`bridges.<name>`), each message starting
    with whose it is, the user and then the part, as the logger names of before read
    (`alice@example.org.irc.libera.chat: ...`).

    Not a logger per user (`getChild(user)`): logging keeps every logger it ever made
    for the life of the process, with a placeholder for each dot in the name, about
    1.5 KiB for a user and network that stayed after the user left.
    """

    def __init__(self, logger: logging.Logger, prefix: str) -> None:
        super().__init__(logger)
        self.prefix = prefix

    def child(self, part: str) -> SessionLog:
        """The log of one part of the session (a network, a folder, the outbox)."""
        return SessionLog(self.logger, f"{self.prefix}.{part}")

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        return f"{self.prefix}: {msg}", kwargs


class Session(ABC):
    """One user's live connection to the legacy network.

    Created when the user first becomes available (or at gateway start for accounts
    the bridge `runs_offline`), stopped when the last resource goes away or the account
    is removed. All methods run on the gateway's event loop and must not block it.
    """

    def __init__(self, bridge: Bridge, account: Account, sink: Sink, store: AccountStore) -> None:
        self.bridge = bridge
        self.account = account
        self.sink = sink
        self.store = store
        self.log = SessionLog(logging.getLogger(f"bridges.{bridge.name}"), account.user)

    @abstractmethod
    async def start(self) -> None:
        """Connect (or prepare to connect lazily); must return promptly."""

    @abstractmethod
    async def stop(self) -> None:
        """Disconnect cleanly; after this, no more events are delivered."""

    @abstractmethod
    async def send_message(
        self,
        to: Address,
        text: str,
        *,
        xmpp_id: str | None = None,
        subject: str | None = None,
        thread: str | None = None,
        origin: events.Origin | None = None,
        extras: MessageExtras = NO_EXTRAS,
    ) -> None:
        """Send a one-to-one (or, for a group address, a group) message.

        `origin` (with `xmpp_id`) says who to answer; only a bridge that keeps the
        message past a restart needs it, to put it in its `Delivered`/`DeliveryFailed`.
        """

    def group_features(self, room: Address) -> frozenset[GroupFeature]:
        """What `room` (or a contact, in a one-to-one chat) carries natively right now
        (its disco#info says it)."""
        return frozenset()

    async def send_reply(
        self, room: Address, text: str, quoted: events.Quoted, *, xmpp_id: str | None = None
    ) -> None:
        """A group message answering `quoted`; the default names its author in text."""
        prefix = f"{quoted.nick}: " if quoted.nick and not text.startswith(quoted.nick) else ""
        await self.send_message(room, prefix + text, xmpp_id=xmpp_id)

    async def send_correction(
        self, room: Address, text: str, quoted: events.Quoted, *, xmpp_id: str | None = None
    ) -> None:
        """A group message replacing `quoted`; the default sends it as a marked line,
        so nobody reads it as the same thing said twice."""
        await self.send_message(room, f"* fixed: {text}", xmpp_id=xmpp_id)

    async def react(
        self, room: Address, quoted: events.Quoted, added: Sequence[str], removed: Sequence[str]
    ) -> None:
        """The user's reactions to `quoted` changed: `added` and `removed` emojis."""
        raise NotImplementedError("this network has no reactions")

    async def retract(self, room: Address, quoted: events.Quoted) -> None:
        """Remove the user's message `quoted` from the group, or from the one-to-one
        chat with a contact (then `quoted.legacy_id` is the id the user's clients know
        it by, as `ChatReferences` translates it)."""
        raise NotImplementedError("this network cannot remove a message once sent")

    async def set_chat_state(self, room: Address, state: events.ChatState) -> None:
        """The user is typing, paused or stopped in `room`; ignored by default."""
        return None

    async def mark_displayed(self, room: Address, quoted: events.Quoted) -> None:
        """The user has read `room` up to `quoted` (a room's read marker); ignored by
        default. A one-to-one message shown is `mark_message_displayed`."""
        return None

    async def user_offline(self) -> bool:
        """The user's last resource went away (or was never there when the gateway
        started this session on its own): return True to keep running.

        The default stops the session. IRC keeps the connection for channels the user
        marked persistent (and leaves the others itself).
        """
        return False

    async def set_presence(self, show: str, status: str) -> None:
        """The presence the user shows changed (their most available resource's).

        `show` is "" for plain available, else chat, away, xa or dnd (RFC 6121).
        Called once the session has started, and on every change after that. The
        default ignores it; IRC marks the user AWAY.
        """
        return None

    async def mark_message_displayed(self, contact: Address, message_id: str) -> None:
        """The user's client says it showed the message `message_id` from `contact`
        (an XEP-0333 `displayed` marker on a message sent `markable`). The default
        ignores it; mail marks that mail read on the server."""
        return None

    async def join(self, room: Address, nick: str, password: str | None = None) -> None:
        """Join `room`; completion arrives as `RoomJoined` or `RoomJoinFailed`."""
        raise NotImplementedError

    async def leave(self, room: Address) -> None:
        """Leave `room` on the legacy side."""
        raise NotImplementedError

    async def set_subject(self, room: Address, subject: str) -> None:
        raise NotImplementedError

    async def invite(self, room: Address, contact: Address, reason: str | None) -> None:
        """Invite a legacy contact to `room` (the user sent an XEP-0045 or XEP-0249 invite)."""
        raise NotImplementedError

    async def change_nick(self, room: Address, nick: str) -> None:
        raise NotImplementedError

    async def kick(self, room: Address, nick: str, reason: str | None) -> None:
        raise NotImplementedError

    async def set_role(self, room: Address, nick: str, role: events.Role) -> None:
        raise NotImplementedError

    async def list_groups(self, service: Address) -> Sequence[tuple[Address, str]]:
        """Groups reachable through `service`, for disco#items: (address, name)."""
        raise NotImplementedError


class BridgeOptions(BaseModel):
    """Base of a bridge's own configuration section; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Bridge(ABC):
    """One legacy network plugin; a single instance serves every user.

    Class attributes describe it to XMPP clients; `Options` validates its section of the
    config file (everything besides the component's own `jid` and `secret`).
    """

    name: ClassVar[str]
    """Entry point name, config key and the value stored with each account."""
    disco_type: ClassVar[str]
    """XEP-0030 gateway identity type: `irc`, `smtp`, ..."""
    display_name: ClassVar[str]
    instructions: ClassVar[str]
    registration_fields: ClassVar[Sequence[FormField]]
    supports_groups: ClassVar[bool] = False
    occupant_ids: ClassVar[bool] = False
    """Room occupants and messages carry `occupant_id`s: rooms show XEP-0421 ids."""
    persistent_sessions: ClassVar[bool] = False
    """Keep every session running while the user is offline (mail keeps watching IMAP);
    `runs_offline` decides it per account instead."""
    gateway_prompt: ClassVar[str] = "Legacy address"
    gateway_desc: ClassVar[str] = "Enter the address of the contact you would like to add."
    Options: ClassVar[type[BridgeOptions]] = BridgeOptions
    uses_files: ClassVar[bool] = False
    """Whether sessions use `Sink.files`: only then is the upload service looked up."""
    refuse_corrections: ClassVar[str | None] = None
    """When set, an XEP-0308 correction is answered `not-acceptable` with this text
    (a network where what is sent cannot be changed); otherwise it goes to
    `Session.send_correction` (a marked line by default)."""
    contact_replies: ClassVar[bool] = False
    """One-to-one XEP-0461 replies reach the contact as replies (`MessageExtras`):
    contacts' disco#info then lists replies, and corrections unless refused."""

    def __init__(self, options: BridgeOptions) -> None:
        self.options = options

    @abstractmethod
    async def validate_registration(
        self, user: str, values: Mapping[str, Any], previous: Account | None
    ) -> AccountData:
        """Check a submitted form (a test login, where possible); raise RegistrationError.

        `values` are already type-checked against `registration_fields`; for an update,
        secret fields left empty keep `previous.secrets`.
        """

    @abstractmethod
    def create_session(self, account: Account, sink: Sink, store: AccountStore) -> Session:
        """Build (not start) the session for `account`."""

    def default_account(self, user: str, nick: str | None) -> AccountData | None:
        """The account to create for `user` who joins or writes without registering.

        None (the default) means the network needs registration (XEP-0077) first, as
        mail does for its password. A network that needs nothing secret (IRC) returns
        its registration defaults, so clients that cannot register still work; `nick`
        is the nickname of the group join that came first, if that is what it was.
        """
        return None

    def runs_offline(self, account: Account) -> bool:
        """Whether `account`'s session runs while the user is offline.

        Such sessions start when the gateway does, without waiting for the user's
        presence, and are told `Session.user_offline` right away if the user is not
        online. The default is `persistent_sessions`; IRC says yes for accounts with
        persistent channels, so they are joined across gateway restarts (a bouncer).
        """
        return self.persistent_sessions

    def parse_address(self, localpart: str) -> Address:
        """Map a JID localpart to an address; raise AddressError when it names nothing."""
        return Address(AddressKind.CONTACT, unescape_node(localpart))

    def format_address(self, address: Address) -> str:
        """Map an address to its JID localpart; the inverse of `parse_address`."""
        return escape_node(address.legacy_id)

    def translate_legacy_id(self, text: str) -> Address:
        """jabber:iq:gateway: the address a user typed, in the network's own syntax."""
        text = text.strip()
        if not text:
            raise AddressError("empty address")
        return Address(AddressKind.CONTACT, text)

    def occupant_address(self, room: Address, nick: str) -> Address:
        """The contact behind `nick` in `room`, for XEP-0045 private messages."""
        raise NotImplementedError

    def commands(self, address: Address | None) -> Sequence[Command]:
        """Ad-hoc commands offered on `address` (None: on the component itself)."""
        return ()

    @classmethod
    def demo_server(cls, run_dir: Path) -> AbstractAsyncContextManager[dict[str, Any]] | None:
        """A private legacy server for `xmpp-gateway demo`, yielding options to reach it.

        None (the default) means the demo runs this bridge without a server of its own.
        """
        return None

    async def close(self) -> None:
        """Release bridge-wide resources at shutdown, after every session has stopped."""
        return None
