"""XEP-0030 answers for the component and for every legacy address behind it.

The component's own identity (`gateway/<type>`) and features are static; addresses
are answered on the fly by asking the bridge what the localpart names, so a client can
tell a room from a contact before it joins or writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn, cast

from slixmpp import JID
from slixmpp.plugins.xep_0030 import DiscoInfo, DiscoItems

from bridges.address import Address, AddressError, AddressKind
from bridges.events import GroupFeature
from component.commands import COMMANDS_NS
from component.errors import from_exception, stanza_error
from component.references import CORRECT_NS, REPLY_NS, restrictions_form
from component.references import FEATURES as FEATURES_NS

if TYPE_CHECKING:
    from component.gateway import Gateway

FEATURES = (
    "http://jabber.org/protocol/disco#info",
    "http://jabber.org/protocol/disco#items",
    "jabber:iq:register",
    "jabber:iq:gateway",
    "jabber:iq:version",
    "urn:xmpp:ping",
    "jid\\20escaping",
    COMMANDS_NS,
)
CONTACT_FEATURES = ("http://jabber.org/protocol/disco#info", "urn:xmpp:receipts")


class Disco:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.plugin = gateway.plugin["xep_0030"]
        bridge = gateway.bridge
        jid = JID(gateway.boundjid.bare)
        self.plugin.add_identity("gateway", bridge.disco_type, name=bridge.display_name, jid=jid)
        features = list(FEATURES)
        if bridge.supports_groups:
            features.append("http://jabber.org/protocol/muc")
        for feature in features:
            self.plugin.add_feature(feature, jid=jid)
        # slixmpp types these handlers' JIDs as optional; it always passes them.
        self.plugin.api.register(cast(Any, self.get_info), "get_info")
        self.plugin.api.register(cast(Any, self.get_items), "get_items")

    def _is_component(self, jid: JID) -> bool:
        return not jid.node and jid.bare == self.gateway.boundjid.bare

    @staticmethod
    def _not_found(node: str) -> NoReturn:
        raise stanza_error("item-not-found", f"no node {node!r} here")

    def _address(self, jid: JID) -> Address:
        try:
            return self.gateway.bridge.parse_address(jid.node)
        except AddressError as exc:
            raise from_exception(exc) from exc

    async def get_info(self, jid: JID, node: str | None, ifrom: JID, iq: Any) -> Any:
        address = None if self._is_component(jid) else self._address(jid)
        if node:
            return self.gateway.commands.info(node, address, ifrom) or self._not_found(node)
        if address is None:
            return self.plugin.static.get_info(jid, node, ifrom, iq)
        info = DiscoInfo()
        if address.kind is AddressKind.GROUP and self.gateway.groups is not None:
            session = self.gateway.sessions.get(ifrom.bare)
            native = session.group_features(address) if session is not None else frozenset()
            room = self.gateway.groups.disco_info(address, native)
            for category, itype, name in room.identities:
                info.add_identity(category, itype, name=name)
            for feature in room.features:
                info.add_feature(feature)
            for form in room.forms:
                info.xml.append(form)
            return info
        if address.kind is AddressKind.SERVICE:
            info.add_identity("gateway", self.gateway.bridge.disco_type, name=address.legacy_id)
            info.add_feature(COMMANDS_NS)
        else:
            info.add_identity("client", "pc", name=address.legacy_id)
            self._add_chat_features(info, address, ifrom)
        for feature in CONTACT_FEATURES:
            info.add_feature(feature)
        return info

    def _add_chat_features(self, info: DiscoInfo, contact: Address, ifrom: JID) -> None:
        """What a one-to-one chat with `contact` carries, as for a room: replies and
        corrections where the bridge passes them on, what the user's connection
        carries natively now (reactions, chat states) with XEP-0444's restrictions."""
        bridge = self.gateway.bridge
        if bridge.contact_replies:
            info.add_feature(REPLY_NS)
            if not bridge.refuse_corrections:
                info.add_feature(CORRECT_NS)
        session = self.gateway.sessions.get(ifrom.bare)
        native = session.group_features(contact) if session is not None else frozenset()
        for feature in sorted(native, key=lambda f: f.value):
            info.add_feature(FEATURES_NS[feature])
        if GroupFeature.REACTIONS in native:
            info.xml.append(restrictions_form())

    async def get_items(self, jid: JID, node: str | None, ifrom: JID, iq: Any) -> Any:
        address = None if self._is_component(jid) else self._address(jid)
        if node == COMMANDS_NS:
            return self.gateway.commands.items(jid, address, ifrom)
        if node:
            return self._not_found(node)
        items = DiscoItems()
        if address is None or address.kind is not AddressKind.SERVICE:
            return items
        if not self.gateway.bridge.supports_groups:
            return items  # no rooms to list: XEP-0030 wants an empty list, not an error
        session = await self.gateway.session_for(ifrom.bare)
        try:
            groups = await session.list_groups(address)
        except Exception as exc:
            raise from_exception(exc) from exc
        for group, name in groups:
            items.add_item(self.gateway.outbound.jid_of(group), name=name)
        return items
