"""`MailSession`: one user's mailbox, watched over IMAP and written to over SMTP.

The session owns the account's delivery state (one `Watermark` per folder, kept in
`Account.state["folders"]`) and hands each new mail to the sink together with the state
that covers it, so the component stores both in one transaction: exactly once, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bridges import events
from bridges.address import Address, AddressError, AddressKind
from bridges.base import NO_EXTRAS, Account, AccountStore, MessageExtras, Session, Sink
from bridges.events import GroupFeature
from bridges.mail import mime
from bridges.mail.attachments import UploadJob, Uploads
from bridges.mail.config import MailAccount, MailOptions
from bridges.mail.imap import FetchedMail, ImapConnection
from bridges.mail.outbox import MAIL, ROOT, THREAD, Outbox
from bridges.mail.watcher import CONNECTION_ERRORS, FolderWatcher, Watermark

CORRESPONDENTS = "correspondents"
"""Record kind: senders the user was already asked to add to their roster."""
MAX_UNSEEN = 200
"""Unread mails remembered per thread, for marking a thread read up to a mail."""


PARSE_BATCH_MAILS = 50
PARSE_BATCH_BYTES = 4 * 1024 * 1024
"""Most mails, and mail bytes, parsed in one thread hop (and held parsed at once)."""


def _parse_batches(mails: list[FetchedMail]) -> Iterator[list[FetchedMail]]:
    batch: list[FetchedMail] = []
    size = 0
    for mail in mails:
        if batch and (len(batch) >= PARSE_BATCH_MAILS or size + len(mail.raw) > PARSE_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(mail)
        size += len(mail.raw)
    if batch:
        yield batch


def _parse_all(mails: list[FetchedMail]) -> list[mime.IncomingMail]:
    return [mime.parse_incoming(mail.raw) for mail in mails]


def decoded_size(encoded: int, encoding: str) -> int:
    """About how many bytes a part of `encoded` octets decodes to (base64 lines of 76
    characters plus CRLF carry 57 bytes)."""
    return encoded * 57 // 78 if encoding.lower() == "base64" else encoded


if TYPE_CHECKING:
    from bridges.mail.bridge import MailBridge


READ_MARKERS = frozenset({GroupFeature.DISPLAYED_MARKERS})


class MailSession(Session):
    """IMAP IDLE watchers (one per folder) plus the SMTP outbox of one account."""

    def __init__(
        self, bridge: MailBridge, account: Account, sink: Sink, store: AccountStore
    ) -> None:
        super().__init__(bridge, account, sink, store)
        self.options: MailOptions = bridge.mail_options
        self.mail = MailAccount.from_account(account)
        tls = self._tls = bridge.tls
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
        pending = account.state.get("uploads", {})
        self._uploads: dict[str, dict[str, Any]] = (
            dict(pending) if isinstance(pending, dict) else {}
        )
        """Attachments announced but not delivered yet (see `bridges.mail.attachments`)."""
        self.uploads: Uploads | None = None
        self._marking: set[asyncio.Task[None]] = set()

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
        files = self.sink.files
        if files is not None:
            self.uploads = Uploads(
                self.mail, self.options, self._tls, files, self._file_done, self.log
            )
        self._tasks.append(
            asyncio.create_task(self._resume_uploads(), name=f"mail-resume-{self.account.user}")
        )

    async def _resume_uploads(self) -> None:
        """Finish the attachments a stop or crash left announced but not delivered."""
        jobs = [job for data in self._uploads.values() if (job := UploadJob.from_json(data))]
        by_mail: dict[str, list[UploadJob]] = {}
        for job in jobs:
            by_mail.setdefault(job.mail, []).append(job)
        for mail_jobs in by_mail.values():
            if self.uploads is not None:
                self.uploads.start(mail_jobs)
            else:
                for job in mail_jobs:
                    await self._file_done(job, None, "there is no upload service any more", 0)

    async def stop(self) -> None:
        """Log out of IMAP and stop retrying; queued mail stays queued for the next start.

        Cancelled (the gateway's shutdown bound passed), it cuts off the submissions
        still under way: their mail is in the stored outbox and goes out after a restart.
        """
        tasks, self._tasks = self._tasks, [*self._marking]
        for task in tasks:
            task.cancel()
        try:
            if self.uploads is not None:
                await self.uploads.stop()
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
        extras: MessageExtras = NO_EXTRAS,
    ) -> None:
        await self.outbox.send(
            to,
            text,
            xmpp_id=xmpp_id,
            subject=subject,
            thread=thread,
            origin=origin,
            extras=extras,
        )

    # -- Journal: what the watchers call -----------------------------------------------

    def watermark(self, folder: str) -> Watermark | None:
        return self._marks.get(folder)

    async def set_watermark(self, folder: str, mark: Watermark) -> None:
        await self._commit(None, folder=folder, mark=mark)

    async def deliver(self, folder: str, uidvalidity: int, mails: list[FetchedMail]) -> list[int]:
        """Turn fetched mails into message events, each delivered with its watermark (and
        the attachments it announces); returns the UIDs to mark \\Seen now.

        Parsing is CPU work that would stall the event loop, and with it every other
        user's traffic: it runs in a thread, a batch of mails per hop (one hop per mail
        cost as much as the parsing during a catch-up).
        """
        seen: list[int] = []
        for batch in _parse_batches(mails):
            parsed = await asyncio.to_thread(_parse_all, batch)
            for fetched, mail in zip(batch, parsed, strict=True):
                date = fetched.internaldate or datetime.now(UTC)
                mark = Watermark(uidvalidity, fetched.uid, date)
                event, jobs = await self._message_event(folder, mark, fetched, mail)
                if self.options.subscribe_correspondents:
                    await self._introduce(event.sender)
                await self._commit(event, folder=folder, mark=mark, add=jobs)
                if jobs and self.uploads is not None:
                    self.uploads.start(jobs)
                if self.mail.seen_on_delivery:
                    seen.append(fetched.uid)
        return seen

    async def _introduce(self, sender: Address) -> None:
        """Ask the user to add a correspondent, once: before their first mail arrives."""
        if await self.store.get_record(CORRESPONDENTS, sender.legacy_id) is None:
            await self.sink.deliver(events.SubscriptionRequest(sender))
            await self.store.put_record(CORRESPONDENTS, sender.legacy_id, {})

    async def _commit(
        self,
        event: events.Message | None,
        *,
        folder: str | None = None,
        mark: Watermark | None = None,
        add: Sequence[UploadJob] = (),
        done: str | None = None,
    ) -> None:
        """Deliver `event` (if any) with the account state it leads to, one at a time:
        `folder`'s watermark moved to `mark`, upload jobs `add`ed, job `done` finished.

        Shielded from cancellation: a stop() arriving while the sink sends the message
        must not abort the state write after it, or the next start repeats that mail.
        """
        async with self._commit_lock:  # watchers, uploads and folders share one state
            marks = dict(self._marks)
            if folder is not None and mark is not None:
                marks[folder] = mark
            uploads = {**self._uploads, **{job.key: job.to_json() for job in add}}
            if done is not None:
                uploads.pop(done, None)
            state = {
                **self.account.state,
                "folders": {name: m.to_json() for name, m in marks.items()},
                "uploads": uploads,
            }
            self._persisting = asyncio.ensure_future(self._write(event, state, marks, uploads))
            await asyncio.shield(self._persisting)

    async def _write(
        self,
        event: events.Message | None,
        state: dict[str, Any],
        marks: dict[str, Watermark],
        uploads: dict[str, dict[str, Any]],
    ) -> None:
        if event is None:
            await self.store.save_account(state=state)
        else:
            await self.sink.deliver(event, state=state)
        self._marks, self._uploads = marks, uploads
        self.account.state = state

    async def _file_done(
        self, job: UploadJob, url: str | None, failure: str | None, size: int
    ) -> None:
        """The message that ends an upload job: the file, or why it could not be."""
        sender = Address(AddressKind.CONTACT, job.sender)
        if url is not None:
            event = events.Message(
                sender=sender,
                text=url,
                thread=job.thread,
                file=events.SharedFile(url=url, name=job.name, size=size),
            )
        else:
            text = f"[Attachment {job.name}: {failure}. Open the mail in a mail client for it.]"
            event = events.Message(sender=sender, text=text, thread=job.thread)
        await self._commit(event, done=job.key)

    # -- read state ----------------------------------------------------------------------

    def group_features(self, room: Address) -> frozenset[GroupFeature]:
        """Every mail contact takes XEP-0333 `displayed` markers (they set \\Seen), so
        their disco#info says so and clients send them."""
        return READ_MARKERS

    async def mark_message_displayed(self, contact: Address, message_id: str) -> None:
        """The user saw mail `message_id`: mark it, and the unseen mails of its thread
        delivered before it, \\Seen on the server (in the background)."""
        record = await self.store.get_record(MAIL, mime.thread_key(message_id))
        if record is None:
            return
        thread = str(record["thread"])
        context = await self.store.get_record(THREAD, thread) or {}
        unseen: list[list[Any]] = list(context.get("unseen", []))
        keys = [entry[3] for entry in unseen]
        mine = [record["folder"], record["uidvalidity"], record["uid"], message_id]
        upto = keys.index(message_id) + 1 if message_id in keys else 0
        targets, rest = [*unseen[:upto]] or [mine], unseen[upto:]
        if context:
            await self.store.put_record(THREAD, thread, {**context, "unseen": rest})
        for entry in targets:
            await self.store.delete_record(MAIL, mime.thread_key(str(entry[3])))
        task = asyncio.create_task(self._mark_seen(targets), name=f"mail-seen-{self.account.user}")
        self._marking.add(task)
        task.add_done_callback(self._marking.discard)

    async def _mark_seen(self, entries: list[list[Any]]) -> None:
        """Set \\Seen on each (folder, uidvalidity, uid, _) over a connection of its own."""
        by_folder: dict[tuple[str, int], list[int]] = {}
        for folder, uidvalidity, uid, _id in entries:
            by_folder.setdefault((str(folder), int(uidvalidity)), []).append(int(uid))
        try:
            connection = await ImapConnection.open(self.mail, self._tls, self.options.timeout)
            try:
                for (folder, uidvalidity), uids in by_folder.items():
                    status = await connection.select(folder)
                    if status.uidvalidity == uidvalidity:
                        await connection.mark_seen(uids)
            finally:
                await connection.logout()
        except CONNECTION_ERRORS as exc:
            self.log.warning("could not mark %d mails as read: %s", len(entries), exc)

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

    async def _message_event(
        self, folder: str, mark: Watermark, fetched: FetchedMail, mail: mime.IncomingMail
    ) -> tuple[events.Message, list[UploadJob]]:
        thread = await self._thread_for(mail, [folder, mark.uidvalidity, fetched.uid])
        sender, _ = self._sender_of(mail, "")
        jobs: list[UploadJob] = []
        if fetched.parts is not None:
            attachments, jobs = await self._attachments(folder, mark, fetched, sender, thread)
            mail = dataclasses.replace(mail, attachments=tuple(attachments))
        text = mime.render_text(mail, max_chars=self.options.max_body_chars, following=len(jobs))
        if fetched.size is not None and self._cut(fetched):
            text += (
                f"\n\n[… this mail is {fetched.size} bytes; only the first {len(fetched.raw)}"
                " were read: open it in a mail client for the rest]"
            )
        sender, text = self._sender_of(mail, text)
        seen_elsewhere = fetched.seen
        markable = bool(mail.message_id) and not seen_elsewhere and not self.mail.seen_on_delivery
        if markable and mail.message_id and thread:
            await self.store.put_record(
                MAIL,
                mime.thread_key(mail.message_id),
                {"folder": folder, "uidvalidity": mark.uidvalidity, "uid": fetched.uid,
                 "thread": thread, "at": time.time()},
            )  # fmt: skip
        event = events.Message(
            sender=sender,
            text=text,
            nick=mail.display_name,
            subject=mail.subject,
            thread=thread,
            legacy_id=mail.message_id,
            timestamp=mail.date or fetched.internaldate or datetime.now(UTC),
            markable=markable,
            quiet=seen_elsewhere and self.mail.quiet_when_read,
        )
        return event, jobs

    @staticmethod
    def _cut(fetched: FetchedMail) -> bool:
        """Whether the mail's text was cut (not just its attachments left for later)."""
        assert fetched.size is not None
        if fetched.size <= len(fetched.raw):
            return False
        if fetched.parts is None:
            return True
        return sum(p.size for p in fetched.parts if p.is_text_body) > len(fetched.raw)

    async def _attachments(
        self,
        folder: str,
        mark: Watermark,
        fetched: FetchedMail,
        sender: Address,
        thread: str | None,
    ) -> tuple[list[mime.Attachment], list[UploadJob]]:
        """The attachment lines of a mail, and the jobs for those that follow as files."""
        assert fetched.parts is not None
        key = f"{folder}/{mark.uidvalidity}/{fetched.uid}"
        limit = await self.uploads.files.upload_limit() if self.uploads is not None else None
        attachments: list[mime.Attachment] = []
        jobs: list[UploadJob] = []
        for part in fetched.parts:
            if part.is_text_body:
                continue
            name = mime.safe_filename(part.filename, part.content_type)
            size = decoded_size(part.size, part.encoding)
            note = ""
            if self.uploads is None:
                pass
            elif limit is not None and size > limit:
                note = (
                    f"larger than the upload service takes ({mime.human_size(limit)}):"
                    " open the mail in a mail client for it"
                )
            else:
                jobs.append(
                    UploadJob(
                        key=f"{key}/{part.section}",
                        mail=key,
                        folder=folder,
                        uidvalidity=mark.uidvalidity,
                        uid=fetched.uid,
                        section=part.section,
                        encoding=part.encoding,
                        name=name,
                        content_type=part.content_type,
                        sender=sender.legacy_id,
                        thread=thread,
                        index=len(jobs),
                    )
                )
            attachments.append(mime.Attachment(name, part.content_type, size, note))
        return attachments, jobs

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

    async def _thread_for(self, mail: mime.IncomingMail, where: list[Any]) -> str | None:
        """The XMPP thread of a mail, remembered so that the user's reply can answer it,
        with the unseen mails delivered to it (`where`: folder, UIDVALIDITY, UID)."""
        root = mail.thread_root
        if root is None:
            return None
        key = mime.thread_key(root)
        started = await self.store.get_record(ROOT, key)
        thread = str(started["thread"]) if started else key
        previous = await self.store.get_record(THREAD, thread) or {}
        unseen = list(previous.get("unseen", []))[-MAX_UNSEEN:]
        if mail.message_id:
            unseen.append([*where, mail.message_id])
        await self.store.put_record(
            THREAD,
            thread,
            {
                "subject": mail.subject or "",
                "references": list(mail.reply_references),
                "at": time.time(),
                "unseen": unseen,
            },
        )
        return thread
