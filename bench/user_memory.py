"""What each joined user costs the gateway, and where (issue #14: ≤ 50 KiB per user).

Starts Prosody and ngIRCd, runs the gateway (IRC bridge only) as its own process under
tracemalloc, and joins users to one channel in steps (`--steps 1,100,200`: the totals
after each step). After each step it prints the RSS and the memory Python traced; then
the traced memory the last step added, per user, grouped by where it was allocated
(the allocation's innermost frames in the gateway's own code, so that what an asyncio
Queue or a dict costs is charged to the line of ours that made it).

A user joined to a channel of N others costs more than one alone: each user's
connection keeps its own list of the channel's members and the muc an occupant list,
so the last step's figure is per user at that channel size.

    .venv/bin/python bench/user_memory.py [--steps 1,100,200] [--top 25] [--frames 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import os
import signal
import sys
import tempfile
import tracemalloc
from collections import defaultdict
from pathlib import Path

import yaml
from crowd import end_process, irc_gateway_config, rss_kib
from irc_vs_biboumi import CHANNEL, Gateway, IrcPeer, RoomUser

from bridges.irc.devstack import NgIrcd
from component.devstack.prosody import Prosody

DOMAIN = "irc.localhost"
SECRET = "s-irc"
DEPTH = 30
"""Frames tracemalloc keeps per allocation: enough to reach our code from inside
asyncio, logging or SQLAlchemy."""

PROBE = r"""
import gc, os, signal, sys, tracemalloc

def dump(*_):
    gc.collect()
    tracemalloc.take_snapshot().dump(os.environ["XGW_SNAPSHOT"])
    print("dumped", flush=True)

signal.signal(signal.SIGUSR2, dump)
sys.argv = ["component", *sys.argv[1:]]
from component.cli import main
raise SystemExit(main())
"""

OURS = ("*/bridges/*", "*/component/*")


def ours(filename: str) -> bool:
    return any(fnmatch.fnmatch(filename, pattern) for pattern in OURS)


def where(trace: tracemalloc.Traceback, frames: int) -> tuple[str, ...]:
    """The allocation's innermost `frames` frames in our code, after the innermost
    frame of all (what allocated: a dict, a deque, a code object)."""
    innermost = list(reversed(trace))  # tracemalloc lists the oldest frame first
    own = [frame for frame in innermost if ours(frame.filename)]
    first = innermost[0]
    shown = [f"{Path(first.filename).name}:{first.lineno}"] if not ours(first.filename) else []
    return (*shown, *(f"{Path(f.filename).name}:{f.lineno}" for f in own[:frames]))


def grouped(snapshot: tracemalloc.Snapshot, frames: int) -> dict[tuple[str, ...], int]:
    sizes: dict[tuple[str, ...], int] = defaultdict(int)
    for trace in snapshot.traces:
        sizes[where(trace.traceback, frames)] += trace.size
    return sizes


async def snapshot(
    process: asyncio.subprocess.Process, path: Path, kept: Path
) -> tracemalloc.Snapshot:
    """The gateway's traced allocations now (it dumps them to `path` on SIGUSR2), kept
    as `kept` for a closer look."""
    assert process.stdout is not None
    process.send_signal(signal.SIGUSR2)
    async with asyncio.timeout(120):
        while (await process.stdout.readline()).strip() != b"dumped":
            pass
    path.rename(kept)
    return tracemalloc.Snapshot.load(str(kept))


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="xgw-users-"))
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(Prosody(components={DOMAIN: SECRET}))
        irc = await stack.enter_async_context(NgIrcd(flood_throttling=False))
        config = irc_gateway_config(
            server, irc, f"sqlite+aiosqlite:///{tmp / 'gw.db'}", SECRET, log_level="WARNING"
        )
        path = tmp / "gw.yaml"
        path.write_text(yaml.safe_dump(config))
        python = sys.executable
        upgrade = await asyncio.create_subprocess_exec(
            python, "-m", "component", "db", "upgrade", "-c", str(path)
        )
        await upgrade.wait()
        mark = server.log_mark()
        dump = tmp / "snapshot"
        log = (tmp / "gw.log").open("ab")
        process = await asyncio.create_subprocess_exec(
            python,
            "-X",
            f"tracemalloc={DEPTH}",
            "-c",
            PROBE,
            "run",
            "-c",
            str(path),
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env={**os.environ, "XGW_SNAPSHOT": str(dump)},
        )
        users: list[RoomUser] = []
        try:
            # Start-up under tracemalloc (every allocation's 30 frames recorded) took
            # over a minute of CPU on a shared 2-core machine, more than once 60 s.
            await server.wait_component_connected(DOMAIN, timeout=300, since=mark)
            gateway = Gateway("ours", DOMAIN, "u", process, needs_registration=True)
            peer = await IrcPeer.connect("127.0.0.1", irc.port, "peeru", CHANNEL)
            room = gateway.room_of(CHANNEL)
            snapshots: list[tuple[int, tracemalloc.Snapshot]] = []
            for total in args.steps:
                first = len(users)
                users += await gateway.crowd(server, f"s{first}x", total - first, lambda _: [room])
                await asyncio.sleep(2)  # the joins' last presences and WHO replies
                taken = await snapshot(process, dump, tmp / f"snapshot-{total}")
                snapshots.append((total, taken))
                traced = sum(stat.size for stat in taken.statistics("filename"))
                print(
                    f"{total:5d} users: RSS {rss_kib(process.pid) / 1024:6.1f} MiB (traced,"
                    f" under tracemalloc), Python traced {traced / 2**20:6.1f} MiB"
                )
            (before_n, before), (after_n, after) = snapshots[-2], snapshots[-1]
            added = after_n - before_n
            old, new = grouped(before, args.frames), grouped(after, args.frames)
            diff = {key: new.get(key, 0) - old.get(key, 0) for key in old.keys() | new.keys()}
            total_added = sum(diff.values())
            print(
                f"\ntraced per user from {before_n} to {after_n} users:"
                f" {total_added / added / 1024:.1f} KiB; the largest sources (bytes/user):"
            )
            for key, size in sorted(diff.items(), key=lambda item: -item[1])[: args.top]:
                print(f"  {size / added:8.0f}  {' < '.join(key)}")
            print(f"\nsnapshots kept in {tmp}")
            await peer.close()
        finally:
            for user in users:
                user.disconnect()
            await end_process(process, 15)
            log.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument(
        "--steps", type=lambda text: [int(n) for n in text.split(",")], default=[1, 100, 200]
    )
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--frames", type=int, default=3, help="frames of ours per source")
    asyncio.run(main(parser.parse_args()))
