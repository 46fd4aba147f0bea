"""End to end with files and read state: attachments arrive as XEP-0363 uploads to
Prosody's own mod_http_file_share, and a `displayed` marker marks the mail read.

The gateway runs as its own process between a real Prosody (with its HTTP upload
service on loopback) and Dovecot; files are downloaded back over HTTP and compared.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from email.message import EmailMessage
from typing import Any, NamedTuple

import aiohttp
import pytest
from harness import MAIL_JID, MAIL_SECRET, mail_section
from holding_proxy import HoldingProxy
from mail_helpers import (
    PUSH_TIMEOUT,
    closed_port,
    imap_client,
    inject,
    read_mailbox,
    simple_mail,
)
from registration_helpers import mailbox_form, register_and_subscribe
from slixmpp import Message
from xmpp_client import TestClient, eventually_async

from bridges.jid_escaping import escape_node
from bridges.mail.devstack import MailServer
from component.devstack.gateway import GatewayProcess
from component.devstack.prosody import Prosody

OOB = "jabber:x:oob"
MARKERS = "urn:xmpp:chat-markers:0"
UPLOAD_LIMIT = 1024 * 1024
BIG_LIMIT = 8 * 1024 * 1024
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 400 + b"\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x01\x02" * 3000
BOB = "bob@remote.test"
"""A correspondent on a remote host, who mails alice."""
BOB_JID = f"{escape_node(BOB)}@{MAIL_JID}"


@pytest.fixture
async def prosody() -> AsyncIterator[Prosody]:
    async with Prosody(components={MAIL_JID: MAIL_SECRET}, upload_limit=UPLOAD_LIMIT) as server:
        yield server


@pytest.fixture
async def proxy() -> AsyncIterator[HoldingProxy]:
    async with HoldingProxy() as holding:
        yield holding


@pytest.fixture
async def proxied(proxy: HoldingProxy) -> AsyncIterator[Prosody]:
    """Prosody whose upload slots name `proxy`, which forwards to its upload service."""
    server = Prosody(
        components={MAIL_JID: MAIL_SECRET}, upload_limit=BIG_LIMIT, upload_url=proxy.url
    )
    proxy.target = f"http://{server.host}:{server.http_port}"
    async with server:
        yield server


class Started(NamedTuple):
    gateway: GatewayProcess
    client: TestClient
    """Alice, logged in to XMPP, with her mailbox registered and watched."""
    to: str
    """Alice's mail address."""


Start = Callable[..., Awaitable[Started]]


@pytest.fixture
def start(mail: MailServer, gateway_factory: Any) -> Start:
    """`start(prosody, files=None, before=(), **mail_options)`: the gateway for the mail
    bridge on `prosody` (`files`: its files section), then alice. The mailboxes named in
    `before` are added first: Dovecot rereads its users only each second."""

    async def started(
        prosody: Prosody,
        files: dict[str, Any] | None = None,
        before: tuple[str, ...] = (),
        **mail_options: Any,
    ) -> Started:
        section = mail_section(mail, upload_retry_delay=0.1, **mail_options)
        sections = {"files": files} if files is not None else {}
        gateway = await gateway_factory(prosody, bridges={"mail": section}, **sections)
        for user in before:
            await mail.add_user(user, f"{user}pw")
        await mail.add_user("alice", "alicepw")
        jid = await prosody.register("alice", "pw")
        client = await TestClient(f"{jid}/phone", "pw").login(prosody.host, prosody.c2s_port)
        mark = gateway.log_mark()
        await register_and_subscribe(client, MAIL_JID, **mailbox_form(mail, "alice"))
        await gateway.wait_for_log(r"INBOX: first sync of INBOX", since=mark, timeout=PUSH_TIMEOUT)
        return Started(gateway, client, mail.address("alice"))

    return started


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
    mail: MailServer, start: Start, prosody: Prosody
) -> None:
    _, client, to = await start(prosody)
    await inject(mail, mail_with_files(to, BOB, "<report-1@remote.test>"), to, BOB)

    text, *files = await wait_messages(client, BOB_JID, 4)
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
    mail: MailServer, start: Start, prosody: Prosody
) -> None:
    _, client, to = await start(prosody)
    ids = ["<t-1@remote.test>", "<t-2@remote.test>", "<other@remote.test>"]
    for number, message_id in enumerate(ids):
        msg = simple_mail(to, f"part {number}", f"mail {number}", From=BOB, Message_ID=message_id)
        if number == 1:
            msg["References"] = ids[0]
        await inject(mail, msg, to, BOB)
    first, second, other = await wait_messages(client, BOB_JID, 3)
    assert first["thread"] == second["thread"] != other["thread"]
    info = await client.plugin["xep_0030"].get_info(jid=BOB_JID, timeout=10)
    assert MARKERS in info["disco_info"]["features"]  # so clients send the marker

    marker = client.make_message(mto=BOB_JID, mtype="chat")
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


