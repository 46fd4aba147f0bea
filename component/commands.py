"""XEP-0050 ad-hoc commands a bridge offers, such as per-network settings forms.

slixmpp's own XEP-0050 plugin binds commands to fixed JIDs; a bridge's commands live on
addresses that exist only when a user names them (`irc.libera.chat@irc.example.org`),
so they are listed and run here by asking the bridge. A command is a two-step form:
`execute` shows the bridge's fields with current values, `complete` submits them
(checked by component.forms like a registration form).

Operators' commands (`ADMIN_NODES`), on the component JID for the bare JIDs in
`admins` only, are one step: `execute` answers `completed` with a result table.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from slixmpp import JID, Iq
from slixmpp.plugins.xep_0004 import Form
from slixmpp.plugins.xep_0030 import DiscoInfo, DiscoItems
from slixmpp.plugins.xep_0050.stanza import Command as CommandStanza
from slixmpp.xmlstream import register_stanza_plugin

from bridges.address import Address
from bridges.base import BridgeError, Command, FormField
from component.archive import settings_command
from component.errors import from_exception, stanza_error
from component.forms import FormInvalid, build_form, check_values, submitted_values
from component.ownership import instances
from component.store import AccountStorage

if TYPE_CHECKING:
    from component.gateway import Gateway

COMMANDS_NS = "http://jabber.org/protocol/commands"
PENDING_KEPT = 1_000
INSTANCES_NODE = "instances"
ADMIN_NODES = {INSTANCES_NODE: "Gateway instances (active slots and standbys)"}
INSTANCE_COLUMNS = (
    ("instance", "Instance"),
    ("host", "Host"),
    ("pid", "PID"),
    ("role", "Role"),
    ("slot", "Slot"),
    ("users", "Users owned"),
    ("since", "Since"),
)

register_stanza_plugin(Iq, CommandStanza)
register_stanza_plugin(CommandStanza, Form)


@dataclass(frozen=True)
class _Pending:
    user: str
    command: Command
    address: Address | None
    fields: tuple[FormField, ...]


class AdHocCommands:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._pending: OrderedDict[str, _Pending] = OrderedDict()

    def _commands(self, address: Address | None) -> dict[str, Command]:
        commands = list(self.gateway.bridge.commands(address))
        archive = self.gateway.groups.archive if self.gateway.groups is not None else None
        if address is None and archive is not None:
            commands.append(settings_command(archive))  # the core's own: per-user switch
        return {command.node: command for command in commands}

    def _admin_nodes(self, address: Address | None, requester: JID) -> dict[str, str]:
        """The operators' commands `requester` may run here: on the component, if admin."""
        if address is not None or requester.bare not in self.gateway.admins:
            return {}
        return ADMIN_NODES

    def items(self, jid: JID, address: Address | None, requester: JID) -> DiscoItems:
        items = DiscoItems()
        items["node"] = COMMANDS_NS
        for command in self._commands(address).values():
            items.add_item(jid, node=command.node, name=command.name)
        for node, name in self._admin_nodes(address, requester).items():
            items.add_item(jid, node=node, name=name)
        return items

    def info(self, node: str, address: Address | None, requester: JID) -> DiscoInfo | None:
        command = self._commands(address).get(node)
        name = command.name if command is not None else None
        name = name or self._admin_nodes(address, requester).get(node)
        if name is None:
            return None
        info = DiscoInfo()
        info.add_identity("automation", "command-node", name=name)
        info.add_feature(COMMANDS_NS)
        info.add_feature("jabber:x:data")
        return info

    async def handle(self, iq: Iq, address: Address | None) -> None:
        query = iq["command"]
        action = query["action"] or "execute"
        if action == "cancel":
            self._pending.pop(query["sessionid"], None)
            self._reply(iq, query["sessionid"], "canceled")
            return
        user = iq["from"].bare
        if query["node"] in ADMIN_NODES and address is None:
            await self._admin(iq)
            return
        pending = self._pending.get(query["sessionid"]) if query["sessionid"] else None
        try:
            if pending is None or pending.user != user:
                await self._start(iq, query["node"], address, user)
            else:
                await self._finish(iq, pending)
        except BridgeError as exc:
            raise from_exception(exc) from exc

    async def _start(self, iq: Iq, node: str, address: Address | None, user: str) -> None:
        command = self._commands(address).get(node)
        if command is None:
            raise stanza_error("item-not-found", f"no command {node!r} here")
        account = await self.gateway.store.get_account(user, self.gateway.bridge.name)
        if account is None:  # settings are how users who cannot register change defaults
            account = await self.gateway.registration.default_account(user)
        if account is None:
            raise self.gateway.registration_required()
        fields = tuple(await command.form(account, address))
        session_id = secrets.token_hex(8)
        self._pending[session_id] = _Pending(user, command, address, fields)
        if len(self._pending) > PENDING_KEPT:
            self._pending.popitem(last=False)
        reply = self._reply(iq, session_id, "executing", send=False)
        reply["command"]["actions"] = ["complete"]
        reply["command"].append(build_form(fields, title=command.name, instructions=command.name))
        reply.send()

    async def _finish(self, iq: Iq, pending: _Pending) -> None:
        query = iq["command"]
        submitted = submitted_values(query) or {}
        try:
            values = check_values(pending.fields, submitted)
        except FormInvalid as exc:
            raise stanza_error("bad-request", exc.text) from None
        account = await self.gateway.store.get_account(pending.user, self.gateway.bridge.name)
        if account is None:
            raise self.gateway.registration_required()
        storage = AccountStorage(self.gateway.store, pending.user, self.gateway.bridge.name)
        text = await pending.command.submit(account, pending.address, storage, values)
        del self._pending[query["sessionid"]]
        reply = self._reply(iq, query["sessionid"], "completed", send=False)
        reply["command"].add_note(text, "info")
        reply.send()

    async def _admin(self, iq: Iq) -> None:
        """An operators' command: refused unless the sender is in `admins`."""
        if iq["from"].bare not in self.gateway.admins:
            raise stanza_error("forbidden", "only the gateway's admins may run this command")
        engine = self.gateway.store.engine
        if engine.dialect.name != "postgresql":
            rows = []  # one process alone on its database: no instances to list
        else:
            rows = await instances(engine)
        form = Form()
        form["type"] = "result"
        form["title"] = ADMIN_NODES[INSTANCES_NODE]
        for var, label in INSTANCE_COLUMNS:
            form.add_reported(var, label=label)
        for row in rows:
            form.add_item(
                {
                    "instance": row.id,
                    "host": row.host,
                    "pid": str(row.pid),
                    "role": row.role,
                    "slot": "" if row.slot is None else str(row.slot),
                    "users": str(row.users),
                    "since": row.since.isoformat(timespec="seconds"),
                }
            )
        reply = self._reply(iq, secrets.token_hex(8), "completed", send=False)
        reply["command"].append(form)
        reply.send()

    def _reply(self, iq: Iq, session_id: str, status: str, *, send: bool = True) -> Iq:
        reply: Iq = iq.reply()
        reply["command"]["node"] = iq["command"]["node"]
        reply["command"]["sessionid"] = session_id
        reply["command"]["status"] = status
        if send:
            reply.send()
        return reply
