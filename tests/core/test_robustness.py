"""One user's bad data never takes the component down."""

import pytest
from harness import FAKE_JID
from registration_helpers import register_and_subscribe, submit
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET


async def test_registration_set_without_any_field(gateway, client):
    iq = client.make_iq_to(FAKE_JID, "set")
    iq.enable("register")
    with pytest.raises(IqError) as refused:
        await iq.send(timeout=5)
    assert refused.value.iq["error"]["condition"] == "not-acceptable"
    assert "User name is required" in refused.value.iq["error"]["text"]


async def test_form_with_garbage_fields(gateway, client):
    iq = client.make_iq_to(FAKE_JID, "set")
    form = iq["register"]["form"]
    form["type"] = "submit"
    form.xml.append(ET.fromstring("<field xmlns='jabber:x:data'><value>no var</value></field>"))
    form.add_field(var="username", value="a")
    form.add_field(var="password", value="p")
    form.add_field(var="verbose", value="perhaps")
    with pytest.raises(IqError) as refused:
        await iq.send(timeout=5)
    assert refused.value.iq["error"]["condition"] == "not-acceptable"
    assert "Verbose must be true or false" in refused.value.iq["error"]["text"]


async def test_odd_presence_and_iq_payloads(gateway, client):
    await register_and_subscribe(client, FAKE_JID, username="alice", password="pw")
    odd = client.make_presence(pto=FAKE_JID)
    odd.xml.append(ET.fromstring("<priority xmlns='jabber:client'>high</priority>"))
    odd.send()
    for itype in ("get", "set"):
        iq = client.make_iq_to(f"bob@{FAKE_JID}", itype)
        iq.xml.append(ET.fromstring("<query xmlns='urn:example:unknown'/>"))
        with pytest.raises(IqError) as refused:
            await iq.send(timeout=5)
        assert refused.value.iq["error"]["condition"] in (
            "service-unavailable",
            "feature-not-implemented",
        )
    await client.plugin["xep_0199"].ping(FAKE_JID, timeout=5)
    await submit(client, FAKE_JID, username="alice", password="pw")  # still serving


async def test_very_long_body_is_carried(gateway, client):
    await register_and_subscribe(client, FAKE_JID, username="alice", password="pw")
    body = "x" * 100_000
    client.send_message(mto=f"bob@{FAKE_JID}", mbody=body, mtype="chat")
    echo = await client.message_from(f"bob@{FAKE_JID}")
    assert echo["body"] == f"echo: {body}"
