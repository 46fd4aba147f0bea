"""Mail out: MailSession.send_message → Dovecot submission → MTA → recipient's mailbox."""

from __future__ import annotations

import time

from mail_helpers import (
    MemoryStore,
    RecordingSink,
    closed_port,
    inject,
    options_for,
    read_mailbox,
    register,
    resumed,
    running,
    simple_mail,
)
from xmpp_client import eventually

from bridges import events
from bridges.address import Address, AddressKind
from bridges.base import Account
from bridges.mail import MailBridge
from bridges.mail.devstack import MailServer

PHONE = events.Origin("alice@localhost/phone", receipt=True)


def contact(address: str) -> Address:
    return Address(AddressKind.CONTACT, address)


def unreachable_smtp(account: Account) -> Account:
    """`account` with its SMTP server on a port where nothing listens."""
    settings = {**account.settings, "smtp_port": closed_port()}
    return Account(account.user, account.bridge, settings, dict(account.secrets))


async def test_send_new_mail(mail: MailServer, bridge: MailBridge) -> None:
    await mail.add_user("bob", "bobpw")
    alice = await register(bridge, mail, "alice")
    bob = mail.address("bob")
    sink, store = RecordingSink(), MemoryStore()
    async with running(bridge, alice, sink, store) as session:
        await session.send_message(contact(bob), "Grüße aus Köln 👋\nzweite Zeile", xmpp_id="x1")
        delivered = await sink.wait_for(lambda e: isinstance(e, events.Delivered))
    assert delivered == events.Delivered(contact(bob), "x1")
    [received] = await read_mailbox(mail, "bob")
    sender = received["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == ("Alice", mail.address("alice"))
    assert received["To"].addresses[0].addr_spec == bob
    assert str(received["Subject"]) == "(no subject)"
    assert received["Date"].datetime is not None
    assert received["Message-ID"]
    assert "In-Reply-To" not in received
    body = received.get_body()
    assert body is not None
    assert body.get_content().replace("\r\n", "\n") == "Grüße aus Köln 👋\nzweite Zeile\n"
    assert store.records.get(("outbox", str(received["Message-ID"]))) is None


async def test_reply_is_threaded(mail: MailServer, bridge: MailBridge) -> None:
    await mail.add_user("carol", "carolpw")
    alice = await register(bridge, mail, "alice")
    carol = mail.address("carol")
    sink, store = RecordingSink(), MemoryStore()
    async with running(bridge, alice, sink, store) as session:
        original = simple_mail(
            mail.address("alice"),
            "Budget 2027",
            "numbers?",
            From=f"Carol <{carol}>",
            Message_ID="<budget-2@example.test>",
            References="<budget-1@example.test>",
            In_Reply_To="<budget-1@example.test>",
        )
        await inject(mail, original, mail.address("alice"), carol)
        incoming = await sink.wait_for(lambda e: isinstance(e, events.Message))
        await session.send_message(
            incoming.sender, "Here they are.", xmpp_id="r1", thread=incoming.thread
        )
        await sink.wait_for(lambda e: isinstance(e, events.Delivered))
        # a second reply in the same thread chains onto the first one
        await session.send_message(
            incoming.sender, "And more.", xmpp_id="r2", thread=incoming.thread
        )
        await sink.wait_for(lambda e: isinstance(e, events.Delivered) and e.xmpp_id == "r2")
    first, second = await read_mailbox(mail, "carol")
    assert str(first["Subject"]) == "Re: Budget 2027"
    assert first["In-Reply-To"] == "<budget-2@example.test>"
    assert first["References"] == "<budget-1@example.test> <budget-2@example.test>"
    assert second["In-Reply-To"] == first["Message-ID"]
    assert second["References"].split()[-1] == first["Message-ID"]


async def test_thread_started_by_user_maps_replies_back(
    mail: MailServer, bridge: MailBridge
) -> None:
    await mail.add_user("bob", "bobpw")
    alice = await register(bridge, mail, "alice")
    bob = mail.address("bob")
    sink, store = RecordingSink(), MemoryStore()
    async with running(bridge, alice, sink, store) as session:
        await session.send_message(
            contact(bob), "hi", xmpp_id="s1", subject="Ideas", thread="xmpp-thread-7"
        )
        await sink.wait_for(lambda e: isinstance(e, events.Delivered))
        [sent] = await read_mailbox(mail, "bob")
        assert str(sent["Subject"]) == "Ideas"
        answer = simple_mail(
            mail.address("alice"),
            "Re: Ideas",
            "sure",
            From=bob,
            Message_ID="<answer@example.test>",
            In_Reply_To=sent["Message-ID"],
            References=sent["Message-ID"],
        )
        await inject(mail, answer, mail.address("alice"), bob)
        reply = await sink.wait_for(lambda e: isinstance(e, events.Message))
    assert reply.thread == "xmpp-thread-7"


async def test_unknown_recipient_fails_with_smtp_reply(
    mail: MailServer, bridge: MailBridge
) -> None:
    alice = await register(bridge, mail, "alice")
    sink, store = RecordingSink(), MemoryStore()
    nobody = contact(mail.address("nobody"))
    async with running(bridge, alice, sink, store) as session:
        await session.send_message(nobody, "hello?", xmpp_id="f1")
        failed = await sink.wait_for(lambda e: isinstance(e, events.DeliveryFailed))
    assert failed.to == nobody and failed.xmpp_id == "f1"
    assert failed.condition == "item-not-found"
    assert failed.text.startswith("550")
    assert "User unknown" in failed.text
    assert sink.of(events.Delivered) == []
    assert await store.list_records("outbox") == []


async def test_temporary_failure_is_queued_and_retried(
    mail: MailServer, bridge: MailBridge
) -> None:
    """SMTP unreachable: the mail waits in the stored outbox and goes out on a later start."""
    await mail.add_user("bob", "bobpw")
    alice = await register(bridge, mail, "alice")
    bob = contact(mail.address("bob"))
    broken = unreachable_smtp(alice)
    sink, store = RecordingSink(), MemoryStore()
    async with running(bridge, broken, sink, store) as session:
        await session.send_message(bob, "eventually", xmpp_id="q1", origin=PHONE)
        [(_key, queued)] = await store.list_records("outbox")  # stored before any attempt
        await eventually(lambda: int(store.records[("outbox", _key)].get("attempts", 0)) >= 2)
        [(_key, queued)] = await store.list_records("outbox")
        assert "last_error" in queued
    assert sink.of(events.Delivered) == [] and sink.of(events.DeliveryFailed) == []
    [(_key, queued)] = await store.list_records("outbox")
    [waiting] = sink.of(events.Notice)  # once, not per attempt
    assert waiting.text.startswith(f"Your mail to {bob.legacy_id} (“(no subject)”) is not sent")
    assert "tries again for up to 4 days" in waiting.text

    second = RecordingSink()  # a new process: only the store knows who wrote the mail
    async with running(bridge, resumed(alice, sink), second, store):
        delivered = await second.wait_for(lambda e: isinstance(e, events.Delivered))
        sent = await second.wait_for(lambda e: isinstance(e, events.Notice))
    assert delivered == events.Delivered(bob, "q1", origin=PHONE)
    assert f"is sent now, after {queued['attempts'] + 1} attempts" in sent.text
    assert await store.list_records("outbox") == []
    [received] = await read_mailbox(mail, "bob")
    assert received.get_body().get_content().strip() == "eventually"


async def test_temporary_failure_gives_up_eventually(mail: MailServer) -> None:
    bridge = MailBridge(options_for(mail, retry_give_up=0.5))
    alice = await register(bridge, mail, "alice")
    broken = unreachable_smtp(alice)
    sink, store = RecordingSink(), MemoryStore()
    async with running(bridge, broken, sink, store) as session:
        await session.send_message(
            contact("bob@example.test"), "never", xmpp_id="g1", subject="Plans", origin=PHONE
        )
        failed = await sink.wait_for(lambda e: isinstance(e, events.DeliveryFailed))
        gave_up = await sink.wait_for(
            lambda e: isinstance(e, events.Notice) and "not sent:" in e.text
        )
    assert (failed.xmpp_id, failed.origin) == ("g1", PHONE)
    assert failed.text.startswith("gave up after")
    assert gave_up.text.startswith("Your mail to bob@example.test (“Plans”) was not sent: gave up")
    assert len(sink.of(events.Notice)) == 2  # it waits; it was given up
    assert await store.list_records("outbox") == []


async def test_copy_saved_to_sent(mail: MailServer) -> None:
    bridge = MailBridge(options_for(mail, save_sent=True))
    await mail.add_user("bob", "bobpw")
    alice = await register(bridge, mail, "alice")
    sink, store = RecordingSink(), MemoryStore()
    async with running(bridge, alice, sink, store) as session:
        await session.send_message(contact(mail.address("bob")), "kept", xmpp_id="c1")
        await sink.wait_for(lambda e: isinstance(e, events.Delivered))
    [copy] = await read_mailbox(mail, "alice", "Sent")
    assert copy.get_body().get_content().strip() == "kept"


async def test_old_threads_are_forgotten(mail: MailServer, bridge: MailBridge) -> None:
    alice = await register(bridge, mail, "alice")
    sink, store = RecordingSink(), MemoryStore()
    long_ago = time.time() - 365 * 86400
    await store.put_record("thread", "old", {"subject": "x", "references": [], "at": long_ago})
    await store.put_record("root", "oldroot", {"thread": "old", "at": long_ago})
    await store.put_record(
        "thread", "recent", {"subject": "y", "references": [], "at": time.time()}
    )
    async with running(bridge, alice, sink, store) as session:
        await session.outbox.forget_old_threads()  # also done when the session starts
    assert [key for key, _ in await store.list_records("thread")] == ["recent"]
    assert await store.list_records("root") == []
