"""What `xmpp-gateway run` does with tasks its sessions left behind when it stops.

A task cancelled in the middle of a query cancels the pool's rollback too, which
strands the connection and (with aiosqlite) a thread that keeps the process alive.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text

from bridges.timeouts import within
from component.app import App
from component.config import Config
from component.db import create_engine


async def test_a_query_in_flight_finishes_before_leftover_tasks_are_cancelled(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    app = App(Config.model_construct(), [], engine=engine, owns_loop=True)
    in_query, release = asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    async def slow_query() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            in_query.set()
            await release.wait()  # the query's next round trip, still to come
            await connection.execute(text("SELECT 2"))
        finished.append("query")

    async def timer() -> None:
        await asyncio.Event().wait()  # waits for ever, holding nothing

    leftovers = [asyncio.create_task(slow_query()), asyncio.create_task(timer())]
    await within(in_query.wait(), 5)
    asyncio.get_running_loop().call_later(0.2, release.set)

    await app._end_stragglers()

    assert finished == ["query"]  # not cut off half-way
    assert all(task.done() for task in leftovers)
    assert leftovers[1].cancelled()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    await engine.dispose()
