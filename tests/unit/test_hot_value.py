"""`bridges.hot_value`: frozen for the type checker, and equal and hashable by fields."""

from __future__ import annotations

import textwrap

from mypy import api

from bridges.hot_value import hot_value


@hot_value
class Point:
    x: int
    y: str = "a"


@hot_value
class Other:
    x: int
    y: str = "a"


def test_values_compare_and_hash_by_their_fields_and_class():
    assert Point(1) == Point(1, "a")
    assert Point(1) != Point(2)
    assert Point(1) != Other(1)
    assert {Point(1): "found"}[Point(1, "a")] == "found"


def test_the_type_checker_refuses_an_assignment_to_a_field(tmp_path):
    """What keeps a hot value frozen: CI's `mypy --strict`, not the run time."""
    source = tmp_path / "assigns.py"
    source.write_text(
        textwrap.dedent(
            """
            from bridges.hot_value import hot_value

            @hot_value
            class Point:
                x: int

            Point(1).x = 2
            """
        )
    )
    report, _, status = api.run(["--strict", "--cache-dir", str(tmp_path / "cache"), str(source)])
    assert status == 1, report
    assert 'Property "x" defined in "Point" is read-only' in report
