"""XEP-0050 ad-hoc commands that a bridge offers on its addresses."""

import pytest
from harness import FAKE_JID, open_store
from registration_helpers import submit
from slixmpp.exceptions import IqError

SERVER = f"server@{FAKE_JID}"
COMMANDS = "http://jabber.org/protocol/commands"


async def run_command(client, action="execute", session=None, values=None):
    iq = client.make_iq_to(SERVER, "set")
    iq["command"]["node"] = "settings"
    iq["command"]["action"] = action
    if session:
        iq["command"]["sessionid"] = session
    if values is not None:
        form = iq["command"]["form"]
        form["type"] = "submit"
        for var, value in values.items():
            form.add_field(var=var, value=value)
    return await iq.send(timeout=10)


async def test_settings_command_round_trip(gateway, client):
    await submit(client, FAKE_JID, username="alice", password="pw")
    items = await client.plugin["xep_0030"].get_items(jid=SERVER, node=COMMANDS, timeout=5)
    assert [(i[1], i[2]) for i in items["disco_items"]["items"]] == [
        ("settings", "Server settings")
    ]
    info = await client.plugin["xep_0030"].get_info(jid=SERVER, timeout=5)
    assert COMMANDS in info["disco_info"]["features"]

    first = await run_command(client)
    assert first["command"]["status"] == "executing"
    assert "motto" in first["command"]["form"].get_fields()
    session = first["command"]["sessionid"]

    with pytest.raises(IqError) as refused:
        await run_command(client, "complete", session, {})
    assert refused.value.iq["error"]["condition"] == "bad-request"
    assert "Motto is required" in refused.value.iq["error"]["text"]

    done = await run_command(client, "complete", session, {"motto": "carpe diem"})
    assert done["command"]["status"] == "completed"
    assert done["command"]["notes"] == [("info", "Saved motto 'carpe diem'")]
    async with open_store(gateway.config) as store:
        stored = await store.get_record(client.boundjid.bare, "fake", "settings", "server")
    assert stored == {"motto": "carpe diem"}


async def test_commands_need_registration(gateway, client):
    with pytest.raises(IqError) as refused:
        await run_command(client)
    assert refused.value.iq["error"]["condition"] == "registration-required"


async def test_contacts_have_no_commands(gateway, client):
    items = await client.plugin["xep_0030"].get_items(
        jid=f"bob@{FAKE_JID}", node=COMMANDS, timeout=5
    )
    assert not items["disco_items"]["items"]
