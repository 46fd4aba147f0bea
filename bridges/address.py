"""Addresses on the legacy side, and how they map to JID localparts.

The component never parses a localpart itself: it asks the bridge, which returns an
`Address`. The default mapping is XEP-0106 escaping of the legacy identifier, so
`bob@example.org` becomes `bob\\40example.org@mail.gateway`; a bridge with its own
scheme (IRC's `#chan%server`) overrides `Bridge.parse_address` / `format_address`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class AddressKind(Enum):
    """What an address names, which decides how the component talks to it."""

    CONTACT = "contact"
    """A person: one-to-one chat, roster entry."""
    GROUP = "group"
    """A group conversation: exposed as an XEP-0045 room."""
    SERVICE = "service"
    """The legacy server itself: notices, raw commands, ad-hoc settings."""


@dataclass(frozen=True)
class Address:
    """A legacy identifier plus what kind of thing it names.

    `legacy_id` is the bridge's own spelling (e.g. `#python%irc.libera.chat`), kept
    verbatim so equal addresses compare equal. Bridges may subclass to carry parsed
    parts, as long as the subclass stays frozen and hashable.
    """

    kind: AddressKind
    legacy_id: str

    @property
    def is_group(self) -> bool:
        return self.kind is AddressKind.GROUP


class AddressError(ValueError):
    """A localpart that is not a valid legacy address.

    `condition` is the RFC 6120 stanza error the component answers with:
    `jid-malformed` for syntax, `item-not-found` for something that cannot exist,
    `not-allowed` for a server the operator does not permit.
    """

    def __init__(self, text: str, condition: str = "jid-malformed") -> None:
        super().__init__(text)
        self.text = text
        self.condition = condition
