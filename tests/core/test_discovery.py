"""XEP-0030, XEP-0092, XEP-0199 and jabber:iq:gateway as a client sees them."""

import pytest
from harness import FAKE_JID
from slixmpp.exceptions import IqError


async def test_component_identity_and_features(gateway, client):
    info = (await client.plugin["xep_0030"].get_info(jid=FAKE_JID, timeout=5))["disco_info"]
    assert [(c, t, name) for c, t, _lang, name in info["identities"]] == [
        ("gateway", "fake", "Fake network")
    ]
    for feature in (
        "http://jabber.org/protocol/disco#info",
        "jabber:iq:register",
        "jabber:iq:gateway",
        "urn:xmpp:ping",
        "jabber:iq:version",
        "jid\\20escaping",
    ):
        assert feature in info["features"]
    items = await client.plugin["xep_0030"].get_items(jid=FAKE_JID, timeout=5)
    assert not items["disco_items"]["items"]


async def test_contact_jid_is_a_client(gateway, client):
    info = await client.plugin["xep_0030"].get_info(jid=f"bob@{FAKE_JID}", timeout=5)
    assert [identity[:2] for identity in info["disco_info"]["identities"]] == [("client", "pc")]


async def test_malformed_address_in_disco(gateway, client):
    with pytest.raises(IqError) as refused:
        await client.plugin["xep_0030"].get_info(jid=f"bad-one@{FAKE_JID}", timeout=5)
    assert refused.value.iq["error"]["condition"] == "jid-malformed"


async def test_version(gateway, client):
    reply = await client.plugin["xep_0092"].get_version(FAKE_JID, timeout=5)
    assert reply["software_version"]["name"] == "xmpp-gateway"
    assert reply["software_version"]["version"]


async def test_gateway_translates_legacy_addresses(gateway, client):
    ask_prompt = client.make_iq_to(FAKE_JID, "get")
    ask_prompt.enable("gateway")
    prompt = await ask_prompt.send(timeout=5)
    assert prompt["gateway"]["prompt"]
    ask = client.make_iq_to(FAKE_JID, "set")
    ask["gateway"]["prompt"] = "bob smith@example.org"
    reply = await ask.send(timeout=5)
    assert reply["gateway"]["jid"] == f"bob\\20smith\\40example.org@{FAKE_JID}"
