"""IRCv3 capabilities a scripted server shows where InspIRCd cannot: SCRAM, STS, and
accounts' corner cases (odd escapes, CAP NEW; real services accounts are in
test_irc_services_e2e, against Atheme); plus after-connect commands and the ident server.

Each script answers the gateway's own lines; `push` sends what a server says unasked.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ssl
from pathlib import Path

import pytest
from irc_helpers import Harness, MemoryStore, RecordingSink, ScriptedIrcd
from xmpp_client import eventually

from bridges import events
from bridges.base import Account
from bridges.irc.identd import ident_of
from bridges.irc.sts import STS_KIND
from component.devstack.process import make_self_signed_cert, run_command

WELCOME = [":srv 001 alice :Welcome", ":srv 376 alice :End of MOTD"]
ACCOUNT_CAPS = "account-notify account-tag extended-join cap-notify chghost setname invite-notify"


def caps_server(offer: str, joined: list[str] | None = None):
    """LS offers `offer`, REQ is acknowledged whole, JOIN #room gives `joined` names."""

    def script(line: str) -> list[str]:
        if line == "CAP LS 302":
            return [f":srv CAP * LS :{offer}"]
        if line.startswith("CAP REQ "):
            return [f":srv CAP alice ACK {line[8:]}"]
        if line == "CAP END":
            return WELCOME
        if line in ("JOIN #room", "JOIN :#room"):
            names = " ".join(["alice", *(joined or [])])
            return [
                ":alice!a@h JOIN #room * :Alice",
                f":srv 353 alice = #room :{names}",
                ":srv 366 alice #room :End of NAMES",
            ]
        return []

    return script


def occupant(sink: RecordingSink, nick: str, **fields):
    return sink.wait_for(
        lambda e: (
            isinstance(e, events.OccupantJoined)
            and e.occupant.nick == nick
            and all(getattr(e.occupant, k) == v for k, v in fields.items())
        )
    )


def room_text(sink: RecordingSink, text: str):
    return sink.wait_for(lambda e: isinstance(e, events.Message) and e.text == text)


async def test_accounts_become_stable_occupant_ids():
    async with ScriptedIrcd(caps_server(ACCOUNT_CAPS, ["bob"])) as server:
        harness = Harness(server)
        session, sink, _ = await harness.joined("#room")
        assert any(line.startswith("CAP REQ :account-notify") for line in server.lines.items)

        server.push(":carol!c@h JOIN #room carol-acct :Carol Real")  # extended-join
        await occupant(
            sink, "carol", account="carol-acct", realname="Carol Real",
            occupant_id="account carol-acct",
        )  # fmt: skip
        server.push(":bob!b@h ACCOUNT bobacct")  # account-notify
        await occupant(sink, "bob", account="bobacct", occupant_id="account bobacct")

        server.push(":bob!b@h NICK bobby", "@account=bobacct :bobby!b@h PRIVMSG #room :hi")
        said = await room_text(sink, "hi")
        assert (said.nick, said.occupant_id) == ("bobby", "account bobacct")

        server.push(":bobby!b@h ACCOUNT *")  # logged out: the nick first seen, not bobby
        await occupant(sink, "bobby", account=None, occupant_id="nick bob")

        server.push(":carol!c@h SETNAME :Carol New")
        await occupant(sink, "carol", realname="Carol New")

        # An account tag alone tells the account, with odd characters unescaped.
        server.push("@account=we\\sird\\:acc :carol!c@h PRIVMSG #room :tagged")
        assert (await room_text(sink, "tagged")).occupant_id == "account we ird;acc"
        await occupant(sink, "carol", account="we ird;acc")

        # Someone not in the channel, and an empty account tag: their nick.
        server.push("@account= :dave!d@h PRIVMSG #room :outside")
        assert (await room_text(sink, "outside")).occupant_id == "nick dave"

        server.push(":bobby!b@h INVITE zed #room")  # invite-notify
        await room_text(sink, "bobby invited zed to #room")

        server.push(
            ":alice!a@h CHGHOST newuser a.much.longer.host.example",
            ":bobby!b@h PRIVMSG #room :after the host change",
        )
        await room_text(sink, "after the host change")  # lines are handled in order
        assert session.networks["127.0.0.1"].userhost == ("newuser", "a.much.longer.host.example")
        assert not sink.matching(lambda e: isinstance(e, events.OccupantLeft | events.RoomLeft))
        await harness.close()


