"""An SMTP server in trouble (silent, or busy), end to end through Prosody.

One that accepts connections and never answers holds each submission for the whole
SMTP timeout. While it does, the user's other requests are answered at once, a stop of
the gateway ends within `shutdown_timeout` (a registration still being checked is
answered with an error), and the mail that was hanging is kept in the outbox and sent
after the restart.

One that is busy (421) makes the mail wait for a retry, across a restart too: the
receipt the client asked for still comes once the mail is sent, from a gateway process
that never saw the message (the sender is stored with the mail), to the resource that
wrote it or to the bare JID once that resource is gone. The user is told once that the
mail waits, and once that it went out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from harness import MAIL_JID, MAIL_SECRET, mail_section, open_store
from mail_helpers import PUSH_TIMEOUT, read_mailbox
from registration_helpers import mailbox_form, register_and_subscribe
from slixmpp import JID, Iq, Message
from slixmpp.exceptions import IqError
from xmpp_client import TestClient, eventually, eventually_async

from bridges.jid_escaping import escape_node
from bridges.mail.devstack import MailServer
from bridges.timeouts import within
from component.devstack.gateway import GatewayProcess
from component.devstack.prosody import Prosody

SMTP_TIMEOUT = 30.0
"""Far longer than anything below may take: a wait for it shows as a failure."""
SHUTDOWN_TIMEOUT = 2.0
QUICK = 3.0


class SilentableSmtp:
    """A TCP relay to the real submission port that can turn silent, or busy.

    Relaying, the registration's test login passes; silent, it accepts connections,
    reads what the client sends and never answers, like a wedged server; busy, it
    greets with 421 (try again later) and hangs up, a temporary failure.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.silent = False
        self.busy = False
        self.held = 0
        """Connections accepted while silent."""
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> SilentableSmtp:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        if self.busy:
            writer.write(b"421 4.3.2 busy, try again later\r\n")
            writer.close()
            return
        if self.silent:
            self.held += 1
            while await reader.read(4096):
                pass
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers.append(up_writer)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


class Stack:
    """Prosody, the mail system behind the silentable relay, and the gateway process."""

    def __init__(
        self, prosody: Prosody, mail: MailServer, smtp: SilentableSmtp, gateway: GatewayProcess
    ) -> None:
        self.prosody, self.mail, self.smtp, self.gateway = prosody, mail, smtp, gateway

    async def stop(self) -> float:
        """Stop the gateway with SIGTERM, which it must exit cleanly on; how long it took."""
        started = time.monotonic()
        assert await self.gateway.stop() == 0
        return time.monotonic() - started

    def form(self, user: str) -> dict[str, Any]:
        return mailbox_form(self.mail, user, smtp_port=str(self.smtp.port))

    async def outbox(self, user: str) -> list[dict[str, Any]]:
        """The mail stored for `user` to send, read from the gateway's database."""
        async with open_store(self.gateway.config) as store:
            records = await store.list_records(user, "mail", "outbox")
        return [data for _key, data in records]

    async def outbox_is_empty(self, user: str) -> bool:
        return not await self.outbox(user)


