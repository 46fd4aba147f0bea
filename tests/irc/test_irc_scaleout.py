"""Sticky scale-out on ejabberd: two active slots and a standby, each its own process.

ejabberd 23.01 with `domain_balancing: {irc.localhost: {type: bare_source,
component_number: 2}}`, ngIRCd, PostgreSQL and three `xmpp-gateway run` processes with
`cluster: {slots: 2}`: two hold a slot, the third stands by. Each user's stanzas reach
one process, which owns the user (component.ownership) and alone opens the user's IRC
connection; ngIRCd's own count of connections shows one per user at every moment,
through a kill -9 of a slot holder after which the standby takes the slot and the
users of that slot are back in their persistent channel within 3 s.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import asyncpg
import pytest
from irc_helpers import IrcPeer
from registration_helpers import register_and_subscribe
from slixmpp import Iq, Message
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0004 import Form
from test_irc_e2e import (
    IRC_JID,
    IRC_SECRET,
    PASSWORD,
    groupchat,
    irc_section,
    join_room,
    login,
    run_settings_command,
)
from xmpp_client import TestClient, eventually, eventually_async

from bridges.irc.devstack import NgIrcd
from component.commands import COMMANDS_NS, INSTANCES_NODE
from component.devstack.ejabberd import Ejabberd, EjabberdCluster, balancing_config
from component.devstack.gateway import SERVING_SLOT, GatewayProcess
from component.devstack.postgres import Postgres

TAKEOVER_LIMIT = 3.0
USERS = 6
ADMIN = "admin@localhost"


@dataclass
class Cluster:
    ejabberd: Ejabberd | EjabberdCluster
    ngircd: NgIrcd
    dsn: str
    gateways: list[GatewayProcess]
    peers: list[IrcPeer] = field(default_factory=list)


@pytest.fixture
async def cluster(tmp_path, gateway_factory) -> AsyncIterator[Cluster]:
    async with (
        Ejabberd(components={IRC_JID: IRC_SECRET}, balancing={IRC_JID: 2}) as ejabberd,
        NgIrcd(flood_throttling=False) as ngircd,
        Postgres() as postgres,
    ):
        url = await postgres.create_database("scaleout")
        first = await gateway_factory(
            ejabberd,
            database_url=url,
            bridges={"irc": irc_section(ngircd, reconnect_initial_delay=0.2)},
            cluster={"slots": 2},
            admins=[ADMIN],
        )
        second = first.sibling(tmp_path / "second")
        await second.start()
        standby = first.sibling(tmp_path / "standby")
        await standby.start(standby=True)
        dsn = url.replace("postgresql+asyncpg", "postgresql")
        made = Cluster(ejabberd, ngircd, dsn, [first, second, standby])
        try:
            yield made
        finally:
            for peer in made.peers:
                await peer.close()
            for gateway in made.gateways:
                await gateway.stop()  # before the servers go


def test_a_type_without_component_number_is_refused_before_ejabberd_sees_it() -> None:
    with pytest.raises(ValueError, match="crashes every component handshake"):
        balancing_config({IRC_JID: 1})  # ejabberd wants 2 to 1000
    assert "component_number: 2" in balancing_config({IRC_JID: 2})


async def owners(dsn: str) -> dict[str, int]:
    """user → pid of the process owning their IRC session (from the leases)."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT o.jid, i.pid FROM user_owners o JOIN gateway_instances i ON i.id = o.instance"
            " WHERE o.bridge = 'irc'"
        )
    finally:
        await connection.close()
    return {row["jid"]: row["pid"] for row in rows}


class ConnectionCount:
    """ngIRCd's count of its clients (LUSERS), asked every 50 ms by a client of its own."""

    def __init__(self, peer: IrcPeer) -> None:
        self.peer = peer
        self.counts: list[int] = []
        self._task = asyncio.ensure_future(self._poll())

    @classmethod
    async def start(cls, cluster: Cluster, nick: str = "counter") -> ConnectionCount:
        peer = await IrcPeer.connect(cluster.ngircd.host, cluster.ngircd.port, nick)
        cluster.peers.append(peer)
        return cls(peer)

    async def _poll(self) -> None:
        while True:
            self.peer.items.clear()  # bounded: only the answer to this poll matters
            self.peer.conn.lusers()
            await self.peer.wait_until(
                lambda: any(e.type == "luserclient" for e in self.peer.items)
            )
            for event in self.peer.items:
                if event.type == "luserclient":
                    found = re.search(r"There are (\d+) users", event.arguments[0])
                    assert found, event.arguments
                    self.counts.append(int(found.group(1)))
            await asyncio.sleep(0.05)  # pacing the polls, not synchronising

    async def settled(self, expected: int) -> None:
        """Polls went on a while and the count is `expected`; stop polling."""
        await eventually(lambda: len(self.counts) > 20 and self.counts[-1] == expected)
        await self.stop()
        print(f"ngIRCd client counts seen: max {max(self.counts)}, expected {expected}")

    async def stop(self) -> None:
        """End the polls (bounded: a poll that ignored its cancellation fails the test)."""
        self._task.cancel()
        async with asyncio.timeout(5):
            await asyncio.gather(self._task, return_exceptions=True)


