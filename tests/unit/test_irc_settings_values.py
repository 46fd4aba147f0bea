"""The new per-network settings: after-connect commands, client certificate, WEBIRC."""

from __future__ import annotations

import ipaddress

import pytest

from bridges.base import BridgeError
from bridges.irc.options import IrcOptions, WebIrcOptions
from bridges.irc.settings import check_values


def test_after_connect_commands_are_kept_in_order_without_blank_lines():
    clean = check_values({"after_connect_commands": "MODE me +x\n\n  OPER a b  \n"}, 30)
    assert clean["after_connect_commands"] == ["MODE me +x", "OPER a b"]
    with pytest.raises(BridgeError, match="at most 20"):
        check_values({"after_connect_commands": [f"PING {i}" for i in range(21)]}, 30)


@pytest.mark.parametrize(
    "pem",
    ["not a certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"],
)
def test_an_unusable_client_certificate_is_refused(pem):
    with pytest.raises(BridgeError, match="client_cert") as refused:
        check_values({"client_cert": pem}, 30)
    assert refused.value.condition == "not-acceptable"
    assert pem not in refused.value.text  # the secret is not echoed back


def test_webirc_addresses_are_per_user_inside_the_network():
    options = IrcOptions(webirc={"IRC.Example.NET": {"password": "pw", "network": "192.0.2.0/30"}})
    webirc = options.webirc["irc.example.net"]
    for user in ("alice@example.org", "bob@example.org", "x" * 3000):
        address = ipaddress.ip_address(webirc.address_for(user))
        assert str(address) in ("192.0.2.1", "192.0.2.2")  # never the network or broadcast
        assert webirc.address_for(user) == str(address)
    wide = WebIrcOptions(password="pw", network="2001:db8::/64")
    assert wide.address_for("alice@example.org") != wide.address_for("bob@example.org")
    with pytest.raises(ValueError):
        WebIrcOptions(password="pw", network="2001:db8::/64", gateway="bad name")
