"""XEP-0077 in-band registration with XEP-0004 forms, and XEP-0100's follow-up.

Only users of the configured domains may register. A submitted form is checked in two
steps: generic checks against the bridge's field list (component.forms), then the
bridge's own `validate_registration` (a test login). The stored account is what the
bridge returned; secrets are sealed by the Store.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from slixmpp import JID, Iq
from slixmpp.plugins.xep_0004 import Form
from slixmpp.plugins.xep_0077.stanza import Register
from slixmpp.xmlstream import register_stanza_plugin

from bridges.base import Account, RegistrationError
from component import metrics
from component.errors import stanza_error
from component.forms import FormInvalid, build_form, check_values, submitted_values
from component.ratelimit import RateLimit
from component.xep_0100 import presence

if TYPE_CHECKING:
    from component.gateway import Gateway

log = logging.getLogger(__name__)

register_stanza_plugin(Iq, Register)
register_stanza_plugin(Register, Form)


class Registration:
    def __init__(self, gateway: Gateway, allowed_domains: list[str], limit: RateLimit) -> None:
        self.gateway = gateway
        self.limit = limit
        self.bridge = gateway.bridge
        self.allowed_domains = set(allowed_domains)

    async def handle(self, iq: Iq) -> None:
        user = iq["from"].bare
        if iq["from"].domain not in self.allowed_domains:
            raise stanza_error(
                "not-allowed", f"users of {iq['from'].domain} may not register with this gateway"
            )
        if iq["to"].node or iq["to"].resource:
            raise stanza_error("service-unavailable", "register with the gateway's own address")
        previous = await self.gateway.store.get_account(user, self.bridge.name)
        if iq["type"] == "get":
            self._send_form(iq, previous)
        elif iq["type"] == "set" and iq["register"]["remove"]:
            await self._remove(iq, previous)
        elif iq["type"] == "set":
            await self._register(iq, user, previous)
        else:
            raise stanza_error("bad-request", "expected a get or set")

    async def may_use(self, user: str) -> bool:
        """Whether `user` may use the gateway: registered, or of an allowed domain (and
        so may register or get a default account)."""
        if JID(user).domain in self.allowed_domains:
            return True
        return await self.gateway.store.has_account(user, self.bridge.name)

    async def default_account(self, user: str, nick: str | None = None) -> Account | None:
        """Store the bridge's default account for `user`, who joined or wrote unregistered.

        None when the user's domain is not allowed or the bridge wants registration
        first (`Bridge.default_account`). Unlike a registration, no XEP-0100
        subscription request follows: the user asked for a room or a contact, not for
        the gateway in their roster (biboumi does the same).
        """
        if JID(user).domain not in self.allowed_domains:
            return None
        data = self.bridge.default_account(user, nick)
        if data is None:
            return None
        account = await self.gateway.store.save_account(
            user, self.bridge.name, settings=data.settings, secrets=data.secrets
        )
        metrics.REGISTRATIONS.labels(self.bridge.name, "default").inc()
        log.info("%s: account with the %s defaults created", user, self.bridge.name)
        return account

    def _send_form(self, iq: Iq, previous: Account | None) -> None:
        reply = iq.reply()
        query = reply["register"]
        query["instructions"] = self.bridge.instructions
        if previous is not None:
            query["registered"] = True
        values = previous.settings if previous else {}
        for spec in self.bridge.registration_fields:
            # Pre-data-form clients fill in the classic elements; they carry no secrets back.
            if spec.legacy_name and spec.legacy_name in Register.form_fields:
                shown = None if spec.is_secret else values.get(spec.var, spec.default)
                if shown in (None, ""):
                    query.add_field(spec.legacy_name)  # an empty element asks for the value
                else:
                    query[spec.legacy_name] = str(shown)
        query.append(
            build_form(
                self.bridge.registration_fields,
                title=f"Register with {self.bridge.display_name}",
                instructions=self.bridge.instructions,
                values=values,
                form_type="jabber:iq:register",
            )
        )
        reply.send()

    async def _remove(self, iq: Iq, previous: Account | None) -> None:
        user = iq["from"].bare
        if previous is None:
            raise stanza_error("item-not-found", "you are not registered with this gateway")
        await self.gateway.forget_user(user, "registration removed")
        iq.reply().send()
        gateway_jid = self.gateway.boundjid.bare
        for ptype in ("unsubscribe", "unsubscribed", "unavailable"):
            self.gateway.send(presence(gateway_jid, user, ptype))
        log.info("%s: unregistered from %s", user, self.bridge.name)

    async def _register(self, iq: Iq, user: str, previous: Account | None) -> None:
        query = iq["register"]
        raw: Mapping[str, Any] | None = submitted_values(query)
        if raw is None:
            raw = self._legacy_values(query)
        kept_secrets = previous.secrets if previous else {}
        try:
            values = check_values(self.bridge.registration_fields, raw, keep_secrets=kept_secrets)
        except FormInvalid as exc:
            metrics.REGISTRATIONS.labels(self.bridge.name, "invalid").inc()
            raise stanza_error("not-acceptable", exc.text) from None
        for name, secret in kept_secrets.items():
            values.setdefault(name, secret)
        wait = self.limit.wait_time(user)
        if wait:
            metrics.REGISTRATIONS.labels(self.bridge.name, "limited").inc()
            raise stanza_error(
                "resource-constraint",
                f"too many registration attempts: try again in {math.ceil(wait)} s",
            )
        try:
            data = await self.bridge.validate_registration(user, values, previous)
        except RegistrationError as exc:
            log.info("%s: registration refused: %s", user, exc.text)
            metrics.REGISTRATIONS.labels(self.bridge.name, "refused").inc()
            raise stanza_error(exc.condition, exc.text) from None
        await self.gateway.store.save_account(
            user, self.bridge.name, settings=data.settings, secrets=data.secrets
        )
        iq.reply().send()
        metrics.REGISTRATIONS.labels(self.bridge.name, "updated" if previous else "new").inc()
        log.info("%s: %s with %s", user, "updated" if previous else "registered", self.bridge.name)
        if previous is None:
            # XEP-0100 §4.1.1: ask to appear in the user's roster.
            self.gateway.send(presence(self.gateway.boundjid.bare, user, "subscribe"))
        await self.gateway.restart_session(user)

    def _legacy_values(self, query: Register) -> Mapping[str, Any]:
        return {
            spec.var: query[spec.legacy_name]
            for spec in self.bridge.registration_fields
            if spec.legacy_name and spec.legacy_name in Register.form_fields
        }
