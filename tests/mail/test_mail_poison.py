"""A mail the gateway cannot parse still arrives, and the mailbox moves on past it.

Before, a multipart nested 1,500 deep raised RecursionError in the stdlib parser; the
watcher reconnected and retried the same mail every few seconds, and nothing after it
was ever delivered.
"""

from __future__ import annotations

from mail_helpers import MemoryStore, RecordingSink, inject, register, running, simple_mail

from bridges import events
from bridges.mail import MailBridge, mime
from bridges.mail.devstack import MailServer

BOB = "bob@elsewhere.test"


def nested_mail(depth: int, to: str = "alice@example.test") -> bytes:
    """A valid-looking mail whose multiparts nest `depth` deep."""
    head = (
        f"From: Mallory <mallory@elsewhere.test>\r\nTo: {to}\r\nSubject: Deep\r\n"
        "Message-ID: <deep@elsewhere.test>\r\nMIME-Version: 1.0\r\n"
    )
    opening = "".join(
        f'Content-Type: multipart/mixed; boundary="b{n}"\r\n\r\n--b{n}\r\n' for n in range(depth)
    )
    closing = "".join(f"\r\n--b{n}--\r\n" for n in reversed(range(depth)))
    return (head + opening + "Content-Type: text/plain\r\n\r\ninside" + closing).encode()


def test_a_deeply_nested_mail_keeps_its_headers_and_says_why_the_body_is_missing():
    mail = mime.parse_incoming(nested_mail(1500))
    assert (mail.sender, mail.display_name, mail.subject) == (
        "mallory@elsewhere.test", "Mallory", "Deep",
    )  # fmt: skip
    assert mail.message_id == "<deep@elsewhere.test>"
    assert "could not be read" in mail.body and "more than 100 multipart" in mail.body


def test_a_moderately_nested_mail_is_read_normally():
    assert mime.parse_incoming(nested_mail(20)).body == "inside"


def test_a_huge_header_block_is_refused_but_its_start_is_read():
    raw = b"From: bob@elsewhere.test\r\nSubject: Big\r\nX-Junk: " + b"j" * 100_000 + b"\r\n\r\nhi"
    mail = mime.parse_incoming(raw)
    assert (mail.sender, mail.subject) == ("bob@elsewhere.test", "Big")
    assert "header is over 64.0 KB" in mail.body


async def test_the_mail_after_a_poison_mail_is_delivered(mail: MailServer, bridge: MailBridge):
    account = await register(bridge, mail, "alice")
    sink = RecordingSink()
    async with running(bridge, account, sink, MemoryStore()):
        await inject(mail, nested_mail(1500, mail.address("alice")), mail.address("alice"), BOB)
        after = simple_mail(mail.address("alice"), "Next", "still flowing")
        await inject(mail, after, mail.address("alice"), BOB)
        poison, good = await sink.wait_count(events.Message, 2)
    assert poison.subject == "Deep" and "could not be read" in poison.text
    assert (good.subject, good.text) == ("Next", "still flowing")
    assert sink.last_state["folders"]["INBOX"]["last_uid"] == 2
