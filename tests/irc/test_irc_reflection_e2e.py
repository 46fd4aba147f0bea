"""A room message is shown as sent (reflected) only once it is on IRC; a standalone
gateway stopped with lines still queued answers each of those with a message error
carrying its id (issue 8, item 3). Seen from a slixmpp client on Prosody."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from irc_helpers import IrcPeer
from slixmpp import Message
from slixmpp.xmlstream import ET
from test_irc_e2e import IRC_JID, IRC_SECRET, ROOM, irc_section, joined_user

from bridges.irc.devstack import NgIrcd
from component.devstack.gateway import GatewayProcess
from component.devstack.prosody import Prosody
from component.muc import SID_NS
from component.outbound import RECEIPTS_NS

RATE = 2.0
"""The gateway's lines per second (config.example.yaml's flood_rate), burst 1."""


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Prosody, NgIrcd]]:
    async with (
        Prosody(components={IRC_JID: IRC_SECRET}) as prosody,
        NgIrcd(flood_throttling=False) as ngircd,
    ):
        yield prosody, ngircd


@pytest.fixture(params=[10.0, 0.5], ids=["shutdown_timeout=10", "shutdown_timeout=0.5"])
async def slow_gateway(servers, gateway_factory, request) -> GatewayProcess:
    """A gateway pacing IRC lines; a stop may be bounded below its 2 s wait for the
    send queue (the lines left are answered all the same)."""
    prosody, ngircd = servers
    bridges = {
        "irc": {
            "jid": IRC_JID,
            "secret": IRC_SECRET,
            "port": ngircd.port,
            "tls": False,
            "flood_rate": RATE,
            "flood_burst": 1,
            "allowed_servers": ["127.0.0.1"],
        }
    }
    return await gateway_factory(prosody, bridges=bridges, shutdown_timeout=request.param)


@pytest.fixture
async def bob(servers) -> AsyncIterator[IrcPeer]:
    _prosody, ngircd = servers
    peer = await IrcPeer.connect(ngircd.host, ngircd.port, "bob")
    await peer.join("#room")
    yield peer
    await peer.close()


def reflection(xmpp_id: str):
    return lambda s: (
        isinstance(s, Message)
        and s["type"] == "groupchat"
        and s["id"] == xmpp_id
        and s["from"].full == f"{ROOM}/fred"
    )


BOB = f"bob%127.0.0.1@{IRC_JID}"


def receipt(xmpp_id: str):
    def matches(stanza) -> bool:
        if not isinstance(stanza, Message) or stanza["from"].bare != BOB:
            return False
        found = stanza.xml.find(f"{{{RECEIPTS_NS}}}received")
        return found is not None and found.get("id") == xmpp_id

    return matches


def send_lines(client, count: int) -> list[str]:
    ids = [f"line-{n}" for n in range(count)]
    for n, xmpp_id in enumerate(ids):
        message = client.Message()
        message["to"], message["type"] = ROOM, "groupchat"
        message["body"], message["id"] = f"line {n}", xmpp_id
        message.send()
    return ids


def send_with_origin(client, body: str, xmpp_id: str) -> int:
    """A room message as common clients send it, its XEP-0359 origin-id `origin-<id>`;
    the client's mark from before it (for `wait_for(since=...)`)."""
    mark = client.mark()
    message = client.Message()
    message["to"], message["type"] = ROOM, "groupchat"
    message["body"], message["id"] = body, xmpp_id
    ET.SubElement(message.xml, f"{{{SID_NS}}}origin-id", {"id": f"origin-{xmpp_id}"})
    message.send()
    return mark


async def test_reflections_come_as_the_lines_are_written(servers, slow_gateway, bob):
    prosody, _ngircd = servers
    client = await joined_user(prosody, "fred")
    started = time.monotonic()

    ids = send_lines(client, 6)

    seen_by_bob = []
    for xmpp_id in ids:
        await client.wait_for(reflection(xmpp_id), timeout=15)
        seen_by_bob.append(len(bob.texts("pubmsg", "fred")))
    elapsed = time.monotonic() - started

    # A reflection means the line was written: bob has all before it (the last one
    # may still be on its way to him).
    assert all(seen >= n for n, seen in enumerate(seen_by_bob)), seen_by_bob
    assert elapsed >= (len(ids) - 2) / RATE * 0.8  # paced like the lines, not at once
    await bob.wait_until(lambda: len(bob.texts("pubmsg", "fred")) == len(ids))
    assert bob.texts("pubmsg", "fred") == [f"line {n}" for n in range(6)]
    await client.close()


