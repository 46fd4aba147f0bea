"""The room archive end to end: slixmpp clients on Prosody, the gateway, ngIRCd.

What a client sees: stanza-ids on live messages equal to the ids MAM returns, MAM
paging both ways with RSM and flip-page, own messages with their origin-id, one archive
per user, history for a second resource, hostile queries answered with errors, and an
archive that survives a gateway restart.
"""

from __future__ import annotations

from typing import Any

import pytest
import test_irc_e2e as irc_e2e
from harness import has_archived
from registration_helpers import register_and_subscribe
from slixmpp import Iq, Message
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET
from test_irc_e2e import (
    IRC_JID,
    PASSWORD,
    ROOM,
    complete_command,
    groupchat,
    irc_section,
    irc_user,
    join_presence,
    join_room,
    joined_user,
    login,
)
from xmpp_client import TestClient, eventually_async

from component.archive import SETTINGS_NODE
from component.devstack.postgres import Postgres

# The fixtures of the IRC end-to-end tests, used here by name.
servers, gateway_app, stack = irc_e2e.servers, irc_e2e.gateway_app, irc_e2e.stack

MAM, RSM, SID = "urn:xmpp:mam:2", "http://jabber.org/protocol/rsm", "urn:xmpp:sid:0"
DATA, FORWARD = "jabber:x:data", "urn:xmpp:forward:0"
_queries = iter(range(1_000_000))


def stanza_id(stanza) -> str | None:
    element = stanza.xml.find(f"{{{SID}}}stanza-id")
    return None if element is None else element.get("id")


async def mam(
    client: TestClient,
    fields: dict[str, str] | None = None,
    *,
    to: str = ROOM,
    flip: bool = False,
    **rsm: str,
) -> tuple[list[Any], Iq]:
    """Query the archive of `to`; the original messages of the results, and the fin iq."""
    query_id = f"q{next(_queries)}"
    iq = client.make_iq_to(to, "set")
    query = ET.SubElement(iq.xml, f"{{{MAM}}}query", {"queryid": query_id})
    form = ET.SubElement(query, f"{{{DATA}}}x", {"type": "submit"})
    for var, value in {"FORM_TYPE": MAM, **(fields or {})}.items():
        field = ET.SubElement(form, f"{{{DATA}}}field", {"var": var})
        ET.SubElement(field, f"{{{DATA}}}value").text = value
    if rsm:
        page = ET.SubElement(query, f"{{{RSM}}}set")
        for name, value in rsm.items():
            ET.SubElement(page, f"{{{RSM}}}{name}").text = value or None
    if flip:
        ET.SubElement(query, f"{{{MAM}}}flip-page")
    fin = await iq.send(timeout=10)
    # Results come before the iq result on the same stream, so all are recorded now.
    found = [s for s in client.stanzas if _result(s, query_id) is not None]
    for stanza in found:
        client.stanzas.remove(stanza)
    return [_original(s, query_id) for s in found], fin


def _result(stanza, query_id: str):
    if not isinstance(stanza, Message):
        return None
    result = stanza.xml.find(f"{{{MAM}}}result")
    return result if result is not None and result.get("queryid") == query_id else None


def _original(stanza, query_id: str):
    result = _result(stanza, query_id)
    forwarded = result.find(f"{{{FORWARD}}}forwarded")
    assert forwarded.find("{urn:xmpp:delay}delay") is not None
    original = forwarded.find("{jabber:client}message")
    assert original is not None, [child.tag for child in forwarded]
    assert original.find(f"{{{SID}}}stanza-id").get("id") == result.get("id")
    return original


def body(original) -> str:
    return original.findtext("{jabber:client}body")


def archive_id(original) -> str:
    return original.find(f"{{{SID}}}stanza-id").get("id")


def fin_page(fin: Iq) -> tuple[str | None, str | None, str | None]:
    element = fin.xml.find(f"{{{MAM}}}fin")
    page = element.find(f"{{{RSM}}}set")
    return (
        element.get("complete"),
        page.findtext(f"{{{RSM}}}first"),
        page.findtext(f"{{{RSM}}}last"),
    )


