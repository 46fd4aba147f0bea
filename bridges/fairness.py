"""Taking turns on the one event loop that serves every user.

asyncio switches tasks only where one waits, and a loop over a backlog often never
does: `Queue.get()` on a full queue, `drain()` under the write limit and a handler
that finds everything at hand all return at once. One user's burst then holds the loop
until it is through, and every other user waits that long (measured: 5,000 messages at
an opened flood limit held another user's messages for over a second). Loops that work
through a backlog take a `TimeSlice` and give the others a turn when it runs out.
"""

from __future__ import annotations

import asyncio

SLICE = 0.0005
"""Seconds of work before a turn is given away: short against what a user notices,
long against the cost of a task switch (a few microseconds)."""


class TimeSlice:
    """Yields to the other ready tasks once `seconds` of work have passed since the last turn."""

    def __init__(self, seconds: float = SLICE) -> None:
        self._seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._ends = self._loop.time() + seconds

    def due(self) -> bool:
        """Whether the slice is used up; `if turns.due(): await turns.turn()` spares a
        hot loop a coroutine per item."""
        return self._loop.time() >= self._ends

    async def turn(self) -> None:
        """Call between two items of work; cheap when the slice has time left."""
        if self.due():
            await asyncio.sleep(0)
            self._ends = self._loop.time() + self._seconds
