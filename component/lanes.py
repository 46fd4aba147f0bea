"""Per-user ordered processing of incoming stanzas.

slixmpp runs coroutine handlers as independent tasks, so two messages from one user
could reach the legacy network out of order. Every stanza is instead queued on its
sender's lane and handled one after another; different users still run in parallel.
A lane only holds what must stay in order: a slow legacy operation (an SMTP submission)
is handed by its bridge to work of its own, so nothing behind it waits for the network.

Shutting down is bounded: `close` waits so long for the lanes, then answers every
stanza still queued (and the one being handled) with an error to its sender.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from slixmpp.exceptions import XMPPError
from slixmpp.xmlstream import StanzaBase

from bridges.fairness import TimeSlice
from component import metrics
from component.errors import EXPECTED, from_exception, stanza_error

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[None]]
"""Handles the kind of stanza it was routed (Message, Presence, Iq)."""

Stanza = StanzaBase | Callable[[], StanzaBase]
"""A stanza, or what builds it: a user's plain room message is handled without
slixmpp's stanza object (component.wire), whose construction cost more than routing
the message; it is built only to answer with an error. The handler is given it as
it was submitted."""

STOPPED_TEXT = "the gateway stopped before handling this; send it again once it is back"


class Lanes:
    """One FIFO worker per key (the sender's bare JID); idle workers go away."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queues: dict[str, deque[tuple[Stanza, Handler]]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._closed = False

    def submit(self, key: str | None, stanza: Stanza, handler: Handler) -> None:
        """Queue `stanza` behind the others of `key`; None: no order to keep, run it now."""
        if self._closed:
            _reply_error(self.name, stanza, stanza_error("service-unavailable", STOPPED_TEXT))
            return
        queue = self._queues.get(key) if key is not None else None
        if queue is None:
            queue = deque()
            if key is not None:
                self._queues[key] = queue
            task = asyncio.get_running_loop().create_task(self._work(key, queue))
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)
        queue.append((stanza, handler))

    async def _work(self, key: str | None, queue: deque[tuple[Stanza, Handler]]) -> None:
        current: Stanza | None = None
        turns = TimeSlice()
        try:
            while queue:
                current, handler = queue.popleft()
                await _handle(self.name, current, handler)
                current = None
                if turns.due():
                    await turns.turn()  # other users' lanes, reads and writes get theirs
        except asyncio.CancelledError:
            stopped = stanza_error("service-unavailable", STOPPED_TEXT)
            for stanza in [current, *(queued for queued, _ in queue)]:
                if stanza is not None and _built(stanza)["type"] != "unavailable":
                    _reply_error(self.name, stanza, stopped)
            queue.clear()
            raise
        finally:
            if key is not None and self._queues.get(key) is queue:
                del self._queues[key]

    async def close(self, timeout: float) -> None:
        """Refuse new stanzas, wait up to `timeout` s for the queued ones, refuse the rest."""
        self._closed = True
        if not self._workers:
            return
        _done, late = await asyncio.wait(list(self._workers), timeout=timeout)
        if late:
            log.warning(
                "%s: %d lanes still busy after %.1f s; answering what they hold with errors",
                self.name,
                len(late),
                timeout,
            )
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)


async def _handle(name: str, stanza: Stanza, handler: Handler) -> None:
    """Run one handler; any failure becomes an error reply, never a dead lane."""
    try:
        await handler(stanza)
    except XMPPError as exc:
        _reply_error(name, stanza, exc)
    except EXPECTED as exc:
        _reply_error(name, stanza, from_exception(exc))
    except Exception as exc:
        failed = _built(stanza)
        log.exception("failed to handle %s from %s", failed.name, failed["from"])
        _reply_error(name, failed, from_exception(exc))


def _built(stanza: Stanza) -> StanzaBase:
    return stanza if isinstance(stanza, StanzaBase) else stanza()


def _reply_error(name: str, submitted: Stanza, error: XMPPError) -> None:
    stanza = _built(submitted)
    metrics.STANZA_ERRORS.labels(name, error.condition).inc()
    if stanza["type"] == "error":
        return  # never answer an error with an error: that is how loops start
    log.info(
        "%s from %s to %s refused: %s %s",
        stanza.name,
        stanza["from"],
        stanza["to"],
        error.condition,
        error.text,
    )
    try:
        stanza.exception(error)
    except Exception:
        log.exception("could not send the error reply to %s", stanza["from"])
