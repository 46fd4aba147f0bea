"""Which lock a config gets, and the SQLite lock file (the PostgreSQL lock is tested
with real processes in tests/core/test_standby.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from component.advisory_lock import AdvisoryLock
from component.config import Config, ConfigError, parse_config
from component.crypto import generate_key
from component.leadership import (
    AlreadyRunning,
    FileLock,
    Leadership,
    leadership_for,
    lock_keys,
)


def config(tmp_path: Path, database_url: str, *jids: str, slots: int = 1) -> Config:
    data: dict[str, Any] = {
        "database_url": database_url,
        "cluster": {"slots": slots},
        "secret_key": generate_key(),
        "allowed_domains": ["localhost"],
        "bridges": {
            f"b{n}": {"jid": jid, "secret": "s", "plugin": "fake_bridge:FakeBridge"}
            for n, jid in enumerate(jids or ("fake.localhost",))
        },
    }
    return parse_config(data, tmp_path)[0]


def test_each_database_gets_its_lock(tmp_path: Path) -> None:
    sqlite = leadership_for(config(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db"))
    assert isinstance(sqlite, FileLock) and sqlite.path == tmp_path / "gw.db.lock"
    memory = leadership_for(config(tmp_path, "sqlite+aiosqlite://"))
    assert type(memory) is Leadership
    pg = leadership_for(config(tmp_path, "postgresql+asyncpg://gw:s3cret@db.example:5433/gw"))
    assert isinstance(pg, AdvisoryLock)
    assert pg.dsn == "postgresql://gw:s3cret@db.example:5433/gw"


def test_the_lock_key_names_the_set_of_components(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://db/gw"
    [both] = lock_keys(config(tmp_path, url, "irc.example.org", "mail.example.org"))
    assert [both] == lock_keys(config(tmp_path, url, "mail.example.org", "irc.example.org"))
    assert [both] != lock_keys(config(tmp_path, url, "irc.example.org"))
    assert 0 <= both < 2**31


def test_each_slot_has_its_own_key_and_slot_0_is_the_standby_key(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://db/gw"
    keys = lock_keys(config(tmp_path, url, "irc.example.org", slots=3))
    assert len(set(keys)) == 3 and keys[0] == lock_keys(config(tmp_path, url, "irc.example.org"))[0]
    assert all(0 <= key < 2**31 for key in keys)


def test_several_slots_need_postgresql(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        config(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db", slots=2)
    assert "cluster.slots above 1 needs a PostgreSQL database_url" in str(refused.value)


async def test_a_second_holder_of_the_sqlite_file_is_refused_until_the_first_goes(
    tmp_path: Path,
) -> None:
    database = tmp_path / "gateway.db"
    async with FileLock(database):
        with pytest.raises(AlreadyRunning) as refused:
            async with FileLock(database):
                pass
        assert "pid" in str(refused.value) and "gateway.db.lock" in str(refused.value)
    async with FileLock(database) as again:  # released by close (and by the kernel)
        assert await again.acquire(asyncio.Event())
