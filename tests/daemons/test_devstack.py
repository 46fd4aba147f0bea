"""The dev-stack launchers start real daemons that speak their real protocols.

Each test talks to a daemon the way the gateway will (slixmpp, raw IRC, SMTP, IMAP,
asyncpg) and restarts it to prove ports and data survive. No sleeps: every wait is on
an event, a protocol reply or a port, with a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import ssl
import sys
import time
from email.message import EmailMessage

import aioimaplib
import aiosmtplib
import asyncpg
import pytest
import slixmpp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bridges.irc.devstack import Atheme, InspIrcd, NgIrcd
from bridges.mail.devstack import MailServer
from bridges.timeouts import within
from component.devstack.postgres import Postgres
from component.devstack.process import (
    DaemonError,
    ManagedProcess,
    free_port,
    pid_alive,
    port_answers,
)
from component.devstack.prosody import Prosody

TIMEOUT = 10.0

# --------------------------------------------------------------------------- process helper


async def test_process_that_dies_reports_its_log(tmp_path):
    proc = ManagedProcess(
        "crasher",
        [sys.executable, "-c", "print('boom: bad config', flush=True); raise SystemExit(3)"],
        log_path=tmp_path / "crasher.log",
        ready_ports=[free_port()],
    )
    with pytest.raises(DaemonError, match=r"(?s)exited with code 3.*boom: bad config"):
        await proc.start()
    assert not proc.running


async def test_process_not_ready_in_time_is_stopped(tmp_path):
    proc = ManagedProcess(
        "sleeper",
        [sys.executable, "-c", "print('still booting', flush=True); import time; time.sleep(60)"],
        log_path=tmp_path / "sleeper.log",
        ready_ports=[free_port()],
        start_timeout=0.5,
    )
    with pytest.raises(DaemonError, match=r"(?s)not ready after 0.5s.*still booting"):
        await proc.start()
    assert proc.pid is None


async def test_process_ready_on_log_line_refuses_busy_port_and_kills_stubborn(tmp_path):
    script = (
        "import signal, socket, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
        "print('listening', flush=True)\n"
        "time.sleep(60)\n"
    )
    port = free_port()
    argv = [sys.executable, "-c", script, str(port)]
    log = tmp_path / "stubborn.log"
    proc = ManagedProcess(
        "stubborn", argv, log_path=log, ready_ports=[port], ready_pattern="^listening$",
        stop_timeout=0.3,
    )  # fmt: skip
    await proc.start()
    assert proc.running
    twin = ManagedProcess("twin", argv, log_path=tmp_path / "twin.log", ready_ports=[port])
    with pytest.raises(DaemonError, match="already in use"):
        await twin.start()
    started = time.monotonic()
    await proc.stop()  # ignores SIGTERM: must be SIGKILLed after stop_timeout
    assert time.monotonic() - started < 3
    assert not proc.running
    assert not await port_answers("127.0.0.1", port)
    await proc.restart()
    assert proc.running
    await proc.stop()


async def test_unreachable_base_dir_fails_early_with_a_clear_error(tmp_path):
    tmp_path.chmod(0o700)  # like pytest's own parent dirs: daemon users cannot enter
    with pytest.raises(DaemonError, match="not searchable by other users"):
        async with MailServer(base_dir=tmp_path / "mail"):
            pass


# --------------------------------------------------------------------------- Prosody


async def _client_session(server: Prosody, jid: str, password: str) -> slixmpp.ClientXMPP:
    """Log in with slixmpp and return the client once session_start fired.

    The test server offers no TLS, and slixmpp refuses SCRAM over plaintext by default.
    """
    client = slixmpp.ClientXMPP(
        jid, password, plugin_config={"feature_mechanisms": {"unencrypted_scram": True}}
    )
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    client.add_event_handler("session_start", lambda _: started.done() or started.set_result(None))
    client.add_event_handler(
        "failed_auth", lambda _: started.done() or started.set_exception(AssertionError("auth"))
    )
    client.connect(server.host, server.c2s_port)
    try:
        await within(started, TIMEOUT)
    except BaseException:
        client.abort()
        raise
    return client


async def _disconnect(xmpp: slixmpp.BaseXMPP) -> None:
    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    xmpp.add_event_handler("disconnected", lambda _: gone.done() or gone.set_result(None))
    xmpp.disconnect()
    await within(gone, TIMEOUT)


async def test_prosody_client_logs_in_and_account_survives_restart(prosody: Prosody):
    jid = await prosody.register("alice", "alice-pw")
    assert jid == "alice@localhost"
    client = await _client_session(prosody, jid, "alice-pw")
    assert client.boundjid.bare == jid
    await _disconnect(client)

    await prosody.restart()
    client = await _client_session(prosody, jid, "alice-pw")
    await _disconnect(client)


async def test_prosody_component_connects_and_waits_only_for_new_lines(prosody: Prosody):
    [(component_jid, secret)] = prosody.components.items()
    component = slixmpp.ComponentXMPP(component_jid, secret)
    component.connect(prosody.host, prosody.component_port)
    await prosody.wait_component_connected(component_jid, timeout=TIMEOUT)
    await _disconnect(component)

    await prosody.restart()
    with pytest.raises(DaemonError, match="no line matching"):
        await prosody.wait_component_connected(component_jid, timeout=0.3)
    mark = prosody.log_mark()
    component = slixmpp.ComponentXMPP(component_jid, secret)
    component.connect(prosody.host, prosody.component_port)
    await prosody.wait_component_connected(component_jid, timeout=TIMEOUT, since=mark)
    await _disconnect(component)


# --------------------------------------------------------------------------- ngIRCd


class IrcClient:
    """Minimal IRC client on asyncio streams: enough to register, join and wait for replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(
        cls, server: NgIrcd | InspIrcd, nick: str, *, tls: bool = False, caps: str = ""
    ) -> IrcClient:
        if tls:
            context = ssl.create_default_context(cafile=server.ca_file)
            streams = await asyncio.open_connection(
                server.host, server.tls_port, ssl=context, server_hostname="localhost"
            )
        else:
            streams = await asyncio.open_connection(server.host, server.port)
        client = cls(*streams)
        if caps:
            client.send(f"CAP REQ :{caps}")
        client.send(f"NICK {nick}", f"USER {nick} 0 * :{nick}")
        if caps:
            await client.expect(" ACK ")
            client.send("CAP END")
        await client.expect(" 001 ")
        return client

    def send(self, *lines: str) -> None:
        self.writer.write("".join(f"{line}\r\n" for line in lines).encode())

    async def expect(self, needle: str) -> str:
        async def read() -> str:
            while True:
                raw = await self.reader.readline()
                if not raw:
                    raise ConnectionError("IRC server closed the connection")
                line = raw.decode().rstrip("\r\n")
                if line.startswith("PING "):
                    self.send("PONG " + line[5:])
                elif needle in line:
                    return line

        return await within(read(), TIMEOUT)

    async def close(self) -> None:
        """QUIT and let the server close first (closing under its ERROR line breaks TLS)."""
        self.send("QUIT :bye")
        await within(self.reader.read(), TIMEOUT)  # until EOF
        self.writer.close()
        await self.writer.wait_closed()


