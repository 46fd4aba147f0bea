"""Per-network settings (nick, passwords, TLS, autojoin) and the ad-hoc command for them.

Non-secret values live in `Account.state["networks"][server]` and secrets (server
password, SASL and NickServ passwords) in the account's encrypted secrets, keyed
`server/field`. Not in records: `Command.form` is handed only the `Account`, so the
current values it shows must be readable from it, and records are stored in clear.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from bridges.address import Address
from bridges.base import Account, AccountStore, BridgeError, Command, FormField
from bridges.irc.address import split_address
from bridges.irc.connection import load_client_cert
from bridges.irc.options import IrcOptions
from bridges.irc.protocol import is_channel, is_valid_nick

STATE_KEY = "networks"
SECRET_FIELDS = ("server_password", "sasl_password", "nickserv_password", "client_cert")
CHANNEL_LISTS = ("autojoin", "persistent")
RECONNECT_FIELDS = {
    "port": "port",
    "tls": "TLS",
    "tls_verify": "certificate check",
    "username": "user name",
    "realname": "real name",
    "server_password": "server password",
    "sasl_password": "SASL password",
    "client_cert": "client certificate",
    "after_connect_commands": "commands to send after connecting",
}
"""Settings only used while registering, so a live connection cannot take them (with
the words the confirmation uses); the others apply to it at once."""
COMMAND_NODE = "irc-network-settings"
MAX_COMMANDS = 20
MAX_COMMAND_LENGTH = 400
"""An after-connect command must fit in one IRC line."""


@dataclass(frozen=True)
class NetworkSettings:
    """Everything needed to connect one user to one IRC server."""

    server: str
    port: int
    tls: bool
    tls_verify: bool
    nick: str = ""
    username: str = ""
    realname: str = ""
    autojoin: tuple[str, ...] = ()
    persistent: tuple[str, ...] = ()
    """Channels to stay in while the user is offline."""
    encoding: str = "latin-1"
    highlights: bool = True
    """Lines naming the nick, while no client of the user is in the room, also come
    as private messages (kept offline by the user's server, so phones are notified)."""
    reactions_as_text: bool = True
    """Reactions go out as `/me reacted …` lines where the server has no reaction tags."""
    server_password: str = ""
    sasl_password: str = ""
    nickserv_password: str = ""
    client_cert: str = ""
    """PEM certificate and private key: TLS client authentication (SASL EXTERNAL, CertFP)."""
    after_connect_commands: tuple[str, ...] = ()
    """Raw IRC lines sent after the welcome, before any JOIN (umodes, a services login)."""
    extra: dict[str, Any] = field(default_factory=dict)


def _secret_key(server: str, name: str) -> str:
    return f"{server}/{name}"


def load_settings(options: IrcOptions, account: Account, server: str) -> NetworkSettings:
    """The user's settings for `server`: stored values over registration defaults."""
    base = NetworkSettings(
        server=server,
        port=options.port,
        tls=options.tls,
        tls_verify=options.tls_verify,
        nick=str(account.settings.get("nick") or ""),
        username=str(account.settings.get("username") or ""),
        realname=str(account.settings.get("realname") or options.realname),
        encoding=options.encoding_fallback,
    )
    stored = account.state.get(STATE_KEY, {}).get(server, {})
    known = {f.name for f in fields(NetworkSettings)} - {"server", "extra", *SECRET_FIELDS}
    values: dict[str, Any] = {k: v for k, v in stored.items() if k in known and v not in ("", None)}
    for name in (*CHANNEL_LISTS, "after_connect_commands"):
        if name in values:
            values[name] = tuple(values[name])
    for name in SECRET_FIELDS:
        values[name] = account.secrets.get(_secret_key(server, name), "")
    settings = replace(base, **values)
    if not options.allow_insecure:
        settings = replace(settings, tls=settings.tls or options.tls, tls_verify=options.tls_verify)
    return settings


def settings_fields(options: IrcOptions, current: NetworkSettings) -> list[FormField]:
    insecure = options.allow_insecure
    out = [
        FormField("nick", "Nick on this network", default=current.nick or None),
        FormField("username", "User name (ident)", default=current.username or None, max_length=32),
        FormField("realname", "Real name", default=current.realname or None, max_length=100),
        FormField("port", "Port", default=current.port, datatype="xs:integer"),
        FormField(
            "autojoin",
            "Channels to join on connect",
            type="text-multi",
            default=list(current.autojoin),
        ),
        FormField(
            "persistent",
            "Channels to stay in while you are offline",
            type="text-multi",
            default=list(current.persistent),
        ),
        FormField("encoding", "Charset of lines that are not UTF-8", default=current.encoding),
        FormField(
            "highlights",
            "Send lines naming my nick as private messages while none of my clients is in the room",
            type="boolean",
            default=current.highlights,
            datatype="xs:boolean",
        ),
        FormField(
            "reactions_as_text",
            "Send my reactions as /me lines where the server cannot carry them",
            type="boolean",
            default=current.reactions_as_text,
            datatype="xs:boolean",
        ),
        FormField("server_password", "Server password (PASS)", type="text-private"),
        FormField(
            "sasl_password", "SASL password, SCRAM or PLAIN (account = nick)", type="text-private"
        ),
        FormField("nickserv_password", "NickServ IDENTIFY password", type="text-private"),
        FormField(
            "after_connect_commands",
            "IRC commands to send after connecting, one a line (e.g. MODE yournick +x)",
            type="text-multi",
            default=list(current.after_connect_commands),
            max_length=MAX_COMMAND_LENGTH,
        ),
        FormField(
            "client_cert",
            "TLS client certificate and its key, PEM (for SASL EXTERNAL or CertFP)",
            type="text-multi",
            secret=True,
        ),
    ]
    if insecure:
        out += [
            FormField("tls", "Use TLS", type="boolean", default=current.tls, datatype="xs:boolean"),
            FormField(
                "tls_verify",
                "Verify the TLS certificate",
                type="boolean",
                default=current.tls_verify,
                datatype="xs:boolean",
            ),
        ]
    return out


def check_values(values: Mapping[str, Any], max_nick: int) -> dict[str, Any]:
    """Validate a submitted settings form; raise BridgeError naming the bad field."""
    clean: dict[str, Any] = {}
    nick = str(values.get("nick") or "").strip()
    if nick and not is_valid_nick(nick, max_nick):
        raise BridgeError(f"nick: {nick!r} is not a valid IRC nick", "not-acceptable")
    clean["nick"] = nick
    for name in ("username", "realname", "encoding"):
        clean[name] = str(values.get(name) or "").strip()
    if clean["encoding"]:
        try:
            "".encode(clean["encoding"])
        except LookupError:
            raise BridgeError(
                f"encoding: unknown charset {clean['encoding']!r}", "not-acceptable"
            ) from None
    if values.get("port") not in (None, ""):
        port = int(values["port"])
        if not 0 < port < 65536:
            raise BridgeError("port: must be between 1 and 65535", "not-acceptable")
        clean["port"] = port
    for name in CHANNEL_LISTS:
        raw = values.get(name) or []
        channels = [c.strip() for c in (raw.splitlines() if isinstance(raw, str) else raw)]
        bad = [c for c in channels if c and (not is_channel(c) or " " in c or "," in c)]
        if bad:
            raise BridgeError(f"{name}: not channel names: {', '.join(bad)}", "not-acceptable")
        clean[name] = [c for c in channels if c]
    for name in ("tls", "tls_verify", "highlights", "reactions_as_text"):
        if values.get(name) is not None:
            clean[name] = bool(values[name])
    raw = values.get("after_connect_commands") or []
    lines = [c.strip() for c in (raw.splitlines() if isinstance(raw, str) else raw)]
    clean["after_connect_commands"] = [c for c in lines if c]
    if len(clean["after_connect_commands"]) > MAX_COMMANDS:
        raise BridgeError(
            f"after_connect_commands: at most {MAX_COMMANDS} commands", "not-acceptable"
        )
    if values.get("client_cert"):
        try:
            load_client_cert(ssl.create_default_context(), str(values["client_cert"]))
        except ValueError as exc:
            raise BridgeError(f"client_cert: {exc}", "not-acceptable") from None
    return clean


AccountSaved = Callable[[Account, str], list[str] | None]
"""Hands the saved account to the live session, which applies what it can to its
connection to the server; returns the labels of changes that wait for the next
connection, or None when there is no connection."""


def network_command(options: IrcOptions, saved: AccountSaved) -> Command:
    """XEP-0050 command on a server address: show and change that network's settings.

    `saved` is called with the updated account, so a running session (which holds its
    own `Account` copy) uses the new values at once where IRC allows it.
    """

    def server_of(address: Address | None) -> str:
        if address is None:  # only offered on server addresses; the core never passes None
            raise BridgeError("run this on an IRC server's address", "bad-request")
        return split_address(address).server

    async def form(account: Account, address: Address | None) -> Sequence[FormField]:
        server = server_of(address)
        current = load_settings(options, account, server)
        return settings_fields(options, current)

    async def submit(
        account: Account, address: Address | None, store: AccountStore, values: dict[str, Any]
    ) -> str:
        server = server_of(address)
        clean = check_values(values, options.nick_max_length)
        networks = dict(account.state.get(STATE_KEY, {}))
        networks[server] = {**networks.get(server, {}), **clean}
        state = {**account.state, STATE_KEY: networks}
        secrets = dict(account.secrets)
        for name in SECRET_FIELDS:
            if values.get(name):  # an empty secret field keeps the stored one
                secrets[_secret_key(server, name)] = str(values[name])
        await store.save_account(state=state, secrets=secrets)
        account.state, account.secrets = state, secrets
        pending = saved(account, server)
        if pending is None:
            return f"Settings for {server} saved."
        text = f"Settings for {server} saved and applied to your connection."
        if pending:
            text += (
                f" The new {', '.join(pending)} can only be used by a new connection to "
                f"{server}: this one keeps the old."
            )
        return text

    return Command(COMMAND_NODE, "Network settings", form, submit)
