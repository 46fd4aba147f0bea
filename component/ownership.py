"""Which of several active processes runs a user's legacy session: a lease per user.

With `cluster.slots` above 1, ejabberd (`domain_balancing`, `type: bare_source`) sends
each user's stanzas to one of N component connections, and a process holds each slot
(component.leadership). A user's IRC connection, mail IDLE and outbox must live on the
process that receives the user's stanzas, and on no other: so the process that receives
a stanza from a user first takes the user's row in `user_owners` (for this bridge) and
only then lets anything start a session. The holder renews its rows every
`RENEW_INTERVAL` s; a row is free when it expired (`LEASE_TTL`), its holder is dead
(its lock connection gone from `pg_stat_activity`, component.leadership), or the holder
handed it over.

Handing over: the process that receives a stanza of a user a live process holds sets
`wanted_by` and waits up to `HANDOVER_WAIT` s; at its next renewal the holder stops the
user's session and writes the new owner in the same row, so the two never run the
session at once. That is how a user moves after a slot changes hands. A holder that
itself received the user's stanzas within `RANDOM_WINDOW` s keeps the user: both
processes receive them, which is ejabberd's default random routing, and the operator is
warned (the stanza that arrived at the other process is refused).

Users offline at start have no stanza to arrive: each process probes every registered
user when its component comes up (component.gateway), ejabberd routes each answer like
the user's other stanzas, and the process the answer reaches takes the user and starts
the sessions that run offline.

Lease queries do not take the store's turns (component.store): that queue has no
timeout on purpose (a thousand session starts after a failover must wait, not fail),
and those session starts fill it, while a lease query decides where a stanza goes and
must not wait behind them. So leases have a queue of their own, `CONNECTIONS` queries
at once on the pool's connections the store leaves free (`database_pool.max_overflow`),
and every query, its wait for a turn and a connection included, is bounded by
`QUERY_TIMEOUT`: a slow database then refuses the stanza (`DatabaseSlow`, a `wait`
error to the user) rather than holding the user's lane. The query itself runs on to
its end (cancelling a query mid-way can strand its connection), and a claim that
succeeds after its stanza gave up still counts (`on_gained`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bridges.timeouts import within
from component import metrics
from component.leadership import ALIVE

log = logging.getLogger(__name__)

LEASE_TTL = 15.0
"""Seconds a lease lasts unless renewed: the bound for a hung but connected holder."""
RENEW_INTERVAL = 1.0
"""Seconds between renewals; also how soon a holder hands a wanted user over."""
HANDOVER_WAIT = 3.0
"""Seconds a stanza waits for its user to be handed over before it is refused."""
HANDOVER_POLL = 0.1
RANDOM_WINDOW = 10.0
"""Seconds within which stanzas of one user at two processes mean random routing."""
WARN_EVERY = 60.0
"""Seconds between two warnings about random routing (one per process)."""
SILENT_SLOT_USERS = 10
"""Users per slot, at least, located without one answer reaching this process before
that silence says its connection gets no slot: with a slot of its own, the chance of
that is (1 - 1/slots) ** users, below 0.1 % from here."""
REPORT_EVERY = 30.0
"""Seconds between log lines saying how many users this instance owns, when changed."""
QUERY_TIMEOUT = 5.0
"""Seconds a lease query may take, its wait for a turn and a connection included,
before its stanza is refused: the bound on a routing decision while the database is
slow (a thousand claims after a failover take well under a second)."""
CONNECTIONS = 4
"""Lease queries of one bridge on the database at once."""
BACKLOG = 5_000
"""Lease queries waiting or running at most; more are refused at once, so that a hung
database does not pile up a task per stanza."""

T = TypeVar("T")


class DatabaseSlow(Exception):
    """A lease query did not end within `QUERY_TIMEOUT` (or too many wait): nothing is
    decided for the stanza, which is refused."""


CLAIM = text(f"""
INSERT INTO user_owners AS o (bridge, jid, instance, wanted_by, expires, seen)
VALUES (:bridge, :jid, :me, NULL, now() + make_interval(secs => :ttl), now())
ON CONFLICT (bridge, jid) DO UPDATE SET instance = :me, wanted_by = NULL,
    expires = EXCLUDED.expires, seen = now()
WHERE o.instance = :me OR o.expires < now()
    OR NOT EXISTS (SELECT 1 FROM gateway_instances i WHERE i.id = o.instance AND {ALIVE})
