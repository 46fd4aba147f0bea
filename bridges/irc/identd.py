"""An RFC 1413 ident server for the gateway's IRC connections.

IRC servers ask the connecting host's port 113 who owns a connection; without an
answer every gateway user shows as `~user`, and a network can only ban the gateway as
a whole. This one answers, for each connection of ours, with a hash of the XMPP user's
JID (as biboumi does): the same user always gets the same ident, so operators can ban
one user, and the JID itself is not shown.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable

from bridges.timeouts import within

log = logging.getLogger(__name__)

Lookup = Callable[[int, int], str | None]
"""(our local port, the server's port) → the user JID owning that connection, or None."""
QUERY_LIMIT = 64
"""An ident query is two port numbers: anything longer is not one."""
TIMEOUT = 10.0


def ident_of(user: str) -> str:
    """Ten hex characters (the longest ident many servers keep) from the user's JID."""
    return hashlib.sha256(user.encode()).hexdigest()[:10]


class Identd:
    """Answers `<our port> , <their port>` with `USERID : UNIX : <hash>`."""

    def __init__(self, bind: str, port: int, lookup: Lookup) -> None:
        self.bind, self.port, self.lookup = bind, port, lookup
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.bind, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("identd listening on %s:%s", self.bind, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            query = await within(reader.readline(), TIMEOUT)
            writer.write(self.answer(query[:QUERY_LIMIT].decode("ascii", "replace")).encode())
            await writer.drain()
        except (TimeoutError, OSError, ValueError):
            pass  # a client that sends nothing, too much, or goes away
        finally:
            writer.close()

    def answer(self, query: str) -> str:
        """The reply line for one query (RFC 1413 §6)."""
        ours, sep, theirs = query.strip().partition(",")
        ours, theirs = ours.strip(), theirs.strip()
        if not sep or not (_is_port(ours) and _is_port(theirs)):
            return "0 , 0 : ERROR : INVALID-PORT\r\n"
        user = self.lookup(int(ours), int(theirs))
        if user is None:
            return f"{ours} , {theirs} : ERROR : NO-USER\r\n"
        return f"{ours} , {theirs} : USERID : UNIX : {ident_of(user)}\r\n"


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and 0 < int(text) < 65536
