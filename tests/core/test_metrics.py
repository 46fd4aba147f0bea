"""The operator's /metrics endpoint reflects what the gateway does."""

import asyncio
import urllib.request

from harness import FAKE_JID
from registration_helpers import register_and_subscribe

from component.devstack.process import free_port


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in text.splitlines())
        if name.startswith("xmpp_gateway_")
    }


async def test_metrics_count_registrations_sessions_and_errors(
    own_prosody, gateway_factory, client_factory
):
    port = free_port()
    await gateway_factory(own_prosody, metrics={"port": port})
    client = await client_factory(own_prosody)
    await register_and_subscribe(client, FAKE_JID, username="alice", password="pw")
    client.send_message(mto=f"bad@{FAKE_JID}", mbody="x", mtype="chat")
    await client.wait_for(lambda s: s["type"] == "error")
    values = await asyncio.to_thread(scrape, port)
    assert values['xmpp_gateway_link_up{bridge="fake"}'] == 1
    assert values['xmpp_gateway_registrations_total{bridge="fake",outcome="new"}'] >= 1
    assert values['xmpp_gateway_sessions{bridge="fake"}'] >= 1
    assert values['xmpp_gateway_stanza_errors_total{bridge="fake",condition="jid-malformed"}'] >= 1
    assert values['xmpp_gateway_stanzas_received_total{bridge="fake",kind="register"}'] >= 1
