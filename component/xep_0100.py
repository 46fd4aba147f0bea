"""XEP-0100 gateway interaction: jabber:iq:gateway and the presence subscription dance.

slixmpp's own XEP-0100 plugin keeps subscriptions in an in-memory roster and answers
probes with `unsubscribed` for JIDs it has not seen since start, which silently drops a
user's subscription after a restart. The registration in the database is the source
of truth here instead.
"""

from __future__ import annotations

from typing import ClassVar

from slixmpp import Iq, Presence
from slixmpp.xmlstream import ElementBase, register_stanza_plugin

GATEWAY_NS = "jabber:iq:gateway"


class GatewayQuery(ElementBase):
    """`<query xmlns='jabber:iq:gateway'>` with desc, prompt and jid children."""

    namespace = GATEWAY_NS
    name = "query"
    plugin_attrib = "gateway"
    interfaces: ClassVar[set[str]] = {"desc", "prompt", "jid"}
    sub_interfaces: ClassVar[set[str]] = interfaces


register_stanza_plugin(Iq, GatewayQuery)


def presence(pfrom: str, pto: str, ptype: str | None = None, status: str | None = None) -> Presence:
    """A presence stanza from one of our JIDs; `ptype` None means available."""
    stanza = Presence()
    stanza["from"], stanza["to"] = pfrom, pto
    if ptype:
        stanza["type"] = ptype
    if status:
        stanza["status"] = status
    return stanza
