"""XMPP syntax of messages that refer to earlier ones: replies (XEP-0461) with their
fallback (XEP-0428), corrections (XEP-0308), reactions (XEP-0444), retractions
(XEP-0424), chat states (XEP-0085) and displayed markers (XEP-0333).

Reading is defensive: these elements come from any client, so a range outside the
body, a thousand reactions or an unknown state are ignored or bounded, never raised.
Which of them a room carries is the bridge's answer (`Session.group_features`); this
module only reads and writes the elements.
"""

from __future__ import annotations

from datetime import datetime

from slixmpp import Message
from slixmpp.xmlstream import ET

from bridges import events
from bridges.events import GroupFeature
from component.xep_0203 import stamp

REPLY_NS = "urn:xmpp:reply:0"
FALLBACK_NS = "urn:xmpp:fallback:0"
CORRECT_NS = "urn:xmpp:message-correct:0"
REACTIONS_NS = "urn:xmpp:reactions:0"
RETRACT_NS = "urn:xmpp:message-retract:1"
MODERATE_NS = "urn:xmpp:message-moderate:1"
CHATSTATES_NS = "http://jabber.org/protocol/chatstates"
MARKERS_NS = "urn:xmpp:chat-markers:0"
HINTS_NS = "urn:xmpp:hints"

ALWAYS = (REPLY_NS, CORRECT_NS)
"""Every group takes replies and corrections, as text where it has nothing better."""
FEATURES = {
    GroupFeature.REACTIONS: REACTIONS_NS,
    GroupFeature.RETRACTIONS: RETRACT_NS,
    GroupFeature.CHAT_STATES: CHATSTATES_NS,
    GroupFeature.DISPLAYED_MARKERS: MARKERS_NS,
}
RESTRICTIONS_NS = "urn:xmpp:reactions:0:restrictions"
MAX_REACTIONS = 20
"""Most distinct emojis of one user on one message; more is abuse, not feeling. Rooms
say so (XEP-0444 §2.2, `restrictions_form`) and refuse more (`reaction_refusal`)."""
MAX_EMOJI_LENGTH = 32
"""Longest reaction in characters (a family emoji with modifiers fits)."""

_STATES = {
    "composing": events.ChatState.COMPOSING,
    "paused": events.ChatState.PAUSED,
    "active": events.ChatState.ACTIVE,
    "inactive": events.ChatState.ACTIVE,
    "gone": events.ChatState.ACTIVE,
}


def _id_of(message: Message, namespace: str, name: str) -> str | None:
    element = message.xml.find(f"{{{namespace}}}{name}")
    return (element.get("id") or None) if element is not None else None


def reply_id(message: Message) -> str | None:
    """The id a reply answers (in a room: the stanza-id the room gave it)."""
    return _id_of(message, REPLY_NS, "reply")


def replace_id(message: Message) -> str | None:
    """The id of the message a correction replaces."""
    return _id_of(message, CORRECT_NS, "replace")


def retract_id(message: Message) -> str | None:
    return _id_of(message, RETRACT_NS, "retract")


def displayed_id(message: Message) -> str | None:
    return _id_of(message, MARKERS_NS, "displayed")


def reactions(message: Message) -> tuple[str, list[str]] | None:
    """(the id reacted to, the sender's full set of reactions now), if it is one.

    Duplicates and empty reactions are dropped (XEP-0444 §4); reading stops one past
    MAX_REACTIONS, which is enough for `reaction_refusal` to refuse the set.
    """
    element = message.xml.find(f"{{{REACTIONS_NS}}}reactions")
    if element is None or not element.get("id"):
        return None
    emojis: list[str] = []
    for reaction in element.findall(f"{{{REACTIONS_NS}}}reaction"):
        text = (reaction.text or "").strip()
        if text and text not in emojis:
            emojis.append(text[: MAX_EMOJI_LENGTH + 1])
        if len(emojis) > MAX_REACTIONS:
            break
    return element.get("id", ""), emojis


def reaction_refusal(emojis: list[str]) -> str | None:
    """Why this set breaks the advertised restrictions (XEP-0444 §3.3 wants a
    `not-acceptable` error with the rules as text), or None when it is fine."""
    if len(emojis) > MAX_REACTIONS:
        return f"at most {MAX_REACTIONS} reactions per message here"
    if any(len(emoji) > MAX_EMOJI_LENGTH for emoji in emojis):
        return f"a reaction is one emoji (at most {MAX_EMOJI_LENGTH} characters)"
    return None


