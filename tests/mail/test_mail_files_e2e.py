"""End to end with files and read state: attachments arrive as XEP-0363 uploads to
Prosody's own mod_http_file_share, and a `displayed` marker marks the mail read.

The gateway runs as its own process between a real Prosody (with its HTTP upload
service on loopback) and Dovecot; files are downloaded back over HTTP and compared.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any

import aiohttp
import pytest
from mail_helpers import PUSH_TIMEOUT, imap_client, inject
from registration_helpers import register_and_subscribe
from slixmpp import Message
from xmpp_client import TestClient, eventually_async

from bridges.jid_escaping import escape_node
from bridges.mail.devstack import MailServer
from component.devstack.gateway import GatewayProcess
from component.devstack.prosody import Prosody

MAIL_JID = "mail.localhost"
MAIL_SECRET = "mail-secret"
OOB = "jabber:x:oob"
MARKERS = "urn:xmpp:chat-markers:0"
UPLOAD_LIMIT = 1024 * 1024
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 400 + b"\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x01\x02" * 3000


async def start_stack(
    mail: MailServer,
    gateway_factory: Any,
    prosody: Prosody,
    files: dict[str, Any] | None = None,
    **mail_options: Any,
) -> GatewayProcess:
    section = {
        "jid": MAIL_JID,
        "secret": MAIL_SECRET,
        "ca_file": str(mail.ca_file),
        "allowed_hosts": [mail.host],
        "timeout": 10.0,
        "reconnect_min": 0.2,
        "reconnect_max": 1.0,
        "upload_retry_delay": 0.1,
        **mail_options,
    }
    sections = {"files": files} if files is not None else {}
    return await gateway_factory(prosody, bridges={"mail": section}, **sections)  # type: ignore[no-any-return]


@pytest.fixture
async def prosody() -> AsyncIterator[Prosody]:
    async with Prosody(components={MAIL_JID: MAIL_SECRET}, upload_limit=UPLOAD_LIMIT) as server:
        yield server


async def alice(prosody: Prosody, gateway: GatewayProcess, mail: MailServer) -> TestClient:
    """Alice logged in to XMPP, with her mailbox registered and watched."""
    await mail.add_user("alice", "alicepw")
    jid = await prosody.register("alice", "pw")
    client = await TestClient(f"{jid}/phone", "pw").login(prosody.host, prosody.c2s_port)
    mark = gateway.log_mark()
    form = {
        "email": mail.address("alice"),
        "password": "alicepw",
        "imap_host": mail.host,
        "imap_port": str(mail.imap_port),
        "imap_security": "starttls",
        "smtp_host": mail.host,
        "smtp_port": str(mail.submission_port),
        "smtp_security": "starttls",
    }
    await register_and_subscribe(client, MAIL_JID, **form)
    await gateway.wait_for_log(r"INBOX: first sync of INBOX", since=mark, timeout=PUSH_TIMEOUT)
    return client


def mail_with_files(to: str, sender: str, message_id: str) -> EmailMessage:
    """An HTML mail with an inline PNG, a PDF, a file with a hostile name, and one too
    large for the upload service."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = f"Bob <{sender}>", to, "The report"
    msg["Message-ID"] = message_id
    msg.set_content("See the report attached.")
    msg.add_alternative('<p>See the report <img src="cid:chart"></p>', subtype="html")
    html = msg.get_payload()[1]
    html.add_related(PNG, maintype="image", subtype="png", cid="<chart>", filename="chart.png")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="report.pdf")
    hostile = "../../etc/\u202egnp." + "x" * 300 + ".exe"
    msg.add_attachment(b"MZ" * 10, maintype="application", subtype="octet-stream", filename=hostile)
    msg.add_attachment(
        b"\x00" * (UPLOAD_LIMIT + 10), maintype="application", subtype="zip", filename="huge.zip"
    )
    return msg


def from_sender(sender_jid: str) -> Any:
    def matches(stanza: Any) -> bool:
        return isinstance(stanza, Message) and stanza["from"].bare == sender_jid and stanza["body"]

    return matches


async def wait_messages(client: TestClient, sender_jid: str, count: int) -> list[Message]:
    def enough() -> bool:
        return len([s for s in client.stanzas if from_sender(sender_jid)(s)]) >= count

    await eventually_async(lambda: _true(enough()), timeout=PUSH_TIMEOUT * 4)
    return [s for s in client.stanzas if from_sender(sender_jid)(s)]


async def _true(value: bool) -> bool:
    return value


async def download(url: str) -> bytes:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        return await response.read()


