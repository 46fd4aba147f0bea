"""One-to-one chats with legacy contacts: what XEP-0444 reaction sets each side has.

XEP-0444 sends a sender's whole set, legacy networks (IRC `+draft/react`) one change at
a time, so each side's set is kept, per user, contact and message. Private chats have
no archive here (the user's server keeps them), so this is memory only, bounded: after
a restart the first change is taken against an empty set.
"""

from __future__ import annotations

from collections import OrderedDict

from bridges.address import Address

KEPT = 10_000
"""Reaction sets remembered, across all users; the oldest go first."""

Key = tuple[str, Address, str, bool]
"""(user, contact, message id, whether the set is the contact's)."""


class ReactionSets:
    def __init__(self, kept: int = KEPT) -> None:
        self._kept = kept
        self._sets: OrderedDict[Key, tuple[str, ...]] = OrderedDict()

    def _store(self, key: Key, emojis: tuple[str, ...]) -> None:
        self._sets.pop(key, None)
        if emojis:
            self._sets[key] = emojis
            if len(self._sets) > self._kept:
                self._sets.popitem(last=False)

    def users_change(
        self, user: str, contact: Address, target: str, emojis: list[str]
    ) -> tuple[list[str], list[str]]:
        """What the user's new whole set for `target` adds and removes."""
        before = self._sets.get((user, contact, target, False), ())
        return [e for e in emojis if e not in before], [e for e in before if e not in emojis]

    def users_set(self, user: str, contact: Address, target: str, emojis: list[str]) -> None:
        """The user's set for `target` once the network took the change."""
        self._store((user, contact, target, False), tuple(emojis))

    def contacts_change(
        self, user: str, contact: Address, target: str, emoji: str, removed: bool
    ) -> list[str]:
        """The contact added or took back `emoji`; returns their whole set now."""
        key = (user, contact, target, True)
        emojis = [e for e in self._sets.get(key, ()) if e != emoji]
        if not removed:
            emojis.append(emoji)
        self._store(key, tuple(emojis))
        return emojis
