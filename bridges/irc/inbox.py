"""Lines read from an IRC server and not yet handled.

Handling can stall (the XMPP link is down and delivery waits for it) while the server
goes on sending. The inbox bounds what waits, in lines and in bytes; beyond, reading
stops until the handler catches up, and TCP flow control then slows a server that
floods faster than we deliver, where an unbounded queue would grow without limit.
"""

from __future__ import annotations

from collections import deque

from bridges.flag import Flag
from bridges.irc.protocol import Line

INBOX_LINES = 500
"""Lines waiting, at most."""
INBOX_BYTES = 1024 * 1024
"""Bytes of those lines, at most: 500 lines of up to 64 KiB (the longest line read)
would be 32 MiB per connection, which any server, or whoever controls one, could
make us hold."""


class Inbox:
    """Lines read and not yet handled, bounded both in number and in bytes.

    Putting waits while either bound is reached (one line may pass the byte bound by
    its own size, so a line of any allowed length always gets in); the reader then
    stops reading and TCP slows the server down.
    """

    def __init__(self, lines: int = INBOX_LINES, size: int = INBOX_BYTES) -> None:
        self._lines: deque[tuple[Line | None, int]] = deque()
        self._max_lines, self._max_size = lines, size
        self.size = 0
        """Bytes of the lines waiting (as read, CR LF included)."""
        self._added = Flag()
        self._taken = Flag()

    def __len__(self) -> int:
        return len(self._lines)

    def full(self) -> bool:
        return len(self._lines) >= self._max_lines or self.size >= self._max_size

    def put_nowait(self, line: Line | None, size: int) -> None:
        self._lines.append((line, size))
        self.size += size
        self._added.set()

    async def put(self, line: Line | None, size: int) -> None:
        while self.full():
            self._taken.clear()
            await self._taken.wait()
        self.put_nowait(line, size)

    async def get(self) -> Line | None:
        while not self._lines:
            self._added.clear()
            await self._added.wait()
        line, size = self._lines.popleft()
        self.size -= size
        self._taken.set()
        return line
