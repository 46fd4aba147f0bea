"""End to end: a real slixmpp client ⇄ Prosody ⇄ the gateway process ⇄ Dovecot + MTA.

The user registers their mailbox with XEP-0077, receives a mail as a chat message,
answers it (the answer lands, threaded, in the sender's mailbox, with an XEP-0184
receipt), and writing to an unknown address comes back as a message error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from harness import MAIL_JID, MAIL_SECRET, mail_section, stored_account
from mail_helpers import PUSH_TIMEOUT, inject, read_mailbox, simple_mail
from registration_helpers import mailbox_form, register_and_subscribe, remove
from slixmpp import Message, Presence
from slixmpp.exceptions import IqError
from xmpp_client import TestClient, eventually_async

from bridges.jid_escaping import escape_node
from bridges.mail.devstack import MailServer
from component.devstack.gateway import GatewayProcess
from component.devstack.process import file_size, wait_for_log_line
from component.devstack.prosody import Prosody

RECEIPTS = "urn:xmpp:receipts"
RETRACT = "urn:xmpp:message-retract:1"
NICK = "http://jabber.org/protocol/nick"
IMAP_LOGOUT = r"imap\(alice@.*Logged out"


@dataclass
class Stack:
    prosody: Prosody
    mail: MailServer
    gateway: GatewayProcess

    def jid(self, address: str) -> str:
        return f"{escape_node(address)}@{MAIL_JID}"

    async def folders(self, user: str) -> dict[str, Any]:
        """The IMAP watermarks the gateway stored for `user`."""
        account = await stored_account(self.gateway.config, user, "mail")
        assert account is not None
        folders: dict[str, Any] = account.state.get("folders", {})
        return folders

    async def restart_with(self, **mail_options: Any) -> None:
        """Restart the gateway on its database with `mail_options` in its mail section."""
        self.gateway.config["bridges"]["mail"].update(mail_options)
        await self.gateway.restart()


@pytest.fixture
async def stack(mail: MailServer, gateway_factory: Any) -> AsyncIterator[Stack]:
    async with Prosody(components={MAIL_JID: MAIL_SECRET}) as prosody:
        gateway = await gateway_factory(prosody, bridges={"mail": mail_section(mail)})
        yield Stack(prosody, mail, gateway)
        await gateway.stop()  # before Prosody goes, or it would log reconnection attempts


async def login(stack: Stack, name: str) -> TestClient:
    jid = await stack.prosody.register(name, "pw")
    client = TestClient(f"{jid}/phone", "pw")
    return await client.login(stack.prosody.host, stack.prosody.c2s_port)


async def registered(stack: Stack, client: TestClient) -> None:
    """Register `alice`'s mailbox and wait until its session watches the inbox (mail
    that arrives from then on is new to it)."""
    mark = stack.gateway.log_mark()
    await register_and_subscribe(
        client, MAIL_JID, **mailbox_form(stack.mail, "alice", name="Alice Liddell")
    )
    await stack.gateway.wait_for_log(
        rf"{client.boundjid.bare}\.INBOX: first sync of INBOX", since=mark, timeout=PUSH_TIMEOUT
    )


async def test_bad_password_is_refused_with_dovecots_reason(stack: Stack, mail: MailServer) -> None:
    await mail.add_user("alice", "alicepw")
    client = await login(stack, "wrongpw")
    form = {**mailbox_form(mail, "alice", name="Alice Liddell"), "password": "nope"}
    iq = client.make_iq_to(MAIL_JID, "set")
    fields = iq["register"]["form"]
    fields["type"] = "submit"
    fields.add_field(var="FORM_TYPE", ftype="hidden", value="jabber:iq:register")
    for var, value in form.items():
        fields.add_field(var=var, value=value)
    with pytest.raises(IqError) as refused:
        await iq.send(timeout=15)
    error = refused.value.iq["error"]
    assert error["condition"] == "not-acceptable"
    assert "Authentication failed" in error["text"]


async def test_mail_in_reply_out_and_error(stack: Stack, mail: MailServer) -> None:
    await mail.add_user("alice", "alicepw")
    await mail.add_user("carol", "carolpw")
    carol = mail.address("carol")
    client = await login(stack, "alice")
    await registered(stack, client)

    original = simple_mail(
        mail.address("alice"),
        "Tea at four?",
        "Shall we?",
        From=f"Carol Cook <{carol}>",
        Message_ID="<tea-1@example.test>",
    )
    await inject(mail, original, mail.address("alice"), carol)
    incoming = await client.wait_for(
        lambda s: isinstance(s, Message) and s["from"].bare == stack.jid(carol) and s["body"],
        PUSH_TIMEOUT,
    )
    assert incoming["type"] == "chat"
    assert incoming["body"] == "Shall we?"
    assert incoming["subject"] == "Tea at four?"
    assert incoming["thread"]
    assert incoming.xml.findtext(f"{{{NICK}}}nick") == "Carol Cook"

    reply = client.make_message(mto=stack.jid(carol), mbody="Yes, with scones.", mtype="chat")
    reply["id"] = "reply-1"
    reply["thread"] = incoming["thread"]
    reply.xml.append(reply.xml.makeelement(f"{{{RECEIPTS}}}request", {}))
    reply.send()
    receipt = await client.wait_for(
        lambda s: isinstance(s, Message) and s.xml.find(f"{{{RECEIPTS}}}received") is not None,
        PUSH_TIMEOUT,
    )
    assert receipt.xml.find(f"{{{RECEIPTS}}}received").get("id") == "reply-1"
    [answer] = await read_mailbox(mail, "carol")
    assert answer["In-Reply-To"] == "<tea-1@example.test>"
    assert str(answer["Subject"]) == "Re: Tea at four?"
    assert answer["From"].addresses[0].display_name == "Alice Liddell"
    assert answer.get_body().get_content().strip() == "Yes, with scones."

    nobody = mail.address("nobody")
    client.send_message(mto=stack.jid(nobody), mbody="anyone?", mtype="chat")
    error = await client.wait_for(
        lambda s: isinstance(s, Message) and s["type"] == "error", PUSH_TIMEOUT
    )
    assert error["from"].bare == stack.jid(nobody)
    assert error["error"]["condition"] == "item-not-found"
    assert "550" in error["error"]["text"]


async def test_a_retraction_is_refused_and_its_fallback_never_mailed(
    stack: Stack, mail: MailServer
) -> None:
    """Mail cannot take a message back: an XEP-0424 retraction gets
    feature-not-implemented with a text, and its XEP-0428 fallback body is not sent
    as a mail (the next message is the only one carol gets)."""
    await mail.add_user("alice", "alicepw")
    await mail.add_user("carol", "carolpw")
    carol = stack.jid(mail.address("carol"))
    client = await login(stack, "alice")
    await registered(stack, client)
    retraction = client.make_message(mto=carol, mtype="chat")
    retraction["id"] = "retract-1"
    retraction["body"] = "This person attempted to retract a previous message."
    retraction.xml.append(retraction.xml.makeelement(f"{{{RETRACT}}}retract", {"id": "m-1"}))
    retraction.send()
    error = await client.wait_for(
        lambda s: isinstance(s, Message) and s["type"] == "error" and s["id"] == "retract-1"
    )
    assert error["error"]["condition"] == "feature-not-implemented"
    assert "cannot remove a message" in error["error"]["text"]

    after = client.make_message(mto=carol, mbody="the only mail", mtype="chat")
    after["id"] = "after-1"
    after.xml.append(after.xml.makeelement(f"{{{RECEIPTS}}}request", {}))
    after.send()
    await client.wait_for(
        lambda s: isinstance(s, Message) and s.xml.find(f"{{{RECEIPTS}}}received") is not None,
        PUSH_TIMEOUT,
    )
    [only] = await read_mailbox(mail, "carol")
    assert only.get_body().get_content().strip() == "the only mail"


def mail_from(stack: Stack, address: str, subject: str | None = None) -> Any:
    def matches(stanza: Any) -> bool:
        return (
            isinstance(stanza, Message)
            and stanza["from"].bare == stack.jid(address)
            and bool(stanza["body"])
            and (subject is None or stanza["subject"] == subject)
        )

    return matches


async def test_gateway_restart_delivers_missed_mail_once(stack: Stack, mail: MailServer) -> None:
    """State lives in the gateway's database: a restart neither repeats nor loses mail."""
    await mail.add_user("alice", "alicepw")
    carol = mail.address("carol")
    to = mail.address("alice")
    client = await login(stack, "alice")
    await registered(stack, client)
    await inject(mail, simple_mail(to, "before", "1", From=carol), to, carol)
    await client.wait_for(mail_from(stack, carol, "before"), PUSH_TIMEOUT)

    assert await stack.gateway.stop() == 0
    await inject(mail, simple_mail(to, "while down", "2", From=carol), to, carol)
    await stack.gateway.start()  # persistent sessions start without the user's presence

    missed = await client.wait_for(mail_from(stack, carol), PUSH_TIMEOUT)
    assert missed["subject"] == "while down"
    await inject(mail, simple_mail(to, "after", "3", From=carol), to, carol)
    after = await client.wait_for(mail_from(stack, carol), PUSH_TIMEOUT)
    assert after["subject"] == "after"  # "before" was not delivered a second time
    assert not any(mail_from(stack, carol)(s) for s in client.stanzas)


