"""The gateway as its own OS process, started exactly as an operator starts it.

Integration tests run `xmpp-gateway run -c config.yaml` through this launcher instead of
building the App in their own process: a client library loaded by the test (slixmpp
plugins register stanza classes globally) must not be able to hide what a standalone
gateway lacks. Readiness is the log line each component prints when its stream to the
XMPP server is up, never a sleep.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from bridges.timeouts import within
from component.devstack.process import (
    DaemonError,
    ManagedProcess,
    file_size,
    log_tail,
    run_command,
    wait_for_log_line,
)

CONNECTED = "connected to the XMPP server"
"""What component.gateway logs, after the component's JID, once its link is up."""
STANDING_BY = "standby: (.* is active|all [0-9]+ slots are held); waiting to take"
"""What component.leadership logs when another process holds the lock (or every slot)."""
SERVING_SLOT = "active: .* holds slot ([0-9]+) of [0-9]+ and serves"
"""What component.leadership logs when this process took a slot (`cluster.slots`)."""


def console_script() -> Path:
    """The `xmpp-gateway` entry point installed next to the running interpreter."""
    return Path(sys.executable).with_name("xmpp-gateway")


class GatewayProcess:
    """One `xmpp-gateway run` process with its own config file, database and log.

    `config` is the dict an operator would write as YAML; it is written to
    `run_dir/config.yaml` at every start, so a test may change it between restarts.
    `python_path` is prepended to PYTHONPATH (where third-party bridge plugins live).
    With `migrate`, the first start runs `xmpp-gateway db upgrade` before `run`.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        run_dir: Path,
        *,
        python_path: Sequence[Path] = (),
        migrate: bool = True,
    ) -> None:
        self.config: dict[str, Any] = dict(config)
        self.run_dir = run_dir
        self.config_path = run_dir / "config.yaml"
        self.log_path = run_dir / "gateway.log"
        self.migrate = migrate
        inherited = os.environ.get("PYTHONPATH")
        paths = [str(path) for path in python_path] + ([inherited] if inherited else [])
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        self._process: ManagedProcess | None = None

    def sibling(self, run_dir: Path, **overrides: Any) -> GatewayProcess:
        """Another process on this one's config and database (a hot standby), with its
        own run dir and log; `overrides` replace top-level config sections."""
        other = GatewayProcess({**copy.deepcopy(self.config), **overrides}, run_dir, migrate=False)
        other.env = dict(self.env)
        return other

    @property
    def jids(self) -> list[str]:
        """The component JIDs this gateway serves, one per configured bridge."""
        return [str(section["jid"]) for section in self.config["bridges"].values()]

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    def log_mark(self) -> int:
        """An offset into the log: wait for lines written after it."""
        return file_size(self.log_path)

    def log_text(self, since: int = 0) -> str:
        """What the gateway logged after offset `since`."""
        with self.log_path.open("rb") as handle:
            handle.seek(since)
            return handle.read().decode(errors="replace")

    def log_tail(self, lines: int = 200) -> str:
        return log_tail(self.log_path, lines)

    def _write_config(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config), encoding="utf-8")
        self.config_path.chmod(0o600)  # it holds the component secrets and secret_key

    async def cli(self, *args: str, timeout: float = 60.0) -> str:
        """Run another `xmpp-gateway` command on the same config (`db upgrade`, `users`)."""
        self._write_config()
        return await run_command(
            console_script(), *args, "-c", self.config_path, timeout=timeout, env=self.env
        )

    async def start(
        self, *, wait_connected: bool = True, standby: bool = False, timeout: float = 20.0
    ) -> None:
        """Start the process (after `db upgrade` if `migrate`) and wait for every link.

        With `wait_connected=False` it returns once the process runs, for tests of a
        gateway that cannot reach its server; with `standby` once it says it waits for
        another process to give up the lock.
        """
        if self.running:
            raise DaemonError(f"the gateway in {self.run_dir} is already running")
        if self.migrate:
            await self.cli("db", "upgrade")
            self.migrate = False  # once: a restart keeps the database as it is
        self._write_config()
        mark = self.log_mark()
        self._process = ManagedProcess(
            "xmpp-gateway",
            [console_script(), "run", "-c", self.config_path],
            log_path=self.log_path,
            env=self.env,
            cwd=self.run_dir,
            start_timeout=timeout,
            stop_timeout=10.0,
        )
        await self._process.start()
        if not wait_connected:
            return
        try:
            if standby:
                await self.wait_for_log(STANDING_BY, since=mark, timeout=timeout)
            else:
                await self.wait_connected(since=mark, timeout=timeout)
        except BaseException:
            await self.kill()
            raise

    async def wait_connected(self, *, since: int, timeout: float = 20.0) -> None:
        """Wait until every component logged that its link came up after `since`."""
        for jid in self.jids:
            await self.wait_for_log(
                rf"\b{re.escape(jid)}: {CONNECTED}", since=since, timeout=timeout
            )

    async def wait_for_log(
        self, pattern: str | re.Pattern[str], *, since: int = 0, timeout: float = 15.0
    ) -> str:
        """The first log line after offset `since` matching `pattern`; fails early if the
        process dies."""
        return await wait_for_log_line(
            self.log_path, pattern, since=since, timeout=timeout, process=self._process
        )

    async def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, as an operator stops it, and return its exit code (None: not running).

        A gateway that does not exit on its own within `timeout` is killed and reported:
        hanging in shutdown is a bug, not something to paper over.
        """
        process, self._process = self._process, None
        if process is None or process.pid is None:
            return None
        try:
            os.kill(process.pid, signal.SIGTERM)
            code = await within(process.wait(), timeout)
        except ProcessLookupError:
            code = await process.wait()
        except TimeoutError:
            await self._dump_stacks(process)
            raise process.failure(f"did not exit within {timeout:g}s of SIGTERM") from None
        finally:
            await process.stop()  # reaps it and anything left in its process group
        return code

    async def _dump_stacks(self, process: ManagedProcess) -> None:
        """Have a hanging gateway print its thread stacks into its log (SIGUSR1)."""
        assert process.pid is not None
        mark = self.log_mark()
        with contextlib.suppress(ProcessLookupError, TimeoutError, DaemonError):
            os.kill(process.pid, signal.SIGUSR1)
            await wait_for_log_line(self.log_path, "most recent call first", since=mark, timeout=3)

    async def wait_exit(self, timeout: float = 15.0) -> int:
        """Wait for a process that ends by itself (a refused start) and return its code."""
        process, self._process = self._process, None
        if process is None:
            raise DaemonError(f"the gateway in {self.run_dir} is not running")
        try:
            return await within(process.wait(), timeout)
        finally:
            await process.stop()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def kill(self) -> None:
        """SIGKILL: the gateway dies without any chance to clean up."""
        process, self._process = self._process, None
        if process is None or process.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        await process.stop()

    async def restart(self, *, timeout: float = 20.0) -> None:
        """Stop (SIGTERM) and start again with the same config file and database.

        A gateway that does not exit cleanly (code 0) fails it: a restart must not hide that.
        """
        code = await self.stop()
        if code not in (0, None):
            raise DaemonError(f"the gateway in {self.run_dir} exited with {code} on SIGTERM")
        await self.start(timeout=timeout)
