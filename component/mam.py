"""XEP-0313 Message Archive Management on room JIDs: each user reads their own archive.

The query is read from the XML itself (form fields, XEP-0059 RSM, `<flip-page/>`):
slixmpp's xep_0313 stanza getters are written for the client side and lose values
(`before_id`, `after_id` and `ids` return nothing), so they are registered only so the
router can match the stanzas. Result messages are built by the MUC engine, so an
archived copy carries the same `id`, stanza-id and origin-id as the live one.

Bad input never reaches the database: a malformed form is `bad-request`, a field we do
not know `feature-not-implemented` (as XEP-0313 §4.1.5 asks), an id that is not in the
archive `item-not-found`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from slixmpp import JID, Iq, Message
from slixmpp.jid import InvalidJID
from slixmpp.plugins.xep_0313.stanza import MAM, Metadata
from slixmpp.xmlstream import ET, StanzaBase, register_stanza_plugin

from bridges.address import Address
from bridges.timestamps import parse_timestamp
from component.archive import Filter, Line, PageRequest, UnknownId
from component.errors import stanza_error
from component.muc import MAM_NS, GroupChats
from component.xep_0203 import add_delay, stamp

RSM_NS = "http://jabber.org/protocol/rsm"
FORWARD_NS = "urn:xmpp:forward:0"
DATA_NS = "jabber:x:data"
VALIDATE_NS = "http://jabber.org/protocol/xdata-validate"
MAX_PAGE = 250
"""Most results per page, whatever RSM `<max>` asks (also the page size without one)."""
FIELDS = {
    "with": "jid-single",
    "start": "text-single",
    "end": "text-single",
    "before-id": "text-single",
    "after-id": "text-single",
    "ids": "list-multi",
}

# The gateway runs on its own: it must know these stanzas itself to route them.
register_stanza_plugin(Iq, MAM)
register_stanza_plugin(Iq, Metadata)


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed MAM query."""

    query_id: str | None
    wanted: Filter
    paging: PageRequest
    flip: bool


def parse_query(query: ET.Element, room: JID) -> Query:
    """Read a `<query xmlns='urn:xmpp:mam:2'>`; raise a stanza error for bad input."""
    values = _form_values(query)
    start, end = _time(values, "start"), _time(values, "end")
    if start is not None and end is not None and start > end:
        raise stanza_error("bad-request", "start is after end")
    wanted = Filter(
        start=start,
        end=end,
        nick=_nick(_single(values, "with"), room),
        after_id=_single(values, "after-id"),
        before_id=_single(values, "before-id"),
        ids=tuple(value for value in values.get("ids", []) if value),
    )
    flip = query.find(f"{{{MAM_NS}}}flip-page") is not None
    return Query(query.get("queryid") or None, wanted, _paging(query), flip)


def _form_values(query: ET.Element) -> dict[str, list[str]]:
    form = query.find(f"{{{DATA_NS}}}x")
    if form is None:
        return {}
    if form.get("type", "submit") != "submit":
        raise stanza_error("bad-request", "the query form must be of type submit")
    values: dict[str, list[str]] = {}
    for field in form.findall(f"{{{DATA_NS}}}field"):
        var = field.get("var")
        if not var or var in values:
            raise stanza_error("bad-request", "every form field needs a var, once")
        values[var] = [value.text or "" for value in field.findall(f"{{{DATA_NS}}}value")]
    form_type = values.pop("FORM_TYPE", [MAM_NS])
    if form_type != [MAM_NS]:
        raise stanza_error("bad-request", f"FORM_TYPE must be {MAM_NS}")
    unknown = sorted(set(values) - FIELDS.keys())
    if unknown:
        raise stanza_error("feature-not-implemented", f"unknown fields: {', '.join(unknown)}")
    return values


def _single(values: dict[str, list[str]], var: str) -> str | None:
    given = [value for value in values.get(var, []) if value]
    if len(given) > 1:
        raise stanza_error("bad-request", f"{var} takes one value")
    return given[0] if given else None


def _time(values: dict[str, list[str]], var: str) -> datetime | None:
    raw = _single(values, var)
    moment = parse_timestamp(raw)
    if raw is not None and moment is None:
        raise stanza_error("bad-request", f"{var} is not an XEP-0082 date-time: {raw!r}")
    return moment


def _nick(raw: str | None, room: JID) -> str | None:
    """`with` names an occupant: `room@service/nick`, or just the nick."""
    if raw is None:
        return None
    if "@" not in raw and "/" not in raw:
        return raw
    try:
        jid = JID(raw)
    except InvalidJID:
        jid = None
    if jid is None or jid.bare != room.bare or not jid.resource:
        raise stanza_error("bad-request", f"with must be an occupant of {room.bare}: room/nick")
    return jid.resource