async def test_ngircd_plain_tls_oper_and_restart(ngircd: NgIrcd):
    assert ngircd.server_name == "irc.localhost"
    alice = await IrcClient.connect(ngircd, "alice")
    bob = await IrcClient.connect(ngircd, "bob", tls=True)
    for client, nick in ((alice, "alice"), (bob, "bob")):
        client.send("JOIN #test")
        await client.expect(f":{nick}!~{nick}@127.0.0.1 JOIN :#test")
    alice.send("PRIVMSG #test :hello over TLS")
    assert (await bob.expect("PRIVMSG #test")).endswith(":hello over TLS")
    bob.send(f"OPER {ngircd.oper_name} {ngircd.oper_password}")
    await bob.expect(" 381 ")  # RPL_YOUREOPER
    await alice.close()
    await bob.close()

    await ngircd.restart()
    carol = await IrcClient.connect(ngircd, "carol")
    dave = await IrcClient.connect(ngircd, "dave", tls=True)
    await carol.close()
    await dave.close()


async def test_ngircd_flood_throttling_is_configurable(ngircd: NgIrcd):
    assert "MaxPenaltyTime = 0" in ngircd.config_path.read_text()
    client = await IrcClient.connect(ngircd, "flooder")
    client.send(*[f"PRIVMSG flooder :{n}" for n in range(200)], "PING :done")
    started = time.monotonic()
    await client.expect("PONG")
    assert time.monotonic() - started < 2  # throttled, 200 lines would take minutes
    await client.close()
    async with NgIrcd() as throttled:
        assert "MaxPenaltyTime = -1" in throttled.config_path.read_text()
        assert throttled.tls_port is None and throttled.ca_file is None


