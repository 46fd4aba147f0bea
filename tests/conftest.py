"""Fixtures that run the real XMPP server and the gateway in-process.

Prosody is started once per test session (fast tests share it); tests that restart it
get their own. The gateway under test is the production App with the fake bridge,
loaded through its import path like any third-party plugin.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from harness import FAKE_JID, FAKE_SECRET, PASSWORD, gateway_config, start_app
from xmpp_client import TestClient

from component.app import App
from component.devstack.prosody import Prosody

_accounts = itertools.count()


@pytest.fixture(scope="session")
async def prosody() -> AsyncIterator[Prosody]:
    async with Prosody(components={FAKE_JID: FAKE_SECRET}) as server:
        yield server


@pytest.fixture
async def own_prosody() -> AsyncIterator[Prosody]:
    """A Prosody of the test's own, for tests that stop or restart the server."""
    async with Prosody(components={FAKE_JID: FAKE_SECRET}) as server:
        yield server


GatewayFactory = Callable[..., Awaitable[App]]


@pytest.fixture
async def gateway_factory(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """Start gateways (stopped at teardown); waits until the component is connected."""
    apps: list[App] = []

    async def start(server: Prosody, db_path: Path | None = None, **overrides: Any) -> App:
        config = gateway_config(server, db_path or tmp_path / "gateway.db", **overrides)
        app = await start_app(config, tmp_path)
        apps.append(app)
        await asyncio.wait_for(app.gateways[0].link_up.wait(), 15)
        return app

    yield start
    for app in apps:
        await app.stop()


@pytest.fixture
async def gateway(prosody: Prosody, gateway_factory: GatewayFactory) -> App:
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
