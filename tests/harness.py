"""Building blocks for tests and benchmarks: the fake bridge's gateway config and app.

Integration tests run the gateway as a process (component.devstack.gateway); `start_app`
builds it in the caller's process, for benchmarks that measure the gateway itself.

Kept out of conftest.py because several test folders have a conftest of their own and
only one module can be imported under the name `conftest`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bridges.base import Account
from component.app import App
from component.config import parse_config
from component.crypto import generate_key
from component.db import create_engine, upgrade
from component.devstack.prosody import Prosody
from component.models import AccountRow, ArchiveRow, UserRow
from component.store import Store

if TYPE_CHECKING:  # benchmarks import this module: no mail libraries in their RSS
    from bridges.mail.devstack import MailServer

TESTS_DIR = Path(__file__).parent
"""On the gateway process's PYTHONPATH, so `fake_bridge:FakeBridge` imports there too."""

FAKE_JID = "fake.localhost"
FAKE_SECRET = "fake-secret"
PASSWORD = "pw"
MAIL_JID = "mail.localhost"
MAIL_SECRET = "mail-secret"


def gateway_config(prosody: Prosody, db_path: Path, **overrides: Any) -> dict[str, Any]:
    """A config dict for the fake bridge on `prosody`, as an operator would write it."""
    config: dict[str, Any] = {
        "server": {"host": prosody.host, "port": prosody.component_port},
        "database_url": f"sqlite+aiosqlite:///{db_path}",
        "secret_key": generate_key(),
        "allowed_domains": [prosody.domain],
        "reconnect": {"initial_delay": 0.1, "max_delay": 0.5, "auth_failure_delay": 0.5},
        # One shared gateway registers every test's users within a minute or two.
        "registration_limit": {"per_user": 20, "total": 100_000},
        "bridges": {
            "fake": {"jid": FAKE_JID, "secret": FAKE_SECRET, "plugin": "fake_bridge:FakeBridge"}
        },
    }
    config.update(overrides)
    return config


def mail_section(mail: MailServer, **options: Any) -> dict[str, Any]:
    """The mail bridge's config section on `mail`'s servers (its CA trusted), with a
    10 s timeout and reconnects within a second, for tests that wait on them;
    `options` add or replace settings."""
    return {
        "jid": MAIL_JID,
        "secret": MAIL_SECRET,
        "ca_file": str(mail.ca_file),
        "allowed_hosts": [mail.host],
        "timeout": 10.0,
        "reconnect_min": 0.2,
        "reconnect_max": 1.0,
        **options,
    }


async def start_app(config: dict[str, Any], base_dir: Path, *, migrate: bool = True) -> App:
    parsed, bridges = parse_config(config, base_dir)
    if migrate:
        engine = create_engine(parsed.database_url)
        await upgrade(engine)
        await engine.dispose()
    app = App(parsed, bridges)
    await app.start()
    return app


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def open_store(config: dict[str, Any]) -> AsyncIterator[Store]:
    """The gateway's database as the gateway sees it (same URL and secret key), for tests
    that check what a gateway process stored."""
    parsed, _ = parse_config(config, TESTS_DIR)
    async with _engine(parsed.database_url) as engine:
        yield Store(engine, parsed.secret_box())


@contextlib.asynccontextmanager
async def _engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def stored_account(config: dict[str, Any], user: str, bridge: str = "fake") -> Account | None:
    """`user`'s account on `bridge` in the database of the gateway run with `config`."""
    async with open_store(config) as store:
        return await store.get_account(user, bridge)


async def has_archived(config: dict[str, Any], user: str, bridge: str, body: str) -> bool:
    """Whether the gateway run with `config` has committed a room line `body` to `user`'s
    archive on `bridge` (it batches writes): a later join or MAM query will serve it."""
    return body in await archived_bodies(config, user, bridge, body)


async def archived_bodies(
    config: dict[str, Any], user: str, bridge: str, body: str | None = None
) -> list[str]:
    """The room lines committed to `user`'s archive on `bridge`, oldest first (only
    those equal to `body` if given), as the gateway run with `config` stored them."""
    parsed, _ = parse_config(config, TESTS_DIR)
    query = (
        select(ArchiveRow.body)
        .join(AccountRow, ArchiveRow.account_id == AccountRow.id)
        .join(UserRow, AccountRow.user_id == UserRow.id)
        .where(UserRow.jid == user, AccountRow.bridge == bridge)
        .order_by(ArchiveRow.id)
    )
    if body is not None:
        query = query.where(ArchiveRow.body == body)
    async with _engine(parsed.database_url) as engine, engine.connect() as db:
        return list(await db.scalars(query))
