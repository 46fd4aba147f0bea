"""`within`: `asyncio.wait_for` without the lost cancellation of Python 3.11.

In 3.11, `wait_for` returns the result instead of raising CancelledError when the task
is cancelled in the same loop iteration as the awaited thing finishes (fixed in 3.12,
cpython gh-86296). A loop that waits that way and is cancelled at that moment runs on,
and whoever awaits its end (a session stop, a shutdown) waits for ever. `asyncio.timeout`
runs the awaitable in the calling task and keeps every cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], seconds: float | None) -> T:
    """The result of `awaitable`, or TimeoutError after `seconds` (None: no limit)."""
    async with asyncio.timeout(seconds):
        return await awaitable
