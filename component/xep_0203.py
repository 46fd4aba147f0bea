"""XEP-0203 delayed delivery: when a message was really sent, if it waited somewhere.

Mail that arrived while the gateway was down and IRC lines a bouncer replays keep their
original time, so clients show and sort them where they belong.
"""

from __future__ import annotations

from datetime import UTC, datetime

from slixmpp import Message
from slixmpp.xmlstream import ET

DELAY_NS = "urn:xmpp:delay"


def add_delay(message: Message, sent: datetime, by: str) -> None:
    """Stamp `message` as sent at `sent`; `by` is the entity that held it."""
    stamp = sent.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ET.SubElement(message.xml, f"{{{DELAY_NS}}}delay", {"from": by, "stamp": stamp})