async def rejoin_and_talk(
    clients: dict[str, TestClient], bob: IrcPeer, users: Iterable[str]
) -> None:
    """Each of `users` (bare JIDs) rejoins #room and says "<name> after": the echo comes
    back and bob on IRC sees it, so the process now serving them works both ways."""
    names = [user.split("@")[0] for user in users]
    for name in names:
        await join_room(clients[name], name, timeout=10)
        clients[name].send_message(
            mto=f"#room%127.0.0.1@{IRC_JID}", mbody=f"{name} after", mtype="groupchat"
        )
        await clients[name].wait_for(groupchat(f"{name} after"), timeout=10)
    said = {f"{name} after" for name in names}
    await bob.wait_until(
        lambda: said <= {e.arguments[0] for e in bob.items if e.type == "pubmsg"}, timeout=10
    )


async def user_in_room(cluster: Cluster, name: str, node: Ejabberd | None = None) -> TestClient:
    """An ejabberd user registered with the IRC bridge, #room persistent, in the room;
    logged in to `node` of an ejabberd cluster (default: the first)."""
    jid = await cluster.ejabberd.register(name, PASSWORD)
    client = await login(node or cluster.ejabberd, jid, "pc")
    await register_and_subscribe(client, IRC_JID, nick=name)
    await run_settings_command(client, f"127.0.0.1@{IRC_JID}", persistent="#room")
    await join_room(client, name, timeout=15)
    return client


async def instances_command(client: TestClient) -> list[dict[str, str]]:
    """The operators' `instances` ad-hoc command, run on the component."""
    iq = client.Iq()
    iq["type"], iq["to"] = "set", IRC_JID
    command = iq.xml.makeelement(f"{{{COMMANDS_NS}}}command", {"node": INSTANCES_NODE})
    command.set("action", "execute")
    iq.xml.append(command)
    reply: Iq = await iq.send(timeout=10)
    form = Form(xml=reply.xml.find(f"{{{COMMANDS_NS}}}command/{{jabber:x:data}}x"))
    return [{var: str(value) for var, value in item.items()} for item in form["items"]]


async def test_a_room_message_as_a_users_first_stanza_takes_their_lease(
    cluster: Cluster,
) -> None:
    """A client still in a room after a failover may first send a room message: it
    takes the user's lease like any other stanza (a room message has a faster path
    through the gateway, which must not skip that), and the process it reached
    answers it."""
    jid = await cluster.ejabberd.register("newcomer", PASSWORD)
    client = await login(cluster.ejabberd, jid, "pc")
    client.send_message(mto=f"#room%127.0.0.1@{IRC_JID}", mbody="still there?", mtype="groupchat")
    await client.wait_for(
        lambda s: isinstance(s, Message) and s["type"] == "error", timeout=15
    )  # not in that room here
    owned = await owners(cluster.dsn)
    assert jid in owned
    assert owned[jid] != cluster.gateways[2].pid  # a slot holder, not the standby


