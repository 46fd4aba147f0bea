"""IRC lines → events for the user: the receiving half of a `Network`.

Kept apart from connection life and user actions (`network`) so each reads on its
own. One method per command (`_irc_privmsg`, `_irc_353`, ...); numerics without one
reach the user as text from the server's address, never silently dropped.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from bridges import events
from bridges.address import Address
from bridges.base import ChatReferences
from bridges.irc import rich
from bridges.irc.address import can_be_named, make_address
from bridges.irc.channel import (
    Channel,
    Member,
    ServerModes,
    shared_member,
    shared_modes,
)
from bridges.irc.chathistory import Anchor, batch_target
from bridges.irc.connection import IrcConnection
from bridges.irc.formatting import (
    ACTION_PREFIX,
    ctcp,
    parse_ctcp,
    strip_formatting,
    to_styling,
)
from bridges.irc.options import IrcOptions
from bridges.irc.protocol import Line, casefold, is_channel, is_valid_nick, names_nick
from bridges.irc.settings import NetworkSettings
from bridges.timestamps import parse_timestamp

Deliver = Callable[[events.Event], Awaitable[None]]
WHOX_TOKEN = "471"
"""Marks the replies to our own WHOX (any number would do; a raw WHO gets none)."""
SERVER_NICKLEN_BOUND = 64
"""Longest nick taken for a real one: above every server's NICKLEN, so only garbage fails."""


def _is_nick(name: str) -> bool:
    """Whether a server-supplied name can be a user with an address (a contact JID)."""
    return is_valid_nick(name, SERVER_NICKLEN_BOUND) and can_be_named(name)


# Join refusals → (XEP-0045 stanza error condition, what to tell the user).
JOIN_ERRORS = {
    "471": "service-unavailable",  # channel is full (+l)
    "473": "registration-required",  # invite only (+i): XEP-0045 members-only
    "474": "forbidden",  # banned (+b)
    "475": "not-authorized",  # wrong or missing key (+k)
    "403": "item-not-found",  # no such channel
    "405": "resource-constraint",  # joined too many channels
    "476": "jid-malformed",  # bad channel mask
    "477": "not-authorized",  # needs a registered nick
    "489": "forbidden",  # secure (TLS) clients only
    "437": "service-unavailable",  # temporarily unavailable
}
NICK_ERRORS = frozenset({"432", "433", "436", "437", "484"})
SILENT_NUMERICS = frozenset({"005", "329", "366", "315", "321", "323", "396"})
WELCOME_END = frozenset({"376", "422"})
SASL_FAILURES = frozenset({"902", "904", "905", "906", "907"})
WELCOME_COMMANDS = frozenset({"NOTICE", "PRIVMSG", "MODE", "CAP", "AUTHENTICATE"})
"""Besides numerics, what a server sends while greeting us (collected in one message)."""
PRIVATE_TIMES_KEPT = 64
"""Private messages per network whose time a displayed marker can still send."""
REPLAYED_AFTER = timedelta(seconds=30)
"""A message whose IRCv3 server-time is older than this was held back (a bouncer
replaying the backlog): it gets a delay stamp. Live lines get none, as XEP-0203 asks."""


