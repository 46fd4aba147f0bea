"""Fixtures that run real daemons on 127.0.0.1 for the tests in this directory.

Function-scoped: each daemon starts in well under a second (PostgreSQL about 1 s, mostly
initdb), so every test gets fresh state and may restart its servers freely.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest

from bridges.irc.devstack import InspIrcd, NgIrcd
from bridges.mail.devstack import MailServer
from component.devstack.postgres import PG_BIN, Postgres
from component.devstack.prosody import Prosody

COMPONENT_JID = "irc.localhost"
COMPONENT_SECRET = "secret1"
MAIL_USERS = {"alice": "alice-pw", "bob": "bob-pw"}


def _require(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None and not (PG_BIN / p).exists()]
    if missing:
        pytest.fail(f"not installed: {', '.join(missing)} (run bash .ci/setup)")


@pytest.fixture
async def prosody() -> AsyncIterator[Prosody]:
    _require("prosody", "prosodyctl")
    async with Prosody(components={COMPONENT_JID: COMPONENT_SECRET}) as server:
        yield server


@pytest.fixture
async def ngircd() -> AsyncIterator[NgIrcd]:
    _require("ngircd", "openssl")
    async with NgIrcd(tls=True, flood_throttling=False) as server:
        yield server


@pytest.fixture
async def inspircd() -> AsyncIterator[InspIrcd]:
    _require("inspircd", "setpriv")
    async with InspIrcd() as server:
        yield server


@pytest.fixture
async def mail_server() -> AsyncIterator[MailServer]:
    _require("dovecot", "openssl")
    async with MailServer(users=MAIL_USERS) as server:
        yield server


@pytest.fixture
async def postgres() -> AsyncIterator[Postgres]:
    _require("initdb", "pg_ctl", "runuser")
    async with Postgres() as server:
        yield server
