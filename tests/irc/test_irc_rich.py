"""The IRC session's side of issue 11 against scripted servers: CLIENTTAGDENY is
honoured before any client-only tag goes out, the reaction fallback is rate-limited
and can be switched off, and the disco features follow the server's caps."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from irc_helpers import Harness, ScriptedIrcd

from bridges import events
from bridges.base import BridgeError
from bridges.events import GroupFeature
from bridges.irc import rich
from bridges.irc.channel import ServerModes
from bridges.irc.settings import STATE_KEY

QUOTED = events.Quoted("m1", "bob", "hello there")


def server(caps: str, isupport: str = "") -> ScriptedIrcd:
    def script(line: str) -> list[str]:
        if line == "CAP LS 302":
            return [f":srv CAP * LS :{caps}"] if caps else [":srv CAP * LS :"]
        if line.startswith("CAP REQ :"):
            return [f":srv CAP * ACK :{line.removeprefix('CAP REQ :')}"]
        if line == "CAP END":
            extra = [f":srv 005 alice {isupport} :are supported"] if isupport else []
            return [":srv 001 alice :Welcome", *extra, ":srv 376 alice :End of MOTD"]
        if line == "JOIN :#room":
            return [
                ":alice!a@h JOIN #room",
                ":srv 353 alice = #room :alice bob",
                ":srv 366 alice #room :End of NAMES",
            ]
        return []

    return ScriptedIrcd(script)


@pytest.fixture
async def denying() -> AsyncIterator[Harness]:
    """message-tags, but Libera.Chat's whitelist: only +reply and +typing pass."""
    async with server("message-tags", "CLIENTTAGDENY=*,-reply,-typing") as ircd:
        harness = Harness(ircd)
        yield harness
        await harness.close()


async def test_clienttagdeny_is_honoured(denying):
    session, _sink, room = await denying.joined("#room")
    assert session.group_features(room) == {GroupFeature.CHAT_STATES}  # no reactions
    await session.send_reply(room, "hi", QUOTED)
    await denying.server.lines.wait_for(lambda line: "PRIVMSG" in line)
    await session.set_chat_state(room, events.ChatState.COMPOSING)
    await session.react(room, QUOTED, ["👍"], [])  # as text: +draft/react is denied
    await denying.server.lines.wait_for(lambda line: "ACTION" in line)
    sent = [line for line in denying.server.lines.items if "#room" in line and "JOIN" not in line]
    assert sent == [
        "@+reply=m1 PRIVMSG #room :hi",
        "@+typing=active TAGMSG :#room",
        'PRIVMSG #room :\x01ACTION reacted 👍 to bob: "hello there"\x01',
    ]


async def test_reactions_as_text_are_rate_limited_and_can_be_switched_off():
    async with server("") as ircd:
        harness = Harness(ircd)
        session, _sink, room = await harness.joined("#room")
        assert session.group_features(room) == frozenset()
        for n in range(rich.REACTION_TEXTS):
            await session.react(room, QUOTED, [f"{n}️⃣"], [])
        with pytest.raises(BridgeError) as limited:
            await session.react(room, QUOTED, ["👍"], [])
        assert limited.value.condition == "feature-not-implemented"
        assert "per 60 s" in limited.value.text
        await session.set_chat_state(room, events.ChatState.COMPOSING)  # nothing without tags
        await harness.close()

        switched_off = {STATE_KEY: {"127.0.0.1": {"reactions_as_text": False}}}
        session, _sink = await harness.session("alice", state=switched_off)
        await session.join(room, "alice")
        await _sink.wait_event(events.RoomJoined, room=room)
        with pytest.raises(BridgeError) as off:
            await session.react(room, QUOTED, ["👍"], [])
        assert "network settings" in off.value.text
        await harness.close()
    assert not [line for line in ircd.lines.items if "TAGMSG" in line]


def test_clienttagdeny_syntax():
    modes = ServerModes()
    assert modes.allows_client_tag("+draft/react")
    modes.apply_isupport(["CLIENTTAGDENY=typing,draft/react"])
    assert not modes.allows_client_tag("+draft/react") and not modes.allows_client_tag("+typing")
    assert modes.allows_client_tag("+draft/reply")
    modes.apply_isupport(["CLIENTTAGDENY=*,-draft/reply"])
    assert modes.allows_client_tag("+draft/reply") and not modes.allows_client_tag("+typing")
    modes.apply_isupport(["-CLIENTTAGDENY"])
    assert modes.allows_client_tag("+typing")


def test_typing_is_throttled_as_the_ircv3_spec_says(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(rich.time, "monotonic", lambda: now[0])
    throttle = rich.TypingThrottle()
    composing, paused, active = (
        events.ChatState.COMPOSING,
        events.ChatState.PAUSED,
        events.ChatState.ACTIVE,
    )
    assert throttle.value("#r", active) is None  # nothing to end yet
    assert throttle.value("#r", composing) == "active"
    assert throttle.value("#r", composing) is None
    now[0] += rich.TYPING_INTERVAL
    assert throttle.value("#r", composing) == "active"  # refreshed every 3 s
    assert throttle.value("#r", paused) == "paused"
    assert throttle.value("#r", paused) is None
    assert throttle.value("#r", active) == "done"
    assert throttle.value("#r", composing) == "active"
    throttle.message_sent("#r")  # a message ends typing by itself
    assert throttle.value("#r", active) is None


def test_quotes_are_short():
    long = events.Quoted("m", "bob", "x" * 100)
    assert rich.quote(long) == "x" * rich.QUOTE_CHARS + "…"
    assert rich.quote(events.Quoted("m", "bob", "two\nlines")) == "two…"
    assert rich.reply_text("yes", events.Quoted(None, "bob", "/me waves")) == 'bob: "waves" yes'
