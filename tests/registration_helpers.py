"""Filling in a gateway's XEP-0077 form the way a client does."""

from __future__ import annotations

from typing import Any

from slixmpp import Iq
from xmpp_client import TestClient

from bridges.mail.devstack import MailServer


async def get_registration(client: TestClient, gateway: str) -> Iq:
    iq = client.make_iq_to(gateway, "get")
    iq.enable("register")
    return await iq.send(timeout=10)


async def submit(client: TestClient, gateway: str, **values: Any) -> Iq:
    """Submit the data form with `values`; raises IqError when the gateway refuses."""
    iq = client.make_iq_to(gateway, "set")
    form = iq["register"]["form"]
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden", value="jabber:iq:register")
    for var, value in values.items():
        form.add_field(var=var, value=value)
    return await iq.send(timeout=15)


async def remove(client: TestClient, gateway: str) -> Iq:
    iq = client.make_iq_to(gateway, "set")
    iq["register"]["remove"] = True
    return await iq.send(timeout=10)


async def register_and_subscribe(client: TestClient, gateway: str, **values: Any) -> None:
    """Register, then accept the gateway's subscription request, as XEP-0100 clients do.

    Once accepted, the user's server sends the user's presence to the gateway, which is
    what starts the legacy session.
    """
    await submit(client, gateway, **values)
    await client.presence_from(gateway, "subscribe")
    client.send_presence(pto=gateway, ptype="subscribed")
    client.send_presence(pto=gateway, ptype="subscribe")
    await client.presence_from(gateway, "subscribed")


def mailbox_form(mail: MailServer, user: str, **fields: str) -> dict[str, str]:
    """The mail registration form for mailbox `user` of `mail`, as a client fills it
    (its password, IMAP and SMTP submission by STARTTLS); `fields` add or replace some."""
    return {
        "email": mail.address(user),
        "password": mail.users[user],
        "imap_host": mail.host,
        "imap_port": str(mail.imap_port),
        "imap_security": "starttls",
        "smtp_host": mail.host,
        "smtp_port": str(mail.submission_port),
        "smtp_security": "starttls",
        **fields,
    }
