"""A real slixmpp client for tests, with waits on what arrives instead of sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from slixmpp import ClientXMPP, Iq, Message, Presence
from slixmpp.plugins.xep_0077.stanza import Register
from slixmpp.xmlstream import StanzaBase, register_stanza_plugin
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from bridges.timeouts import within
from component.xep_0100 import GatewayQuery

register_stanza_plugin(Iq, GatewayQuery)

Predicate = Callable[[StanzaBase], bool]


class TestClient(ClientXMPP):
    """Logs in over plain TCP to the test Prosody and records every stanza it gets."""

    __test__ = False

    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password)
        self.enable_plaintext, self.enable_starttls, self.enable_direct_tls = True, False, False
        # The test server runs on loopback without TLS; allow PLAIN there.
        self.plugin["feature_mechanisms"].unencrypted_plain = True
        for plugin in ("xep_0030", "xep_0004", "xep_0199", "xep_0092", "xep_0045"):
            self.register_plugin(plugin)
        register_stanza_plugin(Iq, Register)
        register_stanza_plugin(Register, self.plugin["xep_0004"].stanza.Form)
        self.auto_authorize = None  # the tests look at subscription requests themselves
        self.auto_subscribe = False
        self.stanzas: list[StanzaBase] = []
        self.received = 0
        """Stanzas recorded so far; each is numbered with its `arrival` (see `mark`)."""
        self._arrived = asyncio.Event()
        self.online = asyncio.Event()
        for name, path in (("all messages", "message"), ("all presences", "presence")):
            self.register_handler(
                Callback(name, MatchXPath(f"{{jabber:client}}{path}"), self._record)
            )
        self.add_event_handler("session_start", self._on_start)

    def _record(self, stanza: StanzaBase) -> None:
        self.received += 1
        stanza.arrival = self.received
        self.stanzas.append(stanza)
        self._arrived.set()

    async def _on_start(self, _event: object) -> None:
        # Like real clients: servers deliver subscription replies to "interested"
        # resources only, those that have fetched the roster (RFC 6121 §2.1.6).
        await self.get_roster()
        self.send_presence()
        self.online.set()

    async def login(self, host: str, port: int, timeout: float = 10.0) -> TestClient:
        self.connect(host, port)
        await within(self.online.wait(), timeout)
        return self

    def mark(self) -> int:
        """A point in what arrived, for `wait_for(since=...)`: take it before sending the
        request whose answer to wait for, so that an answer to an earlier one (an old
        join's self-presence) cannot pass for it."""
        return self.received

    async def wait_for(
        self, predicate: Predicate, timeout: float = 10.0, *, since: int = 0
    ) -> StanzaBase:
        """The earliest recorded stanza that matches and arrived after `since`, waiting
        up to `timeout` seconds for one (TimeoutError).

        The stanza returned is removed from `stanzas`: a second wait with the same
        predicate returns the next match, not this one again, and a later check of
        `stanzas` ("nothing else came") no longer sees it, so a test that must see a
        stanza it waited for (an error that ended the wait) checks the one returned.
        Stanzas that arrived at or before `since` are skipped, and stay recorded.
        """
        async with asyncio.timeout(timeout):
            while True:
                for stanza in self.stanzas:
                    if stanza.arrival > since and predicate(stanza):
                        self.stanzas.remove(stanza)
                        return stanza
                self._arrived.clear()
                await self._arrived.wait()

    async def message_from(self, jid: str, timeout: float = 10.0) -> Message:
        found = await self.wait_for(
            lambda s: isinstance(s, Message) and s["from"].bare == jid, timeout
        )
        assert isinstance(found, Message)
        return found

    async def presence_from(
        self, jid: str, ptype: str | None = None, timeout: float = 10.0
    ) -> Presence:
        def matches(stanza: StanzaBase) -> bool:
            return (
                isinstance(stanza, Presence)
                and stanza["from"].bare == jid
                and (ptype is None or stanza["type"] == ptype)
            )

        found = await self.wait_for(matches, timeout)
        assert isinstance(found, Presence)
        return found

    def make_iq_to(self, to: str, itype: str = "get") -> Iq:
        iq = self.Iq()
        iq["to"], iq["type"] = to, itype
        return iq

    async def close(self) -> None:
        if self.transport is not None:
            await self.disconnect(wait=1.0)


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until `condition()` holds, for state that no event announces."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polls state that has no event to wait on
            await asyncio.sleep(0.01)


async def eventually_async(condition: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """`eventually` for state read asynchronously, like another process's database."""
    async with asyncio.timeout(timeout):
        while not await condition():  # noqa: ASYNC110 - another process writes it
            await asyncio.sleep(0.05)
