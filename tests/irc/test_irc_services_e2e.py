"""Accounts from real services: Atheme's NickServ and SaslServ linked to InspIRCd, the
gateway as its own process on Prosody, IRC peers on raw connections.

What test_irc_caps shows on a scripted server (account-notify, account-tag,
extended-join), here with the accounts a network's services really hand out: the
XEP-0421 occupant id follows the account across renames and reconnections under
another nick, and the occupant's status names the account.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
from irc_helpers import TagPeer
from test_irc_e2e import (
    IRC_JID,
    IRC_SECRET,
    PASSWORD,
    ROOM,
    irc_section,
    join_room,
    joined_user,
    login,
    register_and_subscribe,
    run_settings_command,
)
from test_occupant_id_e2e import groupchat, occupant_id, presence_of

from bridges.irc.devstack import Atheme, InspIrcd
from component.devstack.prosody import Prosody

PEER_CAPS = "message-tags account-notify extended-join"


@pytest.fixture
async def stack(gateway_factory) -> AsyncIterator[tuple[Prosody, InspIrcd]]:
    for binary in ("inspircd", "atheme-services"):
        if shutil.which(binary) is None:
            pytest.fail(f"{binary} is not installed: run bash .ci/setup")
    async with (
        Prosody(components={IRC_JID: IRC_SECRET}) as prosody,
        InspIrcd(services=True) as ircd,
        Atheme(ircd),
    ):
        await gateway_factory(prosody, bridges={"irc": irc_section(ircd)})
        yield prosody, ircd


@pytest.fixture
async def peers() -> AsyncIterator[list[TagPeer]]:
    made: list[TagPeer] = []
    yield made
    for peer in made:
        await peer.close()


async def peer(ircd: InspIrcd, peers: list[TagPeer], nick: str) -> TagPeer:
    made = await TagPeer.connect(ircd.host, ircd.port, nick, PEER_CAPS)
    peers.append(made)
    return made


async def nickserv(someone: TagPeer, command: str) -> None:
    """REGISTER (which logs in at once) or IDENTIFY; returns once logged in (900)."""
    someone.send(f"PRIVMSG NickServ :{command}")
    await someone.line_with(f" 900 {someone.nick} ")


async def test_services_accounts_are_stable_occupant_ids(stack, peers):
    prosody, ircd = stack
    fred = await joined_user(prosody, "fred")
    bob = await peer(ircd, peers, "bob")
    await nickserv(bob, "REGISTER bob-secret bob@example.org")
    await bob.join("#room")
    joined = await fred.wait_for(presence_of("bob"), timeout=15)
    account_id = occupant_id(joined)
    assert account_id and joined["status"] == "bob, logged in as bob"

    bob.send("PRIVMSG #room :said with an account")  # account-tag
    said = await fred.wait_for(groupchat("said with an account"), timeout=10)
    assert occupant_id(said) == account_id

    bob.send("NICK bobby")
    renamed = await fred.wait_for(presence_of("bobby"), timeout=10)
    assert occupant_id(renamed) == account_id
    bob.send("QUIT :later")
    await fred.wait_for(presence_of("bobby", available=False), timeout=10)

    # Another connection under another nick, the same account: the same occupant.
    robert = await peer(ircd, peers, "robert")
    await nickserv(robert, "IDENTIFY bob bob-secret")
    await robert.join("#room")
    back = await fred.wait_for(presence_of("robert"), timeout=10)
    assert occupant_id(back) == account_id
    assert back["status"] == "robert, logged in as bob"

    # Without an account: an id of the nick's own; logging in while in the room
    # (account-notify) shows the account, and the id becomes the account's.
    carol = await peer(ircd, peers, "carol")
    await carol.join("#room")
    anonymous = await fred.wait_for(presence_of("carol"), timeout=10)
    assert occupant_id(anonymous) not in (None, account_id)
    assert anonymous["status"] == "carol"
    await nickserv(carol, "REGISTER carol-secret carol@example.org")
    logged_in = await fred.wait_for(presence_of("carol"), timeout=10)
    assert logged_in["status"] == "carol, logged in as carol"
    assert occupant_id(logged_in) not in (None, account_id, occupant_id(anonymous))
    await fred.close()


async def test_the_gateway_logs_in_with_sasl_plain(stack, peers):
    """The user's SASL password from the network settings logs their connection in as
    the account of their nick: IRC sees the account on their join (extended-join)."""
    prosody, ircd = stack
    owner = await peer(ircd, peers, "dora")  # the account exists before the gateway
    await nickserv(owner, "REGISTER dora-secret dora@example.org")
    owner.send("QUIT :the gateway takes over")
    bob = await peer(ircd, peers, "bob")
    await bob.join("#room")

    jid = await prosody.register("dora", PASSWORD)
    dora = await login(prosody, jid, "pc")
    await register_and_subscribe(dora, IRC_JID, nick="dora")
    await run_settings_command(dora, f"127.0.0.1@{IRC_JID}", sasl_password="dora-secret")
    await join_room(dora, "dora", ROOM, timeout=15)
    join = await bob.line_with(":dora!", "JOIN #room")
    assert join.split("JOIN #room ", 1)[1].startswith("dora ")  # the account, not "*"
    await dora.close()
