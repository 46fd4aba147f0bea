"""Sticky scale-out benchmark: aggregate IRC → XMPP throughput with 1, 2 and 3 slots.

For each slot count N: ejabberd with `domain_balancing: {irc.localhost: {type:
bare_source, component_number: N}}`, ngIRCd (no flood throttling), PostgreSQL and N
`xmpp-gateway run` processes with `cluster: {slots: N}`. `--users` XMPP users (raw-socket
clients, cheaper than the gateways they measure) register with the IRC bridge and join
one channel; ejabberd's hash puts each on one process, which opens that user's IRC
connection. An IRC peer then says `--burst` lines in the channel, so each process
relays every line once per user it owns. Per round it prints the aggregate stanzas/s
reaching the users, and per process the users it owns and its CPU seconds (from /proc)
per 1,000 stanzas it delivered: what stays flat as processes are added is what scales
to more machines. On the shared 2-core machine the processes, ejabberd, ngIRCd and the
clients compete for the same cores, so the aggregate cannot grow much here.

With `--cluster`, each slot count is measured a second time right after, on a
two-node ejabberd cluster (component.devstack.ejabberd.EjabberdCluster): the
processes and the users alternate between the nodes, so many stanzas cross from one
node to the other.

    .venv/bin/python bench/scaleout_bench.py [--slots 1 2 3] [--users 12] [--burst 500]
        [--cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
from crowd import cpu_seconds, irc_gateway_config
from irc_vs_biboumi import PASSWORD, IrcPeer, RoomUser

from bridges.irc.devstack import NgIrcd
from component.devstack.ejabberd import Ejabberd, EjabberdCluster
from component.devstack.gateway import GatewayProcess
from component.devstack.postgres import Postgres

IRC_JID = "irc.localhost"
SECRET = "irc-secret"
CHANNEL = "#scale"
ROOM = f"{CHANNEL}%127.0.0.1@{IRC_JID}"


async def settled(pids: list[int]) -> list[float]:
    """CPU seconds of each process once all have been idle for 0.3 s (at most 5 s)."""
    last, still = [cpu_seconds(pid) for pid in pids], 0
    for _ in range(50):
        await asyncio.sleep(0.1)
        now = [cpu_seconds(pid) for pid in pids]
        still = still + 1 if now == last else 0
        if still >= 3:
            break
        last = now
    return last


def config(ejabberd: Ejabberd, irc: NgIrcd, url: str, slots: int) -> dict[str, Any]:
    return irc_gateway_config(
        ejabberd,
        irc,
        url,
        SECRET,
        domain=IRC_JID,
        irc_options={"flood_rate": 1_000_000, "flood_burst": 1_000_000},
        cluster={"slots": slots},
        archive={"enabled": False},  # the relay, not the archive's writes
    )


async def owned(dsn: str) -> dict[int, int]:
    """pid → users it owns (the leases)."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT i.pid, count(*) AS n FROM user_owners o JOIN gateway_instances i"
            " ON i.id = o.instance GROUP BY i.pid"
        )
    finally:
        await connection.close()
    return {row["pid"]: row["n"] for row in rows}


async def measure(
    slots: int, users: int, burst: int, rounds: int, run_dir: Path, cluster: bool
) -> None:
    balancing = {IRC_JID: slots} if slots > 1 else None
    server = (
        EjabberdCluster(components={IRC_JID: SECRET}, balancing=balancing)
        if cluster
        else Ejabberd(components={IRC_JID: SECRET}, balancing=balancing)
    )
    async with server as ejabberd, NgIrcd(flood_throttling=False) as irc, Postgres() as postgres:
        nodes = ejabberd.nodes if isinstance(ejabberd, EjabberdCluster) else (ejabberd,)
        label = f"{slots} slot(s){' on two nodes' if cluster else ''}"
        url = await postgres.create_database(f"scale{slots}")
        run = run_dir / f"{slots}{'c' if cluster else ''}"
        first = GatewayProcess(config(nodes[0], irc, url, slots), run / "0")
        gateways = [first]
        for n in range(1, slots):
            node = nodes[n % len(nodes)]
            server_section = {"host": node.host, "port": node.component_port}
            gateways.append(first.sibling(run / str(n), server=server_section))
        members: list[RoomUser] = []
        speaker = None
        try:
            for gateway in gateways:
                await gateway.start(timeout=60)
            speaker = await IrcPeer.connect(irc.host, irc.port, "speaker", CHANNEL)
            for n in range(users):
                jid = await ejabberd.register(f"m{n}", PASSWORD)
                member = RoomUser(f"{jid}/bench", ROOM, f"m{n}")
                await member.join(
                    nodes[n % len(nodes)], IRC_JID
                )  # XEP-0077 with a nick, then the room
                members.append(member)
            pids = [gateway.pid for gateway in gateways if gateway.pid is not None]
            per_process = await owned(url.replace("postgresql+asyncpg", "postgresql"))
            per_process = per_process or {pids[0]: users}  # one slot: no leases to count
            for round_ in range(rounds):
                tag = f"r{round_} "
                before = await settled(pids)
                started = time.perf_counter()
                for n in range(burst):
                    speaker.send(f"PRIVMSG {CHANNEL} :{tag}{n}")
                for member in members:
                    await member.wait_count(burst, tag, timeout=600)
                last = max(member.received(tag)[-1][0] for member in members)
                after = await settled(pids)
                rate = burst * users / (last - started)
                cpu = ", ".join(
                    f"pid {pid}: {per_process.get(pid, 0)} users "
                    f"{(a - b) / max(1, burst * per_process.get(pid, 0)) * 1000:.3f}"
                    for pid, a, b in zip(pids, after, before, strict=True)
                )
                print(
                    f"{label}, {users} users, {burst} lines: {rate:,.0f} stanzas/s "
                    f"aggregate; CPU s per 1,000 stanzas delivered, per process: {cpu}",
                    flush=True,
                )
                for member in members:
                    member.messages.clear()
        finally:
            for member in members:
                member.disconnect()
            if speaker is not None:
                await speaker.close()
            for gateway in gateways:
                await gateway.stop(timeout=60)


async def main(slot_counts: list[int], users: int, burst: int, rounds: int, cluster: bool) -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="xgw-scaleout-"))
    for slots in slot_counts:
        for on_cluster in (False, True) if cluster else (False,):
            await measure(slots, users, burst, rounds, run_dir, on_cluster)
    print(f"logs in {run_dir}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--users", type=int, default=12)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cluster", action="store_true", help="also on two ejabberd nodes")
    args = parser.parse_args()
    asyncio.run(main(args.slots, args.users, args.burst, args.rounds, args.cluster))
