"""The PostgreSQL side of component.leadership: session-level advisory locks, one
per slot.

Its own module so that asyncpg (~5 MiB resident) is imported only by a gateway on
PostgreSQL; the design is described in component.leadership.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time

import asyncpg

from bridges.timeouts import within
from component.leadership import (
    CHECK_INTERVAL,
    CHECK_TIMEOUT,
    CUT_OFF_RETRY,
    FORGET_DEAD,
    HANDOVER_TIMEOUT,
    HELD,
    HOLDER,
    KEEPALIVE_COUNT,
    KEEPALIVE_IDLE,
    KEEPALIVE_INTERVAL,
    LEAVE_FOR,
    LOCK_CLASS,
    LOCK_WAIT,
    REGISTER,
    RETRY_DELAY,
    SLOT_POLL,
    STANDBY_REGISTERED,
    WAITING,
    Leadership,
    _set_role,
    accepts_connections,
    first_of,
    instance_name,
)

log = logging.getLogger("component.leadership")


class AdvisoryLock(Leadership):
    """PostgreSQL: the holder of a session-level advisory lock serves; the others wait."""

    def __init__(self, dsn: str, keys: list[int], server: tuple[str, int] | None = None) -> None:
        """`server`: the XMPP server's component address, with several slots: a standby
        that finds a free slot while that server accepts no connection lets the slot go
        (a cluster node is down; a standby connected to another node takes the slot
        instead). Only a free slot makes it probe: ejabberd logs each connection."""
        super().__init__()
        self.dsn = dsn
        self.keys = keys
        self.server = server
        self.slots = len(keys)
        self.key = keys[0]
        """The key of the slot held, or last tried."""
        self._connection: asyncpg.Connection | None = None
        self._watch: asyncio.Task[None] | None = None
        self._busy = asyncio.Lock()
        """One query at a time on the lock connection (the watch and the registry)."""
        self._left: tuple[int, float] | None = None
        """The key of a slot given up, and until when (monotonic) to leave it alone."""

    async def register(self) -> None:
        connection = self._connection
        if connection is None or connection.is_closed():
            return
        role = "active" if self.slot is not None else "standby"
        try:
            async with self._busy:
                await connection.execute(FORGET_DEAD, timeout=CHECK_TIMEOUT)
                await connection.execute(
                    REGISTER, self.instance_id, socket.gethostname(), os.getpid(), role,
                    self.slot, timeout=CHECK_TIMEOUT,
                )  # fmt: skip
        except asyncpg.UndefinedTableError:
            pass  # an empty database: the schema comes with the first active start
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("could not record this instance in gateway_instances: %s", exc)

    async def _connect(self) -> asyncpg.Connection:
        connection = await asyncpg.connect(
            self.dsn,
            timeout=CHECK_TIMEOUT * 2,
            server_settings={
                "application_name": f"xmpp-gateway {instance_name()}"[:63],
                "lock_timeout": f"{int(LOCK_WAIT * 1000)}ms",
                "tcp_keepalives_idle": str(KEEPALIVE_IDLE),
                "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL),
                "tcp_keepalives_count": str(KEEPALIVE_COUNT),
            },
        )
        assert isinstance(connection, asyncpg.Connection)
        return connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            connection.terminate()

    async def acquire(self, stop: asyncio.Event) -> bool:
        self.lost.clear()
        lock = asyncio.ensure_future(self._lock())
        await first_of(asyncio.shield(lock), stop.wait())
        if not lock.done() or stop.is_set():
            lock.cancel()
            await asyncio.gather(lock, return_exceptions=True)
            self._drop()
            return False
        await lock
        self.slot = self.keys.index(self.key)
        self._watch = asyncio.create_task(self._watch_lock(), name="leadership watch")
        if self.slots > 1:
            log.info(
                "active: %s holds slot %d of %d and serves (instance %s)",
                instance_name(), self.slot, self.slots, self.instance_id,
            )  # fmt: skip
        else:
            log.info("active: %s holds the lock and serves", instance_name())
        _set_role(True, self.slot)
        await self.register()
        return True

    async def _try_slots(self, connection: asyncpg.Connection) -> bool:
        """Take the first free slot lock (but one just given up); False when every
        slot is held."""
        left = self._left
        for key in self.keys:
            if left is not None and key == left[0] and time.monotonic() < left[1]:
                continue
            if await connection.fetchval(
                "SELECT pg_try_advisory_lock($1, $2)", LOCK_CLASS, key, timeout=CHECK_TIMEOUT
            ):
                self.key = key
                return True
        return False

    async def _lock(self) -> None:
        """Keep asking for the lock (reconnecting as needed) until it is ours."""
        told, failure, cut_off = False, "", False
        while True:
            try:
                if self._connection is None or self._connection.is_closed():
                    self._connection = await self._connect()
                    await self.register()
                connection = self._connection
                if await self._try_slots(connection):
                    if self.server is None or await accepts_connections(*self.server):
                        return
                    await connection.execute(
                        "SELECT pg_advisory_unlock($1, $2)", LOCK_CLASS, self.key,
                        timeout=CHECK_TIMEOUT,
                    )  # fmt: skip
                    if not cut_off:
                        log.warning(
                            "standby: the XMPP server at %s:%d accepts no connection; "
                            "taking no slot until it does", *self.server,
                        )  # fmt: skip
                        cut_off = True
                    await asyncio.sleep(CUT_OFF_RETRY)
                    continue
                cut_off = False
                if self.slots > 1:
                    if not told:
                        log.info(
                            "standby: all %d slots are held; waiting to take the first "
                            "that frees", self.slots,
                        )  # fmt: skip
                        _set_role(False)
                        told = True
                    await asyncio.sleep(SLOT_POLL)
                    continue
                if not told:
                    holder = await connection.fetchval(
                        HOLDER, LOCK_CLASS, self.key, timeout=CHECK_TIMEOUT
                    )
                    log.info("standby: %s is active; waiting to take over", holder or "another")
                    _set_role(False)
                    told = True
                with contextlib.suppress(asyncpg.LockNotAvailableError):
                    await connection.execute(
                        "SELECT pg_advisory_lock($1, $2)", LOCK_CLASS, self.key,
                        timeout=LOCK_WAIT + CHECK_TIMEOUT,
                    )  # fmt: skip
                    return
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if str(exc) != failure:  # once per cause, not every second
                    failure = str(exc)
                    log.warning(
                        "standby: cannot reach PostgreSQL for the lock (%s: %s); retrying "
                        "every %g s",
                        type(exc).__name__,
                        exc,
                        RETRY_DELAY,
                    )
                self._drop()
                await asyncio.sleep(RETRY_DELAY)

    async def _watch_lock(self) -> None:
        """Confirm the lock every CHECK_INTERVAL s; on any doubt, set `lost`."""
        connection = self._connection
        assert connection is not None
        closed = asyncio.Event()
        connection.add_termination_listener(lambda _connection: closed.set())
        while True:
            with contextlib.suppress(TimeoutError):
                await within(closed.wait(), CHECK_INTERVAL)
            try:
                if closed.is_set():
                    reason = "the lock connection was closed"
                elif await self._held(connection):
                    continue
                else:
                    reason = "PostgreSQL no longer shows the lock as held"
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                reason = f"the lock cannot be confirmed ({exc or type(exc).__name__})"
            log.error("lost the lock: %s; stopping service, a standby may take over", reason)
            self._drop()
            self.lost.set()
            return

    async def _held(self, connection: asyncpg.Connection) -> bool:
        async with self._busy:
            held = await connection.fetchval(HELD, LOCK_CLASS, self.key, timeout=CHECK_TIMEOUT)
        return bool(held)

    async def standing_down(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        self.slot = None
        await super().standing_down()
        await self.register()  # listed as a standby from now

    async def standby_waits(self) -> bool:
        connection = self._connection
        if connection is None or connection.is_closed():
            return False
        try:
            async with self._busy:
                if self.slots > 1:  # standbys poll the slots rather than wait on one
                    waiting = await connection.fetchval(
                        STANDBY_REGISTERED, self.instance_id, timeout=0.5
                    )
                else:
                    waiting = await connection.fetchval(WAITING, LOCK_CLASS, self.key, timeout=0.5)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        return bool(waiting)

    async def stop_timeout(self, timeout: float) -> float:
        if not await self.standby_waits():
            return timeout
        log.info("a standby waits: handing over, sessions get %g s to stop", HANDOVER_TIMEOUT)
        return min(timeout, HANDOVER_TIMEOUT)

    async def give_up(self) -> None:
        connection = self._connection
        if connection is None or connection.is_closed():
            return  # the lock went with the connection
        try:
            async with self._busy:
                await connection.execute(
                    "SELECT pg_advisory_unlock($1, $2)", LOCK_CLASS, self.key,
                    timeout=CHECK_TIMEOUT,
                )  # fmt: skip
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            self._drop()  # unlocked with the connection then
        self._left = (self.key, time.monotonic() + LEAVE_FOR)
        log.info("gave up slot %d for %g s", self.keys.index(self.key), LEAVE_FOR)

    async def close(self) -> None:
        await self.standing_down()
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                with contextlib.suppress(asyncpg.PostgresError):
                    await connection.execute(
                        "DELETE FROM gateway_instances WHERE id = $1", self.instance_id,
                        timeout=CHECK_TIMEOUT,
                    )  # fmt: skip
                await within(connection.close(), CHECK_TIMEOUT)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                connection.terminate()
