"""Reading what clients send: XEP-0428 fallback ranges, reactions, chat states."""

from __future__ import annotations

from slixmpp import Message
from slixmpp.xmlstream import ET

from bridges import events
from component import references
from component.references import FALLBACK_NS, REACTIONS_NS, REPLY_NS


def message_with_fallback(body: str, *ranges: tuple[str, str], purpose: str = REPLY_NS) -> Message:
    message = Message()
    message["body"] = body
    fallback = ET.SubElement(message.xml, f"{{{FALLBACK_NS}}}fallback", {"for": purpose})
    for start, end in ranges:
        ET.SubElement(fallback, f"{{{FALLBACK_NS}}}body", {"start": start, "end": end})
    return message


def test_the_quote_is_stripped_by_code_points():
    body = "> bob: héllo 👋\nyes"
    quote = len("> bob: héllo 👋\n")
    message = message_with_fallback(body, ("0", str(quote)))
    assert references.without_fallback(message, body, REPLY_NS) == "yes"


def test_bad_ranges_and_other_purposes_are_ignored():
    body = "> q\nanswer"
    for bad in [("4", "2"), ("0", "999"), ("-1", "3"), ("x", "3"), ("0", "")]:
        message = message_with_fallback(body, bad)
        assert references.without_fallback(message, body, REPLY_NS) == body
    other = message_with_fallback(body, ("0", "4"), purpose="urn:xmpp:other")
    assert references.without_fallback(other, body, REPLY_NS) == body
    everything = message_with_fallback(body, ("0", str(len(body))))
    assert references.without_fallback(everything, body, REPLY_NS) == body  # kept whole


def test_reactions_are_bounded_and_deduplicated():
    message = Message()
    element = ET.SubElement(message.xml, f"{{{REACTIONS_NS}}}reactions", {"id": "s1"})
    for text in ["👍", "👍", "", "x" * 100, *(str(n) for n in range(50))]:
        ET.SubElement(element, f"{{{REACTIONS_NS}}}reaction").text = text
    target, emojis = references.reactions(message)
    assert target == "s1"
    assert emojis[0] == "👍" and len(emojis) == references.MAX_REACTIONS + 1
    assert len(set(emojis)) == len(emojis)
    assert "x" * (references.MAX_EMOJI_LENGTH + 1) in emojis  # cut, still too long
    assert references.reactions(Message()) is None


def test_reactions_beyond_the_advertised_restrictions_are_refused():
    allowed = [str(n) for n in range(references.MAX_REACTIONS)]
    assert references.reaction_refusal(allowed) is None
    assert references.reaction_refusal([]) is None
    assert "at most 20" in (references.reaction_refusal([*allowed, "🎉"]) or "")
    assert "one emoji" in (references.reaction_refusal(["x" * 33]) or "")


def test_chat_states():
    message = Message()
    ET.SubElement(message.xml, f"{{{references.CHATSTATES_NS}}}inactive")
    assert references.chat_state(message) is events.ChatState.ACTIVE
    bogus = Message()
    ET.SubElement(bogus.xml, f"{{{references.CHATSTATES_NS}}}bogus")
    assert references.chat_state(bogus) is None
    assert references.chat_state(Message()) is None
