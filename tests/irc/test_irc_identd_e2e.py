"""The gateway's ident server against a real ircd: InspIRCd's m_ident asks port 113
of the connecting address who each connection is, and shows the answer as the user
name, so every gateway user has an ident of their own (a hash of their JID) that an
operator can ban, instead of one `~user` for all.

Port 113 is privileged and machine-wide: the test runs as root (as the others do)
and is skipped only when something else already listens there.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import AsyncIterator

import pytest
from irc_helpers import TagPeer
from test_irc_e2e import IRC_JID, IRC_SECRET, irc_section, joined_user

from bridges.irc.devstack import InspIrcd
from bridges.irc.identd import ident_of
from component.devstack.prosody import Prosody

IDENT_PORT = 113


def ident_port_taken() -> bool:
    """Whether another process listens on 127.0.0.1:113 (any other failure raises)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", IDENT_PORT))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


@pytest.fixture
async def prosody() -> AsyncIterator[Prosody]:
    async with Prosody(components={IRC_JID: IRC_SECRET}) as server:
        yield server


async def test_each_user_shows_their_own_ident_in_the_hostmask(prosody, gateway_factory):
    if ident_port_taken():
        pytest.fail(f"127.0.0.1:{IDENT_PORT} is taken by another process: this test needs it")
    async with InspIrcd(ident=True) as ircd:
        identd = {"bind": "127.0.0.1", "port": IDENT_PORT}
        await gateway_factory(prosody, bridges={"irc": irc_section(ircd, identd=identd)})
        bob = await TagPeer.connect(ircd.host, ircd.port, "bob", "multi-prefix")
        try:
            await bob.join("#room")
            seen = {}
            for name in ("fred", "gina"):
                client = await joined_user(prosody, name)
                join = await bob.line_with(f":{name}!", " JOIN ")
                seen[name] = join.split("!", 1)[1].split("@", 1)[0]
                assert seen[name] == ident_of(client.boundjid.bare), join
                await client.close()
            assert seen["fred"] != seen["gina"]
            # bob, whom nobody answers for, is shown unqueried: the answers were ours.
            bob.send("WHOIS bob")
            whois = await bob.line_with(" 311 bob bob ")
            assert " ~bob " in whois, whois
        finally:
            await bob.close()
