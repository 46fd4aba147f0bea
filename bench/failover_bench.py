"""Hot standby benchmark: how long users are away from their persistent IRC channels
when the serving gateway process dies (kill -9) or is stopped (SIGTERM).

Starts PostgreSQL, Prosody, ngIRCd (no flood throttling) and two `xmpp-gateway run`
processes on one config and database. `--users` accounts (offline XMPP users, as most
are at night) each have a persistent channel, so the active process keeps one IRC
connection per user, ten users to a channel (one channel for all would measure
ngIRCd and the gateway relaying a million JOIN lines). An IRC watcher in every channel
sees the users JOIN again; per round it prints, from the kill (or SIGTERM):

* the standby's components up (its log line),
* the first and the last user back in the channel (p50 too),
* the ERROR lines the new active process logged meanwhile, and how many of them are
  the connection pool running out (`QueuePool limit`: 1,000 sessions rejoining at once
  used to exhaust it in their last-seen and chat history lookups),

then starts the old process again as the new standby for the next round.

    .venv/bin/python bench/failover_bench.py [--users 1000] [--rounds 2] [--connect-rate 10]

`--connect-rate` is the IRC bridge's `connect_rate` and `connect_burst` (new IRC
connections per second to the server at a takeover; 10 by default, for public
networks): at 10 the rejoins of 1,000 users take 100 s by design, at 1000 they all
start at once and load the database pool the most.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from crowd import irc_gateway_config
from irc_vs_biboumi import IrcPeer

from bridges.irc.devstack import NgIrcd
from bridges.irc.settings import STATE_KEY
from component.crypto import SecretBox
from component.db import create_engine
from component.devstack.gateway import GatewayProcess
from component.devstack.postgres import Postgres
from component.devstack.prosody import Prosody
from component.store import Store

IRC_JID = "irc.localhost"
SECRET = "irc-secret"
USERS_PER_CHANNEL = 10


class Watcher(IrcPeer):
    """An IRC user in every channel, noting when each nick joins (perf_counter times)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.joins: dict[str, list[float]] = {}
        super().__init__(reader, writer)

    def _line(self, nick: str, rest: str) -> None:
        super()._line(nick, rest)
        if rest.startswith("JOIN"):
            self.joins.setdefault(nick, []).append(time.perf_counter())

    def back_since(self, since: float, nicks: list[str]) -> list[float]:
        """Seconds after `since` at which each of `nicks` that has joined since did."""
        return sorted(
            at - since for nick in nicks for at in self.joins.get(nick, [])[-1:] if at > since
        )


def config(prosody: Prosody, irc: NgIrcd, database_url: str, connect_rate: float) -> dict[str, Any]:
    pacing = {"connect_rate": connect_rate, "connect_burst": max(1, int(connect_rate))}
    return irc_gateway_config(
        prosody,
        irc,
        database_url,
        SECRET,
        domain=IRC_JID,
        irc_options={"flood_rate": 100.0, "flood_burst": 100, **pacing},
        reconnect={"initial_delay": 0.1, "max_delay": 0.5},
    )


def channel_of(user: int) -> str:
    return f"#bench{user // USERS_PER_CHANNEL}"


async def seed(settings: dict[str, Any], users: int) -> list[str]:
    """Store `users` IRC accounts, each with a persistent channel; their nicks."""
    engine = create_engine(settings["database_url"])
    store = Store(engine, SecretBox(settings["secret_key"]))
    nicks = [f"u{n}" for n in range(users)]
    for n, nick in enumerate(nicks):
        state = {STATE_KEY: {"127.0.0.1": {"persistent": [channel_of(n)]}}}
        await store.save_account(f"{nick}@localhost", "irc", settings={"nick": nick}, state=state)
    await engine.dispose()
    return nicks


async def round_trip(
    kind: str, active: GatewayProcess, standby: GatewayProcess, watcher: Watcher, nicks: list[str]
) -> None:
    mark = standby.log_mark()
    since = time.perf_counter()
    if kind == "kill -9":
        await active.kill()
    else:
        stopping = asyncio.ensure_future(active.stop(timeout=60))
    await standby.wait_connected(since=mark, timeout=60)
    connected = time.perf_counter() - since
    await watcher.wait(lambda: len(watcher.back_since(since, nicks)) == len(nicks), timeout=600)
    back = watcher.back_since(since, nicks)
    if kind != "kill -9":
        await stopping
    logged = standby.log_text(mark)
    errors = sum(" ERROR " in line for line in logged.splitlines())
    print(
        f"{kind:8} {len(nicks)} users: standby components up {connected:.2f} s, "
        f"first user back {back[0]:.2f} s, p50 {statistics.median(back):.2f} s, "
        f"all back {back[-1]:.2f} s; {errors} errors logged, "
        f"{logged.count('QueuePool limit')} pool exhaustions",
        flush=True,
    )


async def main(users: int, rounds: int, connect_rate: float) -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="xgw-failover-"))
    async with (
        Postgres() as postgres,
        Prosody(components={IRC_JID: SECRET}) as prosody,
        NgIrcd(flood_throttling=False) as irc,
    ):
        url = await postgres.create_database("failover")
        settings = config(prosody, irc, url, connect_rate)
        gateways = [GatewayProcess(settings, run_dir / "a")]
        await gateways[0].cli("db", "upgrade")
        gateways[0].migrate = False
        nicks = await seed(settings, users)
        channels = sorted({channel_of(n) for n in range(users)})
        watcher = await Watcher.connect(irc.host, irc.port, "watcher", channels[0])
        assert isinstance(watcher, Watcher)
        for channel in channels[1:]:
            watcher.send(f"JOIN {channel}")
        await watcher.wait(lambda: len(watcher.joins["watcher"]) == len(channels))
        try:
            started = time.perf_counter()
            await gateways[0].start(timeout=60)
            await watcher.wait(lambda: watcher.joined >= set(nicks), timeout=600)
            print(f"{users} users joined in {time.perf_counter() - started:.2f} s at start")
            gateways.append(gateways[0].sibling(run_dir / "b"))
            await gateways[1].start(standby=True, timeout=60)
            for _round in range(rounds):
                for kind in ("kill -9", "SIGTERM"):
                    active, standby = gateways
                    await round_trip(kind, active, standby, watcher, nicks)
                    await active.start(standby=True, timeout=60)  # the next standby
                    gateways.reverse()
        finally:
            await watcher.close()
            for gateway in gateways:
                await gateway.stop(timeout=60)
    print(f"logs in {run_dir}", file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--connect-rate", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(main(args.users, args.rounds, args.connect_rate))