async def test_an_upload_service_that_gives_no_slot_still_delivers_the_mail_with_a_line(
    mail: MailServer, start: Start
) -> None:
    async with Prosody(components={MAIL_JID: MAIL_SECRET}) as plain:
        # the service named does not exist: every slot request fails
        files = {"upload_service": "upload.localhost"}
        gateway, client, to = await start(plain, files=files)
        msg = simple_mail(to, "file", "here", From=BOB, files=[(PDF, "application/pdf", "a.pdf")])
        await inject(mail, msg, to, BOB)
        text, line = await wait_messages(client, BOB_JID, 2)
        assert "1 file follows" in text["body"]
        assert "a.pdf" in line["body"] and "could not be stored" in line["body"]
        assert line.xml.find(f"{{{OOB}}}x") is None
        await gateway.stop()


@pytest.mark.parametrize(
    ("status", "reason", "puts"),
    [(403, "HTTP 403", 1), (503, "HTTP 503", 3), (None, "upload failed", 0)],
    ids=["refused", "failing", "down"],
)
async def test_an_upload_service_that_refuses_or_is_down_still_delivers_the_mail(
    mail: MailServer,
    start: Start,
    proxied: Prosody,
    proxy: HoldingProxy,
    status: int | None,
    reason: str,
    puts: int,
) -> None:
    _, client, to = await start(proxied)
    if status is None:
        await proxy.close()  # slots are still given, their URLs refuse connections
    else:
        proxy.refuse("PUT", status)
    msg = simple_mail(to, "file", "here", From=BOB, files=[(PDF, "application/pdf", "a.pdf")])
    await inject(mail, msg, to, BOB)
    text, line = await wait_messages(client, BOB_JID, 2)
    assert "1 file follows" in text["body"]
    assert "a.pdf" in line["body"] and "could not be stored" in line["body"]
    assert reason in line["body"]
    assert line.xml.find(f"{{{OOB}}}x") is None
    assert proxy.arrived.count("PUT") == puts  # a temporary failure is tried again
    await inject(mail, simple_mail(to, "later", "fine", From=BOB), to, BOB)
    *_, later = await wait_messages(client, BOB_JID, 3)
    assert later["body"] == "fine"


async def test_a_held_upload_does_not_hold_the_next_mail_back(
    mail: MailServer, start: Start, proxied: Prosody, proxy: HoldingProxy
) -> None:
    _, client, to = await start(proxied)
    proxy.hold("PUT")
    first = simple_mail(to, "first", "a file", From=BOB, files=[(PDF, "application/pdf", "a.pdf")])
    await inject(mail, first, to, BOB)
    await inject(mail, simple_mail(to, "second", "plain", From=BOB), to, BOB)
    await proxy.wait_arrived("PUT")  # the upload of mail 1's file is under way...
    texts = await wait_messages(client, BOB_JID, 2)
    assert [m["subject"] for m in texts] == ["first", "second"]  # ...and mail 2 came
    assert "1 file follows" in texts[0]["body"]
    assert "PUT" not in proxy.finished
    proxy.release()
    *_, file = await wait_messages(client, BOB_JID, 3)
    assert await download(oob_url(file)) == PDF
    assert file["thread"] == texts[0]["thread"]