async def test_attachments_arrive_as_uploaded_files_after_the_text(
    mail: MailServer, gateway_factory: Any, prosody: Prosody
) -> None:
    gateway = await start_stack(mail, gateway_factory, prosody)
    client = await alice(prosody, gateway, mail)
    bob = "bob@remote.test"
    bob_jid = f"{escape_node(bob)}@{MAIL_JID}"
    to = mail.address("alice")
    await inject(mail, mail_with_files(to, bob, "<report-1@remote.test>"), to, bob)

    text, *files = await wait_messages(client, bob_jid, 4)
    assert "3 files follow" in text["body"]
    assert "huge.zip" in text["body"] and "larger than the upload service takes" in text["body"]
    assert text.xml.find(f"{{{MARKERS}}}markable") is not None
    assert text["id"] == "<report-1@remote.test>"
    assert len(files) == 3
    urls = [f.xml.find(f"{{{OOB}}}x").findtext(f"{{{OOB}}}url") for f in files]
    assert [f["body"] for f in files] == urls
    assert await download(urls[0]) == PNG  # the inline image comes first, in mail order
    assert await download(urls[1]) == PDF
    assert await download(urls[2]) == b"MZ" * 10
    hostile = files[2].xml.find(f"{{{OOB}}}x").findtext(f"{{{OOB}}}desc")
    assert "/" not in hostile and "\u202e" not in hostile and ".." not in hostile
    assert len(hostile.encode()) < 260
    assert all(f["thread"] == text["thread"] for f in files)


async def test_displayed_marker_marks_the_mail_and_earlier_ones_of_its_thread_read(
    mail: MailServer, gateway_factory: Any, prosody: Prosody
) -> None:
    gateway = await start_stack(mail, gateway_factory, prosody)
    client = await alice(prosody, gateway, mail)
    bob = "bob@remote.test"
    bob_jid = f"{escape_node(bob)}@{MAIL_JID}"
    to = mail.address("alice")
    ids = ["<t-1@remote.test>", "<t-2@remote.test>", "<other@remote.test>"]
    for number, message_id in enumerate(ids):
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = bob, to, f"part {number}"
        msg["Message-ID"] = message_id
        if number == 1:
            msg["References"] = ids[0]
        msg.set_content(f"mail {number}")
        await inject(mail, msg, to, bob)
    first, second, other = await wait_messages(client, bob_jid, 3)
    assert first["thread"] == second["thread"] != other["thread"]

    marker = client.make_message(mto=bob_jid, mtype="chat")
    marker.xml.append(marker.xml.makeelement(f"{{{MARKERS}}}displayed", {"id": second["id"]}))
    marker.send()

    async def seen() -> list[str]:
        async with imap_client(mail, "alice") as imap:
            await imap.select("INBOX")
            response = await imap.uid_search("SEEN", charset=None)
            return [u for u in response.lines[0].decode().split() if u.isdigit()]

    await eventually_async(lambda: _is(seen(), ["1", "2"]), timeout=PUSH_TIMEOUT * 2)


async def _is(found: Any, expected: list[str]) -> bool:
    return bool(await found == expected)


async def test_upload_service_down_still_delivers_the_mail_with_a_line(
    mail: MailServer, gateway_factory: Any
) -> None:
    async with Prosody(components={MAIL_JID: MAIL_SECRET}) as plain:
        # the service named does not exist: every slot request fails
        files = {"upload_service": "upload.localhost"}
        gateway = await start_stack(mail, gateway_factory, plain, files=files)
        client = await alice(plain, gateway, mail)
        bob = "bob@remote.test"
        bob_jid = f"{escape_node(bob)}@{MAIL_JID}"
        to = mail.address("alice")
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = bob, to, "file"
        msg.set_content("here")
        msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="a.pdf")
        await inject(mail, msg, to, bob)
        text, line = await wait_messages(client, bob_jid, 2)
        assert "1 file follows" in text["body"]
        assert "a.pdf" in line["body"] and "could not be stored" in line["body"]
        assert line.xml.find(f"{{{OOB}}}x") is None
        await gateway.stop()


async def test_kill_between_text_and_file_delivers_each_once(
    mail: MailServer, gateway_factory: Any, prosody: Prosody
) -> None:
    gateway = await start_stack(mail, gateway_factory, prosody)
    client = await alice(prosody, gateway, mail)
    bob = "bob@remote.test"
    bob_jid = f"{escape_node(bob)}@{MAIL_JID}"
    to = mail.address("alice")
    big = bytes(range(256)) * 3000  # ~770 KB: the upload is under way at the kill
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = bob, to, "big"
    msg.set_content("one file")
    msg.add_attachment(big, maintype="application", subtype="octet-stream", filename="big.bin")
    await inject(mail, msg, to, bob)
    await client.wait_for(from_sender(bob_jid), PUSH_TIMEOUT)
    await gateway.kill()
    await gateway.start()
    text, file = await wait_messages(client, bob_jid, 2)
    assert "1 file follows" in text["body"]
    url = file.xml.find(f"{{{OOB}}}x").findtext(f"{{{OOB}}}url")
    assert await download(url) == big
    # nothing more comes: a later mail is the next message from bob
    msg2 = EmailMessage()
    msg2["From"], msg2["To"], msg2["Subject"] = bob, to, "after"
    msg2.set_content("next")
    await inject(mail, msg2, to, bob)
    messages = await wait_messages(client, bob_jid, 3)
    assert [m["subject"] or "" for m in messages] == ["big", "", "after"]
