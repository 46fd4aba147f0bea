"""Registration is validated by really logging in to Dovecot's IMAP and submission."""

from __future__ import annotations

import asyncio

import pytest
from mail_helpers import closed_port, form, options_for, register

from bridges.address import Address, AddressError, AddressKind
from bridges.base import Account, RegistrationError
from bridges.mail import MailBridge
from bridges.mail.config import DomainDefaults, Security
from bridges.mail.devstack import MailServer


async def test_good_credentials_starttls(mail: MailServer, bridge: MailBridge) -> None:
    account = await register(bridge, mail, "alice")
    assert account.settings["email"] == "alice@example.test"
    assert account.settings["imap_security"] == "starttls"
    assert account.settings["folders"] == ["INBOX"]
    assert "password" not in account.settings
    assert account.secrets == {"password": "alice-secret"}


async def test_good_credentials_implicit_tls(mail: MailServer, bridge: MailBridge) -> None:
    account = await register(bridge, mail, "alice", imap_security="tls", imap_port=mail.imaps_port)
    assert account.settings["imap_port"] == mail.imaps_port


async def test_bad_password_reports_server_reason(mail: MailServer, bridge: MailBridge) -> None:
    await mail.add_user("alice", "right")
    with pytest.raises(RegistrationError) as info:
        await bridge.validate_registration("alice@xmpp.test", form(mail, "alice", "wrong"), None)
    assert info.value.field == "password"
    assert info.value.condition == "not-acceptable"
    assert "Authentication failed" in info.value.text  # Dovecot's own words


async def test_unreachable_imap_host(mail: MailServer, bridge: MailBridge) -> None:
    await mail.add_user("alice", "pw")
    values = form(mail, "alice", "pw", imap_port=closed_port())
    with pytest.raises(RegistrationError) as info:
        await bridge.validate_registration("alice@xmpp.test", values, None)
    assert info.value.field == "imap_host"
    assert info.value.text.startswith("could not reach the IMAP server 127.0.0.1:")


async def test_untrusted_certificate(mail: MailServer) -> None:
    await mail.add_user("alice", "pw")
    strict = MailBridge(options_for(mail, ca_file=None))
    with pytest.raises(RegistrationError) as info:
        await strict.validate_registration("alice@xmpp.test", form(mail, "alice", "pw"), None)
    assert info.value.field == "imap_host"
    assert info.value.text.startswith("could not reach the IMAP server")  # details: the log


async def test_bad_smtp_port(mail: MailServer, bridge: MailBridge) -> None:
    await mail.add_user("alice", "pw")
    values = form(mail, "alice", "pw", smtp_port=closed_port())
    with pytest.raises(RegistrationError) as info:
        await bridge.validate_registration("alice@xmpp.test", values, None)
    assert info.value.field == "smtp_host"


async def test_unknown_folder(mail: MailServer, bridge: MailBridge) -> None:
    await mail.add_user("alice", "pw")
    values = form(mail, "alice", "pw", folders=["INBOX", "Nope"])
    with pytest.raises(RegistrationError) as info:
        await bridge.validate_registration("alice@xmpp.test", values, None)
    assert info.value.field == "folders"
    assert "Nope" in info.value.text


async def test_plaintext_refused_unless_allowed(mail: MailServer, bridge: MailBridge) -> None:
    await mail.add_user("alice", "pw")
    values = form(mail, "alice", "pw", imap_security="plain")
    with pytest.raises(RegistrationError) as info:
        await bridge.validate_registration("alice@xmpp.test", values, None)
    assert info.value.field == "imap_security"
    lax = MailBridge(options_for(mail, allow_plaintext=True))
    data = await lax.validate_registration("alice@xmpp.test", values, None)
    assert data.settings["imap_security"] == "plain"


