"""`xmpp-gateway demo`: the gateway against a private local stack, for trying it out.

Starts Prosody on 127.0.0.1 with one component per installed bridge, each bridge's own
demo server where it has one (ngIRCd, Dovecot), creates a demo account, writes the
config it uses next to the state, and serves until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
from pathlib import Path
from typing import Any

import yaml

from component.app import serve, stop_on_signals
from component.config import load_config
from component.crypto import generate_key
from component.db import create_engine, upgrade
from component.devstack.prosody import Prosody
from component.plugins import available_bridges, load_bridge_class

DEMO_USER, DEMO_PASSWORD = "demo", "demo"


def _port_or_free(preferred: int) -> int | None:
    """The standard port when it is free, so clients find the server without settings."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            return None
    return preferred


async def run_demo(state_dir: Path | None) -> int:
    """Serve until interrupted; without `state_dir` everything is thrown away at the end."""
    if state_dir is None:
        with tempfile.TemporaryDirectory(prefix="xmpp-gateway-demo-") as scratch:
            return await _run_in(Path(scratch))
    return await _run_in(state_dir)


async def _run_in(run_dir: Path) -> int:
    stop = stop_on_signals()
    run_dir.mkdir(parents=True, exist_ok=True)
    # ngIRCd and Dovecot drop privileges and must be able to reach their files.
    run_dir.chmod(0o755)
    names = available_bridges()
    secrets = {f"{name}.localhost": generate_key()[:16] for name in names}
    async with contextlib.AsyncExitStack() as stack:
        bridges: dict[str, Any] = {}
        for name in names:
            jid = f"{name}.localhost"
            section: dict[str, Any] = {"jid": jid, "secret": secrets[jid]}
            demo = load_bridge_class(name).demo_server(run_dir / name)
            if demo is not None:
                section.update(await stack.enter_async_context(demo))
            bridges[name] = section
        prosody = await stack.enter_async_context(
            Prosody(run_dir / "prosody", secrets, c2s_port=_port_or_free(5222))
        )
        user = await prosody.register(DEMO_USER, DEMO_PASSWORD)
        config_path = run_dir / "config.yaml"
        config_path.write_text(
            yaml.safe_dump(
                {
                    "server": {"host": prosody.host, "port": prosody.component_port},
                    "database_url": f"sqlite+aiosqlite:///{run_dir / 'gateway.db'}",
                    "secret_key": generate_key(),
                    "allowed_domains": [prosody.domain],
                    "bridges": bridges,
                }
            ),
            encoding="utf-8",
        )
        config, loaded = load_config(config_path)
        engine = create_engine(config.database_url)
        await upgrade(engine)
        await engine.dispose()

        def announce() -> None:
            print(
                f"\n  XMPP server: {prosody.host} port {prosody.c2s_port} (no TLS)"
                f"\n  account:     {user}   password: {DEMO_PASSWORD}"
                f"\n  gateways:    {', '.join(secrets)}"
                f"\n  config:      {config_path}\n  Ctrl-C stops everything.\n",
                flush=True,
            )

        if not stop.is_set():  # Ctrl-C during start-up: just tear down what was started
            await serve(config, loaded, on_connected=announce, stop=stop)
    return 0
