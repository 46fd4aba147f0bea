"""The lanes alone: order per key, no key waiting for another, a bounded close.

The stanzas are real slixmpp messages; only the stream they reply on is a recorder.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from slixmpp import Message
from slixmpp.exceptions import XMPPError
from slixmpp.xmlstream import StanzaBase

from bridges.timeouts import within
from component.lanes import STOPPED_TEXT, Lanes


class Recorder:
    """Stands in for the component stream: keeps what would be sent."""

    default_ns = "jabber:component:accept"
    use_message_ids = False

    def __init__(self) -> None:
        self.sent: list[StanzaBase] = []

    def send(self, stanza: StanzaBase) -> None:
        self.sent.append(stanza)


def message(stream: Recorder, sender: str, xmpp_id: str) -> Message:
    stanza = Message(stream=stream)  # type: ignore[arg-type]
    stanza["from"], stanza["to"], stanza["id"] = sender, "bob@fake.localhost", xmpp_id
    stanza["type"], stanza["body"] = "chat", xmpp_id
    return stanza


async def test_one_key_in_order_while_another_key_is_not_held() -> None:
    lanes, stream = Lanes("test"), Recorder()
    handled: list[str] = []
    release = asyncio.Event()

    async def slow(stanza: Any) -> None:
        await release.wait()
        handled.append(stanza["id"])

    async def fast(stanza: Any) -> None:
        handled.append(stanza["id"])

    lanes.submit("alice@x", message(stream, "alice@x/a", "a1"), slow)
    lanes.submit("alice@x", message(stream, "alice@x/a", "a2"), fast)
    lanes.submit("carol@x", message(stream, "carol@x/c", "c1"), fast)
    lanes.submit(None, message(stream, "alice@x/a", "now"), fast)
    async with asyncio.timeout(5):
        while handled != ["c1", "now"]:  # noqa: ASYNC110 - polls a list the handlers fill
            await asyncio.sleep(0)
    release.set()
    await lanes.close(5)
    assert handled == ["c1", "now", "a1", "a2"]
    assert stream.sent == []


async def test_close_answers_what_is_still_queued_with_the_original_ids() -> None:
    lanes, stream = Lanes("test"), Recorder()
    started = asyncio.Event()

    async def hangs(_stanza: Any) -> None:
        started.set()
        await asyncio.Event().wait()

    lanes.submit("alice@x", message(stream, "alice@x/a", "m1"), hangs)
    lanes.submit("alice@x", message(stream, "alice@x/a", "m2"), hangs)
    await within(started.wait(), 5)
    await within(lanes.close(0.05), 5)
    lanes.submit("alice@x", message(stream, "alice@x/a", "m3"), hangs)

    assert [(s["id"], s["type"], s["to"].full) for s in stream.sent] == [
        ("m1", "error", "alice@x/a"),
        ("m2", "error", "alice@x/a"),
        ("m3", "error", "alice@x/a"),
    ]
    for reply in stream.sent:
        assert reply["error"]["condition"] == "service-unavailable"
        assert reply["error"]["text"] == STOPPED_TEXT


async def test_a_lane_with_a_backlog_lets_other_lanes_take_turns() -> None:
    """Handlers that never wait would otherwise run one user's whole burst first."""
    lanes, stream = Lanes("test"), Recorder()
    handled: list[str] = []

    async def busy(stanza: Any) -> None:
        ends = time.perf_counter() + 0.0005  # CPU work with nothing to wait for
        while time.perf_counter() < ends:
            pass
        handled.append(stanza["id"])

    for n in range(400):  # 0.2 s of work in all
        lanes.submit("flooder@x", message(stream, "flooder@x/a", f"f{n}"), busy)
    lanes.submit("other@x", message(stream, "other@x/b", "o1"), busy)
    await lanes.close(10)
    waited = handled.index("o1")
    assert waited < 40, f"the other user waited behind {waited} of the flooder's stanzas"


async def test_a_stanza_submitted_as_its_builder_is_built_only_for_an_error() -> None:
    """A plain room message goes through its lane without slixmpp's object; a failure
    still answers its sender with an error carrying the original id."""
    lanes, stream = Lanes("test"), Recorder()
    built: list[str] = []

    def builder(xmpp_id: str) -> Callable[[], Message]:
        def build() -> Message:
            built.append(xmpp_id)
            return message(stream, "alice@x/a", xmpp_id)

        return build

    async def handled(_stanza: Any) -> None:
        pass

    async def refused(_stanza: Any) -> None:
        raise XMPPError("not-acceptable", "join the room first")

    lanes.submit("alice@x", builder("m1"), handled)
    lanes.submit("alice@x", builder("m2"), refused)
    await lanes.close(5)
    assert built == ["m2"]
    [reply] = stream.sent
    assert (reply["id"], reply["type"], reply["error"]["condition"]) == (
        "m2",
        "error",
        "not-acceptable",
    )
