"""Every request the README names, sent to a standalone gateway process.

A stanza interface that only exists because some slixmpp plugin registered it would
work in a test that runs the gateway next to a client in one process, and be answered
`feature-not-implemented` ("No handlers registered for this request") in production.
This runs one `xmpp-gateway run` serving the fake bridge, the IRC bridge (on ngIRCd,
for rooms) and the mail bridge (on Dovecot) and asks it everything; an answer may be an
error that makes sense for the request, never "not implemented here".
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from harness import FAKE_JID, FAKE_SECRET, MAIL_JID, MAIL_SECRET, PASSWORD
from irc_helpers import IrcPeer
from registration_helpers import mailbox_form, register_and_subscribe
from slixmpp import Iq, Presence
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET
from xmpp_client import TestClient

from bridges.irc.devstack import NgIrcd
from bridges.irc.settings import COMMAND_NODE
from bridges.jid_escaping import escape_node
from bridges.mail.devstack import MailServer
from component.archive import SETTINGS_NODE
from component.devstack.prosody import Prosody
from component.muc import MUC_ADMIN_NS, MUC_NS, MUC_USER_NS

IRC_JID, IRC_SECRET = "irc.localhost", "irc-secret"
IRC_SERVER = f"127.0.0.1@{IRC_JID}"
ROOM = f"#room%127.0.0.1@{IRC_JID}"
COMMANDS = "http://jabber.org/protocol/commands"
NOT_THERE = ("feature-not-implemented", "service-unavailable")


@pytest.fixture
async def servers(ngircd: NgIrcd) -> AsyncIterator[tuple[Prosody, NgIrcd, MailServer]]:
    components = {FAKE_JID: FAKE_SECRET, IRC_JID: IRC_SECRET, MAIL_JID: MAIL_SECRET}
    async with Prosody(components=components) as prosody, MailServer() as mail:
        yield prosody, ngircd, mail


MAM_NS = "urn:xmpp:mam:2"


class Asker:
    """Sends requests and keeps, per request, the error condition it got (None: result)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.answers: dict[str, str | None] = {}

    async def ask(self, what: str, iq: Iq) -> Iq | None:
        try:
            reply: Iq = await iq.send(timeout=15)
        except IqError as error:
            self.answers[what] = error.iq["error"]["condition"]
            return None
        self.answers[what] = None
        return reply

    def iq(self, to: str, itype: str = "get") -> Iq:
        return self.client.make_iq_to(to, itype)

    async def disco(self, jid: str, kinds: tuple[str, ...] = ("info", "items")) -> None:
        for kind in kinds:
            iq = self.iq(jid)
            iq.enable(f"disco_{kind}")
            await self.ask(f"disco#{kind} {jid}", iq)

    async def list_commands(self, jid: str) -> Iq | None:
        """The ad-hoc list: disco#items on the commands node."""
        iq = self.iq(jid)
        iq["disco_items"]["node"] = COMMANDS
        return await self.ask(f"ad-hoc list on {jid}", iq)

    async def commands(self, jid: str, node: str) -> None:
        """The ad-hoc list, which must offer `node`, then execute `node`."""
        listed = await self.list_commands(jid)
        nodes = {item[1] for item in listed["disco_items"]["items"]} if listed else set()
        assert node in nodes, (jid, nodes)
        iq = self.iq(jid, "set")
        iq["command"]["node"], iq["command"]["action"] = node, "execute"
        await self.ask(f"ad-hoc execute {node} on {jid}", iq)

    async def simple(self, what: str, jid: str, plugin: str, itype: str = "get") -> None:
        """A request that is just an empty payload: register get, ping, version."""
        iq = self.iq(jid, itype)
        iq.enable(plugin)
        await self.ask(f"{what} {jid}", iq)

    async def gateway(self, jid: str, legacy_id: str) -> None:
        await self.simple("gateway get", jid, "gateway")
        iq = self.iq(jid, "set")
        iq["gateway"]["prompt"] = legacy_id
        await self.ask(f"gateway set {jid}", iq)

    async def remove(self, jid: str) -> None:
        iq = self.iq(jid, "set")
        iq["register"]["remove"] = True
        await self.ask(f"register remove {jid}", iq)

    async def mam(self, room: str) -> None:
        """XEP-0313 on a room: a query, the form of its fields, the archive's metadata."""
        for what, itype, element in (
            ("MAM query", "set", "query"), ("MAM form", "get", "query"),
            ("MAM metadata", "get", "metadata"),
        ):  # fmt: skip
            iq = self.iq(room, itype)
            ET.SubElement(iq.xml, f"{{{MAM_NS}}}{element}")
            await self.ask(f"{what} {room}", iq)

    async def muc_admin(self, what: str, **item: str) -> None:
        iq = self.iq(ROOM, "set")
        query = ET.SubElement(iq.xml, f"{{{MUC_ADMIN_NS}}}query")
        ET.SubElement(query, f"{{{MUC_ADMIN_NS}}}item", item)
        await self.ask(what, iq)