async def said(client: TestClient, *texts: str) -> list[Message]:
    return [await client.wait_for(groupchat(text)) for text in texts]


async def test_mam_pages_both_ways_and_ids_equal_live(stack, peers):
    prosody, ngircd = stack
    alice = await joined_user(prosody, "alice")
    bob = await irc_user(ngircd, peers, "bob", "#room")
    texts = [f"line {n}" for n in range(7)]
    for text in texts:
        bob.conn.privmsg("#room", text)
    live = await said(alice, *texts)
    live_ids = [stanza_id(m) for m in live]
    assert all(live_ids) and len(set(live_ids)) == 7
    assert all(m.xml.find(f"{{{SID}}}stanza-id").get("by") == ROOM for m in live)

    info = await alice.plugin["xep_0030"].get_info(jid=ROOM, timeout=10)
    assert {MAM, MAM + "#extended", SID} <= set(info["disco_info"]["features"])

    last, fin = await mam(alice, max="3", before="")
    assert [body(m) for m in last] == ["line 4", "line 5", "line 6"]
    assert [archive_id(m) for m in last] == live_ids[4:]
    assert [m.get("from") for m in last] == [f"{ROOM}/bob"] * 3
    complete, first, _ = fin_page(fin)
    assert complete is None and first == live_ids[4]

    older, fin = await mam(alice, max="3", before=first, flip=True)
    assert [body(m) for m in older] == ["line 3", "line 2", "line 1"]  # newest first
    _, first, _ = fin_page(fin)
    oldest, fin = await mam(alice, max="3", before=first)
    assert [body(m) for m in oldest] == ["line 0"]
    assert fin_page(fin)[0] == "true"

    forward, fin = await mam(alice, max="4")
    assert [body(m) for m in forward] == ["line 0", "line 1", "line 2", "line 3"]
    rest, fin = await mam(alice, max="4", after=fin_page(fin)[2])
    assert [body(m) for m in rest] == ["line 4", "line 5", "line 6"]
    assert fin_page(fin)[0] == "true"

    by_id, _ = await mam(alice, {"after-id": live_ids[1], "before-id": live_ids[3]})
    assert [body(m) for m in by_id] == ["line 2"]
    metadata = alice.make_iq_to(ROOM, "get")
    ET.SubElement(metadata.xml, f"{{{MAM}}}metadata")
    answer = await metadata.send(timeout=10)
    ends = answer.xml.find(f"{{{MAM}}}metadata")
    assert [ends.find(f"{{{MAM}}}{tag}").get("id") for tag in ("start", "end")] == [
        live_ids[0],
        live_ids[6],
    ]
    await alice.close()


async def test_own_message_keeps_origin_id_live_and_archived(stack, peers):
    prosody, ngircd = stack
    alice = await joined_user(prosody, "alice")
    bob = await irc_user(ngircd, peers, "bob", "#room")
    message = alice.Message()
    message["to"], message["type"], message["body"], message["id"] = (
        ROOM,
        "groupchat",
        "mine",
        "client-id-1",
    )
    ET.SubElement(message.xml, f"{{{SID}}}origin-id", {"id": "origin-1"})
    message.send()
    await bob.wait_text("pubmsg", "mine")
    [echo] = await said(alice, "mine")
    assert echo["id"] == "client-id-1"
    assert echo.xml.find(f"{{{SID}}}origin-id").get("id") == "origin-1"
    [archived], _ = await mam(alice)
    assert (archived.get("id"), archive_id(archived), archived.get("from")) == (
        "client-id-1",
        stanza_id(echo),
        f"{ROOM}/alice",
    )
    assert archived.find(f"{{{SID}}}origin-id").get("id") == "origin-1"
    await alice.close()


