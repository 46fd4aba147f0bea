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

from sqlalchemy.engine import make_url

from bridges.timeouts import within
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
CUT_OFF_RETRY = 5.0
"""Seconds a standby whose XMPP server accepted no connection when it found a free slot
waits before trying the slots again (with several slots: it lets the slot go at once,
it could not serve it)."""
PROBE_TIMEOUT = 2.0
LEAVE_FOR = 5.0
"""Seconds a process that gave a slot up leaves it to the others before trying it
again: the waiting standby polls every `SLOT_POLL` s and takes it first."""
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

    async def standby_waits(self) -> bool:
        """Whether another process stands by to take over (PostgreSQL only)."""
        return False

    async def stop_timeout(self, timeout: float) -> float:
        """How long stopping may wait for sessions: `timeout`, unless a standby waits."""
        return timeout

    async def give_up(self) -> None:
        """Let the slot just served go to a standby (after `App.stranded`)."""

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


async def accepts_connections(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at `host`:`port` (within PROBE_TIMEOUT)."""
    try:
        _, writer = await within(asyncio.open_connection(host, port), PROBE_TIMEOUT)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def leadership_for(config: Config) -> Leadership:
    """The lock that decides whether this process serves `config`'s database."""
    url = make_url(config.database_url)
    if url.get_backend_name() == "postgresql":
        from component.advisory_lock import AdvisoryLock  # asyncpg: on PostgreSQL only

        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        server = (config.server.host, config.server.port) if config.cluster.slots > 1 else None
        return AdvisoryLock(dsn, lock_keys(config), server)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return FileLock(Path(url.database).resolve())
    return Leadership()
