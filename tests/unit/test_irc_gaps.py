"""The gap notice's wording, and last-seen records that never break a connection."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from bridges.base import SessionLog
from bridges.irc.gaps import SEEN_KIND, LastSeen, gap_text


def test_gap_text_names_the_date_once_unless_it_changes():
    since = datetime(2026, 12, 1, 21, 30, 5, tzinfo=UTC)
    assert gap_text("#room", since, datetime(2026, 12, 1, 21, 35, 10, tzinfo=UTC)) == (
        "The gateway was not in #room from 2026-12-01 21:30:05 to 21:35:10 UTC: "
        "what was said there meanwhile may be missing."
    )
    overnight = gap_text("#room", since, datetime(2026, 12, 2, 1, 0, 0, tzinfo=UTC))
    assert "from 2026-12-01 21:30:05 to 2026-12-02 01:00:00 UTC" in overnight


class DictStore:
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        self.broken = False

    async def put_record(self, kind: str, key: str, data: dict[str, Any]) -> None:
        if self.broken:
            raise OSError("database is locked")
        self.records[kind, key] = dict(data)

    async def get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        if self.broken:
            raise OSError("database is locked")
        return self.records.get((kind, key))

    async def delete_record(self, kind: str, key: str) -> None:
        self.records.pop((kind, key), None)


async def test_last_seen_is_per_server_and_casefolded_and_survives_a_broken_store(
    caplog: pytest.LogCaptureFixture,
):
    store = DictStore()
    seen = LastSeen(store, "irc.example.org", SessionLog(logging.getLogger("test"), "test"))
    at = datetime(2026, 12, 1, 21, 30, 5, 123000, tzinfo=UTC)
    await seen.put("#Room", at)
    assert store.records == {(SEEN_KIND, "irc.example.org #room"): {"at": at.isoformat()}}
    assert await seen.read("#ROOM") == (at, None)
    assert await LastSeen(store, "other.org", SessionLog(logging.getLogger("t"), "t")).read(
        "#room"
    ) == (None, None)
    await seen.put("#room", at, "msg-1")
    assert await seen.read("#room") == (at, "msg-1")

    store.broken = True
    assert await seen.read("#room") == (None, None)
    await seen.put("#room", at)  # logged, not raised
    assert "cannot use the last-seen record of #room" in caplog.text
    store.broken = False
    await seen.forget("#room")
    assert await seen.read("#room") == (None, None)
