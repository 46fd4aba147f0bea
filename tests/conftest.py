"""Fixtures that run the real XMPP server and the gateway as its own process.

Prosody is started once per test session (fast tests share it); tests that restart it
get their own. The gateway under test is `xmpp-gateway run -c <config>`, started as an
operator starts it, with the fake bridge loaded through its import path like any
third-party plugin; the fake bridge reports what it does to the `fake` fixture. A
failed test's report carries the log of every gateway it started.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from pathlib import Path
from typing import Any

import pytest
from fake_bridge import FakeReports, fake_reports
from harness import FAKE_JID, FAKE_SECRET, PASSWORD, TESTS_DIR, gateway_config
from xmpp_client import TestClient

from component.crypto import generate_key
from component.devstack.gateway import GatewayProcess
from component.devstack.prosody import Prosody

_accounts = itertools.count()
_GATEWAYS = pytest.StashKey[list[GatewayProcess]]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None]:
    """Attach the log of every gateway process the test started when it failed."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for gateway in item.stash.get(_GATEWAYS, []):
            report.sections.append((f"gateway log {gateway.log_path}", gateway.log_tail()))


@pytest.fixture(scope="session")
async def prosody() -> AsyncIterator[Prosody]:
    async with Prosody(components={FAKE_JID: FAKE_SECRET}) as server:
        yield server


@pytest.fixture
async def own_prosody() -> AsyncIterator[Prosody]:
    """A Prosody of the test's own, for tests that stop or restart the server."""
    async with Prosody(components={FAKE_JID: FAKE_SECRET}) as server:
        yield server


@pytest.fixture
async def fake() -> AsyncIterator[FakeReports]:
    """What the fake bridge inside the gateway process does (`fake.wait_for("start")`)."""
    async with fake_reports() as reports:
        yield reports


@pytest.fixture(scope="session")
async def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database brought up to date once by `xmpp-gateway db upgrade`.

    Each gateway starts on a copy: one process start less per test than running the
    upgrade every time, with the same schema.
    """
    run_dir = tmp_path_factory.mktemp("migrated")
    database = run_dir / "gateway.db"
    config = {
        "database_url": f"sqlite+aiosqlite:///{database}",
        "secret_key": generate_key(),
        "allowed_domains": ["localhost"],
        "bridges": {
            "fake": {"jid": FAKE_JID, "secret": FAKE_SECRET, "plugin": "fake_bridge:FakeBridge"}
        },
    }
    await GatewayProcess(config, run_dir, python_path=[TESTS_DIR]).cli("db", "upgrade")
    return database


GatewayFactory = Callable[..., Awaitable[GatewayProcess]]


@pytest.fixture
async def gateway_factory(
    request: pytest.FixtureRequest, tmp_path: Path, fake: FakeReports, migrated_database: Path
) -> AsyncIterator[GatewayFactory]:
    """Start gateway processes (stopped at teardown).

    `start(server, wait_connected=True, **overrides)` writes the config for the fake
    bridge on `server` (with `overrides`) and runs it on a fresh copy of the migrated
    database; by default it returns once every component is connected.
    """
    started = request.node.stash.setdefault(_GATEWAYS, [])

    async def start(
        server: Prosody, *, wait_connected: bool = True, **overrides: Any
    ) -> GatewayProcess:
        run_dir = tmp_path / f"gateway{len(started)}"
        config = gateway_config(server, run_dir / "gateway.db", **overrides)
        fake_section = config["bridges"].get("fake")
        if fake_section is not None:
            fake_section.setdefault("report_socket", str(fake.socket_path))
        run_dir.mkdir()
        shutil.copy(migrated_database, run_dir / "gateway.db")
        gateway = GatewayProcess(config, run_dir, python_path=[TESTS_DIR], migrate=False)
        started.append(gateway)
        await gateway.start(wait_connected=wait_connected)
        return gateway

    yield start
    for gateway in started:
        await gateway.stop()


@pytest.fixture
async def gateway(prosody: Prosody, gateway_factory: GatewayFactory) -> GatewayProcess:
    return await gateway_factory(prosody)


ClientFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def client_factory() -> AsyncIterator[Callable[[Prosody], Awaitable[TestClient]]]:
    """Log in fresh accounts (a new one per call) with real slixmpp clients."""
    clients: list[TestClient] = []

    async def login(server: Prosody, resource: str = "test") -> TestClient:
        jid = await server.register(f"user{next(_accounts)}", PASSWORD)
        client = TestClient(f"{jid}/{resource}", PASSWORD)
        clients.append(client)
        return await client.login(server.host, server.c2s_port)

    yield login
    for client in clients:
        await client.close()


@pytest.fixture
async def client(prosody: Prosody, client_factory: Any) -> TestClient:
    return await client_factory(prosody)
