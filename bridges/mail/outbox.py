"""Outgoing mail: compose, submit, and keep what could not be sent yet.

Every mail is written to the account's `outbox` records before the first attempt and
removed only once the server accepted or permanently refused it, so neither a temporary
failure nor a gateway crash or stop loses it (at worst a crash right after acceptance
sends it twice, which mail tolerates far better than a loss). The user hears the outcome
as `Delivered` or `DeliveryFailed`, addressed from the `Origin` stored with the mail, so
a receipt asked for before a restart still comes after it. A mail that has to wait for
a retry is told once as waiting and once more when it went out or was given up
(`Notice`s, which reach the user even when the resource that wrote it is gone).

Submission runs beside the user's lane, not in it: a server that accepts the connection
and never answers holds a mail for the whole SMTP timeout, and the user's pings, room
joins and mail to others must not wait for that. The same holds for the files a mail
attaches, fetched as part of its submission: a slow upload service delays that mail
(and later ones to the same recipient), nothing else. Mail to one recipient still goes
out in the order it was written; mail to different recipients may overtake each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tempfile
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

from bridges import events
from bridges.address import Address, AddressError, AddressKind
from bridges.base import (
    NO_EXTRAS,
    AccountStore,
    BridgeError,
    DownloadedFile,
    FileError,
    MessageExtras,
    SessionLog,
    Sink,
)
from bridges.mail import addresses, mime, smtp
from bridges.mail.config import MailAccount, MailOptions
from bridges.mail.imap import ImapConnection
from bridges.mail.watcher import CONNECTION_ERRORS
from bridges.timeouts import within

OUTBOX = "outbox"
THREAD = "thread"
"""thread id → {"subject", "references"}: what a reply in that XMPP thread answers."""
ROOT = "root"
"""thread_key(first Message-ID of a conversation) → {"thread"}: a thread the user started."""
MAIL = "mail"
"""thread_key(Message-ID) → where a delivered, unread mail is (folder, UIDVALIDITY, UID)
and its thread: what a `displayed` marker for that message id marks \\Seen."""
MAX_REFERENCES = 20


def reply_subject(subject: str) -> str:
    return subject if subject[:3].lower() == "re:" else f"Re: {subject}"


class Outbox:
    """Sends a user's mail and retries the ones that failed temporarily."""

    def __init__(
        self,
        account: MailAccount,
        options: MailOptions,
        tls: ssl.SSLContext,
        store: AccountStore,
        sink: Sink,
        log: SessionLog,
    ) -> None:
        self.account = account
        self.options = options
        self.tls = tls
        self.store = store
        self.sink = sink
        self.log = log.child("outbox")
        self._wake = asyncio.Event()
        self._inflight: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._last_to: dict[str, asyncio.Task[None]] = {}
        """recipient → the latest submission to them, which the next one waits for."""

    async def send(
        self,
        to: Address,
        text: str,
        *,
        xmpp_id: str | None,
        subject: str | None,
        thread: str | None,
        origin: events.Origin | None = None,
        extras: MessageExtras = NO_EXTRAS,
    ) -> None:
        """Compose and queue one mail; it is submitted in the background (see module doc)."""
        if to.kind is not AddressKind.CONTACT or "@" not in to.legacy_id:
            raise BridgeError(f"{to.legacy_id} is not an email address", "item-not-found")
        context = await self.store.get_record(THREAD, thread) if thread else None
        references: list[str] = list(context.get("references", [])) if context else []
        if extras.reply_to and mime.is_message_id(extras.reply_to):
            # XEP-0461: answer that very mail, not the thread's latest
            if extras.reply_to in references:
                references = references[: references.index(extras.reply_to) + 1]
            else:
                references = [*references, extras.reply_to]
        if extras.quote and extras.quote.strip():
            text = f"{mime.quoted(extras.quote)}\n\n{text}"
        # files are fetched at submission, beside the lane (see `_submit_mail`)
        files, links = (extras.files, ()) if self.sink.files is not None else ((), extras.files)
        if links:
            text = "\n".join([text, *links]) if text else "\n".join(links)
        if not subject:
            subject = (
                reply_subject(context["subject"])
                if context and context.get("subject")
                else self.options.default_subject
            )
        try:
            message = mime.build_outgoing(
                sender=addresses.for_smtp(self.account.email),
                display_name=self.account.display_name,
                to=addresses.for_smtp(to.legacy_id),
                subject=subject,
                text=text,
                in_reply_to=references[-1] if references else None,
                references=_trimmed(references),
            )
            raw = mime.to_bytes(message).decode("ascii")
        except AddressError as exc:
            raise BridgeError(exc.text, exc.condition) from exc
        except (ValueError, UnicodeError) as exc:
            raise BridgeError(f"cannot write this mail: {exc}", "not-acceptable") from exc
        message_id = str(message["Message-ID"])
        if thread:
            await self._remember_thread(thread, subject, references, message_id)
        item = {
            "to": to.legacy_id,
            "xmpp_id": xmpp_id,
            "origin": {"jid": origin.jid, "receipt": origin.receipt} if origin else None,
            "subject": subject,
            "message": raw,
            "files": list(files),
            "created": time.time(),
            "attempts": 0,
            "next_try": time.time() + self.options.retry_min,
        }
        await self.store.put_record(OUTBOX, message_id, item)
        self._submit(message_id, item)

    async def _submit_mail(self, item: Mapping[str, Any]) -> bytes | None:
        """Submit the queued mail with the files it attaches; returns the mail as sent
        when a Sent copy is kept (else None). Raises SmtpFailure.

        Only what the component's `FileTransfer` agrees to fetch (hosts the operator
        allows, size capped, time-limited) is attached; a URL not fetched stays a link.
        The queued mail holds only the URLs, so each attempt fetches them again: a file
        never sits in the account state, and a restart between queueing and sending
        still attaches it. Files are spooled to disk as they arrive, the mail is written
        to a spool file around them and submitted from it, so a large file is never
        whole in memory (only a Sent copy is, as aioimaplib's APPEND takes bytes).
        """
        raw = str(item["message"]).encode("ascii")
        urls = [str(url) for url in item.get("files") or []]
        to = [str(item["to"])]
        if not urls:
            await smtp.submit(self.account, self.options, self.tls, to, raw)
            return raw if self.options.save_sent else None
        directory = Path(self.options.spool_dir or tempfile.gettempdir())
        fetched: list[DownloadedFile] = []
        try:
            links = [url for url in urls if not await self._fetch(url, directory, fetched)]
            spooled = [(got.name, got.content_type, got.path) for got in fetched]
            with tempfile.NamedTemporaryFile(dir=directory, prefix="mail-") as out:
                await asyncio.to_thread(mime.write_with_files, raw, spooled, links, out)
                await asyncio.to_thread(out.flush)
                path = Path(out.name)
                await smtp.submit(self.account, self.options, self.tls, to, path)
                return await asyncio.to_thread(path.read_bytes) if self.options.save_sent else None
        finally:
            for got in fetched:
                got.path.unlink(missing_ok=True)

    async def _fetch(self, url: str, directory: Path, fetched: list[DownloadedFile]) -> bool:
        """Fetch `url` into `directory` (appended to `fetched`); False: it stays a link."""
        files = self.sink.files
        if files is None:  # file transfer switched off since the mail was queued
            return False
        try:
            fetched.append(await files.download(url, directory, self.options.max_attachment_bytes))
        except FileError as exc:
            self.log.info("not attaching %s: %s", url, exc.text)
            return False
        return True

    async def _remember_thread(
        self, thread: str, subject: str, references: list[str], message_id: str
    ) -> None:
        """Let later replies in `thread`, from either side, continue the same mail thread."""
        chain = [*references, message_id]
        now = time.time()
        await self.store.put_record(
            THREAD, thread, {"subject": subject, "references": chain, "at": now}
        )
        if not references:  # the user opened this conversation: map its root back
            await self.store.put_record(
                ROOT, mime.thread_key(message_id), {"thread": thread, "at": now}
            )

    async def forget_old_threads(self) -> None:
        """Drop thread records (and unread mails never shown) unused for
        `thread_memory_days`, so they do not pile up."""
        cutoff = time.time() - self.options.thread_memory_days * 86400
        for kind in (THREAD, ROOT, MAIL):
            for key, data in await self.store.list_records(kind):
                if float(data.get("at", 0)) < cutoff:
                    await self.store.delete_record(kind, key)

    async def run(self) -> None:
        """Retry queued mail when due; ends only by cancellation."""
        await self.forget_old_threads()
        while True:
            self._wake.clear()  # before looking, so a failure queued meanwhile wakes us
            now = time.time()
            queued = await self.store.list_records(OUTBOX)
            for key, item in sorted(queued, key=lambda kv: kv[1].get("created", 0)):
                if item.get("next_try", 0) <= now and key not in self._inflight:
                    # shielded: a stop() must not fall between the server accepting the
                    # mail and its removal from the queue (it would be sent twice)
                    await asyncio.shield(self._submit(key, item))
            queued = await self.store.list_records(OUTBOX)
            due = [item.get("next_try", now) for _key, item in queued]
            wait = max(0.0, min(due) - time.time()) if due else None
            with contextlib.suppress(TimeoutError):
                await within(self._wake.wait(), wait)

    def _submit(self, key: str, item: Mapping[str, Any]) -> asyncio.Task[None]:
        """Claim `key` and attempt it once the previous mail to its recipient is done."""
        self._inflight.add(key)
        recipient = str(item["to"])
        task = self._track(self._attempt_after(self._last_to.get(recipient), key, item))
        self._last_to[recipient] = task
        task.add_done_callback(lambda done: self._forget_last(recipient, done))
        return task

    def _forget_last(self, recipient: str, task: asyncio.Task[None]) -> None:
        if self._last_to.get(recipient) is task:
            del self._last_to[recipient]

    async def _attempt_after(
        self, previous: asyncio.Task[None] | None, key: str, item: Mapping[str, Any]
    ) -> None:
        try:
            if previous is not None:
                await asyncio.wait([previous])  # its outcome is its own; only order matters
            await self._attempt(key, item)
        finally:
            self._inflight.discard(key)

    async def _attempt(self, key: str, item: Mapping[str, Any]) -> None:
        to = Address(AddressKind.CONTACT, item["to"])
        xmpp_id = item.get("xmpp_id")
        origin = _origin(item)
        attempts = int(item.get("attempts", 0)) + 1
        waited = attempts > 1  # the user was told it waits, so is told how it ends
        try:
            sent = await self._submit_mail(item)
        except smtp.SmtpFailure as failure:
            expired = time.time() - float(item.get("created", 0)) > self.options.retry_give_up
            if failure.permanent or expired:
                self.log.info("mail to %s failed: %s", item["to"], failure.text)
                await self.store.delete_record(OUTBOX, key)
                text = (
                    failure.text
                    if failure.permanent
                    else (f"gave up after {attempts} attempts; last error: {failure.text}")
                )
                await self.sink.deliver(
                    events.DeliveryFailed(to, xmpp_id, failure.condition, text, origin)
                )
                if waited:
                    await self._tell(
                        f"Your mail to {item['to']} ({_about(item)}) was not sent: {text}"
                    )
                return
            delay = min(self.options.retry_min * 2 ** (attempts - 1), self.options.retry_max)
            self.log.info(
                "mail to %s deferred (%s); retry in %.0f s", item["to"], failure.text, delay
            )
            retry = {
                **item,
                "attempts": attempts,
                "next_try": time.time() + delay,
                "last_error": failure.text,
            }
            await self.store.put_record(OUTBOX, key, retry)
            self._wake.set()
            if attempts == 1:
                await self._tell(
                    f"Your mail to {item['to']} ({_about(item)}) is not sent yet: "
                    f"{failure.text}. The gateway tries again for up to "
                    f"{_duration(self.options.retry_give_up)} and tells you how it ends."
                )
        else:
            self.log.info("mail to %s accepted", item["to"])
            await self.store.delete_record(OUTBOX, key)
            if xmpp_id:
                await self.sink.deliver(events.Delivered(to, xmpp_id, origin=origin))
            if waited:
                await self._tell(
                    f"Your mail to {item['to']} ({_about(item)}) is sent now, "
                    f"after {attempts} attempts."
                )
            if sent is not None:
                self._track(self._save_copy(sent))

    async def _tell(self, text: str) -> None:
        """Best effort: the outcome itself is stored (or was answered) already."""
        try:
            await self.sink.deliver(events.Notice(text))
        except Exception:
            self.log.exception("could not tell the user about a queued mail")

    def _track(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` as a task that `close()` waits for."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _save_copy(self, raw: bytes) -> None:
        """Best effort: a missing Sent copy must not turn a sent mail into a failure."""
        try:
            connection = await ImapConnection.open(self.account, self.tls, self.options.timeout)
            try:
                await connection.append(self.options.sent_folder, raw)
            finally:
                await connection.logout()
        except CONNECTION_ERRORS as exc:
            self.log.warning("could not store a copy in %s: %s", self.options.sent_folder, exc)

    async def close(self) -> None:
        """Wait for attempts and Sent copies still under way (bounded by the timeouts)."""
        while self._background:  # an attempt may start a Sent copy meanwhile
            await asyncio.gather(*list(self._background), return_exceptions=True)

    def abandon(self) -> None:
        """Cut off what is under way (a bounded shutdown): unsent mail stays stored."""
        for task in self._background:
            task.cancel()


def _origin(item: Mapping[str, Any]) -> events.Origin | None:
    """The stored `Origin` of a queued mail (None for mail queued before it was kept)."""
    data = item.get("origin")
    if not isinstance(data, dict) or not data.get("jid"):
        return None
    return events.Origin(str(data["jid"]), bool(data.get("receipt")))


def _about(item: Mapping[str, Any]) -> str:
    """Which mail a notice speaks of, for a user who may have written several."""
    subject = item.get("subject")
    return f"“{subject}”" if subject else "no subject"


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} hours"
    if seconds >= 120:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds:.0f} seconds"


def _trimmed(references: list[str]) -> list[str]:
    """Keep the root and the most recent ids: long chains break header limits."""
    if len(references) <= MAX_REFERENCES:
        return references
    return [references[0], *references[-(MAX_REFERENCES - 1) :]]
