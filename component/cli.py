"""The `xmpp-gateway` command: run, check-config, db upgrade, users, generate-key, demo."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from component import memory  # noqa: F401  # first: what slixmpp's import then leaves out
from component.config import Config, ConfigError, LoadedBridge, load_config
from component.crypto import generate_key
from component.db import SchemaOutdated, create_engine, upgrade
from component.store import Store
from component.version import software_version

log = logging.getLogger("xmpp_gateway")

THREADS_GRACE = 5.0
"""Seconds the threads left after a stop get to end before the process exits anyway."""
EXIT_THREADS_HUNG = 70
"""Exit code when it had to (EX_SOFTWARE): a clean stop leaves no thread running."""


SECRET_LOGGING_LIBRARIES = ("slixmpp", "aioimaplib")
"""Libraries that log secrets at DEBUG: slixmpp whole stanzas (registration passwords
included), aioimaplib every command sent (a LOGIN password with `"` or `\\` in clear)."""


def setup_logging(level: str) -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger().setLevel(level)
    for library in SECRET_LOGGING_LIBRARIES:
        logging.getLogger(library).setLevel(max(logging.getLevelName(level), logging.INFO))


def _load(path: Path) -> tuple[Config, list[LoadedBridge]]:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{path}: configuration is not valid:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(2) from None


async def _with_store(config: Config) -> Store:
    return Store(create_engine(config.database_url), config.secret_box())


def cmd_run(args: argparse.Namespace) -> int:
    from component.app import serve
    from component.leadership import AlreadyRunning

    config, bridges = _load(args.config)
    setup_logging(config.log_level)
    # `kill -USR1` prints every thread's stack: what to look at when a gateway hangs.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        asyncio.run(serve(config, bridges, owns_loop=True))
    except SchemaOutdated as exc:
        log.error("%s", exc)
        return 3
    except AlreadyRunning as exc:
        log.error("%s", exc)
        return 4
    return exit_once_threads_end(0, THREADS_GRACE)


def exit_once_threads_end(code: int, grace: float) -> int:
    """`code`, once every non-daemon thread has ended; if some still run after `grace`
    seconds, their stacks go to the log and the process ends at once.

    A database connection stranded by a query cut off at shutdown keeps its aiosqlite
    thread waiting for ever, and Python waits for it before exiting: the gateway said
    "stopped" and never went. That is a bug to fix where it happens, but it must not
    make a stop unbounded; the exit code tells it apart from a clean stop.
    """
    deadline = time.monotonic() + grace
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    left = [
        t.name
        for t in threading.enumerate()
        if t is not threading.current_thread() and not t.daemon and t.is_alive()
    ]
    if not left:
        return code
    log.error("threads still running %g s after the stop, exiting anyway: %s", grace, left)
    faulthandler.dump_traceback(all_threads=True)
    logging.shutdown()
    os._exit(EXIT_THREADS_HUNG)


def cmd_check_config(args: argparse.Namespace) -> int:
    config, bridges = _load(args.config)
    print(f"{args.config}: OK")
    print(f"  XMPP server: {config.server.host}:{config.server.port}")
    print(f"  database: {config.database_url.split('@')[-1]}")
    for bridge in bridges:
        print(f"  bridge {bridge.name}: {bridge.section.jid} ({bridge.cls.__name__})")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    config, _ = _load(args.config)
    setup_logging(config.log_level)

    async def _run() -> None:
        engine = create_engine(config.database_url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(_run())
    print("database is up to date")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    config, _ = _load(args.config)

    async def _run() -> list[tuple[str, str]]:
        store = await _with_store(config)
        return await store.registrations()

    for user, bridge in asyncio.run(_run()):
        print(f"{user}\t{bridge}")
    return 0


def cmd_users_remove(args: argparse.Namespace) -> int:
    config, bridges = _load(args.config)
    names = [args.bridge] if args.bridge else [bridge.name for bridge in bridges]

    async def _run() -> list[str]:
        store = await _with_store(config)
        return [name for name in names if await store.remove_account(args.jid, name)]

    removed = asyncio.run(_run())
    if not removed:
        print(f"{args.jid} has no registration", file=sys.stderr)
        return 1
    print(f"removed {args.jid} from {', '.join(removed)}")
    return 0


def cmd_generate_key(_args: argparse.Namespace) -> int:
    print(generate_key())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from component.demo import run_demo

    setup_logging("INFO")
    return asyncio.run(run_demo(args.dir))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xmpp-gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {software_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_config(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("-c", "--config", type=Path, default=Path("config.yaml"))
        return sub

    with_config(commands.add_parser("run", help="connect every bridge and serve")).set_defaults(
        func=cmd_run
    )
    with_config(
        commands.add_parser("check-config", help="validate the config file and say what is wrong")
    ).set_defaults(func=cmd_check_config)
    db = commands.add_parser("db", help="database schema").add_subparsers(dest="db", required=True)
    with_config(db.add_parser("upgrade", help="apply pending migrations")).set_defaults(
        func=cmd_db_upgrade
    )
    users = commands.add_parser("users", help="registered users").add_subparsers(
        dest="users", required=True
    )
    with_config(users.add_parser("list", help="every registration")).set_defaults(
        func=cmd_users_list
    )
    remove = with_config(users.add_parser("remove", help="delete a user's registrations"))
    remove.add_argument("jid")
    remove.add_argument("--bridge", help="only this bridge (default: all)")
    remove.set_defaults(func=cmd_users_remove)
    commands.add_parser("generate-key", help="print a new secret_key").set_defaults(
        func=cmd_generate_key
    )
    demo = commands.add_parser("demo", help="run with a private local XMPP server (and more)")
    demo.add_argument(
        "--dir", type=Path, default=None, help="keep the demo state here (its parents need o+x)"
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result
