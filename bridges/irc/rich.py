"""XMPP message features on IRC: IRCv3 client tags where the server carries them,
readable text where it does not.

Replies, reactions and typing are client-only tags (`+draft/reply`, `+draft/react`,
`+typing`), which need `message-tags` and may be refused one by one by the server's
`CLIENTTAGDENY` (Libera.Chat allows `+reply` and `+typing` only). Retraction is
`draft/message-redaction` (REDACT) and read markers `draft/read-marker` (MARKREAD),
both capabilities of their own. Without tags a reply names the author with a short
quote, a reaction is a `/me` line (rate-limited, switchable off), and typing and read
markers are not sent at all: IRC users would only read them as noise.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Set

from bridges import events
from bridges.events import GroupFeature
from bridges.irc.channel import ServerModes

REPLY_TAGS = ("+draft/reply", "+reply")
"""The reply tag of the IRCv3 draft, then the name Solanum (Libera.Chat) allows."""
REACT_TAGS = ("+draft/react", "+react")
UNREACT_TAG = "+draft/unreact"
TYPING_TAGS = ("+typing", "+draft/typing")
REDACTION_CAP = "draft/message-redaction"
READ_MARKER_CAP = "draft/read-marker"
QUOTE_CHARS = 40
"""Longest quote of the message a text reply or reaction refers to."""
TYPING_INTERVAL = 3.0
"""IRCv3 typing: `active` at most every 3 s (receivers keep it 6 s)."""
REACTION_TEXTS = 5
REACTION_TEXT_WINDOW = 60.0
"""At most REACTION_TEXTS reactions as `/me` lines per window (seconds), per network."""

_TYPING_VALUES = {
    events.ChatState.COMPOSING: "active",
    events.ChatState.PAUSED: "paused",
    events.ChatState.ACTIVE: "done",
}
_TYPING_STATES = {value: state for state, value in _TYPING_VALUES.items()}


def first_allowed(modes: ServerModes, names: tuple[str, ...]) -> str | None:
    """The first of `names` the server's CLIENTTAGDENY lets through."""
    return next((name for name in names if modes.allows_client_tag(name)), None)


def features(caps: Set[str], modes: ServerModes) -> frozenset[GroupFeature]:
    """What a channel on a server with `caps` and `modes` carries natively."""
    found = set()
    if "message-tags" in caps:
        if first_allowed(modes, REACT_TAGS) and first_allowed(modes, REPLY_TAGS):
            found.add(GroupFeature.REACTIONS)
        if first_allowed(modes, TYPING_TAGS):
            found.add(GroupFeature.CHAT_STATES)
    if REDACTION_CAP in caps:
        found.add(GroupFeature.RETRACTIONS)
    if READ_MARKER_CAP in caps:
        found.add(GroupFeature.DISPLAYED_MARKERS)
    return frozenset(found)


def quote(quoted: events.Quoted) -> str:
    """The start of the first line of `quoted`, cut at QUOTE_CHARS with an ellipsis."""
    text = quoted.text.removeprefix("/me ").strip()
    first = text.splitlines()[0] if text else ""
    cut = first[:QUOTE_CHARS].rstrip()
    return cut + "…" if len(first) > QUOTE_CHARS or first != text else cut


def reply_text(text: str, quoted: events.Quoted) -> str:
    """A reply where no tag can carry it: `nick: "quote…" text`."""
    said = f'"{quote(quoted)}" ' if quoted.text else ""
    return f"{quoted.nick}: {said}{text}" if quoted.nick else f"{said}{text}"


def reaction_text(emoji: str, quoted: events.Quoted) -> str:
    """A reaction where no tag can carry it, as a `/me` line (in a private chat,
    where the message reacted to may be unknown, without the quote)."""
    if not quoted.text:
        return f"/me reacted {emoji}"
    to = f"{quoted.nick}: " if quoted.nick else ""
    return f'/me reacted {emoji} to {to}"{quote(quoted)}"'


def correction_text(text: str) -> str:
    """IRC has no edits: a corrected message is a line that says so."""
    return f"* fixed: {text}"


def reply_target(tags: Mapping[str, str | None]) -> str | None:
    """The msgid a line answers (a loop, not `next` over a generator: every channel
    line of an IRCv3 server asks, and the generator cost it a microsecond)."""
    for name in REPLY_TAGS:
        if target := tags.get(name):
            return target
    return None


def reaction(tags: Mapping[str, str | None]) -> tuple[str, bool] | None:
    """(emoji, removed) from a TAGMSG's tags, if it carries a reaction."""
    for name in REACT_TAGS:
        if tags.get(name):
            return str(tags[name])[:32], False
    removed = tags.get(UNREACT_TAG)
    return (removed[:32], True) if removed else None


def typing_state(tags: Mapping[str, str | None]) -> events.ChatState | None:
    value = next((tags[name] for name in TYPING_TAGS if tags.get(name)), None)
    return _TYPING_STATES.get(value or "")


class TypingThrottle:
    """What to send for each chat state change, per target, as the IRCv3 typing
    spec asks: `active` again only after TYPING_INTERVAL, `paused` once, `done` only
    after something else was sent (a message ends typing by itself)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[str, float]] = {}

    def value(self, target: str, state: events.ChatState) -> str | None:
        wanted = _TYPING_VALUES[state]
        last, when = self._last.get(target, ("done", 0.0))
        now = time.monotonic()
        if wanted == last and (wanted != "active" or now - when < TYPING_INTERVAL):
            return None
        if wanted == "done":
            self._last.pop(target, None)
        else:
            self._last[target] = (wanted, now)
        return wanted

    def message_sent(self, target: str) -> None:
        self._last.pop(target, None)


class TextBudget:
    """A sliding window of at most `count` uses per `window` seconds."""

    def __init__(self, count: int = REACTION_TEXTS, window: float = REACTION_TEXT_WINDOW) -> None:
        self.count = count
        self.window = window
        self._uses: list[float] = []
        """At most `count` times: a list (56 bytes empty, per user and network), not a
        deque (632)."""

    def take(self) -> bool:
        now = time.monotonic()
        self._uses = [used for used in self._uses if now - used <= self.window]
        if len(self._uses) >= self.count:
            return False
        self._uses.append(now)
        return True
