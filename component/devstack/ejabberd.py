"""ejabberd on loopback, the other server operators run: proves the gateway is not
tied to Prosody's XEP-0114 implementation.

Everything lives in the run dir: ejabberdctl reads a ctl-config of ours that runs
Erlang as the current user with a fixed distribution port on 127.0.0.1 (no epmd), and
HOME points at the run dir for the Erlang cookie.

`EjabberdCluster` is two such nodes joined into one cluster, as verified in the notes
(shared/notes/inspircd-and-ejabberd-cluster.md, part 2): epmd-less nodes cannot
cluster when their distribution ports differ (each assumes the others listen on its
own port), so the nodes register with a private epmd on a free loopback port
(`ERL_EPMD_PORT`, never the machine's shared 4369, where ejabberdctl would look at
other people's nodes), each listens for distribution on a fixed port of its own, both
share one cookie, and node B joins node A with `ejabberdctl join_cluster`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from component.devstack.process import (
    LOOPBACK,
    DaemonError,
    DaemonLauncher,
    ManagedProcess,
    file_size,
    free_port,
    run_command,
    wait_for_log_line,
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
    (`balancing_config`); without it ejabberd spreads stanzas at random. With
    `epmd_port` the node registers with that (private) epmd instead of running
    epmd-less, so that it can join a cluster (`EjabberdCluster`); `cookie` is the Erlang
    cookie, the same on every node of a cluster.
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
        epmd_port: int | None = None,
        cookie: str | None = None,
        node_prefix: str = "xgw",
    ) -> None:
        super().__init__(base_dir)
        self.components = dict(components or {})
        self.balancing = dict(balancing or {})
        self.c2s_port = free_port()
        self.component_port = free_port()
        self.dist_port = free_port()
        self.node = f"{node_prefix}{self.dist_port}@localhost"
        """The Erlang node name, unique on the machine (other people's nodes run too)."""
        self.epmd_port = epmd_port
        self.cookie = cookie or secrets.token_hex(16)
        self.start_timeout = start_timeout

    @property
    def config_path(self) -> Path:
        return self.run_dir / "ejabberd.yml"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "logs" / "ejabberd.log"

    def _ctl(self, *args: str, node: bool = False) -> list[str]:
        """ejabberdctl with our files; `node`: the one that starts the node itself."""
        run = self.run_dir
        return [
            "ejabberdctl",
            "--ctl-config", str(run / ("ejabberdctl-node.cfg" if node else "ejabberdctl.cfg")),
            "--config", str(self.config_path),
            "--logs", str(run / "logs"),
            "--spool", str(run / "spool"),
            *args,
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "HOME": str(self.run_dir),
            "EJABBERD_PID_PATH": str(self.run_dir / "pid"),
        }
        if self.epmd_port is not None:
            env.update(ERL_EPMD_PORT=str(self.epmd_port), ERL_EPMD_ADDRESS=LOOPBACK)
        return env

    def _ctl_config(self, *, node: bool) -> str:
        """ejabberdctl.cfg: as the current user, distribution on 127.0.0.1 only.

        Epmd-less (`ERL_DIST_PORT`) alone; with a private epmd, no epmd of the node's
        own (`-start_epmd false`) and, for the node itself only (`node`), a fixed
        distribution port (`FIREWALL_WINDOW`): ejabberdctl's commands run a node of
        their own with the same options, which would find that port taken.
        """
        lines = [
            "EXEC_CMD=as_current_user",
            f"ERLANG_NODE={self.node}",
            f"INET_DIST_INTERFACE={LOOPBACK}",
        ]
        if self.epmd_port is None:
            lines.append(f"ERL_DIST_PORT={self.dist_port}")
        else:
            lines.append('ERL_OPTIONS="-start_epmd false"')
            if node:
                lines.append(f"FIREWALL_WINDOW={self.dist_port}-{self.dist_port}")
        return "\n".join(lines) + "\n"

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
        (self.run_dir / "ejabberdctl.cfg").write_text(self._ctl_config(node=False))
        (self.run_dir / "ejabberdctl-node.cfg").write_text(self._ctl_config(node=True))
        cookie = self.run_dir / ".erlang.cookie"
        cookie.unlink(missing_ok=True)
        cookie.write_text(self.cookie)
        cookie.chmod(0o400)  # Erlang refuses a cookie file others can read
        self._process = ManagedProcess(
            "ejabberd",
            self._ctl("foreground", node=True),
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

    async def ctl(self, *args: str) -> str:
        """Run an ejabberdctl command against this node."""
        return await run_command(*self._ctl(*args), cwd=self.run_dir, env=self._env())

    async def register(self, user: str, password: str) -> str:
        await self.ctl("register", user, self.domain, password)
        return f"{user}@{self.domain}"

    async def join_cluster(self, other: Ejabberd) -> None:
        """Join `other`'s cluster, and return once this node's listeners are back.

        ejabberd restarts its listeners after joining (they stop and come back about
        0.4 s apart): the ports answer again only after the last one started.
        """
        mark = file_size(self.log_path)
        await self.ctl("join_cluster", other.node)
        for port in (self.c2s_port, self.component_port):
            await wait_for_log_line(
                self.log_path, rf"Start accepting TCP connections at 127\.0\.0\.1:{port} ",
                since=mark, timeout=self.start_timeout, process=self._process,
            )  # fmt: skip


class EjabberdCluster(DaemonLauncher):
    """Two ejabberd nodes on loopback in one cluster, with a private epmd (see above).

    `a` and `b` are the nodes (each an `Ejabberd` with its own c2s and component port,
    spool and log, in the cluster's run dir); users registered on one are known on
    both, and `domain_balancing`'s slots are cluster-wide. The cluster itself looks
    like node `a` to code that takes one server (host, domain, c2s_port,
    component_port, register()).
    """

    run_dir_prefix = "xgw-ejcluster-"
    domain = Ejabberd.domain
    host = LOOPBACK

    def __init__(
        self,
        components: Mapping[str, str] | None = None,
        *,
        balancing: Mapping[str, int] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__()
        self.components = dict(components or {})
        self.balancing = dict(balancing or {})
        self.start_timeout = start_timeout
        self.epmd_port = free_port()
        self._nodes: tuple[Ejabberd, Ejabberd] | None = None
        self._epmd: ManagedProcess | None = None
        self._running = contextlib.AsyncExitStack()

    @property
    def nodes(self) -> tuple[Ejabberd, Ejabberd]:
        if self._nodes is None:
            raise DaemonError("EjabberdCluster is not started (use 'async with')")
        return self._nodes

    @property
    def a(self) -> Ejabberd:
        return self.nodes[0]

    @property
    def b(self) -> Ejabberd:
        return self.nodes[1]

    @property
    def c2s_port(self) -> int:
        return self.a.c2s_port

    @property
    def component_port(self) -> int:
        return self.a.component_port

    async def prepare(self) -> None:
        cookie = secrets.token_hex(16)
        self._nodes = (
            Ejabberd(
                self.run_dir / "a", self.components, balancing=self.balancing,
                start_timeout=self.start_timeout, epmd_port=self.epmd_port, cookie=cookie,
                node_prefix="xgwA",
            ),
            Ejabberd(
                self.run_dir / "b", self.components, balancing=self.balancing,
                start_timeout=self.start_timeout, epmd_port=self.epmd_port, cookie=cookie,
                node_prefix="xgwB",
            ),
        )  # fmt: skip
        self._epmd = ManagedProcess(
            "epmd",
            ["epmd", "-port", str(self.epmd_port), "-address", LOOPBACK],
            log_path=self.run_dir / "epmd.log",
            ready_ports=[self.epmd_port],
        )

    async def start(self) -> None:
        epmd = self._entered(self._epmd)
        await epmd.start()
        self._running.push_async_callback(epmd.stop)  # last: the nodes unregister first
        for node in self.nodes:
            await self._running.enter_async_context(node)
        await self.b.join_cluster(self.a)

    async def stop(self) -> None:
        await self._running.aclose()

    async def register(self, user: str, password: str) -> str:
        return await self.a.register(user, password)
