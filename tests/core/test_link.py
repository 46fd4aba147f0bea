"""The component's connection to the XMPP server: restarts, outages, a wrong secret."""

from datetime import datetime

from harness import FAKE_JID, PASSWORD
from registration_helpers import register_and_subscribe
from xmpp_client import TestClient

LOST = "lost the connection to the XMPP server"


async def test_reconnects_after_the_server_restarts(
    own_prosody, gateway_factory, client_factory, fake
):
    gateway = await gateway_factory(own_prosody)
    client = await client_factory(own_prosody)
    await register_and_subscribe(client, FAKE_JID, username="alice", password="pw")
    await fake.wait_for("start")

    mark = gateway.log_mark()
    await own_prosody.stop()
    await gateway.wait_for_log(LOST, since=mark)
    await own_prosody.start()
    await gateway.wait_connected(since=mark)

    # The user logs in again: the gateway learns it from the server and serves them.
    again = TestClient(client.boundjid.bare + "/again", PASSWORD)
    await again.login(own_prosody.host, own_prosody.c2s_port)
    await again.plugin["xep_0199"].ping(FAKE_JID, timeout=5)
    again.send_message(mto=f"bob@{FAKE_JID}", mbody="after restart", mtype="chat")
    assert (await again.message_from(f"bob@{FAKE_JID}"))["body"] == "echo: after restart"
    await again.close()


async def test_keeps_retrying_while_the_server_is_down(own_prosody, gateway_factory):
    await own_prosody.stop()
    gateway = await gateway_factory(own_prosody, wait_connected=False)
    await gateway.wait_for_log("cannot connect.*retrying in")
    await gateway.wait_for_log("attempt 2, retrying in")
    await own_prosody.start()
    await gateway.wait_connected(since=0)


def logged_at(line: str) -> datetime:
    """The time of a gateway log line (`2026-01-01 12:00:00,123 WARNING ...`)."""
    return datetime.strptime(" ".join(line.split()[:2]), "%Y-%m-%d %H:%M:%S,%f")


async def test_wrong_secret_names_the_option_and_is_retried_slowly(own_prosody, gateway_factory):
    """What `xmpp-gateway run` prints (its log) for a wrong component secret: the
    option to check and the next try, never the secret; tries are spaced, not a loop."""
    bridges = {
        "fake": {"jid": FAKE_JID, "secret": "not-the-secret", "plugin": "fake_bridge:FakeBridge"}
    }
    reconnect = {"initial_delay": 0.01, "max_delay": 0.02, "auth_failure_delay": 0.3}
    gateway = await gateway_factory(
        own_prosody, wait_connected=False, bridges=bridges, reconnect=reconnect
    )
    try:
        first = await gateway.wait_for_log("server refused")
        second = await gateway.wait_for_log("server refused.*attempt 2")
    finally:
        assert await gateway.stop() == 0
    assert "check bridges.fake.secret" in first
    assert "retrying in 0.3 s" in first
    assert (logged_at(second) - logged_at(first)).total_seconds() >= 0.25  # not a tight loop
    printed = gateway.log_text()
    assert "connected to the XMPP server" not in printed
    assert "not-the-secret" not in printed


async def test_stops_while_the_server_is_down_with_an_event_waiting(
    own_prosody, gateway_factory, client_factory, fake
):
    """Legacy events wait for the link, but not past shutdown: the event is not lost
    silently either, its sender learns it was not delivered (mail then keeps it)."""
    gateway = await gateway_factory(own_prosody)
    client = await client_factory(own_prosody)
    user = client.boundjid.bare
    await register_and_subscribe(client, FAKE_JID, username="alice", password="pw")
    await fake.wait_for("start")

    mark = gateway.log_mark()
    await own_prosody.stop()
    await gateway.wait_for_log(LOST, since=mark)
    fake.deliver(user, "bob", "hi")
    await fake.wait_for("delivering")  # and held: the link is down

    assert await gateway.stop(timeout=10) == 0, "the gateway hangs in shutdown waiting for the link"
    _, undelivered_for, reason = await fake.wait_for("undelivered")
    assert undelivered_for == user and "XMPP server is unreachable" in reason
