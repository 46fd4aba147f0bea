"""Reading the ISO 8601 times XMPP (XEP-0082) and IRCv3 (server-time) write."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_timestamp(value: str | None) -> datetime | None:
    """An aware datetime (UTC when no zone is given), or None if absent or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