async def test_unregistering_ends_the_imap_session(stack: Stack, mail: MailServer) -> None:
    await mail.add_user("alice", "alicepw")
    client = await login(stack, "alice")
    await registered(stack, client)
    mark, imap_mark = stack.gateway.log_mark(), file_size(mail.log_path)
    await remove(client, MAIL_JID)
    await stack.gateway.wait_for_log(
        f"{client.boundjid.bare}: stopping mail session", since=mark, timeout=PUSH_TIMEOUT
    )
    # Dovecot saw the IDLE connection log out.
    await wait_for_log_line(mail.log_path, IMAP_LOGOUT, since=imap_mark, timeout=PUSH_TIMEOUT)


async def test_mail_for_an_offline_user_waits_in_offline_storage(
    stack: Stack, mail: MailServer
) -> None:
    await mail.add_user("alice", "alicepw")
    await mail.add_user("dave", "davepw")
    client = await login(stack, "alice")
    await registered(stack, client)
    user = client.boundjid.bare
    mark = stack.gateway.log_mark()
    await client.close()  # offline: the IMAP session keeps watching (persistent bridge)
    await stack.gateway.wait_for_log(f"{user}: offline", since=mark, timeout=PUSH_TIMEOUT)

    before = await stack.folders(user)
    dave = mail.address("dave")
    alice = mail.address("alice")
    await inject(mail, simple_mail(alice, "While you were out", "Hi!", From=dave), alice, dave)

    # The watermark moves once the stanza has been handed to the server, user offline.
    async def delivered() -> bool:
        return await stack.folders(user) != before

    await eventually_async(delivered, PUSH_TIMEOUT)
    assert "stopping mail session" not in stack.gateway.log_text(mark)  # it kept watching

    again = TestClient(f"{user}/laptop", "pw")
    await again.login(stack.prosody.host, stack.prosody.c2s_port)
    stored = await again.wait_for(mail_from(stack, dave, "While you were out"), PUSH_TIMEOUT)
    assert stored["body"] == "Hi!"
    await again.close()