async def test_two_users_in_one_channel_have_two_archives(stack, peers):
    prosody, ngircd = stack
    bob = await irc_user(ngircd, peers, "bob", "#room")
    alice = await joined_user(prosody, "alice")
    bob.conn.privmsg("#room", "before carol came")
    await said(alice, "before carol came")
    carol = await joined_user(prosody, "carol")
    bob.conn.privmsg("#room", "hello both")
    [for_alice] = await said(alice, "hello both")
    [for_carol] = await said(carol, "hello both")
    assert stanza_id(for_alice) != stanza_id(for_carol)

    alice_archive, _ = await mam(alice, {"with": f"{ROOM}/bob"})
    carol_archive, _ = await mam(carol, {"with": f"{ROOM}/bob"})
    assert [body(m) for m in alice_archive] == ["before carol came", "hello both"]
    assert [body(m) for m in carol_archive] == ["hello both"]
    with pytest.raises(IqError) as foreign:
        await mam(carol, {"ids": stanza_id(for_alice)})
    assert foreign.value.condition == "item-not-found"
    for client in (alice, carol):
        await client.close()


async def test_second_resource_joining_gets_the_history(stack, peers):
    """Issue 9: a second resource got no discussion history (XEP-0045 §7.2.15)."""
    prosody, ngircd = stack
    phone = await joined_user(prosody, "alice")
    bob = await irc_user(ngircd, peers, "bob", "#room")
    bob.conn.privmsg("#room", "earlier")
    [live] = await said(phone, "earlier")

    laptop = await login(prosody, phone.boundjid.bare, "laptop")
    await join_room(laptop, "alice")
    history = await laptop.wait_for(groupchat("earlier"))
    assert history.xml.find("{urn:xmpp:delay}delay") is not None
    assert (history["id"], stanza_id(history)) == (live["id"], stanza_id(live))
    for client in (phone, laptop):
        await client.close()


async def test_hostile_mam_requests_get_errors_and_nothing_breaks(stack, peers):
    prosody, ngircd = stack
    alice = await joined_user(prosody, "alice")
    bob = await irc_user(ngircd, peers, "bob", "#room")
    bob.conn.privmsg("#room", "still served")
    await said(alice, "still served")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"fields": {"FORM_TYPE": "urn:xmpp:mam:0"}}, "bad-request"),
        ({"fields": {"start": "not a date"}}, "bad-request"),
        ({"fields": {"with": "mallory@example.org"}}, "bad-request"),
        ({"max": "-5"}, "bad-request"),
        ({"after": "no-such-id"}, "item-not-found"),
        ({"fields": {"before-id": "no-such-id"}}, "item-not-found"),
        ({"to": f"{ROOM}/bob"}, "service-unavailable"),
        ({"to": f"bob%127.0.0.1@{IRC_JID}"}, "service-unavailable"),
    ]
    for arguments, condition in cases:
        with pytest.raises(IqError) as refused:
            await mam(alice, **arguments)
        assert refused.value.condition == condition, arguments

    stranger = await login(prosody, await prosody.register("stranger", PASSWORD), "pc")
    with pytest.raises(IqError) as unregistered:
        await mam(stranger)
    assert unregistered.value.condition == "registration-required"

    served, _ = await mam(alice)
    assert [body(m) for m in served] == ["still served"]
    for client in (alice, stranger):
        await client.close()


def irc_bridges(ngircd) -> dict[str, Any]:
    return {"irc": irc_section(ngircd)}


async def test_restart_keeps_the_archive(servers, gateway_app, peers):
    """SIGTERM writes what is queued; SIGKILL loses nothing already committed."""
    prosody, ngircd = servers
    alice = await joined_user(prosody, "alice")
    bob = await irc_user(ngircd, peers, "bob", "#room")
    bob.conn.privmsg("#room", "remember me")
    [live] = await said(alice, "remember me")

    assert await gateway_app.stop() == 0
    await gateway_app.start()  # same config, same database
    [archived], _ = await mam(alice)
    assert (body(archived), archive_id(archived)) == ("remember me", stanza_id(live))

    join_presence(alice, "alice")  # the new process knows of no join
    history = await alice.wait_for(groupchat("remember me"))  # from the archive now
    assert history.xml.find("{urn:xmpp:delay}delay") is not None
    assert stanza_id(history) == stanza_id(live)
    bob.conn.privmsg("#room", "and me")
    [later] = await said(alice, "and me")
    user = alice.boundjid.bare
    await eventually_async(lambda: has_archived(gateway_app.config, user, "irc", "and me"))
    await gateway_app.kill()
    await gateway_app.start()
    both, _ = await mam(alice)
    assert [(body(m), archive_id(m)) for m in both] == [
        ("remember me", stanza_id(live)),
        ("and me", stanza_id(later)),
    ]
    await alice.close()


