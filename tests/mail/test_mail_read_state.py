"""Read state at the bridge: mail read elsewhere comes quietly, and `seen_on_delivery`
marks mail read on the server as it is delivered (checked over a separate login)."""

from __future__ import annotations

from mail_helpers import (
    MemoryStore,
    RecordingSink,
    imap_client,
    inject,
    register,
    resumed,
    running,
    simple_mail,
)
from xmpp_client import eventually_async

from bridges import events
from bridges.mail import MailBridge
from bridges.mail.devstack import MailServer

BOB = "bob@elsewhere.test"


async def seen_uids(mail: MailServer, user: str) -> list[str]:
    async with imap_client(mail, user) as imap:
        await imap.select("INBOX")
        response = await imap.uid_search("SEEN", charset=None)
    return [uid for uid in response.lines[0].decode().split() if uid.isdigit()]


async def test_mail_read_elsewhere_comes_quiet_and_unmarkable(
    mail: MailServer, bridge: MailBridge
) -> None:
    account = await register(bridge, mail, "alice")
    to = mail.address("alice")
    sink, store = RecordingSink(), MemoryStore()
    async with running(bridge, account, sink, store):
        pass  # the first sync sets the watermark
    await inject(mail, simple_mail(to, "read", "seen already"), to, BOB)
    await inject(mail, simple_mail(to, "unread", "new"), to, BOB)
    async with imap_client(mail, "alice") as imap:
        await imap.select("INBOX")
        await imap.uid("store", "1", r"+FLAGS (\Seen)")

    second = RecordingSink()
    async with running(bridge, resumed(account, sink), second, store):
        read, unread = await second.wait_count(events.Message, 2)
    assert (read.subject, read.quiet, read.markable) == ("read", True, False)
    assert (unread.subject, unread.quiet, unread.markable) == ("unread", False, True)
    assert await seen_uids(mail, "alice") == ["1"]  # delivery itself marked nothing


async def test_seen_on_delivery_marks_mail_read_as_it_is_delivered(
    mail: MailServer, bridge: MailBridge
) -> None:
    account = await register(bridge, mail, "alice")
    account.settings["seen_on_delivery"] = True
    to = mail.address("alice")
    sink = RecordingSink()
    async with running(bridge, account, sink, MemoryStore()):
        await inject(mail, simple_mail(to, "one", "1"), to, BOB)
        [event] = await sink.wait_count(events.Message, 1)

        async def marked() -> bool:
            return await seen_uids(mail, "alice") == ["1"]

        await eventually_async(marked, timeout=10)
    assert not event.markable
