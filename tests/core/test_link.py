"""The component's connection to the XMPP server: restarts, outages, a wrong secret."""

import asyncio
import logging

from harness import FAKE_JID, PASSWORD, gateway_config, start_app
from registration_helpers import register_and_subscribe
from xmpp_client import TestClient, eventually

from bridges import events
from bridges.address import Address, AddressKind


async def test_reconnects_after_the_server_restarts(own_prosody, gateway_factory, client_factory):
    app = await gateway_factory(own_prosody)
    gateway = app.gateways[0]
    client = await client_factory(own_prosody)
    await register_and_subscribe(client, FAKE_JID, username="alice", password="pw")
    await gateway.bridge.wait_for("start")

    await own_prosody.stop()
    await eventually(lambda: not gateway.link_up.is_set())
    await own_prosody.start()
    await asyncio.wait_for(gateway.link_up.wait(), 15)

    # The user logs in again: the gateway learns it from the server and serves them.
    again = TestClient(client.boundjid.bare + "/again", PASSWORD)
    await again.login(own_prosody.host, own_prosody.c2s_port)
    await again.plugin["xep_0199"].ping(FAKE_JID, timeout=5)
    again.send_message(mto=f"bob@{FAKE_JID}", mbody="after restart", mtype="chat")
    assert (await again.message_from(f"bob@{FAKE_JID}"))["body"] == "echo: after restart"
    await again.close()


async def test_keeps_retrying_while_the_server_is_down(own_prosody, tmp_path, caplog):
    await own_prosody.stop()
    caplog.set_level(logging.WARNING, logger="component.link")
    app = await start_app(gateway_config(own_prosody, tmp_path / "down.db"), tmp_path)
    try:
        await eventually(lambda: sum("retrying in" in r.message for r in caplog.records) >= 2)
        assert "cannot connect" in caplog.text
        await own_prosody.start()
        await asyncio.wait_for(app.gateways[0].link_up.wait(), 15)
    finally:
        await app.stop()


async def test_wrong_secret_is_reported_and_retried_slowly(prosody, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="component.link")
    config = gateway_config(prosody, tmp_path / "g.db")
    config["bridges"]["fake"]["secret"] = "not-the-secret"
    config["reconnect"] = {"initial_delay": 0.01, "max_delay": 0.02, "auth_failure_delay": 0.3}
    app = await start_app(config, tmp_path)
    try:
        await eventually(lambda: sum("server refused" in r.message for r in caplog.records) >= 2)
        refusals = [r for r in caplog.records if "server refused" in r.message]
        assert "retrying in 0.3 s" in refusals[0].message
        assert refusals[1].created - refusals[0].created >= 0.25  # not a tight loop
        assert not app.gateways[0].link_up.is_set()
    finally:
        await app.stop()


async def test_stops_while_the_server_is_down_with_an_event_waiting(
    own_prosody, gateway_factory, client_factory
):
    """Legacy events wait for the link, but not past shutdown: the event is not lost
    silently either, its sender learns it was not delivered (mail then keeps it)."""
    app = await gateway_factory(own_prosody)
    gateway = app.gateways[0]
    client = await client_factory(own_prosody)
    await register_and_subscribe(client, FAKE_JID, username="alice", password="pw")
    await gateway.bridge.wait_for("start")
    session = gateway.sessions.get(client.boundjid.bare)
    assert session is not None

    await own_prosody.stop()
    await eventually(lambda: not gateway.link_up.is_set())
    bob = Address(AddressKind.CONTACT, "bob")
    waiting = asyncio.create_task(session.sink.deliver(events.Message(sender=bob, text="hi")))

    stopping = asyncio.create_task(app.stop())
    done, _ = await asyncio.wait([stopping], timeout=10)
    assert stopping in done, "the gateway hangs in shutdown waiting for the link"
    assert waiting.done() and isinstance(waiting.exception(), ConnectionError)
