"""Writing the component stream so one user's burst cannot hold up everyone else's.

The XMPP server reads the component stream in order and far slower than the gateway
can write it: 5,000 reflections of one user's flood, written at once, sat in socket
buffers and in the server's read queue, and a stanza for any other user written after
them waited the whole ~1 s it took the server to work through them (measured with
Prosody). The kernel's buffers cannot be made small enough from this side (the
server's receive buffer grows by itself), so the writer keeps the backlog itself:

* at most `window` characters may be written that the server has not yet worked
  through. After each half window a marker goes out, an iq the component addresses to
  itself: the server routes it back in stream order, so its arrival says that
  everything written before it was processed;
* while the window is full, stanzas wait here in one queue per recipient (their `to`
  bare JID), and as markers come back the queues are written in turns, one stanza
  each. A quiet user's stanza then waits behind at most one window of others' work,
  and each recipient's stanzas keep their order.

With nothing queued and the window open a stanza goes straight into the write of this
event loop turn (`Gateway.send`'s batching), so the cost without a backlog is a
length added and a marker per half window. A server that never routes the marker back
would stop the stream: after `timeout` seconds the writer gives up on markers for the
rest of that stream and writes as before, logging it once. A lost stream keeps what
was not written yet for the next one (`hold`, `resume`), and whatever slixmpp writes
itself (the stream's end at shutdown) first takes everything queued (`write_all`), so
closing never waits for the server.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

WINDOW = 16 * 1024
"""Characters written and not yet confirmed by a marker: about 40 room messages, a few
ms of Prosody's work, and enough in flight that a burst still goes at the server's pace
(bench/irc_vs_biboumi.py --fairness --windows: 8 to 32 KiB did as well for the flood,
and 16 KiB kept the other user's wait lowest)."""

TIMEOUT = 5.0
"""Seconds a full window waits for a marker before the writer stops using them."""

MARKER_ID = "xgw-window-"
"""Id prefix of the markers: what comes back with it is for `FairWriter.confirm`."""

UNLIMITED = 1 << 62


def recipient(stanza: str) -> str:
    """The bare JID in the top element's `to` attribute ("" when it has none).

    Attribute values hold no unescaped quote, so the first ` to="` before the first
    `>` is the attribute itself, not text inside another one or a child's.
    """
    end = stanza.find(">")
    start = stanza.find(' to="', 0, end)
    if start < 0:
        return ""
    start += 5
    jid = stanza[start : stanza.find('"', start)]
    slash = jid.find("/")
    return jid if slash < 0 else jid[:slash]


class FairWriter:
    """Serialized stanzas to the component stream, within a window, in turns by recipient."""

    def __init__(
        self,
        write: Callable[[str], None],
        marker: Callable[[str], str],
        loop: asyncio.AbstractEventLoop,
        *,
        name: str,
        window: int = WINDOW,
        timeout: float = TIMEOUT,
    ) -> None:
        """`write` puts text on the stream; `marker(id)` is the iq text that comes back
        with `id`; a `window` of 0 writes everything at once, as without this class."""
        self._write = write
        self._marker = marker
        self._loop = loop
        self._name = name
        self._window = window
        self._timeout = timeout
        self._batch: list[str] = []
        """What this event loop turn writes (`flush`)."""
        self._queues: dict[str, deque[str]] = {}
        """Waiting stanzas by recipient; the dict's order is the order of turns."""
        self._sent = 0
        """Characters given to the stream since it started."""
        self._marked = 0
        """`_sent` when the last marker was written."""
        self._confirmed = 0
        """`_sent` at the last marker that came back."""
        self._markers: deque[tuple[str, int]] = deque()
        """Markers written and not back yet, with their `_sent`."""
        self._ids = itertools.count()
        """Marker numbers; never reused, so one from a lost stream matches nothing."""
        self._timer: asyncio.TimerHandle | None = None
        self._warned = False
        self._limit = 0
        """The window in force: 0 while there is no stream (everything waits),
        UNLIMITED when off or given up on."""
        self._chunk = UNLIMITED

    @property
    def queued(self) -> int:
        """Stanzas waiting for room in the window."""
        return sum(len(queue) for queue in self._queues.values())

    def add(self, stanza: str) -> None:
        """Write `stanza` in this turn's batch, or queue it behind its recipient's others."""
        if self._queues or self._sent - self._confirmed >= self._limit:
            self._queue(recipient(stanza), stanza)
            return
        if not self._batch:
            self._loop.call_soon(self.flush)
        self._batch.append(stanza)
        self._sent += len(stanza)

    def _queue(self, key: str, stanza: str) -> None:
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append(stanza)
        if self._timer is None and self._limit and self._limit != UNLIMITED:
            self._timer = self._loop.call_later(self._timeout, self._expired)

    def flush(self) -> None:
        """Write this turn's batch, with a marker after it when one is due.

        One is due after each half window, and whenever stanzas wait: then the window
        must reopen once the server is through what was written.
        """
        if not self._batch:
            return
        if self._sent - self._marked >= self._chunk or (
            self._queues and self._sent > self._marked and self._chunk != UNLIMITED
        ):
            marker = f"{MARKER_ID}{next(self._ids)}"
            self._batch.append(self._marker(marker))
            self._markers.append((marker, self._sent))
            self._marked = self._sent
        data, self._batch = "".join(self._batch), []
        self._write(data)

    def confirm(self, marker: str) -> None:
        """The server is through everything written before `marker`: write what fits."""
        for index, (known, position) in enumerate(self._markers):
            if known == marker:
                for _ in range(index + 1):  # earlier ones are answered by this one
                    self._markers.popleft()
                self._confirmed = position
                self._pump()
                return

    def _pump(self) -> None:
        """Move queued stanzas into the batch, a stanza per recipient in turn, while the
        window has room; write them at once."""
        queues = self._queues
        while queues and self._sent - self._confirmed < self._limit:
            key = next(iter(queues))
            queue = queues.pop(key)
            stanza = queue.popleft()
            if queue:
                queues[key] = queue  # to the back of the turns
            self._batch.append(stanza)
            self._sent += len(stanza)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            if queues:
                self._timer = self._loop.call_later(self._timeout, self._expired)
        self.flush()

    def _expired(self) -> None:
        self._timer = None
        if not self._queues:
            return
        if not self._warned:
            self._warned = True
            log.warning(
                "%s: the XMPP server did not route a window marker back within %.0f s;"
                " writing without a window until the next connection",
                self._name,
                self._timeout,
            )
        self._limit = self._chunk = UNLIMITED
        self._pump()

    def write_all(self) -> None:
        """Write everything queued now, window or not (before the stream's end)."""
        if self._limit:
            limit, self._limit = self._limit, UNLIMITED
            self._pump()
            self._limit = limit

    def hold(self) -> None:
        """The stream is lost: keep what it was not given for the next one, in order."""
        queues: dict[str, deque[str]] = {}
        for stanza in self._batch:
            queues.setdefault(recipient(stanza), deque()).append(stanza)
        for key, queue in self._queues.items():
            queues.setdefault(key, deque()).extend(queue)
        self._batch, self._queues = [], queues
        self._markers.clear()
        self._sent = self._marked = self._confirmed = self._limit = 0
        self._chunk = UNLIMITED
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def resume(self) -> None:
        """A stream is up: a fresh window, and what waited is written first."""
        self._sent = self._marked = self._confirmed = 0
        self._markers.clear()
        self._limit = self._window or UNLIMITED
        self._chunk = self._window // 2 or UNLIMITED
        self._pump()
