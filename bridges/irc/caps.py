"""IRCv3 capability negotiation: which capabilities we ask for, and STS policies.

Kept apart from the connection so the choice of what to request (at registration and
when `cap-notify` announces new ones at run time) and the reading of a server's `sts`
value are plain functions, checked against hostile lists without a socket.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

WANTED_CAPS = frozenset(
    {
        "multi-prefix",
        "server-time",
        "away-notify",
        "message-tags",
        "batch",
        "draft/chathistory",
        "account-notify",
        "account-tag",
        "extended-join",
        "chghost",
        "setname",
        "invite-notify",
        "cap-notify",
        "draft/message-redaction",
        "draft/read-marker",
    }
)
"""IRCv3 capabilities used when offered: every rank of a member in NAMES (a deopped
half-op stays a moderator), when a message was really sent (a bouncer replaying what
came while the user was away), who in a channel is away, and message tags for the
`msgid` that keeps a replayed line out of the archive twice; `batch` and
`draft/chathistory` to fetch what a channel said while we were not in it; the
account of each member (`account-notify`, `account-tag`, `extended-join`) behind the
XEP-0421 occupant ids, host and real name changes without a fake quit and rejoin
(`chghost`, `setname`), invitations to others (`invite-notify`), and capabilities
that come and go while connected (`cap-notify`); REDACT and MARKREAD for
retractions and read markers (see `rich`)."""
ECHO_CAPS = frozenset({"echo-message", "labeled-response", "batch"})
"""Used only together: the server's echo of our line, matched by its label, is when
the user's message counts as sent (with the msgid and time everyone else sees). An echo
without a label could not be told from the same line replayed after a reconnect, and
InspIRCd 3 labels an echo only for a client that also has `batch`."""
MAX_OFFERED = 256
"""Capabilities remembered from one server: a hostile LS list cannot grow without end."""
MAX_REQUEST_BYTES = 400
"""A CAP REQ must fit in one line (with its prefix) whatever the server offered."""


def parse_offer(text: str) -> dict[str, str]:
    """`a b=c d` (CAP LS / CAP NEW) → {"a": "", "b": "c", "d": ""}, names lower-cased.

    Names that no capability can have (empty, or with a control character) are
    dropped rather than echoed back in a request.
    """
    offered: dict[str, str] = {}
    for token in text.split()[:MAX_OFFERED]:
        name, _, value = token.partition("=")
        name = name.lower()
        if name and name.isprintable() and not name.startswith("-"):
            offered[name] = value
    return offered


def to_request(offered: Iterable[str], enabled: Iterable[str]) -> list[str]:
    """What to ask for among `offered`, leaving out what is `enabled` already.

    The echo group is asked for only whole (see `ECHO_CAPS`); `sasl` is not here: it
    is only asked for while registering, and only with credentials.
    """
    names, have = set(offered), set(enabled)
    echo = ECHO_CAPS if (names | have) >= ECHO_CAPS else frozenset()
    wanted = sorted(((WANTED_CAPS & names) | (echo & names)) - have)
    out: list[str] = []
    for name in wanted:
        if sum(len(n) + 1 for n in out) + len(name) > MAX_REQUEST_BYTES:
            break
        out.append(name)
    return out


@dataclass(frozen=True)
class StsPolicy:
    """A server's IRCv3 `sts` value: where its TLS port is, how long to insist on it."""

    port: int | None
    duration: int | None

    @classmethod
    def parse(cls, value: str) -> StsPolicy:
        """`port=6697,duration=2592000,preload` → the keys we use; a key with a value
        that is no number (or a port out of range) counts as missing."""
        keys: Mapping[str, str] = dict(
            (part.partition("=")[0].lower(), part.partition("=")[2]) for part in value.split(",")
        )
        port = _number(keys.get("port"))
        duration = _number(keys.get("duration"))
        return cls(port if port is not None and 0 < port < 65536 else None, duration)


def _number(text: str | None) -> int | None:
    return int(text) if text and text.isascii() and text.isdigit() and len(text) <= 12 else None
