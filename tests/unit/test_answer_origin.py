"""Where receipts and errors for a message go when only its stored `Origin` knows.

After a restart the component has forgotten who sent a mail still in the outbox; the
bridge hands back what it stored. A receipt goes to that resource while it is
available, else to the bare JID (which the server hands to the user's resources or to
offline storage); an error always to the resource (servers drop errors to a bare JID).
"""

from __future__ import annotations

from slixmpp import JID

from bridges import events
from bridges.address import Address, AddressKind
from component.outbound import RECEIPTS_NS, Outbound

USER = "alice@localhost"
PHONE = events.Origin(f"{USER}/phone", receipt=True)
BOB = Address(AddressKind.CONTACT, "bob")


async def answers(event: events.Event, online: set[str]) -> list:
    sent: list = []
    outbound = Outbound(
        "mail.localhost",
        lambda address: address.legacy_id,
        sent.append,
        available=lambda jid: jid.full in online,
    )
    await outbound.deliver(USER, event)
    return sent


async def test_a_receipt_goes_to_the_stored_resource_while_it_is_there():
    [receipt] = await answers(events.Delivered(BOB, "m1", origin=PHONE), {PHONE.jid})
    assert receipt["to"] == JID(PHONE.jid)
    assert receipt.xml.find(f"{{{RECEIPTS_NS}}}received").get("id") == "m1"


async def test_a_receipt_goes_to_the_bare_jid_once_the_resource_is_gone():
    [receipt] = await answers(events.Delivered(BOB, "m1", origin=PHONE), set())
    assert receipt["to"] == JID(USER)


async def test_no_receipt_unless_one_was_asked_for():
    quiet = events.Origin(PHONE.jid, receipt=False)
    assert await answers(events.Delivered(BOB, "m1", origin=quiet), {PHONE.jid}) == []


async def test_an_error_goes_to_the_resource_even_when_it_is_gone():
    failed = events.DeliveryFailed(BOB, "m1", "item-not-found", "550 no such user", PHONE)
    [error] = await answers(failed, set())
    assert (error["to"], error["type"], error["id"]) == (JID(PHONE.jid), "error", "m1")


async def test_an_origin_naming_another_user_is_ignored():
    stranger = events.Origin("mallory@localhost/pc", receipt=True)
    assert await answers(events.Delivered(BOB, "m1", origin=stranger), {stranger.jid}) == []
