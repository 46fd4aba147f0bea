"""Per-user ordered processing of incoming stanzas.

slixmpp runs coroutine handlers as independent tasks, so two messages from one user
could reach the legacy network out of order. Every stanza is instead queued on its
sender's lane and handled one after another; different users still run in parallel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slixmpp.exceptions import XMPPError
from slixmpp.xmlstream import StanzaBase

from component import metrics
from component.errors import EXPECTED, from_exception

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[None]]
"""Handles the kind of stanza it was routed (Message, Presence, Iq)."""


class Lanes:
    """One FIFO worker per key (the sender's bare JID); idle workers go away."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queues: dict[str, asyncio.Queue[tuple[StanzaBase, Handler]]] = {}
        self._workers: set[asyncio.Task[None]] = set()

    def submit(self, key: str, stanza: StanzaBase, handler: Handler) -> None:
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
            task = asyncio.get_running_loop().create_task(self._work(key, queue))
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)
        queue.put_nowait((stanza, handler))

    async def _work(self, key: str, queue: asyncio.Queue[tuple[StanzaBase, Handler]]) -> None:
        try:
            while not queue.empty():
                stanza, handler = queue.get_nowait()
                await _handle(self.name, stanza, handler)
        finally:
            if self._queues.get(key) is queue:
                del self._queues[key]

    async def drain(self) -> None:
        """Wait until every queued stanza has been handled (for a clean shutdown)."""
        while self._workers:
            await asyncio.gather(*list(self._workers), return_exceptions=True)


async def _handle(name: str, stanza: StanzaBase, handler: Handler) -> None:
    """Run one handler; any failure becomes an error reply, never a dead lane."""
    try:
        await handler(stanza)
    except XMPPError as exc:
        _reply_error(name, stanza, exc)
    except EXPECTED as exc:
        _reply_error(name, stanza, from_exception(exc))
    except Exception as exc:
        log.exception("failed to handle %s from %s", stanza.name, stanza["from"])
        _reply_error(name, stanza, from_exception(exc))


def _reply_error(name: str, stanza: StanzaBase, error: XMPPError) -> None:
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
