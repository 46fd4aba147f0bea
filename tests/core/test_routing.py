"""Messages and presence between a real client and the fake network, through Prosody."""

from harness import FAKE_JID, PASSWORD
from registration_helpers import register_and_subscribe, submit
from slixmpp import Message
from slixmpp.xmlstream import ET
from xmpp_client import TestClient

BOB = f"bob@{FAKE_JID}"


def is_error_from(jid, condition):
    def match(stanza):
        return (
            stanza["type"] == "error"
            and stanza["from"].bare == jid
            and stanza["error"]["condition"] == condition
        )

    return match


async def test_unregistered_user_gets_registration_required(gateway, client):
    client.send_message(mto=BOB, mbody="hello?", mtype="chat")
    error = await client.wait_for(is_error_from(BOB, "registration-required"))
    assert isinstance(error, Message)
    client.send_presence(pto=BOB)
    await client.wait_for(is_error_from(BOB, "registration-required"))
    # A subscription request is declined rather than left pending.
    client.send_presence(pto=FAKE_JID, ptype="subscribe")
    await client.presence_from(FAKE_JID, "unsubscribed")


async def test_message_round_trip_with_nick_and_thread(gateway, fake, client):
    await register_and_subscribe(client, FAKE_JID, username="alice", password="pw")
    await fake.wait_for("start")
    client.send_message(mto=BOB, mbody="hi bob", mtype="chat")
    client.stanzas.clear()
    _, user, (to, text) = await fake.wait_for("message")
    assert (user, to, text) == (client.boundjid.bare, "bob", "hi bob")
    reply = await client.message_from(BOB)
    assert reply["body"] == "echo: hi bob"
    assert reply["type"] == "chat"
    assert reply.xml.find("{http://jabber.org/protocol/nick}nick").text == "Echo"


async def test_messages_keep_their_order(gateway, fake, client):
    await register_and_subscribe(client, FAKE_JID, username="alice", password="pw")
    for n in range(50):
        client.send_message(mto=BOB, mbody=f"line {n}", mtype="chat")
    sent = [(await fake.wait_for("message"))[2][1] for _ in range(50)]
    assert sent == [f"line {n}" for n in range(50)]


async def test_bad_addresses_get_errors_and_the_component_stays_up(gateway, client):
    await register_and_subscribe(client, FAKE_JID, username="alice", password="pw")
    client.send_message(mto=f"bad-address@{FAKE_JID}", mbody="x", mtype="chat")
    await client.wait_for(is_error_from(f"bad-address@{FAKE_JID}", "jid-malformed"))
    client.send_message(mto=f"fail@{FAKE_JID}", mbody="x", mtype="chat")
    await client.wait_for(is_error_from(f"fail@{FAKE_JID}", "item-not-found"))
    # An error stanza sent to the gateway is not answered (no error loops) ...
    client.send_message(mto=BOB, mtype="error", mbody="oops")
    # ... and the component still works afterwards.
    await client.plugin["xep_0199"].ping(FAKE_JID, timeout=5)


async def test_presence_drives_the_session(gateway, fake, prosody, client):
    user = client.boundjid.bare
    await register_and_subscribe(client, FAKE_JID, username="alice", password="pw")
    _, started_for, secrets = await fake.wait_for("start")
    assert (started_for, secrets) == (user, {"password": "pw"})
    second = TestClient(f"{user}/phone", PASSWORD)
    await second.login(prosody.host, prosody.c2s_port)
    await second.presence_from(FAKE_JID)  # the gateway shows itself online to the new resource
    mark = gateway.log_mark()
    await client.close()
    # One resource is left: the session stays and serves it. The user's stanzas are
    # handled in order, so the echo comes after the first resource's unavailable.
    second.send_message(mto=BOB, mbody="still here", mtype="chat")
    assert (await second.message_from(BOB))["body"] == "echo: still here"
    assert "stop" not in fake.kinds()
    assert f"{user}: offline" not in gateway.log_text(mark)
    await second.close()
    assert (await fake.wait_for("stop"))[1] == user
    await gateway.wait_for_log(f"{user}: offline", since=mark)
    # The session is gone: the next presence starts a fresh one.
    third = TestClient(f"{user}/tablet", PASSWORD)
    await third.login(prosody.host, prosody.c2s_port)
    assert (await fake.wait_for("start"))[1] == user
    await third.close()


async def test_gateway_answers_probes_after_registration(gateway, client):
    await register_and_subscribe(client, FAKE_JID, username="alice", password="pw")
    client.send_presence(pto=FAKE_JID, ptype="probe")
    presence = await client.presence_from(FAKE_JID)
    assert presence["type"] in ("available", "")


async def test_receipts_only_when_asked_for(gateway, client):
    await register_and_subscribe(client, FAKE_JID, username="alice", password="pw")
    plain = client.make_message(mto=BOB, mbody="no receipt please", mtype="chat")
    plain["id"] = "plain-1"
    plain.send()
    await client.message_from(BOB)  # the echo
    asking = client.make_message(mto=BOB, mbody="receipt please", mtype="chat")
    asking["id"] = "asking-1"
    asking.xml.append(ET.Element("{urn:xmpp:receipts}request"))
    asking.send()

    def is_receipt(stanza):
        return stanza.xml.find("{urn:xmpp:receipts}received") is not None

    receipt = await client.wait_for(is_receipt)
    assert receipt.xml.find("{urn:xmpp:receipts}received").get("id") == "asking-1"
    assert receipt["to"] == client.boundjid  # to the resource that asked
    assert not [s for s in client.stanzas if is_receipt(s)]


async def test_the_shown_presence_reaches_the_session_and_a_restarted_one(gateway, fake, client):
    await register_and_subscribe(client, FAKE_JID, username="alice", password="pw")
    assert (await fake.wait_for("presence"))[2] == ("", "")
    client.send_presence(pshow="away", pstatus="at lunch")
    assert (await fake.wait_for("presence"))[2] == ("away", "at lunch")

    await submit(client, FAKE_JID, username="alice", password="pw", mode="slow")
    await fake.wait_for("stop")
    await fake.wait_for("start")  # new settings, new session: told again
    assert (await fake.wait_for("presence"))[2] == ("away", "at lunch")
