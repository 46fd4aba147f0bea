"""Replies, reactions, corrections, retractions, typing and read markers (issue 11),
end to end: slixmpp clients with the XEP plugins on Prosody, the gateway as its own
process, and IRC peers that negotiate message-tags and check the exact tags.

InspIRCd 3 carries client tags; ngIRCd has none, so there the text fallbacks show;
a scripted server offers what neither has (draft/message-redaction, draft/read-marker)
and sends hostile tags. Each room's disco#info is checked against what works there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from harness import has_archived
from irc_helpers import ScriptedIrcd, TagPeer
from slixmpp import Message
from slixmpp.xmlstream import ET
from test_archive_e2e import archive_id, body, mam
from test_irc_e2e import (
    IRC_JID,
    IRC_SECRET,
    ROOM,
    irc_section,
    join_presence,
    joined_user,
    status_codes,
)
from xmpp_client import TestClient, eventually_async

from bridges.irc.devstack import InspIrcd, NgIrcd
from component.devstack.prosody import Prosody
from component.references import (
    CHATSTATES_NS,
    CORRECT_NS,
    MARKERS_NS,
    MAX_REACTIONS,
    REACTIONS_NS,
    REPLY_NS,
    RESTRICTIONS_NS,
    RETRACT_NS,
)

SID = "urn:xmpp:sid:0"
PLUGINS = ("xep_0461", "xep_0444", "xep_0308", "xep_0424", "xep_0085", "xep_0333", "xep_0359")


@pytest.fixture
async def prosody() -> AsyncIterator[Prosody]:
    async with Prosody(components={IRC_JID: IRC_SECRET}) as server:
        yield server


@pytest.fixture
async def peers() -> AsyncIterator[list[TagPeer]]:
    made: list[TagPeer] = []
    yield made
    for peer in made:
        await peer.close()


async def tag_peer(
    ircd: Any, peers: list[TagPeer], nick: str, caps: str = "message-tags"
) -> TagPeer:
    peer = await TagPeer.connect(ircd.host, ircd.port, nick, caps)
    peers.append(peer)
    await peer.join("#room")
    return peer


async def fred_in_room(prosody: Prosody) -> TestClient:
    client = await joined_user(prosody, "fred")
    for plugin in PLUGINS:
        client.register_plugin(plugin)
    return client


def groupchat_with(text: str):
    return lambda s: isinstance(s, Message) and s["type"] == "groupchat" and s["body"] == text


def stanza_id(stanza: Message) -> str:
    element = stanza.xml.find(f"{{{SID}}}stanza-id")
    assert element is not None, stanza
    return element.get("id", "")


def config_changed(stanza) -> bool:
    return isinstance(stanza, Message) and "104" in status_codes(stanza)


def tags_of(line: str) -> list[str]:
    """The raw `key=value` tags of a line, unparsed (escapes and all)."""
    return line[1:].split(" ", 1)[0].split(";") if line.startswith("@") else []


def child(stanza: Message, namespace: str, name: str) -> ET.Element | None:
    return stanza.xml.find(f"{{{namespace}}}{name}")


async def room_features(client: TestClient) -> set[str]:
    info = await client.plugin["xep_0030"].get_info(jid=ROOM, timeout=10)
    return set(info["disco_info"]["features"])


async def reaction_restrictions(client: TestClient) -> dict[str, list[str]] | None:
    """The XEP-0444 §2.2 restrictions form of the room's disco#info, by field."""
    info = await client.plugin["xep_0030"].get_info(jid=ROOM, timeout=10)
    for form in info.xml.iter("{jabber:x:data}x"):
        fields = {
            f.get("var", ""): [v.text or "" for v in f.iter("{jabber:x:data}value")]
            for f in form.iter("{jabber:x:data}field")
        }
        if fields.get("FORM_TYPE") == [RESTRICTIONS_NS]:
            return fields
    return None


def groupchat(client: TestClient, text: str = "") -> Message:
    message = client.make_message(mto=ROOM, mtype="groupchat", mbody=text or None)
    return message


def react(client: TestClient, to_id: str, *emojis: str) -> Message:
    message = groupchat(client)
    client.plugin["xep_0444"].set_reactions(message, to_id, emojis)
    message["id"] = f"react-{to_id[:8]}-{len(emojis)}"
    message.send()
    return message


async def refused(client: TestClient, message_id: str) -> Message:
    error = await client.wait_for(
        lambda s: isinstance(s, Message) and s["type"] == "error" and s["id"] == message_id
    )
    assert isinstance(error, Message)
    return error


# --- InspIRCd: the IRCv3 tags ---------------------------------------------------------


@pytest.fixture
async def inspircd_stack(prosody, gateway_factory) -> AsyncIterator[tuple[Prosody, InspIrcd]]:
    async with InspIrcd() as ircd:
        await gateway_factory(prosody, bridges={"irc": irc_section(ircd)})
        yield prosody, ircd