@pytest.mark.timeout(300)  # three gateways, six registrations: slow on a loaded machine
async def test_users_stick_to_a_slot_and_have_one_irc_connection_through_a_kill_9(
    cluster: Cluster,
) -> None:
    bob = await IrcPeer.connect(cluster.ngircd.host, cluster.ngircd.port, "bob")
    cluster.peers.append(bob)
    await bob.join("#room")
    names = [f"u{n}" for n in range(USERS)]
    clients = {name: await user_in_room(cluster, name) for name in names}
    pids = {gateway.pid: gateway for gateway in cluster.gateways}
    standby = cluster.gateways[2]

    # Sticky: each user's stanzas reach one process, which owns the user; no other
    # process ever saw them (it would have asked for the user's lease).
    for name, client in clients.items():
        for n in range(3):
            client.send_message(
                mto=f"#room%127.0.0.1@{IRC_JID}", mbody=f"{name} {n}", mtype="groupchat"
            )
    await bob.wait_until(lambda: sum(e.type == "pubmsg" for e in bob.items) >= 3 * USERS)
    owned = await owners(cluster.dsn)
    assert sorted(owned) == sorted(f"{name}@localhost" for name in names)  # before the admin
    assert standby.pid not in owned.values()
    per_process = {pid: [u for u, p in owned.items() if p == pid] for pid in set(owned.values())}
    print(f"\nusers per slot holder: { {pid: len(us) for pid, us in per_process.items()} }")
    for gateway in cluster.gateways:
        log = gateway.log_text()
        assert "handed over" not in log and "reach this instance and" not in log
        started = set(re.findall(r"(u\d)@localhost: starting irc session", log))
        assert started == {u.split("@")[0] for u, p in owned.items() if p == gateway.pid}

    # The operators' command lists the three instances; others may not run it.
    admin = await login(cluster.ejabberd, await cluster.ejabberd.register("admin", "pw"), "op")
    listed = await instances_command(admin)
    assert sorted(row["role"] for row in listed) == ["active", "active", "standby"]
    assert {int(row["pid"]) for row in listed} == set(pids)
    assert sum(int(row["users"]) for row in listed) == USERS + 1  # the admin's stanzas too
    with pytest.raises(IqError) as refused:
        await instances_command(clients["u0"])
    assert refused.value.condition == "forbidden"

    # Half the users go offline (their persistent channel keeps them on IRC): after the
    # kill only the answers to the new holder's probes say where they belong.
    offline = {f"u{n}" for n in range(0, USERS, 2)}
    for name in offline:
        await clients.pop(name).close()
    for name in offline:
        await pids[owned[f"{name}@localhost"]].wait_for_log(rf"{name}@localhost: offline")

    # kill -9 of the holder of the most users; ngIRCd counts connections meanwhile.
    victim_pid = max(per_process, key=lambda pid: len(per_process[pid]))
    victim, moved = pids[victim_pid], sorted(per_process[victim_pid])
    expected = USERS + 2  # and bob and the counter
    counter = await ConnectionCount.start(cluster)
    await eventually(lambda: bool(counter.counts))
    assert counter.counts[-1] == expected
    joins_before = {u: len(joins_of(bob, u.split("@")[0])) for u in moved}
    mark = standby.log_mark()
    killed = time.monotonic()
    await victim.kill()
    await standby.wait_for_log(SERVING_SLOT, since=mark, timeout=10)
    await bob.wait_until(
        lambda: all(len(joins_of(bob, u.split("@")[0])) > joins_before[u] for u in moved),
        timeout=10,
    )
    back = time.monotonic() - killed
    print(f"kill -9 → {len(moved)} users of the slot back in #room after {back:.3f} s")
    assert back < TAKEOVER_LIMIT
    await eventually_async(lambda: _owned_by(cluster.dsn, moved, standby.pid), timeout=5)

    # The moved users are served by the new holder: they rejoin and talk.
    assert {u.split("@")[0] for u in moved} & offline, "no offline user was moved"
    talking = [u for u in moved if u.split("@")[0] not in offline]
    await rejoin_and_talk(clients, bob, talking)
    await counter.settled(expected)
    assert max(counter.counts) <= expected and counter.counts[-1] == expected
    still = await owners(cluster.dsn)
    assert all(still[u] == standby.pid for u in moved)
    assert all(still[u] == p for u, p in owned.items() if p != victim_pid)

    # The killed process comes back as the standby; a SIGTERM of the other slot holder
    # hands its slot over, and its users move with one connection each.
    await victim.start(standby=True)
    holder = next(g for g in cluster.gateways if g.pid in still.values() and g is not standby)
    theirs = sorted(u for u, p in still.items() if p == holder.pid and u != ADMIN)
    counter = await ConnectionCount.start(cluster, "counter2")
    mark, joins_before = victim.log_mark(), {u: len(joins_of(bob, u[:2])) for u in theirs}
    stopped = time.monotonic()
    stopping = asyncio.ensure_future(holder.stop())
    await victim.wait_for_log(SERVING_SLOT, since=mark, timeout=10)
    handed = time.monotonic() - stopped
    await bob.wait_until(
        lambda: all(len(joins_of(bob, u[:2])) > joins_before[u] for u in theirs), timeout=10
    )
    print(
        f"SIGTERM → slot taken {handed:.3f} s, {len(theirs)} users back "
        f"{time.monotonic() - stopped:.3f} s"
    )
    assert await stopping == 0
    assert handed < 1.0
    await eventually(lambda: counter.counts[-1] == expected + 1)  # counter2 too
    await counter.stop()
    assert max(counter.counts) <= expected + 1
    for client in [*clients.values(), admin]:
        await client.close()


def joins_of(peer: IrcPeer, nick: str) -> list[object]:
    return peer.matching(lambda e: e.type == "join" and e.source.nick == nick)


async def _owned_by(dsn: str, users: list[str], pid: int | None) -> bool:
    owned = await owners(dsn)
    return all(owned.get(user) == pid for user in users)
