"""XEP-0077 registration against the real server, as a client performs it."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from harness import FAKE_JID, FAKE_SECRET, stored_account
from registration_helpers import get_registration, register_and_subscribe, remove, submit
from slixmpp.exceptions import IqError

from component.devstack.prosody import Prosody

SECOND_JID = "second.localhost"
"""A second component of the fake bridge (`fake_bridge.SecondBridge`)."""
USERS = 20
"""Users registering at once in `test_registering_with_two_bridges_at_once_succeeds_on_both`."""


def form_fields(iq):
    return dict(iq["register"]["form"].get_fields(use_dict=True))


async def test_form_describes_every_field(gateway, client):
    reply = await get_registration(client, FAKE_JID)
    query = reply["register"]
    assert not query["registered"]
    assert query["instructions"] == "Enter your fake network login."
    fields = form_fields(reply)
    assert fields["username"]["required"]
    assert fields["password"]["type"] == "text-private"
    assert fields["port"]["value"] == "1234"
    assert [o["value"] for o in fields["mode"]["options"]] == ["fast", "slow"]
    # Old clients see the classic elements.
    assert {"username", "password"} <= query["fields"]


async def test_register_then_subscribe_and_show_values_without_secret(gateway, client):
    await submit(client, FAKE_JID, username="alice", password="s3cret", port="99")
    subscribe = await client.presence_from(FAKE_JID, "subscribe")
    assert subscribe["to"].bare == client.boundjid.bare

    reply = await get_registration(client, FAKE_JID)
    assert reply["register"]["registered"]
    fields = form_fields(reply)
    assert fields["username"]["value"] == "alice"
    assert fields["port"]["value"] == "99"
    assert not fields["password"]["value"]
    assert "s3cret" not in str(reply)

    account = await stored_account(gateway.config, client.boundjid.bare)
    assert account.settings["port"] == 99
    assert account.secrets == {"password": "s3cret"}


@pytest.mark.parametrize(
    ("values", "condition", "text"),
    [
        ({"password": "x"}, "not-acceptable", "User name is required"),
        ({"username": "a", "password": "x", "port": "eighty"}, "not-acceptable", "Port must be"),
        ({"username": "a", "password": "x", "mode": "warp"}, "not-acceptable", "'warp' is not one"),
        ({"username": "a", "password": "wrong"}, "not-acceptable", "bad password"),
    ],
)
async def test_bad_input_is_refused_with_a_reason(gateway, client, values, condition, text):
    with pytest.raises(IqError) as refused:
        await submit(client, FAKE_JID, **values)
    error = refused.value.iq["error"]
    assert error["condition"] == condition
    assert text in error["text"]
    assert await stored_account(gateway.config, client.boundjid.bare) is None


async def test_update_keeps_the_secret_when_left_empty(gateway, client):
    await submit(client, FAKE_JID, username="alice", password="s3cret")
    await submit(client, FAKE_JID, username="alice2", password="", mode="slow")
    account = await stored_account(gateway.config, client.boundjid.bare)
    assert account.settings["username"] == "alice2"
    assert account.settings["mode"] == "slow"
    assert account.secrets == {"password": "s3cret"}


async def test_legacy_fields_register_too(gateway, client):
    iq = client.make_iq_to(FAKE_JID, "set")
    iq["register"]["username"] = "old"
    iq["register"]["password"] = "client"
    await iq.send(timeout=10)
    account = await stored_account(gateway.config, client.boundjid.bare)
    assert account.settings["username"] == "old"


async def test_remove_deletes_everything_and_unsubscribes(gateway, fake, client):
    await register_and_subscribe(client, FAKE_JID, username="alice", password="s3cret")
    await fake.wait_for("start")  # the user is online, so the session started
    await remove(client, FAKE_JID)
    await client.presence_from(FAKE_JID, "unsubscribe")
    await client.presence_from(FAKE_JID, "unsubscribed")
    assert (await fake.wait_for("stop"))[1] == client.boundjid.bare
    assert await stored_account(gateway.config, client.boundjid.bare) is None
    assert not (await get_registration(client, FAKE_JID))["register"]["registered"]
    with pytest.raises(IqError) as again:
        await remove(client, FAKE_JID)
    assert again.value.iq["error"]["condition"] == "item-not-found"


async def test_domain_not_allowed(own_prosody, gateway_factory, client_factory):
    await gateway_factory(own_prosody, allowed_domains=["example.org"])
    client = await client_factory(own_prosody)
    for attempt in (get_registration(client, FAKE_JID), submit(client, FAKE_JID, username="a")):
        with pytest.raises(IqError) as refused:
            await attempt
        assert refused.value.iq["error"]["condition"] == "not-allowed"
        assert "localhost" in refused.value.iq["error"]["text"]


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
async def test_registration_survives_a_gateway_restart(
    own_prosody, gateway_factory, client_factory, how
):
    gateway = await gateway_factory(own_prosody)
    client = await client_factory(own_prosody)
    await submit(client, FAKE_JID, username="alice", password="s3cret")
    if how == "SIGTERM":
        assert await gateway.stop() == 0
    else:
        await gateway.kill()  # no chance to flush anything: the registration was committed
    await gateway.start()  # same config file and database
    reply = await get_registration(client, FAKE_JID)
    assert reply["register"]["registered"]
    assert form_fields(reply)["username"]["value"] == "alice"


async def test_registration_attempts_are_rate_limited(own_prosody, gateway_factory, client_factory):
    """Each attempt is a real legacy login: a user may not guess passwords in a loop."""
    await gateway_factory(own_prosody, registration_limit={"per_user": 2, "total": 100})
    client, other = await client_factory(own_prosody), await client_factory(own_prosody)
    for _ in range(2):
        with pytest.raises(IqError) as refused:
            await submit(client, FAKE_JID, username="alice", password="wrong")
        assert refused.value.iq["error"]["condition"] == "not-acceptable"  # really checked
    with pytest.raises(IqError) as limited:
        await submit(client, FAKE_JID, username="alice", password="right")
    error = limited.value.iq["error"]
    assert error["condition"] == "resource-constraint"
    assert "too many registration attempts: try again in" in error["text"]
    assert not (await get_registration(client, FAKE_JID))["register"]["registered"]
    await submit(other, FAKE_JID, username="bob", password="right")  # others still may


@pytest.fixture
async def two_gateways_prosody() -> AsyncIterator[Prosody]:
    """A Prosody with the fake bridge's component and `SECOND_JID`'s."""
    async with Prosody(components={FAKE_JID: FAKE_SECRET, SECOND_JID: FAKE_SECRET}) as server:
        yield server


async def test_registering_with_two_bridges_at_once_succeeds_on_both(
    two_gateways_prosody, gateway_factory, client_factory
):
    """Users who register with two bridges of one gateway at the same moment (a client
    that signs up everywhere on first start) get both accounts, and no error.

    Both registrations found no user row and both added one: the second broke its
    unique key and was answered internal-server-error.
    """
    sections = {
        "fake": {"jid": FAKE_JID, "secret": FAKE_SECRET, "plugin": "fake_bridge:FakeBridge"},
        "second": {"jid": SECOND_JID, "secret": FAKE_SECRET, "plugin": "fake_bridge:SecondBridge"},
    }
    gateway = await gateway_factory(two_gateways_prosody, bridges=sections)
    clients = [await client_factory(two_gateways_prosody) for _ in range(USERS)]
    replies = await asyncio.gather(
        *(
            submit(client, jid, username=f"u{i}", password="s3cret")
            for i, client in enumerate(clients)
            for jid in (FAKE_JID, SECOND_JID)
        ),
        return_exceptions=True,
    )
    assert [r for r in replies if isinstance(r, BaseException)] == []
    for i, client in enumerate(clients):
        for bridge in ("fake", "second"):
            account = await stored_account(gateway.config, client.boundjid.bare, bridge)
            assert account is not None
            assert account.settings["username"] == f"u{i}"