# --------------------------------------------------------------------------- InspIRCd

IRCV3_CAPS = (
    "message-tags server-time echo-message labeled-response batch away-notify account-tag "
    "multi-prefix"
)


async def test_inspircd_offers_ircv3_caps_tags_history_and_restarts(inspircd: InspIrcd):
    assert f'<bind address="127.0.0.1" port="{inspircd.port}"' in inspircd.config_path.read_text()
    reader, writer = await asyncio.open_connection("127.0.0.1", inspircd.port)
    probe = IrcClient(reader, writer)
    probe.send("CAP LS 302")
    offered = set((await probe.expect(" CAP * LS ")).split(" :", 1)[1].split())
    assert set(IRCV3_CAPS.split()) <= offered
    writer.close()

    alice = await IrcClient.connect(inspircd, "alice", caps=IRCV3_CAPS)
    bob = await IrcClient.connect(inspircd, "bob", caps="message-tags server-time")
    alice.send("JOIN #test", "MODE #test +H 10:1d")  # creator is op; +H keeps history
    await alice.expect("MODE #test +H")
    bob.send("JOIN #test")
    await bob.expect(" 366 ")
    alice.send("@label=L1 PRIVMSG #test :tagged")
    echo = await alice.expect("PRIVMSG #test :tagged")
    assert "label=L1" in echo and "msgid=" in echo and "time=" in echo
    seen = await bob.expect("PRIVMSG #test :tagged")
    assert "msgid=" in seen and "time=" in seen
    carol = await IrcClient.connect(inspircd, "carol", caps="batch server-time")
    carol.send("JOIN #test")
    assert "batch=" in await carol.expect("PRIVMSG #test :tagged")  # replayed history
    bob.send(f"OPER {inspircd.oper_name} {inspircd.oper_password}")
    await bob.expect(" 381 ")
    for client in (alice, bob, carol):
        await client.close()

    old_pid = inspircd.pid
    await inspircd.restart()
    assert inspircd.pid != old_pid
    dave = await IrcClient.connect(inspircd, "dave")
    await dave.close()


async def test_atheme_links_to_inspircd_with_nickserv_and_sasl():
    if shutil.which("atheme-services") is None:
        pytest.fail("atheme-services is not installed: run bash .ci/setup")
    async with InspIrcd(services=True) as inspircd:
        async with Atheme(inspircd) as atheme:
            bob = await IrcClient.connect(inspircd, "bob")
            bob.send("PRIVMSG NickServ :REGISTER bob-secret bob@example.org")
            await bob.expect(" 900 bob ")  # registering logs in
            await bob.close()
            # SASL PLAIN, relayed by InspIRCd to Atheme's SaslServ.
            reader, writer = await asyncio.open_connection(inspircd.host, inspircd.port)
            robert = IrcClient(reader, writer)
            robert.send("CAP LS 302", "NICK robert", "USER robert 0 * :robert")
            assert "sasl=PLAIN" in await robert.expect(" CAP * LS ")
            robert.send("CAP REQ :sasl")
            await robert.expect(" ACK ")
            robert.send("AUTHENTICATE PLAIN")
            await robert.expect("AUTHENTICATE :+")  # InspIRCd 3 sends the + as a trailing
            token = base64.b64encode(b"bob\0bob\0bob-secret").decode()
            robert.send(f"AUTHENTICATE {token}")
            assert " bob :" in await robert.expect(" 900 robert ")
            await robert.expect(" 903 ")
            robert.send("CAP END")
            await robert.expect(" 001 ")
            await robert.close()
            pid = atheme.pid
            assert pid is not None
        assert atheme.pid is None and not pid_alive(pid)


# --------------------------------------------------------------------------- mail


def _tls_context(mail: MailServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=mail.ca_file)


