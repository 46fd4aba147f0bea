"""A mail password never reaches the log, whatever its characters, even at DEBUG.

aioimaplib logs every command it sends at DEBUG; a password holding `"` or `\\` goes
out as a literal or quoted string and appeared there in clear.
"""

from __future__ import annotations

import logging

import pytest
from mail_helpers import form

from bridges.mail import MailBridge
from bridges.mail.devstack import MailServer
from component.cli import setup_logging

PASSWORD = 'se"cr\\et Zq9pa$$'
FRAGMENT = "Zq9pa"
"""Part of the password no escaping changes, so a leak is found in any quoting."""


class Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def debug_log():
    root = logging.getLogger()
    saved = {name: logging.getLogger(name).level for name in ("", "slixmpp", "aioimaplib")}
    handler = Everything()
    root.addHandler(handler)
    setup_logging("DEBUG")
    yield handler
    root.removeHandler(handler)
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


async def test_registration_at_debug_never_logs_the_password(
    mail: MailServer, bridge: MailBridge, debug_log: Everything
) -> None:
    await mail.add_user("quoted", PASSWORD)
    await bridge.validate_registration("quoted@xmpp.test", form(mail, "quoted", PASSWORD), None)
    assert any(r.levelno == logging.DEBUG for r in debug_log.records)  # DEBUG was on
    leaks = [r.name for r in debug_log.records if FRAGMENT in r.getMessage()]
    assert not leaks