async def test_operator_domain_defaults(mail: MailServer) -> None:
    await mail.add_user("alice", "pw")
    defaults = DomainDefaults(
        imap_host=mail.host,
        imap_port=mail.imaps_port,
        imap_security=Security.TLS,
        smtp_host=mail.host,
        smtp_port=mail.submission_port,
        smtp_security=Security.STARTTLS,
    )
    bridge = MailBridge(options_for(mail, domains={mail.domain: defaults}))
    data = await bridge.validate_registration(
        "alice@xmpp.test", {"email": "alice@EXAMPLE.test", "password": "pw"}, None
    )
    assert data.settings["email"] == "alice@example.test"
    assert data.settings["imap_port"] == mail.imaps_port
    assert data.settings["smtp_port"] == mail.submission_port
    assert data.settings["username"] == "alice@example.test"


async def test_unknown_domain_needs_servers(mail: MailServer, bridge: MailBridge) -> None:
    with pytest.raises(RegistrationError) as info:
        await bridge.validate_registration(
            "a@xmpp.test", {"email": "a@nowhere.test", "password": "pw"}, None
        )
    assert info.value.field == "imap_host"


async def test_update_keeps_stored_password(mail: MailServer, bridge: MailBridge) -> None:
    await mail.add_user("alice", "pw")
    previous = Account("alice@xmpp.test", "mail", secrets={"password": "pw"})
    values = form(mail, "alice", "", name="Alice A.")
    data = await bridge.validate_registration("alice@xmpp.test", values, previous)
    assert data.secrets == {"password": "pw"}
    assert data.settings["name"] == "Alice A."


def test_addresses_round_trip() -> None:
    bridge = MailBridge(MailBridge.Options())
    for text in ["bob@example.org", "o'neil+tag@example.org", '"we\\\\ird"@x.test', "a%b@c.test"]:
        address = Address(AddressKind.CONTACT, text)
        localpart = bridge.format_address(address)
        assert "@" not in localpart
        assert bridge.parse_address(localpart) == address
    assert bridge.format_address(Address(AddressKind.CONTACT, "bob@example.org")) == (
        "bob\\40example.org"
    )
    # the classic transport spelling is understood on input
    assert bridge.parse_address("bob%example.org").legacy_id == "bob@example.org"
    assert bridge.parse_address("Bob\\40Example.ORG").legacy_id == "Bob@example.org"


def test_translate_legacy_id() -> None:
    bridge = MailBridge(MailBridge.Options())
    assert bridge.translate_legacy_id(" Bob <bob@Example.org> ").legacy_id == "bob@example.org"
    with pytest.raises(AddressError):
        bridge.translate_legacy_id("not an address")


async def test_hosts_on_private_networks_are_refused_unless_the_operator_allows_them(
    mail: MailServer,
) -> None:
    await mail.add_user("alice", "pw")
    guarded = MailBridge(options_for(mail, allowed_hosts=()))
    with pytest.raises(RegistrationError) as info:
        await guarded.validate_registration("alice@xmpp.test", form(mail, "alice", "pw"), None)
    assert (info.value.field, info.value.condition) == ("imap_host", "not-allowed")
    assert "private network" in info.value.text
    open_one = MailBridge(options_for(mail, allowed_hosts=(), allow_private_networks=True))
    await open_one.validate_registration("alice@xmpp.test", form(mail, "alice", "pw"), None)


async def test_refused_silent_and_unknown_hosts_read_alike(mail: MailServer) -> None:
    """Registration must not tell closed, open-but-silent and missing hosts apart."""
    await mail.add_user("alice", "pw")

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, never greets

    server = await asyncio.start_server(silent, mail.host, 0)
    silent_port = server.sockets[0].getsockname()[1]
    bridge = MailBridge(options_for(mail, timeout=1.0, allow_private_networks=True))
    texts = []
    try:
        for host, port in (
            (mail.host, closed_port()), (mail.host, silent_port), ("no-such-host.invalid", 993),
        ):  # fmt: skip
            values = form(mail, "alice", "pw", imap_host=host, imap_port=port)
            with pytest.raises(RegistrationError) as info:
                await bridge.validate_registration("alice@xmpp.test", values, None)
            texts.append(info.value.text.replace(f"{host}:{port}", "HOST"))
    finally:
        server.close()
    assert len(set(texts)) == 1, texts