async def test_replies_reactions_corrections_and_typing_with_tags(inspircd_stack, peers):
    prosody, ircd = inspircd_stack
    bob = await tag_peer(ircd, peers, "bob")
    fred = await fred_in_room(prosody)
    await bob.line_with("JOIN", "fred")

    # Joined before the connection was open: 104 tells the client to ask disco again.
    await fred.wait_for(config_changed)
    features = await room_features(fred)
    assert {REPLY_NS, CORRECT_NS, REACTIONS_NS, CHATSTATES_NS} <= features
    assert not {RETRACT_NS, MARKERS_NS} & features  # InspIRCd 3 offers neither
    restrictions = await reaction_restrictions(fred)
    assert restrictions is not None
    assert restrictions["max_reactions_per_user"] == [str(MAX_REACTIONS)]
    assert "allowlist" not in restrictions  # IRC carries any emoji

    # IRC → XMPP, then an XEP-0461 reply with its quoted fallback back to IRC.
    bob.send("PRIVMSG #room :hello fred")
    hello = await fred.wait_for(groupchat_with("hello fred"))
    bob_msgid = hello["id"]  # an IRC line keeps its msgid as the stanza's id
    reply = fred.plugin["xep_0461"].make_reply(
        f"{ROOM}/bob",
        stanza_id(hello),
        fallback="hello fred",
        quoted_nick="bob",
        mto=ROOM,
        mbody="hi bob",
        mtype="groupchat",
    )
    reply["id"] = "reply-1"
    reply.send()
    line = await bob.line_with("PRIVMSG #room :")
    assert f"+draft/reply={bob_msgid}" in tags_of(line)
    assert line.endswith("PRIVMSG #room :hi bob")  # the quote is stripped
    reflected = await fred.wait_for(lambda s: isinstance(s, Message) and s["id"] == "reply-1")
    assert reflected["body"] == "hi bob"
    assert child(reflected, REPLY_NS, "reply").get("id") == stanza_id(hello)
    fred_msgid = next(t for t in tags_of(line) if t.startswith("msgid=")).removeprefix("msgid=")

    # IRC reply → XEP-0461 reply to the archived message.
    bob.send(f"@+draft/reply={fred_msgid} PRIVMSG #room :thanks")
    thanks = await fred.wait_for(groupchat_with("thanks"))
    assert child(thanks, REPLY_NS, "reply").get("id") == stanza_id(reflected)

    # More reactions than the room advertises: not-acceptable with the rule, nothing
    # sent to IRC (XEP-0444 §3.3).
    too_many = react(fred, stanza_id(hello), *(chr(0x1F600 + n) for n in range(MAX_REACTIONS + 1)))
    error = await refused(fred, too_many["id"])
    assert error["error"]["condition"] == "not-acceptable"
    assert f"at most {MAX_REACTIONS}" in error["error"]["text"]

    # XEP-0444 reaction → TAGMSG with +draft/react and +draft/reply, exactly.
    react(fred, stanza_id(hello), "👍")
    tagmsg = await bob.line_with("TAGMSG")
    assert {"+draft/react=👍", f"+draft/reply={bob_msgid}"} <= set(tags_of(tagmsg))
    assert len([line for line in bob.items if "TAGMSG" in line]) == 1  # none refused went
    # IRC reaction → XEP-0444 from bob's occupant JID, to fred's message.
    bob.send(f"@+draft/react=🎉;+draft/reply={fred_msgid} TAGMSG #room")
    reaction = await fred.wait_for(
        lambda s: (
            isinstance(s, Message)
            and child(s, REACTIONS_NS, "reactions") is not None
            and s["from"].resource == "bob"
        )
    )
    reactions = child(reaction, REACTIONS_NS, "reactions")
    assert reactions.get("id") == stanza_id(reflected)
    assert [r.text for r in reactions] == ["🎉"]

    # XEP-0308 correction: a line that says so, tagged as a reply to the original.
    fix = groupchat(fred, "hi bob!")
    fix["id"] = "fix-1"
    fix["replace"]["id"] = "reply-1"
    fix.send()
    fixed = await bob.line_with("PRIVMSG #room :* fixed: hi bob!")
    assert f"+draft/reply={fred_msgid}" in tags_of(fixed)
    shown = await fred.wait_for(lambda s: isinstance(s, Message) and s["id"] == "fix-1")
    assert child(shown, CORRECT_NS, "replace").get("id") == "reply-1"

    # XEP-0085 → +typing, throttled: a second composing at once sends nothing.
    for state in ("composing", "composing", "paused", "active"):
        typing = groupchat(fred)
        typing["chat_state"] = state
        typing.send()
    await bob.line_with("+typing=done")
    sent = [
        tag for line in bob.items if "TAGMSG" in line for tag in tags_of(line) if "typing" in tag
    ]
    assert sent == ["+typing=active", "+typing=paused", "+typing=done"], sent
    bob.send("@+typing=active TAGMSG #room")
    composing = await fred.wait_for(
        lambda s: (
            isinstance(s, Message)
            and s["from"].resource == "bob"
            and child(s, CHATSTATES_NS, "composing") is not None
        )
    )
    assert not composing["body"]

    # Retraction: InspIRCd has no REDACT, so it is refused with a text, not dropped.
    retract = groupchat(fred)
    retract["id"] = "retract-1"
    retract["retract"]["id"] = stanza_id(reflected)
    retract.send()
    error = await refused(fred, "retract-1")
    assert error["error"]["condition"] == "feature-not-implemented"
    assert "draft/message-redaction" in error["error"]["text"]
    await fred.close()


BOB_JID = f"bob%127.0.0.1@{IRC_JID}"


