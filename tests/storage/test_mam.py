"""component.mam as a unit over a real archive (SQLite and PostgreSQL): MAM stanzas in,
result messages and the fin out, checked the way a client reads them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from slixmpp import JID, Iq
from slixmpp.exceptions import XMPPError
from slixmpp.xmlstream import ET

from bridges import events
from bridges.irc import IrcBridge
from bridges.irc.options import IrcOptions
from component.archive import Archive
from component.mam import DATA_NS, FORWARD_NS, RSM_NS, ArchiveQueries, parse_query
from component.muc import MAM_NS, SID_NS, GroupChats

COMPONENT = "irc.localhost"
USER, OTHER = "user@localhost", "other@localhost"
ROOM_JID = f"#room%irc.x.org@{COMPONENT}"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def mam_iq(
    fields: dict[str, str | list[str]] | None = None,
    *,
    max: str | None = None,
    after: str | None = None,
    before: str | None = None,
    flip: bool = False,
    frm: str = f"{USER}/phone",
    itype: str = "set",
) -> Iq:
    iq = Iq()
    iq["from"], iq["to"], iq["type"], iq["id"] = frm, ROOM_JID, itype, "q1"
    query = ET.SubElement(iq.xml, f"{{{MAM_NS}}}query", {"queryid": "f27"})
    if fields is not None:
        form = ET.SubElement(query, f"{{{DATA_NS}}}x", {"type": "submit"})
        for var, value in {"FORM_TYPE": MAM_NS, **fields}.items():
            field = ET.SubElement(form, f"{{{DATA_NS}}}field", {"var": var})
            for item in value if isinstance(value, list) else [value]:
                ET.SubElement(field, f"{{{DATA_NS}}}value").text = item
    if max is not None or after is not None or before is not None:
        rsm = ET.SubElement(query, f"{{{RSM_NS}}}set")
        if max is not None:
            ET.SubElement(rsm, f"{{{RSM_NS}}}max").text = max
        if after is not None:
            ET.SubElement(rsm, f"{{{RSM_NS}}}after").text = after
        if before is not None:
            ET.SubElement(rsm, f"{{{RSM_NS}}}before").text = before or None
    if flip:
        ET.SubElement(query, f"{{{MAM_NS}}}flip-page")
    return iq


def parse(iq: Iq):
    return parse_query(iq.xml.find(f"{{{MAM_NS}}}query"), JID(ROOM_JID))


@pytest.mark.parametrize(
    ("iq", "condition"),
    [
        (mam_iq({"FORM_TYPE": "urn:xmpp:mam:1"}), "bad-request"),
        (mam_iq({"start": "yesterday"}), "bad-request"),
        (mam_iq({"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}), "bad-request"),
        (mam_iq({"with": "someone@else.org/nick"}), "bad-request"),
        (mam_iq({"with": ["a", "b"]}), "bad-request"),
        (mam_iq({"{urn:example}search": "x"}), "feature-not-implemented"),
        (mam_iq(max="-1"), "bad-request"),
        (mam_iq(max="lots"), "bad-request"),
        (mam_iq(after=""), "bad-request"),
    ],
)
def test_hostile_forms_are_refused(iq, condition):
    with pytest.raises(XMPPError) as refused:
        parse(iq)
    assert refused.value.condition == condition


def test_query_fields_and_paging():
    query = parse(mam_iq({"with": f"{ROOM_JID}/bob", "ids": ["a", "b"]}, max="9999", before=""))
    assert (query.query_id, query.wanted.nick, query.wanted.ids) == ("f27", "bob", ("a", "b"))
    assert (query.paging.max, query.paging.last, query.paging.before) == (250, True, None)
    assert parse(mam_iq({"with": "bob"})).wanted.nick == "bob"
    assert parse(mam_iq()).paging.max == 250


@pytest.fixture
async def setup(engine, store):
    for user in (USER, OTHER):
        await store.save_account(user, "irc", settings={})
    archive = Archive(engine, "irc")
    archive.start()
    sent: list = []
    bridge = IrcBridge(IrcOptions())
    groups = GroupChats(sent.append, COMPONENT, bridge, archive)
    room = bridge.parse_address("#room%irc.x.org")
    for n in range(5):
        await groups.on_event(
            USER,
            events.Message(room, f"line {n}", nick="bob", timestamp=T0 + timedelta(minutes=n)),
        )
    await groups.on_event(OTHER, events.Message(room, "for other only", nick="bob"))
    yield ArchiveQueries(groups, sent.append), sent, room
    await archive.stop()


def results(sent):
    return [s for s in sent if s.xml.find(f"{{{MAM_NS}}}result") is not None]


def result_body(message) -> str:
    return message.xml.findtext(
        f"{{{MAM_NS}}}result/{{{FORWARD_NS}}}forwarded/{{jabber:client}}message/{{jabber:client}}body"
    )


def fin(sent):
    reply = sent[-1]
    assert reply.name == "iq" and reply["type"] == "result"
    element = reply.xml.find(f"{{{MAM_NS}}}fin")
    rsm = element.find(f"{{{RSM_NS}}}set")
    return (
        element.get("complete"),
        rsm.findtext(f"{{{RSM_NS}}}first"),
        rsm.findtext(f"{{{RSM_NS}}}last"),
    )


async def test_pages_both_ways_with_flip(setup):
    mam, sent, room = setup
    sent.clear()
    await mam.query(mam_iq(max="2", before=""), room)  # the last page
    page = results(sent)
    assert [result_body(m) for m in page] == ["line 3", "line 4"]
    complete, first, last = fin(sent)
    assert complete is None
    first_result = page[0].xml.find(f"{{{MAM_NS}}}result")
    assert (first_result.get("queryid"), first_result.get("id")) == ("f27", first)
    forwarded = first_result.find(f"{{{FORWARD_NS}}}forwarded")
    assert forwarded.find("{urn:xmpp:delay}delay").get("stamp") == (
        (T0 + timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    original = forwarded.find("{jabber:client}message")
    assert original.get("from") == f"{ROOM_JID}/bob" and original.get("to") is None
    assert original.find(f"{{{SID_NS}}}stanza-id").get("id") == first

    sent.clear()
    await mam.query(mam_iq(max="2", before=first, flip=True), room)
    assert [result_body(m) for m in results(sent)] == ["line 2", "line 1"]  # newest first
    assert fin(sent)[0] is None
    _, first, _ = fin(sent)
    sent.clear()
    await mam.query(mam_iq(max="2", before=first), room)
    assert [result_body(m) for m in results(sent)] == ["line 0"]
    assert fin(sent)[0] == "true"

    sent.clear()
    await mam.query(mam_iq(max="3"), room)  # forward from the start
    assert [result_body(m) for m in results(sent)] == ["line 0", "line 1", "line 2"]
    _, _, last = fin(sent)
    sent.clear()
    await mam.query(mam_iq(max="3", after=last), room)
    assert [result_body(m) for m in results(sent)] == ["line 3", "line 4"]
    assert fin(sent)[0] == "true"


async def test_own_archive_only_and_unknown_ids(setup):
    mam, sent, room = setup
    sent.clear()
    await mam.query(mam_iq(frm=f"{OTHER}/pc"), room)
    assert [result_body(m) for m in results(sent)] == ["for other only"]
    other_id = fin(sent)[1]
    for iq in (
        mam_iq({"ids": other_id}),
        mam_iq({"after-id": other_id}),
        mam_iq(after=other_id),
        mam_iq(before="no-such-id"),
    ):
        with pytest.raises(XMPPError) as refused:
            await mam.query(iq, room)
        assert refused.value.condition == "item-not-found"


async def test_form_and_metadata(setup):
    mam, sent, room = setup
    sent.clear()
    await mam.query(mam_iq(itype="get"), room)
    form = sent[-1].xml.find(f"{{{MAM_NS}}}query/{{{DATA_NS}}}x")
    assert {f.get("var") for f in form} >= {"FORM_TYPE", "with", "start", "end", "ids"}

    metadata_iq = Iq()
    metadata_iq["from"], metadata_iq["to"], metadata_iq["type"] = f"{USER}/pc", ROOM_JID, "get"
    ET.SubElement(metadata_iq.xml, f"{{{MAM_NS}}}metadata")
    await mam.metadata(metadata_iq, room)
    metadata = sent[-1].xml.find(f"{{{MAM_NS}}}metadata")
    start, end = metadata.find(f"{{{MAM_NS}}}start"), metadata.find(f"{{{MAM_NS}}}end")
    assert start.get("timestamp") == T0.strftime("%Y-%m-%dT%H:%M:%SZ")
    sent.clear()
    await mam.query(mam_iq(max="5"), room)
    _, first, last = fin(sent)
    assert (start.get("id"), end.get("id")) == (first, last)

    metadata_iq["from"] = "stranger@localhost/pc"
    await mam.metadata(metadata_iq, room)
    assert list(sent[-1].xml.find(f"{{{MAM_NS}}}metadata")) == []