def restrictions_form() -> ET.Element:
    """XEP-0444 §2.2: the XEP-0128 form telling clients the per-user limit, so they
    do not offer a reaction that would be refused. There is no allowlist: IRC (tags
    or `/me` text) carries any emoji."""
    form = ET.Element("{jabber:x:data}x", {"type": "result"})
    for var, value in (("FORM_TYPE", RESTRICTIONS_NS), ("max_reactions_per_user", MAX_REACTIONS)):
        field = ET.SubElement(form, "{jabber:x:data}field", {"var": var})
        if var == "FORM_TYPE":
            field.set("type", "hidden")
        ET.SubElement(field, "{jabber:x:data}value").text = str(value)
    return form


def chat_state(message: Message) -> events.ChatState | None:
    for child in message.xml:
        if child.tag.startswith(f"{{{CHATSTATES_NS}}}"):
            return _STATES.get(child.tag.split("}", 1)[1])
    return None


def without_fallback(message: Message, body: str, purpose: str) -> str:
    """`body` without the ranges XEP-0428 marks as fallback for `purpose` (the quote
    a reply carries for clients without XEP-0461). Ranges count code points, as
    Python's str does; a bad range is ignored; an all-fallback body is kept whole."""
    ranges: list[tuple[int, int]] = []
    for fallback in message.xml.findall(f"{{{FALLBACK_NS}}}fallback"):
        if fallback.get("for") != purpose:
            continue
        for part in fallback.findall(f"{{{FALLBACK_NS}}}body"):
            first, last = part.get("start", ""), part.get("end", "")
            if first.isdigit() and last.isdigit() and int(first) < int(last) <= len(body):
                ranges.append((int(first), int(last)))
    text = body
    for start, end in sorted(set(ranges), reverse=True):
        text = text[:start] + text[end:]
    return text.strip() or body


def add_reply(message: ET.Element, target_id: str, to: str | None = None) -> None:
    attributes = {"id": target_id, **({"to": to} if to else {})}
    ET.SubElement(message, f"{{{REPLY_NS}}}reply", attributes)


def add_replace(message: ET.Element, target_id: str) -> None:
    ET.SubElement(message, f"{{{CORRECT_NS}}}replace", {"id": target_id})


def add_reactions(message: Message, target_id: str, emojis: list[str]) -> None:
    element = ET.SubElement(message.xml, f"{{{REACTIONS_NS}}}reactions", {"id": target_id})
    for emoji in emojis:
        ET.SubElement(element, f"{{{REACTIONS_NS}}}reaction").text = emoji
    add_hint(message, "store")


def add_retraction(
    message: Message,
    target_id: str,
    nick: str | None,
    moderator: str | None = None,
    reason: str | None = None,
) -> None:
    """A retraction with its fallback body, for clients without XEP-0424; by a
    `moderator` (their occupant JID) it is XEP-0425's moderated form, with the reason."""
    retract = ET.SubElement(message.xml, f"{{{RETRACT_NS}}}retract", {"id": target_id})
    if moderator is not None:
        ET.SubElement(retract, f"{{{MODERATE_NS}}}moderated", {"by": moderator})
        if reason:
            ET.SubElement(retract, f"{{{RETRACT_NS}}}reason").text = reason
    ET.SubElement(message.xml, f"{{{FALLBACK_NS}}}fallback", {"for": RETRACT_NS})
    removed = "removed a message" if moderator else "retracted a previous message"
    message["body"] = f"{nick or 'Someone'} {removed}" + (f": {reason}" if reason else ".")
    add_hint(message, "store")


def add_tombstone(message: ET.Element, when: datetime) -> None:
    """XEP-0424 §5: what the archive shows in place of a retracted message."""
    ET.SubElement(message, f"{{{RETRACT_NS}}}retracted", {"stamp": stamp(when)})


def add_chat_state(message: Message, state: events.ChatState) -> None:
    ET.SubElement(message.xml, f"{{{CHATSTATES_NS}}}{state.value}")
    add_hint(message, "no-store")


def add_hint(message: Message, hint: str) -> None:
    ET.SubElement(message.xml, f"{{{HINTS_NS}}}{hint}")
