"""`Flag`: asyncio.Event for objects kept per user, in a tenth of the memory.

An `asyncio.Event` is a plain object with a `__dict__` and a `collections.deque` of
waiters, about 800 bytes while nobody waits; an IRC connection has three, for each
user. A `Flag` has slots and makes its list of waiters on the first wait, so an idle
one is 56 bytes. Each waiter has its own future, as with `asyncio.Event`: one waiter
cancelled never cancels the others.
"""

from __future__ import annotations

import asyncio
from typing import Literal


class Flag:
    """`set`, `clear`, `is_set` and `wait` as `asyncio.Event` has them."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        """Set it and wake every waiter (each sees it set, even if cleared meanwhile)."""
        if self._value:
            return
        self._value = True
        for waiter in self._waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> Literal[True]:
        if self._value:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            self._waiters.remove(waiter)
            if not self._waiters:
                self._waiters = None
