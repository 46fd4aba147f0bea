"""What building the values made for every message costs: each `hot_value` class
(`bridges.hot_value`) against a frozen dataclass twin with the same fields, in µs.

    .venv/bin/python bench/value_bench.py [--number 200000]
"""

from __future__ import annotations

import argparse
import dataclasses
import timeit
from datetime import UTC, datetime
from typing import Any

from bridges import events
from bridges.address import Address, AddressKind
from bridges.irc.chathistory import Anchor
from bridges.irc.connection import Outgoing
from bridges.irc.protocol import Line as IrcLine
from component.archive import Line

ROOM = Address(AddressKind.GROUP, "#chan%irc.example.org")
NOW = datetime.now(UTC)
BUILT: dict[type, tuple[tuple[Any, ...], dict[str, Any]]] = {
    IrcLine: (("PRIVMSG",), {"params": ["#chan", "hello"], "prefix": "nick!u@h", "tags": {}}),
    Anchor: ((None, None), {}),
    events.Message: (
        (ROOM, "hello"),
        {"nick": "nick", "timestamp": None, "sent": None, "highlight": False, "occupant_id": "n"},
    ),
    events.Delivered: ((ROOM, "id-1", None, None), {}),
    Outgoing: (("PRIVMSG #chan :hello", None), {}),
    Line: (
        ("user@example.org", "#chan%irc.example.org", "id-1", NOW, "nick", "hello"),
        {"kind": "message", "legacy_id": None, "occupant_id": "n"},
    ),
}
"""Each hot value with the arguments the IRC bridge's room path gives it."""


def frozen_twin(cls: type) -> type:
    """`cls`'s fields and defaults as a `dataclass(frozen=True, slots=True)`."""
    specs = []
    for spec in dataclasses.fields(cls):
        default: Any = dataclasses.field(default=spec.default)
        if spec.default_factory is not dataclasses.MISSING:
            default = dataclasses.field(default_factory=spec.default_factory)
        elif spec.default is dataclasses.MISSING:
            default = dataclasses.field()
        specs.append((spec.name, spec.type, default))
    return dataclasses.make_dataclass(cls.__name__, specs, frozen=True, slots=True)


def microseconds(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], number: int) -> float:
    return min(timeit.repeat(lambda: cls(*args, **kwargs), number=number, repeat=5)) / number * 1e6


def main(number: int) -> None:
    print(f"µs to build each value, best of 5 runs of {number:,}: hot_value / frozen dataclass")
    for cls, (args, kwargs) in BUILT.items():
        hot = microseconds(cls, args, kwargs, number)
        frozen = microseconds(frozen_twin(cls), args, kwargs, number)
        name = f"{cls.__module__}.{cls.__qualname__}"
        print(f"  {name:32} {hot:5.2f} / {frozen:5.2f}  ({frozen / hot:.1f}x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000)
    main(parser.parse_args().number)