async def contact_disco(client: TestClient) -> tuple[set[str], bool]:
    """bob's features, and whether the reaction restrictions form is there."""
    info = await client.plugin["xep_0030"].get_info(jid=BOB_JID, timeout=10)
    forms = [f for f in info.xml.iter("{jabber:x:data}x")]
    restricted = any(
        v.text == RESTRICTIONS_NS for f in forms for v in f.iter("{jabber:x:data}value")
    )
    return set(info["disco_info"]["features"]), restricted


def from_bob(predicate):
    return lambda s: isinstance(s, Message) and s["from"].bare == BOB_JID and predicate(s)


async def test_private_chat_replies_reactions_corrections_and_typing(inspircd_stack, peers):
    prosody, ircd = inspircd_stack
    bob = await tag_peer(ircd, peers, "bob")
    fred = await fred_in_room(prosody)
    await bob.line_with("JOIN", "fred")
    features, restricted = await contact_disco(fred)
    assert {REPLY_NS, CORRECT_NS, REACTIONS_NS, CHATSTATES_NS} <= features and restricted
    assert not {RETRACT_NS, MARKERS_NS} & features

    # IRC → XMPP: the private message's id is its msgid; an XEP-0461 reply to it
    # carries +draft/reply, its quote stripped.
    bob.send("PRIVMSG fred :hello privately")
    hello = await fred.wait_for(from_bob(lambda s: s["body"] == "hello privately"))
    assert hello["type"] == "chat" and hello["id"]
    reply = fred.plugin["xep_0461"].make_reply(
        BOB_JID, hello["id"], fallback="hello privately", mto=BOB_JID, mbody="hi", mtype="chat"
    )
    reply["id"] = "p-reply-1"
    reply.send()
    line = await bob.line_with("PRIVMSG bob :hi")
    assert f"+draft/reply={hello['id']}" in tags_of(line)
    fred_msgid = next(t for t in tags_of(line) if t.startswith("msgid=")).removeprefix("msgid=")

    # XEP-0444 → TAGMSG to the nick; bob's reaction to fred's line → XEP-0444 naming
    # fred's own id for it.
    reaction = fred.make_message(mto=BOB_JID, mtype="chat")
    fred.plugin["xep_0444"].set_reactions(reaction, hello["id"], ["👍"])
    reaction.send()
    tagmsg = await bob.line_with("TAGMSG", "+draft/react")
    assert {"+draft/react=👍", f"+draft/reply={hello['id']}"} <= set(tags_of(tagmsg))
    bob.send(f"@+draft/react=🎉;+draft/reply={fred_msgid} TAGMSG fred")
    reacted = await fred.wait_for(
        from_bob(lambda s: child(s, REACTIONS_NS, "reactions") is not None)
    )
    assert child(reacted, REACTIONS_NS, "reactions").get("id") == "p-reply-1"
    assert emojis_of(reacted) == ["🎉"]

    # A reply from IRC to fred's line → XEP-0461 to fred's id.
    bob.send(f"@+draft/reply={fred_msgid} PRIVMSG fred :you said hi")
    answer = await fred.wait_for(from_bob(lambda s: s["body"] == "you said hi"))
    assert child(answer, REPLY_NS, "reply").get("id") == "p-reply-1"

    # XEP-0308: a line that reads as a correction, tagged as a reply to the original.
    fix = fred.make_message(mto=BOB_JID, mbody="hi!", mtype="chat")
    fix["replace"]["id"] = "p-reply-1"
    fix.send()
    fixed = await bob.line_with("PRIVMSG bob :* fixed: hi!")
    assert f"+draft/reply={fred_msgid}" in tags_of(fixed)

    # XEP-0085 ↔ +typing.
    typing = fred.make_message(mto=BOB_JID, mtype="chat")
    typing["chat_state"] = "composing"
    typing.send()
    assert "+typing=active" in tags_of(await bob.line_with("TAGMSG", "+typing"))
    bob.send("@+typing=active TAGMSG fred")
    await fred.wait_for(from_bob(lambda s: child(s, CHATSTATES_NS, "composing") is not None))

    # More reactions than advertised: not-acceptable, as in rooms.
    too_many = fred.make_message(mto=BOB_JID, mtype="chat")
    emojis = [chr(0x1F600 + n) for n in range(MAX_REACTIONS + 1)]
    fred.plugin["xep_0444"].set_reactions(too_many, hello["id"], emojis)
    too_many["id"] = "p-too-many"
    too_many.send()
    assert (await refused(fred, "p-too-many"))["error"]["condition"] == "not-acceptable"

    # XEP-0424 with its fallback body: InspIRCd 3 has no REDACT, so it is refused with
    # a text, and the fallback never reaches bob as a line.
    retraction = private_retraction(fred, "p-reply-1", "p-retract-1")
    error = await refused(fred, "p-retract-1")
    assert error["error"]["condition"] == "feature-not-implemented"
    assert "draft/message-redaction" in error["error"]["text"]
    fred.send_message(mto=BOB_JID, mbody="after the retraction", mtype="chat")
    await bob.line_with("PRIVMSG bob :after the retraction")
    assert not [line for line in bob.items if retraction["body"] in line]
    await fred.close()


