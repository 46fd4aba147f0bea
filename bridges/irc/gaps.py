"""When the gateway was not in a persistent channel, so the user knows what is missing.

A bouncer stays in persistent channels, but not across everything: a gateway restart,
a crash or a lost IRC connection leaves a gap. Networks without chat history cannot
fill it, so the room gets one notice with the gap's start and end. The start is the
last time the gateway noted it was in the channel (at a clean stop, at a lost
connection, and every `last_seen_interval` seconds), kept as an `AccountStore` record.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bridges.irc.protocol import casefold

SEEN_KIND = "irc-last-seen"
"""Record kind; the key is `seen_key`, the data `{"at": ISO 8601 time}`."""


def seen_key(server: str, channel: str) -> str:
    return f"{server} {casefold(channel)}"


def gap_text(channel: str, since: datetime, until: datetime) -> str:
    """The notice: from when to when, in UTC, the date only once when it is the same."""
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    start = since.strftime("%Y-%m-%d %H:%M:%S")
    end = until.strftime("%H:%M:%S" if since.date() == until.date() else "%Y-%m-%d %H:%M:%S")
    return (
        f"The gateway was not in {channel} from {start} to {end} UTC: "
        "what was said there meanwhile is not shown."
    )