async def test_kill_during_the_upload_delivers_the_mail_once(
    mail: MailServer, start: Start, proxied: Prosody, proxy: HoldingProxy
) -> None:
    gateway, client, to = await start(proxied)
    big = bytes(range(256)) * 3000
    proxy.hold("PUT")
    files = [(big, "application/octet-stream", "big.bin"), (PDF, "application/pdf", "b.pdf")]
    await inject(mail, simple_mail(to, "big", "two files", From=BOB, files=files), to, BOB)
    await wait_messages(client, BOB_JID, 1)
    await proxy.wait_arrived("PUT")  # the first file's PUT is in flight: kill now
    await gateway.kill()
    proxy.release()  # the held PUT of the dead process goes nowhere
    await gateway.start()
    text, *uploaded = await wait_messages(client, BOB_JID, 3)
    assert "2 files follow" in text["body"]
    assert [await download(oob_url(f)) for f in uploaded] == [big, PDF]
    assert proxy.arrived.count("PUT") == 3  # the cut one, then both files after the restart
    # nothing more comes: a later mail is the next message from bob
    await inject(mail, simple_mail(to, "after", "next", From=BOB), to, BOB)
    messages = await wait_messages(client, BOB_JID, 4)
    assert [m["subject"] or "" for m in messages] == ["big", "", "", "after"]


def oob_url(message: Message) -> str:
    return str(message.xml.find(f"{{{OOB}}}x").findtext(f"{{{OOB}}}url"))


UPLOAD = "urn:xmpp:http:upload:0"
REPLY = "urn:xmpp:reply:0"
FALLBACK = "urn:xmpp:fallback:0"
CORRECT = "urn:xmpp:message-correct:0"


async def client_upload(client: TestClient, prosody: Prosody, name: str, data: bytes) -> str:
    """What a client does before sending a file: an XEP-0363 slot, then the PUT."""
    iq = client.make_iq_get(ito=prosody.upload_jid)
    iq.xml.append(
        iq.xml.makeelement(
            f"{{{UPLOAD}}}request",
            {"filename": name, "size": str(len(data)), "content-type": "application/pdf"},
        )
    )
    slot = (await iq.send(timeout=10)).xml.find(f"{{{UPLOAD}}}slot")
    put = slot.find(f"{{{UPLOAD}}}put")
    headers = {h.get("name"): h.text for h in put.findall(f"{{{UPLOAD}}}header")}
    headers["Content-Type"] = "application/pdf"
    async with (
        aiohttp.ClientSession() as http,
        http.put(put.get("url"), data=data, headers=headers) as response,
    ):
        assert response.status in (200, 201)
    return str(slot.find(f"{{{UPLOAD}}}get").get("url"))


def oob_message(client: TestClient, to: str, body: str, url: str) -> Message:
    message = client.make_message(mto=to, mbody=body, mtype="chat")
    oob = message.xml.makeelement(f"{{{OOB}}}x", {})
    url_element = oob.makeelement(f"{{{OOB}}}url", {})
    url_element.text = url
    oob.append(url_element)
    message.xml.append(oob)
    return message


