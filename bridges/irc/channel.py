"""What we know about one IRC channel and the server's mode syntax.

Rank prefixes and mode letters differ per server (ISUPPORT PREFIX / CHANMODES), so
they are read from 005 instead of hard-coding `@` and `+`.
"""

from __future__ import annotations

import sys
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Generic, TypeVar

from bridges import events
from bridges.address import Address
from bridges.irc.chathistory import DEFAULT_LIMIT, Anchor, Fetch
from bridges.irc.protocol import casefold

MODERATOR_MODES = frozenset("qaoh")
"""Founder, admin, op, half-op: may kick and change the topic, so MUC moderators."""

_RANKS: dict[frozenset[str], frozenset[str]] = {}
"""One frozenset per combination of rank modes, shared by every member of every
connection: most members have none or one, and a frozenset is 216 bytes."""


def shared_modes(modes: AbstractSet[str]) -> frozenset[str]:
    """The one shared frozenset equal to `modes`."""
    key = frozenset(modes)
    return _RANKS.setdefault(key, key)


T = TypeVar("T")


class Shared(Generic[T]):
    """One object per distinct frozen value, however many connections hold it: every
    user's connection keeps its own member list of each channel and the muc an
    occupant per occupant of each user's room, so a nick in a channel of 100 users
    would otherwise be 100 equal objects.

    At most `limit` values; beyond, sharing starts afresh (what is held stays valid,
    it is only no longer shared with what comes after).
    """

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._known: dict[T, T] = {}

    def __call__(self, value: T) -> T:
        known = self._known.get(value)
        if known is None:
            if len(self._known) >= self.limit:
                self._known.clear()
            known = self._known[value] = value
        return known


shared_occupant: Shared[events.Occupant] = Shared()


@dataclass
class ServerModes:
    """Mode syntax the server announced (RFC 2812 defaults until 005 arrives)."""

    prefix_modes: str = "ov"
    prefix_symbols: str = "@+"
    list_modes: str = "beI"
    always_param: str = "k"
    set_param: str = "l"
    nick_length: int | None = None
    """NICKLEN, when the server announces it."""
    chathistory: bool = False
    """The server announces IRCv3 CHATHISTORY: it can replay what we missed."""
    chathistory_limit: int = DEFAULT_LIMIT
    """The most lines one CHATHISTORY request may ask for (`CHATHISTORY=<max>`)."""
    whox: bool = False
    """WHO takes a field list (WHOX): one WHO after a join tells every member's account."""
    client_tag_deny: tuple[str, ...] = ()
    """CLIENTTAGDENY: client-only tags the server drops (`*` all, `-name` exempt)."""

    def allows_client_tag(self, tag: str) -> bool:
        """Whether the server passes the client-only tag `tag` (`+name` or `name`) on."""
        name = tag.removeprefix("+")
        if f"-{name}" in self.client_tag_deny:
            return True
        return "*" not in self.client_tag_deny and name not in self.client_tag_deny

    def apply_isupport(self, tokens: list[str]) -> None:
        for token in tokens:
            key, _, value = token.partition("=")
            if key == "PREFIX" and value.startswith("(") and ")" in value:
                modes, symbols = value[1:].split(")", 1)
                if len(modes) == len(symbols):
                    self.prefix_modes, self.prefix_symbols = modes, symbols
            elif key == "WHOX":
                self.whox = True
            elif key == "NICKLEN" and value.isdigit():
                self.nick_length = int(value)
            elif key in ("CHATHISTORY", "DRAFT/CHATHISTORY"):
                self.chathistory = True
                if value.isdigit() and int(value) > 0:
                    self.chathistory_limit = int(value)
            elif key == "CLIENTTAGDENY":
                self.client_tag_deny = tuple(entry for entry in value.split(",") if entry)
            elif key == "-CLIENTTAGDENY":
                self.client_tag_deny = ()
            elif key == "CHANMODES":
                parts = [*value.split(","), "", "", ""]
                self.list_modes, self.always_param, self.set_param = parts[0], parts[1], parts[2]

    def split_names_entry(self, entry: str) -> tuple[str, frozenset[str]]:
        """`@+nick` (or `@nick!u@h`) → nick and its rank modes."""
        modes: set[str] = set()
        index = 0
        while index < len(entry) and entry[index] in self.prefix_symbols:
            modes.add(self.prefix_modes[self.prefix_symbols.index(entry[index])])
            index += 1
        return entry[index:].split("!", 1)[0], shared_modes(modes)

    def parse_changes(self, params: list[str]) -> list[tuple[bool, str, str | None]]:
        """MODE arguments → (adding, letter, argument) per change."""
        if not params:
            return []
        flags, args = params[0], list(params[1:])
        changes: list[tuple[bool, str, str | None]] = []
        adding = True
        for letter in flags:
            if letter in "+-":
                adding = letter == "+"
                continue
            takes = (
                letter in self.prefix_modes
                or letter in self.list_modes
                or letter in self.always_param
                or (adding and letter in self.set_param)
            )
            changes.append((adding, letter, args.pop(0) if takes and args else None))
        return changes


