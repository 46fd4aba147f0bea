"""Helpers for the mail bridge tests against real Dovecot + an aiosmtpd MTA (no XMPP).

`RecordingSink` and `MemoryStore` stand in for the component: the sink records every
event and the state passed with it, the store is a dict. Tests wait on recorded events
with timeouts, never on sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import email
import email.policy
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import aioimaplib
import aiosmtplib
from aioimaplib.aioimaplib import quoted

from bridges import events
from bridges.base import Account, FileTransfer
from bridges.mail import MailBridge
from bridges.mail.config import MailOptions
from bridges.mail.devstack import MailServer
from bridges.mail.session import MailSession
from bridges.timeouts import within

PUSH_TIMEOUT = 10.0
"""Dovecot delays IDLE pushes by ~0.5 s; generous for a loaded 2-core CI machine."""


@dataclass
class RecordingSink:
    """A `Sink` that records events (and the state delivered with each)."""

    events: list[events.Event] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)
    last_state: dict[str, Any] | None = None
    files: FileTransfer | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def deliver(self, event: events.Event, *, state: Mapping[str, Any] | None = None) -> None:
        async with self._changed:
            self.events.append(event)
            if state is not None:
                self.last_state = copy.deepcopy(dict(state))
                self.states.append(self.last_state)
            self._changed.notify_all()

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_for(
        self, predicate: Callable[[events.Event], bool], timeout: float = PUSH_TIMEOUT
    ) -> Any:
        """The first recorded event matching `predicate`, waiting up to `timeout`."""

        def found() -> events.Event | None:
            return next((e for e in self.events if predicate(e)), None)

        async with self._changed:
            await within(self._changed.wait_for(lambda: found() is not None), timeout)
        return found()

    async def wait_count(self, kind: type, count: int, timeout: float = PUSH_TIMEOUT) -> list[Any]:
        async with self._changed:
            await within(self._changed.wait_for(lambda: len(self.of(kind)) >= count), timeout)
        return self.of(kind)


@dataclass
class MemoryStore:
    """An `AccountStore` in a dict; `state` mirrors what `save_account` persisted."""

    records: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    state: dict[str, Any] | None = None

    async def save_account(
        self,
        *,
        settings: Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        if state is not None:
            self.state = copy.deepcopy(dict(state))

    async def put_record(self, kind: str, key: str, data: Mapping[str, Any]) -> None:
        self.records[(kind, key)] = copy.deepcopy(dict(data))

    async def get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        found = self.records.get((kind, key))
        return copy.deepcopy(found) if found is not None else None

    async def list_records(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        return [(k, copy.deepcopy(v)) for (rk, k), v in self.records.items() if rk == kind]

    async def delete_record(self, kind: str, key: str) -> None:
        self.records.pop((kind, key), None)


def options_for(mail: MailServer, **overrides: Any) -> MailOptions:
    """Options trusting the test CA, with timings short enough for tests."""
    values: dict[str, Any] = {
        "ca_file": str(mail.ca_file),
        "allowed_hosts": [mail.host],
        "timeout": 10.0,
        "reconnect_min": 0.2,
        "reconnect_max": 1.0,
        "retry_min": 0.3,
        "retry_max": 1.0,
        **overrides,
    }
    return MailOptions(**values)


def form(mail: MailServer, user: str, password: str, **overrides: Any) -> dict[str, Any]:
    """A registration form for local `user` (IMAP via STARTTLS, SMTP via STARTTLS)."""
    values: dict[str, Any] = {
        "email": mail.address(user),
        "password": password,
        "name": user.capitalize(),
        "imap_host": mail.host,
        "imap_port": mail.imap_port,
        "imap_security": "starttls",
        "smtp_host": mail.host,
        "smtp_port": mail.submission_port,
        "smtp_security": "starttls",
        "folders": ["INBOX"],
        **overrides,
    }
    return values


async def register(bridge: MailBridge, mail: MailServer, user: str, **overrides: Any) -> Account:
    """Create mailbox `user` and validate a registration for it, as the component would.

    Create every other mailbox a test needs *before* this: Dovecot re-reads its
    passwd-file at most once a second, so a user added right after a login may be
    unknown to LMTP for a moment (mail to it then bounces with 550).
    """
    await mail.add_user(user, f"{user}-secret")
    return await register_existing(bridge, mail, user, **overrides)


async def register_existing(
    bridge: MailBridge, mail: MailServer, user: str, **overrides: Any
) -> Account:
    """Validate a registration for the existing mailbox `user`."""
    password = mail.users[user]
    data = await bridge.validate_registration(
        f"{user}@xmpp.test", form(mail, user, password, **overrides), None
    )
    return Account(
        user=f"{user}@xmpp.test",
        bridge="mail",
        settings=dict(data.settings),
        secrets=dict(data.secrets),
    )


async def inject(mail: MailServer, message: EmailMessage | bytes, to: str, sender: str) -> None:
    """Send mail "from outside" through the MTA, as another domain's server would."""
    raw = message if isinstance(message, bytes) else message.as_bytes()
    await aiosmtplib.send(
        raw,
        sender=sender,
        recipients=[to],
        hostname=mail.host,
        port=mail.smtp_port,
        start_tls=False,
    )


