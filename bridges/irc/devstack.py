"""Throwaway IRC servers for the IRC bridge's integration tests and the local demo.

`NgIrcd` is the plain RFC 2812 server the demo and most tests use; `InspIrcd` is the
second one, with IRCv3 (see its docstring); `Atheme` links services to an InspIRCd
started with ``services=True`` (NickServ accounts, SASL).

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

    @property
    def config_path(self) -> Path:
        """The generated ``ngircd.conf``."""
        return self.run_dir / "ngircd.conf"

    @property
    def log_path(self) -> Path:
        """ngIRCd's console output (``-n`` logs there instead of syslog)."""
        return self.run_dir / "ngircd.log"

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


INSPIRCD_USER = "irc"
INSPIRCD_BINARY = "/usr/sbin/inspircd"
INSPIRCD_MODULE_DIR = "/usr/lib/inspircd/modules"
INSPIRCD_MODULES = (
    "cap",
    "ircv3",
    "ircv3_accounttag",
    "ircv3_batch",
    "ircv3_capnotify",
    "ircv3_chghost",
    "ircv3_ctctags",  # the message-tags cap and TAGMSG
    "ircv3_echomessage",
    "ircv3_invitenotify",
    "ircv3_labeledresponse",
    "ircv3_msgid",
    "ircv3_servertime",
    "chanhistory",
    "namesx",
    "uhnames",
    "chghost",  # the oper command CHGHOST, which the chghost cap reports
    "hostcycle",  # what clients without that cap see instead: a fake QUIT and JOIN
    "cgiirc",  # WEBIRC
)
INSPIRCD_SERVICES_MODULES = (
    "spanningtree",  # the server link Atheme connects to
    "services_account",  # accounts: 900 RPL_LOGGEDIN, ACCOUNT, the account tag
    "sasl",  # AUTHENTICATE relayed to SaslServ
    "svshold",  # else Atheme warns that nick enforcement will not work
)
INSPIRCD_LIMITS = (
    # One loopback class without flood limits: every gateway user comes from 127.0.0.1.
    'maxchans="1000" timeout="60" pingfreq="10m" hardsendq="64M" softsendq="8M" '
    'recvq="8M" threshold="1000000" commandrate="4000000000" fakelag="no" '
    'localmax="100000" globalmax="100000" maxconnwarn="no" resolvehostnames="no" '
    'limit="100000" useconnectban="no" useconnflood="no"'
)
IDENT_TIMEOUT = 3
"""Seconds m_ident waits for an answer from port 113 before registering `~user`."""


