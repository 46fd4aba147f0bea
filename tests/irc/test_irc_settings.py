"""Per-network settings (ad-hoc command) and TLS connections."""

from __future__ import annotations

import pytest
from irc_helpers import SERVER, Harness, MemoryStore, ScriptedIrcd

from bridges import events
from bridges.base import Account, BridgeError
from bridges.irc.session import IrcSession
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


async def save_settings(session: IrcSession, **changes: object) -> str:
    """Run the command as a client does: the form's current values, some changed."""
    bridge = session.bridge
    service = bridge.parse_address(SERVER)
    (command,) = bridge.commands(service)
    store = session.store
    assert isinstance(store, MemoryStore)
    account = Account(  # the core reads a fresh Account from the store for each command
        session.account.user,
        "irc",
        settings=dict(store.saved["settings"]),
        secrets=dict(store.saved["secrets"]),
        state=dict(store.saved["state"]),
    )
    values = {f.var: f.default for f in await command.form(account, service)}
    return await command.submit(account, service, store, {**values, **changes})


async def test_persistent_channel_set_while_connected_is_kept_when_going_offline(irc: Harness):
    bob = await irc.peer("bob", "#keep")
    session, sink, room = await irc.joined("#keep")

    text = await save_settings(session, persistent=["#keep"])

    assert await session.user_offline()
    bob.conn.privmsg("#keep", "still there?")
    await sink.wait_event(events.Message, sender=room, text="still there?")
    assert not bob.matching(lambda e: e.type == "quit")
    assert text == f"Settings for {SERVER} saved and applied to your connection."


async def test_channel_no_longer_persistent_is_left_when_going_offline(irc: Harness):
    bob = await irc.peer("bob", "#keep")
    session, _sink = await irc.session("alice")
    await save_settings(session, persistent=["#keep"])
    await session.join(irc.room("#keep"), "alice")
    await bob.wait_for(lambda e: e.type == "join" and e.source.nick == "alice")

    await save_settings(session, persistent=[])

    assert not await session.user_offline()
    await bob.wait_for(lambda e: e.type == "quit" and e.source.nick == "alice")


async def test_nick_setting_renames_the_live_connection_and_reports_refusals(irc: Harness):
    bob = await irc.peer("bob", "#room")
    session, sink, room = await irc.joined("#room")

    await save_settings(session, nick="alice2")

    await bob.wait_for(lambda e: e.type == "nick" and e.target == "alice2")
    changed = await sink.wait_event(events.NickChanged, room=room)
    assert (changed.old, changed.new, changed.own) == ("alice", "alice2", True)

    service = irc.bridge().parse_address(SERVER)
    await save_settings(session, nick="bob")  # in use
    taken = await sink.wait_for(lambda e: isinstance(e, events.Message) and "nick bob" in e.text)
    assert taken.sender == service and "you stay alice2" in taken.text
    await save_settings(session, nick="muchtoolong")  # ngIRCd allows 9 characters
    await sink.wait_for(
        lambda e: isinstance(e, events.Message) and e.sender == service and "muchtoolong" in e.text
    )
    assert not sink.matching(lambda e: isinstance(e, events.NickConflict))
    assert session.networks[SERVER].nick == "alice2"


async def test_new_channel_to_join_is_joined_at_once_and_a_removed_one_is_kept(irc: Harness):
    bob = await irc.peer("bob", "#new")
    session, sink, _room = await irc.joined("#room")

    await save_settings(session, autojoin=["#new"])

    await bob.wait_for(lambda e: e.type == "join" and e.source.nick == "alice")
    await save_settings(session, autojoin=[])
    bob.conn.privmsg("#new", "you are still here")
    await sink.wait_event(events.Message, sender=irc.room("#new"), text="you are still here")
    assert not bob.matching(lambda e: e.type == "part")


async def test_encoding_applies_to_the_next_line(irc: Harness):
    bob = await irc.peer("bob", "#room")
    session, sink, room = await irc.joined("#room")

    await save_settings(session, encoding="cp1251")

    bob.send_raw_bytes(b"PRIVMSG #room :\xcf\xf0\xe8\xe2\xe5\xf2")
    await sink.wait_event(events.Message, sender=room, text="Привет")


async def test_settings_only_a_new_connection_can_use_are_named(irc: Harness):
    session, _sink, _room = await irc.joined("#room")
    conn = session.networks[SERVER].conn

    text = await save_settings(session, port=6668, realname="Alice A.", server_password="pw")

    assert "port, real name, server password" in text and "new connection" in text
    assert session.networks[SERVER].conn is conn and conn is not None and not conn.closed.is_set()
    assert "port" not in await save_settings(session, port=irc.server.port, realname="", nick="")


async def test_nickserv_password_identifies_the_live_connection():
    welcome = [":srv 001 alice :Welcome", ":srv 376 alice :End of MOTD"]
    async with ScriptedIrcd(lambda line: welcome if line.startswith("USER") else []) as server:
        harness = Harness(server)
        session, _sink = await harness.session("alice")
        await session.send_message(harness.contact("bob"), "hi")
        await server.lines.wait_for(lambda line: line == "PRIVMSG bob :hi")

        await save_settings(session, nickserv_password="ns-pw")

        await server.lines.wait_for(lambda line: line == "PRIVMSG NickServ :IDENTIFY ns-pw")
        await harness.close()