async def test_new_correspondents_ask_to_join_the_roster(stack: Stack, mail: MailServer) -> None:
    await stack.restart_with(subscribe_correspondents=True)
    await mail.add_user("alice", "alicepw")
    await mail.add_user("erin", "erinpw")
    client = await login(stack, "alice")
    await registered(stack, client)
    alice, erin = mail.address("alice"), mail.address("erin")

    for subject in ("First", "Second"):
        await inject(mail, simple_mail(alice, subject, "text", From=erin), alice, erin)
        await client.wait_for(mail_from(stack, erin, subject), PUSH_TIMEOUT)
    requests = [
        s
        for s in client.stanzas
        if isinstance(s, Presence) and s["type"] == "subscribe" and s["from"].bare != MAIL_JID
    ]
    assert [r["from"].bare for r in requests] == [stack.jid(erin)]  # once, not per mail


async def test_quoted_local_parts_route_back_through_prosody(
    stack: Stack, mail: MailServer
) -> None:
    """The JID a mail (and its subscription request) comes from is one a reply reaches,
    and the README's spelling `bob\\20smith\\40...` reaches `"bob smith"@...`."""
    await stack.restart_with(subscribe_correspondents=True)
    await mail.add_user("alice", "alicepw")
    odd = await mail.add_user("odd one", "oddpw")
    await mail.add_user("bob smith", "bobpw")
    client = await login(stack, "alice")
    await registered(stack, client)
    alice = mail.address("alice")

    await inject(mail, simple_mail(alice, "Hi", "odd here", From=f"Odd <{odd}>"), alice, odd)
    incoming = await client.wait_for(mail_from(stack, odd), PUSH_TIMEOUT)
    assert incoming["from"].bare == f"\\22odd\\20one\\22\\40example.test@{MAIL_JID}"
    [request] = [
        s
        for s in client.stanzas
        if isinstance(s, Presence) and s["type"] == "subscribe" and s["from"].bare != MAIL_JID
    ]
    assert request["from"].bare == incoming["from"].bare

    for to, mailbox in (
        (incoming["from"].bare, "odd one"),
        (f"bob\\20smith\\40example.test@{MAIL_JID}", "bob smith"),
    ):
        reply = client.make_message(mto=to, mbody=f"to {mailbox}", mtype="chat")
        reply["id"] = f"to-{mailbox}"
        reply.xml.append(reply.xml.makeelement(f"{{{RECEIPTS}}}request", {}))
        reply.send()
        answer = await client.wait_for(  # sent once the MTA delivered it to the mailbox
            lambda s, i=reply["id"]: (
                isinstance(s, Message)
                and (
                    s["type"] == "error"
                    or s.xml.find(f"{{{RECEIPTS}}}received[@id='{i}']") is not None
                )
            ),
            PUSH_TIMEOUT,
        )
        assert answer["type"] != "error", answer["error"]["text"]  # gone from client.stanzas
        [received] = await read_mailbox(mail, mailbox)
        assert received.get_body().get_content().strip() == f"to {mailbox}"
    assert not [s for s in client.stanzas if isinstance(s, Message) and s["type"] == "error"]

    client.send_message(mto=f"bob@{MAIL_JID}", mbody="who?", mtype="chat")
    error = await client.wait_for(
        lambda s: isinstance(s, Message) and s["type"] == "error", PUSH_TIMEOUT
    )
    assert error["error"]["condition"] == "jid-malformed"
    assert error["error"]["text"] == "'bob' is not an email address: it needs local@domain"
