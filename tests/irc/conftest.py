"""Fixtures for the IRC bridge: a real ngIRCd, sessions wired to a RecordingSink, peers."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
from irc_helpers import Harness

from bridges.irc.devstack import NgIrcd


def _require_ngircd() -> None:
    if shutil.which("ngircd") is None:
        pytest.fail("ngircd is not installed: run bash .ci/setup")


@pytest.fixture
async def ngircd() -> AsyncIterator[NgIrcd]:
    """ngIRCd without flood throttling: most tests are about behaviour, not pacing."""
    _require_ngircd()
    async with NgIrcd(flood_throttling=False) as server:
        yield server


@pytest.fixture
async def throttled_ngircd() -> AsyncIterator[NgIrcd]:
    """ngIRCd with its default penalty throttling (`MaxPenaltyTime = -1`)."""
    _require_ngircd()
    async with NgIrcd(flood_throttling=True) as server:
        yield server


@pytest.fixture
async def irc(ngircd: NgIrcd) -> AsyncIterator[Harness]:
    harness = Harness(ngircd)
    yield harness
    await harness.close()


@pytest.fixture
async def throttled_irc(throttled_ngircd: NgIrcd) -> AsyncIterator[Harness]:
    harness = Harness(throttled_ngircd)
    yield harness
    await harness.close()


@pytest.fixture
async def tls_irc() -> AsyncIterator[Harness]:
    """ngIRCd with a TLS port whose self-signed cert is in `server.ca_file`."""
    _require_ngircd()
    async with NgIrcd(tls=True, flood_throttling=False) as server:
        harness = Harness(server)
        yield harness
        await harness.close()