def private_retraction(client: TestClient, target: str, message_id: str) -> Message:
    """An XEP-0424 retraction to bob, with the XEP-0428 fallback body clients send."""
    retraction = client.make_message(mto=BOB_JID, mtype="chat")
    retraction["id"] = message_id
    retraction["body"] = "This person attempted to retract a previous message."
    retraction.enable("fallback")
    retraction["retract"]["id"] = target
    retraction.send()
    return retraction


def msgid_of(line: str) -> str:
    return next(t for t in tags_of(line) if t.startswith("msgid=")).removeprefix("msgid=")


def private_reaction(client: TestClient, to_id: str, *emojis: str) -> None:
    message = client.make_message(mto=BOB_JID, mtype="chat")
    client.plugin["xep_0444"].set_reactions(message, to_id, emojis)
    message.send()


async def test_private_references_survive_a_gateway_restart(prosody, gateway_factory, peers):
    """The ids and reaction sets of a private chat are in the database: after a
    SIGTERM and a new start, a reply and reactions still name the right msgid, a
    changed set sends only what changed, and IRC's references come back by the ids
    fred's clients know."""
    async with InspIrcd() as ircd:
        gateway = await gateway_factory(prosody, bridges={"irc": irc_section(ircd)})
        bob = await tag_peer(ircd, peers, "bob")
        fred = await fred_in_room(prosody)
        await bob.line_with("JOIN", "fred")
        bob.send("PRIVMSG fred :said before the restart")
        hello = await fred.wait_for(from_bob(lambda s: s["body"] == "said before the restart"))
        bob_msgid = hello["id"]
        mine = fred.make_message(mto=BOB_JID, mbody="mine before the restart", mtype="chat")
        mine["id"] = "p-before-1"
        mine.send()
        fred_msgid = msgid_of(await bob.line_with("PRIVMSG bob :mine before the restart"))
        private_reaction(fred, bob_msgid, "👍")
        await bob.line_with("TAGMSG", "+draft/react=👍")
        bob.send(f"@+draft/react=🎉;+draft/reply={fred_msgid} TAGMSG fred")
        reacted = await fred.wait_for(from_bob(lambda s: child(s, REACTIONS_NS, "reactions")))
        assert emojis_of(reacted) == ["🎉"]

        assert await gateway.stop() == 0  # SIGTERM
        await gateway.start()

        reply = fred.plugin["xep_0461"].make_reply(
            BOB_JID, bob_msgid, fallback="said before", mto=BOB_JID, mbody="later", mtype="chat"
        )
        reply.send()
        line = await bob.line_with("PRIVMSG bob :", "later")
        assert f"+draft/reply={bob_msgid}" in tags_of(line)
        fix = fred.make_message(mto=BOB_JID, mbody="mine, fixed", mtype="chat")
        fix["replace"]["id"] = "p-before-1"
        fix.send()
        fixed = await bob.line_with("PRIVMSG bob :* fixed: mine, fixed")
        assert f"+draft/reply={fred_msgid}" in tags_of(fixed)

        # fred's whole set goes from 👍 to 🎉: only the change reaches IRC.
        private_reaction(fred, bob_msgid, "🎉")
        added = await bob.line_with("TAGMSG", "+draft/react=🎉")
        assert f"+draft/reply={bob_msgid}" in tags_of(added)
        removed = await bob.line_with("TAGMSG", "+draft/unreact=👍")
        assert f"+draft/reply={bob_msgid}" in tags_of(removed)
        reacts = [line for line in bob.items if "TAGMSG" in line and "+draft/react=" in line]
        assert len(reacts) == 2, reacts  # 👍 before the restart, 🎉 now; 👍 not again

        # bob's set grows from 🎉 to 🎉👀; his reply names fred's message by its id.
        bob.send(f"@+draft/react=👀;+draft/reply={fred_msgid} TAGMSG fred")
        grown = await fred.wait_for(from_bob(lambda s: child(s, REACTIONS_NS, "reactions")))
        assert child(grown, REACTIONS_NS, "reactions").get("id") == "p-before-1"
        assert emojis_of(grown) == ["🎉", "👀"]
        bob.send(f"@+draft/reply={fred_msgid} PRIVMSG fred :about yours")
        answer = await fred.wait_for(from_bob(lambda s: s["body"] == "about yours"))
        assert child(answer, REPLY_NS, "reply").get("id") == "p-before-1"
        await fred.close()


# --- ngIRCd: the text fallbacks -------------------------------------------------------


@pytest.fixture
async def ngircd_stack(prosody, gateway_factory) -> AsyncIterator[tuple[Prosody, NgIrcd]]:
    async with NgIrcd(flood_throttling=False) as ircd:
        await gateway_factory(prosody, bridges={"irc": irc_section(ircd)})
        yield prosody, ircd


