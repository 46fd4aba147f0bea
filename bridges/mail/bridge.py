"""`MailBridge`: registration form, its validation by real logins, and email addresses.

Addresses: a contact's JID localpart is the XEP-0106 escaped canonical address
(`bob@example.org` ↔ `bob\\40example.org@mail.gateway`, `"odd one"@remote.test` ↔
`\\22odd\\20one\\22\\40remote.test`; `bridges.mail.addresses` says what is canonical).
The older transport style `bob%example.org` cannot round-trip local parts that contain `%`
(legal in email), while XEP-0106 round-trips every address and is what its §1 names for
exactly this case; so XEP-0106 is canonical, and `%` is accepted on input only (when the
localpart holds no `@`) so addresses typed the classic way still reach the right person.

The IMAP, SMTP and session modules (aioimaplib, aiosmtplib, lxml for HTML mail: ~10 MiB
resident) are imported by the first registration check or session, not with the bridge:
a gateway that has the mail bridge configured but no mail user online does not load them.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from slixmpp import JID

from bridges.address import Address, AddressError, AddressKind
from bridges.base import (
    Account,
    AccountData,
    AccountStore,
    Bridge,
    BridgeOptions,
    FormField,
    RegistrationError,
    Sink,
)
from bridges.mail import addresses
from bridges.mail.config import (
    DEFAULT_PORTS,
    DomainDefaults,
    MailAccount,
    MailOptions,
    Security,
    Server,
)
from bridges.reachability import is_public, resolved_addresses

if TYPE_CHECKING:
    from bridges.mail.session import MailSession

log = logging.getLogger(__name__)

_SECURITY = tuple(s.value for s in Security)


def normalize_address(text: str) -> str:
    """A typed address (`bob@Example.ORG`, `Bob <bob@example.org>`) in canonical form.

    Raises AddressError. Only the domain is lower-cased: local parts are case-sensitive
    (RFC 5321 §2.4).
    """
    text = text.strip()
    if text.endswith(">"):  # a display name first: parseaddr knows its quoting rules
        text = email.utils.parseaddr(text)[1]
    return addresses.parse(text)


class MailBridge(Bridge):
    """Email over IMAP (in) and SMTP submission (out), one mailbox per registration."""

    name: ClassVar[str] = "mail"
    disco_type: ClassVar[str] = "smtp"
    display_name: ClassVar[str] = "Email"
    instructions: ClassVar[str] = (
        "Enter your email address and password. Server fields may stay empty when your "
        "provider is known to this gateway. Mail from bob@example.org then comes from "
        "bob\\40example.org at this service, and messages to that contact go out as mail."
    )
    persistent_sessions: ClassVar[bool] = True
    gateway_prompt: ClassVar[str] = "Email address"
    gateway_desc: ClassVar[str] = "Enter the email address of the person to write to."
    Options: ClassVar[type[BridgeOptions]] = MailOptions
    uses_files: ClassVar[bool] = True
    refuse_corrections: ClassVar[str | None] = (
        "A mail cannot be changed once it is sent: write a new message with the correction."
    )
    registration_fields: ClassVar[tuple[FormField, ...]] = (
        FormField("email", "Email address", required=True, legacy_name="email"),
        FormField(
            "password", "Password", type="text-private", required=True, legacy_name="password"
        ),
        FormField("name", "Your name (shown in From)", legacy_name="name"),
        FormField("username", "Login name, if not the email address", legacy_name="username"),
        FormField("imap_host", "IMAP server"),
        FormField("imap_port", "IMAP port", datatype="xs:integer"),
        FormField(
            "imap_security",
            "IMAP security",
            type="list-single",
            default="tls",
            options=_SECURITY,
            desc="tls: implicit TLS (993); starttls (143)",
        ),
        FormField("smtp_host", "SMTP submission server"),
        FormField("smtp_port", "SMTP port", datatype="xs:integer"),
        FormField(
            "smtp_security",
            "SMTP security",
            type="list-single",
            default="starttls",
            options=_SECURITY,
            desc="tls: implicit TLS (465); starttls (587)",
        ),
        FormField("folders", "Folders to watch", type="text-multi", default=["INBOX"]),
        FormField(
            "seen_on_delivery",
            "Mark mail as read when it arrives here",
            type="boolean",
            datatype="xs:boolean",
            default=False,
            desc="Otherwise mail is marked read when your client shows it (XEP-0333)",
        ),
        FormField(
            "quiet_when_read",
            "Deliver mail already read elsewhere quietly",
            type="boolean",
            datatype="xs:boolean",
            default=True,
            desc="As a normal message instead of a chat message",
        ),
    )

    @classmethod
    def demo_server(cls, run_dir: Path) -> AbstractAsyncContextManager[dict[str, Any]]:
        return _demo_mail_server(run_dir)

    def __init__(self, options: BridgeOptions) -> None:
        if not isinstance(options, MailOptions):
            options = MailOptions.model_validate(options.model_dump())
        super().__init__(options)
        self.mail_options: MailOptions = options
        self.tls = options.tls_context()
        """One context for every connection: loading the CA store costs ~1 MB each time."""

    # -- addresses -----------------------------------------------------------------------

    def parse_address(self, localpart: str) -> Address:
        legacy = super().parse_address(localpart).legacy_id
        if "@" not in legacy and "%" in legacy:
            local, _, domain = legacy.rpartition("%")
            legacy = f"{local}@{domain}"
        return Address(AddressKind.CONTACT, addresses.parse(legacy))

    def format_address(self, address: Address) -> str:
        """The localpart of `address`; AddressError when no JID can hold it.

        Checked with slixmpp's own JID preparation, so a sender whose address cannot be
        a JID (a character nodeprep forbids, or too long) is known before any stanza is
        built from it, instead of failing inside the delivery.
        """
        try:
            localpart = super().format_address(address)
            JID(f"{localpart}@mail.invalid")
        except ValueError as exc:  # escape_node's refusal, or slixmpp's InvalidJID
            raise AddressError(f"{address.legacy_id!r} cannot be written as a JID") from exc
        return localpart

    def translate_legacy_id(self, text: str) -> Address:
        return Address(AddressKind.CONTACT, normalize_address(text))

    # -- registration --------------------------------------------------------------------

    async def validate_registration(
        self, user: str, values: Mapping[str, Any], previous: Account | None
    ) -> AccountData:
        """Build the account from the form, then prove it by logging in to both servers."""
        password = values.get("password") or (previous.secrets.get("password") if previous else "")
        if not password:
            raise RegistrationError("a password is required", field="password")
        account = self._account_from_form(values, password)
        for kind, server in (("imap", account.imap), ("smtp", account.smtp)):
            await self._check_reachable(kind, server)
        await self._check_imap(account, self.tls)
        await self._check_smtp(account, self.tls)
        return AccountData(settings=account.settings(), secrets={"password": password})

    def _account_from_form(self, values: Mapping[str, Any], password: str) -> MailAccount:
        try:
            address = normalize_address(str(values.get("email") or ""))
        except AddressError as exc:
            raise RegistrationError(exc.text, field="email") from exc
        known = self.mail_options.domains.get(address.rpartition("@")[2])
        folders = values.get("folders") or ["INBOX"]
        if isinstance(folders, str):
            folders = folders.replace(",", "\n").splitlines()
        folders = [f.strip() for f in folders if f.strip()] or ["INBOX"]
        return MailAccount(
            email=address,
            display_name=(str(values.get("name") or "").strip() or None),
            username=str(values.get("username") or "").strip() or address,
            password=password,
            imap=self._server("imap", values, known),
            smtp=self._server("smtp", values, known),
            folders=tuple(dict.fromkeys(folders)),
            seen_on_delivery=_flag(values.get("seen_on_delivery"), default=False),
            quiet_when_read=_flag(values.get("quiet_when_read"), default=True),
        )

    def _server(self, kind: str, values: Mapping[str, Any], known: DomainDefaults | None) -> Server:
        """The form's server, else the operator's default for the domain."""
        host = str(values.get(f"{kind}_host") or "").strip()
        port = values.get(f"{kind}_port")
        security_value = values.get(f"{kind}_security")
        if not host and known is not None:
            host = getattr(known, f"{kind}_host")
            port = port or getattr(known, f"{kind}_port")
            security_value = getattr(known, f"{kind}_security")
        if not host:
            raise RegistrationError(
                f"no {kind.upper()} server is known for this address: please enter one",
                field=f"{kind}_host",
            )
        try:
            security = Security(security_value or ("tls" if kind == "imap" else "starttls"))
        except ValueError as exc:
            raise RegistrationError(
                f"unknown security {security_value!r}", field=f"{kind}_security"
            ) from exc
        if security is Security.PLAIN and not self.mail_options.allow_plaintext:
            raise RegistrationError(
                "unencrypted connections are not allowed here: choose tls or starttls",
                field=f"{kind}_security",
                condition="not-allowed",
            )
        try:
            port_number = int(port) if port else DEFAULT_PORTS[(kind, security)]
        except (TypeError, ValueError) as exc:
            raise RegistrationError(f"{port!r} is not a port", field=f"{kind}_port") from exc
        if not 0 < port_number < 65536:
            raise RegistrationError(f"{port_number} is not a port", field=f"{kind}_port")
        return Server(host, port_number, security)

    def _trusted_hosts(self) -> set[str]:
        """Hosts the operator named: the allow list and the per-domain defaults."""
        trusted = {host.lower() for host in self.mail_options.allowed_hosts}
        for known in self.mail_options.domains.values():
            trusted |= {known.imap_host.lower(), known.smtp_host.lower()}
        return trusted

    async def _check_reachable(self, kind: str, server: Server) -> None:
        """Refuse a user-named host on a private network (see `allow_private_networks`)."""
        if self.mail_options.allow_private_networks or server.host.lower() in self._trusted_hosts():
            return
        try:
            found = await resolved_addresses(server.host, server.port)
        except OSError as exc:
            log.info("registration: %s host %s does not resolve: %s", kind, server.host, exc)
            raise _unreachable(kind, server) from exc
        if not all(is_public(address) for address in found):
            raise RegistrationError(
                f"{server.host} is on a private network, which this gateway does not reach",
                field=f"{kind}_host",
                condition="not-allowed",
            )

    async def _check_imap(self, account: MailAccount, tls: ssl.SSLContext) -> None:
        from bridges.mail.imap import ImapConnection, ImapError

        where = f"IMAP server {account.imap.host}:{account.imap.port}"
        try:
            connection = await ImapConnection.open(account, tls, self.mail_options.timeout)
        except ImapError as exc:
            if exc.auth:  # the server's own words, after it really answered
                raise RegistrationError(f"{where}: {exc.text}", field="password") from exc
            log.info("registration: %s: %s", where, exc.text)
            raise _unreachable("imap", account.imap) from exc
        except (OSError, TimeoutError) as exc:
            log.info("registration: %s: %s", where, _network_reason(exc))
            raise _unreachable("imap", account.imap) from exc
        try:
            for folder in account.folders:
                try:
                    await connection.select(folder)
                except ImapError as exc:
                    raise RegistrationError(f"{where}: {exc.text}", field="folders") from exc
        finally:
            await connection.logout()

    async def _check_smtp(self, account: MailAccount, tls: ssl.SSLContext) -> None:
        from bridges.mail import smtp

        where = f"SMTP server {account.smtp.host}:{account.smtp.port}"
        try:
            await smtp.check_login(account, self.mail_options, tls)
        except smtp.SmtpFailure as exc:
            if exc.condition == "not-authorized" or exc.code is not None:
                field = "password" if exc.condition == "not-authorized" else "smtp_host"
                raise RegistrationError(f"{where}: {exc.text}", field=field) from exc
            log.info("registration: %s: %s", where, exc.text)  # never got an SMTP reply
            raise _unreachable("smtp", account.smtp) from exc

    def create_session(self, account: Account, sink: Sink, store: AccountStore) -> MailSession:
        from bridges.mail.session import MailSession

        return MailSession(self, account, sink, store)


def _flag(value: Any, *, default: bool) -> bool:
    """A boolean form value (the component converted it); absent means `default`."""
    return value if isinstance(value, bool) else default


def _unreachable(kind: str, server: Server) -> RegistrationError:
    """One text for every failure to reach a server: refused, silent, not found or not
    TLS all read alike, so registration cannot tell open, closed and filtered ports
    apart (the details go to the log)."""
    return RegistrationError(
        f"could not reach the {kind.upper()} server {server.host}:{server.port} with"
        f" {server.security.value}: check the host, port and security settings",
        field=f"{kind}_host",
    )


def _network_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failure ({exc.reason or exc})"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "no answer (timed out)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"host not found ({exc.strerror})"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


DEMO_MAILBOXES = {"demo": "demo", "friend": "friend"}


@asynccontextmanager
async def _demo_mail_server(run_dir: Path) -> AsyncIterator[dict[str, Any]]:
    """Dovecot and an MTA on loopback for `xmpp-gateway demo`, with two mailboxes.

    Register demo@example.test (password demo) and write to friend@example.test; the
    servers' addresses are filled in from the e-mail domain.
    """
    from bridges.mail.devstack import MailServer

    async with MailServer(run_dir, users=DEMO_MAILBOXES) as server:
        print(
            f"  mail: register {server.address('demo')} (password demo), "
            f"write to {server.address('friend')}",
            flush=True,
        )
        domain = {
            "imap_host": server.host, "imap_port": server.imaps_port, "imap_security": "tls",
            "smtp_host": server.host, "smtp_port": server.submission_port,
            "smtp_security": "starttls",
        }  # fmt: skip
        yield {"ca_file": str(server.ca_file), "domains": {server.domain: domain}}
