"""Which of several `xmpp-gateway run` processes on one database serves: a hot standby.

Any number of processes may run with the same config on one PostgreSQL database. The
one holding a session-level advisory lock is active: it connects the components and
runs every session. The others wait in `pg_advisory_lock` and PostgreSQL wakes the
next one the moment the lock is free. Why an advisory lock, and not a lease row with a
heartbeat: PostgreSQL itself releases a session lock when the holder's connection
ends, and the kernel closes that connection when the process dies, even by kill -9, so
a standby takes over within milliseconds instead of after a lease timeout, and no clock
or timeout decides who is active. The lock lives on a connection of its own, outside
the SQLAlchemy pool (a pooled connection would be recycled and the lock go with it);
the database must be reached directly, not through a transaction-pooling bouncer.

Losing that connection loses the lock, and a standby may then take over: the active
process checks the lock every `CHECK_INTERVAL` s (and hears at once when the server
closes the connection), stops serving when it cannot confirm it, and waits as a
standby again. The lock connection asks the server for TCP keepalives that declare it
dead only after `KEEPALIVE_IDLE + KEEPALIVE_COUNT * KEEPALIVE_INTERVAL` s, later than
the active process gives up (`CHECK_INTERVAL + CHECK_TIMEOUT`), so after a network
split the old process has stopped before a standby starts.

With `cluster.slots: N` (ejabberd's `domain_balancing` with `component_number: N`) there
are N such locks, one per slot: each active process holds one, and a standby polls
them every `SLOT_POLL` s (it cannot wait in `pg_advisory_lock` on several at once) and
takes the first that frees. Every process on PostgreSQL also writes a row in
`gateway_instances` naming its lock connection, which is how the others
(component.ownership) tell a live instance from a dead one, and what the operators'
ad-hoc command lists.

SQLite cannot be shared by processes on several machines, so there a second process is
refused: an exclusive `flock` on `<database>.lock`, which the kernel releases when the
process dies (kill -9 included), so a stale file never blocks a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import uuid
import zlib
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from component import metrics
from component.config import Config

log = logging.getLogger(__name__)

LOCK_CLASS = 0x78677721
"""First half of the advisory lock key ("xgw!"): the gateway's namespace."""
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
SLOT_POLL = 0.2
"""Seconds between a standby's tries of the slot locks when there are several."""
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


class AlreadyRunning(Exception):
    """Another process serves this SQLite database: a second one must not start."""


def instance_name() -> str:
    """How logs, metrics and the other instances name this process."""
    return f"{socket.gethostname()} pid {os.getpid()}"


def lock_keys(config: Config) -> list[int]:
    """Second halves of the lock keys: one per slot and set of component JIDs.

    Processes serving the same components contend; a deployment that runs its bridges
    as separate processes on one database keeps one active process per bridge set
    (and slot). Slot 0 keeps the key of a deployment without `cluster`.
    """
    jids = "\n".join(sorted(section.jid for section in config.bridges.values()))
    return [
        zlib.crc32((jids + (f"\nslot {slot}" if slot else "")).encode()) & 0x7FFFFFFF
        for slot in range(config.cluster.slots)
    ]


