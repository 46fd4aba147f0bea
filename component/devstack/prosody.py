"""A throwaway Prosody XMPP server for integration tests and the local demo.

The gateway is an XEP-0114 component, so the only honest test peer is a real server that
routes stanzas between clients and components. This launcher writes a self-contained
config (loopback only, free ports, data/log/pid inside the run dir) and runs Prosody in
the foreground under :class:`~component.devstack.process.ManagedProcess`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from component.devstack.process import (
    LOOPBACK,
    DaemonLauncher,
    ManagedProcess,
    file_size,
    free_port,
    make_self_signed_cert,
    run_command,
    wait_for_log_line,
)

MODULES = ("roster", "saslauth", "disco", "ping", "register", "version", "time", "offline")
"""Enough for clients to log in, register, keep rosters and for gateway tests to probe."""


def _lua(value: str | int | bool) -> str:
    """Render a Python value as a Lua literal (strings escaped, so secrets may contain quotes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _lua_list(values: list[str] | list[int]) -> str:
    return "{ " + ", ".join(_lua(v) for v in values) + " }" if values else "{}"


class Prosody(DaemonLauncher):
    """Prosody on 127.0.0.1 with one ``VirtualHost`` and one ``Component`` per entry.

    ``async with Prosody(components={"irc.localhost": "secret"}) as p:`` then connect
    clients to ``(p.host, p.c2s_port)`` and components to ``(p.host, p.component_port)``.
    Ports default to free ones; pass fixed ones for a demo that real clients connect to.
    :meth:`restart` keeps ports and data, so registered accounts survive.
    """

    run_dir_prefix = "xgw-prosody-"
    domain = "localhost"
    host = LOOPBACK

    def __init__(
        self,
        base_dir: Path | str | None = None,
        components: Mapping[str, str] | None = None,
        *,
        c2s_port: int | None = None,
        component_port: int | None = None,
        stanza_size_limit: int | None = None,
        start_timeout: float = 20.0,
        upload_limit: int | None = None,
        upload_tls: bool = False,
        upload_url: str | None = None,
    ) -> None:
        super().__init__(base_dir)
        self.components = dict(components or {})
        self.c2s_port = c2s_port or free_port()
        self.component_port = component_port or free_port()
        self.stanza_size_limit = stanza_size_limit
        self.upload_limit = upload_limit
        """With a limit (bytes), Prosody's own mod_http_file_share serves XEP-0363 as
        `upload.localhost`, over HTTP on `http_port` (HTTPS with `upload_tls`, under a
        self-signed certificate for 127.0.0.1 that `ca_file` names once started)."""
        self.upload_tls = upload_tls
        self.upload_url = upload_url
        """The base URL the upload slots name (default: Prosody's own `http_port`); a
        test puts a proxy there that forwards to `http_port`."""
        self.http_port = free_port() if upload_limit is not None else None
        self.ca_file: Path | None = None
        self.start_timeout = start_timeout
        self._start_mark = 0

    @property
    def config_path(self) -> Path:
        """The generated ``prosody.cfg.lua``."""
        return self.run_dir / "prosody.cfg.lua"

    @property
    def log_path(self) -> Path:
        """Prosody's own log (info level): where component authentication shows up."""
        return self.run_dir / "prosody.log"

    def render_config(self) -> str:
        """Return the config text: everything inside the run dir, nothing from /etc."""
        run, log = self.run_dir, _lua(str(self.log_path))
        settings: dict[str, str] = {
            "pidfile": _lua(str(run / "prosody.pid")),
            "data_path": _lua(str(run / "data")),
            "certificates": _lua(str(run / "certs")),
            "log": f'{{ {{ levels = {{ min = "info" }}, to = "file", filename = {log} }} }}',
            "interfaces": _lua_list([LOOPBACK]),
            "c2s_interfaces": _lua_list([LOOPBACK]),
            "component_interfaces": _lua_list([LOOPBACK]),
            "c2s_ports": _lua_list([self.c2s_port]),
            "component_ports": _lua_list([self.component_port]),
            "s2s_ports": "{}",
            "http_ports": "{}",
            "https_ports": "{}",
            "c2s_direct_tls_ports": "{}",
            "legacy_ssl_ports": "{}",
            "modules_enabled": _lua_list(list(MODULES)),
            "modules_disabled": _lua_list(["s2s"]),
            "authentication": _lua("internal_plain"),
            "c2s_require_encryption": _lua(False),
            "allow_unencrypted_plain_auth": _lua(True),
            "allow_registration": _lua(True),
            # Nagle delays short bursts; the gateway's latency tests must not measure it.
            "network_settings": "{ nagle = false }",
        }
        if os.geteuid() == 0:
            settings["run_as_root"] = _lua(True)
            settings["prosody_user"] = _lua("root")
        if self.stanza_size_limit is not None:
            settings["c2s_stanza_size_limit"] = _lua(self.stanza_size_limit)
        if self.http_port is not None:
            scheme = "https" if self.upload_tls else "http"
            settings[f"{scheme}_ports"] = _lua_list([self.http_port])
            settings[f"{scheme}_interfaces"] = _lua_list([LOOPBACK])
            own_url = f"{scheme}://{LOOPBACK}:{self.http_port}/"
            settings["http_external_url"] = _lua(self.upload_url or own_url)
            if self.upload_tls:
                cert, key = (
                    self.run_dir / "certs" / "https.crt",
                    self.run_dir / "certs" / "https.key",
                )
                settings["https_ssl"] = (
                    f"{{ certificate = {_lua(str(cert))}, key = {_lua(str(key))} }}"
                )
            # requests name 127.0.0.1 as Host, which is no Prosody host: serve them anyway
            settings["http_default_host"] = _lua(self.upload_jid)
        lines = [f"{key} = {value}" for key, value in settings.items()]
        lines += ["", f"VirtualHost {_lua(self.domain)}"]
        for jid, secret in self.components.items():
            lines += ["", f"Component {_lua(jid)}", f"    component_secret = {_lua(secret)}"]
        if self.upload_limit is not None:
            lines += [
                "",
                f"Component {_lua(self.upload_jid)} {_lua('http_file_share')}",
                f"    http_file_share_size_limit = {self.upload_limit}",
                f"    http_file_share_daily_quota = {1024 * 1024 * 1024 * 1024}",
            ]
        return "\n".join(lines) + "\n"

    @property
    def upload_jid(self) -> str:
        """The XEP-0363 service's JID (when `upload_limit` is set)."""
        return f"upload.{self.domain}"

    async def prepare(self) -> None:
        """Write the config and create the data dir (once; restarts reuse both)."""
        for sub in ("data", "certs"):
            (self.run_dir / sub).mkdir(exist_ok=True)
        if self.upload_tls and self.ca_file is None:
            self.ca_file, _key = await make_self_signed_cert(
                self.run_dir / "certs", "https", hosts=(LOOPBACK, "localhost")
            )
        self.config_path.write_text(self.render_config())
        self._process = ManagedProcess(
            "prosody",
            ["prosody", "-F", "--config", self.config_path],
            log_path=self.run_dir / "prosody.stdout.log",
            ready_ports=self._ports(),
            extra_logs=[self.log_path],
            cwd=self.run_dir,
            start_timeout=self.start_timeout,
        )

    def _ports(self) -> list[int]:
        """Ports to wait for: Prosody opens the component port only if a Component exists."""
        ports = [self.c2s_port, self.component_port] if self.components else [self.c2s_port]
        return ports + ([self.http_port] if self.http_port is not None else [])

    async def start(self) -> None:
        """Start Prosody and wait until its ports accept connections."""
        process = self._entered(self._process)
        self._start_mark = self.log_mark()
        await process.start()

    async def stop(self) -> None:
        """Stop Prosody (SIGTERM, then SIGKILL); accounts stay on disk."""
        if self._process is not None:
            await self._process.stop()

    def log_mark(self) -> int:
        """Current end of ``prosody.log``: pass it as ``since=`` to wait for later lines only."""
        return file_size(self.log_path)

    async def register(self, user: str, password: str) -> str:
        """Create account ``user@localhost`` with prosodyctl and return its bare JID.

        Works while the server runs: the internal storage is read from disk at login.
        """
        await run_command(
            "prosodyctl", "--config", self.config_path, "register", user, self.domain, password,
            cwd=self.run_dir,
        )  # fmt: skip
        return f"{user}@{self.domain}"

    async def wait_component_connected(
        self, jid: str, timeout: float = 10.0, since: int | None = None
    ) -> None:
        """Wait until component ``jid`` has authenticated on the component port.

        Only lines written after ``since`` count (default: the last start), so after a
        restart an old authentication does not satisfy the wait.
        """
        pattern = re.escape(f"{jid}:component") + r".*successfully authenticated"
        await wait_for_log_line(
            self.log_path,
            pattern,
            since=self._start_mark if since is None else since,
            timeout=timeout,
            process=self._process,
        )
