"""What several active processes (`cluster.slots`) check on ejabberd, with the fake bridge.

Only users who may use the gateway get a lease, a slow database refuses a routing
decision in bounded time, and a `component_number` in ejabberd.yml that differs from
`cluster.slots` is named in the log, as the answers to the locating pings show it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from harness import FAKE_JID, FAKE_SECRET, open_store
from slixmpp import Message

from component.devstack.ejabberd import Ejabberd
from component.devstack.gateway import GatewayProcess
from component.ownership import QUERY_TIMEOUT, SILENT_SLOT_USERS


def dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg", "postgresql")


async def leases(database_url: str) -> list[str]:
    """The users that have a lease row, whoever holds it."""
    connection = await asyncpg.connect(dsn(database_url))
    try:
        rows = await connection.fetch("SELECT jid FROM user_owners ORDER BY jid")
    finally:
        await connection.close()
    return [row["jid"] for row in rows]


async def seed_accounts(gateway: GatewayProcess, users: list[str]) -> None:
    """Accounts on the fake bridge, as a registration stores them."""
    async with open_store(gateway.config) as store:
        for user in users:
            await store.save_account(
                user, "fake", settings={"username": user.split("@")[0]}, secrets={"password": "pw"}
            )


def error_of(client, condition: str) -> object:
    return client.wait_for(
        lambda s: isinstance(s, Message) and s["type"] == "error"
        and s["error"]["condition"] == condition,
        timeout=QUERY_TIMEOUT + 10,
    )  # fmt: skip


async def echo(client, text: str) -> None:
    client.send_message(mto=f"bob@{FAKE_JID}", mbody=text, mtype="chat")
    await client.wait_for(lambda s: isinstance(s, Message) and s["body"] == f"echo: {text}")


@pytest.fixture
async def ejabberd() -> AsyncIterator[Ejabberd]:
    async with Ejabberd(components={FAKE_JID: FAKE_SECRET}) as server:
        yield server


async def test_a_lease_only_for_who_may_use_the_gateway_and_a_slow_database_refuses(
    ejabberd, gateway_factory, client_factory, database_url
) -> None:
    """localhost is not an allowed domain here: a stranger of it gets no lease row, a
    user registered anyway (an account in the database) gets one. With the lease
    table locked, a new user's message is refused with a `wait` error after
    QUERY_TIMEOUT, and served once the table is free."""
    gateway = await gateway_factory(
        ejabberd,
        database_url=database_url,
        cluster={"slots": 2},
        allowed_domains=["elsewhere.example"],
    )
    stranger, member, late = [await client_factory(ejabberd) for _ in range(3)]
    await seed_accounts(gateway, [member.boundjid.bare, late.boundjid.bare])

    stranger.send_message(mto=f"bob@{FAKE_JID}", mbody="hi", mtype="chat")
    await error_of(stranger, "registration-required")
    await echo(member, "registered")
    assert await leases(database_url) == [member.boundjid.bare]

    blocker = await asyncpg.connect(dsn(database_url))
    transaction = blocker.transaction()
    await transaction.start()
    await blocker.execute("LOCK TABLE user_owners IN ACCESS EXCLUSIVE MODE")
    mark = gateway.log_mark()
    late.send_message(mto=f"bob@{FAKE_JID}", mbody="while slow", mtype="chat")
    refused = await error_of(late, "resource-constraint")
    assert refused["error"]["type"] == "wait"
    assert "database is slow" in refused["error"]["text"]
    await gateway.wait_for_log("no routing decision for the user's stanza", since=mark)
    await echo(member, "an owned user is served meanwhile")
    await transaction.rollback()
    await blocker.close()
    await echo(late, "once it answers")
    assert await leases(database_url) == sorted([member.boundjid.bare, late.boundjid.bare])


@pytest.mark.parametrize(
    ("component_number", "slots", "likely"), [(2, 3, "smaller"), (3, 2, "larger"), (2, 2, None)]
)
async def test_a_component_number_other_than_cluster_slots_is_named(
    tmp_path, gateway_factory, database_url, component_number, slots, likely
) -> None:
    """(2, 2): the same number, nothing to warn about once the check ran."""
    async with Ejabberd(
        components={FAKE_JID: FAKE_SECRET}, balancing={FAKE_JID: component_number}
    ) as server:
        first = await gateway_factory(server, database_url=database_url, cluster={"slots": slots})
        # Users no ejabberd account has: the server answers the pings to them itself.
        users = [f"ghost{n}@localhost" for n in range(SILENT_SLOT_USERS * slots + 10)]
        await seed_accounts(first, users)
        later = [first.sibling(tmp_path / f"slot{n}") for n in range(1, slots)]
        for gateway in later:
            await gateway.start()  # locates the users
        last = later[-1]
        checked = await last.wait_for_log(f"of {len(users)} users located", timeout=30)
        print(f"\n{checked}")
        if likely is None:
            assert f"by none; {slots} of {slots} slots held" in checked
            assert not any("they must be equal" in g.log_text() for g in [first, *later])
        else:
            line = await last.wait_for_log(f"component_number for {FAKE_JID} is {likely}")
            print(line)
            assert f"than cluster.slots ({slots}); they must be equal" in line
        for gateway in [first, *later]:
            await gateway.stop()  # before ejabberd goes


async def test_random_routing_is_named_with_the_likely_setting(
    tmp_path, gateway_factory, client_factory, database_url
) -> None:
    """No domain_balancing: ejabberd spreads a user's stanzas over both processes; the
    one the user is not owned by refuses them and the log says what to set."""
    async with Ejabberd(components={FAKE_JID: FAKE_SECRET}) as server:
        first = await gateway_factory(server, database_url=database_url, cluster={"slots": 2})
        second = first.sibling(tmp_path / "second")
        await second.start()
        client = await client_factory(server)
        await seed_accounts(first, [client.boundjid.bare])
        for n in range(20):  # at random: all to one process has a chance of 2 in 2 ** 20
            client.send_message(mto=f"bob@{FAKE_JID}", mbody=f"m{n}", mtype="chat")
        refused = await error_of(client, "service-unavailable")
        assert "another instance of the gateway serves you" in refused["error"]["text"]
        warned = [g for g in (first, second) if "reach this instance and" in g.log_text()]
        assert len(warned) == 1
        log = warned[0].log_text()
        assert f"no domain_balancing for {FAKE_JID}" in log
        assert f"{{{FAKE_JID}: {{type: bare_source, component_number: 2}}}}" in log
        await second.stop()
        await first.stop()  # before ejabberd goes
