"""The same storage tests run on SQLite and on a real PostgreSQL server."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from component.crypto import SecretBox, generate_key
from component.db import create_engine, upgrade
from component.devstack.postgres import Postgres
from component.store import Store

_databases = iter(range(10_000))


@pytest.fixture(scope="session")
async def postgres() -> AsyncIterator[Postgres]:
    async with Postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request, tmp_path: Path, postgres: Postgres) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    else:
        url = await postgres.create_database(f"store{next(_databases)}")
    db = create_engine(url)
    await upgrade(db)
    yield db
    await db.dispose()


@pytest.fixture
def store(engine: AsyncEngine) -> Store:
    return Store(engine, SecretBox(generate_key()))
