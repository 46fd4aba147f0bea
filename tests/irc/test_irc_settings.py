"""Per-network settings (ad-hoc command) and TLS connections."""

from __future__ import annotations

import pytest
from irc_helpers import Harness, MemoryStore

from bridges import events
from bridges.base import Account, BridgeError
from bridges.irc.settings import COMMAND_NODE


async def test_settings_command_stores_secrets_encrypted_side_and_applies(irc: Harness):
    session, _sink = await irc.session("alice")
    bridge = session.bridge
    service = bridge.parse_address("127.0.0.1")
    (command,) = bridge.commands(service)
    assert command.node == COMMAND_NODE
    assert bridge.commands(irc.room("#x")) == ()
    store = session.store
    assert isinstance(store, MemoryStore)
    # The core hands commands a fresh Account read from the store, not the session's.
    account = Account("alice@localhost", "irc", settings={"nick": "alice"})

    fields = {f.var: f for f in await command.form(account, service)}
    assert fields["nick"].default == "alice"
    assert fields["nickserv_password"].is_secret
    text = await command.submit(
        account,
        service,
        store,
        {
            "nick": "alicenet",
            "autojoin": ["#auto"],
            "nickserv_password": "s3cret",
        },
    )
    assert "127.0.0.1" in text
    assert account.secrets == {"127.0.0.1/nickserv_password": "s3cret"}
    assert account.state["networks"]["127.0.0.1"]["nick"] == "alicenet"
    assert "s3cret" not in repr(account.state)
    fields = {f.var: f for f in await command.form(account, service)}
    assert fields["nick"].default == "alicenet"
    assert fields["nickserv_password"].default is None  # never echoed back

    assert store.saved["secrets"] == account.secrets
    assert session.account.secrets == account.secrets  # the live session got them
    bob = await irc.peer("bob", "#auto")
    await session.send_message(irc.contact("bob"), "hi")
    assert (await bob.wait_text("privmsg", "hi")).source.nick == "alicenet"
    await bob.wait_for(lambda e: e.type == "join" and e.source.nick == "alicenet")


async def test_settings_command_rejects_bad_values():
    from bridges.irc import IrcBridge
    from bridges.irc.options import IrcOptions

    bridge = IrcBridge(IrcOptions())
    service = bridge.parse_address("irc.x.org")
    (command,) = bridge.commands(service)
    account = Account("u@x", "irc", settings={"nick": "u"})
    for values in ({"nick": "9lives"}, {"autojoin": ["nochan"]}, {"port": 70000}):
        with pytest.raises(BridgeError):
            await command.submit(account, service, MemoryStore(account), values)


async def test_tls_with_verified_certificate(tls_irc: Harness):
    server = tls_irc.server
    bob = await tls_irc.peer("bob", "#room")
    session, sink = await tls_irc.session(
        "alice", port=server.tls_port, tls=True, ca_file=str(server.ca_file)
    )
    await session.join(tls_irc.room("#room"), "alice")
    await sink.wait_event(events.RoomJoined)
    await session.send_message(tls_irc.room("#room"), "over tls")
    await bob.wait_text("pubmsg", "over tls")


async def test_tls_certificate_checked_by_default(tls_irc: Harness):
    session, sink = await tls_irc.session("alice", port=tls_irc.server.tls_port, tls=True)
    await session.join(tls_irc.room("#room"), "alice")
    failed = await sink.wait_event(events.RoomJoinFailed)
    assert failed.condition == "remote-server-not-found"
    assert "CERTIFICATE_VERIFY_FAILED" in failed.text
