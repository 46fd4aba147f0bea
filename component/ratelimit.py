"""How often users may make the gateway try a legacy login.

Each registration is a real IMAP/SMTP (or other) login on the user's behalf: without a
bound, any allowed user could guess passwords, or hammer a server, through the gateway.
A sliding window per user and one for the whole process bound both.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
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
        self._users: defaultdict[str, deque[float]] = defaultdict(deque)
        self._all: deque[float] = deque()

    def wait_time(self, user: str) -> float:
        """Seconds until `user` may try again; 0 means now, and the attempt is counted."""
        now = self._clock()
        mine = self._users[user]
        for stamps in (mine, self._all):
            while stamps and stamps[0] <= now - self.window:
                stamps.popleft()
        if not mine:
            del self._users[user]  # no entry kept for users who stopped trying
        limits = ((mine, self.per_user), (self._all, self.total))
        full = [stamps for stamps, limit in limits if len(stamps) >= limit]
        if full:
            return max(stamps[0] + self.window - now for stamps in full)
        self._users[user].append(now)
        self._all.append(now)
        return 0.0
