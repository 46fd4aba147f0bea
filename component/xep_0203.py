"""XEP-0203 delayed delivery: when a message was really sent, if it waited somewhere.

Mail that arrived while the gateway was down and IRC lines a bouncer replays keep their
original time, so clients show and sort them where they belong.
"""

from __future__ import annotations

from datetime import UTC, datetime

from slixmpp import Message
from slixmpp.xmlstream import ET

DELAY_NS = "urn:xmpp:delay"


def stamp(moment: datetime) -> str:
    """An XEP-0082 UTC date-time, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def add_delay(message: Message | ET.Element, sent: datetime, by: str) -> None:
    """Stamp `message` (or a MAM `<forwarded/>`) as sent at `sent`; `by` held it."""
    parent = message.xml if isinstance(message, Message) else message
    ET.SubElement(parent, f"{{{DELAY_NS}}}delay", {"from": by, "stamp": stamp(sent)})