def _paging(query: ET.Element) -> PageRequest:
    rsm = query.find(f"{{{RSM_NS}}}set")
    if rsm is None:
        return PageRequest(MAX_PAGE)
    if rsm.find(f"{{{RSM_NS}}}index") is not None:
        raise stanza_error("feature-not-implemented", "page with before/after, not index")
    size = MAX_PAGE
    raw_max = rsm.findtext(f"{{{RSM_NS}}}max")
    if raw_max is not None:
        if not raw_max.strip().isdigit():
            raise stanza_error("bad-request", f"RSM max must be a whole number: {raw_max!r}")
        size = min(int(raw_max), MAX_PAGE)
    after = rsm.find(f"{{{RSM_NS}}}after")
    if after is not None and not after.text:
        raise stanza_error("bad-request", "RSM after needs an id")
    before = rsm.find(f"{{{RSM_NS}}}before")
    return PageRequest(
        size,
        after=after.text if after is not None else None,
        before=before.text or None if before is not None else None,
        last=before is not None and not before.text,
    )


class ArchiveQueries:
    """Answers MAM queries, form requests and metadata requests sent to a room JID."""

    def __init__(self, groups: GroupChats, send: Callable[[StanzaBase], None]) -> None:
        assert groups.archive is not None
        self.groups = groups
        self.archive = groups.archive
        self._send = send

    async def query(self, iq: Iq, room: Address) -> None:
        element = iq.xml.find(f"{{{MAM_NS}}}query")
        assert element is not None  # the router matched it
        if iq["type"] == "get":
            self._send(self._form(iq))
            return
        room_jid = self.groups.room_jid(room)
        query = parse_query(element, room_jid)
        try:
            page = await self.archive.page(
                iq["from"].bare, room.legacy_id, query.wanted, query.paging
            )
        except UnknownId as exc:
            raise stanza_error("item-not-found", f"not in your archive: {exc}") from None
        for line in reversed(page.lines) if query.flip else page.lines:
            self._send(self._result(iq, query.query_id, room, line))
        reply = iq.reply(clear=True)
        fin = ET.SubElement(reply.xml, f"{{{MAM_NS}}}fin")
        if page.complete:
            fin.set("complete", "true")
        rsm = ET.SubElement(fin, f"{{{RSM_NS}}}set")
        if page.lines:  # chronological whatever the order sent: paging goes on from these
            ET.SubElement(rsm, f"{{{RSM_NS}}}first").text = page.lines[0].stanza_id
            ET.SubElement(rsm, f"{{{RSM_NS}}}last").text = page.lines[-1].stanza_id
        self._send(reply)

    async def metadata(self, iq: Iq, room: Address) -> None:
        """The first and last archived ids and times; an empty element for no archive."""
        if iq["type"] != "get":
            raise stanza_error("bad-request", "metadata is read with an iq get")
        bounds = await self.archive.bounds(iq["from"].bare, room.legacy_id)
        reply = iq.reply(clear=True)
        metadata = ET.SubElement(reply.xml, f"{{{MAM_NS}}}metadata")
        for tag, line in zip(("start", "end"), bounds or (), strict=False):
            ET.SubElement(
                metadata,
                f"{{{MAM_NS}}}{tag}",
                {"id": line.stanza_id, "timestamp": stamp(line.sent)},
            )
        self._send(reply)

    def _result(self, iq: Iq, query_id: str | None, room: Address, line: Line) -> Message:
        room_jid = self.groups.room_bare_jid(room)
        element = ET.Element(
            "{jabber:client}message",
            {"from": room_jid, "to": iq["from"].full, "id": uuid.uuid4().hex},
        )
        attributes = {"id": line.stanza_id, **({"queryid": query_id} if query_id else {})}
        result = ET.SubElement(element, f"{{{MAM_NS}}}result", attributes)
        forwarded = ET.SubElement(result, f"{{{FORWARD_NS}}}forwarded")
        add_delay(forwarded, line.sent, room_jid)
        # XEP-0313 §5.1.2: no 'to' on the forwarded message of a MUC archive.
        forwarded.append(self.groups.line_element(room, line))
        return Message(xml=element)

    def _form(self, iq: Iq) -> Iq:
        reply: Iq = iq.reply(clear=True)
        query = ET.SubElement(reply.xml, f"{{{MAM_NS}}}query")
        form = ET.SubElement(query, f"{{{DATA_NS}}}x", {"type": "form"})
        form_type = ET.SubElement(form, f"{{{DATA_NS}}}field", {"type": "hidden"})
        form_type.set("var", "FORM_TYPE")
        ET.SubElement(form_type, f"{{{DATA_NS}}}value").text = MAM_NS
        for var, kind in FIELDS.items():
            field = ET.SubElement(form, f"{{{DATA_NS}}}field", {"type": kind, "var": var})
            if var == "ids":  # an open list: any id may be given
                validate = ET.SubElement(field, f"{{{VALIDATE_NS}}}validate")
                validate.set("datatype", "xs:string")
                ET.SubElement(validate, f"{{{VALIDATE_NS}}}open")
        return reply
