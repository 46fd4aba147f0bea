"""A bridge for testing the component without a legacy network.

It behaves like a tiny legacy service: registration checks a password, every message
sent to a contact is recorded and answered with an echo, so tests can watch the whole
XMPP path end to end. It is loaded the way a third-party plugin would be, through
`plugin: fake_bridge:FakeBridge` in the config.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar

from bridges import events
from bridges.address import Address, AddressError, AddressKind
from bridges.base import (
    Account,
    AccountData,
    AccountStore,
    Bridge,
    BridgeOptions,
    Command,
    FormField,
    RegistrationError,
    Session,
    Sink,
)

WRONG_PASSWORD = "wrong"


class FakeOptions(BridgeOptions):
    greeting: str = "echo"


class FakeSession(Session):
    def __init__(self, bridge: FakeBridge, account: Account, sink: Sink, store: AccountStore):
        super().__init__(bridge, account, sink, store)
        self.fake = bridge

    async def start(self) -> None:
        self.fake.log.append(("start", self.account.user, dict(self.account.secrets)))
        self.fake.changed.set()

    async def stop(self) -> None:
        self.fake.log.append(("stop", self.account.user, None))
        self.fake.changed.set()

    async def set_presence(self, show: str, status: str) -> None:
        self.fake.log.append(("presence", self.account.user, (show, status)))
        self.fake.changed.set()

    async def send_message(
        self,
        to: Address,
        text: str,
        *,
        xmpp_id: str | None = None,
        subject: str | None = None,
        thread: str | None = None,
    ) -> None:
        if to.legacy_id.startswith("fail"):
            await self.sink.deliver(
                events.DeliveryFailed(to, xmpp_id, "item-not-found", "no such user")
            )
            return
        self.fake.log.append(("message", self.account.user, (to.legacy_id, text)))
        self.fake.changed.set()
        if xmpp_id:
            await self.sink.deliver(events.Delivered(to, xmpp_id))
        greeting = self.fake.options.greeting  # type: ignore[attr-defined]
        await self.sink.deliver(
            events.Message(sender=to, text=f"{greeting}: {text}", nick="Echo", thread=thread)
        )


class FakeBridge(Bridge):
    name = "fake"
    disco_type = "fake"
    display_name = "Fake network"
    instructions = "Enter your fake network login."
    Options = FakeOptions
    registration_fields: ClassVar = (
        FormField("username", "User name", required=True, legacy_name="username"),
        FormField(
            "password", "Password", type="text-private", required=True, legacy_name="password"
        ),
        FormField("port", "Port", datatype="xs:integer", default=1234),
        FormField("mode", "Mode", type="list-single", options=("fast", "slow"), default="fast"),
        FormField("verbose", "Verbose", type="boolean", default=False),
    )

    def __init__(self, options: BridgeOptions) -> None:
        super().__init__(options)
        self.log: list[tuple[str, str, Any]] = []
        self.changed = asyncio.Event()

    async def validate_registration(
        self, user: str, values: Mapping[str, Any], previous: Account | None
    ) -> AccountData:
        if values["password"] == WRONG_PASSWORD:
            raise RegistrationError("login failed: bad password", field="password")
        settings = {k: v for k, v in values.items() if k != "password"}
        return AccountData(settings=settings, secrets={"password": values["password"]})

    def create_session(self, account: Account, sink: Sink, store: AccountStore) -> Session:
        return FakeSession(self, account, sink, store)

    def parse_address(self, localpart: str) -> Address:
        if localpart.startswith("bad"):
            raise AddressError(f"{localpart!r} is not a fake address")
        if localpart == "server":
            return Address(AddressKind.SERVICE, "server")
        return super().parse_address(localpart)

    def commands(self, address: Address | None) -> list[Command]:
        if address is None or address.kind is not AddressKind.SERVICE:
            return []
        return [Command("settings", "Server settings", self._settings_form, self._save)]

    async def _settings_form(self, account: Account, address: Address) -> list[FormField]:
        return [FormField("motto", "Motto", required=True, default=account.state.get("motto"))]

    async def _save(
        self, account: Account, address: Address, store: AccountStore, values: dict[str, Any]
    ) -> str:
        await store.put_record("settings", address.legacy_id, values)
        return f"Saved motto {values['motto']!r}"

    async def wait_for(self, kind: str, timeout: float = 10.0) -> tuple[str, str, Any]:
        """The first logged entry of `kind` (removed from the log)."""
        async with asyncio.timeout(timeout):
            while True:
                for entry in self.log:
                    if entry[0] == kind:
                        self.log.remove(entry)
                        return entry
                self.changed.clear()
                await self.changed.wait()