async def test_without_tags_replies_and_reactions_are_text(ngircd_stack, peers):
    prosody, ircd = ngircd_stack
    bob = await tag_peer(ircd, peers, "bob", caps="multi-prefix")  # ngIRCd has no tags
    fred = await fred_in_room(prosody)
    await bob.line_with("JOIN", "fred")

    features = await room_features(fred)
    assert {REPLY_NS, CORRECT_NS} <= features
    assert not {REACTIONS_NS, CHATSTATES_NS, RETRACT_NS, MARKERS_NS} & features
    assert await reaction_restrictions(fred) is None  # no reactions, no restrictions

    bob.send("PRIVMSG #room :a rather long line that will not be quoted whole, no")
    hello = await fred.wait_for(
        groupchat_with("a rather long line that will not be quoted whole, no")
    )
    reply = fred.plugin["xep_0461"].make_reply(
        f"{ROOM}/bob",
        stanza_id(hello),
        fallback=hello["body"],
        quoted_nick="bob",
        mto=ROOM,
        mbody="indeed",
        mtype="groupchat",
    )
    reply["id"] = "reply-2"
    reply.send()
    await bob.line_with(
        ":fred!", 'PRIVMSG #room :bob: "a rather long line that will not be quot…" indeed'
    )
    mine = await fred.wait_for(lambda s: isinstance(s, Message) and s["id"] == "reply-2")
    assert mine["body"] == "indeed"

    # Typing goes nowhere: the next thing bob gets from fred is the reaction line.
    typing = groupchat(fred)
    typing["chat_state"] = "composing"
    typing.send()
    react(fred, stanza_id(hello), "👍")
    action = await bob.line_with(":fred!", "\x01ACTION")
    assert action.endswith(
        'PRIVMSG #room :\x01ACTION reacted 👍 to bob: "a rather long line that will not be '
        'quot…"\x01'
    )
    assert not [line for line in bob.items if "TAGMSG" in line]

    fix = groupchat(fred, "indeed!")
    fix["replace"]["id"] = reply["id"]
    fix.send()
    await bob.line_with(":fred!", "PRIVMSG #room :* fixed: indeed!")

    retract = groupchat(fred)
    retract["id"] = "retract-2"
    retract["retract"]["id"] = stanza_id(mine)
    retract.send()
    error = await refused(fred, "retract-2")
    assert error["error"]["condition"] == "feature-not-implemented"
    assert "draft/message-redaction" in error["error"]["text"]
    assert not [s for s in fred.stanzas if config_changed(s)]  # nothing more to offer

    # The private chat with bob: text fallbacks, and a disco#info that says so.
    features, restricted = await contact_disco(fred)
    assert {REPLY_NS, CORRECT_NS} <= features and not restricted
    assert not {REACTIONS_NS, CHATSTATES_NS, RETRACT_NS, MARKERS_NS} & features
    bob.send("PRIVMSG fred :a private question to fred, rather long again")
    asked = await fred.wait_for(from_bob(lambda s: s["body"].startswith("a private question")))
    answer = fred.plugin["xep_0461"].make_reply(
        BOB_JID, asked["id"], fallback=asked["body"], mto=BOB_JID, mbody="yes", mtype="chat"
    )
    answer.send()
    await bob.line_with('PRIVMSG bob :"a private question to fred, rather long…" yes')
    private = fred.make_message(mto=BOB_JID, mtype="chat")
    fred.plugin["xep_0444"].set_reactions(private, asked["id"], ["👍"])
    private.send()
    await bob.line_with("PRIVMSG bob :\x01ACTION reacted 👍\x01")
    await fred.close()


# --- a scripted server: REDACT, MARKREAD, hostile tags, a restart ---------------------

CAPS = (
    "batch draft/message-redaction draft/read-marker echo-message labeled-response "
    "message-tags server-time"
)
BOB = ":bob!b@h"


def redaction_server() -> ScriptedIrcd:
    """Offers what no packaged server has; echoes fred's lines with msgids own-N."""
    echoed = 0

    def script(line: str) -> list[str]:
        nonlocal echoed
        if line == "CAP LS 302":
            return [f":srv CAP * LS :{CAPS}"]
        if line.startswith("CAP REQ :"):
            return [f":srv CAP * ACK :{line.removeprefix('CAP REQ :')}"]
        if line == "CAP END":
            return [":srv 001 fred :Welcome", ":srv 376 fred :End of MOTD"]
        if line == "JOIN :#room":
            return [
                ":fred!f@h JOIN #room",
                ":srv 353 fred = #room :fred bob",
                ":srv 366 fred #room :End of NAMES",
            ]
        if line.startswith("@label=") and " PRIVMSG #room :" in line:
            echoed += 1
            tags, rest = line[1:].split(" ", 1)
            stamp = "2026-12-01T10:00:00.000Z"
            return [f"@{tags};msgid=own-{echoed};time={stamp} :fred!f@h {rest}"]
        if line.startswith("@label=") and " PRIVMSG bob :" in line:
            echoed += 1
            tags, rest = line[1:].split(" ", 1)
            return [f"@{tags};msgid=own-{echoed} :fred!f@h {rest}"]
        if line.startswith(("REDACT #room ", "REDACT bob ")):
            target, msgid = line.split(" ", 2)[1:]
            return [f":fred!f@h REDACT {target} {msgid.lstrip(':')}"]
        return []

    return ScriptedIrcd(script)


@pytest.fixture
async def scripted_stack(prosody, gateway_factory):
    async with redaction_server() as ircd:
        gateway = await gateway_factory(prosody, bridges={"irc": irc_section(ircd)})
        yield prosody, ircd, gateway


def retraction_of(target: str):
    def matches(stanza) -> bool:
        found = isinstance(stanza, Message) and child(stanza, RETRACT_NS, "retract")
        return found is not None and found is not False and found.get("id") == target

    return matches


