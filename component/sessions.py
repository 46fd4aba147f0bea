"""Which users are online, and the legacy Session each registered user has.

Presence decides a session's life: the first available resource starts it, the last
one going away stops it, unless the bridge keeps it running while the user is offline
(`Bridge.runs_offline`, `Session.user_offline`). Sessions that run offline also start
with the gateway, without waiting for presence. A message from a user whose presence
we have not seen starts the session on demand, so nothing they send is refused for
want of presence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple

from bridges import events
from bridges.base import Account, Bridge, FileTransfer, Session, Sink
from component import metrics
from component.chats import PrivateChats
from component.store import AccountStorage, Store

log = logging.getLogger(__name__)

SinkFactory = Callable[[str], Sink]

AVAILABILITY = {"chat": 4, "": 3, "away": 2, "dnd": 1, "xa": 0}
"""RFC 6121 show values, most available first: what a tie in priority is decided by."""


class ResourcePresence(NamedTuple):
    priority: int
    show: str = ""
    status: str = ""


def shown_presence(resources: Mapping[str, ResourcePresence]) -> tuple[str, str]:
    """(show, status) of the resource that counts: highest priority, then most available."""
    best = max(resources.values(), key=lambda p: (p.priority, AVAILABILITY.get(p.show, 0)))
    return best.show, best.status


class SessionManager:
    def __init__(
        self,
        bridge: Bridge,
        store: Store,
        make_sink: SinkFactory,
        may_start: Callable[[str], None] = lambda _user: None,
    ) -> None:
        self.bridge = bridge
        self.store = store
        self._make_sink = make_sink
        self._may_start = may_start
        """Raises when this process must not run `user`'s session (another owns it)."""
        self._sessions: dict[str, Session] = {}
        self._changing: dict[str, asyncio.Lock] = {}
        self.resources: dict[str, dict[str, ResourcePresence]] = {}
        """bare JID → {resource: its presence} of every available resource seen."""
        self._shown: dict[str, tuple[str, str]] = {}
        """What each online user's session was last told (see `Session.set_presence`)."""

    def get(self, user: str) -> Session | None:
        return self._sessions.get(user)

    @property
    def users(self) -> list[str]:
        return list(self._sessions)

    def is_online(self, user: str) -> bool:
        return bool(self.resources.get(user))

    def is_available(self, user: str, resource: str) -> bool:
        """Whether `resource` of `user` is available, as far as presence has told us."""
        return resource in self.resources.get(user, {})

    def _lock(self, user: str) -> asyncio.Lock:
        """Held while `user`'s session starts or stops, so that neither overlaps the
        other: a message during a restart waits for the new session instead of starting
        one beside the old one still stopping (two IRC connections, two mail watchers)."""
        return self._changing.setdefault(user, asyncio.Lock())

    async def ensure(self, user: str, account: Account | None = None) -> Session | None:
        """The user's running session, started if needed; None when not registered.

        `account` saves reading it again when the caller has just done so. A running
        session while none starts or stops is what the lock would give at once: every
        message the user sends asks, and taking the lock cost more than a dict look-up.
        """
        lock = self._lock(user)
        session = self._sessions.get(user)
        if session is not None and not lock.locked():
            return session
        async with lock:
            return await self._ensure(user, account)

    async def _ensure(self, user: str, account: Account | None) -> Session | None:
        session = self._sessions.get(user)
        if session is not None:
            return session
        if account is None:
            account = await self.store.get_account(user, self.bridge.name)
        if account is None:
            return None
        return await self._start(account)

    async def _start(self, account: Account) -> Session:
        self._may_start(account.user)
        storage = AccountStorage(self.store, account.user, self.bridge.name)
        session = self.bridge.create_session(account, self._make_sink(account.user), storage)
        self._sessions[account.user] = session
        metrics.SESSIONS.labels(self.bridge.name).set(len(self._sessions))
        log.info("%s: starting %s session", account.user, self.bridge.name)
        try:
            await session.start()
        except Exception:
            # The session stays registered so the user can still be told and retry;
            # a bridge reports connection problems itself through the sink.
            log.exception("%s: %s session failed to start", account.user, self.bridge.name)
        await self._show(account.user)
        return session

    async def stop(
        self,
        user: str,
        reason: str,
        then: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        """Stop `user`'s session; `then` runs before another may start (removing the
        account, so that no message starts a session for an account being deleted)."""
        async with self._lock(user):
            await self._stop(user, reason)
            if then is not None:
                await then()

    async def restart(self, user: str, reason: str) -> None:
        """Replace `user`'s session with a fresh one, if one should run, in one step."""
        async with self._lock(user):
            await self._stop(user, reason)
            await self._start_if_wanted(user, None)

    async def _stop(self, user: str, reason: str) -> None:
        session = self._sessions.pop(user, None)
        self._shown.pop(user, None)  # a new session has to be told again
        if session is None:
            return
        metrics.SESSIONS.labels(self.bridge.name).set(len(self._sessions))
        log.info("%s: stopping %s session (%s)", user, self.bridge.name, reason)
        try:
            await session.stop()
        except Exception:
            log.exception("%s: %s session failed to stop cleanly", user, self.bridge.name)

    async def start_offline_sessions(self) -> None:
        """At gateway start: run every session the bridge wants running while offline."""
        for account in await self.store.accounts(self.bridge.name):
            if not self.bridge.runs_offline(account):
                continue
            try:
                await self.start_if_wanted(account.user, account)
            except Exception:  # one broken account must not keep the others offline
                log.exception("%s: %s session failed to start", account.user, self.bridge.name)

    async def start_if_wanted(self, user: str, account: Account | None = None) -> None:
        """Start `user`'s session if they are online or the bridge runs it offline."""
        async with self._lock(user):
            await self._start_if_wanted(user, account)

    async def _start_if_wanted(self, user: str, account: Account | None) -> None:
        if self.is_online(user):
            await self._ensure(user, account)
            return
        if account is None:
            account = await self.store.get_account(user, self.bridge.name)
        if account is None or not self.bridge.runs_offline(account):
            return
        session = await self._ensure(user, account)
        if session is not None and not self.is_online(user) and not await self._keeps(session):
            await self._stop(user, "nothing to do while the user is offline")

    async def _keeps(self, session: Session) -> bool:
        """Tell a session its user is offline; whether it goes on running."""
        return self.bridge.persistent_sessions or await session.user_offline()

    async def stop_all(self, reason: str, timeout: float | None = None) -> None:
        """Stop every session; those still stopping after `timeout` s are cancelled."""
        stopping = [asyncio.ensure_future(self.stop(user, reason)) for user in self.users]
        if not stopping:
            return
        _done, late = await asyncio.wait(stopping, timeout=timeout)
        if late:
            log.warning("%s: %d sessions did not stop in time", self.bridge.name, len(late))
        for task in late:
            task.cancel()
        await asyncio.gather(*stopping, return_exceptions=True)

    async def resource_available(
        self, user: str, resource: str, presence: ResourcePresence
    ) -> bool:
        """Record an available resource; True when it is the user's first one."""
        known = self.resources.setdefault(user, {})
        first = not known
        known[resource] = presence
        metrics.ONLINE_USERS.labels(self.bridge.name).set(len(self.resources))
        if first:
            await self.ensure(user)
        await self._show(user)
        return first

    async def _show(self, user: str) -> None:
        """Tell the session when the presence the user shows has changed."""
        known, session = self.resources.get(user), self._sessions.get(user)
        if not known or session is None:
            return
        shown = shown_presence(known)
        if self._shown.get(user) != shown:
            self._shown[user] = shown
            await session.set_presence(*shown)

    async def resource_unavailable(self, user: str, resource: str | None) -> bool:
        """Forget a resource (None: all of them); True when the user went offline."""
        known = self.resources.get(user)
        if not known:
            return False
        if resource is None:
            known.clear()
        else:
            known.pop(resource, None)
        if known:
            await self._show(user)
            return False
        del self.resources[user]
        self._shown.pop(user, None)
        metrics.ONLINE_USERS.labels(self.bridge.name).set(len(self.resources))
        await self.user_gone(user)
        return True

    async def user_gone(self, user: str) -> None:
        """The user is no longer there: stop their session unless it runs while offline.

        Decided under the user's lock, as starts and stops are: a session still starting
        (a registration, or the gateway's start) is asked once it runs, not stopped for
        having been missed, and one that came online meanwhile is left alone.
        """
        async with self._lock(user):
            session = self._sessions.get(user)
            if session is None or self.is_online(user):
                return
            if not await self._keeps(session):
                await self._stop(user, "user went offline")


class UserSink:
    """The Sink handed to one user's session: delivers, then persists state."""

    def __init__(
        self,
        user: str,
        deliver: Callable[[str, events.Event], Awaitable[None]],
        storage: AccountStorage,
        files: Callable[[], FileTransfer | None] = lambda: None,
        chats: PrivateChats | None = None,
    ) -> None:
        self.user = user
        self._deliver = deliver
        self._storage = storage
        self._files = files
        self._chats = chats or PrivateChats()

    @property
    def files(self) -> FileTransfer | None:
        return self._files()

    async def deliver(self, event: events.Event, *, state: Mapping[str, Any] | None = None) -> None:
        await self._deliver(self.user, event)
        if state is not None:
            await self._storage.save_account(state=state)

    async def legacy_ids(self, xmpp_id: str) -> tuple[str, ...]:
        return await self._chats.legacy_ids(self.user, xmpp_id)

    async def xmpp_id(self, legacy_id: str) -> str | None:
        return await self._chats.xmpp_id(self.user, legacy_id)
