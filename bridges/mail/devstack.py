"""A throwaway mail system for the mail bridge's integration tests and the local demo.

The mail bridge reads mailboxes over IMAP and sends through a submission server, so its
tests need both, with TLS, plus a way to inject mail "from outside". This launcher runs:

* Dovecot (IMAP with STARTTLS, implicit-TLS IMAP, submission, LMTP) from a generated
  config, mail stored as ``nobody:nogroup`` (Dovecot refuses uid 0 for mail), users in a
  passwd-file that Dovecot re-reads whenever it changes;
* an in-process MTA (aiosmtpd on the running event loop) that accepts mail for existing
  local users, answering 550 at RCPT time otherwise, and delivers through Dovecot's
  LMTP socket. Dovecot's submission service relays to it. Mail for `remote_domain`
  stands for the rest of the internet: accepted for any local part and kept in
  `MailServer.remote`, as a relay would pass it on.

Local user names may need quoting in an address (`"odd one"@example.test`): the MTA
reads recipients as the mail bridge does (`bridges.mail.addresses`).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import pwd
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

from bridges.address import AddressError
from bridges.mail import addresses
from bridges.timeouts import within
from component.devstack.process import (
    LOOPBACK,
    DaemonError,
    DaemonLauncher,
    ManagedProcess,
    check_socket_dir,
    free_port,
    greets_with,
    make_owned_dir,
    make_self_signed_cert,
)

MAIL_USER, MAIL_GROUP = "nobody", "nogroup"
"""Owner of all mailboxes: Dovecot will not access mail as root."""


class LmtpError(Exception):
    """The LMTP server answered a session-level command with an error."""


# --------------------------------------------------------------------------- LMTP client


async def _read_reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    """Read one (possibly multi-line) SMTP/LMTP reply; return its code and last line."""
    while True:
        raw = await reader.readline()
        if not raw:
            raise LmtpError("LMTP server closed the connection")
        line = raw.decode(errors="replace").rstrip("\r\n")
        if not line[:3].isdigit():
            raise LmtpError(f"malformed LMTP reply {line!r}")
        if line[3:4] != "-":
            return int(line[:3]), line


def _dot_stuff(message: bytes) -> bytes:
    """CRLF-normalise ``message`` and escape leading dots for the DATA phase."""
    lines = re.split(rb"\r?\n", message)
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


async def lmtp_deliver(
    socket_path: Path,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    *,
    lhlo: str = "localhost",
) -> dict[str, str]:
    """Deliver ``message`` over LMTP on a unix socket; return each recipient's final reply.

    Written here rather than using ``smtplib.LMTP`` because LMTP answers DATA once per
    recipient and smtplib reads only one reply.
    """
    reader, writer = await asyncio.open_unix_connection(str(socket_path))

    async def command(line: str, expected: int | None) -> tuple[int, str]:
        writer.write(line.encode() + b"\r\n")
        await writer.drain()
        code, text = await _read_reply(reader)
        if expected is not None and code != expected:
            raise LmtpError(f"{line.split(':')[0]!r} -> {text}")
        return code, text

    results: dict[str, str] = {}
    try:
        code, text = await _read_reply(reader)
        if code != 220:
            raise LmtpError(f"greeting -> {text}")
        await command(f"LHLO {lhlo}", 250)
        await command(f"MAIL FROM:<{sender}>", 250)
        accepted = []
        for rcpt in recipients:
            code, text = await command(f"RCPT TO:<{rcpt}>", None)
            if code == 250:
                accepted.append(rcpt)
            else:
                results[rcpt] = text
        if accepted:
            await command("DATA", 354)
            writer.write(_dot_stuff(message) + b".\r\n")
            await writer.drain()
            for rcpt in accepted:
                results[rcpt] = (await _read_reply(reader))[1]
        writer.write(b"QUIT\r\n")
        await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return results


# --------------------------------------------------------------------------- MTA


class _LocalDeliveryHandler:
    """aiosmtpd handler: accept existing local users only, deliver them through LMTP."""

    def __init__(self, mail: MailServer) -> None:
        self._mail = mail

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        try:
            local, domain = addresses.split(address)
        except AddressError:
            return "553 5.1.3 Bad recipient address syntax"
        if domain.lower() == self._mail.remote_domain:
            envelope.rcpt_tos.append(address)
            return "250 2.1.5 OK (relayed)"
        if domain.lower() != self._mail.domain:
            return "550 5.7.1 Relaying denied"
        if local.split("+", 1)[0].lower() not in self._mail.users:
            return "550 5.1.1 User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        local = []
        for rcpt in envelope.rcpt_tos:  # each parsed in handle_RCPT already
            if addresses.split(rcpt)[1].lower() == self._mail.remote_domain:
                self._mail.remote.append(RemoteMail(envelope.mail_from or "", rcpt, content))
            else:
                local.append(rcpt)
        if not local:
            return f"250 2.0.0 Relayed to {len(envelope.rcpt_tos)} recipient(s)"
        try:
            results = await lmtp_deliver(
                self._mail.lmtp_socket,
                envelope.mail_from or "",
                local,
                content,
                lhlo=f"mx.{self._mail.domain}",
            )
        except (OSError, LmtpError) as exc:
            return f"451 4.3.0 Local delivery failed: {exc}"
        failures = [reply for reply in results.values() if not reply.startswith("2")]
        return failures[0] if failures else f"250 2.0.0 Delivered to {len(results)} mailbox(es)"


@dataclass(frozen=True)
class RemoteMail:
    """A mail the MTA accepted for `remote_domain`: the envelope as received, and the data."""

    mail_from: str
    rcpt_to: str
    content: bytes


# --------------------------------------------------------------------------- launcher


class MailServer(DaemonLauncher):
    """Dovecot (IMAP/IMAPS/submission/LMTP) plus an in-process MTA, all on 127.0.0.1.

    ``async with MailServer() as mail:`` then ``await mail.add_user("alice", "pw")`` gives
    ``alice@example.test``; read it over IMAP (``imap_port`` with STARTTLS or
    ``imaps_port``, trusting ``ca_file``), send as it on ``submission_port`` (STARTTLS +
    AUTH PLAIN), or inject mail from outside on ``smtp_port``. :meth:`restart` restarts
    Dovecot only, keeping ports and mail; the MTA keeps running (and answers 451 while
    Dovecot is down). The MTA lives on the event loop that entered the context.
    """

    run_dir_prefix = "xgw-mail-"
    needs_traversable_dir = True
    host = LOOPBACK
    domain = "example.test"
    remote_domain = "remote.test"

    def __init__(
        self,
        base_dir: Path | str | None = None,
        users: Mapping[str, str] | None = None,
        *,
        imap_port: int | None = None,
        imaps_port: int | None = None,
        submission_port: int | None = None,
        smtp_port: int | None = None,
        max_userip_connections: int = 1000,
        start_timeout: float = 15.0,
    ) -> None:
        super().__init__(base_dir)
        self.imap_port = imap_port or free_port()
        self.imaps_port = imaps_port or free_port()
        self.submission_port = submission_port or free_port()
        self.smtp_port = smtp_port or free_port()
        self.max_userip_connections = max_userip_connections
        self.start_timeout = start_timeout
        self.users: dict[str, str] = {}
        self._initial_users = dict(users or {})
        self.ca_file: Path | None = None
        self._key_file: Path | None = None
        self._dovecot: ManagedProcess | None = None
        self._mta: asyncio.Server | None = None
        self._mta_sessions: set[SMTP] = set()
        self.remote: list[RemoteMail] = []
        """Mail accepted for `remote_domain`, oldest first."""

    # ----------------------------------------------------------------- paths

    @property
    def config_path(self) -> Path:
        """The generated ``dovecot.conf``."""
        return self.run_dir / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        """Dovecot's log (all services, including auth and LMTP delivery)."""
        return self.run_dir / "dovecot.log"

    @property
    def passwd_path(self) -> Path:
        """The passwd-file holding users, passwords (PLAIN), uid/gid and homes."""
        return self.run_dir / "passwd"

    @property
    def socket_dir(self) -> Path:
        """Dovecot's ``base_dir``: its unix sockets, including ``lmtp``."""
        return self.run_dir / "run"

    @property
    def lmtp_socket(self) -> Path:
        """Dovecot's LMTP listener (mode 0666) that the MTA delivers to."""
        return self.socket_dir / "lmtp"

    @property
    def dovecot_pid(self) -> int | None:
        """PID of the Dovecot master process, ``None`` when stopped."""
        return self._dovecot.pid if self._dovecot is not None else None

    def address(self, user: str) -> str:
        """The mail address of local ``user``, its local part quoted where RFC 5322 says."""
        return addresses.canonical(user, self.domain)

    # ----------------------------------------------------------------- config

    def render_config(self) -> str:
        """Return ``dovecot.conf``: loopback listeners, passwd-file users, no /etc includes."""
        run, host = self.run_dir, LOOPBACK
        passwd = self.passwd_path
        uid = pwd.getpwnam(MAIL_USER).pw_uid
        return f"""\
base_dir = {self.socket_dir}
state_dir = {run / "state"}
instance_name = {run.name}
log_path = {self.log_path}
listen = {host}
protocols = imap lmtp submission
hostname = mail.{self.domain}
postmaster_address = postmaster@{self.domain}
auth_verbose = yes

ssl = yes
ssl_cert = <{self.ca_file}
ssl_key = <{self._key_file}
disable_plaintext_auth = no
auth_mechanisms = plain login
# Empty: any character, so that users such as "odd one" exist (RFC 5322 quoted local parts).
auth_username_chars =

mail_location = maildir:~/Maildir
first_valid_uid = {uid}
last_valid_uid = {uid}
mail_max_userip_connections = {self.max_userip_connections}

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%Ln {passwd}
}}
userdb {{
  driver = passwd-file
  args = username_format=%Ln {passwd}
}}

service imap-login {{
  inet_listener imap {{
    address = {host}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = {host}
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service submission-login {{
  inet_listener submission {{
    address = {host}
    port = {self.submission_port}
  }}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
}}
# One failed login would otherwise delay every later login from 127.0.0.1 by 2-15 s.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}

submission_relay_host = {host}
submission_relay_port = {self.smtp_port}
submission_relay_ssl = no
submission_relay_trusted = no
"""

    # ----------------------------------------------------------------- lifecycle

    async def prepare(self) -> None:
        """Create dirs, TLS cert, config and the initial users (once per run dir)."""
        check_socket_dir(self.socket_dir)
        for sub in ("run", "state"):
            (self.run_dir / sub).mkdir(exist_ok=True)
        make_owned_dir(self.run_dir / "home", MAIL_USER, MAIL_GROUP)
        self.ca_file, self._key_file = await make_self_signed_cert(self.run_dir, "mail")
        self.passwd_path.touch(mode=0o644)
        self.config_path.write_text(self.render_config())
        self._dovecot = ManagedProcess(
            "dovecot",
            ["dovecot", "-F", "-c", self.config_path],
            log_path=self.run_dir / "dovecot.stdout.log",
            ready_ports=[self.imap_port, self.imaps_port, self.submission_port],
            ready_check=self._login_services_ready,
            extra_logs=[self.log_path],
            cwd=self.run_dir,
            start_timeout=self.start_timeout,
        )
        for name, password in self._initial_users.items():
            await self.add_user(name, password)

    async def _login_services_ready(self) -> bool:
        """Both login services greet: ports alone answer before they finish initialising,
        and a Dovecot stopped in that window needs 5 s to exit."""
        return await greets_with(self.host, self.imap_port, b"* OK") and await greets_with(
            self.host, self.submission_port, b"220 "
        )

    async def start(self) -> None:
        """Start the MTA (if not running) and Dovecot; wait until all ports answer."""
        dovecot = self._entered(self._dovecot)
        if self._mta is None:
            await self._start_mta()
        await dovecot.start()

    async def stop(self) -> None:
        """Stop Dovecot and the MTA (closing its open sessions)."""
        try:
            if self._dovecot is not None:
                await self._dovecot.stop()
        finally:
            await self._stop_mta()

    async def restart(self) -> None:
        """Restart Dovecot only: same ports, same mailboxes; the MTA is not interrupted."""
        await self._entered(self._dovecot).restart()

    async def _start_mta(self) -> None:
        handler = _LocalDeliveryHandler(self)

        def session_factory() -> SMTP:
            smtp = SMTP(
                handler,
                hostname=f"mx.{self.domain}",
                ident="xmpp-gateway test MTA",
                enable_SMTPUTF8=True,
            )
            self._mta_sessions.add(smtp)
            return smtp

        try:
            self._mta = await asyncio.get_running_loop().create_server(
                session_factory, LOOPBACK, self.smtp_port
            )
        except OSError as exc:
            raise DaemonError(f"MTA cannot listen on {LOOPBACK}:{self.smtp_port}: {exc}") from exc

    async def _stop_mta(self) -> None:
        server, self._mta = self._mta, None
        if server is None:
            return
        server.close()
        for smtp in self._mta_sessions:
            if smtp.transport is not None:
                smtp.transport.close()
        self._mta_sessions.clear()
        with contextlib.suppress(TimeoutError):
            await within(server.wait_closed(), 5)

    # ----------------------------------------------------------------- users

    async def add_user(self, name: str, password: str) -> str:
        """Create mailbox user ``name`` and return its address; Dovecot sees it at once.

        Dovecot re-reads the passwd-file when its mtime changes, so no reload is needed.
        A name may be any printable ASCII but ``:`` (the passwd-file separator), ``"``
        and ``\\`` (which Dovecot's lookup does not find); one that is not a dot-atom,
        such as ``odd one``, is quoted in its address.
        """
        name = name.lower()
        if not re.fullmatch(r"[ !#-9;-\[\]-~]+", name) or name != name.strip():
            raise ValueError(f"unsupported mail user name {name!r}")
        if any(ch in password for ch in ":\r\n"):
            raise ValueError("passwords may not contain ':' or line breaks (passwd-file format)")
        if name in self.users:
            raise ValueError(f"mail user {name!r} already exists")
        folder = name if re.fullmatch(r"[a-z0-9._-]+", name) else name.encode().hex()
        home = make_owned_dir(self.run_dir / "home" / folder, MAIL_USER, MAIL_GROUP, mode=0o700)
        uid, gid = pwd.getpwnam(MAIL_USER).pw_uid, grp.getgrnam(MAIL_GROUP).gr_gid
        with self.passwd_path.open("a") as passwd:
            passwd.write(f"{name}:{{PLAIN}}{password}:{uid}:{gid}::{home}::\n")
        self.users[name] = password
        return self.address(name)
