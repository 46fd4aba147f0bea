"""Whatever text a legacy network hands over, what the gateway writes is well-formed XML.

The property: any string, in any text field of any event that Outbound turns into a
stanza for a user, comes out of `to_component_stream` as XML that a strict parser (the
kind every XMPP server runs) accepts, with every character XML allows kept as it was.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as StdET

from hypothesis import given
from hypothesis import strategies as st
from slixmpp.xmlstream import ET, tostring

from bridges import events
from bridges.address import Address, AddressKind
from bridges.irc.formatting import strip_formatting, to_styling
from bridges.xml_text import REPLACEMENT, xml_safe
from component.gateway import to_component_stream
from component.outbound import Outbound

USER = "user@localhost"
CONTACT = Address(AddressKind.CONTACT, "bob")

texts = st.text(alphabet=st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF))


def written(text: str) -> list[str]:
    """Every stanza the events carrying `text` produce, as the stream would write them."""
    sent: list = []
    outbound = Outbound("fake.localhost", lambda address: address.legacy_id, sent.append)
    for event in (
        events.Message(CONTACT, text, nick=text, subject=text, thread=text),
        events.Presence(CONTACT, show="away", status=text),
        events.DeliveryFailed(CONTACT, "id1", "item-not-found", text),
        events.Invitation(Address(AddressKind.GROUP, "#room"), CONTACT, reason=text),
        events.Notice(text),
    ):
        outbound_deliver(outbound, event)
    for stanza in sent:
        to_component_stream(stanza.xml)
    return [tostring(stanza.xml) for stanza in sent]


def outbound_deliver(outbound: Outbound, event: events.Event) -> None:
    coroutine = outbound.deliver(USER, event)
    try:
        coroutine.send(None)
    except StopIteration:
        return
    raise AssertionError("Outbound.deliver awaited something without rooms")


def as_parsed(text: str, attribute: bool = False) -> str:
    """What a parser reads back: XML normalises line ends, and blanks in attributes."""
    text = xml_safe(text).replace("\r\n", "\n").replace("\r", "\n")
    return re.sub("[\t\n]", " ", text) if attribute else text


@given(texts)
def test_every_stanza_built_from_any_text_is_well_formed(text):
    for xml in written(text):
        parsed = StdET.fromstring(xml)  # raises on a character XML forbids
        texts_read = [element.text or "" for element in parsed.iter()]
        values_read = [value for element in parsed.iter() for value in element.attrib.values()]
        assert any(as_parsed(text) in read for read in texts_read) or any(
            as_parsed(text, attribute=True) in read for read in values_read
        ), xml


@given(texts, texts)
def test_attributes_and_tails_are_cleaned_too(value, tail):
    element = ET.Element("{jabber:client}message", {"to": USER, "x": value})
    child = ET.SubElement(element, "{jabber:client}body")
    child.text, child.tail = value, tail
    to_component_stream(element)
    parsed = StdET.fromstring(tostring(element))
    assert parsed.get("x") == as_parsed(value, attribute=True)
    assert (parsed[0].text or "", parsed[0].tail or "") == (as_parsed(value), as_parsed(tail))


def test_controls_become_the_replacement_character_and_text_is_kept():
    assert xml_safe("ding\x07 \x1b[0m\x00 tab\tok é 𝄞") == "ding\ufffd \ufffd[0m\ufffd tab\tok é 𝄞"
    assert xml_safe("\ud800 lone surrogate") == f"{REPLACEMENT} lone surrogate"


def test_irc_text_is_cleaned_after_its_formatting_codes_are_read():
    assert to_styling("\x02bold\x02 \x07bell") == "*bold* \ufffdbell"
    assert strip_formatting("\x0304red\x03 \x1b") == "red \ufffd"