async def test_files_sent_from_xmpp_are_attached_and_other_hosts_stay_links(
    mail: MailServer, start: Start, prosody: Prosody
) -> None:
    files = {"download_hosts": ["127.0.0.1"]}
    _, client, _ = await start(
        prosody, files, before=("carol",), save_sent=True, max_attachment_bytes=len(PDF)
    )
    carol_jid = f"{escape_node(mail.address('carol'))}@{MAIL_JID}"
    url = await client_upload(client, prosody, "plan.pdf", PDF)
    huge = await client_upload(client, prosody, "huge.pdf", PDF + b"x")
    gone = f"http://127.0.0.1:{closed_port()}/gone.pdf"

    oob_message(client, carol_jid, url, url).send()  # only the URL: empty body
    oob_message(client, carol_jid, "see", "http://files.example.net/x.pdf").send()
    oob_message(client, carol_jid, "too big", huge).send()  # over max_attachment_bytes
    oob_message(client, carol_jid, "unreachable", gone).send()

    async def all_four() -> bool:
        return len(await read_mailbox(mail, "carol")) == 4

    await eventually_async(all_four, timeout=PUSH_TIMEOUT * 2)
    # Submitted in order, but the MTA relays each mail to Dovecot on its own, so the
    # bigger one can land later: told apart by content, not by mailbox position.
    mailbox = await read_mailbox(mail, "carol")
    [attached] = [m for m in mailbox if list(m.iter_attachments())]
    bodies = [m.get_body(("plain",)).get_content() for m in mailbox if m is not attached]
    [part] = list(attached.iter_attachments())
    assert part.get_filename() == "plan.pdf"
    assert part.get_content_type() == "application/pdf"
    assert part.get_content() == PDF
    assert attached.get_body(("plain",)).get_content().strip() == ""
    for link in ["http://files.example.net/x.pdf", huge, gone]:
        assert sum(link in body for body in bodies) == 1  # a link, and no attachment

    async def sent_copies() -> bool:
        return len(await read_mailbox(mail, "alice", "Sent")) == 4

    await eventually_async(sent_copies, timeout=PUSH_TIMEOUT * 2)
    copies = await read_mailbox(mail, "alice", "Sent")
    assert any(a.get_content() == PDF for copy in copies for a in copy.iter_attachments())


async def test_a_held_download_does_not_hold_the_users_other_stanzas_and_a_big_file_arrives(
    mail: MailServer, start: Start, proxied: Prosody, proxy: HoldingProxy
) -> None:
    files = {"download_hosts": ["127.0.0.1"]}
    _, client, _ = await start(proxied, files, before=("carol", "dave"))
    carol_jid, dave_jid = (f"{escape_node(mail.address(u))}@{MAIL_JID}" for u in ("carol", "dave"))
    big = bytes(range(256)) * (6 * 4096)  # 6 MiB: many spool chunks, over half the cap
    url = await client_upload(client, proxied, "big.pdf", big)
    proxy.hold("GET")
    oob_message(client, carol_jid, "the big one\n.a line with a dot", url).send()
    await proxy.wait_arrived("GET")  # the gateway is fetching the file...

    # ...and the same user's lane is free: a ping to that contact, a mail to another
    await client.plugin["xep_0199"].ping(carol_jid, timeout=PUSH_TIMEOUT)
    client.make_message(mto=dave_jid, mbody="meanwhile", mtype="chat").send()

    async def arrived(user: str) -> bool:
        return len(await read_mailbox(mail, user)) == 1

    await eventually_async(lambda: arrived("dave"), timeout=PUSH_TIMEOUT * 2)
    assert await read_mailbox(mail, "carol") == []
    assert "GET" not in proxy.finished
    proxy.release()
    await eventually_async(lambda: arrived("carol"), timeout=PUSH_TIMEOUT * 2)
    [mailed] = await read_mailbox(mail, "carol")
    [part] = list(mailed.iter_attachments())
    assert part.get_filename() == "big.pdf"
    assert part.get_content() == big
    body = mailed.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert body.strip() == "the big one\n.a line with a dot"  # dot-stuffed in DATA


