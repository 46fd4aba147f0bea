"""One user never has two sessions running at once, even while one is stopping.

A registration update restarts the session on the registration lane while the user's
messages go on arriving on their own lane: a message that found no session while the
old one was still stopping used to start a second one beside it (two IRC connections
fighting over the nick, two mail watchers delivering the same mail).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fake_bridge import FakeBridge, FakeOptions
from xmpp_client import eventually

from bridges.base import Account, AccountStore, Session, Sink
from bridges.timeouts import within
from component.crypto import SecretBox, generate_key
from component.db import create_engine, upgrade
from component.sessions import ResourcePresence, SessionManager
from component.store import Store

USER = "alice@localhost"


class HeldSession(Session):
    """A session whose stop waits for the test, like a legacy server slow to say bye."""

    bridge: HeldBridge

    async def start(self) -> None:
        self.bridge.log.append(f"start {self.account.settings['username']}")

    async def stop(self) -> None:
        self.bridge.log.append(f"stopping {self.account.settings['username']}")
        await self.bridge.release.wait()
        self.bridge.log.append(f"stopped {self.account.settings['username']}")

    async def send_message(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError


class HeldBridge(FakeBridge):
    def __init__(self) -> None:
        super().__init__(FakeOptions())
        self.log: list[str] = []
        self.release = asyncio.Event()

    def create_session(self, account: Account, sink: Sink, store: AccountStore) -> Session:
        return HeldSession(self, account, sink, store)


class NoSink:
    async def deliver(self, event: object, *, state: object = None) -> None:
        raise AssertionError(f"nothing is delivered here: {event}")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    await upgrade(engine)
    yield Store(engine, SecretBox(generate_key()))
    await engine.dispose()


async def settle(task: asyncio.Task[object]) -> None:
    """Let `task` run as far as it can without the database (a few loop turns)."""
    for _ in range(20):
        if task.done():
            return
        await asyncio.sleep(0)


async def test_a_message_during_a_restart_waits_for_the_new_session(store: Store) -> None:
    bridge = HeldBridge()
    sessions = SessionManager(bridge, store, lambda user: NoSink())
    await store.save_account(USER, "fake", settings={"username": "old"}, secrets={})
    await sessions.resource_available(USER, "phone", ResourcePresence(0))
    assert bridge.log == ["start old"]

    account = await store.save_account(USER, "fake", settings={"username": "new"}, secrets={})
    restarting = asyncio.create_task(sessions.restart(USER, "registration changed"))
    await eventually(lambda: "stopping old" in bridge.log)
    message = asyncio.create_task(sessions.ensure(USER, account))  # the user writes meanwhile
    await settle(message)
    assert bridge.log == ["start old", "stopping old"]  # no second session beside the first

    bridge.release.set()
    await within(restarting, 10)
    new = await within(message, 10)
    assert bridge.log == ["start old", "stopping old", "stopped old", "start new"]
    assert sessions.get(USER) is new


async def test_no_session_starts_for_an_account_being_removed(store: Store) -> None:
    bridge = HeldBridge()
    sessions = SessionManager(bridge, store, lambda user: NoSink())
    await store.save_account(USER, "fake", settings={"username": "old"}, secrets={})
    await sessions.resource_available(USER, "phone", ResourcePresence(0))

    removing = asyncio.create_task(
        sessions.stop(USER, "unregistered", then=lambda: store.remove_account(USER, "fake"))
    )
    await eventually(lambda: "stopping old" in bridge.log)
    message = asyncio.create_task(sessions.ensure(USER))
    await settle(message)
    bridge.release.set()
    await within(removing, 10)
    assert await within(message, 10) is None
    assert bridge.log == ["start old", "stopping old", "stopped old"]


class OfflineSession(HeldSession):
    async def user_offline(self) -> bool:
        self.bridge.log.append(f"offline {self.account.settings['username']}")
        return True


class OfflineBridge(HeldBridge):
    """Sessions run while their user is offline (an IRC account with persistent channels)."""

    def runs_offline(self, account: Account) -> bool:
        return True

    def create_session(self, account: Account, sink: Sink, store: AccountStore) -> Session:
        return OfflineSession(self, account, sink, store)


async def test_going_offline_during_a_restart_keeps_the_session_that_runs_offline(
    store: Store,
) -> None:
    """The user goes offline while a registration change restarts their session: the new
    session is asked whether it runs on (it does), not stopped for the old one's sake."""
    bridge = OfflineBridge()
    sessions = SessionManager(bridge, store, lambda user: NoSink())
    await store.save_account(USER, "fake", settings={"username": "old"}, secrets={})
    await sessions.resource_available(USER, "phone", ResourcePresence(0))

    await store.save_account(USER, "fake", settings={"username": "new"}, secrets={})
    restarting = asyncio.create_task(sessions.restart(USER, "registration changed"))
    await eventually(lambda: "stopping old" in bridge.log)
    going = asyncio.create_task(sessions.resource_unavailable(USER, "phone"))
    await settle(going)
    bridge.release.set()
    await within(restarting, 10)
    assert await within(going, 10)
    assert bridge.log[:5] == [
        "start old",
        "stopping old",
        "stopped old",
        "start new",
        "offline new",
    ]
    assert "stopping new" not in bridge.log
    assert sessions.get(USER) is not None