def _message(sender: str, recipient: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, recipient, subject
    msg.set_content(f"{subject}\n.leading dot survives\n")
    return msg


async def _inbox_subjects(mail: MailServer, user: str) -> list[str]:
    """Log in over implicit TLS, SELECT INBOX, SEARCH ALL and FETCH the subjects."""
    imap = aioimaplib.IMAP4_SSL(mail.host, mail.imaps_port, ssl_context=_tls_context(mail))
    await imap.wait_hello_from_server()
    assert (await imap.login(user, mail.users[user])).result == "OK"
    assert (await imap.select("INBOX")).result == "OK"
    found = await imap.search("ALL")
    assert found.result == "OK"
    subjects = []
    for seq in found.lines[0].decode().split():
        fetched = await imap.fetch(seq, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        header = bytes(fetched.lines[1]).decode()
        subjects.append(header.split(":", 1)[1].strip())
    await imap.logout()
    return subjects


async def test_mail_from_outside_lands_in_imap_inbox(mail_server: MailServer):
    alice = mail_server.address("alice")
    assert alice == "alice@example.test"
    await aiosmtplib.send(
        _message("stranger@remote.test", alice, "from outside"),
        hostname=mail_server.host, port=mail_server.smtp_port, start_tls=False,
    )  # fmt: skip
    assert await _inbox_subjects(mail_server, "alice") == ["from outside"]


async def test_submission_relays_to_local_mailbox(mail_server: MailServer):
    alice, bob = mail_server.address("alice"), mail_server.address("bob")
    smtp = aiosmtplib.SMTP(
        hostname=mail_server.host, port=mail_server.submission_port,
        start_tls=True, tls_context=_tls_context(mail_server),
    )  # fmt: skip
    async with smtp:
        await smtp.auth_plain("alice", mail_server.users["alice"])
        await smtp.send_message(_message(alice, bob, "submitted"))
    assert await _inbox_subjects(mail_server, "bob") == ["submitted"]


async def test_unknown_recipients_are_refused_at_rcpt(mail_server: MailServer):
    async with aiosmtplib.SMTP(
        hostname=mail_server.host, port=mail_server.smtp_port, start_tls=False
    ) as smtp:
        await smtp.mail("stranger@remote.test")
        for rcpt in ("nobody@example.test", "someone@elsewhere.test"):
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                await smtp.rcpt(rcpt)
            assert refused.value.code == 550
    late = await mail_server.add_user("carol", "carol-pw")
    await aiosmtplib.send(
        _message("stranger@remote.test", late, "for a new user"),
        hostname=mail_server.host, port=mail_server.smtp_port, start_tls=False,
    )  # fmt: skip
    assert await _inbox_subjects(mail_server, "carol") == ["for a new user"]


async def test_imap_starttls_on_plain_port(mail_server: MailServer):
    reader, writer = await asyncio.open_connection(mail_server.host, mail_server.imap_port)

    async def command(tag: str, line: str) -> str:
        writer.write(f"{tag} {line}\r\n".encode())
        while not (reply := (await reader.readline()).decode()).startswith(tag + " "):
            pass
        return reply

    assert (await within(reader.readline(), TIMEOUT)).startswith(b"* OK")
    assert (await within(command("a", "STARTTLS"), TIMEOUT)).startswith("a OK")
    await writer.start_tls(_tls_context(mail_server), server_hostname="localhost")
    reply = await within(command("b", f"LOGIN bob {mail_server.users['bob']}"), TIMEOUT)
    assert reply.startswith("b OK")
    writer.close()
    await writer.wait_closed()


async def test_mail_restart_keeps_ports_and_mail(mail_server: MailServer):
    alice = mail_server.address("alice")
    send = {"hostname": mail_server.host, "port": mail_server.smtp_port, "start_tls": False}
    await aiosmtplib.send(_message("x@remote.test", alice, "before restart"), **send)
    await mail_server.restart()
    await aiosmtplib.send(_message("x@remote.test", alice, "after restart"), **send)
    assert await _inbox_subjects(mail_server, "alice") == ["before restart", "after restart"]


# --------------------------------------------------------------------------- PostgreSQL


async def test_postgres_query_database_and_restart(postgres: Postgres):
    assert postgres.url == f"postgresql+asyncpg://postgres@127.0.0.1:{postgres.port}/postgres"
    conn = await asyncpg.connect(postgres.dsn)
    assert await conn.fetchval("SELECT 40 + 2") == 42
    await conn.close()

    url = await postgres.create_database("gateway")
    engine = create_async_engine(url)
    try:
        async with engine.begin() as db:
            await db.execute(text("CREATE TABLE t (v text)"))
            await db.execute(text("INSERT INTO t VALUES ('kept')"))
        await engine.dispose()
        await postgres.restart()
        async with engine.connect() as db:
            assert (await db.execute(text("SELECT v FROM t"))).scalar_one() == "kept"
    finally:
        await engine.dispose()
