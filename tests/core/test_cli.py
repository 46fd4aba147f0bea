"""The operator's command line, run as a real process."""

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from importlib.metadata import version
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from harness import FAKE_JID, FAKE_SECRET, gateway_config, write_config
from registration_helpers import get_registration, submit

from bridges.timeouts import within
from component.cli import EXIT_THREADS_HUNG, THREADS_GRACE
from component.db import alembic_config, create_engine
from component.devstack.postgres import Postgres
from component.devstack.process import DaemonError

TESTS = Path(__file__).parents[1]


async def cli(*args: str, timeout: float = 60) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "component", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
    )  # fmt: skip
    output, _ = await within(process.communicate(), timeout)
    return process.returncode, output.decode()


async def test_check_config_names_the_problem(tmp_path):
    config = write_config(tmp_path / "c.yaml", {"allowed_domains": [], "bridges": {}})
    code, output = await cli("check-config", "-c", str(config))
    assert code == 2
    assert "secret_key: Field required" in output
    assert "allowed_domains: List should have at least 1 item" in output


async def test_version():
    code, output = await cli("--version")
    assert (code, output.strip()) == (0, f"xmpp-gateway {version('xmpp-gateway')}")


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A new, empty database of each kind an operator may give `run`."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
        return
    async with Postgres() as server:
        yield await server.create_database("gateway")


async def test_run_refuses_an_older_schema_then_upgrade_fixes_it(prosody, tmp_path, database_url):
    config = gateway_config(prosody, tmp_path / "g.db", database_url=database_url)
    config_path = write_config(tmp_path / "c.yaml", config)
    previous = ScriptDirectory.from_config(alembic_config()).get_revision("head").down_revision
    engine = create_engine(database_url)
    async with engine.begin() as connection:  # the schema of the release before this one
        await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), previous))
    await engine.dispose()
    code, output = await cli("run", "-c", str(config_path))
    assert code == 3, output
    assert "xmpp-gateway db upgrade" in output
    code, output = await cli("db", "upgrade", "-c", str(config_path))
    assert (code, output.strip().splitlines()[-1]) == (0, "database is up to date")


async def test_run_on_an_empty_database_serves_and_stops_cleanly_on_sigterm(
    own_prosody, client_factory, gateway_factory, database_url
):
    client = await client_factory(own_prosody)
    gateway = await gateway_factory(own_prosody, empty_database=True, database_url=database_url)
    try:
        await submit(client, FAKE_JID, username="alice", password="hunter2")
        assert (await get_registration(client, FAKE_JID))["register"]["registered"]
    finally:
        assert await gateway.stop() == 0
    log = gateway.log_text()
    assert "created the database schema" in log  # no `db upgrade` needed the first time
    assert "registered with fake" in log and "stopped" in log
    assert "hunter2" not in log  # secrets never reach the log

    config = str(gateway.config_path)
    code, listing = await cli("users", "list", "-c", config)
    assert (code, listing.split()) == (0, [client.boundjid.bare, "fake"])
    code, _ = await cli("users", "remove", client.boundjid.bare, "-c", config)
    assert code == 0
    assert (await cli("users", "list", "-c", config))[1].strip() == ""
    assert (await cli("users", "remove", client.boundjid.bare, "-c", config))[0] == 1


async def test_generate_key():
    code, output = await cli("generate-key")
    assert code == 0 and len(output.strip()) == 44


async def test_gateway_process_that_exits_says_why(prosody, gateway_factory):
    """The test launcher gives up at once when the gateway exits, with its log."""
    fake = {"jid": FAKE_JID, "secret": FAKE_SECRET, "plugin": "fake_bridge:NoSuchBridge"}
    started = time.monotonic()
    with pytest.raises(DaemonError, match="exited") as failed:
        await gateway_factory(prosody, bridges={"fake": fake})
    assert time.monotonic() - started < 15  # not the readiness timeout
    assert "bridges.fake.plugin" in str(failed.value)


async def test_a_thread_left_running_cannot_keep_a_stopped_gateway_alive(
    own_prosody, gateway_factory
):
    """A stranded database thread once made a gateway log "stopped" and never exit: the
    exit is bounded, and its code and log say what happened."""
    bridges = {
        "fake": {
            "jid": FAKE_JID, "secret": FAKE_SECRET, "plugin": "fake_bridge:FakeBridge",
            "strand_a_thread": True,
        }
    }  # fmt: skip
    gateway = await gateway_factory(own_prosody, bridges=bridges)
    mark = gateway.log_mark()
    assert await gateway.stop(timeout=THREADS_GRACE + 10) == EXIT_THREADS_HUNG
    assert "threads still running" in gateway.log_text(mark)
    assert "stranded" in gateway.log_text(mark)
