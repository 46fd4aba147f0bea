"""Room archive benchmark: MAM page latency on a large archive, and the cost of archiving.

* MAM, on SQLite and on PostgreSQL (component/devstack): 200,000 lines of one user's
  room, written through the MUC engine and the batched writer (whose rate is reported),
  then pages of 50 as a client asks for them: the last page, pages before and after
  random ids, and a start/end window. Timed from the parsed query to the built result
  stanzas (component.mam with a discarding send), p50 and p99. Also printed: the
  database's bytes per archived line (tables and indexes), this process's RSS as the
  archive grows (it holds the archive as the gateway does), and the query plans.
* Burst: an IRC peer sends a burst of channel lines to a user joined through our
  gateway (its own process, Prosody, ngIRCd as in irc_vs_biboumi.py), with the archive
  on and off, in alternating rounds: messages/s as the XMPP client receives them
  (median of the rounds) and the gateway's CPU time per message, which the other
  processes on a busy machine disturb less than the rate.

    .venv/bin/python bench/archive_bench.py [--lines 200000] [--queries 500]
        [--burst 2000] [--rounds 3] [--only mam|burst] [--databases sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from crowd import rss_kib
from slixmpp import JID, Iq
from slixmpp.xmlstream import ET
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bridges import events
from bridges.irc import IrcBridge
from bridges.irc.devstack import NgIrcd
from bridges.irc.options import IrcOptions
from component.archive import Archive
from component.crypto import SecretBox, generate_key
from component.db import create_engine, upgrade
from component.devstack.postgres import Postgres
from component.devstack.prosody import Prosody
from component.mam import RSM_NS, ArchiveQueries
from component.models import ArchiveRow
from component.muc import MAM_NS, GroupChats
from component.store import Store

sys.path.insert(0, str(Path(__file__).parent))
from irc_vs_biboumi import CHANNEL, IrcPeer, start_ours

USER = "bench@localhost"
PAGE = 50
PLANNED = (
    "SELECT stanza_id, body FROM archive WHERE account_id = :account AND room = :room"
    " AND (sent, id) < (:sent, :id) ORDER BY sent DESC, id DESC LIMIT 51"
)
"""What a page before an id asks the database (component.archive.Archive.page)."""


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * share) - 1)]


def rss_mib(pid: int | str = "self") -> float:
    return rss_kib(pid) / 1024


def mam_query(rsm: dict[str, str], fields: dict[str, str] | None = None) -> Iq:
    iq = Iq()
    iq["from"], iq["type"] = f"{USER}/pc", "set"
    query = ET.SubElement(iq.xml, f"{{{MAM_NS}}}query")
    if fields:
        form = ET.SubElement(query, "{jabber:x:data}x", {"type": "submit"})
        for var, value in fields.items():
            field = ET.SubElement(form, "{jabber:x:data}field", {"var": var})
            ET.SubElement(field, "{jabber:x:data}value").text = value
    page = ET.SubElement(query, f"{{{RSM_NS}}}set")
    ET.SubElement(page, f"{{{RSM_NS}}}max").text = str(PAGE)
    for name, value in rsm.items():
        ET.SubElement(page, f"{{{RSM_NS}}}{name}").text = value or None
    return iq


async def database_bytes(engine: AsyncEngine, path: Path | None) -> int:
    """Tables and indexes of the archive (the SQLite file after a WAL checkpoint)."""
    async with engine.connect() as db:
        if path is not None:
            await db.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
            return path.stat().st_size
        size = await db.execute(
            text(
                "SELECT pg_total_relation_size('archive')"
                " + pg_total_relation_size('archive_legacy_ids')"
            )
        )
        return int(size.scalar_one())


async def query_plan(engine: AsyncEngine, room: str, sent: datetime, row_id: int) -> str:
    async with engine.connect() as db:
        sqlite = engine.dialect.name == "sqlite"
        explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN (ANALYZE, COSTS OFF) "
        rows = await db.execute(
            text(explain + PLANNED),
            {"account": 1, "room": room, "sent": sent, "id": row_id},
        )
        plan = [str(row[-1]) for row in rows]
    return " | ".join(line.strip() for line in plan if line.strip())


async def mam_latency(url: str, path: Path | None, lines: int, queries: int) -> dict[str, str]:
    engine = create_engine(url)
    await upgrade(engine)
    await Store(engine, SecretBox(generate_key())).save_account(USER, "irc", settings={})
    archive = Archive(engine, "irc", max_days=0)
    archive.start()
    bridge = IrcBridge(IrcOptions())
    sent: list[object] = []
    groups = GroupChats(lambda stanza: None, "irc.localhost", bridge, archive)
    room = bridge.parse_address(f"{CHANNEL}%irc.example.org")
    start = datetime.now(UTC) - timedelta(days=1)
    rss: list[str] = []
    began = time.perf_counter()
    for n in range(lines):  # through the MUC engine, as live lines are
        moment = start + timedelta(milliseconds=n * 100)
        text_ = f"line {n} " + "x" * 60
        await groups.on_event(USER, events.Message(room, text_, nick=f"n{n % 40}", sent=moment))
        if n % 5000 == 4999:
            await archive.flush()  # a burst at a time, as the writer sees them live
        if (n + 1) % (lines // 4) == 0:
            await archive.flush()
            gc.collect()
            rss.append(f"{rss_mib():.0f}")
    await archive.flush()
    write_rate = lines / (time.perf_counter() - began)
    size = await database_bytes(engine, path)
    async with engine.connect() as db:
        # In the archive's order: pages are cut in it (ids alone come in index order).
        in_order = select(ArchiveRow.stanza_id).order_by(ArchiveRow.sent, ArchiveRow.id)
        ids = list((await db.execute(in_order)).scalars())
        middle = (
            await db.execute(
                select(ArchiveRow.sent, ArchiveRow.id).where(ArchiveRow.id == lines // 2)
            )
        ).one()
    if engine.dialect.name == "postgresql":
        async with engine.begin() as db:
            await db.execute(text("ANALYZE"))  # what autovacuum does after a bulk load
    plan = await query_plan(engine, room.legacy_id, middle.sent, middle.id)
    mam = ArchiveQueries(groups, sent.append)
    room_jid = JID(str(groups.room_jid(room)))
    window_start = start + timedelta(milliseconds=lines * 50)
    window = {
        "start": window_start.isoformat(),
        "end": (window_start + timedelta(hours=1)).isoformat(),
    }
    kinds: dict[str, Callable[[], Iq]] = {
        "last page": lambda: mam_query({"before": ""}),
        "before a random id": lambda: mam_query({"before": random.choice(ids[PAGE:])}),
        "after a random id": lambda: mam_query({"after": random.choice(ids[:-PAGE])}),
        "start/end window": lambda: mam_query({}, window),
    }
    name = engine.dialect.name
    results = {
        f"{name}: lines archived": f"{lines:,} at {write_rate:,.0f} lines/s (batched writer)",
        f"{name}: bytes per archived line": f"{size / lines:,.0f} (tables and indexes)",
        f"{name}: RSS at 1/4, 2/4, 3/4, 4/4 of the lines": " / ".join(rss) + " MiB",
        f"{name}: plan of a page before an id": plan,
    }
    for kind, build in kinds.items():
        timings = []
        for _ in range(queries):
            iq = build()
            iq["to"] = room_jid
            sent.clear()
            began = time.perf_counter()
            await mam.query(iq, room)
            timings.append((time.perf_counter() - began) * 1000)
            assert len(sent) == PAGE + 1, len(sent)
        results[f"{name}: MAM page of {PAGE}, {kind}"] = (
            f"p50 {statistics.median(timings):.2f} ms, p99 {percentile(timings, 0.99):.2f} ms"
        )
    await archive.stop()
    await engine.dispose()
    return results


async def mam_on(databases: list[str], lines: int, queries: int) -> dict[str, str]:
    results: dict[str, str] = {}
    tmp = Path(tempfile.mkdtemp(prefix="xgw-archive-bench-"))
    if "sqlite" in databases:
        path = tmp / "archive.db"
        results |= await mam_latency(f"sqlite+aiosqlite:///{path}", path, lines, queries)
    if "postgresql" in databases:
        async with Postgres() as server:
            url = await server.create_database("archive_bench")
            results |= await mam_latency(url, None, lines, queries)
    return results


async def burst_rate(burst: int, archive_on: bool) -> tuple[float, float, bool]:
    """(messages/s, gateway CPU µs per message, in order) for one burst."""
    secret = "bench-secret"
    tmp = Path(tempfile.mkdtemp(prefix="xgw-archive-burst-"))
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(Prosody(components={"irc.localhost": secret}))
        irc = await stack.enter_async_context(NgIrcd(flood_throttling=False))
        core = {"archive": {"enabled": archive_on}}
        gateway = await start_ours(stack, tmp, server, irc, secret, core)
        peer = await IrcPeer.connect("127.0.0.1", irc.port, "peer", gateway.channel)
        user = await gateway.new_user(server, "bench")
        cpu = gateway.cpu_seconds()
        started = time.perf_counter()
        for n in range(burst):
            peer.send(f"PRIVMSG {gateway.channel} :irc {n}")
        await user.wait_count(burst, "irc ")
        got = user.received("irc ")
        elapsed = got[-1][0] - started
        cpu = gateway.cpu_seconds() - cpu
        in_order = [body for _, body in got] == [f"irc {n}" for n in range(burst)]
        user.disconnect()
        await peer.close()
    return burst / elapsed, cpu / burst * 1e6, in_order


async def bursts(burst: int, rounds: int) -> dict[str, str]:
    """Archive on and off in alternating rounds, so both see the same machine."""
    runs: dict[bool, list[tuple[float, float, bool]]] = {True: [], False: []}
    for _ in range(rounds):
        for archive_on in (True, False):
            runs[archive_on].append(await burst_rate(burst, archive_on))
    results = {}
    for archive_on, got in runs.items():
        rates = [rate for rate, _, _ in got]
        cpus = [cpu for _, cpu, _ in got]
        results[f"IRC→XMPP burst of {burst}, archive {'on' if archive_on else 'off'}"] = (
            f"{statistics.median(rates):,.0f} msg/s median of {rounds} "
            f"({', '.join(f'{r:,.0f}' for r in rates)}), "
            f"gateway CPU {statistics.median(cpus):.0f} µs/msg, "
            f"in order: {all(ok for _, _, ok in got)}"
        )
    on, off = (statistics.median(rate for rate, _, _ in runs[flag]) for flag in (True, False))
    cpu_on, cpu_off = (statistics.median(cpu for _, cpu, _ in runs[flag]) for flag in (True, False))
    # The kernel counts CPU in 10 ms ticks: a short burst may show none.
    cpu_ratio = f"{cpu_on / cpu_off:.0%}" if cpu_off else "too short a burst to compare"
    results["archive on / off"] = f"{on / off:.0%} of the rate, {cpu_ratio} of the CPU"
    return results


async def main(args: argparse.Namespace) -> None:
    results: dict[str, str] = {}
    if args.only in (None, "mam"):
        results |= await mam_on(args.databases.split(","), args.lines, args.queries)
    if args.only in (None, "burst"):
        results |= await bursts(args.burst, args.rounds)
    for key, value in results.items():
        print(f"{key:52} {value}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("mam", "burst"))
    parser.add_argument("--databases", default="sqlite,postgresql")
    asyncio.run(main(parser.parse_args()))
