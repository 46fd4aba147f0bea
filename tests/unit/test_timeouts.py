"""`within` keeps a cancellation that Python 3.11's `asyncio.wait_for` loses."""

from __future__ import annotations

import asyncio

import pytest

from bridges.timeouts import within


async def test_a_cancellation_arriving_with_the_result_still_cancels() -> None:
    """The result and the cancellation land in one loop iteration: a poller stopped at
    that moment must stop, not take the result and run on (the cluster e2e's LUSERS
    poller did, and its test hung until the 300 s timeout)."""
    answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    waiting = asyncio.ensure_future(within(answer, 10))
    await asyncio.sleep(0)  # now waiting on `answer`
    answer.set_result(1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_the_result_within_the_time() -> None:
    assert await within(asyncio.sleep(0, result="done"), 1) == "done"


async def test_too_late_is_a_timeout_error_and_cancels_what_it_waited_for() -> None:
    never = asyncio.ensure_future(asyncio.Event().wait())
    with pytest.raises(TimeoutError):
        await within(never, 0.01)
    await asyncio.sleep(0)
    assert never.cancelled()


async def test_no_limit() -> None:
    assert await within(asyncio.sleep(0, result=3), None) == 3
