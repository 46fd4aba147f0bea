"""Mail bridge benchmark against the real mail stack (not collected by pytest).

Run: `python bench/mail_bench.py` (from the repository root, as root, Dovecot
installed). It measures, at the bridge level (sessions → a recording sink, no XMPP):

* latency of one mail, from the MTA's acceptance (the mail is in the mailbox) and from
  the IDLE push (Dovecot delays pushes by about 0.5 s) to the delivered event, p50/p99;
* a burst of 500 mails to one user: wall time and mails per second;
* 100 users with one mail each: wall time until all are delivered;
* gateway RSS per user holding an idle IMAP connection;
* a mail with a 20 MB attachment: RSS rise while it streams from IMAP (partial FETCH,
  base64 decoded on the way, spooled to disk) and is PUT to a local HTTP server, and
  the upload's throughput.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

from bridges.timeouts import within

sys.path[:0] = [
    str(Path(__file__).resolve().parents[1]),
    str(Path(__file__).resolve().parents[1] / "tests" / "mail"),
]

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from mail_helpers import (  # noqa: E402
    MemoryStore,
    RecordingSink,
    inject,
    options_for,
    register_existing,
    simple_mail,
)

from bridges import events  # noqa: E402
from bridges.base import Account  # noqa: E402
from bridges.mail import MailBridge  # noqa: E402
from bridges.mail.devstack import MailServer  # noqa: E402
from bridges.mail.imap import ImapConnection  # noqa: E402
from bridges.mail.session import MailSession  # noqa: E402

SENDER = "bench@elsewhere.test"
pushes: list[float] = []


def _record_pushes() -> None:
    """Timestamp every IDLE push that announces new mail (benchmark instrumentation)."""
    original = ImapConnection._wait_push

    async def timed(self: ImapConnection, queue: Any, timeout: float) -> bool:
        changed = await original(self, queue, timeout)
        if changed:
            pushes.append(time.perf_counter())
        return changed

    ImapConnection._wait_push = timed  # type: ignore[method-assign]


class TimedSink(RecordingSink):  # type: ignore[misc]  # test helpers are not on mypy's path
    """Records when each message event arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    async def deliver(self, event: events.Event, *, state: Any = None) -> None:
        if isinstance(event, events.Message):
            self.times.append(time.perf_counter())
        await super().deliver(event, state=state)


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def started(bridge: MailBridge, account: Account, sink: RecordingSink) -> MailSession:
    session = bridge.create_session(account, sink, MemoryStore())
    await session.start()
    for watcher in session.watchers:
        await within(watcher.synced.wait(), 30)
    return session


async def latency(mail: MailServer, bridge: MailBridge, rounds: int = 40) -> None:
    account = await register_existing(bridge, mail, "lat")
    sink = TimedSink()
    session = await started(bridge, account, sink)
    to = mail.address("lat")
    from_accept, from_push = [], []
    try:
        for n in range(rounds):
            pushes.clear()
            await inject(mail, simple_mail(to, f"m{n}", "x"), to, SENDER)
            accepted = time.perf_counter()
            await sink.wait_count(events.Message, n + 1, timeout=30)
            from_accept.append((sink.times[-1] - accepted) * 1000)
            from_push.append((sink.times[-1] - pushes[0]) * 1000)
    finally:
        await session.stop()
    print(
        f"latency over {rounds} mails: accepted->event p50 {pct(from_accept, 0.5):.0f} ms, "
        f"p99 {pct(from_accept, 0.99):.0f} ms; IDLE push->event p50 "
        f"{pct(from_push, 0.5):.1f} ms, p99 {pct(from_push, 0.99):.1f} ms"
    )


async def burst(mail: MailServer, bridge: MailBridge, count: int = 500) -> None:
    account = await register_existing(bridge, mail, "burst")
    sink = TimedSink()
    session = await started(bridge, account, sink)
    to = mail.address("burst")
    gate = asyncio.Semaphore(8)

    async def one(n: int) -> None:
        async with gate:
            await inject(mail, simple_mail(to, f"b{n}", f"burst {n}"), to, SENDER)

    try:
        begin = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(count)))
        injected = time.perf_counter()
        try:
            await sink.wait_count(events.Message, count, timeout=60)
        except TimeoutError:
            print("only", len(sink.of(events.Message)), "delivered")
            raise
        done = sink.times[-1]
    finally:
        await session.stop()
    subjects = [e.subject for e in sink.of(events.Message)]
    assert len(subjects) == len(set(subjects)) == count, "duplicates or losses"
    print(
        f"burst of {count} mails to one user: injected in {injected - begin:.2f} s, all "
        f"delivered after {done - begin:.2f} s ({count / (done - begin):.0f} mails/s end to end)"
    )

    # The same mails again, but waiting while the gateway was down: bridge-bound speed.
    fresh = TimedSink()
    first_mark = sink.states[0]["folders"]["INBOX"]
    catch_up = Account(
        account.user,
        "mail",
        account.settings,
        account.secrets,
        state={"folders": {"INBOX": {**first_mark, "last_uid": 0}}},
    )
    begin = time.perf_counter()
    session = await started(bridge, catch_up, fresh)
    try:
        await fresh.wait_count(events.Message, count, timeout=300)
    finally:
        await session.stop()
    took = fresh.times[-1] - begin
    print(f"catch-up of {count} mails at start: {took:.2f} s ({count / took:.0f} mails/s)")


