"""Dict lookups keyed by `Address`, which the component does for every stanza.

The keys are (user, room address), as in `component.muc`'s rooms. Printed: nanoseconds
per lookup by the stored key itself (a room parsed once, then looked up by every
stanza), by an equal key built beforehand (hash, then equality), and for an address
built and looked up once (a line from IRC). Best of `--repeat` runs over 1,000 keys; run
it on two commits to compare them.

    .venv/bin/python bench/address_bench.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

from bridges.address import Address, AddressKind

KEYS = 1000
ROUNDS = 100
USER = "alice@example.org"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    names = [f"#chan{i}%irc.example.org" for i in range(KEYS)]
    table = {(USER, Address(AddressKind.GROUP, name)): n for n, name in enumerate(names)}
    stored = list(table)
    equal = [(USER, Address(AddressKind.GROUP, name)) for name in names]

    def look_up(keys: list[tuple[str, Address]]) -> Callable[[], None]:
        def run() -> None:
            for key in keys:
                table[key]

        return run

    def build_and_look_up() -> None:
        for name in names:
            table[USER, Address(AddressKind.GROUP, name)]

    for label, run in (
        ("stored key", look_up(stored)),
        ("equal key", look_up(equal)),
        ("built, looked up", build_and_look_up),
    ):
        best = min(timeit.repeat(run, number=ROUNDS, repeat=args.repeat))
        print(f"{label:18} {best / ROUNDS / KEYS * 1e9:6.0f} ns")


if __name__ == "__main__":
    main()
