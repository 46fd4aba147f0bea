"""`MailSession`: one user's mailbox, watched over IMAP and written to over SMTP.

The session owns the account's delivery state (one `Watermark` per folder, kept in
`Account.state["folders"]`) and hands each new mail to the sink together with the state
that covers it, so the component stores both in one transaction: exactly once, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bridges import events
from bridges.address import Address, AddressError, AddressKind
from bridges.base import Account, AccountStore, Session, Sink
from bridges.mail import mime
from bridges.mail.config import MailAccount, MailOptions
from bridges.mail.imap import FetchedMail
from bridges.mail.outbox import ROOT, THREAD, Outbox
from bridges.mail.watcher import FolderWatcher, Watermark

CORRESPONDENTS = "correspondents"
"""Record kind: senders the user was already asked to add to their roster."""

if TYPE_CHECKING:
    from bridges.mail.bridge import MailBridge


class MailSession(Session):
    """IMAP IDLE watchers (one per folder) plus the SMTP outbox of one account."""

    def __init__(
        self, bridge: MailBridge, account: Account, sink: Sink, store: AccountStore
    ) -> None:
        super().__init__(bridge, account, sink, store)
        self.options: MailOptions = bridge.mail_options
        self.mail = MailAccount.from_account(account)
        tls = bridge.tls
        folders = account.state.get("folders", {})
        self._marks: dict[str, Watermark] = {
            name: mark
            for name, data in folders.items()
            if isinstance(data, dict) and (mark := Watermark.from_json(data)) is not None
        }
        self._commit_lock = asyncio.Lock()
        self._told_refusal = False
        self.watchers = [
            FolderWatcher(folder, self.mail, self.options, tls, self, self.log)
            for folder in self.mail.folders
        ]
        self.outbox = Outbox(self.mail, self.options, tls, store, sink, self.log)
        self._tasks: list[asyncio.Task[None]] = []
        self._persisting: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Start watching and retrying in the background; returns at once."""
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(w.run(), name=f"mail-watch-{self.account.user}-{w.folder}")
            for w in self.watchers
        ]
        self._tasks.append(
            asyncio.create_task(self.outbox.run(), name=f"mail-outbox-{self.account.user}")
        )

    async def stop(self) -> None:
        """Log out of IMAP and stop retrying; queued mail stays queued for the next start.

        Cancelled (the gateway's shutdown bound passed), it cuts off the submissions
        still under way: their mail is in the stored outbox and goes out after a restart.
        """
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._persisting is not None:  # let the delivery in flight commit its state
                with contextlib.suppress(Exception):
                    await self._persisting
            await self.outbox.close()
        except asyncio.CancelledError:
            self.outbox.abandon()
            raise

    async def send_message(
        self,
        to: Address,
        text: str,
        *,
        xmpp_id: str | None = None,
        subject: str | None = None,
        thread: str | None = None,
        origin: events.Origin | None = None,
    ) -> None:
        await self.outbox.send(
            to, text, xmpp_id=xmpp_id, subject=subject, thread=thread, origin=origin
        )

    # -- Journal: what the watchers call -----------------------------------------------

    def watermark(self, folder: str) -> Watermark | None:
        return self._marks.get(folder)

    def _state_with(self, folder: str, mark: Watermark) -> dict[str, Any]:
        folders = {name: m.to_json() for name, m in self._marks.items()}
        folders[folder] = mark.to_json()
        return {**self.account.state, "folders": folders}

    async def set_watermark(self, folder: str, mark: Watermark) -> None:
        await self._persist(folder, mark, None)

    async def deliver(self, folder: str, mark: Watermark, mail: FetchedMail) -> None:
        """Turn one fetched mail into a message event, delivered with its watermark."""
        event = await self._message_event(mail)
        if self.options.subscribe_correspondents:
            await self._introduce(event.sender)
        await self._persist(folder, mark, event)

    async def _introduce(self, sender: Address) -> None:
        """Ask the user to add a correspondent, once: before their first mail arrives."""
        if await self.store.get_record(CORRESPONDENTS, sender.legacy_id) is None:
            await self.sink.deliver(events.SubscriptionRequest(sender))
            await self.store.put_record(CORRESPONDENTS, sender.legacy_id, {})

    async def _persist(self, folder: str, mark: Watermark, event: events.Message | None) -> None:
        """Store `mark` (with `event`, if any) as the account state, one at a time.

        Shielded from cancellation: a stop() arriving while the sink sends the message
        must not abort the state write after it, or the next start repeats that mail.
        """
        async with self._commit_lock:  # watchers of several folders share one state
            state = self._state_with(folder, mark)
            self._persisting = asyncio.ensure_future(self._write(folder, mark, event, state))
            await asyncio.shield(self._persisting)

    async def _write(
        self, folder: str, mark: Watermark, event: events.Message | None, state: dict[str, Any]
    ) -> None:
        if event is None:
            await self.store.save_account(state=state)
        else:
            await self.sink.deliver(event, state=state)
        self._marks[folder] = mark
        self.account.state = state

    async def login_result(self, refusal: str | None) -> None:
        if refusal is None:
            self._told_refusal = False
        elif not self._told_refusal:
            self._told_refusal = True
            text = (
                f"The IMAP server refused the login for {self.mail.email} ({refusal}). "
                "Mail is not being read: register again with the current password."
            )
            try:
                await self.sink.deliver(events.Notice(text))
            except Exception:  # telling is best effort; the watcher must keep trying
                self.log.exception("could not tell the user about the refused login")

    async def _message_event(self, fetched: FetchedMail) -> events.Message:
        # In a thread: parsing a large or crafted mail is CPU work that would stall the
        # event loop, and with it every other user's traffic.
        mail = await asyncio.to_thread(mime.parse_incoming, fetched.raw)
        text = mime.render_text(mail, max_chars=self.options.max_body_chars)
        if fetched.size is not None and fetched.size > len(fetched.raw):
            text += (
                f"\n\n[… this mail is {fetched.size} bytes; only the first {len(fetched.raw)}"
                " were read: open it in a mail client for the rest]"
            )
        thread = await self._thread_for(mail)
        sender, text = self._sender_of(mail, text)
        return events.Message(
            sender=sender,
            text=text,
            nick=mail.display_name,
            subject=mail.subject,
            thread=thread,
            legacy_id=mail.message_id,
            timestamp=mail.date or fetched.internaldate or datetime.now(UTC),
        )

    def _sender_of(self, mail: mime.IncomingMail, text: str) -> tuple[Address, str]:
        """The contact a mail comes from, and its text.

        Only an address that maps to a JID may be a `from`, since the user answers that
        JID; a mail without one comes from the mailer-daemon of the user's domain, and
        one whose sender cannot be a JID says who wrote it in its text.
        """
        fallback = Address(
            AddressKind.CONTACT, f"mailer-daemon@{self.mail.email.rpartition('@')[2]}"
        )
        if mail.sender is None:
            return fallback, text
        sender = Address(AddressKind.CONTACT, mail.sender)
        try:
            self.bridge.format_address(sender)
        except AddressError:
            note = f"[from {mail.sender}, which has no JID: answer it from a mail client]"
            return fallback, f"{note}\n\n{text}"
        return sender, text

    async def _thread_for(self, mail: mime.IncomingMail) -> str | None:
        """The XMPP thread of a mail, remembered so that the user's reply can answer it."""
        root = mail.thread_root
        if root is None:
            return None
        key = mime.thread_key(root)
        started = await self.store.get_record(ROOT, key)
        thread = str(started["thread"]) if started else key
        await self.store.put_record(
            THREAD,
            thread,
            {
                "subject": mail.subject or "",
                "references": list(mail.reply_references),
                "at": time.time(),
            },
        )
        return thread
