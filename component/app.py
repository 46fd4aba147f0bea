"""Putting the process together: database, bridges, one Gateway and Link per bridge.

Also the place for signals: SIGTERM and SIGINT stop every session cleanly (users told,
legacy connections closed, database engine disposed) before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from bridges.timeouts import within
from component.archive import Archive
from component.config import Config, LoadedBridge
from component.db import create_engine, prepare
from component.gateway import Gateway
from component.leadership import first_of, leadership_for
from component.link import Link
from component.memory import release_startup_garbage
from component.metrics import serve_metrics
from component.ownership import Ownership
from component.ratelimit import RateLimit
from component.store import Store

log = logging.getLogger(__name__)

STRAGGLER_GRACE = 2.0
"""Seconds queries in flight get to finish at a stop, and cancelled tasks to end."""
STRANDED_AFTER = 10.0
"""Seconds a slot holder's component may stay disconnected from its XMPP server before
it gives the slot to a waiting standby (`App.stranded`)."""
LINK_POLL = 1.0


@dataclass
class App:
    """Every running component of one gateway process."""

    config: Config
    bridges: list[LoadedBridge]
    engine: AsyncEngine | None = None
    gateways: list[Gateway] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    archives: list[Archive] = field(default_factory=list)
    instance_id: str = ""
    """This process among the others on the database (component.leadership)."""
    owns_loop: bool = False
    """True when nothing else runs in this event loop (`xmpp-gateway run`): then `stop`
    also ends every task the sessions left behind."""
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _tidy: asyncio.Future[None] | None = None
    _running_before: set[asyncio.Task[object]] = field(default_factory=set)
    """Tasks of whoever runs the App (not its own), which `stop` leaves alone."""

    async def start(self) -> None:
        """Check (or, on an empty database, create) the schema, build and connect gateways."""
        self._running_before = asyncio.all_tasks()
        pool = self.config.database_pool
        self.engine = create_engine(self.config.database_url, pool)
        if await prepare(self.engine):
            log.info("created the database schema in an empty database")
        store = Store(self.engine, self.config.secret_box(), concurrency=pool.size)
        server = self.config.server
        limit = self.config.registration_limit
        registration_limit = RateLimit(limit.per_user, limit.total)  # one for all bridges
        for loaded in self.bridges:
            ownership = None
            if self.config.cluster.slots > 1:
                ownership = Ownership(
                    self.engine,
                    self.instance_id,
                    loaded.name,
                    loaded.section.jid,
                    self.config.cluster.slots,
                )
            archive = None
            if self.config.archive.enabled and loaded.cls.supports_groups:
                archive = Archive(self.engine, loaded.name, self.config.archive.max_days)
                archive.start()
                self.archives.append(archive)
            gateway = Gateway(
                bridge=loaded.cls(loaded.options),
                jid=loaded.section.jid,
                secret=loaded.section.secret.get_secret_value(),
                store=store,
                allowed_domains=self.config.allowed_domains,
                archive=archive,
                history_stanzas=self.config.history.default_stanzas,
                registration_limit=registration_limit,
                files=self.config.files,
                ownership=ownership,
                admins=self.config.admins,
                # With several slots ejabberd routes a marker by its balancing (the
                # `from`), not back to the connection that wrote it: no window then.
                write_window=self.config.write_window if ownership is None else 0,
            )
            link = Link(
                gateway,
                server.host,
                server.port,
                self.config.reconnect,
                option=f"bridges.{loaded.name}",
            )
            self.gateways.append(gateway)
            self.links.append(link)
            self._tasks.append(asyncio.create_task(link.run(), name=f"link {loaded.section.jid}"))
            log.info("%s: serving the %s bridge", loaded.section.jid, loaded.name)
        self._tidy = asyncio.ensure_future(self._release_once_connected())

    async def connected(self) -> None:
        """Wait until every component has its stream to the server."""
        await asyncio.gather(*(gateway.link_up.wait() for gateway in self.gateways))

    async def _release_once_connected(self) -> None:
        """Start-up's garbage goes back to the system once every component is up (a
        task of its own: a slot holder that never connects must still get on)."""
        await self.connected()
        release_startup_garbage()

    async def stranded(self, standby_waits: Callable[[], Awaitable[bool]]) -> None:
        """Return once a component has had no stream to its XMPP server for
        `STRANDED_AFTER` s while a standby waits.

        With `cluster.slots`, a slot holder whose ejabberd node is down keeps its slot
        lock and reconnects to that node only: the slot's users are dropped by the
        cluster until the node is back. Giving the slot up lets a standby connected to
        another node take it (the freed slot goes to the next connection).
        """
        down_since: dict[int, float] = {}
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(LINK_POLL)  # a seconds-scale bound: polling is cheap
            now = loop.time()
            for n, gateway in enumerate(self.gateways):
                if gateway.link_up.is_set():
                    down_since.pop(n, None)
                    continue
                since = down_since.setdefault(n, now)
                if now - since >= STRANDED_AFTER and await standby_waits():
                    log.warning(
                        "%s: no connection to the XMPP server at %s:%d for %g s and a "
                        "standby waits: giving up this slot",
                        gateway.boundjid.bare, self.config.server.host,
                        self.config.server.port, STRANDED_AFTER,
                    )  # fmt: skip
                    return

    async def stop(self, timeout: float | None = None) -> None:
        """Stop everything, waiting at most `timeout` (else `shutdown_timeout`) s for
        the sessions."""
        timeout = self.config.shutdown_timeout if timeout is None else timeout
        if self._tidy is not None:
            self._tidy.cancel()
        # Side by side: each gateway's shutdown is bounded, and so is their sum then.
        await asyncio.gather(*(gateway.shutdown(timeout) for gateway in self.gateways))
        for link in self.links:
            await link.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.owns_loop:
            await self._end_stragglers()
        for archive in self.archives:
            await archive.stop()  # what the writer still holds is committed
        if self.engine is not None:
            await self.engine.dispose()
        log.info("stopped")

    async def _end_stragglers(self) -> None:
        """End what sessions left running, before the database closes.

        asyncio.run would cancel them only after `stop` returns, with the engine
        disposed. A task cancelled in the middle of a query cancels the pool's rollback
        too: its connection is stranded, and aiosqlite's non-daemon thread keeps the
        process from exiting. So queries in flight finish first (bounded), then the
        rest (timers, readers) is cancelled, and a task that ignores that is named.
        """
        keep = {
            *self._running_before,
            asyncio.current_task(),
            *(t for a in self.archives for t in a.tasks),
        }
        stragglers = [task for task in asyncio.all_tasks() if task not in keep]
        if not stragglers:
            return
        await self._queries_finished(STRAGGLER_GRACE)
        # AsyncConnection closes in a shielded task: whoever used the connection resumes
        # one loop turn after it is back in the pool. That turn is theirs, not a cut.
        await asyncio.sleep(0)
        log.info("ending %d tasks still running after the sessions stopped", len(stragglers))
        for task in stragglers:
            task.cancel()
        _ended, stuck = await asyncio.wait(stragglers, timeout=STRAGGLER_GRACE)
        for task in stuck:
            log.warning("task %s did not end when cancelled: %s", task.get_name(), task)

    async def _queries_finished(self, timeout: float) -> None:
        """Wait until no database connection is checked out, at most `timeout` s."""
        pool = self.engine.pool if self.engine is not None else None
        checked_out = getattr(pool, "checkedout", None)
        if checked_out is None or not checked_out():
            return
        idle, loop = asyncio.Event(), asyncio.get_running_loop()

        def look() -> None:
            if not checked_out():
                idle.set()

        def checked_in(*_: object) -> None:
            loop.call_soon(look)  # the pool counts the connection back after this event

        event.listen(pool, "checkin", checked_in)
        try:
            with contextlib.suppress(TimeoutError):
                await within(idle.wait(), timeout)
        finally:
            event.remove(pool, "checkin", checked_in)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, replacing asyncio's own SIGINT handling.

    Install it before any start-up work: asyncio's default cancels the main task on
    Ctrl-C, and a cancellation landing in the middle of starting daemons can leave the
    process half started and deaf to further signals.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve(
    config: Config,
    bridges: list[LoadedBridge],
    on_connected: Callable[[], None] | None = None,
    stop: asyncio.Event | None = None,
    owns_loop: bool = False,
) -> None:
    """Run until SIGTERM or SIGINT; `on_connected` runs once every component is up.

    With other processes on the same database, serve only while holding the lock
    (component/leadership.py), standing by before and after.
    """
    stop = stop or stop_on_signals()
    async with leadership_for(config) as leadership:
        if config.metrics.port:  # a standby's metrics say it stands by
            serve_metrics(config.metrics.host, config.metrics.port)
        while await leadership.acquire(stop):
            stranded: asyncio.Future[None] | None = None
            app = App(config, bridges, instance_id=leadership.instance_id, owns_loop=owns_loop)
            try:
                await app.start()
                # What start-up made (modules, SQLAlchemy's and slixmpp's tables) stays
                # for good: out of the collector's sight, a full collection in a burst
                # took a few ms instead of the 40-170 ms every user waited for it.
                gc.collect()
                gc.freeze()
                await leadership.register()  # a first start has just created the table
                if on_connected is not None:
                    await first_of(app.connected(), stop.wait(), leadership.lost.wait())
                    if all(gateway.link_up.is_set() for gateway in app.gateways):
                        on_connected()
                        on_connected = None
                ends: list[Awaitable[object]] = [stop.wait(), leadership.lost.wait()]
                if config.cluster.slots > 1:
                    stranded = asyncio.ensure_future(app.stranded(leadership.standby_waits))
                    ends.append(stranded)
                await first_of(*ends)
                log.info("stopping on signal" if stop.is_set() else "standing down")
            finally:
                await leadership.standing_down()
                await app.stop(await leadership.stop_timeout(config.shutdown_timeout))
                if stranded is not None and stranded.done() and not stranded.cancelled():
                    await leadership.give_up()  # once the sessions stopped here
