"""IrcBridge: the IRC network plugin (registration defaults, addresses, settings)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

from bridges.address import Address, AddressError, AddressKind
from bridges.base import (
    Account,
    AccountData,
    AccountStore,
    Bridge,
    Command,
    FormField,
    RegistrationError,
    Session,
    Sink,
)
from bridges.irc.address import format_localpart, make_address, parse_localpart, split_address
from bridges.irc.connection import ConnectPacing
from bridges.irc.identd import Identd
from bridges.irc.options import IrcOptions
from bridges.irc.protocol import is_valid_nick, nick_from_jid
from bridges.irc.session import IrcSession, persistent_channels
from bridges.irc.settings import network_command


class IrcBridge(Bridge):
    name: ClassVar[str] = "irc"
    disco_type: ClassVar[str] = "irc"
    display_name: ClassVar[str] = "IRC"
    instructions: ClassVar[str] = (
        "Choose your default IRC nick. Join channels as #channel%irc.server.tld@this "
        "gateway; per-network settings are ad-hoc commands on irc.server.tld@this gateway."
    )
    registration_fields: ClassVar[Sequence[FormField]] = (
        FormField("nick", "Default nick", required=True, legacy_name="nick"),
        FormField("username", "User name (ident)", legacy_name="username", max_length=32),
        FormField("realname", "Real name", legacy_name="name", max_length=100),
    )
    supports_groups: ClassVar[bool] = True
    occupant_ids: ClassVar[bool] = True
    contact_replies: ClassVar[bool] = True
    gateway_prompt: ClassVar[str] = "IRC address (#channel%server or nick%server)"
    gateway_desc: ClassVar[str] = "Enter an IRC channel or nick, followed by %server."
    Options: ClassVar[type[IrcOptions]] = IrcOptions

    @classmethod
    def demo_server(cls, run_dir: Path) -> AbstractAsyncContextManager[dict[str, Any]]:
        return _demo_ngircd(run_dir)

    def __init__(self, options: IrcOptions) -> None:
        super().__init__(options)
        self.options: IrcOptions = options
        self.sessions: dict[str, IrcSession] = {}
        """Live sessions by user, so settings saved by a command reach them."""
        self.identd: Identd | None = None
        self.pacing = ConnectPacing(options.connect_rate, options.connect_burst)
        """New connections per IRC server, across all users (start-up, reconnects)."""
        self._identd_lock = asyncio.Lock()

    async def start_identd(self) -> None:
        """Start the ident server (if configured) before the first IRC connection."""
        config = self.options.identd
        async with self._identd_lock:
            if config is not None and self.identd is None:
                identd = Identd(config.bind, config.port, self._connection_owner)
                await identd.start()
                self.identd = identd

    def _connection_owner(self, ours: int, theirs: int) -> str | None:
        """The user whose IRC connection has these ports (an ident query)."""
        for user, session in self.sessions.items():
            for network in session.networks.values():
                if network.has_ports((ours, theirs)):
                    return user
        return None

    async def close(self) -> None:
        if self.identd is not None:
            await self.identd.close()

    async def validate_registration(
        self, user: str, values: Mapping[str, Any], previous: Account | None
    ) -> AccountData:
        """Syntax only: no IRC server is involved until the user picks one."""
        nick = str(values.get("nick") or "").strip()
        if not is_valid_nick(nick, self.options.nick_max_length):
            raise RegistrationError(
                f"{nick!r} is not a valid IRC nick (RFC 2812: a letter or one of []\\`_^{{|}} "
                f"first, then letters, digits, those or '-', at most "
                f"{self.options.nick_max_length})",
                field="nick",
            )
        username = str(values.get("username") or "").strip()
        if username and (not username.isascii() or any(c in username for c in " @\0\r\n")):
            raise RegistrationError(f"{username!r} is not a valid IRC user name", "username")
        settings = {
            "nick": nick,
            "username": username,
            "realname": str(values.get("realname") or "").strip(),
        }
        # Per-network secrets live in the same encrypted blob: keep them.
        return AccountData(settings, previous.secrets if previous else {})

    def default_account(self, user: str, nick: str | None) -> AccountData | None:
        """IRC needs no registration: the join's nick if IRC allows it, else one from the JID.

        With `require_registration` the user must register first.
        """
        if self.options.require_registration:
            return None
        if not nick or not is_valid_nick(nick, self.options.nick_max_length):
            nick = nick_from_jid(user)
        return AccountData({"nick": nick, "username": "", "realname": ""})

    def create_session(self, account: Account, sink: Sink, store: AccountStore) -> Session:
        session = IrcSession(
            self,
            account,
            sink,
            store,
            on_stop=self._session_stopped,
            before_start=self.start_identd,
            pacing=self.pacing,
        )
        self.sessions[account.user] = session
        return session

    def runs_offline(self, account: Account) -> bool:
        """Accounts with persistent channels stay in them across gateway restarts."""
        return bool(persistent_channels(self.options, account))

    def _session_stopped(self, session: IrcSession) -> None:
        if self.sessions.get(session.account.user) is session:
            del self.sessions[session.account.user]

    def _account_saved(self, account: Account, server: str) -> list[str] | None:
        """Copy new settings into the live session's Account and apply them to `server`."""
        session = self.sessions.get(account.user)
        if session is None:
            return None
        if session.account is not account:
            session.account.state = dict(account.state)
            session.account.secrets = dict(account.secrets)
        return session.settings_saved(server)

    def parse_address(self, localpart: str) -> Address:
        return parse_localpart(
            localpart,
            fixed_server=self.options.fixed_server,
            allowed=self.options.allowed_servers,
        )

    def format_address(self, address: Address) -> str:
        return format_localpart(address, fixed_server=self.options.fixed_server)

    def translate_legacy_id(self, text: str) -> Address:
        text = text.strip()
        if not text:
            raise AddressError("empty address")
        if self.options.fixed_server or "%" in text:
            return self.parse_address(text)
        raise AddressError("add %server to the channel or nick", "jid-malformed")

    def occupant_address(self, room: Address, nick: str) -> Address:
        """On IRC a room occupant is simply `nick%server`."""
        return make_address(nick, split_address(room).server)

    def commands(self, address: Address | None) -> Sequence[Command]:
        if address is not None and address.kind is AddressKind.SERVICE:
            return (network_command(self.options, self._account_saved),)
        return ()

    def service_address(self, server: str) -> Address:
        return make_address("", server)


@asynccontextmanager
async def _demo_ngircd(run_dir: Path) -> AsyncIterator[dict[str, Any]]:
    """ngIRCd on loopback for `xmpp-gateway demo`; rooms are #name%localhost."""
    from bridges.irc.devstack import NgIrcd

    async with NgIrcd(run_dir) as server:
        print(
            "  irc:  join #demo%localhost@irc.localhost (no registration needed)",
            flush=True,
        )
        yield {"allowed_servers": ["localhost"], "port": server.port, "tls": False}