def simple_mail(
    to: str,
    subject: str,
    body: str,
    *,
    files: Sequence[tuple[bytes, str, str]] = (),
    **headers: str,
) -> EmailMessage:
    """A text mail with `headers` (`Message_ID` for Message-ID); each of `files` is
    (data, MIME type, file name) attached.

    It gets a Message-ID unless `Message_ID=""`: the gateway makes the text of a mail
    with one `<markable/>` and uses it as the message id.
    """
    msg = EmailMessage()
    msg["From"] = headers.pop("From", "Bob Builder <bob@elsewhere.test>")
    msg["To"] = to
    msg["Subject"] = subject
    message_id = headers.pop("Message_ID", f"<{abs(hash((subject, body)))}@elsewhere.test>")
    if message_id:
        msg["Message-ID"] = message_id
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    for data, mime_type, name in files:
        maintype, subtype = mime_type.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg


def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def running(
    bridge: MailBridge, account: Account, sink: RecordingSink, store: MemoryStore
) -> AsyncIterator[MailSession]:
    """A started session whose folders have finished their first sync; stopped after."""
    session = bridge.create_session(account, sink, store)
    await session.start()
    try:
        for watcher in session.watchers:
            await within(watcher.synced.wait(), PUSH_TIMEOUT)
        yield session
    finally:
        await session.stop()


def resumed(account: Account, sink: RecordingSink) -> Account:
    """The account as the component would load it after a restart: last stored state."""
    return Account(
        user=account.user,
        bridge=account.bridge,
        settings=dict(account.settings),
        secrets=dict(account.secrets),
        state=copy.deepcopy(sink.last_state or account.state),
    )


async def read_mailbox(mail: MailServer, user: str, folder: str = "INBOX") -> list[EmailMessage]:
    """Every message in `user`'s `folder`, read with plain aioimaplib over implicit TLS."""
    async with imap_client(mail, user) as client:
        assert (await client.select(folder)).result == "OK"
        response = await client.fetch("1:*", "(BODY.PEEK[])")
    return [
        email.message_from_bytes(bytes(line), policy=email.policy.default)
        for line in response.lines
        if isinstance(line, bytearray)
    ]


@contextlib.asynccontextmanager
async def imap_client(mail: MailServer, user: str) -> AsyncIterator[aioimaplib.IMAP4_SSL]:
    """A logged-in plain aioimaplib client for `user`: the test's independent view."""
    client = aioimaplib.IMAP4_SSL(
        host=mail.host,
        port=mail.imaps_port,
        ssl_context=ssl.create_default_context(cafile=str(mail.ca_file)),
    )
    await client.wait_hello_from_server()
    assert (await client.login(quoted(user), mail.users[user])).result == "OK"
    try:
        yield client
    finally:
        await client.logout()
