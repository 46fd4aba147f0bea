"""Where an idle gateway's resident memory goes (issue #14: ≤ 45 MiB with both bridges).

Starts Prosody and runs the gateway as its own process with both bridges configured
(IRC and mail; neither needs its legacy server until a user comes), then prints its
RSS once both components are connected and it has settled. With `--trees`, one
gateway per source tree (say this one and /work/main), rounds taken in turn, so a
change is measured against the code before it in the same run.

`--imports` runs one more gateway under an import probe (asked for its figures by
SIGUSR2 once idle) and prints a table: the RSS
each top-level package added while its own modules were being imported (exclusive of
the packages it imported in turn, shared libraries included), and what start-up added
after the imports (objects, buffers, the heap's fragmentation).

    .venv/bin/python bench/idle_memory.py [--rounds 3] [--trees . /work/main] [--imports]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from crowd import end_process, rss_kib

from component.crypto import generate_key
from component.devstack.prosody import Prosody

DOMAINS = ("irc.localhost", "mail.localhost")
SETTLE = 2.0
"""Seconds after both components are connected before RSS is read: the start-up's
last tasks (disco of the upload service, the first sweeps) have run by then."""

PROBE = r'''
import importlib.abc, json, os, signal, sys

PAGE = os.sysconf("SC_PAGE_SIZE") // 1024
statm = open("/proc/self/statm", "rb", buffering=0)

def rss():
    statm.seek(0)
    return int(statm.read().split()[1]) * PAGE

totals, stack = {}, []

class Measured:
    """A module loader whose create and exec steps are charged to the module's package."""
    def __init__(self, loader, name):
        self._loader, self._name = loader, name
    def __getattr__(self, attr):
        return getattr(self._loader, attr)
    def _charged(self, step, *args):
        stack.append([rss(), 0])
        try:
            return step(*args)
        finally:
            start, children = stack.pop()
            spent = rss() - start
            package = self._name.partition(".")[0]
            totals[package] = totals.get(package, 0) + spent - children
            if stack:
                stack[-1][1] += spent
    def create_module(self, spec):
        return self._charged(self._loader.create_module, spec)
    def exec_module(self, module):
        return self._charged(self._loader.exec_module, module)

class Probe(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        for finder in sys.meta_path[sys.meta_path.index(self) + 1:]:
            spec = getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = Measured(spec.loader, name)
                return spec
        return None

sys.meta_path.insert(0, Probe())
totals["(interpreter)"] = rss()

def report(*_):
    totals["(after the imports)"] = rss() - sum(totals.values())
    print(json.dumps(totals), flush=True)

signal.signal(signal.SIGUSR2, report)
sys.argv = ["component", *sys.argv[1:]]
from component.cli import main
raise SystemExit(main())
'''


def config(server: Prosody, db: Path) -> dict[str, Any]:
    mail_domain = {
        "imap_host": "127.0.0.1",
        "imap_security": "tls",
        "smtp_host": "127.0.0.1",
        "smtp_security": "starttls",
    }
    return {
        "server": {"host": server.host, "port": server.component_port},
        "database_url": f"sqlite+aiosqlite:///{db}",
        "secret_key": generate_key(),
        "allowed_domains": [server.domain],
        "log_level": "WARNING",
        "bridges": {
            "irc": {"jid": DOMAINS[0], "secret": "s-irc", "allowed_servers": ["127.0.0.1"]},
            "mail": {
                "jid": DOMAINS[1],
                "secret": "s-mail",
                "domains": {"localhost": mail_domain},
            },
        },
    }


def python_of(tree: Path) -> str:
    """The tree's own venv if it has one, else ours."""
    own = tree / ".venv" / "bin" / "python"
    return str(own) if own.exists() else sys.executable


async def idle_rss(
    server: Prosody, tree: Path, path: Path, probe: bool = False
) -> tuple[int, dict[str, int]]:
    """KiB resident in a gateway from `tree` with config `path`, idle after start-up;
    with `probe`, what the import probe charged to each package (KiB)."""
    python = python_of(tree)
    upgrade = await asyncio.create_subprocess_exec(
        python, "-m", "component", "db", "upgrade", "-c", str(path), cwd=tree
    )
    await upgrade.wait()
    mark = server.log_mark()
    argv = [python, "-m", "component", "run", "-c", str(path)]
    if probe:
        argv = [python, "-c", PROBE, "run", "-c", str(path)]
    log = path.with_suffix(".log").open("ab")
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=tree, stdout=asyncio.subprocess.PIPE if probe else log, stderr=log
    )
    try:
        for domain in DOMAINS:
            await server.wait_component_connected(domain, timeout=60, since=mark)
        await asyncio.sleep(SETTLE)
        totals: dict[str, int] = {}
        if probe:
            assert process.stdout is not None
            process.send_signal(signal.SIGUSR2)  # the probe's report, one line
            async with asyncio.timeout(30):
                totals = json.loads(await process.stdout.readline())
        return rss_kib(process.pid), totals
    finally:
        await end_process(process, 15)
        log.close()


def print_imports(totals: dict[str, int]) -> None:
    print("\nRSS added while each package's own modules were imported (KiB):")
    shown = sorted(totals.items(), key=lambda item: -item[1])
    for package, kib in shown:
        if abs(kib) >= 100:
            print(f"  {package:28s} {kib:7d}  {kib / 1024:5.1f} MiB")
    rest = sum(kib for _, kib in shown if abs(kib) < 100)
    print(f"  {'(packages under 100 KiB)':28s} {rest:7d}  {rest / 1024:5.1f} MiB")
    print(f"  {'total':28s} {sum(totals.values()):7d}  {sum(totals.values()) / 1024:5.1f} MiB")


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="xgw-idle-"))
    secrets = {DOMAINS[0]: "s-irc", DOMAINS[1]: "s-mail"}
    trees = [Path(tree).resolve() for tree in args.trees]
    async with Prosody(components=secrets) as server:
        samples: dict[Path, list[int]] = {tree: [] for tree in trees}
        for round_ in range(args.rounds):
            for n, tree in enumerate(trees):
                path = tmp / f"gw-{n}-{round_}.yaml"
                path.write_text(yaml.safe_dump(config(server, tmp / f"gw-{n}-{round_}.db")))
                samples[tree].append((await idle_rss(server, tree, path))[0])
        for tree, kib in samples.items():
            mib = [k / 1024 for k in kib]
            print(
                f"{tree}: RSS idle, both bridges: {statistics.median(mib):.1f} MiB "
                f"({min(mib):.1f} to {max(mib):.1f} over {len(mib)} rounds)"
            )
        if args.imports:
            path = tmp / "probed.yaml"
            path.write_text(yaml.safe_dump(config(server, tmp / "probed.db")))
            total, totals = await idle_rss(server, trees[0], path, probe=True)
            print(f"\nprobed gateway ({trees[0]}): {total / 1024:.1f} MiB")
            print_imports(totals)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trees", nargs="+", default=[str(Path(__file__).parents[1])])
    parser.add_argument("--imports", action="store_true")
    asyncio.run(main(parser.parse_args()))