class InspIrcd(DaemonLauncher):
    """InspIRCd 3 on 127.0.0.1 (``irc.localhost``, network ``TestNet``), with IRCv3.

    ngIRCd speaks plain RFC 2812; InspIRCd 3 adds what modern
    networks offer: message-tags, msgid, server-time, echo-message, labeled-response,
    batch, away-notify, account-tag, extended-join, chghost (with m_hostcycle for
    clients without it), invite-notify, cap-notify, WEBIRC (``webirc_password`` from
    loopback), and channel history replayed on join (mode +H, m_chanhistory). Tests run
    the bridge against both so neither dialect is assumed.

    Facts this relies on (Debian 12, inspircd 3.15): it refuses to run as root, so as
    root it runs as the package's ``irc`` user through ``setpriv`` (which execs, so the PID
    is the server's); SIGTERM exits with status 10; registration completes on the server's
    once-a-second timer, so every client waits about 1 s for 001. No TLS listener: the
    GnuTLS module segfaults at shutdown.

    Creators of a channel get op (``defaultmodes="not"``); ``OPER oper operpass``
    works. :meth:`restart` keeps the port. ``services=True`` adds a server link on
    ``link_port`` for :class:`Atheme` (``services_name``, U-lined, the SASL target).
    ``ident=True`` loads m_ident: every client is asked who it is on port 113 of its
    address (127.0.0.1) while it registers, and shows the answer as its user name.
    """

    run_dir_prefix = "xgw-inspircd-"
    needs_traversable_dir = True
    host = LOOPBACK

    def __init__(
        self,
        base_dir: Path | str | None = None,
        *,
        port: int | None = None,
        server_name: str = "irc.localhost",
        oper_name: str = "oper",
        oper_password: str = "operpass",
        motd: str = "xmpp-gateway test server",
        history_lines: int = 50,
        webirc_password: str = "webirc-secret",
        services: bool = False,
        ident: bool = False,
        start_timeout: float = 15.0,
    ) -> None:
        super().__init__(base_dir)
        self.port = port or free_port()
        self.services = services
        self.ident = ident
        self.link_port = free_port() if services else None
        self.link_password = "link-secret"
        self.services_name = "services.localhost"
        self.webirc_password = webirc_password
        self.server_name = server_name
        self.oper_name = oper_name
        self.oper_password = oper_password
        self.motd = motd
        self.history_lines = history_lines
        self.start_timeout = start_timeout

    @property
    def config_path(self) -> Path:
        return self.run_dir / "inspircd.conf"

    @property
    def log_path(self) -> Path:
        """Everything the server logs (the console output goes to ``console.log``)."""
        return self.run_dir / "logs" / "ircd.log"

    def render_config(self) -> str:
        run = self.run_dir
        limits = f'{INSPIRCD_LIMITS} useident="{"yes" if self.ident else "no"}"'
        tags = [
            f'<server name="{self.server_name}" description="xmpp-gateway test server" '
            'network="TestNet">',
            '<admin name="test" nick="test" email="root@localhost">',
            f'<path configdir="{run}" datadir="{run}/data" logdir="{run}/logs" '
            f'moduledir="{INSPIRCD_MODULE_DIR}">',
            f'<pid file="{run}/data/inspircd.pid">',
            f'<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" '
            f'target="{self.log_path}">',
            f'<bind address="{LOOPBACK}" port="{self.port}" type="clients">',
            # Above 65534 it is ignored; the default 10240 drains bursts at 10 KB/s.
            '<performance somaxconn="1024" softlimit="100000" clonesonconnect="no" '
            'netbuffersize="65534">',
            f'<connect name="loopback" allow="{LOOPBACK}" {limits}>',
            # Whatever address a WEBIRC gateway on loopback claims for its user.
            f'<connect name="anyone" allow="*" {limits}>',
            '<cidr ipv4clone="32" ipv6clone="128">',
            f'<dns server="{LOOPBACK}" timeout="1">',
            '<options prefixquit="Quit: " syntaxhints="no" casemapping="ascii" '
            'announcets="yes" hostintopic="yes" pingwarning="15" serverpingfreq="1m" '
            'defaultmodes="not">',
            '<security hideserver="" userstats="Pu" customversion="" flatlinks="no" '
            'hidesplits="no" hideulines="no" hidebans="no" announceinvites="all" '
            'restrictbannedusers="yes" genericoper="no">',
            '<limits maxline="512" maxnick="30" maxchan="64" maxmodes="20" maxident="10" '
            'maxhost="64" maxquit="255" maxtopic="307" maxkick="255" maxreal="128" '
            'maxaway="200">',
            '<channels users="1000" opers="1000">',
            '<whowas groupsize="10" maxgroups="100000" maxkeep="3d">',
            f'<files motd="{run}/motd.txt">',
            '<class name="All" commands="*" privs="*" usermodes="*" chanmodes="*">',
            f'<type name="Admin" classes="All" host="admin.{self.server_name}">',
            f'<oper name="{self.oper_name}" password="{self.oper_password}" host="*@*" '
            'type="Admin">',
            *(f'<module name="{name}">' for name in INSPIRCD_MODULES),
            f'<chanhistory bots="yes" enableumode="no" maxlines="{self.history_lines}" '
            'prefixmsg="yes">',
            '<cgiirc opernotice="no">',
            f'<cgihost type="webirc" password="{self.webirc_password}" mask="{LOOPBACK}">',
        ]
        if self.ident:
            tags += [
                '<module name="ident">',
                f'<ident timeout="{IDENT_TIMEOUT}" prefixunqueried="no" nolookupprefix="no">',
            ]
        if self.link_port is not None:
            tags += [
                *(f'<module name="{name}">' for name in INSPIRCD_SERVICES_MODULES),
                f'<bind address="{LOOPBACK}" port="{self.link_port}" type="servers">',
                f'<link name="{self.services_name}" ipaddr="{LOOPBACK}" port="{self.link_port}" '
                f'allowmask="{LOOPBACK}" sendpass="{self.link_password}" '
                f'recvpass="{self.link_password}">',
                f'<uline server="{self.services_name}" silent="yes">',
                f'<sasl target="{self.services_name}">',
            ]
        return "\n".join(tags) + "\n"

    async def prepare(self) -> None:
        """Write the config and MOTD into a run dir the ``irc`` user can write."""
        root = os.geteuid() == 0
        for sub in ("data", "logs"):
            path = self.run_dir / sub
            if root:
                make_owned_dir(path, INSPIRCD_USER, INSPIRCD_USER)
            else:
                path.mkdir(exist_ok=True)
        self.config_path.write_text(self.render_config())
        (self.run_dir / "motd.txt").write_text(self.motd + "\n")
        argv = [INSPIRCD_BINARY, "--nofork", "--nopid", "--config", str(self.config_path)]
        if root:
            argv = ["setpriv", f"--reuid={INSPIRCD_USER}", f"--regid={INSPIRCD_USER}",
                    "--clear-groups", "--", *argv]  # fmt: skip
        self._process = ManagedProcess(
            "inspircd",
            argv,
            log_path=self.run_dir / "console.log",
            ready_ports=[self.port],
            extra_logs=[self.log_path],
            # The data dir, not the run dir: a crash must not leave a core file there.
            cwd=self.run_dir / "data",
            start_timeout=self.start_timeout,
        )

    async def start(self) -> None:
        """Start InspIRCd and wait until its port accepts connections."""
        await self._entered(self._process).start()

    async def stop(self) -> None:
        """Stop InspIRCd (SIGTERM, then SIGKILL)."""
        if self._process is not None:
            await self._process.stop()


