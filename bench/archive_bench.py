"""Room archive benchmark: MAM page latency on a large archive, and the cost of archiving.

* MAM: 200,000 lines of one user's room on SQLite (written through the batched writer,
  whose rate is reported too), then pages of 50 as a client asks for them: the last
  page, pages before and after random ids, and a start/end window. Timed from the
  parsed query to the built result stanzas (component.mam with a discarding send),
  p50 and p99.
* Burst: an IRC peer sends a burst of channel lines to a user joined through our
  gateway (its own process, Prosody, ngIRCd as in irc_vs_biboumi.py), once with the
  archive on and once off: messages/s as the XMPP client receives them.

    .venv/bin/python bench/archive_bench.py [--lines 200000] [--queries 500] [--burst 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from slixmpp import JID, Iq
from slixmpp.xmlstream import ET

from bridges import events
from bridges.irc import IrcBridge
from bridges.irc.devstack import NgIrcd
from bridges.irc.options import IrcOptions
from component.archive import Archive, Filter, PageRequest
from component.crypto import SecretBox, generate_key
from component.db import create_engine, upgrade
from component.devstack.prosody import Prosody
from component.mam import RSM_NS, ArchiveQueries
from component.muc import MAM_NS, GroupChats
from component.store import Store

sys.path.insert(0, str(Path(__file__).parent))
from irc_vs_biboumi import CHANNEL, IrcPeer, start_ours

USER = "bench@localhost"
PAGE = 50


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * share) - 1)]


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


async def mam_latency(lines: int, queries: int) -> dict[str, str]:
    tmp = Path(tempfile.mkdtemp(prefix="xgw-archive-bench-"))
    engine = create_engine(f"sqlite+aiosqlite:///{tmp / 'archive.db'}")
    await upgrade(engine)
    await Store(engine, SecretBox(generate_key())).save_account(USER, "irc", settings={})
    archive = Archive(engine, "irc", max_days=0)
    archive.start()
    bridge = IrcBridge(IrcOptions())
    sent: list[object] = []
    groups = GroupChats(lambda stanza: None, "irc.localhost", bridge, archive)
    room = bridge.parse_address(f"{CHANNEL}%irc.example.org")
    start = datetime.now(UTC) - timedelta(days=1)
    began = time.perf_counter()
    for n in range(lines):  # through the MUC engine, as live lines are
        moment = start + timedelta(milliseconds=n * 100)
        text = f"line {n} " + "x" * 60
        await groups.on_event(USER, events.Message(room, text, nick=f"n{n % 40}", sent=moment))
        if n % 5000 == 4999:
            await archive.flush()  # a burst at a time, as the writer sees them live
    await archive.flush()
    write_rate = lines / (time.perf_counter() - began)
    everything = await archive.page(USER, room.legacy_id, Filter(), PageRequest(lines))
    ids = [line.stanza_id for line in everything.lines]
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
    results = {"lines archived": f"{lines:,} at {write_rate:,.0f} lines/s (batched writer)"}
    for name, build in kinds.items():
        timings = []
        for _ in range(queries):
            iq = build()
            iq["to"] = room_jid
            sent.clear()
            began = time.perf_counter()
            await mam.query(iq, room)
            timings.append((time.perf_counter() - began) * 1000)
            assert len(sent) == PAGE + 1, len(sent)
        results[f"MAM page of {PAGE}, {name}"] = (
            f"p50 {statistics.median(timings):.2f} ms, p99 {percentile(timings, 0.99):.2f} ms"
        )
    await archive.stop()
    await engine.dispose()
    return results


async def burst_rate(burst: int, archive_on: bool) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="xgw-archive-burst-"))
    secret = "s-ours"
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(Prosody(components={"irc.localhost": secret}))
        irc = await stack.enter_async_context(NgIrcd(flood_throttling=False))
        core = {"archive": {"enabled": archive_on}}
        gateway = await start_ours(stack, tmp, server, irc, secret, core)
        peer = await IrcPeer.connect("127.0.0.1", irc.port, "peer", gateway.channel)
        user = await gateway.new_user(server, "bench")
        started = time.perf_counter()
        for n in range(burst):
            peer.send(f"PRIVMSG {gateway.channel} :irc {n}")
        await user.wait_count(burst, "irc ")
        got = user.received("irc ")
        elapsed = got[-1][0] - started
        in_order = [body for _, body in got] == [f"irc {n}" for n in range(burst)]
        user.disconnect()
        await peer.close()
    return f"{burst / elapsed:,.0f} msg/s (in order: {in_order})"


async def main(lines: int, queries: int, burst: int) -> None:
    results = await mam_latency(lines, queries)
    for archive_on in (True, False):
        label = "on" if archive_on else "off"
        results[f"IRC→XMPP burst of {burst}, archive {label}"] = await burst_rate(burst, archive_on)
    for key, value in results.items():
        print(f"{key:44} {value}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--burst", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.lines, args.queries, args.burst))
