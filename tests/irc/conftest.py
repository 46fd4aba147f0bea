"""Fixtures for the IRC bridge: a real ngIRCd (or InspIRCd), sessions wired to a
RecordingSink, peers. `any_irc` runs a test against both servers."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
from irc_helpers import Harness, IrcPeer

from bridges.irc.devstack import InspIrcd, NgIrcd


def _require_ngircd() -> None:
    if shutil.which("ngircd") is None:
        pytest.fail("ngircd is not installed: run bash .ci/setup")


def _require_inspircd() -> None:
    if shutil.which("inspircd") is None:
        pytest.fail("inspircd is not installed: run bash .ci/setup")


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


@pytest.fixture(params=["ngircd", "inspircd"])
async def any_irc(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """The same test against ngIRCd (RFC 2812) and InspIRCd 3 (IRCv3 caps, history)."""
    if request.param == "ngircd":
        _require_ngircd()
        server: NgIrcd | InspIrcd = NgIrcd(flood_throttling=False)
    else:
        _require_inspircd()
        server = InspIrcd()
    async with server:
        harness = Harness(server)
        yield harness
        await harness.close()


@pytest.fixture
async def inspircd() -> AsyncIterator[Harness]:
    """InspIRCd 3, which offers IRCv3 caps (echo-message, labeled-response, tags)."""
    _require_inspircd()
    async with InspIrcd() as server:
        harness = Harness(server)
        yield harness
        await harness.close()


@pytest.fixture
async def peers() -> AsyncIterator[list[IrcPeer]]:
    """IRC peers a test connects (it appends them), closed at its end."""
    made: list[IrcPeer] = []
    yield made
    for peer in made:
        await peer.close()


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