def occupant_role(stanza: Presence) -> str | None:
    item = stanza.xml.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}item")
    return None if item is None else item.get("role")


async def test_every_request_the_readme_names_is_implemented(servers, gateway_factory):
    prosody, ngircd, mail = servers
    irc = {
        "jid": IRC_JID,
        "secret": IRC_SECRET,
        "port": ngircd.port,
        "tls": False,
        "allowed_servers": ["127.0.0.1"],
    }
    mail_section = {
        "jid": MAIL_JID,
        "secret": MAIL_SECRET,
        "ca_file": str(mail.ca_file),
        "allowed_hosts": [mail.host],
    }
    fake = {"jid": FAKE_JID, "secret": FAKE_SECRET, "plugin": "fake_bridge:FakeBridge"}
    await gateway_factory(prosody, bridges={"fake": fake, "irc": irc, "mail": mail_section})
    await mail.add_user("alice", "alice-mail")
    mail_contact = f"{escape_node('bob@example.test')}@{MAIL_JID}"
    peers = [await IrcPeer.connect(ngircd.host, ngircd.port, nick) for nick in ("bob", "carl")]
    client = TestClient(f"{await prosody.register('alice', PASSWORD)}/pc", PASSWORD)
    await client.login(prosody.host, prosody.c2s_port)
    asker = Asker(client)
    try:
        for jid in (FAKE_JID, IRC_JID, MAIL_JID):
            await asker.simple("register get", jid, "register")
        # register set: raises unless the gateway accepts it
        await register_and_subscribe(client, FAKE_JID, username="alice", password="pw")
        await register_and_subscribe(client, IRC_JID, nick="alice")
        await register_and_subscribe(client, MAIL_JID, **mailbox_form(mail, "alice"))

        # Alice opens #room first (so she is its operator), then bob and carl come in.
        join = client.Presence()
        join["to"] = f"{ROOM}/alice"
        ET.SubElement(join.xml, f"{{{MUC_NS}}}x")
        join.send()
        await client.wait_for(
            lambda s: isinstance(s, Presence) and s["from"].full == f"{ROOM}/alice", timeout=15
        )
        for peer in peers:
            await peer.join("#room")
            await client.wait_for(
                lambda s, nick=peer.nick: (
                    isinstance(s, Presence) and s["from"].full == f"{ROOM}/{nick}"
                )
            )

        for jid, legacy_id in (
            (FAKE_JID, "someone"), (IRC_JID, "someone%127.0.0.1"), (MAIL_JID, "bob@example.test"),
        ):  # fmt: skip
            await asker.disco(jid)
            await asker.simple("ping", jid, "ping")
            await asker.simple("version", jid, "software_version")
            await asker.gateway(jid, legacy_id)
        for jid in (f"bob@{FAKE_JID}", f"server@{FAKE_JID}", f"bob%127.0.0.1@{IRC_JID}"):
            await asker.disco(jid)
        for jid in (IRC_SERVER, ROOM, f"{ROOM}/bob", mail_contact):
            await asker.disco(jid)
        for jid, node in (
            (f"server@{FAKE_JID}", "settings"), (IRC_SERVER, COMMAND_NODE),
            (IRC_JID, SETTINGS_NODE),  # "Room archive", the core's own command
        ):  # fmt: skip
            await asker.commands(jid, node)
        await asker.list_commands(MAIL_JID)  # none: the list is empty, not an error

        await asker.simple("self-ping", f"{ROOM}/alice", "ping")
        await asker.muc_admin("muc#admin role", nick="bob", role="moderator")
        assert asker.answers["muc#admin role"] is None, asker.answers["muc#admin role"]
        opped = await client.wait_for(
            lambda s: (
                isinstance(s, Presence)
                and s["from"].full == f"{ROOM}/bob"
                and occupant_role(s) == "moderator"
            )
        )
        assert opped["type"] != "unavailable"
        await asker.muc_admin("muc#admin kick", nick="carl", role="none")
        assert asker.answers["muc#admin kick"] is None, asker.answers["muc#admin kick"]
        kicked = await client.wait_for(
            lambda s: (
                isinstance(s, Presence)
                and s["from"].full == f"{ROOM}/carl"
                and s["type"] == "unavailable"
            )
        )
        assert "307" in {s.get("code") for s in kicked.xml.iter(f"{{{MUC_USER_NS}}}status")}

        await asker.mam(ROOM)
        for jid in (FAKE_JID, IRC_JID, MAIL_JID):
            await asker.remove(jid)
    finally:
        for peer in peers:
            await peer.close()
        await client.close()

    missing = {what: answer for what, answer in asker.answers.items() if answer in NOT_THERE}
    assert not missing, f"answered as not implemented: {missing}"
    # Requests about what exists succeed outright.
    failed = {what: answer for what, answer in asker.answers.items() if answer is not None}
    assert failed == {}, f"refused: {failed}"
