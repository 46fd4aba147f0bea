"""When the gateway was not in a persistent channel, so the user knows what is missing.

A bouncer stays in persistent channels, but not across everything: a gateway restart,
a crash or a lost IRC connection leaves a gap. Networks without chat history cannot
fill it, so the room gets one notice with the gap's start and end. The start is the
last time the gateway noted it was in the channel (at a clean stop, at a lost
connection, and every `last_seen_interval` seconds), kept as an `AccountStore` record.
Servers the gateway fetches chat history from (`chathistory`) get no notice. InspIRCd's
channel history (+H) announces nothing: its rooms get the notice, then the lines it
replays, which is why the notice says "may be missing".
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TypeVar

from bridges.base import AccountStore, SessionLog
from bridges.irc.protocol import casefold
from bridges.timestamps import parse_timestamp

T = TypeVar("T")

SEEN_KIND = "irc-last-seen"
"""Record kind; the key is `server channel` (casefolded), the data `{"at": ISO 8601}`
and, once a line with an IRCv3 msgid was seen there, `"msgid"`: where a chat history
fetch starts after a gateway restart (see `chathistory`)."""


class LastSeen:
    """The last-seen records of one user's channels on one server.

    A failing store is logged, not raised: the IRC connection must outlive it.
    """

    def __init__(self, store: AccountStore, server: str, log: SessionLog) -> None:
        self.store, self.server, self.log = store, server, log

    def _key(self, channel: str) -> str:
        return f"{self.server} {casefold(channel)}"

    async def read(self, channel: str) -> tuple[datetime | None, str | None]:
        """When we were last noted in `channel`, and the last msgid seen there: one
        read for both (a thousand rejoins at a failover make each read count)."""
        record = await self._safely(channel, self.store.get_record(SEEN_KIND, self._key(channel)))
        if not record:
            return None, None
        msgid = str(record["msgid"]) if record.get("msgid") else None
        return parse_timestamp(str(record.get("at"))), msgid

    async def put(self, channel: str, at: datetime, msgid: str | None = None) -> None:
        data = {"at": at.isoformat(), **({"msgid": msgid} if msgid else {})}
        await self._safely(channel, self.store.put_record(SEEN_KIND, self._key(channel), data))

    async def forget(self, channel: str) -> None:
        await self._safely(channel, self.store.delete_record(SEEN_KIND, self._key(channel)))

    async def _safely(self, channel: str, call: Awaitable[T]) -> T | None:
        try:
            return await call
        except Exception:
            self.log.exception("cannot use the last-seen record of %s", channel)
            return None


def gap_text(channel: str, since: datetime, until: datetime) -> str:
    """The notice: from when to when, in UTC, the date only once when it is the same."""
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    start = since.strftime("%Y-%m-%d %H:%M:%S")
    end = until.strftime("%H:%M:%S" if since.date() == until.date() else "%Y-%m-%d %H:%M:%S")
    return (
        f"The gateway was not in {channel} from {start} to {end} UTC: "
        "what was said there meanwhile may be missing."
    )
