"""IRCv3 capabilities against a real InspIRCd 3: extended-join, chghost, invite-notify,
cap-notify (modules loaded and unloaded while the gateway is connected), WEBIRC."""

from __future__ import annotations

from irc_helpers import Harness, IrcPeer
from xmpp_client import eventually

from bridges import events
from bridges.irc.options import WebIrcOptions


async def oper(harness: Harness, nick: str = "op") -> IrcPeer:
    peer = await harness.peer(nick)
    peer.conn.send_raw("OPER oper operpass")
    await peer.wait_for(lambda e: e.type == "youreoper")
    return peer


def said(text: str):
    return lambda e: isinstance(e, events.Message) and e.text == text


async def test_host_changes_without_a_fake_quit_and_real_names_at_join(inspircd: Harness):
    _, sink, _ = await inspircd.joined("#room")
    bob = await inspircd.peer("bob", "#room")
    joined = await sink.wait_for(
        lambda e: isinstance(e, events.OccupantJoined) and e.occupant.nick == "bob"
    )
    assert joined.occupant.realname == "bob"  # extended-join: the jaraco client's default

    op = await oper(inspircd)
    op.conn.send_raw("CHGHOST bob new.host.example")
    await bob.wait_for(lambda e: e.type == "396")  # "is now your displayed host"
    bob.conn.privmsg("#room", "same bob")
    await sink.wait_for(said("same bob"))
    # m_hostcycle would have shown a client without chghost bob quitting and rejoining.
    assert not sink.matching(lambda e: isinstance(e, events.OccupantLeft))
    assert (
        len(
            sink.matching(
                lambda e: isinstance(e, events.OccupantJoined) and e.occupant.nick == "bob"
            )
        )
        == 1
    )


async def test_invitations_of_others_are_shown_in_the_room(inspircd: Harness):
    bob = await inspircd.peer("bob", "#room")
    await inspircd.peer("zed")
    _, sink, room = await inspircd.joined("#room")
    bob.conn.invite("zed", "#room")
    notice = await sink.wait_for(said("bob invited zed to #room"))
    assert notice.sender == room


async def test_capabilities_loaded_at_run_time_are_used(inspircd: Harness):
    session, sink, _ = await inspircd.joined("#room")
    bob = await inspircd.peer("bob", "#room")
    op = await oper(inspircd)
    conn = session.networks["127.0.0.1"].conn
    assert conn is not None and "setname" not in conn.caps

    op.conn.send_raw("LOADMODULE m_setname")  # CAP NEW :setname to cap-notify clients
    await eventually(lambda: "setname" in conn.caps)  # asked for and acknowledged
    bob.conn.send_raw("SETNAME :Bob Renamed")
    renamed = await sink.wait_for(
        lambda e: isinstance(e, events.OccupantJoined) and e.occupant.realname == "Bob Renamed"
    )
    assert renamed.occupant.nick == "bob"

    op.conn.send_raw("UNLOADMODULE m_setname")
    await op.wait_for(lambda e: e.type == "973")  # unloaded: CAP DEL went out before
    bob.conn.privmsg("#room", "after the unload")
    await sink.wait_for(said("after the unload"))
    assert "setname" not in conn.caps


async def test_webirc_gives_each_user_an_address_of_their_own(inspircd: Harness):
    webirc = {"127.0.0.1": {"password": "webirc-secret", "network": "fd00:1234:5678::/48"}}
    await inspircd.joined("#room", webirc=webirc)
    await inspircd.joined("#room", nick="carol", user="carol@localhost", webirc=webirc)
    bob = await inspircd.peer("bob")
    hosts = {}
    for nick in ("alice", "carol"):
        bob.conn.whois(nick)
        user = await bob.wait_for(lambda e, n=nick: e.type == "whoisuser" and e.arguments[0] == n)
        hosts[nick] = user.arguments[2]
    options = WebIrcOptions.model_validate(webirc["127.0.0.1"])
    assert hosts == {
        "alice": options.address_for("alice@localhost"),
        "carol": options.address_for("carol@localhost"),
    }
    assert hosts["alice"] != hosts["carol"] and hosts["alice"].startswith("fd00:1234:5678:")
