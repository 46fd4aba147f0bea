"""Gateway start-up with many users holding persistent channels: the bouncer rejoin.

N accounts (default 1,000), each with one persistent channel on an ngIRCd with its
flood throttling on (what real networks do), are in the database when the gateway
starts as its own process. An IRC peer in that channel counts the JOINs: printed are
the time until all N are back, the connections' rate as the server saw it (new
connections per second, the start-up pacing `connect_rate`/`connect_burst`), and how
many were dropped by the server (excess flood would show here). The gateway's RSS at
the end is printed too.

`--registered N --online M` measures the other start-up instead: N registered users
without persistent channels, of whom M are logged in to Prosody (with the gateway in
their roster) when the gateway starts. It probes all N; the server answers for the M
online, whose sessions then start and who each receive the gateway's presence. Printed:
the seconds from the gateway's start until all M have it, and the gateway's RSS then.

    .venv/bin/python bench/startup_bench.py [--users 1000] [--connect-rate 10]
        [--connect-burst 10]
    .venv/bin/python bench/startup_bench.py --registered 10000 --online 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bridges.irc.devstack import NgIrcd
from bridges.irc.settings import STATE_KEY
from component.devstack.prosody import Prosody

sys.path.insert(0, str(Path(__file__).parent))
from crowd import in_batches, prosody_accounts, rss_kib, seed_accounts
from irc_vs_biboumi import PASSWORD, IrcPeer, RoomUser, gateway_config, run_process, wait_connected

CHANNEL = "#startup"


class CountingPeer(IrcPeer):
    """An IRC peer that also notes when (and whether) each gateway user joined or quit."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.joins: list[float] = []
        self.quits = 0
        super().__init__(reader, writer)

    def _line(self, nick: str, rest: str) -> None:
        super()._line(nick, rest)
        if rest.startswith("JOIN"):
            self.joins.append(time.perf_counter())
        elif rest.startswith("QUIT"):
            self.quits += 1


async def accounts(
    config: dict[str, object], users: int, state: dict[str, object] | None = None
) -> None:
    """`users` registered accounts u0@localhost…, with `state` (their channels)."""
    await seed_accounts(
        str(config["database_url"]),
        "irc",
        ((f"u{n}@localhost", {"nick": f"u{n}"}, state or {}) for n in range(users)),
    )


GATEWAY_PRESENCE = re.compile(rb"<presence(?![^>]*type=)[^>]*from=['\"]irc\.localhost['\"]")
"""The gateway's available presence (while it is down, the server bounces the user's
own presence to it as type='error' from the same JID)."""


async def available_from(user: RoomUser, timeout: float) -> None:
    """Wait until `user` has received the gateway's available presence."""
    seen = b""
    async with asyncio.timeout(timeout):
        while not GATEWAY_PRESENCE.search(seen):
            chunk = await user.reader.read(65536)
            if not chunk:
                raise ConnectionError(f"{user.jid}: closed before the gateway's presence")
            seen = seen[-4096:] + chunk


def gateway(
    config: dict[str, object], tmp: Path
) -> contextlib.AbstractAsyncContextManager[asyncio.subprocess.Process]:
    """Our gateway with `config`, as its own process."""
    path = tmp / "ours.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = (sys.executable, "-m", "component", "run", "-c", str(path))
    return run_process(*argv, log=tmp / "gw.log")


async def online_start(registered: int, online: int) -> None:
    """Start-up with `registered` users, `online` of them logged in: probes, sessions."""
    secret = "bench-secret"
    tmp = Path(tempfile.mkdtemp(prefix="xgw-startup-bench-"))
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(Prosody(components={"irc.localhost": secret}))
        irc = await stack.enter_async_context(NgIrcd(flood_throttling=True))
        config = gateway_config(server, irc, tmp / "ours.db", secret)
        started = time.perf_counter()
        await accounts(config, registered)
        seeded = time.perf_counter() - started
        jids = prosody_accounts(
            server, (f"u{n}" for n in range(online)), PASSWORD, ["irc.localhost"]
        )

        async def log_in(n: int) -> RoomUser:
            user = RoomUser(f"{jids[n]}/bench", "", f"u{n}")
            await user.login(server)
            return user

        users = await in_batches(online, log_in)
        timeout = 120 + online / 10
        waits = [asyncio.ensure_future(available_from(u, timeout)) for u in users]
        mark = server.log_mark()
        started = time.perf_counter()
        process = await stack.enter_async_context(gateway(config, tmp))
        await wait_connected(server, "irc.localhost", mark)
        connected = time.perf_counter() - started
        await asyncio.gather(*waits)
        elapsed = time.perf_counter() - started
        print(f"registered users (seeded in {seeded:.0f} s)   {registered:,}")
        print(f"online when the gateway starts           {online:,}")
        print(f"component connected after                {connected:.1f} s")
        print(f"all online sessions running after        {elapsed:.1f} s")
        print(f"gateway RSS then                         {rss_kib(process.pid) / 1024:.0f} MiB")
        for user in users:
            user.writer.close()


async def main(users: int, rate: float, burst: int) -> None:
    secret = "bench-secret"
    tmp = Path(tempfile.mkdtemp(prefix="xgw-startup-bench-"))
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(Prosody(components={"irc.localhost": secret}))
        irc = await stack.enter_async_context(NgIrcd(flood_throttling=True))
        config = gateway_config(
            server, irc, tmp / "ours.db", secret, connect_rate=rate, connect_burst=burst
        )
        await accounts(config, users, {STATE_KEY: {"127.0.0.1": {"persistent": [CHANNEL]}}})
        peer = await CountingPeer.connect("127.0.0.1", irc.port, "watcher", CHANNEL)
        assert isinstance(peer, CountingPeer)
        mark = server.log_mark()
        started = time.perf_counter()
        process = await stack.enter_async_context(gateway(config, tmp))
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
        print(f"gateway RSS with {users:,} connections     {rss_kib(process.pid) / 1024:.0f} MiB")
        await peer.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--connect-rate", type=float, default=10.0)
    parser.add_argument("--connect-burst", type=int, default=10)
    parser.add_argument("--registered", type=int, help="registered users (with --online)")
    parser.add_argument("--online", type=int, default=1000, help="of them logged in")
    args = parser.parse_args()
    if args.registered:
        asyncio.run(online_start(args.registered, args.online))
    else:
        asyncio.run(main(args.users, args.connect_rate, args.connect_burst))