async def first_of(*waits: Awaitable[Any]) -> None:
    """Wait until the first of `waits` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _set_role(active: bool, slot: int | None = None) -> None:
    metrics.ACTIVE.set(1 if active else 0)
    metrics.SLOT.set(slot if active and slot is not None else -1)


REGISTER = """INSERT INTO gateway_instances
        (id, host, pid, backend_pid, backend_start, role, slot, since)
    SELECT $1, $2, $3, pid, backend_start, $4, $5, now()
    FROM pg_stat_activity WHERE pid = pg_backend_pid()
    ON CONFLICT (id) DO UPDATE SET backend_pid = EXCLUDED.backend_pid,
        backend_start = EXCLUDED.backend_start, role = EXCLUDED.role,
        slot = EXCLUDED.slot, since = EXCLUDED.since"""
ALIVE = """EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = i.backend_pid
    AND a.backend_start = i.backend_start)"""
"""SQL: whether instance row `i` still has its lock connection, i.e. is alive."""
FORGET_DEAD = f"DELETE FROM gateway_instances i WHERE NOT {ALIVE}"
STANDBY_REGISTERED = f"""SELECT EXISTS (SELECT 1 FROM gateway_instances i
    WHERE i.role = 'standby' AND i.id <> $1 AND {ALIVE})"""


class Leadership:
    """One process alone on its database (in-memory SQLite): always active."""

    def __init__(self) -> None:
        self.lost = asyncio.Event()
        """Set when this process stopped holding the right to serve."""
        self.instance_id = str(uuid.uuid4())
        """How other instances and the operators' command name this process."""
        self.slot: int | None = None
        """The slot this process holds while it serves (0 without `cluster`)."""
        self.slots = 1

    async def register(self) -> None:
        """Write (or refresh) this instance's row in `gateway_instances`, if any."""

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this process may serve; False if `stop` is set first."""
        _set_role(not stop.is_set())
        return not stop.is_set()

    async def standing_down(self) -> None:
        """The term is over (stop or loss): stop watching the lock."""
        _set_role(False)

    async def stop_timeout(self, timeout: float) -> float:
        """How long stopping may wait for sessions: `timeout`, unless a standby waits."""
        return timeout

    async def close(self) -> None:
        """Give the right to serve to the next process."""

    def claim(self) -> None:
        """Refuse at once (AlreadyRunning) if this process must not even stand by."""

    async def __aenter__(self) -> Leadership:
        self.claim()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()


class FileLock(Leadership):
    """SQLite: an exclusive flock on `<database>.lock`; a second process is refused."""

    def __init__(self, database: Path) -> None:
        super().__init__()
        self.database = database
        self.path = database.with_name(database.name + ".lock")
        self._fd: int | None = None

    def claim(self) -> None:
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise AlreadyRunning(
                f"{self.database} is in use by xmpp-gateway ({holder}), which holds "
                f"{self.path}: a SQLite database serves one process only; run a standby "
                "on PostgreSQL (database_url: postgresql+asyncpg://...)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{instance_name()}\n".encode())
        self._fd = fd

    async def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # the flock goes with the last descriptor
            self._fd = None


class AdvisoryLock(Leadership):
    """PostgreSQL: the holder of a session-level advisory lock serves; the others wait."""

    def __init__(self, dsn: str, keys: list[int]) -> None:
        super().__init__()
        self.dsn = dsn
        self.keys = keys
        self.slots = len(keys)
        self.key = keys[0]
        """The key of the slot held, or last tried."""
        self._connection: asyncpg.Connection | None = None
        self._watch: asyncio.Task[None] | None = None
        self._busy = asyncio.Lock()
        """One query at a time on the lock connection (the watch and the registry)."""

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
        """Take the first free slot lock; False when every slot is held."""
        for key in self.keys:
            if await connection.fetchval(
                "SELECT pg_try_advisory_lock($1, $2)", LOCK_CLASS, key, timeout=CHECK_TIMEOUT
            ):
                self.key = key
                return True
        return False

    async def _lock(self) -> None:
        """Keep asking for the lock (reconnecting as needed) until it is ours."""
        told, failure = False, ""
        while True:
            try:
                if self._connection is None or self._connection.is_closed():
                    self._connection = await self._connect()
                    await self.register()
                connection = self._connection
                if await self._try_slots(connection):
                    return
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
                await asyncio.wait_for(closed.wait(), CHECK_INTERVAL)
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

    async def stop_timeout(self, timeout: float) -> float:
        connection = self._connection
        if connection is None or connection.is_closed():
            return timeout
        try:
            async with self._busy:
                if self.slots > 1:  # standbys poll the slots rather than wait on one
                    waiting = await connection.fetchval(
                        STANDBY_REGISTERED, self.instance_id, timeout=0.5
                    )
                else:
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
                with contextlib.suppress(asyncpg.PostgresError):
                    await connection.execute(
                        "DELETE FROM gateway_instances WHERE id = $1", self.instance_id,
                        timeout=CHECK_TIMEOUT,
                    )  # fmt: skip
                await asyncio.wait_for(connection.close(), CHECK_TIMEOUT)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                connection.terminate()


def leadership_for(config: Config) -> Leadership:
    """The lock that decides whether this process serves `config`'s database."""
    url = make_url(config.database_url)
    if url.get_backend_name() == "postgresql":
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        return AdvisoryLock(dsn, lock_keys(config))
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return FileLock(Path(url.database).resolve())
    return Leadership()