async def test_reply_to_the_third_mail_of_a_thread_and_corrections_are_refused(
    mail: MailServer, start: Start, prosody: Prosody
) -> None:
    _, client, to = await start(prosody, before=("carol",))
    carol = mail.address("carol")
    carol_jid = f"{escape_node(carol)}@{MAIL_JID}"
    ids = [f"<m{n}@example.test>" for n in range(1, 5)]
    for number, message_id in enumerate(ids):
        msg = simple_mail(to, "Plans", f"mail {number + 1}", From=carol, Message_ID=message_id)
        if number:
            msg["In-Reply-To"] = ids[number - 1]
            msg["References"] = " ".join(ids[:number])
        await inject(mail, msg, to, carol)
    received = await wait_messages(client, carol_jid, 4)
    third = received[2]

    quote = "> mail 3\n"
    reply = client.make_message(mto=carol_jid, mbody=quote + "About that one.", mtype="chat")
    reply["thread"] = third["thread"]
    reply.xml.append(
        reply.xml.makeelement(f"{{{REPLY}}}reply", {"id": third["id"], "to": carol_jid})
    )
    fallback = reply.xml.makeelement(f"{{{FALLBACK}}}fallback", {"for": REPLY})
    fallback.append(
        fallback.makeelement(f"{{{FALLBACK}}}body", {"start": "0", "end": str(len(quote))})
    )
    reply.xml.append(fallback)
    reply["id"] = "r1"
    reply.send()

    correction = client.make_message(mto=carol_jid, mbody="About that one!", mtype="chat")
    correction.xml.append(correction.xml.makeelement(f"{{{CORRECT}}}replace", {"id": "r1"}))
    correction["id"] = "r2"
    correction.send()
    error = await client.wait_for(
        lambda s: isinstance(s, Message) and s["type"] == "error" and s["id"] == "r2",
        PUSH_TIMEOUT,
    )
    assert error["error"]["condition"] == "not-acceptable"
    assert "cannot be changed" in error["error"]["text"]

    async def arrived() -> bool:
        return len(await read_mailbox(mail, "carol")) == 1

    await eventually_async(arrived, timeout=PUSH_TIMEOUT * 2)
    [answer] = await read_mailbox(mail, "carol")
    assert answer["In-Reply-To"] == "<m3@example.test>"
    assert answer["References"].split() == ids[:3]
    body = answer.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert body.strip() == "> mail 3\n\nAbout that one."


async def test_uploads_over_https_trust_the_configured_ca(mail: MailServer, start: Start) -> None:
    async with Prosody(
        components={MAIL_JID: MAIL_SECRET}, upload_limit=UPLOAD_LIMIT, upload_tls=True
    ) as secure:
        assert secure.ca_file is not None
        files = {"ca_file": str(secure.ca_file)}
        gateway, client, to = await start(secure, files=files)
        msg = simple_mail(
            to, "secure", "over https", From=BOB, files=[(PDF, "application/pdf", "s.pdf")]
        )
        await inject(mail, msg, to, BOB)
        _text, file = await wait_messages(client, BOB_JID, 2)
        url = file.xml.find(f"{{{OOB}}}x").findtext(f"{{{OOB}}}url")
        assert url.startswith("https://")
        tls = ssl.create_default_context(cafile=str(secure.ca_file))
        async with aiohttp.ClientSession() as http, http.get(url, ssl=tls) as response:
            assert await response.read() == PDF
        await gateway.stop()


async def test_broken_base64_arrives_as_a_line_and_later_mail_still_comes(
    mail: MailServer, start: Start, prosody: Prosody
) -> None:
    _, client, to = await start(prosody)
    raw = (
        f"From: {BOB}\r\nTo: {to}\r\nSubject: broken\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nsee file\r\n"
        '--b\r\nContent-Type: application/pdf; name="x.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\nQUJDR\r\n--b--\r\n"
    ).encode()
    await inject(mail, raw, to, BOB)
    await inject(mail, simple_mail(to, "later", "fine", From=BOB, Message_ID=""), to, BOB)
    messages = await wait_messages(client, BOB_JID, 3)
    by_subject = {m["subject"] or "": m for m in messages}
    assert "1 file follows" in by_subject["broken"]["body"]
    assert by_subject["later"]["body"] == "fine"
    [line] = [m for m in messages if not m["subject"]]
    assert "x.pdf" in line["body"] and "broken" in line["body"]
