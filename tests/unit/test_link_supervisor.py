"""The link supervisor's state machine, against a stand-in for the slixmpp component.

The real-server cases live in tests/core/test_link.py; this one needs a connection
attempt that neither succeeds nor fails, which a real server cannot hold still for.
"""

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from bridges.timeouts import within
from component.config import ReconnectSettings
from component.link import Link


class ConnectingForever:
    """A component whose connection attempt never settles until it is cancelled."""

    def __init__(self) -> None:
        self.boundjid = SimpleNamespace(bare="gw.example")
        self.transport = None
        self.handlers: dict[str, Callable[[Any], None]] = {}
        self.connecting = asyncio.Event()
        self.cancelled = False

    def add_event_handler(self, name: str, handler: Callable[[Any], None]) -> None:
        self.handlers[name] = handler

    def connect(self, host: str, port: int) -> None:
        self.connecting.set()

    def cancel_connection_attempt(self) -> None:
        # Like slixmpp: the attempt is dropped and no event says so.
        self.cancelled = True


async def test_stop_during_a_connection_attempt_ends_the_supervisor() -> None:
    component = ConnectingForever()
    link = Link(
        component,  # type: ignore[arg-type]
        "127.0.0.1",
        5347,
        ReconnectSettings(),
        option="bridges.x",
    )
    running = asyncio.create_task(link.run())
    await within(component.connecting.wait(), 5)

    await link.stop()

    done, _ = await asyncio.wait([running], timeout=5)
    assert running in done, "run() still waits for an attempt that was cancelled"
    running.result()
    assert component.cancelled
