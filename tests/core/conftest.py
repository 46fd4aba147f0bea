"""PostgreSQL for the tests of several gateway processes on one database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from itertools import count

import pytest

from component.devstack.postgres import Postgres

_databases = count()


@pytest.fixture(scope="module")
async def postgres() -> AsyncIterator[Postgres]:
    async with Postgres() as server:
        yield server


@pytest.fixture
async def database_url(postgres: Postgres) -> str:
    """A fresh database on the module's PostgreSQL."""
    return await postgres.create_database(f"standby{next(_databases)}")
