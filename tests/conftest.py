"""Fixtures that run the real XMPP server and the gateway as its own process.

The gateway under test is `xmpp-gateway run -c <config>`, started as an operator starts
it, with the fake bridge loaded through its import path like any third-party plugin;
the fake bridge reports what it does to the `fake` fixture. Prosody and one gateway on
it (`gateway`) are started once per test session: fast tests share them, each with
accounts of its own. Tests that need another config, or stop or restart something,
start their own (`own_prosody`, `gateway_factory`); a second gateway must not go on
the shared Prosody, where the shared one holds the component name. A failed test's
report carries what each gateway it used logged meanwhile.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from pathlib import Path
from typing import Any

import pytest
from fake_bridge import FakeReports, FakeView, fake_reports
from harness import FAKE_JID, FAKE_SECRET, PASSWORD, TESTS_DIR, gateway_config
from xmpp_client import TestClient

from component.crypto import generate_key
from component.devstack.gateway import GatewayProcess
from component.devstack.prosody import Prosody

_accounts = itertools.count()
_GATEWAYS = pytest.StashKey[list[tuple[GatewayProcess, int]]]()
_LOG_LINES = 300


def _watch_log(request: pytest.FixtureRequest, gateway: GatewayProcess) -> None:
    """Have the test's report show what `gateway` logs from now on, if the test fails."""
    request.node.stash.setdefault(_GATEWAYS, []).append((gateway, gateway.log_mark()))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for gateway, mark in item.stash.get(_GATEWAYS, []):
            lines = gateway.log_text(mark).splitlines()[-_LOG_LINES:]
            report.sections.append((f"gateway log {gateway.log_path}", "\n".join(lines)))


@pytest.fixture(scope="session")
async def prosody() -> AsyncIterator[Prosody]:
    async with Prosody(components={FAKE_JID: FAKE_SECRET}) as server:
        yield server


@pytest.fixture
async def own_prosody() -> AsyncIterator[Prosody]:
    """A Prosody of the test's own, for tests that stop or restart the server."""
    async with Prosody(components={FAKE_JID: FAKE_SECRET}) as server:
        yield server


@pytest.fixture(scope="session")
async def fake_reports_server() -> AsyncIterator[FakeReports]:
    async with fake_reports() as reports:
        yield reports


@pytest.fixture
def fake(fake_reports_server: FakeReports) -> Generator[FakeView]:
    """What fake bridges in gateway processes do for this test's users (`client_factory`
    adds each account it logs in): `fake.wait_for("start")`."""
    view = fake_reports_server.view()
    yield view
    fake_reports_server.forget(view)


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
    request: pytest.FixtureRequest,
    tmp_path: Path,
    fake_reports_server: FakeReports,
    migrated_database: Path,
) -> AsyncIterator[GatewayFactory]:
    """Start gateway processes (stopped at teardown).

    `start(server, wait_connected=True, **overrides)` writes the config for the fake
    bridge on `server` (with `overrides`) and runs it on a fresh copy of the migrated
    database (with `empty_database`, on none: `run` must create the schema, as on an
    operator's first start); by default it returns once every component is connected.
    `start(server, standby_of=gateway, **overrides)` starts another process on
    `gateway`'s config and database (PostgreSQL) and returns once it stands by.
    """
    started: list[GatewayProcess] = []

    async def start(
        server: Prosody,
        *,
        wait_connected: bool = True,
        standby_of: GatewayProcess | None = None,
        empty_database: bool = False,
        **overrides: Any,
    ) -> GatewayProcess:
        run_dir = tmp_path / f"gateway{len(started)}"
        if standby_of is not None:
            gateway = standby_of.sibling(run_dir, **overrides)
        else:
            database = None if empty_database else migrated_database
            gateway = _gateway_process(server, run_dir, database, fake_reports_server, **overrides)
        started.append(gateway)
        _watch_log(request, gateway)
        await gateway.start(wait_connected=wait_connected, standby=standby_of is not None)
        return gateway

    yield start
    for gateway in started:
        await gateway.stop()


def _gateway_process(
    server: Prosody, run_dir: Path, database: Path | None, reports: FakeReports, **overrides: Any
) -> GatewayProcess:
    """A gateway for the fake bridge on `server`, on a copy of `database` (None: a new,
    empty one), reporting to `reports`; `overrides` replace top-level config sections."""
    config = gateway_config(server, run_dir / "gateway.db", **overrides)
    fake_section = config["bridges"].get("fake")
    if fake_section is not None:
        fake_section.setdefault("report_socket", str(reports.socket_path))
    run_dir.mkdir(parents=True)
    if database is not None:
        shutil.copy(database, run_dir / "gateway.db")
    return GatewayProcess(config, run_dir, python_path=[TESTS_DIR], migrate=False)


@pytest.fixture(scope="session")
async def shared_gateway(
    prosody: Prosody,
    tmp_path_factory: pytest.TempPathFactory,
    migrated_database: Path,
    fake_reports_server: FakeReports,
) -> AsyncIterator[GatewayProcess]:
    run_dir = tmp_path_factory.mktemp("shared") / "gateway"
    gateway = _gateway_process(prosody, run_dir, migrated_database, fake_reports_server)
    await gateway.start()
    yield gateway
    await gateway.stop()


@pytest.fixture
def gateway(request: pytest.FixtureRequest, shared_gateway: GatewayProcess) -> GatewayProcess:
    """The session's gateway on `prosody` with the default config; do not stop it."""
    assert shared_gateway.running, "an earlier test stopped the shared gateway"
    _watch_log(request, shared_gateway)
    return shared_gateway


ClientFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def client_factory(fake: FakeView) -> AsyncIterator[Callable[..., Awaitable[TestClient]]]:
    """Log in fresh accounts (a new one per call) with real slixmpp clients."""
    clients: list[TestClient] = []

    async def login(server: Prosody, resource: str = "test") -> TestClient:
        jid = await server.register(f"user{next(_accounts)}", PASSWORD)
        fake.users.add(jid)
        client = TestClient(f"{jid}/{resource}", PASSWORD)
        clients.append(client)
        return await client.login(server.host, server.c2s_port)

    yield login
    for client in clients:
        await client.close()


@pytest.fixture
async def client(prosody: Prosody, client_factory: Any) -> TestClient:
    return await client_factory(prosody)
