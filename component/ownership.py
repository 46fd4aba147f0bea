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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

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
REPORT_EVERY = 30.0
"""Seconds between log lines saying how many users this instance owns, when changed."""

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
    """No session to stop (until a gateway sets `Ownership.on_lost`)."""


class Ownership:
    """This process's leases on the users of one bridge (see the module docstring).

    `on_lost(user)` (set by the gateway) stops the user's session; it runs before a
    lease is handed over, and when a lease turns out to have been taken (this process
    was seen dead).
    """

    def __init__(self, engine: AsyncEngine, instance_id: str, bridge: str) -> None:
        self.engine = engine
        self.me = instance_id
        self.bridge = bridge
        self.on_lost: Callable[[str], Awaitable[None]] = _nothing
        self.owned: set[str] = set()
        self._seen: dict[str, float] = {}
        """user → monotonic time this process last received a stanza of theirs."""
        self._seen_since_renewal: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._warned = -WARN_EVERY
        self._reported = (0.0, -1)
        self._gauge = metrics.OWNED_USERS.labels(bridge)

    def _params(self, **more: Any) -> dict[str, Any]:
        return {"bridge": self.bridge, "me": self.me, "ttl": LEASE_TTL, **more}

    def owns(self, user: str) -> bool:
        return user in self.owned

    def saw(self, user: str) -> None:
        """A stanza of `user` arrived here (cheap: the next renewal writes it)."""
        self._seen[user] = time.monotonic()
        self._seen_since_renewal.add(user)

    async def claim(self, user: str) -> bool:
        """Take `user`'s lease (waiting for a live holder to hand it over); False when
        another live process keeps it."""
        self.saw(user)
        if user in self.owned:
            return True
        if await self._take(user):
            return True
        async with self.engine.connect() as connection:
            holder = (
                await connection.execute(HOLDER, self._params(jid=user, window=RANDOM_WINDOW))
            ).first()
            await connection.execute(WANT, self._params(jid=user))
            await connection.commit()
        if holder is not None and holder.recent:
            self._warn_random(user, holder)
        deadline = time.monotonic() + HANDOVER_WAIT
        while time.monotonic() < deadline:
            await asyncio.sleep(HANDOVER_POLL)  # the holder renews once a second
            async with self.engine.connect() as connection:
                mine = (await connection.execute(MINE, self._params(jid=user))).scalar()
            if mine or await self._take(user):
                self._owned(user)
                log.info("%s: handed over to this instance", user)
                return True
        return False

    async def _take(self, user: str) -> bool:
        async with self.engine.connect() as connection:
            taken = (await connection.execute(CLAIM, self._params(jid=user))).first()
            await connection.commit()
        if taken is None:
            return False
        self._owned(user)
        return True

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
            "XMPP server spreads one user's stanzas over several connections (ejabberd's "
            "default routing). Set domain_balancing: {<component domain>: {type: "
            "bare_source, component_number: <cluster.slots>}} in ejabberd.yml, or run "
            "one active process (README: ejabberd with several active slots)",
            user, holder.host, holder.pid, holder.slot, RANDOM_WINDOW,
        )  # fmt: skip

    def start(self) -> None:
        self._task = asyncio.create_task(self._renewing(), name=f"ownership {self.bridge}")

    async def _renewing(self) -> None:
        while True:
            await asyncio.sleep(RENEW_INTERVAL)
            try:
                await self.renew()
            except Exception:  # the database is away: leases expire, others take over
                log.exception("%s: could not renew the users' leases", self.bridge)

    async def renew(self) -> None:
        """Extend every lease held, hand over what another process wants, stop what
        was taken."""
        seen, self._seen_since_renewal = list(self._seen_since_renewal), set()
        async with self.engine.connect() as connection:
            rows = (await connection.execute(RENEW, self._params(seen=seen))).all()
            await connection.commit()
        held = {row.jid for row in rows}
        for user in self.owned - held:
            log.warning("%s: another instance took this user over; stopping here", user)
            self.owned.discard(user)
            await self.on_lost(user)
        now = time.monotonic()
        for row in rows:
            if row.wanted_by is None or row.jid not in self.owned:
                continue
            if now - self._seen.get(row.jid, -RANDOM_WINDOW) < RANDOM_WINDOW:
                await self._keep(row.jid)
                continue
            self.owned.discard(row.jid)  # nothing may start for the user here from now
            await self.on_lost(row.jid)
            async with self.engine.connect() as connection:
                await connection.execute(HAND_OVER, self._params(jid=row.jid))
                await connection.commit()
            log.info("%s: handed over to instance %s", row.jid, row.wanted_by)
        self._gauge.set(len(self.owned))
        self._report(now)

    async def _keep(self, user: str) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(KEEP, self._params(jid=user))
            await connection.commit()

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
            async with self.engine.connect() as connection:
                await connection.execute(RELEASE, self._params())
                await connection.commit()
