"""Gateway start-up with many users holding persistent channels: the bouncer rejoin.

N accounts (default 1,000), each with one persistent channel on an ngIRCd with its
flood throttling on (what real networks do), are in the database when the gateway
starts as its own process. An IRC peer in that channel counts the JOINs: printed are
the time until all N are back, the connections' rate as the server saw it (new
connections per second, the start-up pacing `connect_rate`/`connect_burst`), and how
many were dropped by the server (excess flood would show here). The gateway's RSS at
the end is printed too.

    .venv/bin/python bench/startup_bench.py [--users 1000] [--connect-rate 10]
        [--connect-burst 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bridges.irc.devstack import NgIrcd
from bridges.irc.settings import STATE_KEY
from component.crypto import SecretBox
from component.db import create_engine, upgrade
from component.devstack.prosody import Prosody
from component.store import Store

sys.path.insert(0, str(Path(__file__).parent))
from archive_bench import rss_mib
from irc_vs_biboumi import IrcPeer, gateway_config, run_process, wait_connected

CHANNEL = "#startup"


class CountingPeer(IrcPeer):
    """An IRC peer that also notes when (and whether) each gateway user joined or quit."""

    joins: list[float]
    quits: int

    async def _read(self) -> None:
        self.joins, self.quits = [], 0
        while line := await self.reader.readline():
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            prefix, _, rest = text.partition(" ") if text.startswith(":") else ("", "", text)
            if rest.startswith("PING"):
                self.send("PONG" + rest[4:])
            elif rest.startswith("JOIN"):
                self.joined.add(prefix[1:].partition("!")[0])
                self.joins.append(time.perf_counter())
            elif rest.startswith("QUIT"):
                self.quits += 1
            self.changed.set()


async def accounts(config: dict[str, object], users: int, server: str) -> None:
    """`users` registered accounts, each staying in CHANNEL on `server`."""
    engine = create_engine(str(config["database_url"]))
    await upgrade(engine)
    store = Store(engine, SecretBox(str(config["secret_key"])))
    state = {STATE_KEY: {server: {"persistent": [CHANNEL]}}}
    for n in range(users):
        await store.save_account(f"u{n}@localhost", "irc", settings={"nick": f"u{n}"}, state=state)
    await engine.dispose()


async def main(users: int, rate: float, burst: int) -> None:
    secret = "bench-secret"
    tmp = Path(tempfile.mkdtemp(prefix="xgw-startup-bench-"))
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(Prosody(components={"irc.localhost": secret}))
        irc = await stack.enter_async_context(NgIrcd(flood_throttling=True))
        config = gateway_config(
            server, irc, tmp / "ours.db", secret, connect_rate=rate, connect_burst=burst
        )
        await accounts(config, users, "127.0.0.1")
        path = tmp / "ours.yaml"
        path.write_text(yaml.safe_dump(config))
        peer = await CountingPeer.connect("127.0.0.1", irc.port, "watcher", CHANNEL)
        assert isinstance(peer, CountingPeer)
        mark = server.log_mark()
        started = time.perf_counter()
        gateway = await stack.enter_async_context(
            run_process(
                sys.executable, "-m", "component", "run", "-c", str(path), log=tmp / "gw.log"
            )
        )
        await wait_connected(server, "irc.localhost", mark)
        wanted = {f"u{n}" for n in range(users)}
        await peer.wait(lambda: wanted <= peer.joined, timeout=max(120, 3 * users / rate))
        elapsed = time.perf_counter() - started
        first, last = peer.joins[0], peer.joins[-1]
        seen = (len(peer.joins) - 1) / (last - first) if last > first else float("inf")
        print(f"users with a persistent channel          {users:,}")
        print(f"pacing (connect_rate, connect_burst)     {rate:g}/s, {burst}")
        print(f"all rejoined after gateway start         {elapsed:.1f} s")
        print(f"first to last JOIN                       {last - first:.1f} s ({seen:.1f} joins/s)")
        print(f"connections the server dropped           {peer.quits}")
        print(f"gateway RSS with {users:,} connections     {rss_mib(gateway.pid):.0f} MiB")
        await peer.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--connect-rate", type=float, default=10.0)
    parser.add_argument("--connect-burst", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.users, args.connect_rate, args.connect_burst))
