"""What the database writes to archive one room line, by the ids the line carries.

Every id the archive keeps unique or looks lines up by is a b-tree key. A key that
grows with time (the archive's own time-ordered ids, the time itself) adds to the end
of its index; a random one (a client's message id, an IRC msgid, an id derived from
either by hashing) lands on a random page, and once the index is larger than one
batch's lines, every such line sends one more whole page to the write-ahead log at the
next commit. CPU time on a shared machine varies by a third from run to run; the
pages written do not, so a change to the schema or the ids shows here at once.

For each kind of line, in a fresh database, `--lines` lines are written through
`component.archive.Archive` (its batched writer, as the gateway writes them), and the
second half is measured, when the indexes hold the first: write-ahead log per line
(SQLite: pages of 4 KiB, automatic checkpoints off; PostgreSQL: bytes) and this
process's CPU per line (SQLite runs inside it; for PostgreSQL only the client's part).

    .venv/bin/python bench/archive_pages.py [--lines 20000] [--databases sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from component.archive import Archive, Line, stanza_id_for
from component.crypto import SecretBox, generate_key
from component.db import create_engine, upgrade
from component.devstack.postgres import Postgres
from component.store import Store

USER = "bench@localhost"
ROOM = "#bench%irc.localhost"
BATCH = 1000
"""Lines added before each flush: a burst, as the writer sees it live."""


def others_plain(n: int) -> Line:
    """Someone else's line on a server without message ids (ngIRCd)."""
    return Line(USER, ROOM, stanza_id_for(USER, ROOM, None), _now(), "peer", _body(n))


def others_with_msgid(n: int) -> Line:
    """Someone else's line with an IRCv3 msgid and server-time (random ids, as UnrealIRCd
    and Ergo give them)."""
    msgid = uuid.uuid4().hex[:22]
    sent = _now()
    return Line(
        USER, ROOM, stanza_id_for(USER, ROOM, msgid, sent), sent, "peer", _body(n), legacy_id=msgid
    )


def own_line(n: int, xmpp_id: str, origin_id: str | None = None) -> Line:
    """The user's own line, as the room reflects and archives it."""
    stanza_id = stanza_id_for(USER, ROOM, None)
    return Line(USER, ROOM, stanza_id, _now(), "me", _body(n), origin_id=origin_id, xmpp_id=xmpp_id)


def own_client_id(n: int) -> Line:
    """The user's own line from a client that gives only a message id (slixmpp)."""
    return own_line(n, uuid.uuid4().hex)


def own_origin_id(n: int) -> Line:
    """The user's own line from a client that gives an origin-id equal to its message id
    (Conversations, Dino, Gajim, Monal)."""
    client_id = str(uuid.uuid4())
    return own_line(n, client_id, origin_id=client_id)


KINDS: dict[str, Callable[[int], Line]] = {
    "others' lines, no msgid (ngIRCd)": others_plain,
    "others' lines, msgid and server-time (IRCv3)": others_with_msgid,
    "own lines, client id only": own_client_id,
    "own lines, origin-id = client id": own_origin_id,
}


def _now() -> datetime:
    return datetime.now(UTC)


def _body(n: int) -> str:
    return f"line {n} " + "x" * 60


def _no_checkpoints(dbapi_connection: Any, _record: Any) -> None:
    """So the WAL file only grows, and its size counts the pages written."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.close()


class WriteAheadLog:
    """How much the database has written to its write-ahead log so far, in the units
    `unit` names."""

    def __init__(self, engine: AsyncEngine, path: Path | None) -> None:
        self.engine, self.path = engine, path
        self.unit = "pages" if path is not None else "bytes"

    async def written(self) -> float:
        if self.path is not None:
            wal = self.path.with_name(self.path.name + "-wal")
            size = wal.stat().st_size if wal.exists() else 0
            return max(0, size - 32) / (4096 + 24)  # header, then frame header + page
        async with self.engine.connect() as db:
            lsn = await db.execute(text("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn"))
            return float(lsn.scalar_one())


async def measure(url: str, path: Path | None, kind: Callable[[int], Line], lines: int) -> str:
    engine = create_engine(url)
    await upgrade(engine)
    await Store(engine, SecretBox(generate_key())).save_account(USER, "irc", settings={})
    archive = Archive(engine, "irc", max_days=0)
    archive.start()
    log = WriteAheadLog(engine, path)
    try:
        prepared = [kind(n) for n in range(lines)]
        half = lines // 2
        for n, line in enumerate(prepared):
            if n == half:
                await archive.flush()
                written, cpu = await log.written(), time.process_time()
            archive.add(line)
            if n % BATCH == BATCH - 1:
                await archive.flush()
        await archive.flush()
        cpu = time.process_time() - cpu
        measured = lines - half
        per_line = (await log.written() - written) / measured
        return f"{per_line:7.2f} {log.unit}, {cpu / measured * 1e6:5.1f} µs CPU"
    finally:
        await archive.stop()
        await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--databases", default="sqlite,postgresql")
    args = parser.parse_args()
    databases = args.databases.split(",")
    event.listen(Engine, "connect", _no_checkpoints)
    print(f"write-ahead log and CPU per archived line, lines {args.lines // 2:,} to {args.lines:,}")
    with tempfile.TemporaryDirectory() as tmp:
        for n, (name, kind) in enumerate(KINDS.items()):
            if "sqlite" in databases:
                path = Path(tmp) / f"archive{n}.db"
                figure = await measure(f"sqlite+aiosqlite:///{path}", path, kind, args.lines)
                print(f"  sqlite      {name:48} {figure}")
        if "postgresql" in databases:
            event.remove(Engine, "connect", _no_checkpoints)
            async with Postgres() as server:
                for n, (name, kind) in enumerate(KINDS.items()):
                    url = await server.create_database(f"pages{n}")
                    figure = await measure(url, None, kind, args.lines)
                    print(f"  postgresql  {name:48} {figure}")


if __name__ == "__main__":
    asyncio.run(main())