async def test_redact_and_markread_where_offered_and_tombstones(scripted_stack):
    prosody, ircd, _gateway = scripted_stack
    fred = await fred_in_room(prosody)
    assert {RETRACT_NS, MARKERS_NS, REACTIONS_NS} <= await room_features(fred)

    # XEP-0424 from fred → REDACT; the server's REDACT back retracts it everywhere.
    fred.send_message(mto=ROOM, mbody="oops", mtype="groupchat")
    mine = await fred.wait_for(groupchat_with("oops"))
    retract = groupchat(fred)
    retract["retract"]["id"] = stanza_id(mine)
    retract.send()
    assert await ircd.lines.wait_for(lambda line: line.startswith("REDACT")) == (
        "REDACT #room :own-1"
    )
    await fred.wait_for(retraction_of(stanza_id(mine)))

    # REDACT from IRC → XEP-0424 retraction of the archived line, with a fallback body.
    ircd.push(f"@msgid=b1;time=2026-12-01T10:01:02.345Z {BOB} PRIVMSG #room :regret this")
    regret = await fred.wait_for(groupchat_with("regret this"))
    ircd.push(f"{BOB} REDACT #room b1 :sorry")
    removed = await fred.wait_for(retraction_of(stanza_id(regret)))
    assert removed["from"].resource == "bob" and removed["body"]

    # An operator's REDACT of bob's line is XEP-0425 moderation, from the room.
    ircd.push(f"@msgid=b4 {BOB} PRIVMSG #room :spam")
    spam = await fred.wait_for(groupchat_with("spam"))
    ircd.push(":op!o@h REDACT #room b4 :no spam here")
    moderated = await fred.wait_for(retraction_of(stanza_id(spam)))
    assert moderated["from"].full == ROOM
    by = moderated.xml.find(f"{{{RETRACT_NS}}}retract/{{urn:xmpp:message-moderate:1}}moderated")
    assert by.get("by") == f"{ROOM}/op"
    assert moderated.xml.findtext(f"{{{RETRACT_NS}}}retract/{{{RETRACT_NS}}}reason") == (
        "no spam here"
    )

    # All are tombstones in the archive, in their places.
    archived, _ = await mam(fred)
    tombstones = {
        archive_id(m) for m in archived if m.find(f"{{{RETRACT_NS}}}retracted") is not None
    }
    assert tombstones == {stanza_id(mine), stanza_id(regret), stanza_id(spam)}
    assert all(body(m) is None for m in archived if archive_id(m) in tombstones)

    # XEP-0333 displayed → MARKREAD with the message's server time.
    ircd.push(f"@msgid=b2;time=2026-12-01T10:02:03.456Z {BOB} PRIVMSG #room :read me")
    read_me = await fred.wait_for(groupchat_with("read me"))
    marker = groupchat(fred)
    ET.SubElement(marker.xml, f"{{{MARKERS_NS}}}displayed", {"id": stanza_id(read_me)})
    marker.send()
    assert await ircd.lines.wait_for(lambda line: line.startswith("MARKREAD")) == (
        "MARKREAD #room :timestamp=2026-12-01T10:02:03.456Z"
    )
    await fred.close()


async def test_hostile_tags_still_deliver_the_message(scripted_stack):
    prosody, ircd, _gateway = scripted_stack
    fred = await fred_in_room(prosody)
    noise = [
        f"@+draft/reply=never-seen;+x=a\\;+y=\\q;+unknown/tag {BOB} PRIVMSG #room :still one",
        f"@+big={'x' * 8192};msgid=b3 {BOB} PRIVMSG #room :still two",
        f"@+draft/react= {BOB} TAGMSG #room",
        f"@+draft/react=👍;+draft/reply=never-seen {BOB} TAGMSG #room",
        f"@+typing=bogus {BOB} TAGMSG #room",
        f"{BOB} TAGMSG #room",
        f"{BOB} REDACT #room",
        f"{BOB} REDACT #room never-seen",
        f"@+draft/reply=b3 {BOB} PRIVMSG #room :after the noise",
    ]
    for line in noise:
        ircd.push(line)
    one = await fred.wait_for(groupchat_with("still one"))
    assert child(one, REPLY_NS, "reply") is None  # nothing to point at
    two = await fred.wait_for(groupchat_with("still two"))
    after = await fred.wait_for(groupchat_with("after the noise"))
    assert child(after, REPLY_NS, "reply").get("id") == stanza_id(two)
    assert not [s for s in fred.stanzas if child(s, REACTIONS_NS, "reactions") is not None]

    # A client's hostile references: unknown ids are refused or fall back, never lost.
    bad_reply = groupchat(fred, "a reply to nothing")
    ET.SubElement(bad_reply.xml, f"{{{REPLY_NS}}}reply", {"id": "nothing-like-it"})
    bad_reply.send()
    assert await ircd.lines.wait_for(lambda line: "a reply to nothing" in line)
    react(fred, "nothing-like-it", "👍")
    error = await refused(fred, "react-nothing--1")
    assert error["error"]["condition"] == "item-not-found"
    await fred.close()


