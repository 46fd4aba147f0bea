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

SQLite cannot be shared by processes on several machines, so there a second process is
refused: an exclusive `flock` on `<database>.lock`, which the kernel releases when the
process dies (kill -9 included), so a stale file never blocks a restart.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import zlib
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from component import metrics
from component.config import Config

LOCK_CLASS = 0x78677721
"""First half of the advisory lock key ("xgw!"): the gateway's namespace."""


class AlreadyRunning(Exception):
    """Another process serves this SQLite database: a second one must not start."""


def instance_name() -> str:
    """How logs, metrics and the other instances name this process."""
    return f"{socket.gethostname()} pid {os.getpid()}"


def lock_key(config: Config) -> int:
    """Second half of the lock key: one per set of component JIDs.

    Processes serving the same components contend; a deployment that runs its bridges
    as separate processes on one database keeps one active process per bridge set.
    """
    jids = "\n".join(sorted(section.jid for section in config.bridges.values()))
    return zlib.crc32(jids.encode()) & 0x7FFFFFFF


async def first_of(*waits: Awaitable[Any]) -> None:
    """Wait until the first of `waits` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _set_role(active: bool) -> None:
    metrics.ACTIVE.set(1 if active else 0)


class Leadership:
    """One process alone on its database (in-memory SQLite): always active."""

    def __init__(self) -> None:
        self.lost = asyncio.Event()
        """Set when this process stopped holding the right to serve."""

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


def leadership_for(config: Config) -> Leadership:
    """The lock that decides whether this process serves `config`'s database."""
    url = make_url(config.database_url)
    if url.get_backend_name() == "postgresql":
        from component.advisory_lock import AdvisoryLock  # asyncpg: on PostgreSQL only

        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        return AdvisoryLock(dsn, lock_key(config))
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return FileLock(Path(url.database).resolve())
    return Leadership()
