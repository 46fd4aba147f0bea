"""Core throughput and latency: a real client ↔ Prosody ↔ gateway ↔ fake bridge echo.

Measures what the component itself costs, with no legacy network behind it: every
message a client sends is routed through its lane to the fake session, which answers
with an echo event that Outbound turns into a stanza. Prints messages/s for a burst
and latency percentiles for a paced run, and the gateway process's RSS.

    .venv/bin/python bench/core_echo.py [--burst 2000] [--paced 500 --rate 50]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bridges.timeouts import within

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from harness import FAKE_JID, FAKE_SECRET, PASSWORD, gateway_config, start_app  # noqa: E402
from registration_helpers import register_and_subscribe  # noqa: E402
from xmpp_client import TestClient  # noqa: E402

from component.devstack.prosody import Prosody  # noqa: E402

BOB = f"bob@{FAKE_JID}"


class Timing:
    """Records when each echo arrives, keyed by the message number in its body."""

    def __init__(self, client: TestClient) -> None:
        self.arrived: dict[int, float] = {}
        self.done = asyncio.Event()
        self.expected = 0
        client.add_event_handler("message", self._on_message)

    def _on_message(self, message: object) -> None:
        body = message["body"]  # type: ignore[index]
        if body.startswith("echo: "):
            self.arrived[int(body.split()[-1])] = time.perf_counter()
            if len(self.arrived) >= self.expected:
                self.done.set()

    def expect(self, count: int) -> None:
        self.arrived.clear()
        self.expected = count
        self.done.clear()


async def main(burst: int, paced: int, rate: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with Prosody(components={FAKE_JID: FAKE_SECRET}) as prosody:
            app = await start_app(gateway_config(prosody, Path(tmp) / "bench.db"), Path(tmp))
            await within(app.gateways[0].link_up.wait(), 15)
            jid = await prosody.register("bench", PASSWORD)
            client = await TestClient(f"{jid}/bench", PASSWORD).login(
                prosody.host, prosody.c2s_port
            )
            await register_and_subscribe(client, FAKE_JID, username="bench", password="pw")
            timing = Timing(client)

            timing.expect(burst)
            started = time.perf_counter()
            for n in range(burst):
                client.send_message(mto=BOB, mbody=f"burst {n}", mtype="chat")
            await within(timing.done.wait(), 120)
            elapsed = time.perf_counter() - started
            in_order = sorted(timing.arrived, key=timing.arrived.__getitem__) == list(range(burst))
            print(
                f"burst: {burst} round trips in {elapsed:.2f} s = {burst / elapsed:.0f} msg/s"
                f" (each is 2 stanzas through the gateway), in order: {in_order}"
            )

            timing.expect(paced)
            sent: dict[int, float] = {}
            for n in range(paced):
                sent[n] = time.perf_counter()
                client.send_message(mto=BOB, mbody=f"paced {n}", mtype="chat")
                await asyncio.sleep(1 / rate)
            await within(timing.done.wait(), 60)
            latencies = sorted((timing.arrived[n] - sent[n]) * 1000 for n in range(paced))
            p50 = statistics.median(latencies)
            p99 = latencies[int(len(latencies) * 0.99) - 1]
            print(f"paced {rate:.0f} msg/s: round-trip latency p50 {p50:.2f} ms, p99 {p99:.2f} ms")
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"max RSS of the benchmark process (gateway + client): {rss:.0f} MiB")
            await client.close()
            await app.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--paced", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0)
    args = parser.parse_args()
    asyncio.run(main(args.burst, args.paced, args.rate))