async def test_references_survive_a_gateway_restart(scripted_stack):
    prosody, ircd, gateway = scripted_stack
    fred = await fred_in_room(prosody)
    ircd.push(f"@msgid=b9;time=2026-12-01T10:05:00.000Z {BOB} PRIVMSG #room :before")
    before = await fred.wait_for(groupchat_with("before"))

    # kill -9: what is committed is all a restart has (SIGTERM can hang, see report).
    user = fred.boundjid.bare
    await eventually_async(lambda: has_archived(gateway.config, user, "irc", "before"))
    await gateway.kill()
    await gateway.start()
    join_presence(fred, "fred")  # the new process knows of no join
    history = await fred.wait_for(groupchat_with("before"))  # from the archive
    assert stanza_id(history) == stanza_id(before)
    ircd.push(f"@msgid=b10;+draft/reply=b9 {BOB} PRIVMSG #room :after")
    after = await fred.wait_for(groupchat_with("after"))
    assert child(after, REPLY_NS, "reply").get("id") == stanza_id(before)

    reply = fred.plugin["xep_0461"].make_reply(
        f"{ROOM}/bob", stanza_id(before), mto=ROOM, mbody="still know it", mtype="groupchat"
    )
    reply.send()
    sent = await ircd.lines.wait_for(lambda line: "still know it" in line)
    assert "+draft/reply=b9" in sent
    await fred.close()


def reactions_from(nick: str, target: str):
    def matches(stanza) -> bool:
        found = isinstance(stanza, Message) and child(stanza, REACTIONS_NS, "reactions")
        return (
            found is not None
            and found is not False
            and found.get("id") == target
            and stanza["from"].resource == nick
        )

    return matches


def emojis_of(message: Any) -> list[str]:
    xml = getattr(message, "xml", message)
    return [r.text or "" for r in xml.find(f"{{{REACTIONS_NS}}}reactions")]


async def test_reactions_are_archived_and_survive_a_restart(scripted_stack):
    prosody, ircd, gateway = scripted_stack
    fred = await fred_in_room(prosody)
    ircd.push(f"@msgid=b20;time=2026-12-01T10:06:00.000Z {BOB} PRIVMSG #room :react to me")
    target = stanza_id(await fred.wait_for(groupchat_with("react to me")))
    ircd.push(f"@msgid=r1;+draft/react=🎉;+draft/reply=b20 {BOB} TAGMSG #room")
    live = await fred.wait_for(reactions_from("bob", target))
    react(fred, target, "👍")
    await ircd.lines.wait_for(lambda line: "+draft/react=👍" in line)
    await fred.wait_for(reactions_from("fred", target))

    # MAM has both as XEP-0444 reaction messages, with the ids they had live.
    archived, _ = await mam(fred)
    shown = {
        m.get("from").split("/")[1]: m
        for m in archived
        if m.find(f"{{{REACTIONS_NS}}}reactions") is not None
    }
    assert {nick: emojis_of(m) for nick, m in shown.items()} == {"bob": ["🎉"], "fred": ["👍"]}
    assert all(m.find(f"{{{REACTIONS_NS}}}reactions").get("id") == target for m in shown.values())
    assert archive_id(shown["bob"]) == stanza_id(live) and body(shown["bob"]) is None

    # After kill -9, each sender's set is read back from the archive: bob adds one to
    # his, and fred's new set sends IRC only what changed.
    user = fred.boundjid.bare
    await eventually_async(lambda: has_archived(gateway.config, user, "irc", "👍"))
    await gateway.kill()
    await gateway.start()
    mark = join_presence(fred, "fred")
    history = await fred.wait_for(reactions_from("bob", target), since=mark)  # history
    assert emojis_of(history) == ["🎉"]
    await fred.wait_for(groupchat_with("react to me"), since=mark)
    ircd.push(f"@+draft/react=❤️;+draft/reply=b20 {BOB} TAGMSG #room")
    more = await fred.wait_for(
        lambda s: reactions_from("bob", target)(s) and "❤️" in emojis_of(s), since=mark
    )
    assert emojis_of(more) == ["🎉", "❤️"]
    sent_before = len(ircd.lines.items)
    react(fred, target, "👍", "🚀")
    await ircd.lines.wait_for(lambda line: "+draft/react=🚀" in line)
    await fred.wait_for(lambda s: reactions_from("fred", target)(s) and len(emojis_of(s)) == 2)
    assert not [line for line in ircd.lines.items[sent_before:] if "+draft/react=👍" in line]
    await fred.close()


