"""The operator's `bridges.irc` config section: which networks, and the defaults."""

from __future__ import annotations

import hashlib
from ipaddress import IPv4Network, IPv6Network

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from bridges.base import BridgeOptions


class WebIrcOptions(BaseModel):
    """WEBIRC for one network that trusts this gateway (its operators gave the password).

    Each user then connects from an address of their own, taken from `network` by a
    hash of their JID, so the server shows (and can ban) one user, not the gateway.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    password: SecretStr
    network: IPv4Network | IPv6Network
    """Where the per-user addresses come from, e.g. a /64 of the gateway's own."""
    gateway: str = Field("xmpp-gateway", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    """The gateway name the server shows (in WHOIS)."""

    def address_for(self, user: str) -> str:
        """The user's own address in `network`: the same every time, never the
        network's first or last address."""
        size = self.network.num_addresses
        digest = int.from_bytes(hashlib.sha256(user.encode()).digest(), "big")
        offset = 1 + digest % (size - 2) if size > 2 else 0
        return str(self.network.network_address + offset)


class IdentdOptions(BaseModel):
    """An RFC 1413 ident server answering for the gateway's IRC connections."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    bind: str = "0.0.0.0"
    port: int = Field(113, ge=0, le=65535)
    """113 is where servers ask; 0 picks a free port (tests)."""


class IrcOptions(BridgeOptions):
    """Every option has a default that is safe on a public network.

    Leave `allowed_servers` empty to allow any server (an open gateway); set
    `fixed_server` to serve exactly one network, which also drops the `%server` part
    from room and contact JIDs.
    """

    allowed_servers: tuple[str, ...] = ()
    """Host names users may connect to; empty means any (unless `fixed_server` is set)."""
    fixed_server: str | None = None
    require_registration: bool = False
    """Refuse users who did not register (XEP-0077), instead of making them an account
    from the defaults on their first join or message."""
    port: int = Field(6697, ge=1, le=65535)
    """Default port; 6697 is the usual TLS port, use 6667 with `tls: false`."""
    tls: bool = True
    tls_verify: bool = True
    """Check the server's certificate; users may relax it per network only if allowed."""
    allow_insecure: bool = False
    """Let users turn off TLS or certificate checks in their per-network settings."""
    allow_private_networks: bool = False
    """Let users reach loopback, private and link-local addresses. Only matters for an
    open gateway (no `allowed_servers`, no `fixed_server`): there, anyone could
    otherwise make the gateway connect to services on its own network."""
    ca_file: str | None = None
    """Extra CA bundle to trust (a private network's own CA)."""
    realname: str = "xmpp-gateway user"
    nick_max_length: int = Field(30, ge=1, le=100)
    encoding_fallback: str = "latin-1"
    """How to decode lines that are not valid UTF-8."""
    flood_rate: float = Field(2.0, gt=0)
    """Sustained outgoing lines per second (token bucket refill)."""
    flood_burst: int = Field(5, ge=1)
    """Lines that may go out at once after a quiet period."""
    max_lines_per_message: int = Field(400, ge=0)
    """A message that would become more IRC lines than this is refused whole
    (policy-violation) rather than holding the user's line for minutes; 0: no limit."""
    ping_interval: float = Field(60.0, gt=0)
    """Seconds of silence from the server before we PING it."""
    ping_timeout: float = Field(60.0, gt=0)
    """Seconds to wait for any answer to that PING before reconnecting."""
    connect_timeout: float = Field(20.0, gt=0)
    join_timeout: float = Field(30.0, gt=0)
    """Seconds to wait for a JOIN to be answered before telling the user it failed."""
    connect_rate: float = Field(10.0, gt=0)
    """New connections per second to one IRC server when nobody waits for them: at
    gateway start (persistent channels) and on reconnects. A user's own join is not
    held back."""
    connect_burst: int = Field(10, ge=1)
    """Connections to one server that may open at once before `connect_rate` applies."""
    reconnect_initial_delay: float = Field(2.0, gt=0)
    reconnect_max_delay: float = Field(300.0, gt=0)
    reconnect_max_attempts: int = Field(0, ge=0)
    """Give up (and tell the rooms) after this many failed attempts; 0 retries forever."""
    version_reply: str = "xmpp-gateway (XMPP to IRC gateway)"
    webirc: dict[str, WebIrcOptions] = Field(default_factory=dict)
    """Server host name → its WEBIRC settings (see WebIrcOptions)."""
    identd: IdentdOptions | None = None
    """Run an ident server (off unless set)."""
    last_seen_interval: float = Field(60.0, gt=0)
    """Seconds between notes that the gateway is still in a persistent channel: after a
    crash, the notice of what may be missing is this exact."""

    @field_validator("allowed_servers")
    @classmethod
    def _lower_servers(cls, servers: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(server.lower() for server in servers)

    @field_validator("webirc")
    @classmethod
    def _lower_webirc(cls, webirc: dict[str, WebIrcOptions]) -> dict[str, WebIrcOptions]:
        return {server.lower(): value for server, value in webirc.items()}

    @field_validator("fixed_server")
    @classmethod
    def _lower_fixed(cls, server: str | None) -> str | None:
        return server.lower() if server else None

    @field_validator("encoding_fallback")
    @classmethod
    def _known_codec(cls, name: str) -> str:
        import codecs

        codecs.lookup(name)  # LookupError names the bad codec
        return name

    @model_validator(mode="after")
    def _fixed_is_allowed(self) -> IrcOptions:
        if (
            self.fixed_server
            and self.allowed_servers
            and (self.fixed_server not in self.allowed_servers)
        ):
            raise ValueError("fixed_server must be one of allowed_servers (or leave those empty)")
        return self

    @property
    def checks_addresses(self) -> bool:
        """Whether resolved server addresses must be public (see allow_private_networks)."""
        return not (self.allow_private_networks or self.fixed_server or self.allowed_servers)

    def server_allowed(self, server: str) -> bool:
        if self.fixed_server:
            return server == self.fixed_server
        return not self.allowed_servers or server in self.allowed_servers
