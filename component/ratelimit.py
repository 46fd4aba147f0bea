"""How often users may make the gateway try a legacy login.

Each registration is a real IMAP/SMTP (or other) login on the user's behalf: without a
bound, any allowed user could guess passwords, or hammer a server, through the gateway.
A sliding window per user and one for the whole process bound both.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class RateLimit:
    """At most `per_user` attempts per user, and `total` in all, in any `window` seconds."""

    def __init__(
        self,
        per_user: int,
        total: int,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_user, self.total, self.window = per_user, total, window
        self._clock = clock
        self._users: dict[str, deque[float]] = {}
        """Users with an attempt in the window, roughly in the order of their latest."""
        self._all: deque[float] = deque()

    def wait_time(self, user: str) -> float:
        """Seconds until `user` may try again; 0 means now, and the attempt is counted."""
        now = self._clock()
        horizon = now - self.window
        mine = self._users.pop(user, None) or deque()
        for stamps in (mine, self._all):
            while stamps and stamps[0] <= horizon:
                stamps.popleft()
        limits = ((mine, self.per_user), (self._all, self.total))
        full = [stamps for stamps, limit in limits if len(stamps) >= limit]
        wait = max((stamps[0] + self.window - now for stamps in full), default=0.0)
        if not full:
            mine.append(now)
            self._all.append(now)
        if mine:
            self._users[user] = mine  # moved last
        self._forget(horizon)
        return wait

    def _forget(self, horizon: float) -> None:
        """Drop the users whose latest attempt left the window, oldest first: a user
        who registered once would otherwise be kept for the life of the process."""
        while self._users:
            oldest = next(iter(self._users))
            if self._users[oldest][-1] > horizon:
                return
            del self._users[oldest]
