"""The PostgreSQL side of component.leadership: a session-level advisory lock.

Its own module so that asyncpg (~5 MiB resident) is imported only by a gateway on
PostgreSQL; the design is described in component.leadership.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from component.leadership import LOCK_CLASS, Leadership, _set_role, first_of, instance_name

log = logging.getLogger("component.leadership")

CHECK_INTERVAL = 1.0
"""Seconds between the active process's checks that it still holds the lock."""
CHECK_TIMEOUT = 2.0
"""Seconds a check (or a lock request) may take before the connection counts as dead."""
LOCK_WAIT = 5.0
"""Seconds a standby's `pg_advisory_lock` waits before asking again (`lock_timeout`):
a dead connection is noticed this often."""
RETRY_DELAY = 1.0
"""Seconds between attempts to reach PostgreSQL."""
HANDOVER_TIMEOUT = 0.5
"""Seconds a stop waits for sessions when a standby waits to take over: what is still
under way then is cut short, as after `shutdown_timeout`, so that users are back with
the standby within a second however many sessions there are."""
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 5, 1, 3
"""The server's TCP keepalive for the lock connection: it drops a silent peer (and so
releases its lock) after 8 s, the active process gives up after at most 3 s."""

HELD = """SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
    AND pid = pg_backend_pid() AND classid = $1 AND objid = $2 AND objsubid = 2 AND granted)"""
WAITING = """SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
    AND classid = $1 AND objid = $2 AND objsubid = 2 AND NOT granted)"""
HOLDER = """SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)
    WHERE l.locktype = 'advisory' AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 2
    AND l.granted"""


class AdvisoryLock(Leadership):
    """PostgreSQL: the holder of a session-level advisory lock serves; the others wait."""

    def __init__(self, dsn: str, key: int) -> None:
        super().__init__()
        self.dsn = dsn
        self.key = key
        self._connection: asyncpg.Connection | None = None
        self._watch: asyncio.Task[None] | None = None

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
        self._watch = asyncio.create_task(self._watch_lock(), name="leadership watch")
        log.info("active: %s holds the lock and serves", instance_name())
        _set_role(True)
        return True

    async def _lock(self) -> None:
        """Keep asking for the lock (reconnecting as needed) until it is ours."""
        told, failure = False, ""
        while True:
            try:
                if self._connection is None or self._connection.is_closed():
                    self._connection = await self._connect()
                connection = self._connection
                if await connection.fetchval(
                    "SELECT pg_try_advisory_lock($1, $2)", LOCK_CLASS, self.key,
                    timeout=CHECK_TIMEOUT,
                ):  # fmt: skip
                    return
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
                await asyncio.wait_for(closed.wait(), CHECK_INTERVAL)
            try:
                if closed.is_set():
                    reason = "the lock connection was closed"
                elif await connection.fetchval(HELD, LOCK_CLASS, self.key, timeout=CHECK_TIMEOUT):
                    continue
                else:
                    reason = "PostgreSQL no longer shows the lock as held"
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                reason = f"the lock cannot be confirmed ({exc or type(exc).__name__})"
            log.error("lost the lock: %s; stopping service, a standby may take over", reason)
            self._drop()
            self.lost.set()
            return

    async def standing_down(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        await super().standing_down()

    async def stop_timeout(self, timeout: float) -> float:
        connection = self._connection
        if connection is None or connection.is_closed():
            return timeout
        try:
            waiting = await connection.fetchval(WAITING, LOCK_CLASS, self.key, timeout=0.5)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return timeout
        if not waiting:
            return timeout
        log.info("a standby waits: handing over, sessions get %g s to stop", HANDOVER_TIMEOUT)
        return min(timeout, HANDOVER_TIMEOUT)

    async def close(self) -> None:
        await self.standing_down()
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await asyncio.wait_for(connection.close(), CHECK_TIMEOUT)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                connection.terminate()
