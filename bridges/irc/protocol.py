"""IRC wire syntax (RFC 1459/2812, IRCv3 tags): parsing, decoding, names.

Kept free of I/O so the connection, the session and the tests share one reading of a
line. Decoding never fails: IRC has no declared charset, and a message in latin-1
from an old client must reach the user rather than vanish.
"""

from __future__ import annotations

import re
from dataclasses import field
from functools import lru_cache

from irc.message import Tag

from bridges.hot_value import hot_value

MAX_LINE_BYTES = 512
"""RFC 2812 §2.3: a message, CR LF included, is at most 512 bytes."""

# RFC 2812 §2.3.1: nickname = ( letter / special ) *8( letter / digit / special / "-" );
# servers announce longer NICKLEN, so the length is checked separately.
_NICK_RE = re.compile(r"^[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]*$")
_LINE_RE = re.compile(
    r"^(?:@(?P<tags>\S+) +)?(?::(?P<prefix>\S+) +)?(?P<command>\S+)(?P<params>(?: +.*)?)$"
)
CHANNEL_PREFIXES = "#&+!"
MAX_NICK_LENGTH = 30


def is_valid_nick(nick: str, max_length: int = MAX_NICK_LENGTH) -> bool:
    """RFC 2812 nick syntax; used for registration and before sending NICK."""
    return 0 < len(nick) <= max_length and _NICK_RE.match(nick) is not None


def nick_from_jid(jid: str) -> str:
    """A valid nick made from the JID's localpart, for users who named none.

    Only ASCII letters, digits, `_` and `-` are kept, a letter goes first, and nine
    characters (RFC 2812's length, which every server accepts) are the most.
    """
    local = "".join(c for c in jid.split("@", 1)[0] if c.isascii() and (c.isalnum() or c in "_-"))
    if not local or not local[0].isalpha():
        local = "x" + local
    return local[:9]


def is_channel(name: str, prefixes: str = CHANNEL_PREFIXES) -> bool:
    return bool(name) and name[0] in prefixes


@lru_cache(maxsize=2048)
def casefold(name: str) -> str:
    """RFC 1459 case mapping: `[]\\~` are the upper case of `{}|^`.

    Remembered: every channel line folds its target, sender and our own nick several
    times over, and the fold cost more than the rest of reading the line. Text of
    any length (a message) goes to `_fold`."""
    return _fold(name)


def _fold(text: str) -> str:
    return text.lower().translate(_RFC1459)


_RFC1459 = str.maketrans("[]\\~", "{}|^")
_NICK_CHAR = r"[A-Za-z0-9\[\]\\`_^{|}~-]"


def names_nick(text: str, nick: str) -> bool:
    """Whether `text` names `nick` as a whole word, under RFC 1459 case mapping.

    "dora: ping" and "hi Dora!" name dora; "doras" and "adora" do not. The nick
    characters `[]\\` etc. count as part of a word, so `dora_` is someone else.
    """
    if not nick:
        return False
    word, folded = casefold(nick), _fold(text)
    return word in folded and _naming(word).search(folded) is not None


@lru_cache(maxsize=256)
def _naming(word: str) -> re.Pattern[str]:
    """The pattern of `word` (a folded nick) standing as a word of its own."""
    return re.compile(f"(?<!{_NICK_CHAR}){re.escape(word)}(?!{_NICK_CHAR})")


def decode(data: bytes, fallback: str = "latin-1") -> str:
    """UTF-8 when it is valid, else the fallback charset (which never fails for latin-1)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode(fallback, errors="replace")


@hot_value
class Line:
    """One parsed IRC message; `nick` is the source's nick (or server name)."""

    command: str
    params: list[str] = field(default_factory=list)
    prefix: str = ""
    tags: dict[str, str | None] = field(default_factory=dict)

    @property
    def nick(self) -> str:
        return self.prefix.split("!", 1)[0]

    def param(self, index: int, default: str = "") -> str:
        """Parameter `index` (negative counts from the end), `default` when there is none.

        Servers, and hostile ones on purpose, send lines with fewer parameters than the
        RFC says (`ERROR` alone); a missing one must not raise in the middle of dispatch.
        """
        return self.params[index] if -len(self.params) <= index < len(self.params) else default

    @classmethod
    def parse(cls, text: str) -> Line:
        match = _LINE_RE.match(text.strip("\r\n"))
        if match is None:
            raise ValueError(f"not an IRC line: {text!r}")
        group = match["tags"]
        return cls(
            command=match["command"].upper(),
            params=_split_params(match["params"]),
            prefix=match["prefix"] or "",
            tags=parse_tags(group) if group else {},
        )


def parse_tags(group: str) -> dict[str, str | None]:
    """IRCv3 message-tags (`key=value;...`, without the `@`), read as the irc library's
    `Tag.parse` reads each (an empty value is None, the last of a repeated key wins),
    without its per-tag dict and unescaping pass: a value with no backslash, which is
    nearly every msgid and time, is taken as it is; the library unescapes the others.
    Through the library alone, two tags cost an IRCv3 line 2.3 µs, most of what it
    took to parse the line."""
    tags: dict[str, str | None] = {}
    for item in group.split(";"):
        key, _, value = item.partition("=")
        tags[key] = Tag.parse(item)["value"] if "\\" in value else value or None
    return tags


def _split_params(text: str) -> list[str]:
    """Middle parameters split on spaces; the trailing one (after ` :`) kept whole."""
    text = text.lstrip(" ")
    if text.startswith(":"):
        return [text[1:]]
    middle, sep, trailing = text.partition(" :")
    params = middle.split()
    if sep:
        params.append(trailing)
    return params


_TAG_ESCAPES = str.maketrans({";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"})


def format_tags(tags: dict[str, str]) -> str:
    """`@key=value;...` and a space, values escaped as IRCv3 message-tags says."""
    return (
        "@"
        + ";".join(f"{key}={value.translate(_TAG_ESCAPES)}" for key, value in tags.items())
        + " "
    )


def format_line(command: str, *params: str) -> str:
    """Build a line; only the last parameter may hold spaces (it gets the `:`)."""
    if not params:
        return command
    *middle, last = params
    for param in middle:
        if not param or " " in param or param.startswith(":"):
            raise ValueError(f"bad middle parameter {param!r}")
    if "\r" in last or "\n" in last or "\0" in last:
        raise ValueError("line breaks cannot be sent inside one IRC line")
    return " ".join([command, *middle, ":" + last])