async def test_capabilities_that_come_and_go_at_run_time():
    async with ScriptedIrcd(caps_server("cap-notify extended-join")) as server:
        harness = Harness(server)
        session, sink, _ = await harness.joined("#room")
        conn = session.networks["127.0.0.1"].conn
        assert conn is not None and conn.caps == {"cap-notify", "extended-join"}

        server.push(
            ":srv CAP alice DEL :extended-join",
            ":erin!e@h JOIN #room erin-acct :Erin",  # a server ignoring its own DEL
        )
        await occupant(sink, "erin", account=None, realname=None)
        assert "extended-join" not in conn.caps

        server.push(":srv CAP alice NEW :account-notify unknown/cap")
        await server.lines.wait_for(lambda line: line == "CAP REQ :account-notify")
        server.push(":srv CAP alice ACK :account-notify")
        # A hostile flood of offers is bounded and asks for nothing new.
        server.push(":srv CAP alice NEW :" + " ".join(f"x{i}" for i in range(3000)))
        server.push(":erin!e@h ACCOUNT erin-acct")
        await occupant(sink, "erin", account="erin-acct")
        assert "account-notify" in conn.caps
        assert sum(line.startswith("CAP REQ") for line in server.lines.items) == 2
        assert len(conn._offered) <= 256
        await harness.close()


def scram_server(password: str, *, fail_scram: bool = False, forge: bool = False):
    """A SASL server with SCRAM-SHA-256 (RFC 5802 server side, written here) and PLAIN."""
    salt, rounds = b"pepper-salt-1234", 4096
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, rounds)
    mac = lambda key, data: hmac.new(key, data, hashlib.sha256).digest()  # noqa: E731
    stored_key = hashlib.sha256(mac(salted, b"Client Key")).digest()
    state: dict[str, str] = {}
    base = caps_server("sasl=PLAIN,SCRAM-SHA-256")

    def script(line: str) -> list[str]:
        if line == "AUTHENTICATE SCRAM-SHA-256" or line == "AUTHENTICATE PLAIN":
            state["mech"] = line.split()[1]
            return ["AUTHENTICATE +"]
        if line.startswith("AUTHENTICATE ") and state.get("mech") == "PLAIN":
            ok = base64.b64decode(line.split()[1]) == f"alice\0alice\0{password}".encode()
            return [":srv 903 alice :PLAIN accepted" if ok else ":srv 904 alice :bad"]
        if line.startswith("AUTHENTICATE ") and "first" not in state:
            if fail_scram:
                return [":srv 904 alice :SASL authentication failed"]
            state["first"] = base64.b64decode(line.split()[1]).decode()[3:]
            nonce = state["first"].split("r=", 1)[1] + "server-part"
            server_first = f"r={nonce},s={base64.b64encode(salt).decode()},i={rounds}"
            state["server_first"] = server_first
            return [f"AUTHENTICATE {base64.b64encode(server_first.encode()).decode()}"]
        if line.startswith("AUTHENTICATE ") and "final" not in state:
            final = base64.b64decode(line.split()[1]).decode()
            without_proof, proof = final.rsplit(",p=", 1)
            state["final"] = final
            auth = f"{state['first']},{state['server_first']},{without_proof}".encode()
            client_key = bytes(
                a ^ b for a, b in zip(base64.b64decode(proof), mac(stored_key, auth), strict=True)
            )
            if hashlib.sha256(client_key).digest() != stored_key:
                return [":srv 904 alice :SASL authentication failed"]
            signature = b"\0" * 32 if forge else mac(mac(salted, b"Server Key"), auth)
            verifier = base64.b64encode(b"v=" + base64.b64encode(signature)).decode()
            return [f"AUTHENTICATE {verifier}"]
        if line == "AUTHENTICATE +":
            return [":srv 903 alice :SASL authentication successful"]
        if line == "AUTHENTICATE *":
            return [":srv 906 alice :SASL authentication aborted"]
        return base(line)

    return script


async def greeting(harness: Harness, secrets: dict[str, str]) -> str:
    session, sink = await harness.session("alice", secrets=secrets)
    await session.send_message(harness.contact("bob"), "hi")
    welcome = await sink.wait_for(lambda e: isinstance(e, events.Message) and "Welcome" in e.text)
    return welcome.text


async def test_scram_is_preferred_and_the_password_never_sent():
    async with ScriptedIrcd(scram_server("s3cret pw")) as server:
        harness = Harness(server)
        text = await greeting(harness, {"127.0.0.1/sasl_password": "s3cret pw"})
        assert "SASL authentication successful" in text
        sent = server.lines.items
        assert "AUTHENTICATE SCRAM-SHA-256" in sent and "AUTHENTICATE PLAIN" not in sent
        decoded = [
            base64.b64decode(line.split()[1])
            for line in sent
            if line.startswith("AUTHENTICATE ") and line.split()[1] not in ("SCRAM-SHA-256", "+")
        ]
        assert decoded and not any(b"s3cret" in data for data in decoded)
        assert sent.index("CAP END") > sent.index("AUTHENTICATE +")
        await harness.close()


