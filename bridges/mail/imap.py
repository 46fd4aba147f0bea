"""A thin, typed layer over aioimaplib: the few IMAP operations the bridge needs.

aioimaplib speaks the protocol but leaves gaps this module fills: STARTTLS (it knows the
command but cannot upgrade its transport), noticing a dropped connection while idling,
response parsing (UIDVALIDITY, FETCH literals) and turning `NO`/`BAD` into exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import aioimaplib
from aioimaplib.aioimaplib import quoted

from bridges.mail.config import MailAccount, Security, Server
from bridges.mail.imap_parse import Part, Value, as_int, body_parts, fetch_records
from bridges.timeouts import within

T = TypeVar("T")


class ImapError(Exception):
    """The server refused something, or the connection is unusable; `text` says why."""

    def __init__(self, text: str, *, auth: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.auth = auth


@dataclass(frozen=True)
class FolderStatus:
    """What SELECT tells about a folder: the UID epoch and the next UID to come."""

    uidvalidity: int
    uidnext: int | None


@dataclass(frozen=True)
class FetchedMail:
    """One message as fetched: its UID, its bytes (maybe cut) and its full size."""

    uid: int
    raw: bytes
    size: int | None
    internaldate: datetime | None
    flags: frozenset[str] = frozenset()
    parts: tuple[Part, ...] | None = None
    """The leaves of its BODYSTRUCTURE, when the server sent one."""

    @property
    def seen(self) -> bool:
        """Read elsewhere already (another mail client set \\Seen)."""
        return "\\seen" in {flag.lower() for flag in self.flags}


@dataclass(frozen=True)
class _Head:
    uid: int
    size: int | None
    record: dict[str, Value]
    parts: list[Part] | None


def heads_by_uid(heads: list[tuple[int, dict[str, Value]]]) -> dict[int, _Head]:
    found: dict[int, _Head] = {}
    for uid, record in heads:
        parts = body_parts(record["BODYSTRUCTURE"]) if "BODYSTRUCTURE" in record else None
        found[uid] = _Head(uid, as_int(record.get("RFC822.SIZE")), record, parts)
    return found


BATCH_BYTES = 8 * 1024 * 1024
"""Most mail bytes one FETCH asks for: a catch-up of many small mails is a few round
trips, and a burst of big ones does not sit in memory all at once."""
BATCH_MAILS = 100
"""Most mails per FETCH of bodies: aioimaplib rescans a whole response for every line it
reads, so the cost of one FETCH grows with the square of its mails."""
TEXT_MARGIN = 64 * 1024
"""Bytes fetched beyond a mail's text parts (headers, MIME boundaries)."""


def _text_bytes(size: int | None, parts: list[Part] | None, max_bytes: int) -> int:
    """How much of a mail to fetch: all of it up to `max_bytes`, except that a mail whose
    attachments are large is read only as far as its text needs (the attachments are
    read part by part when uploaded). The text usually comes first in a mail."""
    if parts is None or size is None:
        return max_bytes
    attached = sum(part.size for part in parts if not part.is_text_body)
    if attached <= TEXT_MARGIN:
        return max_bytes
    text = sum(part.size for part in parts if part.is_text_body)
    return min(max_bytes, text + TEXT_MARGIN)


_UIDVALIDITY_RE = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_UIDNEXT_RE = re.compile(rb"\[UIDNEXT (\d+)\]")
_FETCH_UID_RE = re.compile(rb"\bUID (\d+)")
_FETCH_DATE_RE = re.compile(rb'\bINTERNALDATE "([^"]+)"')
_PUSH_RE = re.compile(rb"^\d+ (EXISTS|RECENT|EXPUNGE)|^BYE", re.IGNORECASE)


def _text(response: aioimaplib.Response) -> str:
    """The human-readable part of a tagged response."""
    for line in reversed(response.lines):
        if isinstance(line, bytes) and line.strip():
            return line.decode("utf-8", "replace").strip()
    return str(response.result)


def _check(response: aioimaplib.Response, what: str) -> aioimaplib.Response:
    if response.result != "OK":
        raise ImapError(f"{what}: {response.result} {_text(response)}")
    return response


def _internaldate(value: bytes) -> datetime | None:
    try:
        return datetime.strptime(value.decode("ascii"), "%d-%b-%Y %H:%M:%S %z")
    except ValueError:
        return None


