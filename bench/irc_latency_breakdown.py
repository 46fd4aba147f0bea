"""Where the IRC → XMPP latency goes: ngIRCd, the gateway itself, or Prosody.

Runs the gateway in this process with two probes around it (when an IRC line is
parsed, when its stanza is handed to the component stream) and prints percentiles per
leg for 500 channel messages at 50 msg/s. The end-to-end figure of irc_vs_biboumi.py
includes the servers and the machine; this separates the gateway's own share.

    .venv/bin/python bench/irc_latency_breakdown.py
"""

from __future__ import annotations

import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bridges.timeouts import within

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE)]

from harness import start_app  # noqa: E402
from irc_vs_biboumi import CHANNEL, PASSWORD, IrcPeer, RoomUser, gateway_config  # noqa: E402

from bridges.irc import protocol  # noqa: E402
from bridges.irc.devstack import NgIrcd  # noqa: E402
from component.devstack.prosody import Prosody  # noqa: E402
from component.gateway import Gateway  # noqa: E402

COUNT, RATE = 500, 50.0
PACED = re.compile(r"paced (\d+)")
parsed_at: dict[str, float] = {}
sent_at: dict[str, float] = {}


def install_probes() -> None:
    """Record, per message number, when the gateway parsed it and when it sent it on."""
    parse, send = protocol.Line.parse, Gateway.send

    def parse_probe(text: str) -> Any:
        if " :paced " in text:
            parsed_at[text.rsplit(" ", 1)[-1]] = time.perf_counter()
        return parse(text)

    def send_probe(self: Gateway, data: Any, use_filters: bool = True) -> None:
        # A live room message is text already (component.wire), anything else a stanza.
        body = data if isinstance(data, str) else data.xml.findtext("{*}body", "")
        if (found := PACED.search(body)) is not None:
            sent_at[found.group(1)] = time.perf_counter()
        send(self, data, use_filters)

    protocol.Line.parse = staticmethod(parse_probe)  # type: ignore[method-assign]
    Gateway.send = send_probe  # type: ignore[method-assign]


def percentiles(samples_ms: list[float]) -> str:
    ordered = sorted(samples_ms)
    p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)]
    return f"p50 {statistics.median(ordered):6.2f}  p99 {p99:6.2f}  max {ordered[-1]:6.2f} ms"


async def main() -> None:
    install_probes()
    tmp = Path(tempfile.mkdtemp())
    async with (
        Prosody(components={"irc.localhost": "s"}) as server,
        NgIrcd(flood_throttling=False) as irc,
    ):
        app = await start_app(gateway_config(server, irc, tmp / "latency.db", "s"), tmp)
        await within(app.gateways[0].link_up.wait(), 15)
        peer = await IrcPeer.connect("127.0.0.1", irc.port, "peer")
        jid = await server.register("latency", PASSWORD)
        user = RoomUser(f"{jid}/bench", f"{CHANNEL}%127.0.0.1@irc.localhost", "latuser")
        await user.join(server, "irc.localhost")
        sent = []
        for n in range(COUNT):
            sent.append(time.perf_counter())
            peer.send(f"PRIVMSG {CHANNEL} :paced {n}")
            await asyncio.sleep(1 / RATE)
        await user.wait_count(COUNT, "paced ")
        arrived = [at for at, _ in user.received("paced ")]
        keys = [str(n) for n in range(COUNT)]
        legs = {
            "IRC peer → ngIRCd → gateway parse": [
                parsed_at[k] - sent[n] for n, k in enumerate(keys)
            ],
            "gateway parse → stanza sent": [sent_at[k] - parsed_at[k] for k in keys],
            "stanza sent → Prosody → client": [arrived[n] - sent_at[k] for n, k in enumerate(keys)],
            "end to end": [arrived[n] - sent[n] for n in range(COUNT)],
        }
        print(f"{COUNT} channel messages at {RATE:.0f} msg/s")
        for leg, seconds in legs.items():
            print(f"  {leg:36} {percentiles([s * 1000 for s in seconds])}")
        await peer.close()
        user.disconnect()
        await app.stop()


if __name__ == "__main__":
    asyncio.run(main())