@pytest.fixture
async def stack(mail: MailServer, gateway_factory: Any) -> AsyncIterator[Stack]:
    await mail.add_user("alice", "alicepw")
    await mail.add_user("bob", "bobpw")
    async with (
        Prosody(components={MAIL_JID: MAIL_SECRET}) as prosody,
        SilentableSmtp(mail.host, mail.submission_port) as smtp,
    ):
        bridge = mail_section(mail, timeout=SMTP_TIMEOUT, retry_min=0.3, retry_max=1.0)
        gateway = await gateway_factory(
            prosody, bridges={"mail": bridge}, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        yield Stack(prosody, mail, smtp, gateway)
        await gateway.stop()  # before Prosody and the relay go


async def login(stack: Stack, name: str) -> TestClient:
    jid = await stack.prosody.register(name, "pw")
    return await TestClient(f"{jid}/phone", "pw").login(stack.prosody.host, stack.prosody.c2s_port)


async def translate(client: TestClient, text: str) -> str:
    """jabber:iq:gateway: a request that waits on the user's lane like a message does."""
    iq = client.make_iq_to(MAIL_JID, "set")
    iq["gateway"]["prompt"] = text
    reply: Iq = await iq.send(timeout=QUICK)
    return str(reply["gateway"]["jid"])


async def test_silent_smtp_holds_neither_the_user_nor_the_shutdown(stack: Stack) -> None:
    client = await login(stack, "alice")
    user = client.boundjid.bare
    mark = stack.gateway.log_mark()
    await register_and_subscribe(client, MAIL_JID, **stack.form("alice"))
    await stack.gateway.wait_for_log(f"{user}: starting mail session", since=mark)
    stack.smtp.silent = True
    bob = stack.mail.address("bob")
    client.send_message(mto=f"{escape_node(bob)}@{MAIL_JID}", mbody="are you there?", mtype="chat")
    await eventually(lambda: stack.smtp.held == 1)  # the submission is hanging now

    await client.plugin["xep_0199"].ping(MAIL_JID, timeout=QUICK)
    assert await translate(client, "Carol <carol@example.org>") == (
        f"carol\\40example.org@{MAIL_JID}"
    )

    assert await stack.stop() < SHUTDOWN_TIMEOUT + QUICK
    [queued] = await stack.outbox(user)
    assert queued["to"] == bob

    stack.smtp.silent = False
    await stack.gateway.start()  # on the same database
    await eventually_async(lambda: stack.outbox_is_empty(user), PUSH_TIMEOUT)
    received = await read_mailbox(stack.mail, "bob")
    assert [m.get_body().get_content().strip() for m in received] == ["are you there?"]


async def test_shutdown_answers_a_registration_still_being_checked(stack: Stack) -> None:
    client = await login(stack, "alice")
    stack.smtp.silent = True
    iq = client.make_iq_to(MAIL_JID, "set")
    form = iq["register"]["form"]
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden", value="jabber:iq:register")
    for var, value in stack.form("alice").items():
        form.add_field(var=var, value=value)
    answer = asyncio.ensure_future(iq.send(timeout=SMTP_TIMEOUT))
    await eventually(lambda: stack.smtp.held == 1, PUSH_TIMEOUT)  # IMAP passed, SMTP hangs

    assert await stack.stop() < SHUTDOWN_TIMEOUT + QUICK
    with pytest.raises(IqError) as refused:
        await within(answer, QUICK)
    error = refused.value.iq["error"]
    assert error["condition"] == "service-unavailable"
    assert "gateway stopped" in error["text"]


RECEIPTS = "urn:xmpp:receipts"
WAITING = "is not sent yet"
SENT = "is sent now"


def notice(text: str):
    def matches(stanza) -> bool:
        return isinstance(stanza, Message) and stanza["from"] == MAIL_JID and text in stanza["body"]

    return matches


def receipt_for(xmpp_id: str):
    def matches(stanza) -> bool:
        received = stanza.xml.find(f"{{{RECEIPTS}}}received")
        return (
            isinstance(stanza, Message) and received is not None and received.get("id") == xmpp_id
        )

    return matches


async def queue_a_mail(stack: Stack, client: TestClient) -> None:
    """Register, then write to bob while his server is busy: the mail waits for a retry."""
    user = client.boundjid.bare
    mark = stack.gateway.log_mark()
    await register_and_subscribe(client, MAIL_JID, **stack.form("alice"))
    await stack.gateway.wait_for_log(f"{user}: starting mail session", since=mark)
    stack.smtp.busy = True
    message = client.make_message(
        mto=f"{escape_node(stack.mail.address('bob'))}@{MAIL_JID}",
        mbody="lunch at noon?",
        msubject="Lunch",
        mtype="chat",
    )
    message["id"] = "m1"
    message.xml.append(message.xml.makeelement(f"{{{RECEIPTS}}}request", {}))
    message.send()
    waiting = await client.wait_for(notice(WAITING), PUSH_TIMEOUT)
    assert "bob@" in waiting["body"] and "“Lunch”" in waiting["body"]
    assert "421" in waiting["body"]  # what the server said


async def restart_with_smtp_back(stack: Stack) -> None:
    assert await stack.gateway.stop() == 0
    stack.smtp.busy = False
    await stack.gateway.start()  # same database; its memory of the message is gone


async def test_a_receipt_asked_before_a_restart_comes_after_it(stack: Stack) -> None:
    client = await login(stack, "alice")
    await queue_a_mail(stack, client)

    await restart_with_smtp_back(stack)
    receipt = await client.wait_for(receipt_for("m1"), PUSH_TIMEOUT)
    assert receipt["from"].bare == f"{escape_node(stack.mail.address('bob'))}@{MAIL_JID}"
    sent = await client.wait_for(notice(SENT), PUSH_TIMEOUT)
    assert "“Lunch”" in sent["body"]
    assert not [s for s in client.stanzas if notice(WAITING)(s)]  # told once, not per retry
    [mail] = await read_mailbox(stack.mail, "bob")
    assert mail.get_body().get_content().strip() == "lunch at noon?"


async def test_the_receipt_goes_to_the_bare_jid_once_the_writer_is_gone(stack: Stack) -> None:
    phone = await login(stack, "alice")  # resource "phone"
    await queue_a_mail(stack, phone)
    laptop = await TestClient(f"{phone.boundjid.bare}/laptop", "pw").login(
        stack.prosody.host, stack.prosody.c2s_port
    )
    await phone.close()

    await restart_with_smtp_back(stack)
    receipt = await laptop.wait_for(receipt_for("m1"), PUSH_TIMEOUT)
    assert receipt["to"] == JID(phone.boundjid.bare)  # not the phone's gone resource
    await laptop.wait_for(notice(SENT), PUSH_TIMEOUT)
    await laptop.close()