class ImapConnection:
    """One logged-in IMAP connection; create with `await ImapConnection.open(...)`."""

    def __init__(self, server: Server, tls: ssl.SSLContext, timeout: float) -> None:
        self.server = server
        self.timeout = timeout
        self.closed = asyncio.Event()
        """Set when the server (or the network) drops the connection."""
        self._tls = tls
        self._client = aioimaplib.IMAP4(
            host=server.host,
            port=server.port,
            timeout=timeout,
            conn_lost_cb=lambda _exc: self.closed.set(),
            ssl_context=tls if server.security is Security.TLS else None,
        )
        self._changed = False
        protocol = self._client.protocol
        untagged = protocol._untagged_response

        def spy(line: bytes) -> aioimaplib.Command:
            # aioimaplib drops ("ignored untagged response") an EXISTS that comes with a
            # FETCH or SEARCH answer, and the server never repeats it in IDLE: note every
            # mailbox change, whatever command it rides on, so no mail waits for the next.
            if _PUSH_RE.match(line[2:]):
                self._changed = True
            return untagged(line)

        protocol._untagged_response = spy

    async def _call(self, command: Awaitable[T], what: str) -> T:
        """Await one aioimaplib command, but give up as soon as the connection drops.

        aioimaplib never fails a pending command when the link goes away; it would wait
        for its own timeout (or forever, for IDLE). A dropped link must be noticed at once
        so the watcher can reconnect.
        """
        task = asyncio.ensure_future(command)
        closed = asyncio.ensure_future(self.closed.wait())
        try:
            await asyncio.wait(
                {task, closed}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            closed.cancel()
            if not task.done():
                task.cancel()
        if task.done() and not task.cancelled():
            return task.result()
        if self.closed.is_set():
            raise ImapError(f"{what}: the connection was closed")
        raise ImapError(f"{what}: no answer within {self.timeout:g} s")

    @classmethod
    async def open(
        cls, account: MailAccount, tls: ssl.SSLContext, timeout: float
    ) -> ImapConnection:
        """Connect, secure and log in; raise ImapError (auth=True for refused credentials)."""
        conn = cls(account.imap, tls, timeout)
        try:
            await conn._client.wait_hello_from_server()
            if account.imap.security is Security.STARTTLS:
                await conn._starttls()
            # aioimaplib quotes the password only; a login name may hold spaces or quotes
            login = conn._client.login(quoted(account.username), account.password)
            response = await conn._call(login, "LOGIN")
            if response.result != "OK":
                raise ImapError(_text(response), auth=True)
        except BaseException:
            conn.abort()
            raise
        return conn

    async def _starttls(self) -> None:
        """Upgrade the plain connection (RFC 3501 §6.2.1) and refresh capabilities."""
        protocol = self._client.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise ImapError("the server does not offer STARTTLS")
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        _check(await self._call(protocol.execute(command), "STARTTLS"), "STARTTLS")
        transport = await within(
            protocol.loop.start_tls(
                protocol.transport, protocol, self._tls, server_hostname=self.server.host
            ),
            self.timeout,
        )
        if transport is None:
            raise ImapError("STARTTLS: the connection closed during the handshake")
        protocol.transport = transport
        await self._call(protocol.capability(), "CAPABILITY")

    def take_changes(self) -> bool:
        """Whether the server reported a mailbox change since the last call."""
        changed, self._changed = self._changed, False
        return changed

    @property
    def has_idle(self) -> bool:
        return "IDLE" in self._client.protocol.capabilities

    async def select(self, folder: str) -> FolderStatus:
        what = f"SELECT {folder}"
        response = _check(await self._call(self._client.select(_quote(folder)), what), what)
        data = b" ".join(line for line in response.lines if isinstance(line, bytes))
        validity = _UIDVALIDITY_RE.search(data)
        if validity is None:
            raise ImapError(f"SELECT {folder}: the server sent no UIDVALIDITY")
        uidnext = _UIDNEXT_RE.search(data)
        return FolderStatus(int(validity.group(1)), int(uidnext.group(1)) if uidnext else None)

    async def uids_after(self, uid: int) -> list[int]:
        """UIDs greater than `uid`, ascending (`n:*` also matches the last one: filtered)."""
        search = self._client.uid_search(f"UID {uid + 1}:*", charset=None)
        response = _check(await self._call(search, "SEARCH"), "SEARCH")
        return _uids(response, above=uid)

    async def uids_since(self, when: datetime) -> list[int]:
        """UIDs of mail that may have arrived after `when` (a superset, by whole days)."""
        # SINCE compares days in the server's time zone: start a day early, callers
        # filter on the exact INTERNALDATE.
        day = (when - timedelta(days=1)).strftime("%d-%b-%Y")
        search = self._client.uid_search(f"SINCE {day}", charset=None)
        response = _check(await self._call(search, "SEARCH"), "SEARCH")
        return _uids(response, above=0)

    async def fetch_new(self, after_uid: int, max_bytes: int, limit: int) -> list[FetchedMail]:
        """The next mails above `after_uid` (at most `limit`), in UID order, in few round
        trips: a SEARCH, one FETCH for their sizes, flags and structure, then one for the
        bodies of every batch of ordinary mails (`BATCH_MAILS`, `BATCH_BYTES`); only a
        mail with large attachments gets a FETCH of its own, for its text alone (the
        attachments are fetched later, part by part, by whoever uploads them).
        """
        uids = (await self.uids_after(after_uid))[:limit]
        if not uids:
            return []
        items = "(UID FLAGS RFC822.SIZE INTERNALDATE BODYSTRUCTURE)"
        fetch = self._client.uid("fetch", _uid_set(uids), items)
        response = _check(await self._call(fetch, "FETCH"), "FETCH")
        heads: list[tuple[int, dict[str, Value]]] = []
        for record in fetch_records(response.lines):
            uid = as_int(record.get("UID"))
            if uid is not None and uid > after_uid:
                heads.append((uid, record))
        heads.sort(key=lambda head: head[0])
        wanted = heads_by_uid(heads)
        mails: dict[int, FetchedMail] = {}
        batch: list[int] = []
        batch_bytes = 0
        for uid, head in wanted.items():
            cap = _text_bytes(head.size, head.parts, max_bytes)
            if head.size is None or cap < head.size:
                mails.update(await self._bodies([uid], wanted, cap))
                continue
            if batch and (batch_bytes + head.size > BATCH_BYTES or len(batch) >= BATCH_MAILS):
                mails.update(await self._bodies(batch, wanted, None))
                batch, batch_bytes = [], 0
            batch.append(uid)
            batch_bytes += head.size
        if batch:
            mails.update(await self._bodies(batch, wanted, None))
        return [mails[uid] for uid in wanted if uid in mails]

    async def _bodies(
        self, uids: list[int], heads: dict[int, _Head], cap: int | None
    ) -> dict[int, FetchedMail]:
        """Fetch the bytes (the first `cap`, or all) of `uids`; expunged ones are missing."""
        section = f"BODY.PEEK[]<0.{cap}>" if cap is not None else "BODY.PEEK[]"
        fetch = self._client.uid("fetch", _uid_set(uids), f"(UID {section})")
        response = _check(await self._call(fetch, "FETCH"), "FETCH")
        found: dict[int, FetchedMail] = {}
        for record in fetch_records(response.lines):
            uid = as_int(record.get("UID"))
            raw = record.get("BODY[]")
            if uid is None or uid not in heads or not isinstance(raw, bytes):
                continue
            head = heads[uid]
            flags = head.record.get("FLAGS")
            date = head.record.get("INTERNALDATE")
            found[uid] = FetchedMail(
                uid=uid,
                raw=raw,
                size=head.size,
                internaldate=_internaldate(date.encode()) if isinstance(date, str) else None,
                flags=frozenset(f for f in flags if isinstance(f, str))
                if isinstance(flags, list)
                else frozenset(),
                parts=tuple(head.parts) if head.parts is not None else None,
            )
        return found

    async def fetch_section(self, uid: int, section: str, offset: int, length: int) -> bytes | None:
        """Up to `length` bytes of part `section` of mail `uid` from `offset` (a partial
        FETCH, RFC 3501 §6.4.5): how an attachment is read without holding it whole.
        Returns None when the mail is gone; b"" past the end of the part."""
        item = f"BODY.PEEK[{section}]<{offset}.{length}>"
        fetch = self._client.uid("fetch", str(uid), f"(UID {item})")
        response = _check(await self._call(fetch, "FETCH"), "FETCH")
        for record in fetch_records(response.lines):
            if as_int(record.get("UID")) != uid:
                continue
            data = record.get(f"BODY[{section}]")
            if isinstance(data, bytes):
                return data
            return b"" if data is None or data == "" else None
        return None

    async def mark_seen(self, uids: list[int]) -> None:
        """Set \\Seen on `uids` (the selected folder) in one command."""
        if not uids:
            return
        store = self._client.uid("store", _uid_set(uids), r"+FLAGS.SILENT (\Seen)")
        _check(await self._call(store, "STORE"), "STORE")

    async def internaldates(self, uids: list[int]) -> dict[int, datetime]:
        """INTERNALDATE of each of `uids` (for the UIDVALIDITY cut-off)."""
        if not uids:
            return {}
        fetch = self._client.uid("fetch", ",".join(map(str, uids)), "(UID INTERNALDATE)")
        response = _check(await self._call(fetch, "FETCH"), "FETCH")
        dates: dict[int, datetime] = {}
        for line in response.lines:
            if not isinstance(line, bytes):
                continue
            found, date = _FETCH_UID_RE.search(line), _FETCH_DATE_RE.search(line)
            parsed = _internaldate(date.group(1)) if date else None
            if found and parsed:
                dates[int(found.group(1))] = parsed
        return dates

    async def idle(self, timeout: float) -> bool:
        """Wait in IDLE (RFC 2177) until the folder changes or `timeout` passes.

        Returns True when the server announced a change. Raises ImapError if the server
        refuses IDLE, says BYE, or the connection drops meanwhile.
        """
        protocol = self._client.protocol
        _drain(protocol.idle_queue)
        idle_task = asyncio.ensure_future(self._client.idle())
        try:
            ack = asyncio.ensure_future(protocol.wait_for_idle_response())
            closed = asyncio.ensure_future(self.closed.wait())
            await asyncio.wait(
                {idle_task, ack, closed},
                timeout=self.timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            ack.cancel()
            closed.cancel()
            if self.closed.is_set():
                raise ImapError("IDLE: the connection was closed")
            if not self._client.has_pending_idle():
                raise ImapError("the server refused IDLE")
            # a change reported just before IDLE began is not announced again
            changed = self._changed or await self._wait_push(protocol.idle_queue, timeout)
            self._client.idle_done()
            _check(await self._call(asyncio.shield(idle_task), "IDLE"), "IDLE")
            return changed
        finally:
            if not idle_task.done():
                if self._client.has_pending_idle() and not self.closed.is_set():
                    self._client.idle_done()  # leave IDLE so a LOGOUT can follow
                idle_task.cancel()
            elif not idle_task.cancelled():
                idle_task.exception()  # retrieved: the refusal is reported above

    async def _wait_push(self, queue: asyncio.Queue[list[bytes]], timeout: float) -> bool:
        """True on a mailbox change, False on timeout; ImapError on BYE or a lost link."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        closed = asyncio.ensure_future(self.closed.wait())
        getter: asyncio.Future[list[bytes]] | None = None
        try:
            while (remaining := deadline - loop.time()) > 0:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, closed}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    if closed in done:
                        raise ImapError("the connection was closed")
                    return False
                lines = getter.result()
                pushed = [line for line in lines if isinstance(line, bytes)]
                if any(line.upper().startswith(b"BYE") for line in pushed):
                    raise ImapError("the server closed the connection (BYE)")
                if any(_PUSH_RE.match(line) for line in pushed):
                    return True
            return False
        finally:
            closed.cancel()
            if getter is not None and not getter.done():
                getter.cancel()

    async def noop(self) -> None:
        """Poke the server, which then reports new mail (polling without IDLE)."""
        _check(await self._call(self._client.noop(), "NOOP"), "NOOP")

    async def append(self, folder: str, message: bytes) -> None:
        """Store `message` in `folder` marked as read (a Sent copy), creating the folder
        when the server says it does not exist yet ([TRYCREATE], RFC 3501 §6.3.11)."""
        what = f"APPEND {folder}"
        append = self._client.append(message, mailbox=_quote(folder), flags=r"(\Seen)")
        response = await self._call(append, what)
        if response.result != "OK" and "TRYCREATE" in _text(response).upper():
            _check(await self._call(self._client.create(_quote(folder)), "CREATE"), "CREATE")
            append = self._client.append(message, mailbox=_quote(folder), flags=r"(\Seen)")
            response = await self._call(append, what)
        _check(response, what)

    async def logout(self) -> None:
        """Log out politely, within the timeout; the transport is closed in any case."""
        try:
            if not self.closed.is_set():
                with contextlib.suppress(aioimaplib.AioImapException, OSError, TimeoutError):
                    await within(self._client.logout(), self.timeout)
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the connection at once (no LOGOUT): for errors and cancellation."""
        transport = self._client.protocol.transport
        if transport is not None:
            transport.close()
        self._client._client_task.cancel()


def _uids(response: aioimaplib.Response, *, above: int) -> list[int]:
    uids: set[int] = set()
    for line in response.lines[:-1]:
        if isinstance(line, bytes):
            uids.update(int(token) for token in line.split() if token.isdigit())
    return sorted(uid for uid in uids if uid > above)


def _uid_set(uids: list[int]) -> str:
    """`1:3,7` for [1, 2, 3, 7]: a long catch-up stays a short command line."""
    ranges: list[str] = []
    ordered = sorted(set(uids))
    start = previous = ordered[0]
    for uid in [*ordered[1:], None]:
        if uid is not None and uid == previous + 1:
            previous = uid
            continue
        ranges.append(f"{start}:{previous}" if previous != start else str(start))
        if uid is not None:
            start = previous = uid
    return ",".join(ranges)


def _quote(folder: str) -> str:
    """An IMAP quoted string for folder names with spaces or quotes."""
    if re.fullmatch(r"[A-Za-z0-9_./-]+", folder):
        return folder
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _drain(queue: asyncio.Queue[list[bytes]]) -> None:
    """Forget pushes from an earlier IDLE, already covered by the sync that followed."""
    while not queue.empty():
        queue.get_nowait()
