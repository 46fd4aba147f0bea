"""XEP-0421 occupant ids as XMPP clients see them: through Prosody, the gateway as its
own process, InspIRCd with extended-join and WHOX. Accounts (which need services on
InspIRCd) are in test_irc_services_e2e, against Atheme."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
from slixmpp import Message, Presence
from test_archive_e2e import mam
from test_irc_e2e import (
    IRC_JID,
    IRC_SECRET,
    ROOM,
    irc_section,
    irc_user,
    join_room,
    joined_user,
    login,
)

from bridges.irc.devstack import InspIrcd
from component.devstack.prosody import Prosody
from component.muc import OCCUPANT_ID_NS


@pytest.fixture
async def stack(gateway_factory) -> AsyncIterator[tuple[Prosody, InspIrcd]]:
    if shutil.which("inspircd") is None:
        pytest.fail("inspircd is not installed: run bash .ci/setup")
    async with (
        Prosody(components={IRC_JID: IRC_SECRET}) as prosody,
        InspIrcd() as inspircd,
    ):
        await gateway_factory(prosody, bridges={"irc": irc_section(inspircd)})
        yield prosody, inspircd


def occupant_id(stanza) -> str | None:
    xml = getattr(stanza, "xml", stanza)  # a stanza, or a message element from MAM
    element = xml.find(f"{{{OCCUPANT_ID_NS}}}occupant-id")
    return None if element is None else element.get("id")


def presence_of(nick: str, available: bool = True):
    return lambda s: (
        isinstance(s, Presence)
        and s["from"].resource == nick
        and (s["type"] != "unavailable") == available
    )


def groupchat(body: str):
    return lambda s: isinstance(s, Message) and s["type"] == "groupchat" and s["body"] == body


async def test_every_observer_sees_one_stable_id_per_irc_user(stack, peers):
    prosody, inspircd = stack
    bob = await irc_user(inspircd, peers, "bob", "#room")
    alice = await joined_user(prosody, "alice")
    carol = await joined_user(prosody, "carol")
    info = await alice.plugin["xep_0030"].get_info(jid=ROOM, timeout=10)
    assert OCCUPANT_ID_NS in info["disco_info"]["features"]

    seen = {}
    for client in (alice, carol):
        presence = await client.wait_for(presence_of("bob"), timeout=15)
        seen[client] = occupant_id(presence)
    assert seen[alice] and seen[alice] == seen[carol]
    assert "bob" not in seen[alice]  # a keyed hash, not the nick

    bob.conn.privmsg("#room", "hello both")
    for client in (alice, carol):
        message = await client.wait_for(groupchat("hello both"), timeout=10)
        assert occupant_id(message) == seen[alice]

    bob.conn.nick("bobby")  # XEP-0421: the id survives a rename
    for client in (alice, carol):
        gone = await client.wait_for(presence_of("bob", available=False), timeout=10)
        renamed = await client.wait_for(presence_of("bobby"), timeout=10)
        assert occupant_id(gone) == occupant_id(renamed) == seen[alice]

    # The user's own presence and reflected message carry the id others see for them.
    own = await carol.wait_for(presence_of("alice"), timeout=10)
    message = alice.Message()
    message["to"], message["type"], message["body"] = ROOM, "groupchat", "from alice"
    message.send()
    reflected = await alice.wait_for(groupchat("from alice"), timeout=10)
    relayed = await carol.wait_for(groupchat("from alice"), timeout=10)
    assert occupant_id(reflected) == occupant_id(relayed) == occupant_id(own) is not None
    for client in (alice, carol):
        await client.close()


async def test_archived_lines_carry_the_ids_they_had_live(stack, peers):
    """MAM results and the discussion history on join name the same occupant as the
    live message did, for IRC users and for the user's own lines."""
    prosody, inspircd = stack
    bob = await irc_user(inspircd, peers, "bob", "#room")
    phone = await joined_user(prosody, "alice")
    bob.conn.privmsg("#room", "from bob")
    live = {"from bob": occupant_id(await phone.wait_for(groupchat("from bob"), timeout=10))}
    message = phone.Message()
    message["to"], message["type"], message["body"] = ROOM, "groupchat", "from alice"
    message.send()
    live["from alice"] = occupant_id(await phone.wait_for(groupchat("from alice"), timeout=10))
    assert None not in live.values() and live["from bob"] != live["from alice"]

    laptop = await login(prosody, phone.boundjid.bare, "laptop")
    await join_room(laptop, "alice")
    for body in live:
        history = await laptop.wait_for(groupchat(body), timeout=10)
        assert history.xml.find("{urn:xmpp:delay}delay") is not None
        assert occupant_id(history) == live[body], body

    results, _ = await mam(phone)
    archived = {m.findtext("{jabber:client}body"): occupant_id(m) for m in results}
    assert archived == live
    for client in (phone, laptop):
        await client.close()
