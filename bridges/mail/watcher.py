"""Watching one IMAP folder for new mail, for as long as the session lives.

One `FolderWatcher` per watched folder holds one IMAP connection: it catches up on what
arrived since the stored watermark, then waits in IDLE (or polls), and reconnects with
capped, jittered backoff when the connection drops. It only finds mail; what happens to
a mail and how the watermark is stored is the `Journal`'s business (the session).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import aioimaplib

from bridges.base import SessionLog
from bridges.mail.config import MailAccount, MailOptions
from bridges.mail.imap import FetchedMail, FolderStatus, ImapConnection, ImapError
from bridges.timeouts import within


@dataclass(frozen=True)
class Watermark:
    """How far a folder has been delivered: UIDs are only comparable within one
    UIDVALIDITY; `last_date` (INTERNALDATE of the last mail) bridges a UIDVALIDITY change.
    """

    uidvalidity: int
    last_uid: int
    last_date: datetime

    def to_json(self) -> dict[str, int | str]:
        return {
            "uidvalidity": self.uidvalidity,
            "last_uid": self.last_uid,
            "last_date": self.last_date.isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Watermark | None:
        try:
            return cls(
                uidvalidity=int(str(data["uidvalidity"])),
                last_uid=int(str(data["last_uid"])),
                last_date=datetime.fromisoformat(str(data["last_date"])),
            )
        except (KeyError, TypeError, ValueError):
            return None


class Journal(Protocol):
    """Where found mail goes; implemented by the session."""

    def watermark(self, folder: str) -> Watermark | None: ...

    async def set_watermark(self, folder: str, mark: Watermark) -> None:
        """Persist a watermark that covers no mail (a fresh start or a resync)."""

    async def deliver(self, folder: str, uidvalidity: int, mails: list[FetchedMail]) -> list[int]:
        """Deliver `mails` in order, each with the watermark that covers it, atomically;
        return the UIDs to mark \\Seen."""

    async def login_result(self, refusal: str | None) -> None:
        """Tell the user once when the server refuses the stored password (None: accepted)."""


CONNECTION_ERRORS = (ImapError, aioimaplib.AioImapException, OSError, TimeoutError, ssl.SSLError)


FETCH_BATCH = 200
"""Mails fetched per round of a catch-up (a SEARCH, then a few FETCH commands): bounded,
since aioimaplib's reading of one response costs the square of its lines."""

QUICK_RETRIES = 5
"""Tries at the shortest delay before backing off: a server restart (seconds) then
costs about one delay, not the doubled wait that plain exponential backoff reaches."""


def reconnect_delays(shortest: float, longest: float) -> Iterator[float]:
    """Seconds to wait before each reconnect: a few quick tries, then doubling, capped."""
    yield from itertools.repeat(shortest, QUICK_RETRIES)
    delay = shortest
    while True:
        delay = min(delay * 2, longest)
        yield delay


class FolderWatcher:
    """The IDLE/poll loop for one folder; `run()` ends only by cancellation."""

    def __init__(
        self,
        folder: str,
        account: MailAccount,
        options: MailOptions,
        tls: ssl.SSLContext,
        journal: Journal,
        log: SessionLog,
    ) -> None:
        self.folder = folder
        self.account = account
        self.options = options
        self.tls = tls
        self.journal = journal
        self.log = log.child(folder)
        self.connection: ImapConnection | None = None
        self.synced = asyncio.Event()
        """Set after each completed sync: tests and benchmarks wait on it."""

    async def run(self) -> None:
        delays = reconnect_delays(self.options.reconnect_min, self.options.reconnect_max)
        delay = next(delays)
        while True:
            try:
                self.connection = await ImapConnection.open(
                    self.account, self.tls, self.options.timeout
                )
            except CONNECTION_ERRORS as exc:
                self.log.warning("IMAP connect failed (%s); retry in %.0f s", _reason(exc), delay)
                if isinstance(exc, ImapError) and exc.auth:
                    await self.journal.login_result(exc.text)
            else:
                await self.journal.login_result(None)
                try:
                    status = await self.connection.select(self.folder)
                    # The server works: start afresh.
                    delays = reconnect_delays(
                        self.options.reconnect_min, self.options.reconnect_max
                    )
                    delay = next(delays)
                    await self._watch(status)
                except CONNECTION_ERRORS as exc:
                    self.log.warning("IMAP connection lost (%s); reconnecting", _reason(exc))
                except Exception:  # e.g. the sink's database: retried, never fatal
                    self.log.exception("watching %s failed; reconnecting", self.folder)
                finally:
                    connection, self.connection = self.connection, None
                    await asyncio.shield(connection.logout())
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = next(delays)

    async def _watch(self, status: FolderStatus) -> None:
        assert self.connection is not None
        await self._settle_watermark(status)
        while True:
            self.connection.take_changes()
            await self._sync()
            if self.connection.take_changes():
                continue  # mail arrived while syncing: look again before idling
            if self.options.idle and self.connection.has_idle:
                await self.connection.idle(self.options.idle_timeout)
            else:
                await self._poll_wait()

    async def _poll_wait(self) -> None:
        """Sleep one poll interval (ending early if the link drops), then NOOP."""
        assert self.connection is not None
        try:
            await within(self.connection.closed.wait(), self.options.poll_interval)
        except TimeoutError:
            await self.connection.noop()
        else:
            raise ImapError("the connection was closed")

    async def _settle_watermark(self, status: FolderStatus) -> None:
        """Make the stored watermark valid for this UIDVALIDITY before syncing.

        Without one (first start) only mail from now on counts. After a UIDVALIDITY change
        the old UIDs mean nothing: mail newer than the last delivered one is taken again,
        at most `resync_limit` of it, so a rebuilt mailbox does not flood the user.
        """
        assert self.connection is not None
        mark = self.journal.watermark(self.folder)
        if mark is not None and mark.uidvalidity == status.uidvalidity:
            return
        now = datetime.now(UTC)
        existing = await self.connection.uids_after(0)
        last_uid = existing[-1] if existing else 0
        if mark is None:
            self.log.info("first sync of %s: starting after UID %d", self.folder, last_uid)
        else:
            dates = await self.connection.internaldates(
                await self.connection.uids_since(mark.last_date)
            )
            newer = sorted(uid for uid, date in dates.items() if date > mark.last_date)
            kept = newer[-self.options.resync_limit :] if self.options.resync_limit else []
            self.log.warning(
                "UIDVALIDITY of %s changed (%d -> %d): %d newer mails, redelivering %d",
                self.folder,
                mark.uidvalidity,
                status.uidvalidity,
                len(newer),
                len(kept),
            )
            if kept:
                last_uid = kept[0] - 1
            now = mark.last_date
        await self.journal.set_watermark(self.folder, Watermark(status.uidvalidity, last_uid, now))

    async def _sync(self) -> None:
        """Deliver, in UID order, every mail above the watermark, fetched in batches."""
        assert self.connection is not None
        while True:
            mark = self.journal.watermark(self.folder)
            assert mark is not None
            mails = await self.connection.fetch_new(
                mark.last_uid, self.options.max_fetch_bytes, FETCH_BATCH
            )
            seen = await self.journal.deliver(self.folder, mark.uidvalidity, mails)
            await self.connection.mark_seen(seen)
            if len(mails) < FETCH_BATCH:
                break
        self.synced.set()


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
