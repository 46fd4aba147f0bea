"""Characters XML forbids, sent by a legacy network, never cost anyone the stream.

Before the gateway cleaned outgoing stanzas, one BEL in a legacy message made Prosody
answer `not-well-formed` and close the component stream, for every user at once.
"""

from harness import FAKE_JID, FAKE_SECRET, PASSWORD
from registration_helpers import register_and_subscribe

BOB = f"bob@{FAKE_JID}"


async def test_controls_from_the_legacy_side_arrive_replaced_and_the_link_stays(
    own_prosody, gateway_factory, client_factory
):
    prosody = own_prosody  # a gateway of its own config: not on the shared server
    hostile = "echo\x07\x1b\x00"
    bridges = {
        "fake": {
            "jid": FAKE_JID, "secret": FAKE_SECRET, "plugin": "fake_bridge:FakeBridge",
            "greeting": hostile,
        }
    }  # fmt: skip
    await gateway_factory(prosody, bridges=bridges)
    client, bystander = await client_factory(prosody), await client_factory(prosody)
    for user in (client, bystander):
        await register_and_subscribe(user, FAKE_JID, username="u", password=PASSWORD)

    client.send_message(mto=BOB, mbody="ding", mtype="chat")
    reply = await client.message_from(BOB)
    assert reply["body"] == "echo\ufffd\ufffd\ufffd: ding"
    # The stream survived: the next message, and another user's, still go both ways.
    for user, text in ((client, "again"), (bystander, "me too")):
        user.send_message(mto=BOB, mbody=text, mtype="chat")
        assert (await user.message_from(BOB))["body"] == f"echo\ufffd\ufffd\ufffd: {text}"
