"""Room and contact JIDs: parsing, escaping, allowed servers, fixed-server mode."""

from __future__ import annotations

import pytest

from bridges.address import Address, AddressError, AddressKind
from bridges.base import RegistrationError
from bridges.irc import IrcBridge
from bridges.irc.options import IrcOptions


def bridge(**options) -> IrcBridge:
    return IrcBridge(IrcOptions(**options))


@pytest.mark.parametrize(
    ("localpart", "kind", "legacy_id"),
    [
        ("#python%irc.libera.chat", AddressKind.GROUP, "#python%irc.libera.chat"),
        ("#Python%IRC.Libera.Chat", AddressKind.GROUP, "#python%irc.libera.chat"),
        ("alice%irc.libera.chat", AddressKind.CONTACT, "alice%irc.libera.chat"),
        ("irc.libera.chat", AddressKind.SERVICE, "irc.libera.chat"),
        ("#50%off%irc.x.org", AddressKind.GROUP, "#50%off%irc.x.org"),
        ("&local%127.0.0.1", AddressKind.GROUP, "&local%127.0.0.1"),
        ("[m]bot%irc.x.org", AddressKind.CONTACT, "[m]bot%irc.x.org"),
    ],
)
def test_parse_and_format_round_trip(localpart, kind, legacy_id):
    b = bridge()
    address = b.parse_address(localpart)
    assert address == Address(kind, legacy_id)
    assert b.parse_address(b.format_address(address)) == address


def test_characters_jids_forbid_are_escaped():
    b = bridge()
    address = b.parse_address("#a\\3ab\\27c%irc.x.org")
    assert address.legacy_id == "#a:b'c%irc.x.org"
    assert b.format_address(address) == "#a\\3ab\\27c%irc.x.org"


@pytest.mark.parametrize(
    ("localpart", "condition"),
    [
        ("#bad\\20chan%irc.x.org", "jid-malformed"),
        ("bad\\20nick%irc.x.org", "jid-malformed"),
        ("1nick%irc.x.org", "jid-malformed"),
        ("#chan%not_a_host", "jid-malformed"),
        ("#%irc.x.org", "jid-malformed"),
        ("", "item-not-found"),
    ],
)
def test_bad_addresses(localpart, condition):
    with pytest.raises(AddressError) as caught:
        bridge().parse_address(localpart)
    assert caught.value.condition == condition


def test_servers_outside_the_allow_list_are_not_allowed():
    b = bridge(allowed_servers=["irc.libera.chat"])
    assert b.parse_address("#ok%irc.libera.chat").is_group
    with pytest.raises(AddressError) as caught:
        b.parse_address("#chan%irc.evil.example")
    assert caught.value.condition == "not-allowed"


def test_fixed_server_mode_drops_the_server_part():
    b = bridge(fixed_server="irc.libera.chat")
    room = b.parse_address("#python")
    assert room == Address(AddressKind.GROUP, "#python%irc.libera.chat")
    assert b.format_address(room) == "#python"
    assert b.parse_address("alice").kind is AddressKind.CONTACT
    assert b.parse_address("irc.libera.chat").kind is AddressKind.SERVICE
    # `%` is an ordinary channel character there: it never reaches another server.
    other = b.parse_address("#python%irc.other.org")
    assert other.legacy_id == "#python%irc.other.org%irc.libera.chat"


def test_fixed_server_must_be_allowed():
    with pytest.raises(ValueError, match="fixed_server"):
        IrcOptions(fixed_server="a.org", allowed_servers=["b.org"])


async def test_registration_checks_nick_syntax():
    b = bridge()
    data = await b.validate_registration("u@x", {"nick": "alice", "realname": "A"}, None)
    assert data.settings["nick"] == "alice"
    for nick in ("", "1abc", "has space", "a" * 31, "é"):
        with pytest.raises(RegistrationError) as caught:
            await b.validate_registration("u@x", {"nick": nick}, None)
        assert caught.value.field == "nick"


def test_gateway_prompt_translation():
    b = bridge()
    assert b.translate_legacy_id(" #python%irc.libera.chat ").is_group
    with pytest.raises(AddressError):
        b.translate_legacy_id("alice")  # which server?
    fixed = bridge(fixed_server="irc.libera.chat")
    assert fixed.translate_legacy_id("alice").legacy_id == "alice%irc.libera.chat"


def test_open_gateway_checks_addresses_unless_servers_are_chosen():
    assert IrcOptions().checks_addresses
    assert not IrcOptions(allowed_servers=["irc.x.org"]).checks_addresses
    assert not IrcOptions(fixed_server="irc.x.org").checks_addresses
    assert not IrcOptions(allow_private_networks=True).checks_addresses
