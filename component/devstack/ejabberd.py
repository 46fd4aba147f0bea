"""ejabberd on loopback, the other server operators run: proves the gateway is not
tied to Prosody's XEP-0114 implementation.

Everything lives in the run dir: ejabberdctl reads a ctl-config of ours that runs
Erlang as the current user with a fixed distribution port on 127.0.0.1 (no epmd), and
HOME points at the run dir for the Erlang cookie.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from component.devstack.process import (
    LOOPBACK,
    DaemonLauncher,
    ManagedProcess,
    free_port,
    run_command,
)


def balancing_config(slots: Mapping[str, int]) -> str:
    """ejabberd's top-level `domain_balancing` for several active gateway processes.

    Each component domain gets `type: bare_source` (all of a user's stanzas to one
    connection) with `component_number` fixed slots, which must equal the gateway's
    `cluster.slots`. ejabberd 23.01 crashes every component handshake on a `type`
    without `component_number` (`{badkey,component_number}`), so a slot count is
    required here: never write the one without the other.
    """
    if not slots:
        return ""
    lines = ["domain_balancing:"]
    for domain, number in slots.items():
        if not isinstance(number, int) or not 2 <= number <= 1000:
            raise ValueError(
                f"domain_balancing for {domain}: component_number must be an integer "
                "from 2 to 1000 (ejabberd refuses other values, and 23.01 crashes every "
                "component handshake on a type without component_number); one active "
                "process needs no domain_balancing"
            )
        lines.append(f'  "{domain}": {{type: bare_source, component_number: {number}}}')
    return "\n".join(lines) + "\n"


class Ejabberd(DaemonLauncher):
    """ejabberd with one virtual host `localhost` and one XEP-0114 service per component.

    ``async with Ejabberd(components={"irc.localhost": "secret"}) as e:``; the same
    attributes as ``Prosody`` (host, domain, c2s_port, component_port, register()).
    `balancing={"irc.localhost": 2}` gives that domain two sticky slots
    (`balancing_config`); without it ejabberd spreads stanzas at random.
    """

    run_dir_prefix = "xgw-ejabberd-"
    domain = "localhost"
    host = LOOPBACK

    def __init__(
        self,
        base_dir: Path | str | None = None,
        components: Mapping[str, str] | None = None,
        *,
        balancing: Mapping[str, int] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__(base_dir)
        self.components = dict(components or {})
        self.balancing = dict(balancing or {})
        self.c2s_port = free_port()
        self.component_port = free_port()
        self.dist_port = free_port()
        self.start_timeout = start_timeout
        self._process: ManagedProcess | None = None

    @property
    def config_path(self) -> Path:
        return self.run_dir / "ejabberd.yml"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "logs" / "ejabberd.log"

    def _ctl(self, *args: str) -> list[str]:
        run = self.run_dir
        return [
            "ejabberdctl",
            "--ctl-config", str(run / "ejabberdctl.cfg"),
            "--config", str(self.config_path),
            "--logs", str(run / "logs"),
            "--spool", str(run / "spool"),
            *args,
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.run_dir),
            "EJABBERD_PID_PATH": str(self.run_dir / "pid"),
        }

    def render_config(self) -> str:
        services = "".join(
            f'      "{jid}":\n        password: "{secret}"\n'
            for jid, secret in self.components.items()
        )
        return f"""hosts: ["{self.domain}"]
loglevel: info
acme: {{auto: false}}
certfiles: []
s2s_access: none
auth_method: internal
registration_timeout: infinity
{balancing_config(self.balancing)}listen:
  - port: {self.c2s_port}
    ip: "{LOOPBACK}"
    module: ejabberd_c2s
    starttls_required: false
  - port: {self.component_port}
    ip: "{LOOPBACK}"
    module: ejabberd_service
    global_routes: false
    hosts:
{services}modules:
  mod_roster: {{}}
  mod_disco: {{}}
  mod_ping: {{}}
  mod_offline: {{}}
  mod_version: {{}}
"""

    async def prepare(self) -> None:
        for sub in ("logs", "spool"):
            (self.run_dir / sub).mkdir(exist_ok=True)
        self.config_path.write_text(self.render_config())
        (self.run_dir / "ejabberdctl.cfg").write_text(
            "EXEC_CMD=as_current_user\n"
            f"ERLANG_NODE=xgw{self.dist_port}@localhost\n"
            f"ERL_DIST_PORT={self.dist_port}\n"
            f"INET_DIST_INTERFACE={LOOPBACK}\n"
        )
        self._process = ManagedProcess(
            "ejabberd",
            self._ctl("foreground"),
            log_path=self.run_dir / "ejabberd.stdout.log",
            ready_ports=[self.c2s_port, self.component_port],
            extra_logs=[self.log_path],
            cwd=self.run_dir,
            env=self._env(),
            start_timeout=self.start_timeout,
        )

    async def start(self) -> None:
        await self._entered(self._process).start()

    async def stop(self) -> None:
        if self._process is not None:
            await self._process.stop()

    async def register(self, user: str, password: str) -> str:
        await run_command(
            *self._ctl("register", user, self.domain, password), cwd=self.run_dir, env=self._env()
        )
        return f"{user}@{self.domain}"
