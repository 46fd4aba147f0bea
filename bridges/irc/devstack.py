"""A throwaway ngIRCd server for the IRC bridge's integration tests and the local demo.

The IRC bridge opens one IRC connection per XMPP user from 127.0.0.1, which the default
per-IP limits would cap, and real networks throttle floods, which the bridge must pace
for. This launcher writes an ngIRCd config that lifts the limits, optionally keeps the
flood throttling, adds an operator account and an optional TLS listener, and runs ngIRCd
in the foreground under :class:`~component.devstack.process.ManagedProcess`.
"""

from __future__ import annotations

import os
from pathlib import Path

from component.devstack.process import (
    LOOPBACK,
    DaemonError,
    DaemonLauncher,
    ManagedProcess,
    free_port,
    make_owned_dir,
    make_self_signed_cert,
    run_command,
)

DAEMON_USER, DAEMON_GROUP = "nobody", "nogroup"
"""ngIRCd will not keep running as root; it drops to these after binding its ports."""

INTENDED_WARNING = "('MaxPenaltyTime') is set to 0, this is not recommended!"
"""What ``--configtest`` says about ``flood_throttling=False``; that is the point of it."""


class NgIrcd(DaemonLauncher):
    """ngIRCd on 127.0.0.1, server name ``irc.localhost``, no per-IP or join limits.

    ``flood_throttling=True`` keeps ngIRCd's default penalty-based throttling (what real
    networks do); ``False`` disables it (``MaxPenaltyTime = 0``) for throughput tests.
    With ``tls=True`` a second, TLS-only port (``tls_port``) uses a self-signed cert that
    clients trust through ``ca_file``. :meth:`restart` keeps all ports.
    """

    run_dir_prefix = "xgw-ircd-"
    needs_traversable_dir = True
    host = LOOPBACK

    def __init__(
        self,
        base_dir: Path | str | None = None,
        *,
        port: int | None = None,
        tls: bool = False,
        tls_port: int | None = None,
        flood_throttling: bool = True,
        server_name: str = "irc.localhost",
        oper_name: str = "oper",
        oper_password: str = "operpass",
        motd: str = "xmpp-gateway test server",
        start_timeout: float = 15.0,
    ) -> None:
        super().__init__(base_dir)
        self.port = port or free_port()
        self.tls_port: int | None = (tls_port or free_port()) if tls else None
        self.flood_throttling = flood_throttling
        self.server_name = server_name
        self.oper_name = oper_name
        self.oper_password = oper_password
        self.motd = motd
        self.start_timeout = start_timeout
        self.ca_file: Path | None = None
        self.key_file: Path | None = None
        self._process: ManagedProcess | None = None

    @property
    def config_path(self) -> Path:
        """The generated ``ngircd.conf``."""
        return self.run_dir / "ngircd.conf"

    @property
    def log_path(self) -> Path:
        """ngIRCd's console output (``-n`` logs there instead of syslog)."""
        return self.run_dir / "ngircd.log"

    @property
    def pid(self) -> int | None:
        """PID of the running server, ``None`` when stopped."""
        return self._process.pid if self._process is not None else None

    def render_config(self) -> str:
        """Return the config text; nothing is read from /etc (MOTD inline, no PAM)."""
        sections: dict[str, dict[str, str | int]] = {
            "Global": {
                "Name": self.server_name,
                "Info": "xmpp-gateway test server",
                "AdminInfo1": "xmpp-gateway test server",
                "AdminInfo2": "loopback only",
                "AdminEMail": "root@localhost",
                "Listen": LOOPBACK,
                "Ports": self.port,
                "MotdPhrase": self.motd,
                # Written after dropping privileges, hence a directory owned by nobody.
                "PidFile": str(self.run_dir / "pid" / "ngircd.pid"),
            },
            "Limits": {
                "MaxConnections": 0,
                "MaxConnectionsIP": 0,
                "MaxJoins": 0,
                "MaxPenaltyTime": -1 if self.flood_throttling else 0,
            },
            "Options": {
                "DNS": "no",
                "Ident": "no",
                "PAM": "no",
                "OperCanUseMode": "yes",
                # The default is /etc/ngircd/ngircd.conf.d: keep the host's snippets out.
                "IncludeDir": str(self.run_dir / "conf.d"),
            },
            "Operator": {"Name": self.oper_name, "Password": self.oper_password},
        }
        if os.geteuid() == 0:
            sections["Global"].update(ServerUID=DAEMON_USER, ServerGID=DAEMON_GROUP)
        if self.tls_port is not None and self.ca_file is not None and self.key_file is not None:
            sections["SSL"] = {
                "CertFile": str(self.ca_file),
                "KeyFile": str(self.key_file),
                # Without it GnuTLS builds ngIRCd generate DH parameters at every start.
                "DHFile": str(self.run_dir / "dh.pem"),
                "Ports": self.tls_port,
            }
        out: list[str] = []
        for section, values in sections.items():
            out.append(f"[{section}]")
            out += [f"    {key} = {value}" for key, value in values.items()]
            out.append("")
        return "\n".join(out)

    async def prepare(self) -> None:
        """Write the config (and TLS material), check it with ``--configtest``."""
        make_owned_dir(self.run_dir / "pid", DAEMON_USER, DAEMON_GROUP)
        (self.run_dir / "conf.d").mkdir(exist_ok=True)
        if self.tls_port is not None:
            self.ca_file, self.key_file = await make_self_signed_cert(self.run_dir, "ircd")
            await run_command(
                "openssl", "genpkey", "-genparam", "-algorithm", "DH",
                "-pkeyopt", "group:ffdhe2048", "-out", self.run_dir / "dh.pem",
            )  # fmt: skip
        self.config_path.write_text(self.render_config())
        argv = ["ngircd", "-n", "-p", "-f", str(self.config_path)]
        await self._configtest()
        ports = [self.port] if self.tls_port is None else [self.port, self.tls_port]
        self._process = ManagedProcess(
            "ngircd",
            argv,
            log_path=self.log_path,
            ready_ports=ports,
            cwd=self.run_dir,
            start_timeout=self.start_timeout,
        )

    async def _configtest(self) -> None:
        """Fail with ngIRCd's own complaints: it ignores bad lines and still exits 0."""
        output = await run_command("ngircd", "--configtest", "-f", self.config_path)
        problems = [
            line
            for line in output.splitlines()
            if line.startswith(" - ") and not line.endswith(INTENDED_WARNING)
        ]
        if problems:
            raise DaemonError(
                f"ngircd --configtest complains about {self.config_path}:\n" + "\n".join(problems)
            )

    async def start(self) -> None:
        """Start ngIRCd and wait until its port(s) accept connections."""
        await self._entered(self._process).start()

    async def stop(self) -> None:
        """Stop ngIRCd (SIGTERM, then SIGKILL)."""
        if self._process is not None:
            await self._process.stop()
