"""Many users at once, for the benchmarks that need hundreds or thousands of them.

`prosodyctl register` costs about half a second per account, so thousands of accounts
are written straight into Prosody's internal storage instead (it reads an account from
disk at login), rosters included: a user whose roster holds a gateway with subscription
`both` is one the server answers the gateway's probes for, as after an XEP-0100
registration. `seed_accounts` puts registered users into the gateway's own database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import insert, select

from bridges.irc.devstack import InspIrcd, NgIrcd
from bridges.timeouts import within
from component.crypto import generate_key
from component.db import create_engine, upgrade
from component.devstack.ejabberd import Ejabberd
from component.devstack.prosody import Prosody
from component.models import AccountRow, UserRow

T = TypeVar("T")


def irc_gateway_config(
    server: Prosody | Ejabberd,
    irc: NgIrcd | InspIrcd,
    database_url: str,
    secret: str,
    *,
    domain: str = "irc.localhost",
    irc_options: Mapping[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """A gateway's config with only the IRC bridge (component `domain`), between
    `server` and `irc` on loopback: `irc_options` are added to the bridge's section,
    `sections` to the top level (`reconnect`, `cluster`, `log_level`...)."""
    bridge = {"jid": domain, "secret": secret, "port": irc.port, "tls": False}
    return {
        "server": {"host": server.host, "port": server.component_port},
        "database_url": database_url,
        "secret_key": generate_key(),
        "allowed_domains": [server.domain],
        "bridges": {"irc": {**bridge, "allowed_servers": ["127.0.0.1"], **(irc_options or {})}},
        **sections,
    }


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _encoded(name: str) -> str:
    """Prosody's file name for a host or user (datamanager's `encode`)."""
    return "".join(c if c.isascii() and c.isalnum() else f"%{ord(c):02x}" for c in name)


def prosody_accounts(
    server: Prosody, names: Iterable[str], password: str, contacts: Sequence[str] = ()
) -> list[str]:
    """Accounts `name@domain` of `server`, each with `contacts` (component JIDs) in its
    roster, subscription both; their bare JIDs."""
    data = server.run_dir / "data" / _encoded(server.domain)
    (data / "accounts").mkdir(parents=True, exist_ok=True)
    (data / "roster").mkdir(parents=True, exist_ok=True)
    items = "".join(
        f'\t[{_lua_string(jid)}] = {{ ["subscription"] = "both"; ["groups"] = {{}}; }};\n'
        for jid in contacts
    )
    roster = f'return {{\n\t[false] = {{ ["version"] = 1; ["pending"] = {{}}; }};\n{items}}};\n'
    account = f'return {{\n\t["password"] = {_lua_string(password)};\n}};\n'
    jids = []
    for name in names:
        (data / "accounts" / f"{_encoded(name)}.dat").write_text(account)
        if contacts:
            (data / "roster" / f"{_encoded(name)}.dat").write_text(roster)
        jids.append(f"{name}@{server.domain}")
    return jids


async def seed_accounts(
    database_url: str,
    bridge: str,
    users: Iterable[tuple[str, Mapping[str, Any], Mapping[str, Any]]],
) -> None:
    """Registered users of `bridge` with no stored secrets in the gateway's database
    (migrated first): one (bare JID, settings, state) each, the rows `Store.save_account`
    writes, in one transaction (one each takes minutes for 10,000)."""
    rows = list(users)
    engine = create_engine(database_url)
    await upgrade(engine)
    async with engine.begin() as db:
        await db.execute(insert(UserRow), [{"jid": jid} for jid, _, _ in rows])
        ids = dict((await db.execute(select(UserRow.jid, UserRow.id))).tuples().all())
        await db.execute(
            insert(AccountRow),
            [
                {"user_id": ids[jid], "bridge": bridge, "settings": settings, "state": state}
                for jid, settings, state in rows
            ],
        )
    await engine.dispose()


async def in_batches(count: int, start: Callable[[int], Awaitable[T]], batch: int = 50) -> list[T]:
    """`start(0)` … `start(count - 1)`, `batch` of them at a time (a thousand logins at
    once would measure the listen backlog, not the servers)."""
    done: list[T] = []
    for first in range(0, count, batch):
        done += await asyncio.gather(*(start(n) for n in range(first, min(count, first + batch))))
    return done


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of process `pid` so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")  # after "pid (comm)": state is fields[0]
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far."""
    return sum(cpu_times(pid))


def prosody_seconds(server: Prosody) -> float:
    """The CPU seconds `server`'s process has used so far."""
    assert server.pid is not None
    return cpu_seconds(server.pid)


def rss_kib(pid: int | str = "self") -> int:
    """A process's resident set (VmRSS), KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))


async def end_process(process: asyncio.subprocess.Process, timeout: float) -> None:
    """SIGTERM, as an operator stops a gateway; SIGKILL if it is still there after
    `timeout` s, so a hung shutdown cannot hold a benchmark run."""
    if process.returncode is not None:
        return
    process.terminate()
    with contextlib.suppress(TimeoutError):
        await within(process.wait(), timeout)
    if process.returncode is None:
        process.kill()
        await process.wait()