@pytest.fixture
async def postgres_url():
    async with Postgres() as server:
        yield await server.create_database("gateway")


async def test_on_postgresql_paging_and_restart(servers, gateway_factory, peers, postgres_url):
    prosody, ngircd = servers
    config = {"bridges": irc_bridges(ngircd), "database_url": postgres_url}
    gateway = await gateway_factory(prosody, **config)
    alice = await joined_user(prosody, "alice")
    bob = await irc_user(ngircd, peers, "bob", "#room")
    for n in range(3):
        bob.conn.privmsg("#room", f"pg {n}")
    live = await said(alice, "pg 0", "pg 1", "pg 2")

    assert await gateway.stop() == 0
    await gateway.start()  # same config, same database
    page, fin = await mam(alice, max="2", before="")
    assert [body(m) for m in page] == ["pg 1", "pg 2"]
    assert [archive_id(m) for m in page] == [stanza_id(m) for m in live[1:]]
    older, fin = await mam(alice, max="2", before=fin_page(fin)[1])
    assert [body(m) for m in older] == ["pg 0"] and fin_page(fin)[0] == "true"
    await alice.close()


async def test_operator_switch_turns_archiving_off(servers, gateway_factory, peers):
    prosody, ngircd = servers
    await gateway_factory(prosody, bridges=irc_bridges(ngircd), archive={"enabled": False})
    alice = await joined_user(prosody, "alice")
    bob = await irc_user(ngircd, peers, "bob", "#room")
    bob.conn.privmsg("#room", "not archived")
    [live] = await said(alice, "not archived")
    assert stanza_id(live) is None
    info = await alice.plugin["xep_0030"].get_info(jid=ROOM, timeout=10)
    assert MAM not in info["disco_info"]["features"]
    with pytest.raises(IqError) as refused:
        await mam(alice)
    assert refused.value.condition in {"feature-not-implemented", "service-unavailable"}
    await alice.close()


async def test_user_switch_in_the_settings_command(stack, peers):
    prosody, ngircd = stack
    alice = await joined_user(prosody, "alice")
    bob = await irc_user(ngircd, peers, "bob", "#room")
    bob.conn.privmsg("#room", "archived")
    await said(alice, "archived")
    await run_archive_command(alice, enabled="0")
    bob.conn.privmsg("#room", "after opting out")
    [unarchived] = await said(alice, "after opting out")
    assert stanza_id(unarchived) is None  # no id that MAM would not know
    nothing, fin = await mam(alice)
    assert nothing == [] and fin_page(fin)[0] == "true"  # and the old line is deleted

    await run_archive_command(alice, enabled="1")
    bob.conn.privmsg("#room", "archived again")
    await said(alice, "archived again")
    again, _ = await mam(alice)
    assert [body(m) for m in again] == ["archived again"]
    await alice.close()


async def run_archive_command(client: TestClient, **values: str) -> None:
    form, _ = await complete_command(client, IRC_JID, SETTINGS_NODE, **values)
    assert form["command"]["form"].get_fields()["enabled"]["type"] == "boolean"


async def test_registration_flow_still_works_for_archived_rooms(stack):
    """A freshly registered user's first join is served an (empty) history cleanly."""
    prosody, _ngircd = stack
    jid = await prosody.register("newcomer", PASSWORD)
    client = await login(prosody, jid, "pc")
    await register_and_subscribe(client, IRC_JID, nick="newcomer")
    await join_room(client, "newcomer", timeout=15)
    nothing, fin = await mam(client)
    assert nothing == [] and fin_page(fin) == ("true", None, None)
    await client.close()
