"""The component stream's writer alone: window, turns by recipient, lost streams, a
server that never routes a marker back. The stream is a recorder of what is written;
markers come back only when a test says so."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from bridges.timeouts import within
from component.fair_writer import FairWriter, recipient

MARKER = re.compile(r'<marker id="([^"]+)"/>')


class Stream:
    """What the writer wrote, write by write, and its markers."""

    def __init__(self) -> None:
        self.writes: list[str] = []
        self.grew = asyncio.Event()

    def write(self, data: str) -> None:
        self.writes.append(data)
        self.grew.set()

    @property
    def text(self) -> str:
        return "".join(self.writes)

    def stanzas(self) -> list[str]:
        """The stanzas written, in order, markers left out."""
        return re.findall(r"<message [^>]*>[^<]*</message>", self.text)

    def markers(self) -> list[str]:
        return MARKER.findall(self.text)

    async def settle(self) -> None:
        """Let the writer's end-of-turn flush run."""
        await asyncio.sleep(0)


def stanza(user: str, n: int, size: int = 100) -> str:
    body = f"{n:05d}".ljust(size, "x")
    return (
        f'<message from="room@irc.localhost/nick" to="{user}/phone" type="groupchat">'
        f"{body}</message>"
    )


def writer(stream: Stream, window: int = 4_000, timeout: float = 5.0) -> FairWriter:
    fair = FairWriter(
        stream.write,
        lambda marker: f'<marker id="{marker}"/>',
        asyncio.get_running_loop(),
        name="irc.localhost",
        window=window,
        timeout=timeout,
    )
    fair.resume()  # the stream is up
    return fair


def test_recipient_is_the_top_elements_to_bare() -> None:
    assert recipient(stanza("a@example.org", 1)) == "a@example.org"
    assert recipient('<iq type="result" id="x" to="b@example.org" />') == "b@example.org"
    assert recipient('<presence from="c@x" />') == ""
    child = '<message from="x"><forwarded><message to="d@x/r" /></forwarded></message>'
    assert recipient(child) == ""  # a child's `to` is not the stanza's


async def test_without_backlog_a_turn_is_one_write_and_no_marker() -> None:
    stream = Stream()
    fair = writer(stream)
    for n in range(5):
        fair.add(stanza("a@x", n))
    assert stream.writes == []  # written at the end of the turn
    await stream.settle()
    assert len(stream.writes) == 1
    assert stream.markers() == [] and fair.queued == 0
    assert stream.stanzas() == [stanza("a@x", n) for n in range(5)]


