"""When the archive's writer commits a burst (component.archive._write_due), on a
fake clock: seconds since the batch's first line, and whether a line came meanwhile."""

from __future__ import annotations

import pytest

from component import archive
from component.archive import _write_due


@pytest.fixture(autouse=True)
def timers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "QUIET", 0.03)
    monkeypatch.setattr(archive, "MAX_DELAY", 1.0)


def test_the_writer_waits_while_lines_keep_coming() -> None:
    assert _write_due(0.0, quiet=False) == 0.03
    assert _write_due(0.6, quiet=False) == 0.03


def test_a_quiet_wait_ends_the_burst() -> None:
    assert _write_due(0.03, quiet=True) == 0.0
    assert _write_due(0.9, quiet=True) == 0.0


def test_no_line_waits_beyond_the_longest_delay() -> None:
    assert _write_due(0.99, quiet=False) == pytest.approx(0.01)
    assert _write_due(1.0, quiet=False) == 0.0
    assert _write_due(5.0, quiet=False) == 0.0
