"""What each joined user costs the gateway (issue #14: ≤ 50 KiB per extra joined user).

The objects kept per user, per connection and per occupant of each user's room are
shared or small; these tests pin the behaviour each of those choices must keep.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from bridges.address import Address, AddressKind
from bridges.base import SessionLog
from bridges.flag import Flag
from bridges.irc.channel import Channel, Member
from bridges.timeouts import within


def test_connections_seeing_a_nick_share_its_member_and_occupant_not_their_changes() -> None:
    """Each user's connection keeps its own member list of a channel, and the muc an
    Occupant per occupant of each user's room: equal ones are one object, and what one
    connection learns (an AWAY it saw first) does not show in the other's list."""
    room = Address(AddressKind.GROUP, "#c%irc.x.org")
    alices, bobs = Channel("#c", room), Channel("#c", room)
    alices.add(Member("dora", account="dora"))
    bobs.add(Member("Dora", account="dora"))
    seen_by_alice, seen_by_bob = alices.member("DORA"), bobs.member("dora")
    assert seen_by_alice is not None and seen_by_bob is not None
    assert seen_by_alice is not seen_by_bob  # the nick's spelling differs
    bobs.update(seen_by_bob, nick="dora")
    assert bobs.member("dora") is seen_by_alice
    assert bobs.occupants("bob")[0] is alices.occupants("alice")[0]
    away = bobs.update(seen_by_alice, away=True)
    assert bobs.member("dora") is away and away.occupant.away
    assert alices.member("dora") is seen_by_alice and not seen_by_alice.occupant.away


async def test_a_flag_wakes_every_waiter_and_a_cancelled_one_not_the_others() -> None:
    flag = Flag()
    first = asyncio.create_task(flag.wait())
    second = asyncio.create_task(flag.wait())
    cancelled = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    assert not first.done() and not second.done()
    flag.set()
    flag.clear()  # the waiters still see it was set, as with asyncio.Event
    assert await within(asyncio.gather(first, second), 1) == [True, True]
    assert cancelled.cancelled() and not flag.is_set()
    flag.set()
    assert await flag.wait() is True


def test_a_session_log_names_the_user_without_a_logger_per_user(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Loggers live as long as the process: one per user and network would outlive them."""
    before = set(logging.Logger.manager.loggerDict)
    log = SessionLog(logging.getLogger("bridges.test"), "alice@example.org").child("irc.x.org")
    with caplog.at_level(logging.INFO, "bridges.test"):
        log.info("connected after %d tries", 2)
    assert caplog.records[-1].name == "bridges.test"
    assert caplog.messages[-1] == "alice@example.org.irc.x.org: connected after 2 tries"
    assert set(logging.Logger.manager.loggerDict) - before <= {"bridges.test", "bridges"}
