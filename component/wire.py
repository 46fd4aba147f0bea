"""The stanza sent most, a live room message, written straight to text.

slixmpp builds a stanza as an ElementTree inside objects that resolve every key, and
serializes it with an escaping loop over each character: most of the gateway's CPU
time per room message went there. `groupchat` writes the same XML in one pass: each
value made XML-safe (`bridges.xml_text`, as `component.gateway.to_component_stream`
does) and escaped with the same five entities slixmpp uses. tests/unit/test_wire.py
checks, by canonical XML, that it equals what `GroupChats.line_stanza` builds with
slixmpp, hostile text included.

Only the plain shape is written here: a message with a delay, or a `Line` carrying
anything this module does not know (a field added to `Line` that is not at its
default), is built by slixmpp as before, so new elements keep working without this
module knowing them.
"""

from __future__ import annotations

from dataclasses import fields

from bridges.xml_text import xml_safe
from component.archive import Line

SID_NS = "urn:xmpp:sid:0"
OCCUPANT_ID_NS = "urn:xmpp:occupant-id:0"

_WRITTEN = frozenset(
    {
        *("user", "room", "stanza_id", "sent", "nick", "body", "kind"),
        *("legacy_id", "origin_id", "xmpp_id", "occupant_id"),
    }
)
"""The `Line` fields whose meaning in a live stanza this module writes (or needs not)."""

_OTHERS = tuple((field.name, field.default) for field in fields(Line) if field.name not in _WRITTEN)
"""Every other field and its default (MISSING when it has none: such a line is never
plain)."""


def is_plain(line: Line) -> bool:
    """Whether `line` carries nothing but what `groupchat` writes."""
    return bool(line.body) and all(getattr(line, name) == default for name, default in _OTHERS)


def escape(text: str) -> str:
    """`text` fit for XML content or a quoted attribute: allowed characters, entities."""
    text = xml_safe(text)
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if "'" in text:
        text = text.replace("'", "&apos;")
    if '"' in text:
        text = text.replace('"', "&quot;")
    return text


def groupchat(
    sender: str, to: str, line: Line, stanza_id_by: str | None, occupant_id: str | None = None
) -> str:
    """The live room message of `line` from the occupant JID `sender` to `to`.

    `stanza_id_by` (the room's bare JID) adds the XEP-0359 stanza-id of an archived
    line, `occupant_id` (already the room's hash) the sender's XEP-0421 id. Like
    slixmpp's, the stanza is in the stream's default namespace.
    """
    parts = [
        f'<message from="{escape(sender)}" to="{escape(to)}" type="groupchat"'
        f' id="{escape(line.message_id)}"><body>{escape(line.body)}</body>'
    ]
    if occupant_id is not None:
        parts.append(f'<occupant-id xmlns="{OCCUPANT_ID_NS}" id="{escape(occupant_id)}" />')
    if stanza_id_by is not None:
        parts.append(
            f'<stanza-id xmlns="{SID_NS}" id="{escape(line.stanza_id)}"'
            f' by="{escape(stanza_id_by)}" />'
        )
    if line.origin_id:
        parts.append(f'<origin-id xmlns="{SID_NS}" id="{escape(line.origin_id)}" />')
    parts.append("</message>")
    return "".join(parts)
