"""The mail bridge's two kinds of settings: the operator's (`MailOptions`, one config
section) and a user's (`MailAccount`, what registration stored).

Kept apart from the bridge and the session so both, and the IMAP/SMTP helpers, share one
typed view instead of reading loose dictionaries.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bridges.base import Account, BridgeOptions


class Security(StrEnum):
    """How a connection is protected; `plain` only where the operator allows it."""

    TLS = "tls"
    """Implicit TLS from the first byte (IMAPS 993, submissions 465)."""
    STARTTLS = "starttls"
    """Plain connection upgraded with STARTTLS before logging in (143, 587)."""
    PLAIN = "plain"
    """No encryption: passwords cross the network in clear."""


DEFAULT_PORTS: Mapping[tuple[str, Security], int] = {
    ("imap", Security.TLS): 993,
    ("imap", Security.STARTTLS): 143,
    ("imap", Security.PLAIN): 143,
    ("smtp", Security.TLS): 465,
    ("smtp", Security.STARTTLS): 587,
    ("smtp", Security.PLAIN): 587,
}


class DomainDefaults(BaseModel):
    """Servers the operator knows for one mail domain, offered instead of asking the user."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    imap_host: str
    imap_port: int | None = None
    imap_security: Security = Security.TLS
    smtp_host: str
    smtp_port: int | None = None
    smtp_security: Security = Security.STARTTLS


class MailOptions(BridgeOptions):
    """The operator's `bridges.mail` section; every key has a safe default."""

    allow_plaintext: bool = False
    """Accept `plain` (unencrypted) IMAP/SMTP at registration."""
    allow_private_networks: bool = False
    """Let users name IMAP/SMTP servers on loopback, private or link-local addresses.
    Off, such hosts are refused unless listed in `allowed_hosts` or `domains`: anyone
    could otherwise probe the operator's internal network through registration."""
    allowed_hosts: tuple[str, ...] = ()
    """Mail servers users may name even on a private network (the operator's own)."""
    domains: dict[str, DomainDefaults] = Field(default_factory=dict)
    """Per mail domain (`example.org`) default servers, used when the form leaves them empty."""
    ca_file: str | None = None
    """Extra CA bundle to trust (self-hosted servers, tests); system CAs otherwise."""
    default_subject: str = "(no subject)"
    """Subject of a new mail when the chat message has none and answers no thread."""
    max_body_chars: int = Field(default=20_000, ge=100)
    """Longer bodies are cut with a visible marker."""
    max_fetch_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)
    """Bytes of a mail fetched at most; enough for the text of any sane mail."""
    resync_limit: int = Field(default=10, ge=0)
    """After a UIDVALIDITY change, the most recent mails newer than the last sync that are
    delivered again at most (the rest is skipped rather than flooding the user)."""
    idle_timeout: float = Field(default=25 * 60, gt=0)
    """IMAP IDLE is re-issued after this many seconds (servers drop it after 30 min)."""
    idle: bool = True
    """Use IMAP IDLE where offered; false polls instead (for servers with a broken IDLE)."""
    poll_interval: float = Field(default=60.0, gt=0)
    """Seconds between checks when not using IDLE."""
    reconnect_min: float = Field(default=1.0, gt=0)
    reconnect_max: float = Field(default=300.0, gt=0)
    """Backoff bounds (seconds) for reconnecting a dropped IMAP connection."""
    retry_min: float = Field(default=30.0, gt=0)
    retry_max: float = Field(default=1800.0, gt=0)
    """Backoff bounds (seconds) for re-sending mail after a temporary SMTP failure."""
    retry_give_up: float = Field(default=4 * 24 * 3600.0, gt=0)
    """Seconds after which a mail that keeps failing temporarily is reported as failed."""
    timeout: float = Field(default=30.0, gt=0)
    """Seconds allowed for a connect, login or single command."""
    thread_memory_days: float = Field(default=180.0, gt=0)
    """Threads unused this long are forgotten: a late reply then starts a new mail thread."""
    subscribe_correspondents: bool = False
    """Ask users to add each new correspondent to their roster, on the first mail."""
    upload_retry_delay: float = Field(default=5.0, gt=0)
    """Seconds before retrying an attachment the upload service failed to take (twice,
    the second wait doubled); then the user gets a line saying it could not be stored."""
    max_attachment_bytes: int = Field(default=10 * 1024 * 1024, ge=0)
    """Largest file a user sends (an XEP-0066 URL) that is attached to the mail; larger
    ones, and URLs to hosts not in `files.download_hosts`, stay links in the text."""
    spool_dir: str | None = None
    """Where attachments are decoded on their way to the upload service, and files users
    send and the mail attaching them are written on their way to SMTP (the system's
    temporary directory by default): on disk, never whole in memory."""
    save_sent: bool = False
    """Append a copy of every sent mail to the user's Sent folder over IMAP."""
    sent_folder: str = "Sent"

    def tls_context(self) -> ssl.SSLContext:
        """A verifying client context, trusting `ca_file` in addition when set."""
        context = ssl.create_default_context()
        if self.ca_file:
            context.load_verify_locations(cafile=self.ca_file)
        return context


@dataclass(frozen=True)
class Server:
    """Where and how to reach one IMAP or SMTP server."""

    host: str
    port: int
    security: Security


@dataclass(frozen=True)
class MailAccount:
    """A registered user's mailbox, read from `Account.settings` and `secrets`."""

    email: str
    display_name: str | None
    username: str
    password: str
    imap: Server
    smtp: Server
    folders: tuple[str, ...]
    seen_on_delivery: bool = False
    """Mark mail read on the server as soon as it is delivered to XMPP."""
    quiet_when_read: bool = True
    """Mail already read in another mail client comes as a `normal` message, not `chat`."""

    @classmethod
    def from_account(cls, account: Account) -> MailAccount:
        return cls.from_settings(account.settings, account.secrets.get("password", ""))

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], password: str) -> MailAccount:
        return cls(
            email=settings["email"],
            display_name=settings.get("name") or None,
            username=settings.get("username") or settings["email"],
            password=password,
            imap=Server(
                settings["imap_host"],
                int(settings["imap_port"]),
                Security(settings["imap_security"]),
            ),
            smtp=Server(
                settings["smtp_host"],
                int(settings["smtp_port"]),
                Security(settings["smtp_security"]),
            ),
            folders=tuple(settings.get("folders") or ("INBOX",)),
            seen_on_delivery=bool(settings.get("seen_on_delivery", False)),
            quiet_when_read=bool(settings.get("quiet_when_read", True)),
        )

    def settings(self) -> dict[str, Any]:
        """The non-secret part, as stored in `Account.settings`."""
        return {
            "email": self.email,
            "name": self.display_name or "",
            "username": self.username,
            "imap_host": self.imap.host,
            "imap_port": self.imap.port,
            "imap_security": self.imap.security.value,
            "smtp_host": self.smtp.host,
            "smtp_port": self.smtp.port,
            "smtp_security": self.smtp.security.value,
            "folders": list(self.folders),
            "seen_on_delivery": self.seen_on_delivery,
            "quiet_when_read": self.quiet_when_read,
        }
