"""The operator's command line, run as a real process."""

import asyncio
import os
import signal
import sys
from importlib.metadata import version
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory
from harness import FAKE_JID, gateway_config, write_config
from registration_helpers import get_registration, submit

from component.db import alembic_config, create_engine

TESTS = Path(__file__).parents[1]


async def cli(*args: str, timeout: float = 60) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "component", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode, output.decode()


async def test_check_config_names_the_problem(tmp_path):
    config = write_config(tmp_path / "c.yaml", {"allowed_domains": [], "bridges": {}})
    code, output = await cli("check-config", "-c", str(config))
    assert code == 2
    assert "secret_key: Field required" in output
    assert "allowed_domains: List should have at least 1 item" in output


async def run_gateway(config: Path) -> asyncio.subprocess.Process:
    """`xmpp-gateway run` as its own process, its log readable line by line."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "component", "run", "-c", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
    )  # fmt: skip


async def stop_gateway(process: asyncio.subprocess.Process) -> str:
    """SIGTERM, then the rest of its log; the process must exit cleanly."""
    process.send_signal(signal.SIGTERM)
    output, _ = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 0, output.decode()
    return output.decode()


async def log_lines_until(process: asyncio.subprocess.Process, text: str, count: int = 1):
    """Log lines read until `count` of them contain `text` (at most 30 s)."""
    assert process.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(30):
        while sum(text in line for line in lines) < count:
            line = (await process.stdout.readline()).decode()
            assert line, "gateway exited:\n" + "".join(lines)
            lines.append(line)
    return lines


async def test_version():
    code, output = await cli("--version")
    assert (code, output.strip()) == (0, f"xmpp-gateway {version('xmpp-gateway')}")


async def test_run_creates_the_schema_in_an_empty_database(prosody, client, tmp_path):
    config = write_config(tmp_path / "c.yaml", gateway_config(prosody, tmp_path / "g.db"))
    mark = prosody.log_mark()
    process = await run_gateway(config)
    try:
        await prosody.wait_component_connected(FAKE_JID, since=mark)
        await submit(client, FAKE_JID, username="alice", password="hunter2")
        assert (await get_registration(client, FAKE_JID))["register"]["registered"]
    finally:
        log = await stop_gateway(process)
    assert "created the database schema" in log


async def test_run_refuses_an_older_schema_then_upgrade_fixes_it(prosody, tmp_path):
    config = write_config(tmp_path / "c.yaml", gateway_config(prosody, tmp_path / "g.db"))
    previous = ScriptDirectory.from_config(alembic_config()).get_revision("head").down_revision
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'g.db'}")
    async with engine.begin() as connection:  # the schema of the release before this one
        await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), previous))
    await engine.dispose()
    code, output = await cli("run", "-c", str(config))
    assert code == 3
    assert "xmpp-gateway db upgrade" in output
    code, output = await cli("db", "upgrade", "-c", str(config))
    assert (code, output.strip().splitlines()[-1]) == (0, "database is up to date")


async def test_a_wrong_secret_names_the_option_and_the_next_try(prosody, tmp_path):
    settings = gateway_config(prosody, tmp_path / "g.db")
    settings["bridges"]["fake"]["secret"] = "not-the-secret"
    settings["reconnect"]["auth_failure_delay"] = 0.3
    process = await run_gateway(write_config(tmp_path / "c.yaml", settings))
    try:
        lines = await log_lines_until(process, "server refused", count=2)
    finally:
        await stop_gateway(process)
    refusal = next(line for line in lines if "server refused" in line)
    assert "check bridges.fake.secret" in refusal
    assert "retrying in 0.3 s" in refusal
    assert "not-the-secret" not in "".join(lines)


async def test_run_serves_and_stops_cleanly_on_sigterm(prosody, client, tmp_path):
    config = write_config(tmp_path / "c.yaml", gateway_config(prosody, tmp_path / "g.db"))
    assert (await cli("db", "upgrade", "-c", str(config)))[0] == 0
    mark = prosody.log_mark()
    process = await run_gateway(config)
    try:
        await prosody.wait_component_connected(FAKE_JID, since=mark)
        await submit(client, FAKE_JID, username="alice", password="hunter2")
        assert (await get_registration(client, FAKE_JID))["register"]["registered"]
    finally:
        log = await stop_gateway(process)
    assert "registered with fake" in log and "stopped" in log
    assert "hunter2" not in log  # secrets never reach the log

    code, listing = await cli("users", "list", "-c", str(config))
    assert (code, listing.split()) == (0, [client.boundjid.bare, "fake"])
    code, _ = await cli("users", "remove", client.boundjid.bare, "-c", str(config))
    assert code == 0
    assert (await cli("users", "list", "-c", str(config)))[1].strip() == ""
    assert (await cli("users", "remove", client.boundjid.bare, "-c", str(config)))[0] == 1


async def test_generate_key():
    code, output = await cli("generate-key")
    assert code == 0 and len(output.strip()) == 44
