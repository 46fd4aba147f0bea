"""Fixtures for the mail bridge tests: a fresh mail system per test (about 0.4 s).

Like the other daemon fixtures, a missing Dovecot fails the tests rather than skipping
them: `.ci/setup` installs it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from mail_helpers import options_for

from bridges.mail import MailBridge
from bridges.mail.devstack import MailServer


@pytest.fixture
async def mail() -> AsyncIterator[MailServer]:
    async with MailServer() as server:
        yield server


@pytest.fixture
def bridge(mail: MailServer) -> MailBridge:
    return MailBridge(options_for(mail))