RETURNING o.instance""")
HOLDER = text("""
SELECT o.instance, o.seen > now() - make_interval(secs => :window) AS recent,
    i.host, i.pid, i.slot
FROM user_owners o LEFT JOIN gateway_instances i ON i.id = o.instance
WHERE o.bridge = :bridge AND o.jid = :jid""")
WANT = text("""
UPDATE user_owners SET wanted_by = :me
WHERE bridge = :bridge AND jid = :jid AND instance <> :me""")
MINE = text("SELECT instance = :me FROM user_owners WHERE bridge = :bridge AND jid = :jid")
RENEW = text("""
UPDATE user_owners SET expires = now() + make_interval(secs => :ttl),
    seen = CASE WHEN jid = ANY(:seen) THEN now() ELSE seen END
WHERE bridge = :bridge AND instance = :me
RETURNING jid, wanted_by""")
HAND_OVER = text("""
UPDATE user_owners SET instance = wanted_by, wanted_by = NULL,
    expires = now() + make_interval(secs => :ttl)
WHERE bridge = :bridge AND jid = :jid AND instance = :me AND wanted_by IS NOT NULL""")
KEEP = text("""
UPDATE user_owners SET wanted_by = NULL
WHERE bridge = :bridge AND jid = :jid AND instance = :me""")
RELEASE = text("DELETE FROM user_owners WHERE bridge = :bridge AND instance = :me")
SPREAD = text(f"""
SELECT count(*) FILTER (WHERE o.instance = :me) AS here,
    count(*) FILTER (WHERE o.instance <> :me) AS elsewhere,
    count(*) FILTER (WHERE o.instance IS NULL) AS nowhere,
    (SELECT count(*) FROM gateway_instances i WHERE i.role = 'active' AND {ALIVE}) AS active
FROM unnest(CAST(:users AS text[])) AS u(jid)
LEFT JOIN LATERAL (SELECT o.instance FROM user_owners o JOIN gateway_instances i
    ON i.id = o.instance WHERE o.bridge = :bridge AND o.jid = u.jid
    AND o.expires > now() AND {ALIVE}) o ON true""")
INSTANCES = text(f"""
SELECT i.id, i.host, i.pid, i.role, i.slot, i.since,
    (SELECT count(*) FROM user_owners o WHERE o.instance = i.id AND o.expires > now()) AS users
FROM gateway_instances i WHERE {ALIVE}
ORDER BY i.role, i.slot, i.since""")


@dataclass(frozen=True)
class Instance:
    """A live process on the database, as the operators' command lists it."""

    id: str
    host: str
    pid: int
    role: str
    slot: int | None
    since: datetime
    users: int


async def instances(engine: AsyncEngine) -> list[Instance]:
    """Every live instance on the database with how many users it owns (all bridges)."""
    async with engine.connect() as connection:
        rows = (await connection.execute(INSTANCES)).all()
    return [Instance(*row) for row in rows]


async def _nothing(_user: str) -> None:
    """No session to stop or start (until a gateway sets the hooks of `Ownership`)."""


