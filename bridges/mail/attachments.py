"""Attachments of incoming mail, uploaded to the user's XMPP server one by one.

A mail's text is delivered first, saying how many files follow; each attachment is then
an `UploadJob`: read from IMAP part by part (partial FETCH of its section, so a 20 MB
attachment is never in memory), decoded as it comes (base64, quoted-printable) into a
spool file, uploaded through the sink's `FileTransfer`, and delivered as a message of
its own with the file's URL. Jobs are stored in the account state with the text that
announces them and removed with the message that ends them, so a restart in between
resumes them: every announced file arrives exactly once, as a file or as a line saying
why it could not be stored.
"""

from __future__ import annotations

import asyncio
import binascii
import re
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from bridges.base import FileError, FileTransfer, SessionLog
from bridges.mail.config import MailAccount, MailOptions
from bridges.mail.imap import ImapConnection
from bridges.mail.mime import human_size
from bridges.mail.watcher import CONNECTION_ERRORS

READ_CHUNK = 256 * 1024
"""Encoded bytes fetched per partial FETCH of an attachment."""
ATTEMPTS = 3
"""Tries of one file while the upload service (or IMAP) fails temporarily."""
_NOT_BASE64_RE = re.compile(rb"[^A-Za-z0-9+/=]")


@dataclass(frozen=True)
class UploadJob:
    """One attachment still to upload; stored as JSON in the account state."""

    key: str
    mail: str
    """Key of the mail it belongs to: its files are uploaded in order, one at a time."""
    folder: str
    uidvalidity: int
    uid: int
    section: str
    encoding: str
    name: str
    content_type: str
    sender: str
    thread: str | None
    index: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UploadJob | None:
        try:
            return cls(**data)
        except TypeError:
            return None


class TooLarge(Exception):
    """The decoded file grew past the service's limit while spooling."""


class Decoder:
    """A content-transfer-decoding that takes the encoded bytes in arbitrary pieces."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding.lower()
        self._rest = b""

    def feed(self, data: bytes) -> bytes:
        if self.encoding == "base64":
            data = self._rest + _NOT_BASE64_RE.sub(b"", data)
            whole = len(data) - len(data) % 4
            self._rest = data[whole:]
            return binascii.a2b_base64(data[:whole]) if whole else b""
        if self.encoding == "quoted-printable":
            data = self._rest + data
            end = data.rfind(b"\n") + 1
            self._rest = data[end:]
            return binascii.a2b_qp(data[:end])
        return data

    def finish(self) -> bytes:
        """What is left; raises binascii.Error when base64 ends in a broken group."""
        rest, self._rest = self._rest, b""
        if not rest:
            return b""
        if self.encoding == "base64":
            rest = rest.rstrip(b"=")
            if len(rest) % 4 == 1:
                raise binascii.Error("the base64 data ends in the middle of a byte")
            return binascii.a2b_base64(rest + b"=" * (-len(rest) % 4))
        if self.encoding == "quoted-printable":
            return binascii.a2b_qp(rest)
        return rest


async def spool(
    connection: ImapConnection, job: UploadJob, out: IO[bytes], limit: int | None
) -> int | None:
    """Copy the decoded part into `out`; its size, or None when the mail is gone.

    Raises TooLarge past `limit`, binascii.Error on undecodable base64.
    """
    decoder = Decoder(job.encoding)
    offset = size = 0
    while True:
        chunk = await connection.fetch_section(job.uid, job.section, offset, READ_CHUNK)
        if chunk is None:
            return None if offset == 0 else size
        offset += len(chunk)
        decoded = decoder.feed(chunk) if chunk else decoder.finish()
        size += len(decoded)
        if limit is not None and size > limit:
            raise TooLarge
        await asyncio.to_thread(out.write, decoded)
        if len(chunk) < READ_CHUNK:
            if chunk:
                tail = decoder.finish()
                size += len(tail)
                if limit is not None and size > limit:
                    raise TooLarge
                out.write(tail)
            return size


Outcome = Callable[[UploadJob, str | None, str | None, int], Awaitable[None]]
"""(job, URL or None, failure text or None, size): delivers a file's message."""


class Uploads:
    """Runs a session's upload jobs: files of one mail in order, two mails at a time."""

    def __init__(
        self,
        account: MailAccount,
        options: MailOptions,
        tls: ssl.SSLContext,
        files: FileTransfer,
        outcome: Outcome,
        log: SessionLog,
    ) -> None:
        self.account = account
        self.options = options
        self.tls = tls
        self.files = files
        self.outcome = outcome
        self.log = log.child("uploads")
        self._slots = asyncio.Semaphore(2)
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, jobs: list[UploadJob]) -> None:
        """Upload `jobs` (one mail's, in order) in the background."""
        if jobs:
            task = asyncio.create_task(self._run(jobs), name=f"mail-upload-{jobs[0].mail}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Cut off what runs: unfinished jobs stay in the state and resume at next start."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def idle(self) -> None:
        """Wait until every job started so far is done (tests, benchmarks)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _run(self, jobs: list[UploadJob]) -> None:
        async with self._slots:
            for job in sorted(jobs, key=lambda j: j.index):
                await self._one(job)

    async def _one(self, job: UploadJob) -> None:
        failure = "it could not be stored"
        for attempt in range(1, ATTEMPTS + 1):
            try:
                url, size = await self._upload(job)
            except FileError as exc:
                if exc.too_large:
                    failure = _too_large(exc.limit)
                    break
                failure = f"it could not be stored: {exc.text}"
                if not exc.temporary:
                    break
            except TooLarge:
                failure = _too_large(await self.files.upload_limit())
                break
            except binascii.Error as exc:
                failure = f"its data is broken ({exc})"
                break
            except CONNECTION_ERRORS as exc:
                failure = f"it could not be read from the mail server ({exc})"
            else:
                if url is None:
                    failure = "the mail is no longer on the server"
                    break
                await self.outcome(job, url, None, size)
                return
            self.log.warning("upload of %s failed (attempt %d): %s", job.name, attempt, failure)
            if attempt < ATTEMPTS:
                await asyncio.sleep(self.options.upload_retry_delay * attempt)
        self.log.info("attachment %s not uploaded: %s", job.name, failure)
        await self.outcome(job, None, failure, 0)

    async def _upload(self, job: UploadJob) -> tuple[str | None, int]:
        """Spool the part to disk and upload it: (URL, size), or (None, 0) when gone."""
        limit = await self.files.upload_limit()
        connection = await ImapConnection.open(self.account, self.tls, self.options.timeout)
        try:
            status = await connection.select(job.folder)
            if status.uidvalidity != job.uidvalidity:
                return None, 0
            with tempfile.NamedTemporaryFile(
                dir=self.options.spool_dir, prefix="attachment-"
            ) as out:
                size = await spool(connection, job, out, limit)
                await asyncio.to_thread(out.flush)
                if size is None:
                    return None, 0
                url = await self.files.upload(Path(out.name), job.name, job.content_type)
                return url, size
        finally:
            await connection.logout()


def _too_large(limit: int | None) -> str:
    shown = f" (limit {human_size(limit)})" if limit else ""
    return f"it is larger than the upload service takes{shown}"
