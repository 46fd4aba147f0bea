"""What an idle gateway does not load: libraries only some configurations or users need.

Each costs megabytes of resident memory (issue #14: idle RSS ≤ 45 MiB with both bridges
configured), so they are imported by the code path that uses them. Checked in a fresh
interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import subprocess
import sys

LAZY = (
    "aiohttp",  # file transfers (component.files), on the first transfer
    "aioimaplib",  # mail: a session or a registration check
    "aiosmtplib",
    "lxml",  # mail: the first HTML body (html_text)
    "asyncpg",  # PostgreSQL only (component.advisory_lock)
    "sqlalchemy.dialects.postgresql",  # PostgreSQL only (the archive's ON CONFLICT)
    "cryptography",  # the first stored secret sealed or opened
    "alembic",  # a migration
    "prometheus_client",  # metrics.port
    "pygments",  # never: slixmpp colours DEBUG logs with it (component.memory)
    "aiodns",  # never: the system's resolver finds the XMPP server (component.memory)
    "pycares",
    "ctypes",  # once the components are up (component.memory.release_startup_garbage)
)


def test_starting_a_gateway_with_both_bridges_loads_none_of_the_optional_libraries() -> None:
    code = (
        "import sys, component.cli, component.app, bridges.irc, bridges.mail;"
        f"print(' '.join(m for m in {LAZY!r} if sys.modules.get(m) is not None))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded == []
