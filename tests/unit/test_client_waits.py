"""The test client's waits: an answer to an earlier request cannot pass for a later one."""

from __future__ import annotations

from slixmpp import Presence
from xmpp_client import TestClient


def self_presence(client: TestClient, status: str) -> Presence:
    presence = client.Presence()
    presence["from"], presence["status"] = "#room%irc@irc.localhost/alice", status
    return presence


async def test_a_wait_since_a_mark_skips_what_came_before_it():
    client = TestClient("alice@localhost/pc", "pw")  # never connected: stanzas fed by hand
    client._record(self_presence(client, "from the first join"))  # never waited for
    mark = client.mark()
    client._record(self_presence(client, "from the second join"))

    found = await client.wait_for(lambda s: isinstance(s, Presence), timeout=1, since=mark)
    assert found["status"] == "from the second join"
    stale = await client.wait_for(lambda s: isinstance(s, Presence), timeout=1)
    assert stale["status"] == "from the first join"  # without a mark, any time is fine


async def test_a_stanza_waited_for_is_taken_out_of_what_was_recorded():
    client = TestClient("alice@localhost/pc", "pw")
    for status in ("first", "second"):
        client._record(self_presence(client, status))

    first = await client.wait_for(lambda s: isinstance(s, Presence), timeout=1)
    assert first["status"] == "first"
    assert [s["status"] for s in client.stanzas] == ["second"]
    again = await client.wait_for(lambda s: isinstance(s, Presence), timeout=1)
    assert again["status"] == "second"  # the next match, not the same one twice