async def test_a_marker_after_each_half_window() -> None:
    stream = Stream()
    fair = writer(stream, window=4_000)
    per_marker = -(-2_000 // len(stanza("a@x", 0)))  # stanzas to fill half the window
    for n in range(10 * per_marker):  # one a turn, markers answered at once
        fair.add(stanza("a@x", n))
        await stream.settle()
        if stream.markers():
            fair.confirm(stream.markers()[-1])
        assert fair.queued == 0
    assert len(stream.markers()) == 10
    assert stream.text.endswith(f'<marker id="{stream.markers()[-1]}"/>')


async def test_the_window_holds_a_burst_until_markers_come_back() -> None:
    stream = Stream()
    fair = writer(stream, window=4_000)
    size = len(stanza("a@x", 0))
    for n in range(200):
        fair.add(stanza("a@x", n))
    await stream.settle()
    written = stream.stanzas()
    assert len(written) == -(-4_000 // size)  # up to the window, not beyond
    assert fair.queued == 200 - len(written)
    assert stream.text.endswith(f'<marker id="{stream.markers()[-1]}"/>')
    while fair.queued:
        before = len(stream.stanzas())
        fair.confirm(stream.markers()[-1])
        assert 0 < len(stream.stanzas()) - before <= -(-4_000 // size)
    assert stream.stanzas() == [stanza("a@x", n) for n in range(200)]


async def test_a_quiet_users_stanza_overtakes_a_queued_burst() -> None:
    stream = Stream()
    fair = writer(stream, window=4_000)
    for n in range(200):
        fair.add(stanza("flood@x", n))
    fair.add(stanza("quiet@x", 0))
    fair.add(stanza("other@x", 0))
    await stream.settle()
    first_window = len(stream.stanzas())
    fair.confirm(stream.markers()[-1])
    written = stream.stanzas()
    # Then the turns go flood, quiet, other, flood, flood, ...
    assert written[first_window : first_window + 3] == [
        stanza("flood@x", first_window),
        stanza("quiet@x", 0),
        stanza("other@x", 0),
    ]
    while fair.queued:
        fair.confirm(stream.markers()[-1])
    flood = [s for s in stream.stanzas() if "flood@x" in s]
    assert flood == [stanza("flood@x", n) for n in range(200)]  # its order is kept


async def test_a_lost_stream_keeps_what_was_not_written_and_forgets_its_markers() -> None:
    stream = Stream()
    fair = writer(stream, window=4_000)
    for n in range(100):
        fair.add(stanza("a@x", n))
    await stream.settle()
    old_marker = stream.markers()[-1]
    written = len(stream.stanzas())
    fair.add(stanza("b@x", 0))
    fair.hold()  # the link dropped
    fair.add(stanza("a@x", 100))  # the stream is gone: held too
    await stream.settle()
    assert len(stream.stanzas()) == written
    reconnected = len(stream.writes)
    fair.resume()  # the next stream
    fair.confirm(old_marker)  # a late answer from the old stream opens nothing
    assert len(stream.writes) == reconnected + 1
    while fair.queued:
        fair.confirm(stream.markers()[-1])
    again = Stream()
    again.writes = stream.writes[reconnected:]
    assert [s for s in again.stanzas() if "a@x" in s] == [
        stanza("a@x", n) for n in range(written, 101)
    ]
    assert stanza("b@x", 0) in again.stanzas()


async def test_a_turns_batch_cut_off_by_a_lost_stream_goes_out_once_on_the_next() -> None:
    stream = Stream()
    fair = writer(stream)
    for n in range(3):
        fair.add(stanza("a@x", n))
    fair.hold()  # before the end of the turn
    await stream.settle()
    assert stream.writes == []
    fair.resume()
    await stream.settle()
    assert stream.stanzas() == [stanza("a@x", n) for n in range(3)]


async def test_a_server_that_never_routes_markers_back_is_written_to_after_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = Stream()
    fair = writer(stream, window=4_000, timeout=0.05)
    with caplog.at_level(logging.WARNING, "component.fair_writer"):
        for n in range(100):
            fair.add(stanza("a@x", n))
        while fair.queued:
            stream.grew.clear()
            await within(stream.grew.wait(), 5)
        for n in range(100, 200):  # no window any more on this stream
            fair.add(stanza("a@x", n))
        assert fair.queued == 0
        await stream.settle()
    assert stream.stanzas() == [stanza("a@x", n) for n in range(200)]
    assert len([r for r in caplog.records if "did not route" in r.message]) == 1
    fair.hold()
    fair.resume()  # a new stream has its window again
    for n in range(100):
        fair.add(stanza("a@x", n))
    assert fair.queued > 0


async def test_write_all_writes_everything_queued_for_the_streams_end() -> None:
    stream = Stream()
    fair = writer(stream, window=4_000)
    for n in range(100):
        fair.add(stanza("a@x", n))
    fair.write_all()
    assert fair.queued == 0
    assert stream.stanzas() == [stanza("a@x", n) for n in range(100)]
    fair.add(stanza("a@x", 100))  # the window still counts what went out
    assert fair.queued == 1


async def test_no_window_writes_at_once_without_markers() -> None:
    stream = Stream()
    fair = writer(stream, window=0)
    for n in range(1_000):
        fair.add(stanza("a@x", n))
    await stream.settle()
    assert fair.queued == 0 and stream.markers() == []
    assert len(stream.stanzas()) == 1_000