async def test_sigterm_answers_each_unsent_line_with_an_error_and_no_reflection(
    servers, slow_gateway, bob
):
    prosody, _ngircd = servers
    client = await joined_user(prosody, "fred")
    ids = send_lines(client, 12)
    await client.wait_for(reflection(ids[0]), timeout=15)

    assert await slow_gateway.stop() == 0  # SIGTERM

    def about(xmpp_id: str):
        return lambda s: (
            isinstance(s, Message) and s["id"] == xmpp_id and s["type"] in ("groupchat", "error")
        )

    answers = [await client.wait_for(about(i), timeout=10) for i in ids[1:]]
    assert not [s for s in client.stanzas if any(about(i)(s) for i in ids)]  # none twice
    kinds = ["groupchat"] + [s["type"] for s in answers]
    reflected = kinds.count("groupchat")
    assert kinds == ["groupchat"] * reflected + ["error"] * (len(ids) - reflected)
    assert reflected < len(ids), "the gateway had lines queued when it stopped"
    errors = [s for s in answers if s["type"] == "error"]
    assert all(e["error"]["condition"] == "remote-server-timeout" for e in errors)
    assert all(str(e["from"]) == ROOM for e in errors)
    await bob.wait_until(lambda: any(e.type == "quit" for e in bob.items), timeout=10)
    assert bob.texts("pubmsg", "fred") == [f"line {n}" for n in range(reflected)]
    await client.close()


async def test_receipts_for_private_messages_come_as_the_lines_are_written(
    servers, slow_gateway, bob
):
    prosody, _ngircd = servers
    client = await joined_user(prosody, "fred")  # connected, so the pace starts now
    ids = [f"chat-{n}" for n in range(5)]
    started = time.monotonic()
    for n, xmpp_id in enumerate(ids):
        message = client.Message()
        message["to"], message["type"] = BOB, "chat"
        message["body"], message["id"] = f"psst {n}", xmpp_id
        ET.SubElement(message.xml, f"{{{RECEIPTS_NS}}}request")
        message.send()

    seen_by_bob = []
    for xmpp_id in ids:
        await client.wait_for(receipt(xmpp_id), timeout=15)
        seen_by_bob.append(len(bob.texts("privmsg", "fred")))
    elapsed = time.monotonic() - started

    assert all(seen >= n for n, seen in enumerate(seen_by_bob)), seen_by_bob
    assert elapsed >= (len(ids) - 2) / RATE * 0.8
    await bob.wait_until(lambda: len(bob.texts("privmsg", "fred")) == len(ids))
    await client.close()


async def test_a_message_sent_again_is_reflected_again_not_written_twice(
    servers, gateway_factory, bob
):
    """A client sends again what it had not seen reflected when its connection broke,
    with the same origin-id (XEP-0359): the room reflects the line it wrote, with the
    same stanza-id, and IRC sees it once."""
    prosody, ngircd = servers
    await gateway_factory(prosody, bridges={"irc": irc_section(ngircd)})
    client = await joined_user(prosody, "fred")

    def archive_id(stanza) -> str:
        return stanza.xml.find(f"{{{SID_NS}}}stanza-id").get("id")

    sent = send_with_origin(client, "hello", "m-1")
    first = await client.wait_for(reflection("m-1"), timeout=10, since=sent)
    sent = send_with_origin(client, "hello", "m-1")
    again = await client.wait_for(reflection("m-1"), timeout=10, since=sent)
    send_with_origin(client, "after", "m-2")
    await bob.wait_until(lambda: "after" in bob.texts("pubmsg", "fred"))

    assert archive_id(again) == archive_id(first)
    assert again.xml.find(f"{{{SID_NS}}}origin-id").get("id") == "origin-m-1"
    assert bob.texts("pubmsg", "fred") == ["hello", "after"]  # IRC keeps the order
    await client.close()


async def test_a_message_sent_again_before_it_is_written_goes_to_irc_once(
    servers, gateway_factory, bob
):
    """The client sends a line again while the first copy still waits for the flood
    control (its connection broke and came back at once): IRC sees it once, and the
    room reflects it once, when it is written."""
    prosody, ngircd = servers
    paced = irc_section(ngircd, flood_rate=1.0, flood_burst=1)  # "two" waits 1 s
    await gateway_factory(prosody, bridges={"irc": paced})
    client = await joined_user(prosody, "fred")

    for body, xmpp_id in (("one", "m-1"), ("two", "m-2"), ("two", "m-2"), ("three", "m-3")):
        send_with_origin(client, body, xmpp_id)
    await client.wait_for(reflection("m-3"), timeout=15)
    await bob.wait_until(lambda: "three" in bob.texts("pubmsg", "fred"))

    assert bob.texts("pubmsg", "fred") == ["one", "two", "three"]
    assert sum(reflection("m-2")(stanza) for stanza in client.stanzas) == 1
    await client.close()
