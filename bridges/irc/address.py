"""IRC addresses: `#chan%server` (room), `nick%server` (person), `server` (the server).

The scheme is biboumi's. Every address the bridge makes keeps the `%server` part in its
`legacy_id`, lower-cased as JID localparts are, so the same channel always maps to the
same `Address` whether it came from a stanza or from the IRC side. In fixed-server
mode only the JID drops the `%server`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from slixmpp import JID
from slixmpp.jid import InvalidJID

from bridges.address import Address, AddressError, AddressKind
from bridges.irc.protocol import CHANNEL_PREFIXES, is_valid_nick
from bridges.jid_escaping import escape_node, unescape_node

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_CHANNEL_FORBIDDEN = set(" ,\x07\r\n\0")


@dataclass(frozen=True)
class IrcTarget:
    """The parts of an IRC address: `local` is a channel, a nick, or empty (server)."""

    local: str
    server: str

    @property
    def is_channel(self) -> bool:
        return bool(self.local) and self.local[0] in CHANNEL_PREFIXES


@lru_cache(maxsize=4096)
def make_address(local: str, server: str) -> Address:
    """The canonical address of a channel, nick or (empty `local`) server.

    Remembered (addresses are frozen): every channel line names its channel and its
    sender, and every message the user sends its channel, which cost about 1 µs each
    to build."""
    server = server.lower()
    if not local:
        return Address(AddressKind.SERVICE, server)
    kind = AddressKind.GROUP if local[0] in CHANNEL_PREFIXES else AddressKind.CONTACT
    return Address(kind, f"{local.lower()}%{server}")


@lru_cache(maxsize=4096)
def split_address(address: Address) -> IrcTarget:
    """The channel or nick and the server of an address made by `make_address`;
    remembered like it."""
    if address.kind is AddressKind.SERVICE:
        return IrcTarget("", address.legacy_id)
    local, _, server = address.legacy_id.rpartition("%")
    return IrcTarget(local, server)


def is_valid_host(host: str) -> bool:
    return _HOST_RE.match(host) is not None


def parse_localpart(
    localpart: str, *, fixed_server: str | None, allowed: tuple[str, ...] = ()
) -> Address:
    """Parse a JID localpart; raise AddressError with the stanza error to answer.

    Split on the last `%` because channel names may contain one but host names never
    do. In fixed-server mode there is no `%server`; the server's own host name (which
    cannot be a nick: nicks have no dots) names the server.
    """
    text = unescape_node(localpart)
    if not text:
        raise AddressError("an empty address names nothing", "item-not-found")
    if fixed_server:
        if text.lower() == fixed_server:
            return make_address("", fixed_server)
        local, server = text, fixed_server
    else:
        local, sep, server = text.rpartition("%")
        if not sep:
            local, server = "", text
    server = server.lower()
    if not is_valid_host(server):
        raise AddressError(f"{server!r} is not an IRC server name", "jid-malformed")
    if (allowed and server not in allowed) or (fixed_server and server != fixed_server):
        raise AddressError(f"this gateway does not connect to {server}", "not-allowed")
    if local and local[0] in CHANNEL_PREFIXES:
        if len(local) < 2 or _CHANNEL_FORBIDDEN & set(local) or len(local) > 200:
            raise AddressError(f"{local!r} is not a valid IRC channel name", "jid-malformed")
    elif local and not is_valid_nick(local, max_length=64):
        raise AddressError(f"{local!r} is not a valid IRC nick", "jid-malformed")
    return make_address(local, server)


def format_localpart(address: Address, *, fixed_server: str | None) -> str:
    """The JID localpart of `address` (XEP-0106-escaped)."""
    target = split_address(address)
    if not target.local:
        return escape_node(target.server)
    if fixed_server:
        return escape_node(target.local)
    return escape_node(f"{target.local}%{target.server}")


def can_be_named(local: str) -> bool:
    """Whether a server-supplied channel or nick has a JID: hostile names may not."""
    try:
        JID(f"{escape_node(f'{local}%irc.invalid')}@gateway.invalid")
    except (ValueError, InvalidJID):
        return False
    return True
