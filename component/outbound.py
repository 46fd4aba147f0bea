"""Legacy events → stanzas: the only place that decides what the user receives.

Room events go to the XEP-0045 engine (component.muc) when the bridge has groups; the
rest becomes messages and presences from the legacy address's JID to the user's bare
JID, so the user's server delivers them to every resource, or to offline storage.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from slixmpp import JID, Message, Presence
from slixmpp.xmlstream import ET, StanzaBase

from bridges import events
from bridges.address import Address
from component import references
from component.chats import PrivateChats
from component.errors import error_type
from component.muc import CONFERENCE_NS
from component.xep_0203 import add_delay

log = logging.getLogger(__name__)

NICK_NS = "http://jabber.org/protocol/nick"
RECEIPTS_NS = "urn:xmpp:receipts"
MARKERS_NS = "urn:xmpp:chat-markers:0"
OOB_NS = "jabber:x:oob"

SENDERS_KEPT = 10_000
RoomHandler = Callable[[str, events.Event], Awaitable[bool]]


class Outbound:
    def __init__(
        self,
        component_jid: str,
        format_address: Callable[[Address], str],
        send: Callable[[StanzaBase], None],
        rooms: RoomHandler | None = None,
        available: Callable[[JID], bool] = lambda jid: True,
        chats: PrivateChats | None = None,
    ) -> None:
        self.component_jid = component_jid
        self._format_address = format_address
        self._send = send
        self._rooms = rooms
        self._available = available
        """Whether a full JID is one of its user's available resources right now."""
        self._senders: OrderedDict[tuple[str, str], tuple[JID, bool]] = OrderedDict()
        self.chats = chats or PrivateChats()
        """One-to-one chats' references: legacy ids and both sides' XEP-0444 sets (the
        gateway keeps the user's)."""

    def remember_sender(self, sender: JID, xmpp_id: str, wants_receipt: bool) -> None:
        """Note which resource sent a message, for errors and receipts that come later.

        Servers drop message errors addressed to a bare JID (RFC 6121 §8.5.2.1.1), so a
        failure must go back to the resource that sent the message; and XEP-0184 allows
        a receipt only where the message asked for one.
        """
        self._senders[(sender.bare, xmpp_id)] = (sender, wants_receipt)
        if len(self._senders) > SENDERS_KEPT:
            self._senders.popitem(last=False)

    def _sender(
        self,
        user: str,
        xmpp_id: str | None,
        origin: events.Origin | None,
        *,
        receipt: bool = False,
    ) -> tuple[JID | str, bool]:
        """Where to answer `xmpp_id`, and whether it wants a receipt.

        The resource that sent it, as remembered here or, after a restart, as the
        bridge stored it (`origin`); else the bare JID. A `receipt` keeps what is
        remembered (an error may still follow: IRC reports a missing nick only after
        the line was written, and so after its receipt) and, for a stored origin whose
        resource is no longer available, goes to the bare JID: the server hands a chat
        message to the bare JID to the user's available resources or to offline storage
        (RFC 6121 §8.5.2.1.1), while one to a gone resource is left to its policy
        (§8.5.3.2.1). An error always goes to the resource: servers drop errors
        addressed to a bare JID (§8.5.2.1.1), so a bridge tells of late failures also
        with a `Notice`.
        """
        if not xmpp_id:
            return user, False
        key = (user, xmpp_id)
        known = self._senders.get(key) if receipt else self._senders.pop(key, None)
        if known is not None:
            return known
        if origin is None or JID(origin.jid).bare != user:  # never another user's resource
            return user, False
        sender = JID(origin.jid)
        if receipt and not self._available(sender):
            return user, origin.receipt
        return sender, origin.receipt

    def jid_of(self, address: Address, resource: str | None = None) -> JID:
        jid = JID(f"{self._format_address(address)}@{self.component_jid}")
        if resource:
            jid.resource = resource
        return jid

    async def deliver(self, user: str, event: events.Event) -> None:
        """Send what `event` means for `user` (a bare JID)."""
        if self._rooms is not None and await self._rooms(user, event):
            return
        match event:
            case events.Message():
                if event.legacy_id and not event.sender.is_group:
                    # A contact's message: clients know it by its legacy id.
                    self.chats.note(user, event.legacy_id, event.legacy_id)
                self._send(self._message(user, event))
            case events.Presence():
                self._send(self._presence(user, event))
            case events.SubscriptionRequest():
                request = Presence()
                request["from"], request["to"] = self.jid_of(event.sender), user
                request["type"] = "subscribe"
                self._send(request)
            case events.DeliveryFailed():
                self._send(self._failure(user, event))
            case events.Delivered():
                if event.legacy_id and event.xmpp_id and not event.to.is_group:
                    more = event.legacy_ids[1:]
                    self.chats.note(user, event.xmpp_id, event.legacy_id, more)
                to, wanted = self._sender(user, event.xmpp_id, event.origin, receipt=True)
                if wanted:
                    self._send(self._receipt(to, event))
            case events.Invitation():
                self._send(self._invitation(user, event))
            case events.Notice():
                self.notice(user, event.text)
            case events.Typing():
                typing = self._chat(user, event.room)
                references.add_chat_state(typing, event.state)
                self._send(typing)
            case events.Reaction():
                emojis = await self.chats.contacts_change(
                    user, event.target, event.emoji, event.removed
                )
                reaction = self._chat(user, event.room)
                references.add_reactions(reaction, event.target, emojis)
                self._send(reaction)
            case events.Retraction():  # the contact took back their own message
                retraction = self._chat(user, event.room)
                references.add_retraction(retraction, event.target, event.nick, None, event.reason)
                self._send(retraction)
            case _:
                log.warning("%s: dropped %s, which this bridge cannot show", user, event)

    def _invitation(self, user: str, event: events.Invitation) -> Message:
        """XEP-0249 direct invitation, with a body for clients that do not know it."""
        room = str(self.jid_of(event.room))
        message = Message()
        message["from"] = self.jid_of(event.by) if event.by else self.component_jid
        message["to"] = user
        text = f"You are invited to {room}"
        message["body"] = f"{text}: {event.reason}" if event.reason else text
        invite = ET.SubElement(message.xml, f"{{{CONFERENCE_NS}}}x", {"jid": room})
        if event.reason:
            invite.set("reason", event.reason)
        return message

    def _chat(self, user: str, contact: Address) -> Message:
        """A chat message from `contact` without a text of its own (a chat state,
        reactions, a retraction with its fallback)."""
        message = Message()
        message["from"], message["to"], message["type"] = self.jid_of(contact), user, "chat"
        return message

    def notice(self, user: str, text: str) -> None:
        """A chat message from the component itself."""
        message = Message()
        message["from"], message["to"], message["type"] = self.component_jid, user, "chat"
        message["body"] = text
        self._send(message)

    def _message(self, user: str, event: events.Message) -> Message:
        message = Message()
        message["from"] = self.jid_of(event.sender)
        message["to"] = user
        message["type"] = "normal" if event.quiet else "chat"
        message["body"] = event.text
        if event.file is not None:
            # XEP-0066; clients show the file inline when the body is the bare URL
            message["body"] = event.file.url
            oob = ET.SubElement(message.xml, f"{{{OOB_NS}}}x")
            ET.SubElement(oob, f"{{{OOB_NS}}}url").text = event.file.url
            ET.SubElement(
                oob, f"{{{OOB_NS}}}desc"
            ).text = f"{event.file.name} ({event.file.size} bytes)"
        if event.markable:
            ET.SubElement(message.xml, f"{{{MARKERS_NS}}}markable")
        if event.subject:
            message["subject"] = event.subject
        if event.thread:
            message["thread"] = event.thread
        # An id either way, so a client can reply or react to it (XEP-0461, 0444).
        message["id"] = event.legacy_id or uuid.uuid4().hex
        if event.reply_to:  # XEP-0461, by the id the user's clients know it by
            references.add_reply(message.xml, event.reply_to)
        if event.nick:
            nick = ET.SubElement(message.xml, f"{{{NICK_NS}}}nick")
            nick.text = event.nick
        if event.timestamp:
            add_delay(message, event.timestamp, self.component_jid)
        return message

    def _presence(self, user: str, event: events.Presence) -> Presence:
        presence = Presence()
        presence["from"], presence["to"] = self.jid_of(event.sender), user
        if not event.available:
            presence["type"] = "unavailable"
        elif event.show:
            presence["show"] = event.show
        if event.status:
            presence["status"] = event.status
        return presence

    def _failure(self, user: str, event: events.DeliveryFailed) -> Message:
        message = Message()
        to, _ = self._sender(user, event.xmpp_id, event.origin)
        message["from"], message["to"], message["type"] = self.jid_of(event.to), to, "error"
        if event.xmpp_id:
            message["id"] = event.xmpp_id
        message["error"]["condition"] = event.condition
        message["error"]["type"] = error_type(event.condition)
        message["error"]["text"] = event.text
        return message

    def _receipt(self, to: JID | str, event: events.Delivered) -> Message:
        message = Message()
        message["from"], message["to"], message["type"] = self.jid_of(event.to), to, "chat"
        ET.SubElement(message.xml, f"{{{RECEIPTS_NS}}}received", {"id": event.xmpp_id})
        return message