class IncomingLines:
    """State the handlers read and update; `Network` fills it and adds the actions."""

    # The attributes the handlers assign; Network's own are in its __slots__.
    __slots__ = (
        "_greeted",
        "_history_batches",
        "_in_welcome",
        "_lists",
        "_nick_request",
        "_private_sent",
        "_server_version",
        "_welcome",
        "channels",
        "logged_in_as",
        "nick",
        "userhost",
    )

    server: str
    options: IrcOptions
    deliver: Deliver
    service: Address
    nick: str
    userhost: tuple[str, str] | None
    logged_in_as: str | None
    """Our own services account (900 RPL_LOGGEDIN, account-notify), if logged in."""
    modes: ServerModes
    channels: dict[str, Channel]
    _nick_request: tuple[Address | None, str] | None
    _last_private_id: dict[str, str]
    _private_sent: dict[str, datetime]
    """msgid → server time of the contacts' latest private messages (MARKREAD names a
    time, a displayed marker an id); at most PRIVATE_TIMES_KEPT, the oldest go."""
    references: ChatReferences
    _lists: list[tuple[asyncio.Future[None], list[tuple[Address, str]]]]
    _in_welcome: bool
    _welcome: list[tuple[str, str]]
    _greeted: bool
    _server_version: str
    settings: NetworkSettings | None
    _history_batches: dict[str, tuple[Channel, list[Line]]]
    """Open `chathistory` batches by id: the channel and the lines collected so far."""
    conn: IrcConnection | None

    @property
    def connected(self) -> bool:
        raise NotImplementedError

    def send(self, command: str, *params: str) -> None:
        raise NotImplementedError

    async def _catch_up(self, ch: Channel) -> str | None:
        raise NotImplementedError

    async def _history_page(self, ch: Channel, lines: list[Line]) -> None:
        raise NotImplementedError

    def group_features(self) -> frozenset[events.GroupFeature]:
        raise NotImplementedError

    def _joined_event(self, ch: Channel) -> events.RoomJoined:
        own = ch.member(self.nick)
        if own is not None:
            own = ch.update(own, account=self.logged_in_as)
        return events.RoomJoined(
            ch.address,
            self.nick,
            ch.occupants(self.nick),
            ch.topic,
            ch.topic_by,
            subject_at=ch.topic_at,
            own=own.occupant if own is not None else None,
            features=self.group_features(),
        )

    def _has_cap(self, name: str) -> bool:
        return self.conn is not None and name in self.conn.caps

    async def _service(self, text: str) -> None:
        await self.deliver(events.Message(self.service, text, timestamp=datetime.now(UTC)))

    async def _flush_welcome(self) -> None:
        """Show the greeting once per session; after a reconnect one line replaces it.

        The welcome numerics and MOTD rarely change between connections, so repeating
        them after every drop only buries what matters. What went wrong while
        registering again (an error numeric, a failed SASL login) is still shown.
        """
        if self._welcome:
            lines, self._welcome = self._welcome, []
            if self._greeted:
                version = f" ({self._server_version})" if self._server_version else ""
                again = f"Reconnected to {self.server}{version} as {self.nick}."
                lines = [("", again), *((c, text) for c, text in lines if _is_problem(c))]
            self._greeted = True
            await self._service("\n".join(text for _, text in lines))
        self._in_welcome = False

    async def _on_line(self, line: Line) -> None:
        batch = self._history_batches.get(line.tags.get("batch") or "")
        if batch is not None:
            batch[1].append(line)  # history: handled as a whole at the batch's end
            return
        welcome_line = line.command.isdigit() or line.command in WELCOME_COMMANDS
        if self._in_welcome and not welcome_line:
            await self._flush_welcome()  # a server without MOTD end: do not hold it back
        # Only `_irc_*` methods are handlers: a server's command name picks nothing else.
        handler = getattr(self, f"_irc_{line.command.lower()}", None)
        if handler is not None:
            await handler(line)
        elif line.command in JOIN_ERRORS and await self._join_refused(line):
            return
        elif line.command in NICK_ERRORS and self._nick_request is not None:
            room, nick = self._nick_request
            self._nick_request = None
            if room is None:  # asked for by the network settings, not from a room
                await self._service(
                    f"{self.server} refused the nick {nick} from your network settings: "
                    f"{line.param(-1)}; you stay {self.nick}"
                )
            else:
                await self.deliver(events.NickConflict(room, nick, line.param(-1)))
        elif line.command.isdigit() and line.command not in SILENT_NUMERICS:
            await self._numeric(line)

    async def _numeric(self, line: Line) -> None:
        text = " ".join(line.params[1:])
        if line.command in {"372", "375"}:
            text = line.param(-1)
        if self._in_welcome:
            self._welcome.append((line.command, text))
            if line.command in WELCOME_END:
                await self._flush_welcome()
            return
        if line.command in {"401", "404", "411", "412"}:
            target = line.param(1)
            xmpp_id = self._last_private_id.pop(casefold(target), None)
            # Only a nick we wrote to (or could have) has an address to answer from.
            if xmpp_id is not None or _is_nick(target):
                await self.deliver(
                    events.DeliveryFailed(
                        make_address(target, self.server), xmpp_id, "item-not-found", line.param(-1)
                    )
                )
                return
        channel = self.channels.get(casefold(line.param(1)))
        if channel is not None and channel.joined:
            await self.deliver(events.Message(channel.address, line.param(-1)))
        else:
            await self._service(text)

    async def _irc_005(self, line: Line) -> None:
        self.modes.apply_isupport(line.params[1:-1])

    async def _irc_001(self, line: Line) -> None:
        self._welcome.append((line.command, line.param(-1)))

    async def _irc_004(self, line: Line) -> None:
        """RPL_MYINFO: the server's name and software, for the line a reconnect gets."""
        self._server_version = " ".join(line.params[1:3])
        await self._numeric(line)

    async def _irc_error(self, line: Line) -> None:
        await self._flush_welcome()
        await self._service(f"Server error: {line.param(-1)}")

    async def _irc_join(self, line: Line) -> None:
        name = line.param(0)
        ch = self.channels.get(casefold(name))
        if casefold(line.nick) == casefold(self.nick):
            if "!" in line.prefix:
                user, _, host = line.prefix.split("!", 1)[1].partition("@")
                self.userhost = (user, host)
            if ch is None and not _is_channel_name(name):
                return  # a channel no room JID can stand for: nothing to show
            if ch is None:  # joined by a raw command or forced by the server
                ch = self.channels[casefold(name)] = Channel(name, make_address(name, self.server))
            ch.joined, ch.synced, ch.name = True, False, name
            ch.names = {}
            return
        if ch is None or not ch.joined:
            return
        if self._has_cap("extended-join") and len(line.params) >= 3:
            # JOIN #chan account :realname, `*` for someone not logged in
            member = Member(line.nick, account=_account(line.param(1)), realname=line.param(2))
        else:
            member = Member(line.nick)
        ch.add(member)
        if ch.synced:
            await self.deliver(events.OccupantJoined(ch.address, member.occupant))

    async def _irc_353(self, line: Line) -> None:
        ch = self.channels.get(casefold(line.param(2)))
        if ch is None:
            return
        for entry in line.param(-1).split():
            nick, modes = self.modes.split_names_entry(entry)
            ch.names[sys.intern(casefold(nick))] = shared_member(Member(nick, modes))

    async def _irc_366(self, line: Line) -> None:
        ch = self.channels.get(casefold(line.param(1)))
        if ch is None or not ch.joined or ch.synced:
            return
        before, ch.members, ch.names, ch.synced = ch.members, ch.names, {}, True
        for key, member in list(ch.members.items()):
            known = before.get(key)
            if known is not None:  # a rejoin: what we knew still holds until WHO says
                ch.update(
                    member,
                    account=known.account,
                    realname=known.realname,
                    first_nick=known.first_nick,
                )
        if self._has_cap("account-notify") and self.modes.whox:
            # Who is away and who is logged in as what; AWAY and ACCOUNT keep it current.
            self.send("WHO", ch.name, f"%tcnfa,{WHOX_TOKEN}")
        elif self._has_cap("away-notify"):
            self.send("WHO", ch.name)  # who is away now; AWAY lines keep it current
        gap = await self._catch_up(ch)
        if not ch.rejoining:
            await self.deliver(self._joined_event(ch))
            own = ch.member(self.nick)
            if own is not None and own.occupant.role is not events.Role.PARTICIPANT:
                # RoomJoined lists others only; our own rank (op when first in) follows.
                await self.deliver(events.OccupantJoined(ch.address, own.occupant))
            if gap:  # the gateway restarted: the first join of this connection
                await self.deliver(events.Message(ch.address, gap))
            return
        ch.rejoining = False
        for key, old in before.items():
            if key not in ch.members:
                await self.deliver(events.OccupantLeft(ch.address, old.nick))
        for key, new in ch.members.items():
            previous = before.get(key)
            changed = previous is None or previous.occupant != new.occupant
            if key != casefold(self.nick) and changed:
                await self.deliver(events.OccupantJoined(ch.address, new.occupant))
        reconnected = f"Reconnected to {self.server}."
        await self.deliver(
            events.Message(ch.address, f"{reconnected} {gap}" if gap else reconnected)
        )

    async def _irc_352(self, line: Line) -> None:
        """A WHO reply: flags start with G (gone) for an away member, H (here) otherwise."""
        ch = self.channels.get(casefold(line.param(1)))
        if ch is not None:
            await self._mark_away(ch, line.param(5), line.param(6).startswith("G"))

    async def _irc_354(self, line: Line) -> None:
        """A WHOX reply to our `%tcnfa`: token, channel, nick, flags, account (`0`: none)."""
        if line.param(1) != WHOX_TOKEN or len(line.params) < 6:
            return
        ch = self.channels.get(casefold(line.param(2)))
        if ch is None:
            return
        nick, flags, account = line.param(3), line.param(4), line.param(5)
        member = ch.member(nick)
        if member is None or casefold(nick) == casefold(self.nick):
            return
        changed = member.account != _account(account, none="0")
        member = ch.update(member, account=_account(account, none="0"))
        if not await self._mark_away(ch, nick, flags.startswith("G")) and changed and ch.synced:
            await self.deliver(events.OccupantJoined(ch.address, member.occupant))

    async def _irc_account(self, line: Line) -> None:
        """account-notify: `ACCOUNT name` logged in, `ACCOUNT *` logged out."""
        account = _account(line.param(0))
        if casefold(line.nick) == casefold(self.nick):
            self.logged_in_as = account
        await self._update_members(line.nick, account=account)

    async def _irc_setname(self, line: Line) -> None:
        """setname: a member's new real name (shown in their presence)."""
        await self._update_members(line.nick, realname=line.param(-1))

    async def _irc_chghost(self, line: Line) -> None:
        """chghost: a new user name or host, without the fake quit and rejoin servers
        send clients that lack the cap; ours decides how long our lines may be."""
        if casefold(line.nick) == casefold(self.nick) and len(line.params) >= 2:
            self.userhost = (line.param(0), line.param(1))

    async def _irc_900(self, line: Line) -> None:
        """RPL_LOGGEDIN `<nick> <nick!user@host> <account> :text`."""
        self.logged_in_as = line.param(2) or None
        await self._numeric(line)

    async def _irc_901(self, line: Line) -> None:
        """RPL_LOGGEDOUT."""
        self.logged_in_as = None
        await self._numeric(line)

    async def _update_members(self, nick: str, **changes: str | None) -> None:
        """Set `changes` on `nick` in every channel; rooms see the new presence."""
        for ch in list(self.channels.values()):
            member = ch.member(nick)
            if member is None:
                continue
            before = member.occupant
            member = ch.update(member, **changes)
            if ch.synced and member.occupant != before:
                await self.deliver(events.OccupantJoined(ch.address, member.occupant))

    async def _irc_away(self, line: Line) -> None:
        """away-notify: AWAY with a text is away, without one is back."""
        away = bool(line.params and line.param(-1))
        for ch in list(self.channels.values()):
            await self._mark_away(ch, line.nick, away)

    async def _mark_away(self, ch: Channel, nick: str, away: bool) -> bool:
        """Note whether `nick` is away; True if that was news (the room was told)."""
        member = ch.member(nick)
        if member is None or member.away == away or casefold(nick) == casefold(self.nick):
            return False
        member = ch.update(member, away=away)
        if ch.synced:
            await self.deliver(events.OccupantJoined(ch.address, member.occupant))
        return True

    async def _join_refused(self, line: Line) -> bool:
        ch = self.channels.get(casefold(line.param(1)))
        if ch is None or ch.joined:
            return False
        del self.channels[casefold(line.param(1))]
        text = f"{line.param(1)}: {line.param(-1)}"
        if ch.rejoining:
            await self.deliver(events.RoomLeft(ch.address, f"could not rejoin: {text}"))
        else:
            await self.deliver(events.RoomJoinFailed(ch.address, JOIN_ERRORS[line.command], text))
        return True

    async def _irc_332(self, line: Line) -> None:
        ch = self.channels.get(casefold(line.param(1)))
        if ch is not None:
            ch.topic = strip_formatting(line.param(-1))

    async def _irc_333(self, line: Line) -> None:
        ch = self.channels.get(casefold(line.param(1)))
        if ch is not None:
            ch.topic_by = line.param(2).split("!", 1)[0]
            ch.topic_at = _unix_time(line.param(3))

    async def _irc_331(self, line: Line) -> None:
        ch = self.channels.get(casefold(line.param(1)))
        if ch is not None:
            ch.topic = ch.topic_by = ch.topic_at = None

    async def _irc_topic(self, line: Line) -> None:
        ch = self.channels.get(casefold(line.param(0)))
        if ch is None or not ch.joined:
            return
        ch.topic, ch.topic_by = strip_formatting(line.param(-1)), line.nick
        ch.topic_at = parse_timestamp(line.tags.get("time")) or datetime.now(UTC)
        await self.deliver(events.SubjectChanged(ch.address, ch.topic, line.nick, ch.topic_at))

    async def _irc_part(self, line: Line) -> None:
        ch = self.channels.get(casefold(line.param(0)))
        reason = line.param(1) or None
        if casefold(line.nick) == casefold(self.nick):
            if ch is not None:  # parted by a raw command: we no longer want it
                del self.channels[casefold(line.param(0))]
                await self.deliver(events.RoomLeft(ch.address, reason))
            return
        if ch is not None and ch.remove(line.nick) is not None and ch.synced:
            await self.deliver(events.OccupantLeft(ch.address, line.nick, reason))

    async def _irc_kick(self, line: Line) -> None:
        ch = self.channels.get(casefold(line.param(0)))
        if ch is None:
            return
        target, reason = line.param(1), line.param(2) or None
        if casefold(target) == casefold(self.nick):
            del self.channels[casefold(line.param(0))]
            await self.deliver(events.RoomLeft(ch.address, reason, kicked_by=line.nick))
        elif ch.remove(target) is not None:
            await self.deliver(events.OccupantLeft(ch.address, target, reason, kicked_by=line.nick))

    async def _irc_quit(self, line: Line) -> None:
        reason = line.param(0) or None
        for ch in self.channels.values():
            if ch.remove(line.nick) is not None and ch.synced:
                await self.deliver(events.OccupantLeft(ch.address, line.nick, reason))

    async def _irc_nick(self, line: Line) -> None:
        old, new = line.nick, line.param(0)
        own = casefold(old) == casefold(self.nick)
        if own:
            self.nick = new
            self._nick_request = None
        for ch in self.channels.values():
            member = ch.remove(old)
            if member is None:
                continue
            ch.add(replace(member, nick=new))
            if ch.synced:
                await self.deliver(events.NickChanged(ch.address, old, new, own))

    async def _irc_mode(self, line: Line) -> None:
        ch = self.channels.get(casefold(line.param(0)))
        if ch is None or not ch.synced:
            return
        for adding, letter, arg in self.modes.parse_changes(line.params[1:]):
            if letter not in self.modes.prefix_modes or arg is None:
                continue
            member = ch.member(arg)
            if member is None:
                continue
            before = member.occupant
            modes = member.modes | {letter} if adding else member.modes - {letter}
            member = ch.update(member, modes=shared_modes(modes))
            if member.occupant != before:
                await self.deliver(events.OccupantJoined(ch.address, member.occupant))

    async def _irc_privmsg(self, line: Line) -> None:
        await self._on_text(line, notice=False)

    async def _irc_notice(self, line: Line) -> None:
        await self._on_text(line, notice=True)

    async def _on_text(self, line: Line, *, notice: bool, history: bool = False) -> None:
        """A PRIVMSG or NOTICE, live or (`history`) from a chat history batch."""
        target, text = line.param(0), line.param(-1)
        request = parse_ctcp(text)
        kind = events.MessageKind.NOTICE if notice else events.MessageKind.MESSAGE
        if request is not None and request.command != "ACTION":
            if not notice:
                if not history and _is_nick(line.nick):
                    self._answer_ctcp(line.nick, request.command, request.argument)
                return
            text = f"CTCP {request.command} reply: {request.argument}"
        elif request is not None:
            text, kind = ACTION_PREFIX + request.argument, events.MessageKind.ACTION
        text = to_styling(text)
        from_server = "!" not in line.prefix
        if is_channel(target):
            ch = self.channels.get(casefold(target))
            if ch is not None:
                seen = Anchor.of(line)
                if seen and (seen.at is None or ch.last.at is None or seen.at >= ch.last.at):
                    ch.last = seen  # history is older than what was seen live meanwhile
                if ch.fetch is not None and not history:
                    ch.fetch.note(seen.msgid)
                sent = seen.at
                identity = None if from_server else await self._sender_identity(ch, line)
                await self.deliver(
                    events.Message(
                        ch.address,
                        text,
                        nick=line.nick,
                        legacy_id=seen.msgid,
                        timestamp=(sent or datetime.now(UTC)) if history else _replayed(sent),
                        kind=kind,
                        sent=sent,
                        highlight=self._highlights(line.nick, text),
                        occupant_id=identity,
                        reply_to=rich.reply_target(line.tags),
                    )
                )
                return
        if from_server and self._in_welcome:
            self._welcome.append((line.command, text))  # "*** Looking up your hostname"
        elif from_server:
            await self._service(text)
        elif not _is_nick(line.nick):  # no contact address can stand for such a sender
            await self._service(f"<{line.nick}> {text}")
        else:
            sender = make_address(line.nick, self.server)
            answered = rich.reply_target(line.tags)
            msgid = line.tags.get("msgid") or None
            sent = parse_timestamp(line.tags.get("time"))
            markable = msgid is not None and self._has_cap(rich.READ_MARKER_CAP)
            if markable and msgid is not None:
                self._note_private_time(msgid, sent)
            await self.deliver(
                events.Message(
                    sender,
                    text,
                    timestamp=_replayed(sent),
                    # The message's id for the user's clients, to reply or react to.
                    legacy_id=msgid,
                    reply_to=await self._xmpp_id(answered) if answered else None,
                    markable=markable,
                )
            )

    def _note_private_time(self, msgid: str, sent: datetime | None) -> None:
        self._private_sent[msgid] = sent or datetime.now(UTC)
        if len(self._private_sent) > PRIVATE_TIMES_KEPT:
            del self._private_sent[next(iter(self._private_sent))]

    async def _xmpp_id(self, msgid: str) -> str:
        """The id the user's clients know a private message by (the msgid when unknown:
        a contact's message is known by its msgid)."""
        return await self.references.xmpp_id(msgid) or msgid

    async def _sender_identity(self, ch: Channel, line: Line) -> str:
        """The sender's identity for XEP-0421; an `account` tag (account-tag) is the
        freshest word on their account, and a member whose account it changes is
        shown with it."""
        member = ch.member(line.nick)
        tagged = line.tags.get("account") if self._has_cap("account-tag") else None
        if member is None:
            return Member(line.nick, account=_account(tagged or "*")).identity
        if tagged and member.account != tagged and casefold(line.nick) != casefold(self.nick):
            member = ch.update(member, account=tagged)
            if ch.synced:
                await self.deliver(events.OccupantJoined(ch.address, member.occupant))
        return member.identity

    def _highlights(self, sender: str, text: str) -> bool:
        """A line by someone else naming our nick, for a user who wants to hear of it."""
        wanted = self.settings is None or self.settings.highlights
        return wanted and casefold(sender) != casefold(self.nick) and names_nick(text, self.nick)

    def _answer_ctcp(self, nick: str, command: str, argument: str) -> None:
        replies = {
            "VERSION": self.options.version_reply,
            "PING": argument,
            "TIME": datetime.now(UTC).strftime("%a %b %d %H:%M:%S %Y UTC"),
            "CLIENTINFO": "ACTION CLIENTINFO PING TIME VERSION",
        }
        if command in replies and self.connected:
            self.send("NOTICE", nick, ctcp(command, replies[command]))

    async def _irc_tagmsg(self, line: Line) -> None:
        """Client tags without text: a reaction or typing in a channel or to us. Our
        own come back as echoes of what the user's clients already show."""
        if casefold(line.nick) == casefold(self.nick):
            return
        if casefold(line.param(0)) == casefold(self.nick) and _is_nick(line.nick):
            await self._private_tagmsg(line)
            return
        ch = self.channels.get(casefold(line.param(0)))
        if ch is None or not ch.synced:
            return
        reacted, target = rich.reaction(line.tags), rich.reply_target(line.tags)
        if reacted is not None and target:
            emoji, removed = reacted
            seen = Anchor.of(line)
            await self.deliver(
                events.Reaction(
                    ch.address,
                    line.nick,
                    target,
                    emoji,
                    removed,
                    legacy_id=seen.msgid,
                    sent=seen.at,
                    occupant_id=await self._sender_identity(ch, line),
                )
            )
            return
        state = rich.typing_state(line.tags)
        if state is not None:
            await self.deliver(events.Typing(ch.address, line.nick, state))

    async def _private_tagmsg(self, line: Line) -> None:
        """A contact's reaction (to a message by the id the user's clients know it
        by) or typing, in the private chat with them."""
        contact = make_address(line.nick, self.server)
        reacted, target = rich.reaction(line.tags), rich.reply_target(line.tags)
        if reacted is not None and target:
            emoji, removed = reacted
            named = await self._xmpp_id(target)
            await self.deliver(events.Reaction(contact, line.nick, named, emoji, removed))
            return
        state = rich.typing_state(line.tags)
        if state is not None:
            await self.deliver(events.Typing(contact, line.nick, state))

    async def _irc_redact(self, line: Line) -> None:
        """draft/message-redaction: someone (or, echoed, the user) removed a message;
        a contact's to us names it by the id the user's clients know it by."""
        if len(line.params) < 2:
            return
        reason = line.param(2) or None
        if casefold(line.param(0)) == casefold(self.nick):
            if _is_nick(line.nick) and casefold(line.nick) != casefold(self.nick):
                contact = make_address(line.nick, self.server)
                named = await self._xmpp_id(line.param(1))
                await self.deliver(events.Retraction(contact, line.nick, named, reason))
            return
        ch = self.channels.get(casefold(line.param(0)))
        if ch is not None and ch.joined:
            await self.deliver(events.Retraction(ch.address, line.nick, line.param(1), reason))

    async def _irc_322(self, line: Line) -> None:
        if self._lists:
            name, users, topic = line.param(1), line.param(2), strip_formatting(line.param(-1))
            entry = (make_address(name, self.server), f"{name} ({users}) {topic}".strip())
            for _, result in self._lists:
                result.append(entry)

    async def _irc_323(self, line: Line) -> None:
        lists, self._lists = self._lists, []
        for done, _ in lists:
            if not done.done():
                done.set_result(None)

    async def _irc_batch(self, line: Line) -> None:
        """IRCv3 batch start/end; only chat history we asked for is collected."""
        opened = batch_target(line)
        if opened is not None:
            ch = self.channels.get(casefold(opened[1]))
            if ch is not None and ch.fetch is not None:
                self._history_batches[opened[0]] = (ch, [])
        elif line.param(0).startswith("-"):
            ended = self._history_batches.pop(line.param(0)[1:], None)
            if ended is not None:
                await self._history_page(*ended)

    async def _irc_fail(self, line: Line) -> None:
        """IRCv3 standard reply: a refused CHATHISTORY ends that channel's fetch."""
        if line.param(0) != "CHATHISTORY":
            await self._service(" ".join(line.params))
            return
        for name in line.params[2:-1]:
            ch = self.channels.get(casefold(name))
            if ch is not None and ch.fetch is not None:
                ch.fetch = None
                text = f"{self.server} did not send what {ch.name} said while the gateway was away"
                await self.deliver(events.Message(ch.address, f"{text}: {line.param(-1)}"))

    async def _irc_invite(self, line: Line) -> None:
        name = line.param(1)
        if casefold(line.param(0)) != casefold(self.nick):
            # invite-notify: someone in a channel of ours invited someone else there
            ch = self.channels.get(casefold(name))
            if ch is not None and ch.joined:
                text = f"{line.nick} invited {line.param(0)} to {ch.name}"
                await self.deliver(events.Message(ch.address, text))
            return
        if not _is_channel_name(name):
            await self._service(f"{line.nick} invited you to {name!r}, which is no channel")
            return
        by = make_address(line.nick, self.server) if _is_nick(line.nick) else None
        await self.deliver(events.Invitation(make_address(name, self.server), by))


def _account(name: str, none: str = "*") -> str | None:
    """An account name as servers send it; `none` (`*`, or `0` in WHOX) means none."""
    return None if not name or name == none else name


def _is_channel_name(name: str) -> bool:
    """RFC 2812 §1.3: a prefix, then no blank, BEL, comma or other control character."""
    return (
        is_channel(name)
        and len(name) > 1
        and name.isprintable()
        and not any(char in name for char in " ,:")
        and can_be_named(name)
    )


def _is_problem(command: str) -> bool:
    """An error numeric, or a SASL failure (902, 904-907; 900 and 903 are success)."""
    return command.isdigit() and (400 <= int(command) < 600 or command in SASL_FAILURES)


def _replayed(sent: datetime | None) -> datetime | None:
    """When a replayed line was `sent` (its IRCv3 server-time); None for a live one."""
    return sent if sent is not None and datetime.now(UTC) - sent > REPLAYED_AFTER else None


def _unix_time(text: str) -> datetime | None:
    """Seconds since the epoch (RPL_TOPICWHOTIME's setat); None for anything else."""
    try:
        return datetime.fromtimestamp(int(text), UTC) if text.isdigit() else None
    except (OverflowError, ValueError, OSError):  # a hostile server's 10**30
        return None
