"""The migrations build exactly the schema the models describe, on both databases."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from component.models import Base


async def test_upgraded_schema_matches_the_models(engine):
    async with engine.connect() as db:
        diff = await db.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    assert diff == []
