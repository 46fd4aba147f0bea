"""The operator's command line, run as a real process."""

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from harness import FAKE_JID, gateway_config, write_config
from registration_helpers import get_registration, submit

from component.devstack.gateway import GatewayProcess
from component.devstack.process import DaemonError

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


async def test_run_refuses_an_outdated_schema_then_upgrade_fixes_it(prosody, tmp_path):
    config = write_config(tmp_path / "c.yaml", gateway_config(prosody, tmp_path / "g.db"))
    assert (await cli("check-config", "-c", str(config)))[0] == 0
    code, output = await cli("run", "-c", str(config))
    assert code == 3
    assert "xmpp-gateway db upgrade" in output
    code, output = await cli("db", "upgrade", "-c", str(config))
    assert (code, output.strip().splitlines()[-1]) == (0, "database is up to date")


async def test_run_serves_and_stops_cleanly_on_sigterm(own_prosody, client_factory, tmp_path):
    prosody = own_prosody  # the shared one serves the shared gateway under the same name
    client = await client_factory(prosody)
    config = write_config(tmp_path / "c.yaml", gateway_config(prosody, tmp_path / "g.db"))
    assert (await cli("db", "upgrade", "-c", str(config)))[0] == 0
    mark = prosody.log_mark()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "component", "run", "-c", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
    )  # fmt: skip
    try:
        await prosody.wait_component_connected(FAKE_JID, since=mark)
        await submit(client, FAKE_JID, username="alice", password="hunter2")
        assert (await get_registration(client, FAKE_JID))["register"]["registered"]
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), 15)
    log = output.decode()
    assert process.returncode == 0, log
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


async def test_gateway_process_that_exits_says_why(prosody, tmp_path):
    """The test launcher gives up at once when the gateway exits, with its log."""
    config = gateway_config(prosody, tmp_path / "never-migrated.db")
    gateway = GatewayProcess(config, tmp_path / "gw", python_path=[TESTS], migrate=False)
    started = time.monotonic()
    with pytest.raises(DaemonError, match="exited") as failed:
        await gateway.start(timeout=30)
    assert time.monotonic() - started < 15  # not the readiness timeout
    assert "xmpp-gateway db upgrade" in str(failed.value)
    assert not gateway.running
