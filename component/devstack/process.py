"""Start, watch and stop local daemons for the test suite and the demo stack.

Every launcher builds on these helpers so that readiness checks, error reports, shutdown
and TLS material behave the same for all daemons. The rules they encode come from running
the daemons as root on a shared machine: listen on 127.0.0.1 only, pick free ports so
parallel runs do not collide, never synchronise with sleeps (wait on a port or a log line
with a deadline), and stop exactly the processes we started, by PID.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import ipaddress
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from bridges.timeouts import within

LOOPBACK = "127.0.0.1"
"""The only address any launcher binds to."""

KEEP_RUN_DIRS_ENV = "XGW_KEEP_RUN_DIRS"
"""Set this environment variable to a non-empty value to keep run dirs for post-mortems."""

_POLL_INTERVAL = 0.02
_TAIL_LINES = 40
_handed_out_ports: set[int] = set()


class DaemonError(RuntimeError):
    """A daemon could not be started, did not become ready, or would not stop."""


# --------------------------------------------------------------------------- ports


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on ``host`` right now.

    The kernel picks it (bind to port 0), so parallel test runs do not collide. Ports are
    never handed out twice by one process, because a launcher asks for several ports before
    starting anything and a port closed a moment ago may be offered again.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out_ports:
            _handed_out_ports.add(port)
            return port
    raise DaemonError(f"could not find a free port on {host}")


async def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Tell whether something accepts TCP connections on ``host:port``.

    Used both to detect readiness and to refuse starting on a port another process holds.
    """
    try:
        _, writer = await within(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def greets_with(host: str, port: int, prefix: bytes, timeout: float = 2.0) -> bool:
    """Tell whether the server on ``host:port`` greets with a line starting with ``prefix``.

    A listening port only proves the kernel accepts connections; a protocol greeting
    (``* OK``, ``220``) proves the worker process behind it finished initialising.
    """
    try:
        reader, writer = await within(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        line = await within(reader.readline(), timeout)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return line.startswith(prefix)


# --------------------------------------------------------------------------- directories


def check_traversable(path: Path) -> None:
    """Raise unless ``path`` and all its parents are searchable by other users (o+x).

    Dovecot, ngIRCd and PostgreSQL drop privileges; behind a 0700 parent (pytest's
    ``tmp_path``, anything from ``mkdtemp``) they fail with misleading errors such as
    ``Temporary authentication failure``, so fail early with a clear message instead.
    """
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            raise DaemonError(
                f"{directory} is not searchable by other users (mode {stat.filemode(mode)}); "
                f"daemons that drop privileges cannot reach {path}. "
                "Use make_run_dir() or chmod o+x every parent."
            )


def check_socket_dir(directory: Path, longest_name: int = 32) -> None:
    """Raise if unix sockets in ``directory`` would exceed the kernel's path limit.

    ``sun_path`` holds 108 bytes; daemons silently truncate or fail on longer paths.
    """
    if len(os.fsencode(directory)) + 1 + longest_name > 100:
        raise DaemonError(f"{directory} is too long to hold unix sockets; use a shorter base dir")


def make_run_dir(prefix: str = "xgw-", parent: Path | str = "/tmp") -> Path:
    """Create a fresh run directory that unprivileged daemon users can traverse.

    ``mkdtemp`` creates mode 0700; daemons that switch to ``nobody``/``dovecot``/``postgres``
    need o+x on it, and a short parent keeps unix socket paths short.
    """
    parent = Path(parent)
    check_traversable(parent)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(0o755)
    return path


def make_owned_dir(path: Path, user: str, group: str | None = None, mode: int = 0o755) -> Path:
    """Create ``path`` (if needed) owned by ``user`` so a daemon running as it can write there."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.chown(path, user, group)
    path.chmod(mode)
    return path


# --------------------------------------------------------------------------- logs


def file_size(path: Path) -> int:
    """Size of ``path`` in bytes, 0 if it does not exist: a log offset to wait from."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def log_tail(path: Path, lines: int = _TAIL_LINES) -> str:
    """Last ``lines`` lines of a log, for error messages that explain a failed start."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 64 * 1024))
            data = handle.read()
    except FileNotFoundError:
        return f"(no log at {path})"
    text = data.decode(errors="replace").splitlines()[-lines:]
    return "\n".join(text) if text else f"({path} is empty)"


def read_new_lines(path: Path, offset: int) -> tuple[list[str], int]:
    """Complete lines appended to ``path`` since byte ``offset``, and the offset after them.

    A trailing partial line is left for the next call so a pattern is never matched against
    half of a line that is still being written.
    """
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    lines = data[:end].decode(errors="replace").splitlines()
    return lines, offset + end


def _format_logs(logs: Sequence[Path]) -> str:
    return "".join(f"\n--- last lines of {log} ---\n{log_tail(log)}" for log in logs)


async def wait_for_log_line(
    path: Path,
    pattern: str | re.Pattern[str],
    *,
    since: int = 0,
    timeout: float = 10.0,
    process: ManagedProcess | None = None,
) -> str:
    """Wait until a line matching ``pattern`` is written to ``path`` after offset ``since``.

    Returns the matching line. Gives up early with the log tail if ``process`` dies, so a
    crashed daemon does not look like a slow one.
    """
    regex = re.compile(pattern) if isinstance(pattern, str) else pattern
    deadline = time.monotonic() + timeout
    offset = since
    while True:
        lines, offset = read_new_lines(path, offset)
        for line in lines:
            if regex.search(line):
                return line
        if process is not None and not process.running:
            raise DaemonError(
                f"{process.name} exited while waiting for /{regex.pattern}/ in {path}"
                + _format_logs([path, *process.logs])
            )
        if time.monotonic() >= deadline:
            raise DaemonError(
                f"no line matching /{regex.pattern}/ in {path} within {timeout:g}s"
                + _format_logs([path])
            )
        await asyncio.sleep(_POLL_INTERVAL)


# --------------------------------------------------------------------------- commands


async def run_command(
    *argv: str | Path,
    timeout: float = 60.0,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run a one-shot command (initdb, prosodyctl, openssl...) and return its output.

    Raises :class:`DaemonError` with the command line and its output when it fails or
    hangs, because a bare exit code says nothing useful in a test report.
    """
    args = [str(arg) for arg in argv]
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=cwd,
        env=dict(env) if env is not None else None,
    )
    try:
        out, _ = await within(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise DaemonError(f"{shlex.join(args)} did not finish within {timeout:g}s") from None
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise DaemonError(f"{shlex.join(args)} failed with exit code {proc.returncode}:\n{text}")
    return text


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def make_self_signed_cert(
    directory: Path,
    name: str = "server",
    hosts: Sequence[str] = ("localhost", LOOPBACK),
) -> tuple[Path, Path]:
    """Create ``name.crt``/``name.key`` in ``directory``: a self-signed cert for ``hosts``.

    The cert is its own CA (clients trust it with ``ssl.create_default_context(cafile=cert)``)
    and carries the extensions strict X.509 verification (Python 3.13+) insists on. EC P-256
    keeps generation near-instant. ``OPENSSL_CONF=/dev/null`` keeps the host's openssl.cnf
    from adding extensions that would clash with ours. The key is world-readable because
    ngIRCd may re-read it after dropping to ``nobody``; it only protects a test server.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    sans = ",".join(f"{'IP' if _is_ip(host) else 'DNS'}:{host}" for host in hosts)
    await run_command(
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "3650", "-subj", f"/CN={hosts[0]}",
        "-keyout", key, "-out", cert,
        "-addext", f"subjectAltName={sans}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,digitalSignature,keyCertSign",
        "-addext", "extendedKeyUsage=serverAuth",
        "-addext", "subjectKeyIdentifier=hash",
        "-addext", "authorityKeyIdentifier=keyid:always",
        env={**os.environ, "OPENSSL_CONF": os.devnull},
    )  # fmt: skip
    cert.chmod(0o644)
    key.chmod(0o644)
    return cert, key


# --------------------------------------------------------------------------- PIDs


def pid_alive(pid: int) -> bool:
    """Tell whether ``pid`` is a live process; zombies count as dead.

    Orphaned daemon processes can linger as zombies until their new parent reaps them;
    they hold no sockets, so waiting for them would only slow shutdown down.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no procfs: fall back to signal 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    state = raw.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``, found through /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        # After the command name: state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


async def terminate_pid(pid: int, timeout: float = 5.0, sig: int = signal.SIGTERM) -> None:
    """Stop a process we started but that is not our child (e.g. a forked postmaster).

    Sends ``sig``, waits up to ``timeout`` seconds, then SIGKILLs.
    """
    for current in (sig, signal.SIGKILL):
        try:
            os.kill(pid, current)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            await asyncio.sleep(_POLL_INTERVAL)
    raise DaemonError(f"process {pid} survived SIGKILL")


# --------------------------------------------------------------------------- processes


class ManagedProcess:
    """One foreground daemon: started, waited for, restarted and stopped by PID.

    stdout and stderr go to ``log_path`` (appended, so restarts keep earlier output).
    Readiness means every port in ``ready_ports`` accepts connections on ``host``; if
    ``ready_pattern`` is given, a matching line appeared in ``ready_log`` after the start;
    and if ``ready_check`` is given, it returned True (polled after the ports answer).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str | Path],
        *,
        log_path: Path,
        ready_ports: Sequence[int] = (),
        host: str = LOOPBACK,
        ready_log: Path | None = None,
        ready_pattern: str | None = None,
        ready_check: Callable[[], Awaitable[bool]] | None = None,
        extra_logs: Sequence[Path] = (),
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 20.0,
        stop_timeout: float = 5.0,
    ) -> None:
        if ready_pattern is not None and ready_log is None:
            ready_log = log_path
        self.name = name
        self.argv = [str(arg) for arg in argv]
        self.log_path = log_path
        self.ready_ports = tuple(ready_ports)
        self.host = host
        self.ready_log = ready_log
        self.ready_pattern = ready_pattern
        self.ready_check = ready_check
        self.extra_logs = tuple(extra_logs)
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        """PID of the running daemon, ``None`` when stopped."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the daemon process is alive (a zombie is not)."""
        proc = self._proc
        return proc is not None and proc.returncode is None and pid_alive(proc.pid)

    @property
    def logs(self) -> tuple[Path, ...]:
        """Every log worth showing when this daemon misbehaves."""
        extra = [log for log in (self.ready_log, *self.extra_logs) if log is not None]
        return tuple(dict.fromkeys([self.log_path, *extra]))

    def failure(self, reason: str) -> DaemonError:
        """Build an error that carries the tails of this daemon's logs."""
        return DaemonError(f"{self.name} {reason}" + _format_logs(self.logs))

    async def start(self) -> None:
        """Start the daemon and wait until it is ready; stop it again if it never gets there."""
        if self._proc is not None and self.running:
            raise DaemonError(f"{self.name} is already running (pid {self.pid})")
        busy = [port for port in self.ready_ports if await port_answers(self.host, port)]
        if busy:
            raise DaemonError(
                f"{self.name}: port(s) {busy} on {self.host} already in use; refusing to start"
            )
        mark = file_size(self.ready_log) if self.ready_log is not None else 0
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%F %T')} starting {shlex.join(self.argv)}\n".encode())
            log.flush()
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                # Own session: a Ctrl-C in the demo's terminal must not hit the daemons
                # before we stop them in order.
                start_new_session=True,
            )
        try:
            await self._wait_ready(self._proc, mark)
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self, proc: asyncio.subprocess.Process, mark: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        pending = list(self.ready_ports)
        regex = re.compile(self.ready_pattern) if self.ready_pattern is not None else None
        check = self.ready_check
        offset = mark
        exited = asyncio.ensure_future(proc.wait())
        try:
            while True:
                if proc.returncode is not None:
                    raise self.failure(f"exited with code {proc.returncode} before it was ready")
                pending = [port for port in pending if not await port_answers(self.host, port)]
                if regex is not None and self.ready_log is not None:
                    lines, offset = read_new_lines(self.ready_log, offset)
                    if any(regex.search(line) for line in lines):
                        regex = None
                if not pending and check is not None and await check():
                    check = None
                if not pending and regex is None and check is None:
                    return
                remaining = deadline - loop.time()
                if remaining <= 0:
                    waiting = [f"port(s) {pending}"] if pending else []
                    if regex is not None:
                        waiting.append(f"/{regex.pattern}/ in {self.ready_log}")
                    if check is not None:
                        waiting.append(f"ready_check {getattr(check, '__name__', check)}")
                    raise self.failure(
                        f"not ready after {self.start_timeout:g}s (waiting for "
                        + " and ".join(waiting)
                        + ")"
                    )
                await asyncio.wait({exited}, timeout=min(_POLL_INTERVAL, remaining))
        finally:
            exited.cancel()

    async def stop(self) -> None:
        """Stop the daemon and every helper it forked; no-op when already stopped.

        The daemon runs in its own process group and every member gets SIGTERM, including
        members forked while shutting down: Dovecot's master alone takes 1-6 s to stop, its
        login processes keep the listening sockets open after it exits (a restart on the
        same ports would fail), and it respawns anvil/log if they die first. Members still
        alive after ``stop_timeout`` seconds get SIGKILL.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        exited = asyncio.ensure_future(proc.wait())
        try:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                signalled: set[int] = set()
                deadline = time.monotonic() + self.stop_timeout
                while True:
                    leader_gone = proc.returncode is not None or not pid_alive(proc.pid)
                    members = set(group_members(proc.pid))
                    if leader_gone and not members:
                        return
                    if time.monotonic() >= deadline:
                        break
                    for pid in members - signalled:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, sig)
                    signalled |= members
                    await asyncio.wait({exited}, timeout=_POLL_INTERVAL)
        finally:
            exited.cancel()
        raise self.failure(f"(process group {proc.pid}) survived SIGKILL")

    async def restart(self) -> None:
        """Stop and start again with the same command line, ports and files."""
        await self.stop()
        await self.start()

    async def wait(self) -> int:
        """Wait for the daemon to exit on its own and return its exit code (for the demo)."""
        if self._proc is None:
            raise DaemonError(f"{self.name} is not running")
        return await self._proc.wait()


# --------------------------------------------------------------------------- launchers


class DaemonLauncher(abc.ABC):
    """Base of the launchers: an async context manager that owns a run directory.

    Without ``base_dir`` a fresh, world-traversable directory under /tmp is created and
    removed on exit (kept when ``XGW_KEEP_RUN_DIRS`` is set; start failures already carry
    the log tails). With ``base_dir`` that directory is used as is and never removed.
    Subclasses implement :meth:`prepare` (write configs, once), :meth:`start` and
    :meth:`stop`; :meth:`restart` is stop + start with the same ports and data.
    """

    run_dir_prefix: ClassVar[str] = "xgw-"
    needs_traversable_dir: ClassVar[bool] = False

    def __init__(self, base_dir: Path | str | None = None) -> None:
        self._base_dir = Path(base_dir).absolute() if base_dir is not None else None
        self._run_dir: Path | None = None
        self._owns_run_dir = False
        self._process: ManagedProcess | None = None
        """The daemon, for launchers that run one process."""

    @property
    def run_dir(self) -> Path:
        """Directory holding this daemon's config, data, sockets and logs."""
        if self._run_dir is None:
            raise DaemonError(f"{type(self).__name__} is not started (use 'async with')")
        return self._run_dir

    @property
    def pid(self) -> int | None:
        """PID of the running daemon, ``None`` when stopped."""
        return self._process.pid if self._process is not None else None

    def _entered(self, process: ManagedProcess | None) -> ManagedProcess:
        """Return ``process``, created by :meth:`prepare`, or explain why it does not exist."""
        if process is None:
            raise DaemonError(f"{type(self).__name__} is not started (use 'async with')")
        return process

    async def __aenter__(self) -> Self:
        if self._base_dir is None:
            self._run_dir = make_run_dir(self.run_dir_prefix)
            self._owns_run_dir = True
        else:
            self._base_dir.mkdir(parents=True, exist_ok=True)
            self._run_dir = self._base_dir
        try:
            if self.needs_traversable_dir:
                check_traversable(self._run_dir)
            await self.prepare()
            await self.start()
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        try:
            await self.stop()
        finally:
            run_dir, self._run_dir = self._run_dir, None
            keep = bool(os.environ.get(KEEP_RUN_DIRS_ENV))
            if run_dir is not None and self._owns_run_dir and not keep:
                shutil.rmtree(run_dir, ignore_errors=True)

    @abc.abstractmethod
    async def prepare(self) -> None:
        """Write configuration and create data once per run dir (before the first start)."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Start the daemon(s) and wait until they accept connections."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop everything :meth:`start` started; safe to call when already stopped."""

    async def restart(self) -> None:
        """Stop and start again: same ports, same data (accounts, mail, tables survive)."""
        await self.stop()
        await self.start()
