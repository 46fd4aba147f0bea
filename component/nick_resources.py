"""Legacy nicks as occupant JID resources, and back, for every nick a network allows.

A room occupant is `room@component/nick`, but resourceprep refuses control characters
and folds some others (NFKC: a full-width `b` becomes `b`, another user). A nick that
cannot stand as it is would make building the occupant JID fail, and the join was
never answered. Such characters, and `%` itself, are written `%XX` (code points below
256) or `%uXXXXXX`: stable, so a client sees the same occupant each time, and
reversible, so a private message or a kick reaches the right legacy user.
"""

from __future__ import annotations

import re

from slixmpp import JID
from slixmpp.jid import InvalidJID

_ESCAPED = re.compile(r"%(?:u([0-9A-F]{6})|([0-9A-F]{2}))")
_MAX_BYTES = 1023


def _valid(resource: str) -> bool:
    """Whether `resource` is a resource as it is (slixmpp's own check, as sending uses)."""
    try:
        return bool(JID(f"x@x/{resource}").resource == resource)
    except InvalidJID:
        return False


def _keeps(char: str) -> bool:
    return char != "%" and _valid(char)


def _escape(char: str) -> str:
    code = ord(char)
    return f"%{code:02X}" if code < 0x100 else f"%u{code:06X}"


def to_resource(nick: str) -> str:
    """The occupant resource for `nick` (the nick itself when it is a valid resource)."""
    if nick.isascii() and nick.isprintable() and "%" not in nick:
        return nick  # the common case, without running stringprep per character
    resource = "".join(char if _keeps(char) else _escape(char) for char in nick)
    if _valid(resource):
        return resource[:_MAX_BYTES]
    # Valid characters that are invalid together (bidirectional text rules): escape all
    # that is not ASCII.
    return "".join(c if c.isascii() and _keeps(c) else _escape(c) for c in nick)[:_MAX_BYTES]


def to_nick(resource: str) -> str:
    """The legacy nick an occupant resource stands for (inverse of `to_resource`)."""
    if "%" not in resource:
        return resource
    return _ESCAPED.sub(lambda m: chr(int(m[1] or m[2], 16)), resource)
