"""Building blocks for tests and benchmarks: the fake bridge's gateway config and app.

Kept out of conftest.py because several test folders have a conftest of their own and
only one module can be imported under the name `conftest`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from component.app import App
from component.config import parse_config
from component.crypto import generate_key
from component.db import create_engine, upgrade
from component.devstack.prosody import Prosody

FAKE_JID = "fake.localhost"
FAKE_SECRET = "fake-secret"
PASSWORD = "pw"


def gateway_config(prosody: Prosody, db_path: Path, **overrides: Any) -> dict[str, Any]:
    """A config dict for the fake bridge on `prosody`, as an operator would write it."""
    config: dict[str, Any] = {
        "server": {"host": prosody.host, "port": prosody.component_port},
        "database_url": f"sqlite+aiosqlite:///{db_path}",
        "secret_key": generate_key(),
        "allowed_domains": [prosody.domain],
        "reconnect": {"initial_delay": 0.1, "max_delay": 0.5, "auth_failure_delay": 0.5},
        "bridges": {
            "fake": {"jid": FAKE_JID, "secret": FAKE_SECRET, "plugin": "fake_bridge:FakeBridge"}
        },
    }
    config.update(overrides)
    return config


async def start_app(config: dict[str, Any], base_dir: Path, *, migrate: bool = True) -> App:
    parsed, bridges = parse_config(config, base_dir)
    if migrate:
        engine = create_engine(parsed.database_url)
        await upgrade(engine)
        await engine.dispose()
    app = App(parsed, bridges)
    await app.start()
    return app


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path