async def test_refused_scram_falls_back_to_plain():
    async with ScriptedIrcd(scram_server("pw", fail_scram=True)) as server:
        harness = Harness(server)
        text = await greeting(harness, {"127.0.0.1/sasl_password": "pw"})
        assert "SASL SCRAM-SHA-256 failed" in text and "PLAIN accepted" in text
        sent = server.lines.items
        assert sent.index("AUTHENTICATE PLAIN") > sent.index("AUTHENTICATE SCRAM-SHA-256")
        assert sent.count("CAP END") == 1
        await harness.close()


async def test_a_server_that_cannot_prove_the_password_is_aborted():
    async with ScriptedIrcd(scram_server("pw", forge=True)) as server:
        harness = Harness(server)
        text = await greeting(harness, {"127.0.0.1/sasl_password": "pw"})
        assert "could not prove it knows the SCRAM password" in text
        assert "AUTHENTICATE *" in server.lines.items
        assert "AUTHENTICATE PLAIN" not in server.lines.items  # no password to a fake
        await harness.close()


@pytest.fixture
async def tls_context(tmp_path: Path) -> tuple[ssl.SSLContext, str]:
    cert, key = await make_self_signed_cert(tmp_path, "sts")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, str(cert)


async def test_sts_moves_to_tls_and_is_remembered(tls_context):
    context, ca_file = tls_context
    async with (
        ScriptedIrcd(caps_server("sts=duration=300"), tls=context) as secure,
        ScriptedIrcd(caps_server(f"sts=port={secure.port},duration=5")) as plain,
    ):
        harness = Harness(plain)
        account = Account("alice@localhost", "irc", settings={"nick": "alice"})
        store = MemoryStore(account)
        for attempt in range(2):
            sink = RecordingSink()
            session = harness.bridge(ca_file=ca_file).create_session(account, sink, store)
            harness.sessions.append(session)
            await session.send_message(harness.contact("bob"), f"hi {attempt}")
            await secure.lines.wait_for(lambda line, a=attempt: line == f"PRIVMSG bob :hi {a}")
            await session.stop()
        # One plain connection, told about STS; it registered nothing there.
        assert plain.lines.items.count("CAP LS 302") == 1
        assert "CAP END" not in plain.lines.items
        policy = store.records[STS_KIND, "127.0.0.1"]
        assert policy["port"] == secure.port
        await harness.close()


async def test_sts_by_cap_new_moves_to_tls_and_is_kept_up_to_date(tls_context):
    """cap-notify can bring STS at run time: the plain connection is closed, the rooms
    are rejoined over TLS on the port given, and a later CAP NEW over TLS renews or
    removes the policy."""
    context, ca_file = tls_context
    async with (
        ScriptedIrcd(caps_server("cap-notify sts=duration=300"), tls=context) as secure,
        ScriptedIrcd(caps_server("cap-notify")) as plain,
    ):
        harness = Harness(plain)
        session, _, room = await harness.joined("#room", ca_file=ca_file)
        store = session.store
        assert isinstance(store, MemoryStore)
        assert (STS_KIND, "127.0.0.1") not in store.records

        plain.push(f":srv CAP alice NEW :sts=port={secure.port},duration=5")
        await plain.lines.wait_for(lambda line: line.startswith("QUIT"))
        await secure.lines.wait_for(lambda line: line in ("JOIN #room", "JOIN :#room"))
        await session.send_message(room, "over tls")
        await secure.lines.wait_for(lambda line: line == "PRIVMSG #room :over tls")
        assert store.records[STS_KIND, "127.0.0.1"]["port"] == secure.port
        assert not any("CAP REQ" in line and "sts" in line for line in plain.lines.items)

        secure.push(":srv CAP alice NEW :sts=duration=0")  # the policy is withdrawn
        await eventually(lambda: (STS_KIND, "127.0.0.1") not in store.records)
        await harness.close()


async def test_broken_or_lapsed_sts_keeps_the_plain_connection():
    async with ScriptedIrcd(caps_server("sts=port=abc,duration=x")) as server:
        harness = Harness(server)
        account = Account("alice@localhost", "irc", settings={"nick": "alice"})
        store = MemoryStore(account)
        store.records[STS_KIND, "127.0.0.1"] = {"port": 1, "expires": 1}  # long expired
        session = harness.bridge().create_session(account, RecordingSink(), store)
        harness.sessions.append(session)
        await session.send_message(harness.contact("bob"), "plain")
        await server.lines.wait_for(lambda line: line == "PRIVMSG bob :plain")
        await harness.close()


async def test_after_connect_commands_go_before_the_joins():
    commands = ["MODE alice +x", "PRIVMSG HostServ :ON"]
    state = {"networks": {"127.0.0.1": {"after_connect_commands": commands, "autojoin": ["#a"]}}}
    async with ScriptedIrcd(caps_server("")) as server:
        harness = Harness(server)
        session, _ = await harness.session("alice", state=state)
        await session.send_message(harness.contact("bob"), "hi")
        await server.lines.wait_for(lambda line: line == "JOIN :#a")
        sent = server.lines.items
        assert sent.index("CAP END") < sent.index(commands[0]) < sent.index(commands[1])
        assert sent.index(commands[1]) < sent.index("JOIN :#a")
        await harness.close()


async def test_identd_answers_for_our_connections_only():
    async with ScriptedIrcd(caps_server("")) as server:
        harness = Harness(server)
        session, _ = await harness.session("alice", identd={"bind": "127.0.0.1", "port": 0})
        await session.send_message(harness.contact("bob"), "hi")
        await server.lines.wait_for(lambda line: line == "PRIVMSG bob :hi")
        identd = session.bridge.identd
        assert identd is not None

        async def ask(query: bytes) -> str:
            reader, writer = await asyncio.open_connection("127.0.0.1", identd.port)
            writer.write(query)
            answer = await reader.readline()
            writer.close()
            return answer.decode()

        ours = server.client_ports[0]
        expected = f"{ours} , {server.port} : USERID : UNIX : {ident_of('alice@localhost')}\r\n"
        assert await ask(f"{ours}, {server.port}\r\n".encode()) == expected
        assert await ask(f"{ours}, 1\r\n".encode()) == f"{ours} , 1 : ERROR : NO-USER\r\n"
        assert "INVALID-PORT" in await ask(b"\x1b[31m, 99999\r\n")
        assert "INVALID-PORT" in await ask(b"x" * 5000 + b"\r\n")
        assert ident_of("alice@localhost") not in ident_of("bob@localhost")
        await session.bridge.close()
        await harness.close()


async def test_sasl_external_with_the_client_certificate(tmp_path: Path, tls_context):
    server_context, ca_file = tls_context
    cert, key = tmp_path / "alice.crt", tmp_path / "alice.key"
    await run_command(
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "1", "-subj", "/CN=alice", "-keyout", key, "-out", cert,
        "-addext", "extendedKeyUsage=clientAuth",
    )  # fmt: skip
    server_context.verify_mode = ssl.CERT_OPTIONAL  # ask for the client's certificate
    server_context.load_verify_locations(cert)
    pem = cert.read_text() + key.read_text()
    secrets = {"127.0.0.1/client_cert": pem, "127.0.0.1/sasl_password": "pw"}

    def script(line: str) -> list[str]:
        if line == "AUTHENTICATE EXTERNAL":
            return ["AUTHENTICATE +"]
        if line == "AUTHENTICATE +":
            return [":srv 903 alice :SASL authentication successful"]
        return caps_server("sasl=EXTERNAL,PLAIN")(line)

    async with ScriptedIrcd(script, tls=server_context) as server:
        harness = Harness(server)
        session, _ = await harness.session("alice", secrets=secrets, tls=True, ca_file=ca_file)
        await session.send_message(harness.contact("bob"), "hi")
        await server.lines.wait_for(lambda line: line == "PRIVMSG bob :hi")
        assert server.client_certs == [ssl.PEM_cert_to_DER_cert(cert.read_text())]
        assert "AUTHENTICATE EXTERNAL" in server.lines.items
        assert "AUTHENTICATE PLAIN" not in server.lines.items
        await harness.close()


async def test_withdrawn_echo_message_completes_lines_waiting_for_their_echo():
    caps = "echo-message labeled-response batch cap-notify"
    async with ScriptedIrcd(caps_server(caps)) as server:
        harness = Harness(server)
        session, sink, room = await harness.joined("#room")
        await session.send_message(room, "never echoed", xmpp_id="x-1")
        await server.lines.wait_for(lambda line: line.endswith("PRIVMSG #room :never echoed"))
        assert not sink.matching(lambda e: isinstance(e, events.Delivered))
        server.push(":srv CAP alice DEL :echo-message")
        delivered = await sink.wait_event(events.Delivered, xmpp_id="x-1")
        assert delivered.legacy_id is None
        await harness.close()


async def test_an_endless_cap_ls_is_bounded():
    many = [f":srv CAP * LS * :{' '.join(f'x{i}-{j}' for j in range(50))}" for i in range(500)]

    def script(line: str) -> list[str]:
        if line == "CAP LS 302":
            return [*many, ":srv CAP * LS :multi-prefix chghost"]
        return caps_server("")(line)

    async with ScriptedIrcd(script) as server:
        harness = Harness(server)
        session, _ = await harness.session("alice")
        await session.send_message(harness.contact("bob"), "hi")
        await server.lines.wait_for(lambda line: line == "PRIVMSG bob :hi")
        assert "CAP REQ :chghost multi-prefix" in server.lines.items
        conn = session.networks["127.0.0.1"].conn
        assert conn is not None and len(conn._offered) <= 256
        await harness.close()
