"""Text between XMPP and IRC: formatting codes, CTCP framing, line splitting.

IRC lines are limited in bytes, not characters, and the limit counts the prefix the
server prepends when it relays our message; splitting must therefore know that prefix
and must never cut a UTF-8 sequence in half.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from bridges.irc.protocol import MAX_LINE_BYTES
from bridges.xml_text import xml_safe

CTCP = "\x01"
ACTION_PREFIX = "/me "

# mIRC colours (\x03[fg[,bg]]), hex colours (\x04RRGGBB[,RRGGBB]) and the toggles:
# bold, italics, strikethrough, monospace, underline, reverse, reset.
_FORMAT_RE = re.compile(
    r"\x03(?:\d{1,2}(?:,\d{1,2})?)?|\x04(?:[0-9a-fA-F]{6}(?:,[0-9a-fA-F]{6})?)?|[\x02\x1d\x1e\x11\x1f\x16\x0f]"
)


def strip_formatting(text: str) -> str:
    """Drop IRC colour and style codes, which XMPP clients would show as garbage.

    Other control characters (BEL, ESC...) cannot be in XML at all: they become U+FFFD.
    """
    return xml_safe(_FORMAT_RE.sub("", text))


# IRC style toggles that XEP-0393 message styling can express, and their markers.
_STYLES = {"\x02": "*", "\x1d": "_", "\x1e": "~", "\x11": "`"}
_RESET = "\x0f"
_STYLE_RE = re.compile("([\x02\x1d\x1e\x11\x0f])")


def to_styling(text: str) -> str:
    """IRC bold/italics/strike/monospace → XEP-0393 `*b*` `_i_` `~s~` `` `m` ``.

    Controls XML cannot carry become U+FFFD, as in `strip_formatting`.

    A span is marked only where XEP-0393 would read it back (after a blank or at the
    start, not empty, no blank just inside the markers), so no stray `*` appears;
    elsewhere, and for colours and underline, the codes are simply dropped.
    """
    text = _FORMAT_RE.sub(lambda m: m[0] if m[0] in _STYLES or m[0] == _RESET else "", text)
    out: list[str] = []
    open_spans: list[tuple[str, int]] = []  # (code, index in `out` of its start)
    for part in _STYLE_RE.split(text):
        if part in _STYLES:
            starts = [i for i, (code, _) in enumerate(open_spans) if code == part]
            if starts:
                _close(out, open_spans, starts[0])
            else:
                open_spans.append((part, len(out)))
                out.append("")
        elif part == _RESET:
            if open_spans:
                _close(out, open_spans, 0)
        else:
            out.append(part)
    if open_spans:
        _close(out, open_spans, 0)
    return xml_safe("".join(out))


def _close(out: list[str], open_spans: list[tuple[str, int]], first: int) -> None:
    """Close the spans from `first` on (innermost last), marking those that qualify."""
    for code, start in reversed(open_spans[first:]):
        inner = "".join(out[start + 1 :])
        marker = _STYLES[code]
        before = "".join(out[:start])[-1:]
        opens = not before or before.isspace() or before in "*_~`"
        if opens and inner.strip() and inner == inner.strip() and marker not in inner:
            out[start + 1 :] = [marker + inner + marker]
        else:
            out[start + 1 :] = [inner]
    del open_spans[first:]


@dataclass(frozen=True)
class Ctcp:
    """A CTCP request or reply carried in a PRIVMSG or NOTICE."""

    command: str
    argument: str = ""


def parse_ctcp(text: str) -> Ctcp | None:
    """The CTCP inside `text`, or None for a plain message (one CTCP per message)."""
    if not text.startswith(CTCP):
        return None
    body = text[1:].removesuffix(CTCP)
    command, _, argument = body.partition(" ")
    return Ctcp(command.upper(), argument)


def ctcp(command: str, argument: str = "") -> str:
    return f"{CTCP}{command} {argument}{CTCP}" if argument else f"{CTCP}{command}{CTCP}"


@lru_cache(maxsize=1024)
def relay_prefix_bytes(
    nick: str, user: str | None, host: str | None, command: str, target: str
) -> int:
    """Bytes of `:nick!user@host COMMAND target :` as relayed to others, plus CR LF.

    Until the server has shown us our own user@host (in our JOIN echo), assume the
    longest usual ident (10, plus the `~` of an unverified one) and host (63).
    Remembered: every message of a burst asks it for the same nick and target.
    """
    user_len = len((user or "~" + "u" * 10).encode())
    host_len = len((host or "h" * 63).encode())
    return (
        1
        + len(nick.encode())
        + 1
        + user_len
        + 1
        + host_len
        + 1
        + len(command)
        + 1
        + len(target.encode())
        + 2
        + 2
    )


def split_utf8(text: str, max_bytes: int) -> list[str]:
    """Cut `text` into pieces of at most `max_bytes` UTF-8 bytes, preferring spaces.

    A piece ends before the last space that fits when there is one in its second half
    (so words stay whole; that space is dropped, since servers and clients strip
    trailing and leading blanks anyway), else after the last whole character that
    fits. So the receiver reads the text back by joining with a space at word breaks.
    """
    if max_bytes < 4:
        raise ValueError("no room for even one character")
    pieces: list[str] = []
    data = text.encode()
    while len(data) > max_bytes:
        cut = max_bytes
        while cut > 0 and (data[cut] & 0xC0) == 0x80:  # inside a multi-byte character
            cut -= 1
        space = data.rfind(b" ", 0, cut + 1)
        if space >= cut // 2:
            pieces.append(data[:space].decode())
            data = data[space + 1 :]
        else:
            pieces.append(data[:cut].decode())
            data = data[cut:]
    if data or not pieces:
        pieces.append(data.decode())
    return pieces


def outgoing_lines(text: str, budget: int) -> list[tuple[str, bool]]:
    """XMPP body → (text, is_action) per PRIVMSG, each fitting in `budget` bytes.

    Each line of a multi-line body is its own message (IRC has no line breaks); blank
    lines are dropped because IRC servers refuse empty messages. A line starting with
    `/me ` becomes a CTCP ACTION (XEP-0245 speaks of the body; per line is what a
    pasted IRC log means).
    """
    out: list[tuple[str, bool]] = []
    action_room = budget - len(ctcp("ACTION", "x")) + 1
    for line in text.splitlines():
        action = line.startswith(ACTION_PREFIX)
        if action:
            line = line[len(ACTION_PREFIX) :]
        if line.strip():
            pieces = split_utf8(line, action_room if action else budget)
            out += [(piece, action) for piece in pieces]
    return out


def privmsg_budget(prefix_bytes: int) -> int:
    """Bytes left for the message text once the relay prefix is counted."""
    return MAX_LINE_BYTES - prefix_bytes
