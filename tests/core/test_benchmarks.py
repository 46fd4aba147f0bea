"""The benchmarks still run: each with tiny parameters, as its own process.

CI does not run bench/ for its figures (they need a quiet machine), so nothing else
notices when one stops working: irc_latency_breakdown.py failed with a KeyError once
live room messages became text, and archive_bench.py's MAM pages could come back
short. These runs check that each finishes and prints its figures, not
what the figures are.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


async def run_bench(script: str, *args: str, timeout: float = 240) -> str:
    """`script`'s output (stdout and stderr) once it has exited 0."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCH / script),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(timeout):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-3000:]
    return text


BENCHMARKS = {
    "latency breakdown": (
        ["irc_latency_breakdown.py"],
        ["gateway parse → stanza sent", "end to end"],
    ),
    "ours side by side": (
        [
            "irc_vs_biboumi.py",
            *("--only", "ours", "--burst", "200", "--rounds", "1", "--paced", "20"),
            *("--users", "1", "--many", "0", "--flood", "0"),
        ],
        ["on ÷ archive off", "Prosody's CPU s per 1,000", "burst ÷ Prosody alone"],
    ),
    "ours side by side, through InspIRCd": (
        [
            "irc_vs_biboumi.py",
            *("--ircd", "inspircd", "--only", "ours", "--burst", "200", "--rounds", "1"),
            *("--paced", "20", "--users", "1", "--many", "0", "--flood", "0"),
        ],
        ["InspIRCd (IRCv3)", "IRC peer → InspIrcd → IRC peer", "XMPP→IRC CPU s per 1,000"],
    ),
    "Prosody alone": (
        ["irc_vs_biboumi.py", "--alone", "--burst", "200", "--rounds", "1"],
        ["room messages of each gateway's", "ours, archive on", "biboumi, history off"],
    ),
    "archive": (
        [
            "archive_bench.py",
            *("--lines", "3000", "--queries", "100", "--burst", "200", "--rounds", "1"),
            *("--databases", "sqlite"),
        ],
        ["sqlite: MAM page of 50, after a random id", "archive on / off"],
    ),
    "archive pages per line": (
        ["archive_pages.py", "--lines", "400"],
        ["sqlite      own lines, origin-id = client id", "postgresql  others' lines", "pages"],
    ),
    "building values": (
        ["value_bench.py", "--number", "1000"],
        ["hot_value / frozen dataclass", "component.archive.Line", "bridges.events.Message"],
    ),
    "component echo": (
        ["core_echo.py", "--burst", "100", "--paced", "20"],
        ["in order: True"],
    ),
}
"""Per benchmark: its script and tiny arguments, and lines its output must hold."""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", BENCHMARKS)
async def test_the_benchmark_runs_and_prints_its_figures(name):
    command, printed = BENCHMARKS[name]
    output = await run_bench(*command)
    for expected in printed:
        assert expected in output
    assert "out of order" not in output  # the side-by-side benchmark's order check
