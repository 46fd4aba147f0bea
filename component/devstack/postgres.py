"""A throwaway PostgreSQL cluster for integration tests and the local demo.

The gateway's SQLAlchemy models must work on PostgreSQL, not only SQLite, and that needs a
real server. initdb and postgres refuse to run as root, so the cluster is created and run
as the ``postgres`` user (via runuser) inside a directory that user owns, listening on
127.0.0.1 and a socket dir inside the run dir; no system cluster is touched.
"""

from __future__ import annotations

import os
import shlex
import signal
from pathlib import Path

import asyncpg

from component.devstack.process import (
    LOOPBACK,
    DaemonError,
    DaemonLauncher,
    check_socket_dir,
    free_port,
    log_tail,
    make_owned_dir,
    port_answers,
    run_command,
    terminate_pid,
)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
"""Debian's location of the PostgreSQL 15 server binaries."""


class Postgres(DaemonLauncher):
    """PostgreSQL on 127.0.0.1 with trust auth for user ``postgres``.

    ``async with Postgres() as pg:`` then use ``pg.url`` with SQLAlchemy or ``pg.dsn``
    with asyncpg. :meth:`restart` keeps the port and the data.
    """

    run_dir_prefix = "xgw-pg-"
    needs_traversable_dir = True
    host = LOOPBACK
    user = "postgres"

    def __init__(
        self,
        base_dir: Path | str | None = None,
        *,
        port: int | None = None,
        bin_dir: Path = PG_BIN,
        os_user: str = "postgres",
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__(base_dir)
        self.port = port or free_port()
        self.bin_dir = bin_dir
        self.os_user = os_user
        self.start_timeout = start_timeout
        self._pid: int | None = None

    @property
    def pg_dir(self) -> Path:
        """Directory owned by the ``postgres`` user: data dir, socket and server log."""
        return self.run_dir / "pg"

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (``PGDATA``)."""
        return self.pg_dir / "data"

    @property
    def log_path(self) -> Path:
        """The server log written by ``pg_ctl -l``."""
        return self.pg_dir / "postgres.log"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` database."""
        return self.database_url("postgres")

    @property
    def dsn(self) -> str:
        """libpq/asyncpg DSN of the ``postgres`` database."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        """SQLAlchemy (asyncpg driver) URL of database ``name`` on this server."""
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{name}"

    @property
    def pid(self) -> int | None:
        """PID of the postmaster, ``None`` when stopped."""
        return self._pid

    async def _as_postgres(self, tool: str, *args: str | Path, timeout: float = 60.0) -> str:
        """Run a server tool as the cluster's OS user (they all refuse root)."""
        argv = [self.bin_dir / tool, *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", self.os_user, "--", *argv]
        return await run_command(*argv, timeout=timeout, cwd=self.pg_dir)

    async def prepare(self) -> None:
        """Create the cluster with initdb (about 0.7 s), once per run dir."""
        check_socket_dir(self.pg_dir)
        if os.geteuid() == 0:
            make_owned_dir(self.pg_dir, self.os_user, mode=0o700)
        else:
            self.pg_dir.mkdir(mode=0o700, exist_ok=True)
        if not (self.data_dir / "PG_VERSION").exists():
            await self._as_postgres(
                "initdb", "-D", self.data_dir, "-A", "trust", "-U", self.user, "-E", "UTF8",
                "--no-sync",
            )  # fmt: skip

    async def start(self) -> None:
        """Start the postmaster with ``pg_ctl -w`` and remember its PID for a forced stop."""
        if await port_answers(self.host, self.port):
            raise DaemonError(f"postgres: port {self.port} on {self.host} already in use")
        options = shlex.join(
            ["-k", str(self.pg_dir), "-c", f"listen_addresses={self.host}", "-p", str(self.port)]
        )
        try:
            await self._as_postgres(
                "pg_ctl", "-D", self.data_dir, "-o", options, "-l", self.log_path,
                "-w", "-t", str(int(self.start_timeout)), "start",
                timeout=self.start_timeout + 5,
            )  # fmt: skip
        except DaemonError as exc:
            # pg_ctl gives up after -t seconds but leaves a slow postmaster running.
            if (pid := self._postmaster_pid()) is not None:
                await terminate_pid(pid, sig=signal.SIGINT)
            raise DaemonError(f"{exc}\n--- {self.log_path} ---\n{log_tail(self.log_path)}") from exc
        self._pid = self._postmaster_pid()

    def _postmaster_pid(self) -> int | None:
        """PID from ``postmaster.pid`` if that process is a postgres, else ``None``.

        The file can be stale after a crash; its PID may belong to an unrelated process.
        """
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except (OSError, IndexError, ValueError):
            return None
        return pid if comm == "postgres" else None

    async def stop(self) -> None:
        """Fast shutdown via pg_ctl (drops client connections); SIGKILL if that fails."""
        pid, self._pid = self._pid, None
        if pid is None:
            return
        try:
            await self._as_postgres("pg_ctl", "-D", self.data_dir, "-m", "fast", "-w", "stop")
        finally:
            # No-op once pg_ctl has stopped it; SIGINT is PostgreSQL's "fast shutdown".
            await terminate_pid(pid, sig=signal.SIGINT)

    async def create_database(self, name: str) -> str:
        """Create database ``name`` and return its SQLAlchemy URL (one per test, say)."""
        quoted = '"' + name.replace('"', '""') + '"'
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f"CREATE DATABASE {quoted}")
        finally:
            await conn.close()
        return self.database_url(name)
