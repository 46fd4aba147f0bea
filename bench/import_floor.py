"""What the libraries the issue #14 idle target would have to replace cost, imported alone.

Each row runs in a fresh interpreter: its `setup` imported first (not counted), then
the RSS its own statements added (/proc/self/statm, after a collection). The rows
compare what the gateway uses with what could replace it, for the same work:

* the configuration: pydantic against msgspec, each importing itself and building
  classes with the fields of our configuration's models (read from those models, so
  without their validators);
* the database: SQLAlchemy Core with the SQLite dialect against Core with
  `sqlalchemy.ext.asyncio` (which imports the ORM), and our tables as Core `Table`s
  (unpickled) against our declarative models.

msgspec is not a dependency: give a directory it is installed in (`pip install
--target DIR msgspec`) as `--msgspec`, or its rows are skipped.

    .venv/bin/python bench/import_floor.py [--msgspec DIR] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

MEASURE = r"""
import gc, os, sys
PAGE = os.sysconf("SC_PAGE_SIZE") // 1024
def rss():
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE
exec(compile(sys.argv[1], "setup", "exec"))
before = rss()
exec(compile(sys.argv[2], "measured", "exec"))
print(rss() - before)
"""

CONFIG_MODULES = ("bridges.base", "component.config", "bridges.irc.options", "bridges.mail.config")

PYDANTIC_MODELS = """
import json, sys
from typing import Any, Optional
from pydantic import BaseModel, create_model
models = {}
for name, fields in json.load(open(sys.argv[3])).items():
    models[name] = create_model(
        name, **{field: (eval(kind), None) for field, kind in fields}, __base__=BaseModel
    )
"""

MSGSPEC_STRUCTS = """
import json, sys
from typing import Any, Optional
import msgspec
structs = {}
for name, fields in json.load(open(sys.argv[3])).items():
    structs[name] = msgspec.defstruct(name, [(field, eval(kind), None) for field, kind in fields])
"""


def kind_of(annotation: Any) -> str:
    """A field's annotation as a type both libraries build a validator for."""
    origin = typing.get_origin(annotation)
    if annotation in (str, int, float, bool):
        return str(annotation.__name__)
    if origin in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return f"Optional[{kind_of(inner[0])}]" if len(inner) == 1 else "Any"
    if origin in (list, tuple, set, frozenset):
        args = typing.get_args(annotation)
        return f"list[{kind_of(args[0]) if args else 'Any'}]"
    if origin is dict:
        return f"dict[str, {kind_of(typing.get_args(annotation)[1])}]"
    if origin is typing.Literal:
        return "str"
    return "str" if isinstance(annotation, type) else "Any"


def config_fields() -> dict[str, list[tuple[str, str]]]:
    """Each pydantic model of our configuration, by name, with its fields' kinds."""
    import importlib

    from pydantic import BaseModel

    found: dict[str, list[tuple[str, str]]] = {}
    for module_name in CONFIG_MODULES:
        module = importlib.import_module(module_name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseModel)
                and value.__module__ == module_name
            ):
                found[value.__name__] = [
                    (name, kind_of(info.annotation)) for name, info in value.model_fields.items()
                ]
    return found


def core_tables() -> str:
    """Source building our tables as Core `Table`s: the models' columns (types, keys,
    nullability) and indexes, without defaults."""
    from component.models import Base

    lines = ["from sqlalchemy import *", "metadata = MetaData()"]
    for table in Base.metadata.sorted_tables:
        columns = []
        for column in table.columns:
            keys = "".join(f", ForeignKey({fk.target_fullname!r})" for fk in column.foreign_keys)
            columns.append(
                f"Column({column.name!r}, {column.type!r}{keys}, primary_key={column.primary_key},"
                f" nullable={column.nullable}, unique={bool(column.unique)})"
            )
        indexes = [
            f"Index({index.name!r}, {', '.join(repr(c.name) for c in index.columns)},"
            f" unique={index.unique})"
            for index in table.indexes
            if not index.name or not any(c.unique for c in index.columns if len(index.columns) == 1)
        ]
        lines.append(f"Table({table.name!r}, metadata, {', '.join(columns + indexes)})")
    return "\n".join(lines)


def gateway_stdlib() -> str:
    """Imports of the standard library modules an idle gateway has loaded anyway: each
    row's setup, so that a row counts what the library adds to the gateway."""
    import importlib

    for module in ("component.cli", "component.app", "bridges.irc", "bridges.mail"):
        importlib.import_module(module)
    names = sorted(
        name
        for name, module in sys.modules.items()
        if module is not None
        and name.partition(".")[0] in sys.stdlib_module_names
        and not name.partition(".")[0].startswith("_")
        and name.partition(".")[0] not in ("antigravity", "this", "idlelib", "tkinter", "turtle")
    )
    return "import " + ", ".join(names)


def rows(fields: Path, tables: Path, msgspec: str | None) -> list[tuple[str, str, str, str | None]]:
    """(label, setup, measured, extra sys.path) per row."""
    core = "import sqlalchemy, sqlalchemy.dialects.sqlite"
    result: list[tuple[str, str, str, str | None]] = [
        ("pydantic: import", "", "import pydantic; from pydantic import BaseModel", None),
        (
            f"pydantic: import + our config's {len(json.loads(fields.read_text()))} models",
            "",
            PYDANTIC_MODELS,
            None,
        ),
        ("SQLAlchemy Core + SQLite dialect: import", "", core, None),
        ("... + sqlalchemy.ext.asyncio (and the ORM)", core, "import sqlalchemy.ext.asyncio", None),
        (
            "our tables as Core Tables",
            core,
            tables.read_text(),
            None,
        ),
        (
            "our declarative models (component.models)",
            core + "; import sqlalchemy.ext.asyncio",
            "import component.models",
            None,
        ),
    ]
    if msgspec:
        result[2:2] = [
            ("msgspec: import", "", "import msgspec", msgspec),
            (
                "msgspec: import + the same fields as Structs",
                "",
                MSGSPEC_STRUCTS,
                msgspec,
            ),
        ]
    return result


def measure(setup: str, measured: str, fields: Path, path: str | None) -> int:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, setup, measured, str(fields)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    return int(out.split()[-1])


def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="xgw-floor-"))
    fields, tables = tmp / "fields.json", tmp / "tables.py"
    fields.write_text(json.dumps(config_fields()))
    tables.write_text(core_tables())
    stdlib = gateway_stdlib()
    table = [
        (label, f"{stdlib}\n{setup}", measured, path)
        for label, setup, measured, path in rows(fields, tables, args.msgspec)
    ]
    samples: dict[str, list[int]] = {label: [] for label, *_ in table}
    for _ in range(args.rounds):  # in turns, so that each row meets the same load
        for label, setup, measured, path in table:
            samples[label].append(measure(setup, measured, fields, path))
    print(
        f"RSS added, KiB (median of {args.rounds} fresh interpreters, each with the"
        f" {stdlib.count(',') + 1} standard library modules an idle gateway loads imported first):"
    )
    for label, kib in samples.items():
        print(
            f"  {label:52s} {statistics.median(kib):7.0f}  {statistics.median(kib) / 1024:5.1f} MiB"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--msgspec", help="a directory msgspec is installed in")
    parser.add_argument("--rounds", type=int, default=3)
    main(parser.parse_args())