async def test_private_redact_and_markread_where_offered(scripted_stack):
    """In the private chat with bob too: XEP-0424 → REDACT of fred's msgid (the
    fallback never sent), bob's REDACT → a retraction of the id fred's client knows,
    a displayed marker → MARKREAD with the message's server time; and the contact's
    disco#info says all of it."""
    prosody, ircd, _gateway = scripted_stack
    fred = await fred_in_room(prosody)
    features, _ = await contact_disco(fred)
    assert {RETRACT_NS, MARKERS_NS, REACTIONS_NS} <= features

    mine = fred.make_message(mto=BOB_JID, mbody="oops privately", mtype="chat")
    mine["id"] = "p-oops"
    mine.xml.append(ET.Element("{urn:xmpp:receipts}request"))
    mine.send()
    await ircd.lines.wait_for(lambda line: "PRIVMSG bob :oops privately" in line)
    receipt = "{urn:xmpp:receipts}received"
    await fred.wait_for(from_bob(lambda s: s.xml.find(receipt) is not None))  # msgid known
    retraction = private_retraction(fred, "p-oops", "p-retract-2")
    assert await ircd.lines.wait_for(lambda line: line.startswith("REDACT")) == "REDACT bob :own-1"
    assert not [line for line in ircd.lines.items if retraction["body"] in line]

    # bob's own message retracted from IRC: the id fred's client knows it by.
    ircd.push(f"@msgid=p2 {BOB} PRIVMSG fred :take this back")
    await fred.wait_for(from_bob(lambda s: s["body"] == "take this back"))
    ircd.push(f"{BOB} REDACT fred p2 :sorry")
    removed = await fred.wait_for(from_bob(retraction_of("p2")))
    assert removed["type"] == "chat" and removed["body"]
    # bob's message is his to retract, not fred's.
    private_retraction(fred, "p2", "p-retract-3")
    assert (await refused(fred, "p-retract-3"))["error"]["condition"] == "forbidden"
    # A chat-type retraction to the room's JID names no room message it could know.
    to_room = fred.make_message(mto=ROOM, mtype="chat")
    to_room["id"], to_room["retract"]["id"] = "p-retract-4", "own-1"
    to_room.send()
    assert (await refused(fred, "p-retract-4"))["error"]["condition"] == "bad-request"
    assert not [line for line in ircd.lines.items if line.startswith("REDACT #room")]

    # XEP-0333: a markable message; displayed → MARKREAD with its server time.
    ircd.push(f"@msgid=p3;time=2026-12-01T10:03:04.567Z {BOB} PRIVMSG fred :read me privately")
    shown = await fred.wait_for(from_bob(lambda s: s["body"] == "read me privately"))
    assert child(shown, MARKERS_NS, "markable") is not None
    marker = fred.make_message(mto=BOB_JID, mtype="chat")
    ET.SubElement(marker.xml, f"{{{MARKERS_NS}}}displayed", {"id": "p3"})
    marker.send()
    assert await ircd.lines.wait_for(lambda line: line.startswith("MARKREAD")) == (
        "MARKREAD bob :timestamp=2026-12-01T10:03:04.567Z"
    )
    await fred.close()


@pytest.mark.parametrize(
    ("body", "redacted"),
    [("said before the restart", ["own-1"]), ("one\ntwo\nthree", ["own-1", "own-2", "own-3"])],
    ids=["one-line", "three-lines"],
)
async def test_a_private_retraction_after_a_restart_redacts_every_stored_msgid(
    scripted_stack, body, redacted
):
    """The msgids of fred's private message (one per line it was sent as) come from
    `chat_references` after the gateway restarted (the connection it was sent on is
    gone too), and the retraction REDACTs each."""
    prosody, ircd, gateway = scripted_stack
    fred = await fred_in_room(prosody)
    mine = fred.make_message(mto=BOB_JID, mbody=body, mtype="chat")
    mine["id"] = "p-before"
    mine.xml.append(ET.Element("{urn:xmpp:receipts}request"))
    mine.send()
    receipt = "{urn:xmpp:receipts}received"
    await fred.wait_for(from_bob(lambda s: s.xml.find(receipt) is not None))
    assert await gateway.stop() == 0  # SIGTERM: the references batch is written
    await gateway.start()

    private_retraction(fred, "p-before", "p-retract")
    await ircd.lines.wait_for(lambda line: line == f"REDACT bob :{redacted[-1]}")
    assert redacts(ircd) == [f"REDACT bob :{msgid}" for msgid in redacted]
    await fred.close()


def redacts(ircd: ScriptedIrcd) -> list[str]:
    return [line for line in ircd.lines.items if line.startswith("REDACT")]


async def test_a_multi_line_message_is_redacted_line_by_line_and_retracted_once(scripted_stack):
    """Three lines are three msgids: a retraction REDACTs each, the three REDACTs
    back are one retraction for fred; an operator's REDACT of the second line
    removes the whole message, once."""
    prosody, ircd, _gateway = scripted_stack
    fred = await fred_in_room(prosody)
    fred.send_message(mto=ROOM, mbody="one\ntwo\nthree", mtype="groupchat")
    mine = await fred.wait_for(groupchat_with("one\ntwo\nthree"))
    retract = groupchat(fred)
    retract["retract"]["id"] = stanza_id(mine)
    retract.send()
    await ircd.lines.wait_for(lambda line: line == "REDACT #room :own-3")
    assert redacts(ircd) == ["REDACT #room :own-1", "REDACT #room :own-2", "REDACT #room :own-3"]
    await fred.wait_for(retraction_of(stanza_id(mine)))

    fred.send_message(mto=ROOM, mbody="four\nfive\nsix", mtype="groupchat")
    second = await fred.wait_for(groupchat_with("four\nfive\nsix"))
    ircd.push(":op!o@h REDACT #room own-5 :not that")
    await fred.wait_for(retraction_of(stanza_id(second)))

    # Lines are handled in order: once bob's later line is shown, every REDACT was.
    ircd.push(f"@msgid=b9 {BOB} PRIVMSG #room :after the redactions")
    await fred.wait_for(groupchat_with("after the redactions"))
    for message in (mine, second):  # no second retraction of either
        assert not [s for s in fred.stanzas if retraction_of(stanza_id(message))(s)]
    archived, _ = await mam(fred)
    tombstones = {
        archive_id(m) for m in archived if m.find(f"{{{RETRACT_NS}}}retracted") is not None
    }
    assert tombstones == {stanza_id(mine), stanza_id(second)}
    await fred.close()