def folded(nick: str) -> str:
    """`casefold(nick)` interned, for keys and identities kept per member."""
    return sys.intern(casefold(nick))


def role_of(modes: AbstractSet[str]) -> events.Role:
    """Op (and above) → moderator; voice and everyone else → participant."""
    return events.Role.MODERATOR if modes & MODERATOR_MODES else events.Role.PARTICIPANT


@dataclass(frozen=True, slots=True)
class Member:
    """One nick in a channel. Every user's connection keeps its own list of them, so
    equal members are one object (`shared_member`), never changed in place
    (`Channel.update`), with a shared frozenset of modes and interned nicks (the
    casefolded one too)."""

    nick: str
    modes: frozenset[str] = frozenset()
    away: bool = False
    account: str | None = None
    """The services account they are logged in as (account-notify, account-tag,
    extended-join, WHOX), None when not logged in or not known."""
    realname: str | None = None
    first_nick: str = ""
    """The nick they had when we first saw them: their identity while they have no
    account, kept across nick changes (XEP-0421 ids must survive a rename)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "nick", sys.intern(self.nick))
        object.__setattr__(self, "first_nick", self.first_nick or folded(self.nick))

    @property
    def occupant(self) -> events.Occupant:
        """What the XMPP side shows of them: shared with every other connection seeing
        the same (`shared_occupant`)."""
        return shared_occupant(
            events.Occupant(
                self.nick,
                role_of(self.modes),
                self.away,
                account=self.account,
                realname=self.realname,
                occupant_id=self.identity,
            )
        )

    @property
    def identity(self) -> str:
        """Who they are for XEP-0421: the account if they have one, else the nick."""
        # Interned: the muc keeps one per occupant of each user's room.
        if self.account:
            return sys.intern(f"account {casefold(self.account)}")
        return sys.intern(f"nick {self.first_nick}")


shared_member: Shared[Member] = Shared()


@dataclass
class Channel:
    """One channel the user wants to be in; `joined` once the server confirmed it."""

    name: str
    address: Address
    key: str | None = None
    joined: bool = False
    synced: bool = False
    """NAMES has ended: the member list is complete."""
    rejoining: bool = False
    """This join follows a reconnect: report differences, not a fresh RoomJoined."""
    members: dict[str, Member] = field(default_factory=dict)
    names: dict[str, Member] = field(default_factory=dict)
    """Members collected from 353 lines until 366."""
    topic: str | None = None
    topic_by: str | None = None
    topic_at: datetime | None = None
    last: Anchor = field(default_factory=Anchor)
    """The last line seen here (msgid, server-time): where a history fetch starts."""
    fetch: Fetch | None = None
    """The chat history being fetched after a rejoin, if any."""

    def member(self, nick: str) -> Member | None:
        return self.members.get(casefold(nick))

    def add(self, member: Member) -> Member:
        """`member` in the list (the shared one equal to it, which it returns)."""
        member = self.members[folded(member.nick)] = shared_member(member)
        return member

    def update(self, member: Member, **changes: Any) -> Member:
        """`member` with `changes`, in its place; the member now listed."""
        return self.add(replace(member, **changes))

    def remove(self, nick: str) -> Member | None:
        return self.members.pop(casefold(nick), None)

    def occupants(self, own_nick: str) -> tuple[events.Occupant, ...]:
        own = casefold(own_nick)
        return tuple(m.occupant for key, m in self.members.items() if key != own)