async def many_users(mail: MailServer, bridge: MailBridge, users: int = 100) -> None:
    names = [f"u{n:03d}" for n in range(users)]
    accounts = [await register_existing(bridge, mail, name) for name in names]
    sink = TimedSink()
    before = rss_kib()
    sessions = await asyncio.gather(*(started(bridge, a, sink) for a in accounts))
    await asyncio.sleep(1)  # let buffers settle before measuring memory
    after = rss_kib()
    try:
        begin = time.perf_counter()
        await asyncio.gather(
            *(
                inject(mail, simple_mail(mail.address(n), n, "hello"), mail.address(n), SENDER)
                for n in names
            )
        )
        await sink.wait_count(events.Message, users, timeout=120)
        done = sink.times[-1]
    finally:
        await asyncio.gather(*(s.stop() for s in sessions))
    print(f"{users} users, one mail each: all delivered after {done - begin:.2f} s")
    print(
        f"gateway RSS with {users} idle IMAP sessions: +{(after - before) / 1024:.1f} MiB, "
        f"{(after - before) / users:.0f} KiB per user"
    )


class HttpSink(TimedSink):
    """A sink whose files go by HTTP PUT to a local server that counts and drops them."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.files = PutFiles(url)


class PutFiles:
    """A `FileTransfer` that streams each upload to `url` with aiohttp, as the gateway's."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seconds = 0.0

    async def upload_limit(self) -> int | None:
        return None

    async def upload(self, path: Path, name: str, content_type: str) -> str:
        begin = time.perf_counter()
        with path.open("rb") as body:

            async def chunks() -> Any:
                while chunk := body.read(256 * 1024):
                    yield chunk

            headers = {"Content-Length": str(path.stat().st_size)}
            async with (
                aiohttp.ClientSession() as http,
                http.put(self.url, data=chunks(), headers=headers) as response,
            ):
                assert response.status == 201
        self.seconds = time.perf_counter() - begin
        return f"{self.url}/{name}"

    async def download(self, url: str, directory: Path, max_bytes: int) -> Any:
        raise NotImplementedError


async def attachment(mail: MailServer, bridge: MailBridge, size: int = 20 * 1024 * 1024) -> None:
    received = 0

    async def put(request: web.Request) -> web.Response:
        nonlocal received
        async for chunk in request.content.iter_chunked(256 * 1024):
            received += len(chunk)
        return web.Response(status=201)

    app = web.Application(client_max_size=0)
    app.router.add_put("/upload", put)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    account = await register_existing(bridge, mail, "big")
    to = mail.address("big")
    msg = simple_mail(to, "big", "a big file")
    msg.add_attachment(os.urandom(size), maintype="application", subtype="zip", filename="b.zip")
    await inject(mail, msg, to, SENDER)
    del msg
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    sink = HttpSink(f"http://127.0.0.1:{port}/upload")
    before = rss_kib()
    peak = before
    # a watermark before the big mail: it is delivered as a catch-up
    account.state = {
        "folders": {
            "INBOX": {"uidvalidity": 0, "last_uid": 0, "last_date": "2000-01-01T00:00:00+00:00"}
        }
    }
    session = bridge.create_session(account, sink, MemoryStore())
    begin = time.perf_counter()
    await session.start()
    try:
        while len(sink.of(events.Message)) < 2:
            peak = max(peak, rss_kib())
            await asyncio.sleep(0.01)
    finally:
        await session.stop()
        await runner.cleanup()
    took = time.perf_counter() - begin
    assert received == size, (received, size)
    print(
        f"{size // (1024 * 1024)} MB attachment: delivered as a file after {took:.2f} s, "
        f"RSS +{(peak - before) / 1024:.1f} MiB at peak; HTTP PUT "
        f"{size / sink.files.seconds / 1e6:.0f} MB/s, IMAP to URL {size / took / 1e6:.1f} MB/s"
    )


async def main() -> None:
    _record_pushes()
    async with MailServer() as mail:
        # All mailboxes first: Dovecot re-reads its passwd-file at most once a second.
        for name in ["lat", "burst", *(f"u{n:03d}" for n in range(100))]:
            await mail.add_user(name, f"{name}-secret")
        await asyncio.sleep(1.1)
        bridge = MailBridge(options_for(mail))
        if "--attachment" in sys.argv:
            await mail.add_user("big", "big-secret")
            await asyncio.sleep(1.1)
            await attachment(mail, bridge)
            return
        await latency(mail, bridge)
        await burst(mail, bridge)
        await many_users(mail, bridge)
        await mail.add_user("big", "big-secret")
        await asyncio.sleep(1.1)
        await attachment(mail, bridge)


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main())