ATHEME_BINARY = "/usr/bin/atheme-services"
ATHEME_MODULES = (
    "protocol/inspircd",  # InspIRCd 3's spanning-tree protocol (1205)
    "backend/opensex",  # the flat-file database in the data dir
    "crypto/pbkdf2v2",  # password hashes
    "nickserv/main",
    "nickserv/register",
    "nickserv/identify",
    "nickserv/logout",
    "nickserv/help",
    "saslserv/main",
    "saslserv/plain",
)
ATHEME_READY = "finished synching with uplink"


class Atheme(DaemonLauncher):
    """Atheme services (NickServ, SaslServ) linked to an InspIRCd started with
    ``services=True``, which must be running first; ``async with Atheme(ircd)``.

    Facts this relies on (Debian 12, atheme-services 7.2.12 with inspircd 3.15):
    ``-n`` keeps it in the foreground, ``-c`` names the config, ``-D`` the data dir
    (``services.db`` is created there), ``-l`` the log and ``-p`` the PID file; modules
    are named relative to ``/usr/lib/x86_64-linux-gnu/atheme`` (``modules/...``). It
    runs as root without complaint, but like InspIRCd it runs here as the ``irc`` user
    (``setpriv`` execs, so the PID is the daemon's). It links within milliseconds of
    connecting and logs ``finished synching with uplink`` once the burst is done: that
    line is readiness; until the link port answers it retries every ``recontime`` (1 s).
    Once linked, InspIRCd offers ``sasl=PLAIN`` and accounts: a NickServ ``REGISTER
    password email`` logs the client in at once (900 and, with account-notify, an
    ``ACCOUNT`` line, before NickServ's notice), so no ``IDENTIFY`` follows; IDENTIFY
    on a later connection logs in as the account whatever the nick. InspIRCd answers
    ``AUTHENTICATE PLAIN`` with ``AUTHENTICATE :+`` (a trailing parameter). SIGTERM exits 0
    within milliseconds. The package's init script would start it as ``irc`` from
    /etc/atheme; with ``policy-rc.d`` denying starts (.ci/setup) nothing runs by itself.
    Without ``svshold`` in InspIRCd it warns that nick enforcers will not work.
    """

    run_dir_prefix = "xgw-atheme-"
    needs_traversable_dir = True

    def __init__(
        self, ircd: InspIrcd, base_dir: Path | str | None = None, *, start_timeout: float = 15.0
    ) -> None:
        super().__init__(base_dir)
        if ircd.link_port is None:
            raise DaemonError("Atheme needs an InspIrcd started with services=True")
        self.ircd = ircd
        self.start_timeout = start_timeout

    @property
    def config_path(self) -> Path:
        return self.run_dir / "atheme.conf"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "data" / "atheme.log"

    def render_config(self) -> str:
        ircd, name = self.ircd, self.ircd.services_name
        service = 'nick = "{0}"; user = "{0}"; host = "' + name + '"; real = "{0}";'
        lines = [
            *(f'loadmodule "modules/{module}";' for module in ATHEME_MODULES),
            "serverinfo {",
            f'  name = "{name}"; desc = "xmpp-gateway test services"; numeric = "00A";',
            '  recontime = 1; netname = "TestNet"; hidehostsuffix = "users.testnet";',
            '  adminname = "test"; adminemail = "root@localhost";',
            '  registeremail = "noreply@localhost"; mta = "/bin/false";',
            "  loglevel = { error; info; admin; network; register; };",
            "  maxlogins = 5; maxusers = 100; mdlimit = 30; emaillimit = 10; emailtime = 300;",
            "  auth = none; casemapping = ascii;",
            "};",
            f'uplink "{ircd.server_name}" {{',
            f'  host = "{LOOPBACK}"; port = {ircd.link_port}; password = "{ircd.link_password}";',
            "};",
            "nickserv { " + service.format("NickServ") + " maxnicks = 5; expire = 30; };",
            "saslserv { " + service.format("SaslServ") + " };",
            # Tests register and log in many accounts at once, from one address.
            "general { commit_interval = 5; ratelimit_uses = 1000; ratelimit_period = 1;",
            '  flood_msgs = 0; flood_time = 10; kline_time = 7; clone_time = 0; language = "en";',
            "  uplink_sendq_limit = 1048576; };",
        ]
        return "\n".join(lines) + "\n"

    async def prepare(self) -> None:
        root = os.geteuid() == 0
        data = self.run_dir / "data"
        if root:
            make_owned_dir(data, INSPIRCD_USER, INSPIRCD_USER)
        else:
            data.mkdir(exist_ok=True)
        self.config_path.write_text(self.render_config())
        argv = [
            ATHEME_BINARY, "-n", "-c", str(self.config_path), "-D", str(data),
            "-l", str(self.log_path), "-p", str(data / "atheme.pid"),
        ]  # fmt: skip
        if root:
            argv = ["setpriv", f"--reuid={INSPIRCD_USER}", f"--regid={INSPIRCD_USER}",
                    "--clear-groups", "--", *argv]  # fmt: skip
        self._process = ManagedProcess(
            "atheme",
            argv,
            log_path=self.run_dir / "console.log",
            ready_log=self.log_path,
            ready_pattern=ATHEME_READY,
            cwd=data,
            start_timeout=self.start_timeout,
        )

    async def start(self) -> None:
        """Start Atheme and wait until its link to InspIRCd is synced."""
        await self._entered(self._process).start()

    async def stop(self) -> None:
        """Stop Atheme (SIGTERM, then SIGKILL)."""
        if self._process is not None:
            await self._process.stop()
