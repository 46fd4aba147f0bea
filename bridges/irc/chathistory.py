"""Filling what a channel missed from the server's IRCv3 chat history (`draft/chathistory`).

A gateway that was not in a channel (restart, lost connection) asks the server, after
the rejoin, for what was said since the last line it saw: `CHATHISTORY AFTER #chan
msgid=<last>` (or `timestamp=<last>` when no msgid is known), `limit` lines at a time,
the server's ISUPPORT `CHATHISTORY=<max>`. The answer is a `chathistory` batch; its
lines reach the room as delayed history (they are archived under their msgid, which
the archive's unique key keeps from being stored twice). A line also seen live since
the rejoin is skipped, so nobody gets it twice. A page as long as the limit asks for
the next one, up to `MAX_PAGES`, so a hostile server cannot keep us fetching forever.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from bridges.hot_value import hot_value
from bridges.irc.protocol import Line, casefold
from bridges.timestamps import parse_timestamp

NEEDED_CAPS = frozenset({"draft/chathistory", "batch", "server-time", "message-tags"})
"""Without batches the history cannot be told from live lines, without msgid and
server-time it cannot be anchored nor de-duplicated."""
DEFAULT_LIMIT = 100
"""Lines per request when the server announces CHATHISTORY without a number (or 0)."""
MAX_PAGES = 50
MAX_SHOWN = 10_000
BATCH_TYPES = frozenset({"chathistory", "draft/chathistory"})
TEXT_COMMANDS = frozenset({"PRIVMSG", "NOTICE"})


@hot_value
class Anchor:
    """The last line seen in a channel: its msgid, else when it was sent."""

    msgid: str | None = None
    at: datetime | None = None

    def __bool__(self) -> bool:
        return bool(self.msgid or self.at)

    @property
    def selector(self) -> str:
        if self.msgid:
            return f"msgid={self.msgid}"
        assert self.at is not None
        return "timestamp=" + self.at.astimezone(UTC).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z"
        )

    @classmethod
    def of(cls, line: Line) -> Anchor:
        return cls(line.tags.get("msgid") or None, parse_timestamp(line.tags.get("time")))


@dataclass
class Fetch:
    """One channel's history being fetched: pages asked for, msgids already shown."""

    pages: int = 0
    shown: set[str] = field(default_factory=set)
    """msgids of lines delivered since the rejoin, live or from an earlier page."""

    def note(self, msgid: str | None) -> None:
        """A line shown live while the fetch runs (bounded: a fetch the server never
        answers must not grow it forever)."""
        if msgid and len(self.shown) < MAX_SHOWN:
            self.shown.add(msgid)

    def fresh(self, lines: list[Line], channel: str) -> list[Line]:
        """The text lines to `channel` of a page not shown yet, in the server's order."""
        out = []
        for line in lines:
            msgid = line.tags.get("msgid") or None
            if line.command not in TEXT_COMMANDS or casefold(line.param(0)) != casefold(channel):
                continue
            if msgid and msgid in self.shown:
                continue
            if msgid:
                self.shown.add(msgid)
            out.append(line)
        return out


def request(target: str, anchor: Anchor, limit: int) -> tuple[str, ...]:
    """The CHATHISTORY parameters for the lines after `anchor`."""
    return ("AFTER", target, anchor.selector, str(limit))


def batch_target(line: Line) -> tuple[str, str] | None:
    """`BATCH +id chathistory #chan` → (id, channel); None for other batches."""
    ref = line.param(0)
    if ref.startswith("+") and line.param(1).lower() in BATCH_TYPES and len(line.params) > 2:
        return ref[1:], line.param(2)
    return None
