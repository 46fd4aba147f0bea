"""The same gateway against ejabberd, the other server operators run (XEP-0114 there too)."""

from collections.abc import AsyncIterator

import pytest
from harness import FAKE_JID, FAKE_SECRET
from registration_helpers import get_registration, register_and_subscribe

from component.devstack.ejabberd import Ejabberd


@pytest.fixture(scope="module")
async def ejabberd() -> AsyncIterator[Ejabberd]:
    async with Ejabberd(components={FAKE_JID: FAKE_SECRET}) as server:
        yield server


async def test_register_chat_and_unregistered_error_on_ejabberd(
    ejabberd, gateway_factory, client_factory, fake
):
    await gateway_factory(ejabberd)
    client = await client_factory(ejabberd)
    info = await client.plugin["xep_0030"].get_info(jid=FAKE_JID, timeout=5)
    assert "jabber:iq:register" in info["disco_info"]["features"]

    stranger = await client_factory(ejabberd)
    stranger.send_message(mto=f"bob@{FAKE_JID}", mbody="hi", mtype="chat")
    error = await stranger.wait_for(lambda s: s["type"] == "error")
    assert error["error"]["condition"] == "registration-required"

    await register_and_subscribe(client, FAKE_JID, username="alice", password="pw")
    await fake.wait_for("start")
    client.send_message(mto=f"bob@{FAKE_JID}", mbody="over ejabberd", mtype="chat")
    assert (await client.message_from(f"bob@{FAKE_JID}"))["body"] == "echo: over ejabberd"
    assert (await get_registration(client, FAKE_JID))["register"]["registered"]


async def test_a_wrong_secret_on_ejabberd_names_the_option(ejabberd, gateway_factory):
    """ejabberd refuses a wrong secret as Prosody does (not-authorized): the log says
    which option to check and when the next try comes, never the secret."""
    fake = {"jid": FAKE_JID, "secret": "not-the-secret", "plugin": "fake_bridge:FakeBridge"}
    reconnect = {"initial_delay": 0.1, "max_delay": 0.5, "auth_failure_delay": 0.3}
    gateway = await gateway_factory(
        ejabberd, wait_connected=False, bridges={"fake": fake}, reconnect=reconnect
    )
    refused = await gateway.wait_for_log("server refused")
    assert "check bridges.fake.secret" in refused and "retrying in 0.3 s" in refused
    assert "not-the-secret" not in gateway.log_text()


class TypeWithoutComponentNumber(Ejabberd):
    """The `domain_balancing` ejabberd 23.01 crashes on (the devstack refuses to write
    it, so it is patched in here)."""

    def render_config(self) -> str:
        broken = f'domain_balancing:\n  "{FAKE_JID}": {{type: bare_source}}\nlisten:'
        return super().render_config().replace("listen:", broken, 1)


async def test_the_23_01_handshake_crash_is_explained_in_the_log(gateway_factory):
    async with TypeWithoutComponentNumber(components={FAKE_JID: FAKE_SECRET}) as crashing:
        gateway = await gateway_factory(crashing, wait_connected=False)
        line = await gateway.wait_for_log("closed the stream during the handshake", timeout=20)
        assert "domain_balancing type without component_number" in line
        assert "retrying" in line
        await gateway.stop()


async def test_ejabberd_routes_the_write_windows_markers_back(
    ejabberd, gateway_factory, client_factory, fake
):
    """A window of a few stanzas (component.fair_writer) needs ejabberd to route a
    marker back every stanza or two: 60 echoes all arrive, in order, and the writer
    never gives up on its markers (which it would after 5 s without one)."""
    gateway = await gateway_factory(ejabberd, write_window=512)
    client = await client_factory(ejabberd)
    await register_and_subscribe(client, FAKE_JID, username="alice", password="pw")
    await fake.wait_for("start")
    for n in range(60):
        client.send_message(mto=f"bob@{FAKE_JID}", mbody=f"m{n}", mtype="chat")
    echoes = [(await client.message_from(f"bob@{FAKE_JID}"))["body"] for _ in range(60)]
    assert echoes == [f"echo: m{n}" for n in range(60)]
    assert "did not route a window marker back" not in gateway.log_text()