class Ownership:
    """This process's leases on the users of one bridge (see the module docstring).

    `on_lost(user)` (set by the gateway) stops the user's session; it runs before a
    lease is handed over, and when a lease turns out to have been taken (this process
    was seen dead). `on_gained(user)` starts what runs for a user while offline, when
    a claim succeeded only after its stanza was refused (`DatabaseSlow`).
    """

    def __init__(
        self, engine: AsyncEngine, instance_id: str, bridge: str, domain: str, slots: int
    ) -> None:
        self.engine = engine
        self.me = instance_id
        self.bridge = bridge
        self.domain = domain
        """The component's domain, as ejabberd's `domain_balancing` names it."""
        self.slots = slots
        """`cluster.slots`, which must equal ejabberd's `component_number`."""
        self.on_lost: Callable[[str], Awaitable[None]] = _nothing
        self.on_gained: Callable[[str], Awaitable[None]] = _nothing
        self.owned: set[str] = set()
        self._seen: dict[str, float] = {}
        """user → monotonic time this process last received a stanza of theirs."""
        self._seen_since_renewal: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._warned = -WARN_EVERY
        self._reported = (0.0, -1)
        self._gauge = metrics.OWNED_USERS.labels(bridge)
        self._turns = asyncio.Semaphore(CONNECTIONS)
        self._in_flight = 0
        self._late: set[asyncio.Future[None]] = set()

    def _params(self, **more: Any) -> dict[str, Any]:
        return {"bridge": self.bridge, "me": self.me, "ttl": LEASE_TTL, **more}

    async def _query(
        self,
        work: Callable[[AsyncConnection], Awaitable[T]],
        late: Callable[[T], None] | None = None,
    ) -> T:
        """`work` on a connection of the pool, committed, within `QUERY_TIMEOUT` (see
        the module docstring); `late(result)` runs if it ends after that."""
        if self._in_flight >= BACKLOG:
            raise DatabaseSlow(f"{BACKLOG} lease queries wait for the database already")
        self._in_flight += 1
        task = asyncio.ensure_future(self._run(work))
        task.add_done_callback(self._ended)  # also if cancelled before it ran
        try:
            return await within(asyncio.shield(task), QUERY_TIMEOUT)
        except TimeoutError:
            if late is not None:
                task.add_done_callback(partial(_then, late))
            raise DatabaseSlow(f"no answer from the database within {QUERY_TIMEOUT:g} s") from None

    async def _run(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        async with self._turns, self.engine.connect() as connection:
            result = await work(connection)
            await connection.commit()
            return result

    def _ended(self, task: asyncio.Future[Any]) -> None:
        self._in_flight -= 1
        if not task.cancelled():
            task.exception()  # a failure after its caller gave up is no news: retrieved

    async def _execute(self, statement: Any, connection: AsyncConnection, **params: Any) -> Any:
        return await connection.execute(statement, self._params(**params))

    def owns(self, user: str) -> bool:
        return user in self.owned

    def saw(self, user: str) -> None:
        """A stanza of `user` arrived here (cheap: the next renewal writes it)."""
        self._seen[user] = time.monotonic()
        self._seen_since_renewal.add(user)

    async def claim(self, user: str) -> bool:
        """Take `user`'s lease (waiting for a live holder to hand it over); False when
        another live process keeps it. Raises DatabaseSlow (see `_query`)."""
        self.saw(user)
        if user in self.owned:
            return True
        if await self._take(user):
            return True
        holder = await self._query(partial(self._want, user))
        if holder is not None and holder.recent:
            self._warn_random(user, holder)
        deadline = time.monotonic() + HANDOVER_WAIT
        while time.monotonic() < deadline:
            await asyncio.sleep(HANDOVER_POLL)  # the holder renews once a second
            mine = await self._query(partial(self._execute, MINE, jid=user))
            if mine.scalar() or await self._take(user):
                self._owned(user)
                log.info("%s: handed over to this instance", user)
                return True
        return False

    async def _want(self, user: str, connection: AsyncConnection) -> Any:
        """Ask the holder for `user`; who it is (None: no row)."""
        holder = (await self._execute(HOLDER, connection, jid=user, window=RANDOM_WINDOW)).first()
        await self._execute(WANT, connection, jid=user)
        return holder

    async def _take(self, user: str) -> bool:
        return await self._query(partial(self._claim_row, user), partial(self._taken_late, user))

    async def _claim_row(self, user: str, connection: AsyncConnection) -> bool:
        taken = (await self._execute(CLAIM, connection, jid=user)).first() is not None
        if taken:  # here, not in the caller: a claim that outlives its wait counts too
            self._owned(user)
        return taken

    def _taken_late(self, user: str, taken: bool) -> None:
        """The claim of a refused stanza went through after all: start what runs."""
        if taken:
            task = asyncio.ensure_future(self.on_gained(user))
            self._late.add(task)
            task.add_done_callback(self._late.discard)

    def _owned(self, user: str) -> None:
        self.owned.add(user)
        self._gauge.set(len(self.owned))

    def _warn_random(self, user: str, holder: Any) -> None:
        now = time.monotonic()
        if now - self._warned < WARN_EVERY:
            return
        self._warned = now
        log.warning(
            "stanzas of %s reach this instance and %s pid %s (slot %s) within %g s: the "
            "XMPP server spreads one user's stanzas over several connections. Likely "
            "ejabberd.yml has no domain_balancing for %s (ejabberd's default routing "
            "picks a connection at random per stanza), or its type is source (a slot per "
            "resource, not per user). Set domain_balancing: {%s: {type: bare_source, "
            "component_number: %d}} (cluster.slots), or run one active process (README: "
            "ejabberd with several active slots)",
            user, holder.host, holder.pid, holder.slot, RANDOM_WINDOW, self.domain,
            self.domain, self.slots,
        )  # fmt: skip

    async def check_slots(self, users: list[str]) -> None:
        """After `users` were located (component.gateway): warn when ejabberd's
        `component_number` cannot equal `cluster.slots`, as far as where the answers
        went shows it.

        Nothing is concluded while a slot has no holder. With every slot held, a user
        whose answer reached no instance hashed to a slot ejabberd has and the gateway
        does not (ejabberd drops its stanzas): `component_number` is larger. A holder
        that got none of many answers while the others got them all is a connection
        ejabberd accepted beyond its slots (it routes nothing to those): smaller.
        """
        spread = (await self._query(partial(self._execute, SPREAD, users=users))).one()
        log.info(
            "%s: of %d users located, %d are owned here, %d by other instances, %d by "
            "none; %d of %d slots held",
            self.bridge, len(users), spread.here, spread.elsewhere, spread.nowhere,
            spread.active, self.slots,
        )  # fmt: skip
        if spread.active < self.slots:
            return
        if spread.nowhere:
            log.warning(
                "%d of %d users located reached no instance though all %d slots are "
                "held: ejabberd drops their stanzas. Likely ejabberd's component_number "
                "for %s is larger than cluster.slots (%d); they must be equal",
                spread.nowhere, len(users), self.slots, self.domain, self.slots,
            )  # fmt: skip
        elif not spread.here and spread.elsewhere >= SILENT_SLOT_USERS * self.slots:
            log.warning(
                "none of the %d users located reached this instance, all went to the "
                "others: ejabberd accepted this connection beyond its slots and routes "
                "nothing to it. Likely ejabberd's component_number for %s is smaller "
                "than cluster.slots (%d); they must be equal",
                len(users), self.domain, self.slots,
            )  # fmt: skip

    def start(self) -> None:
        self._task = asyncio.create_task(self._renewing(), name=f"ownership {self.bridge}")

    async def _renewing(self) -> None:
        while True:
            await asyncio.sleep(RENEW_INTERVAL)
            try:
                await self.renew()
            except DatabaseSlow as exc:  # leases last LEASE_TTL: the next renewal may do
                log.warning("%s: could not renew the users' leases: %s", self.bridge, exc)
            except Exception:  # the database is away: leases expire, others take over
                log.exception("%s: could not renew the users' leases", self.bridge)

    async def renew(self) -> None:
        """Extend every lease held, hand over what another process wants, stop what
        was taken."""
        seen, self._seen_since_renewal = list(self._seen_since_renewal), set()
        before = set(self.owned)  # a claim that ends while RENEW runs is not in its rows
        rows = (await self._query(partial(self._execute, RENEW, seen=seen))).all()
        held = {row.jid for row in rows}
        for user in (before & self.owned) - held:
            log.warning("%s: another instance took this user over; stopping here", user)
            self.owned.discard(user)
            await self.on_lost(user)
        now = time.monotonic()
        for row in rows:
            if row.wanted_by is None:
                continue
            if row.jid in self.owned:
                if now - self._seen.get(row.jid, -RANDOM_WINDOW) < RANDOM_WINDOW:
                    await self._query(partial(self._execute, KEEP, jid=row.jid))
                    continue
                self.owned.discard(row.jid)  # nothing may start for the user here from now
                await self.on_lost(row.jid)
            # a row held but not run here (a hand-over that failed half-way) goes too
            await self._query(partial(self._execute, HAND_OVER, jid=row.jid))
            log.info("%s: handed over to instance %s", row.jid, row.wanted_by)
        self._gauge.set(len(self.owned))
        self._report(now)

    def _report(self, now: float) -> None:
        at, count = self._reported
        if count != len(self.owned) and now - at >= REPORT_EVERY:
            self._reported = (now, len(self.owned))
            log.info("%s: this instance owns %d users", self.bridge, len(self.owned))

    async def stop(self) -> None:
        """Stop renewing and give every lease back (the sessions have stopped)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.owned.clear()
        self._gauge.set(0)
        with contextlib.suppress(Exception):  # dead database: the leases expire
            await self._query(partial(self._execute, RELEASE))


def _then(late: Callable[[T], None], done: asyncio.Future[T]) -> None:
    """Hand a query's result to `late` once it ended (nothing if it failed)."""
    if not done.cancelled() and done.exception() is None:
        late(done.result())
