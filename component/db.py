"""Engine creation and schema migrations (Alembic, configured in code).

Alembic (with Mako, ~8 MiB resident) is imported only when a migration runs: a start
on a current schema compares the database's `alembic_version` with `migrations.HEAD`.

`run` creates the schema in an empty database, so a first start needs no extra step,
but refuses to start on a database whose schema is behind the code and tells the
operator to run `xmpp-gateway db upgrade`: upgrading a shared PostgreSQL database that
holds data is a decision an operator makes, not something a restart should do behind
their back.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, event, inspect, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import migrations
from component.config import DatabasePool

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig


class SchemaOutdated(Exception):
    """The database needs `xmpp-gateway db upgrade` before the gateway can run."""


def create_engine(url: str, pool: DatabasePool | None = None) -> AsyncEngine:
    """An async engine; SQLite gets foreign keys enforced (off by default there) and,
    for a file, write-ahead logging (see `_sqlite_pragmas`). PostgreSQL's pool is
    sized by `pool` (config `database_pool`)."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url)
    else:
        pool = pool or DatabasePool()
        engine = create_async_engine(
            url,
            pool_pre_ping=True,
            pool_size=pool.size,
            max_overflow=pool.max_overflow,
            pool_timeout=pool.timeout,
        )
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Foreign keys on; WAL with `synchronous=NORMAL` for a file.

    WAL lets readers run beside the archive's writer without waiting for its lock
    (`local_reader` depends on it), and a commit costs no fsync: a power cut may lose
    the last transactions, never the database's consistency (the archive's promise is
    "at most the batch in flight" already).
    """
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode")
    if cursor.fetchone()[0] not in ("memory", "wal"):
        cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def local_reader(engine: AsyncEngine) -> Engine | None:
    """A synchronous engine on the same SQLite file, for the archive's reads and
    writes made in the calling thread (component.archive); None for PostgreSQL
    (asyncpg needs no thread) and for an in-memory SQLite, which another connection
    could not see."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    # A lock held by another writer fails fast instead of holding the event loop.
    reader = create_sync_engine(url.set(drivername="sqlite"), connect_args={"timeout": 0.05})
    event.listen(reader, "connect", _sqlite_pragmas)
    return reader


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    """Alembic settings built in code, so no alembic.ini is needed at run time."""
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.attributes["connection"] = connection
    return cfg


def script_head() -> str | None:
    """The newest migration as Alembic finds it (`migrations.HEAD` must equal it)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def upgrade(engine: AsyncEngine) -> None:
    """Apply every pending migration."""

    def _upgrade(connection: Connection) -> None:
        from alembic import command

        command.upgrade(alembic_config(connection), "head")

    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision Alembic recorded in the database (None: none yet)."""

    def read(sync: Connection) -> str | None:
        if not inspect(sync).has_table("alembic_version"):
            return None
        return sync.execute(text("SELECT version_num FROM alembic_version")).scalar()

    async with engine.connect() as connection:
        return await connection.run_sync(read)


async def ensure_current(engine: AsyncEngine) -> None:
    """Raise SchemaOutdated unless the database is at the newest migration."""
    current, head = await current_revision(engine), migrations.HEAD
    if current != head:
        raise SchemaOutdated(
            f"database schema is at {current or 'nothing'}, the code needs {head}: "
            "run `xmpp-gateway db upgrade -c CONFIG` first"
        )


async def is_empty(engine: AsyncEngine) -> bool:
    """Whether the database holds no table at all (a fresh SQLite file or PostgreSQL db)."""
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    return not names


async def prepare(engine: AsyncEngine) -> bool:
    """Create the schema in an empty database, else check it is current.

    Returns whether the schema was created; raises SchemaOutdated for an older schema.
    """
    if await is_empty(engine):
        await upgrade(engine)
        return True
    await ensure_current(engine)
    return False
