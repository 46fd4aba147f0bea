"""`xmpp-gateway demo`: what a newcomer runs first must work end to end."""

import asyncio
import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from slixmpp import Presence
from slixmpp.xmlstream import ET
from xmpp_client import TestClient, eventually

from bridges.timeouts import within


async def test_demo_stack_serves_a_client():
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "component", "demo",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=dict(os.environ),
    )  # fmt: skip
    lines: list[str] = []
    ready = asyncio.Event()

    async def drain() -> None:  # keep reading, or a full pipe would stall the demo
        while line := await process.stdout.readline():
            lines.append(line.decode())
            if "Ctrl-C" in lines[-1]:
                ready.set()

    reader = asyncio.create_task(drain())
    try:
        await within(ready.wait(), 60)
        output = "".join(lines)
        port = int(re.search(r"XMPP server: 127\.0\.0\.1 port (\d+)", output).group(1))
        account = re.search(r"account:\s+(\S+)\s+password: (\S+)", output)
        client = TestClient(f"{account.group(1)}/demo", account.group(2))
        await client.login("127.0.0.1", port)
        for gateway in ("irc.localhost", "mail.localhost"):
            await client.plugin["xep_0030"].get_info(jid=gateway, timeout=20)
        # No registration: the join itself makes the IRC account.
        join = client.make_presence(pto="#demo%localhost@irc.localhost/newcomer")
        join.xml.append(ET.Element("{http://jabber.org/protocol/muc}x"))
        join.send()
        own = await client.wait_for(
            lambda s: isinstance(s, Presence) and s["from"].resource == "newcomer", timeout=30
        )
        assert own["type"] != "error", own
        assert 'code="110"' in str(own)
        await client.close()
    finally:
        process.send_signal(signal.SIGINT)
        await within(process.wait(), 30)
        await reader
    assert process.returncode == 0, "".join(lines)


async def test_ctrl_c_during_start_up_leaves_nothing_running():
    state = Path(tempfile.mkdtemp(prefix="xgw-demo-test-"))
    state.chmod(0o755)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "component", "demo", "--dir", str(state),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=dict(os.environ),
    )  # fmt: skip
    try:
        # Interrupt while the daemons are starting (Prosody's config appears early on).
        await eventually(lambda: (state / "prosody").exists(), 30)
        process.send_signal(signal.SIGINT)
        output, _ = await within(process.communicate(), 30)
        assert process.returncode == 0, output.decode()
        leftover = await asyncio.create_subprocess_exec(
            "pgrep", "-f", str(state), stdout=asyncio.subprocess.PIPE
        )
        pids, _ = await leftover.communicate()
        assert pids.decode().split() == []
    finally:
        if process.returncode is None:
            process.kill()
        shutil.rmtree(state, ignore_errors=True)
