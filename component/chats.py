"""One-to-one chats with legacy contacts: the references between their messages.

A client names a message it replies or reacts to by the id it saw (XEP-0461 §3,
XEP-0444 §5), the legacy side by its own id (an IRC msgid); XEP-0444 sends a sender's
whole set where legacy networks (IRC `+draft/react`) send one change at a time. So for
each message the gateway keeps its legacy id and each side's reactions, per user: the
newest in memory, all of them through the archive's writer in `chat_references`
(batched, off the delivery path), so a reply or a reaction change after a restart
still reaches the right message. Without an archive (`archive.enabled: false`) they
are kept in memory only, and after a restart references fall back to text.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace

from component.archive import Archive, ChatReference

KEPT = 10_000
"""References held in memory, across all users; the oldest go first."""


class PrivateChats:
    def __init__(self, archive: Archive | None = None, kept: int = KEPT) -> None:
        self._archive = archive
        self._kept = kept
        self._refs: OrderedDict[tuple[str, str], ChatReference] = OrderedDict()
        """(user, XMPP id) → reference, newest last."""
        self._by_legacy: dict[tuple[str, str], str] = {}
        """(user, legacy id) → XMPP id, for the references in `_refs` (each of the
        legacy ids of a message that became several)."""

    def _remember(self, ref: ChatReference) -> None:
        key = (ref.user, ref.xmpp_id)
        self._refs.pop(key, None)
        self._refs[key] = ref
        for legacy_id in _legacy_ids(ref):
            self._by_legacy[(ref.user, legacy_id)] = ref.xmpp_id
        if len(self._refs) > self._kept:
            _, old = self._refs.popitem(last=False)
            for legacy_id in _legacy_ids(old):
                if self._by_legacy.get((old.user, legacy_id)) == old.xmpp_id:
                    del self._by_legacy[(old.user, legacy_id)]

    def _change(self, ref: ChatReference) -> None:
        """Apply what `ref` changes, here and (queued) in the database."""
        known = self._refs.get((ref.user, ref.xmpp_id))
        self._remember(ref if known is None else known.merged(ref))
        if self._archive is not None:
            self._archive.note_chat(ref)

    async def _load(self, user: str, xmpp_id: str) -> ChatReference | None:
        """The reference with both reaction sets known (read from the database once)."""
        known = self._refs.get((user, xmpp_id))
        if known is not None and known.mine is not None and known.theirs is not None:
            self._refs.move_to_end((user, xmpp_id))
            return known
        stored = None
        if self._archive is not None:
            stored = await self._archive.chat_reference(user, xmpp_id=xmpp_id)
        if known is None and stored is None:
            return None
        ref = (stored or ChatReference(user, xmpp_id)).merged(known or ChatReference(user, xmpp_id))
        ref = replace(ref, mine=ref.mine or (), theirs=ref.theirs or ())
        self._remember(ref)
        return ref

    def note(self, user: str, xmpp_id: str, legacy_id: str, more: tuple[str, ...] = ()) -> None:
        """A message the user's clients know as `xmpp_id` is `legacy_id` on the network
        (a contact's message, under its own id; the user's, once the network took it),
        and `more` too where it became several legacy messages (a multi-line one)."""
        known = self._refs.get((user, xmpp_id))
        if known is None or (known.legacy_id, known.more_legacy_ids or ()) != (legacy_id, more):
            self._change(ChatReference(user, xmpp_id, legacy_id, more_legacy_ids=more or None))

    async def legacy_id(self, user: str, xmpp_id: str) -> str | None:
        """The legacy id of the message the user's clients know as `xmpp_id`."""
        ids = await self.legacy_ids(user, xmpp_id)
        return ids[0] if ids else None

    async def legacy_ids(self, user: str, xmpp_id: str) -> tuple[str, ...]:
        """Every legacy id of the message the user's clients know as `xmpp_id`, the
        first first (none when unknown)."""
        known = self._refs.get((user, xmpp_id))
        if known is None or not known.legacy_id:
            known = await self._load(user, xmpp_id)
        return _legacy_ids(known) if known is not None else ()

    async def xmpp_id(self, user: str, legacy_id: str) -> str | None:
        """The id the user's clients know the message `legacy_id` by, if it is known."""
        found = self._by_legacy.get((user, legacy_id))
        if found is not None or self._archive is None:
            return found
        stored = await self._archive.chat_reference(user, legacy_id=legacy_id)
        if stored is None:
            return None
        self._remember(stored)
        return stored.xmpp_id

    async def users_change(
        self, user: str, target: str, emojis: Sequence[str]
    ) -> tuple[list[str], list[str]]:
        """What the user's new whole set for `target` adds and removes."""
        ref = await self._load(user, target)
        before = ref.mine or () if ref is not None else ()
        return [e for e in emojis if e not in before], [e for e in before if e not in emojis]

    def users_set(self, user: str, target: str, emojis: Sequence[str]) -> None:
        """The user's set for `target` once the network took the change."""
        self._change(ChatReference(user, target, mine=tuple(emojis)))

    async def contacts_change(self, user: str, target: str, emoji: str, removed: bool) -> list[str]:
        """The contact added or took back `emoji`; returns their whole set now."""
        ref = await self._load(user, target)
        emojis = [e for e in (ref.theirs or () if ref is not None else ()) if e != emoji]
        if not removed:
            emojis.append(emoji)
        self._change(ChatReference(user, target, theirs=tuple(emojis)))
        return emojis

    def forget(self, user: str) -> None:
        """The user unregistered (their rows go with the account)."""
        for key in [key for key in self._refs if key[0] == user]:
            del self._refs[key]
        for key in [key for key in self._by_legacy if key[0] == user]:
            del self._by_legacy[key]


def _legacy_ids(ref: ChatReference) -> tuple[str, ...]:
    if not ref.legacy_id:
        return ()
    return (ref.legacy_id, *(ref.more_legacy_ids or ()))
