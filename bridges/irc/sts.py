"""IRCv3 Strict Transport Security policies, remembered per user and server.

A server offering `sts` over TLS says how long (`duration`) clients must use TLS on
that port; the policy is kept as an `AccountStore` record so it holds across
reconnects and gateway restarts, renewed at every secure connection that offers it,
removed by `duration=0`. A policy seen over plain text is never stored (anyone on the
path could have sent it); it only makes the connection move to TLS at once.
"""

from __future__ import annotations

import time

from bridges.base import AccountStore, SessionLog
from bridges.irc.caps import StsPolicy

STS_KIND = "irc-sts"
"""Record kind; the key is the server, the data `{"port": int, "expires": epoch seconds}`."""


class StsRecord:
    """The STS policy of one user's server. A failing store is logged, not raised."""

    def __init__(self, store: AccountStore, server: str, log: SessionLog) -> None:
        self.store, self.server, self.log = store, server, log

    async def port(self) -> int | None:
        """The TLS port to use while a stored policy holds, else None."""
        try:
            record = await self.store.get_record(STS_KIND, self.server)
        except Exception:
            self.log.exception("cannot read the STS policy of %s", self.server)
            return None
        if not record:
            return None
        port, expires = record.get("port"), record.get("expires")
        if not isinstance(port, int) or not isinstance(expires, int | float):
            return None
        return port if expires > time.time() else None

    async def seen(self, policy: StsPolicy | None, port: int) -> None:
        """A secure connection on `port` offered `policy` (None: offered none)."""
        if policy is None or policy.duration is None:
            return
        try:
            if policy.duration == 0:
                await self.store.delete_record(STS_KIND, self.server)
            else:
                expires = int(time.time()) + policy.duration
                await self.store.put_record(
                    STS_KIND, self.server, {"port": port, "expires": expires}
                )
        except Exception:
            self.log.exception("cannot store the STS policy of %s", self.server)
