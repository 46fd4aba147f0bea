"""The stanzas handled most, room messages, without slixmpp's stanza objects.

Out: a live room message, written straight to text (`groupchat`). In: a user's plain
message to a room, read straight from its element (`plain_groupchat`).

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

Reading a stanza through slixmpp's interfaces (`message["from"].bare`, `["body"]`)
costs a microsecond or more per look-up, and the way from a user's room message to
IRC took about fifteen of them, plus one `find` per element that could change its
meaning. `plain_groupchat` reads the element once and answers only for the common
shape: a body, perhaps an origin-id and elements that change nothing for a room
message with a body (chat states, markable, a receipt request). Anything else (a
reply, a correction, a reaction, an attachment, a subject, a second body, a body in
another language) is None and takes the general path. tests/unit/test_wire.py checks
that what it reads equals what the general path reads.
"""

from __future__ import annotations

from dataclasses import fields
from functools import lru_cache
from operator import attrgetter
from typing import NamedTuple
from xml.etree.ElementTree import Element

from bridges.xml_text import xml_safe
from component.archive import Line

SID_NS = "urn:xmpp:sid:0"
OCCUPANT_ID_NS = "urn:xmpp:occupant-id:0"
ORIGIN_ID = f"{{{SID_NS}}}origin-id"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
CHATSTATES_NS = "http://jabber.org/protocol/chatstates"
CHAT_STATES = ("active", "composing", "paused", "inactive", "gone")
IGNORED_BESIDE_A_BODY = frozenset(
    {
        *(f"{{{CHATSTATES_NS}}}{state}" for state in CHAT_STATES),
        "{urn:xmpp:chat-markers:0}markable",
        "{urn:xmpp:receipts}request",
    }
)
"""Elements the general path leaves unread in a room message with a body: a chat
state and a displayed marker are read only from bodiless ones, and a room message's
receipt is its reflection."""

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
_others = attrgetter(*(name for name, _ in _OTHERS))
_DEFAULTS = tuple(default for _, default in _OTHERS)


def is_plain(line: Line) -> bool:
    """Whether `line` carries nothing but what `groupchat` writes."""
    return bool(line.body) and _others(line) == _DEFAULTS


@lru_cache(maxsize=4096)
def _escaped_name(text: str) -> str:
    """`escape` for the JIDs and ids that come back in every message of a room."""
    return escape(text)


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
        f'<message from="{_escaped_name(sender)}" to="{_escaped_name(to)}" type="groupchat"'
        f' id="{escape(line.message_id)}"><body>{escape(line.body)}</body>'
    ]
    if occupant_id is not None:
        parts.append(f'<occupant-id xmlns="{OCCUPANT_ID_NS}" id="{_escaped_name(occupant_id)}" />')
    if stanza_id_by is not None:
        parts.append(
            f'<stanza-id xmlns="{SID_NS}" id="{escape(line.stanza_id)}"'
            f' by="{_escaped_name(stanza_id_by)}" />'
        )
    if line.origin_id:
        parts.append(f'<origin-id xmlns="{SID_NS}" id="{escape(line.origin_id)}" />')
    parts.append("</message>")
    return "".join(parts)


class PlainGroupchat(NamedTuple):
    """What the general path reads from a plain room message (`plain_groupchat`)."""

    sender: str
    """The `from` attribute, as the server wrote it."""
    to: str
    id: str
    """The `id` attribute; empty when there is none."""
    body: str
    origin_id: str | None
    """The XEP-0359 origin-id's `id`; None when there is none (or it is empty)."""


def plain_groupchat(xml: Element, body_tag: str) -> PlainGroupchat | None:
    """`xml` read as a user's plain room message, or None for any other stanza.

    `body_tag` is the body's qualified name in the stream's namespace, where slixmpp
    looks for it. A body without `xml:lang` is the one slixmpp reads whatever the
    message's own language.
    """
    if xml.get("type") != "groupchat":
        return None
    sender, to = xml.get("from"), xml.get("to")
    if not sender or not to:
        return None
    body: str | None = None
    origin_id: str | None = None
    seen_body = seen_origin = False
    for child in xml:
        tag = child.tag
        if tag == body_tag:
            if seen_body or len(child) or XML_LANG in child.attrib:
                return None
            seen_body, body = True, child.text
        elif tag == ORIGIN_ID:
            if seen_origin:
                return None
            seen_origin, origin_id = True, child.get("id") or None
        elif tag not in IGNORED_BESIDE_A_BODY:
            return None
    if not body:
        return None
    return PlainGroupchat(sender, to, xml.get("id", ""), body, origin_id)
