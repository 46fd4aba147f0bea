"""IrcSession: one user's IRC presence, one `Network` (connection) per server.

Connections open lazily, on the first join or message to a server, so registering
with the gateway costs nothing until the user actually uses a network. The exception
is a network with persistent channels: the session opens it as soon as it starts, also
when the gateway starts it for a user who is offline (a bouncer across restarts).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from bridges import events
from bridges.address import Address, AddressKind
from bridges.base import (
    NO_EXTRAS,
    Account,
    AccountStore,
    Bridge,
    BridgeError,
    MessageExtras,
    Session,
    Sink,
)
from bridges.events import GroupFeature
from bridges.irc.address import IrcTarget, split_address
from bridges.irc.connection import ConnectPacing
from bridges.irc.network import Network
from bridges.irc.options import IrcOptions
from bridges.irc.protocol import casefold, is_valid_nick
from bridges.irc.settings import STATE_KEY, load_settings

QUIT_MESSAGE = "XMPP user went offline"
AWAY_TEXTS = {"away": "Away", "xa": "Away for a while", "dnd": "Busy"}
"""XMPP shows that mean AWAY on IRC, with the text used when the user set no status."""
OFFLINE_AWAY = "Not connected (staying in persistent channels)"


def persistent_channels(options: IrcOptions, account: Account) -> dict[str, tuple[str, ...]]:
    """Server → the channels the user stays in while offline, for servers still allowed."""
    found = {}
    for server in account.state.get(STATE_KEY, {}):
        if options.fixed_server and server != options.fixed_server:
            continue
        if options.allowed_servers and server not in options.allowed_servers:
            continue
        channels = load_settings(options, account, server).persistent
        if channels:
            found[server] = channels
    return found


class IrcSession(Session):
    def __init__(
        self,
        bridge: Bridge,
        account: Account,
        sink: Sink,
        store: AccountStore,
        on_stop: Callable[[IrcSession], None] | None = None,
        before_start: Callable[[], Awaitable[None]] | None = None,
        pacing: ConnectPacing | None = None,
    ) -> None:
        super().__init__(bridge, account, sink, store)
        self._on_stop = on_stop
        self._before_start = before_start
        assert isinstance(bridge.options, IrcOptions)
        self.options: IrcOptions = bridge.options
        self.pacing = pacing or ConnectPacing(self.options.connect_rate, self.options.connect_burst)
        """Shared by the bridge's sessions (IrcBridge.pacing)."""
        self.networks: dict[str, Network] = {}
        self._stopped = False
        self.away = ""
        """The AWAY text every network carries; empty while the user is available."""

    def network(self, server: str) -> Network:
        network = self.networks.get(server)
        if network is None:
            if self._stopped:
                raise BridgeError("the session has stopped", "service-unavailable")
            network = Network(
                server,
                self.options,
                self.account,
                self._deliver,
                self.store,
                self.log,
                references=self.sink,
                pacing=self.pacing,
            )
            network.away = self.away
            self.networks[server] = network
        return network

    def settings_saved(self, server: str) -> list[str] | None:
        """Apply new network settings to the live connection (see `Network.apply_settings`)."""
        network = self.networks.get(server)
        return None if network is None else network.apply_settings()

    async def set_presence(self, show: str, status: str) -> None:
        """Away, extended away and do-not-disturb are AWAY on IRC; the status is its text."""
        default = AWAY_TEXTS.get(show)
        self.away = (status or default) if default else ""
        for network in self.networks.values():
            network.user_offline = False
            network.set_away(self.away)

    async def _deliver(self, event: events.Event) -> None:
        """Nothing after `stop`, except what became of the user's own messages while
        stopping: written in the last moments, or an error their client can show."""
        if not self._stopped or isinstance(event, events.Delivered | events.DeliveryFailed):
            await self.sink.deliver(event)

    async def start(self) -> None:
        """Connect to networks with persistent channels and join those; others wait."""
        if self._before_start is not None:
            await self._before_start()  # the ident server: asked as soon as we connect
        self._stay_in_persistent()

    def _stay_in_persistent(self) -> None:
        for server, channels in persistent_channels(self.options, self.account).items():
            self.network(server).stay_in(channels)

    async def stop(self) -> None:
        self._stopped = True
        if self._on_stop is not None:
            self._on_stop(self)
        for network in self.networks.values():
            await network.stop(QUIT_MESSAGE)
        self.networks.clear()

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
        target = split_address(to)
        network = self.network(target.server)
        if to.kind is AddressKind.SERVICE:
            await network.raw(text)
            return
        if extras.reply_to and not to.is_group:  # a private reply (rooms: send_reply)
            # The XEP-0428 fallback quote, without its "> " marks: a short quote of it
            # is what IRC reads where no tag carries the reply.
            said = "\n".join(
                line.removeprefix(">").strip() for line in (extras.quote or "").splitlines()
            )
            quoted = events.Quoted(extras.reply_to, None, said.strip())
            await network.reply(target.local, text, quoted, xmpp_id)
            return
        await network.message(target.local, text, xmpp_id)

    def group_features(self, room: Address) -> frozenset[GroupFeature]:
        """A channel's, or a private chat's: the same tags, REDACT and MARKREAD go to
        a nick."""
        if room.kind is AddressKind.SERVICE:
            return frozenset()
        network = self.networks.get(split_address(room).server)
        return frozenset() if network is None else network.group_features()

    async def send_reply(
        self, room: Address, text: str, quoted: events.Quoted, *, xmpp_id: str | None = None
    ) -> None:
        target = self._chat(room)
        await self.network(target.server).reply(target.local, text, quoted, xmpp_id)

    async def send_correction(
        self, room: Address, text: str, quoted: events.Quoted, *, xmpp_id: str | None = None
    ) -> None:
        target = self._chat(room)
        await self.network(target.server).correct(target.local, text, quoted, xmpp_id)

    async def react(
        self, room: Address, quoted: events.Quoted, added: Sequence[str], removed: Sequence[str]
    ) -> None:
        target = self._chat(room)
        await self.network(target.server).react(target.local, quoted, list(added), list(removed))

    async def retract(self, room: Address, quoted: events.Quoted) -> None:
        target = self._chat(room)
        await self.network(target.server).redact(target.local, quoted)

    async def set_chat_state(self, room: Address, state: events.ChatState) -> None:
        target = self._chat(room)
        network = self.networks.get(target.server)
        if network is not None:
            network.typing(target.local, state)

    async def mark_displayed(self, room: Address, quoted: events.Quoted) -> None:
        target = self._group(room)
        network = self.networks.get(target.server)
        if network is not None:
            network.mark_read(target.local, quoted)

    async def mark_message_displayed(self, contact: Address, message_id: str) -> None:
        """A contact's private message shown (the id is its msgid): MARKREAD to them."""
        if contact.kind is not AddressKind.CONTACT:
            return
        target = split_address(contact)
        network = self.networks.get(target.server)
        if network is not None:
            network.mark_private_read(target.local, message_id)

    async def join(self, room: Address, nick: str, password: str | None = None) -> None:
        target = self._group(room)
        await self.network(target.server).join(target.local, room, nick, password)

    async def user_offline(self) -> bool:
        """Stay only in channels marked persistent (joining those not joined yet); QUIT
        networks that have none."""
        if not self._stopped:
            self._stay_in_persistent()
        for server, network in list(self.networks.items()):
            # The account's settings, not the connection's: it may not be open yet.
            persistent = load_settings(self.options, self.account, server).persistent
            keep = {casefold(name) for name in persistent}
            channels = list(network.channels.values())
            if not any(casefold(ch.name) in keep for ch in channels):
                await network.stop(QUIT_MESSAGE)
                del self.networks[server]
                continue
            for ch in channels:
                if casefold(ch.name) not in keep:
                    await network.leave(ch.name)
            network.user_offline = True
            network.set_away(self.away or OFFLINE_AWAY)
        return bool(self.networks)

    async def leave(self, room: Address) -> None:
        target = self._group(room)
        network = self.networks.get(target.server)
        if network is not None:
            await network.leave(target.local)

    async def invite(self, room: Address, contact: Address, reason: str | None) -> None:
        """INVITE (IRC has no reason for it); the user must be in the channel."""
        target, invitee = self._group(room), split_address(contact)
        if invitee.server != target.server:
            raise BridgeError(f"{invitee.local} is not on {target.server}", "not-acceptable")
        network = self.network(target.server)
        network.channel(target.local)
        network.send("INVITE", invitee.local, target.local)

    async def set_subject(self, room: Address, subject: str) -> None:
        target = self._group(room)
        network = self.network(target.server)
        network.channel(target.local)
        network.send("TOPIC", target.local, subject)

    async def change_nick(self, room: Address, nick: str) -> None:
        if not is_valid_nick(nick, self.options.nick_max_length):
            raise BridgeError(f"{nick!r} is not a valid IRC nick", "not-acceptable")
        target = self._group(room)
        network = self.network(target.server)
        limit = network.modes.nick_length
        if limit is not None and len(nick) > limit:
            raise BridgeError(
                f"{nick!r} is too long: {target.server} allows {limit} characters", "not-acceptable"
            )
        network.request_nick(room, nick)

    async def kick(self, room: Address, nick: str, reason: str | None) -> None:
        target = self._group(room)
        network = self._operator_network(target.server, target.local)
        network.send("KICK", target.local, nick, *([reason] if reason else []))

    async def set_role(self, room: Address, nick: str, role: events.Role) -> None:
        target = self._group(room)
        network = self._operator_network(target.server, target.local)
        changes = {
            events.Role.MODERATOR: ("+o", nick),
            events.Role.PARTICIPANT: ("-o+v", nick, nick),
            events.Role.VISITOR: ("-ov", nick, nick),
        }[role]
        network.send("MODE", target.local, *changes)

    async def list_groups(self, service: Address) -> Sequence[tuple[Address, str]]:
        return await self.network(split_address(service).server).list_channels()

    def _chat(self, chat: Address) -> IrcTarget:
        """A channel or a nick: replies, corrections, reactions and typing go to both."""
        if chat.kind is AddressKind.SERVICE:
            raise BridgeError(f"{chat.legacy_id} is the server, not a chat", "bad-request")
        return split_address(chat)

    def _group(self, room: Address) -> IrcTarget:
        if not room.is_group:
            raise BridgeError(f"{room.legacy_id} is not a channel", "bad-request")
        return split_address(room)

    def _operator_network(self, server: str, channel: str) -> Network:
        network = self.network(server)
        if not network.is_operator(network.channel(channel)):
            raise BridgeError(f"you are not a channel operator in {channel}", "forbidden")
        return network
