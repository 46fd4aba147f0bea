"""`hot_value`: a dataclass frozen for the type checker, and plain at run time.

A frozen dataclass's `__init__` sets each field through `object.__setattr__`, which
made it several times as slow to build as a plain one (`events.Message`, a room
message: 2.4 against 0.5 µs; `bench/value_bench.py`), and a room message builds three
or four such values on its way through the gateway, in each direction. The values
built for every message use this instead: `mypy --strict` (which CI runs) still
refuses any assignment to a field, and they compare and hash by their fields like
frozen ones (`unsafe_hash` is safe here because nothing assigns to them). Values
built rarely stay `dataclass(frozen=True)`, frozen at run time too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar, dataclass_transform

T = TypeVar("T")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def hot_value(cls: type[T]) -> type[T]:
    """`@dataclass(frozen=True, slots=True)` for mypy; without the run-time freeze."""
    return dataclass(slots=True, unsafe_hash=True)(cls)
