"""Start-up pacing: new IRC connections to one server are spread out (issue 10)."""

from __future__ import annotations

import asyncio
import itertools
import time

from bridges.irc.connection import ConnectPacing


async def opened_at(pacing: ConnectPacing, servers: list[str]) -> list[float]:
    began = time.monotonic()
    waits = [pacing.wait(server) for server in servers]

    async def timed(wait):
        await wait
        return time.monotonic() - began

    return list(await asyncio.gather(*(timed(wait) for wait in waits)))


async def test_a_crowd_of_connections_to_one_server_is_spread_at_the_rate():
    pacing = ConnectPacing(rate=20.0, burst=2)
    times = sorted(await opened_at(pacing, ["irc.example.org"] * 6))
    # After the burst of two, one per 1/20 s, waiters in turn: the sixth after four
    # more tokens (without the turns, all four would go together after one token).
    assert times[5] >= 4 / 20 * 0.9
    gaps = [later - earlier for earlier, later in itertools.pairwise(times[2:])]
    assert all(gap >= 1 / 20 * 0.8 for gap in gaps), gaps


async def test_each_server_has_its_own_pace():
    pacing = ConnectPacing(rate=1.0, burst=1)
    times = await opened_at(pacing, ["a.example.org", "B.example.org", "c.example.org"])
    assert max(times) < 0.5  # three servers, one burst each: nobody waits a second
