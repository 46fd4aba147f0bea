"""A bridge for testing the component without a legacy network.

It behaves like a tiny legacy service: registration checks a password, every message
sent to a contact is recorded and answered with an echo, so tests can watch the whole
XMPP path end to end. It is loaded the way a third-party plugin would be, through
`plugin: fake_bridge:FakeBridge` in the config.

The gateway under test runs as its own process; with the `report_socket` option the
bridge connects to the test's `FakeReports` server, sends every logged call there as a
JSON line, and takes commands back (deliver a legacy message to a user, as a network
would), so tests observe and drive the bridge across the process boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import threading
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from bridges import events
from bridges.address import Address, AddressError, AddressKind
from bridges.base import (
    NO_EXTRAS,
    Account,
    AccountData,
    AccountStore,
    Bridge,
    BridgeOptions,
    Command,
    FormField,
    MessageExtras,
    RegistrationError,
    Session,
    Sink,
)

WRONG_PASSWORD = "wrong"
REPORT_LINE_LIMIT = 16 * 1024 * 1024


class Entries:
    """What a fake bridge did, as (kind, user, data) entries, with a wait for the next."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, Any]] = []
        self._changed = asyncio.Event()

    def add(self, entry: tuple[str, str, Any]) -> None:
        self.log.append(entry)
        self._changed.set()

    def kinds(self) -> list[str]:
        return [entry[0] for entry in self.log]

    async def wait_for(self, kind: str, timeout: float = 10.0) -> tuple[str, str, Any]:
        """The first entry of `kind` (removed from the log)."""
        async with asyncio.timeout(timeout):
            while True:
                for entry in self.log:
                    if entry[0] == kind:
                        self.log.remove(entry)
                        return entry
                self._changed.clear()
                await self._changed.wait()


class FakeOptions(BridgeOptions):
    greeting: str = "echo"
    report_socket: str | None = None
    """A unix socket where a `FakeReports` listens (the test's side of the bridge)."""
    strand_a_thread: bool = False
    """Leave a thread running at close, like a database connection cut off mid-query."""


class FakeSession(Session):
    def __init__(self, bridge: FakeBridge, account: Account, sink: Sink, store: AccountStore):
        super().__init__(bridge, account, sink, store)
        self.fake = bridge

    async def start(self) -> None:
        self.fake.sessions[self.account.user] = self
        self.fake.record("start", self.account.user, dict(self.account.secrets))

    async def stop(self) -> None:
        self.fake.record("stop", self.account.user, None)

    async def set_presence(self, show: str, status: str) -> None:
        self.fake.record("presence", self.account.user, (show, status))

    async def send_message(
        self,
        to: Address,
        text: str,
        *,
        xmpp_id: str | None = None,
        subject: str | None = None,
        thread: str | None = None,
        origin: events.Origin | None = None,
        extras: MessageExtras = NO_EXTRAS,
    ) -> None:
        if to.legacy_id.startswith("fail"):
            await self.sink.deliver(
                events.DeliveryFailed(to, xmpp_id, "item-not-found", "no such user")
            )
            return
        self.fake.record("message", self.account.user, (to.legacy_id, text))
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
        self.entries = Entries()
        self.sessions: dict[str, FakeSession] = {}
        """The last session started per user; a stopped one still has its sink, like a
        real session whose legacy event arrives while the gateway is going down."""
        self._reports: asyncio.StreamWriter | None = None
        self._backlog: list[bytes] = []
        self._commands: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[None] | None = None
        socket_path = options.report_socket  # type: ignore[attr-defined]
        if socket_path:
            self._reader = asyncio.get_running_loop().create_task(self._serve_reports(socket_path))

    def record(self, kind: str, user: str, data: Any) -> None:
        """Log a call: for tests in this process, or on the test's socket if there is one
        (then not kept here, where a long-running shared gateway would pile it up)."""
        if self._reader is None:
            self.entries.add((kind, user, data))
            return
        line = json.dumps([kind, user, data]).encode() + b"\n"
        if self._reports is not None:
            self._reports.write(line)
        else:
            self._backlog.append(line)  # sent once the connection is up

    async def _serve_reports(self, socket_path: str) -> None:
        reader, self._reports = await asyncio.open_unix_connection(socket_path)
        for line in self._backlog:
            self._reports.write(line)
        self._backlog.clear()
        async for line in reader:
            task = asyncio.create_task(self._run_command(json.loads(line)))
            self._commands.add(task)
            task.add_done_callback(self._commands.discard)

    async def _run_command(self, command: dict[str, str]) -> None:
        """`deliver`: a message from `sender` on the network reaches `user`'s session."""
        user = command["user"]
        session = self.sessions[user]
        message = events.Message(
            sender=super().parse_address(command["sender"]), text=command["text"]
        )
        self.record("delivering", user, command["text"])
        try:
            await session.sink.deliver(message)
        except ConnectionError as exc:
            self.record("undelivered", user, str(exc))
        else:
            self.record("delivered", user, command["text"])

    async def close(self) -> None:
        """Report how the commands still running end (shutdown ends their waits), then
        hang up."""
        await asyncio.gather(*self._commands, return_exceptions=True)
        if self._reader is not None:
            self._reader.cancel()
        if self._reports is not None:
            self._reports.close()
        if self.options.strand_a_thread:  # type: ignore[attr-defined]
            threading.Thread(target=threading.Event().wait, name="stranded").start()

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
        """The first recorded call of `kind` (removed from the record)."""
        return await self.entries.wait_for(kind, timeout)


class SecondBridge(FakeBridge):
    """The fake bridge under another name, for a gateway that serves two bridges."""

    name = "second"


class FakeReports:
    """The test's side of `report_socket`: every fake bridge of every gateway process
    connects here and reports what it does; tests read it through `view()`s."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._views: list[FakeView] = []
        self._bridges: list[asyncio.StreamWriter] = []
        self._bridge_of: dict[str, asyncio.StreamWriter] = {}
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        # A report carries a whole message: allow the 100 kB bodies tests send.
        self._server = await asyncio.start_unix_server(
            self._on_bridge, self.socket_path, limit=REPORT_LINE_LIMIT
        )

    async def close(self) -> None:
        for writer in self._bridges:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _on_bridge(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._bridges.append(writer)
        async for line in reader:
            kind, user, data = json.loads(line)
            if kind == "start":
                self._bridge_of[user] = writer
            entry = (kind, user, tuple(data) if isinstance(data, list) else data)
            for view in self._views:
                view.add(entry)
        self._bridges.remove(writer)

    def view(self) -> FakeView:
        """A fresh view: what happens from now on to the users added to it."""
        view = FakeView(self)
        self._views.append(view)
        return view

    def forget(self, view: FakeView) -> None:
        self._views.remove(view)

    def deliver(self, user: str, sender: str, text: str) -> None:
        command = {"user": user, "sender": sender, "text": text}
        self._bridge_of[user].write(json.dumps(command).encode() + b"\n")


class FakeView(Entries):
    """What fake bridges report about `users`: one test's share of a shared gateway.

    `wait_for` means what `FakeBridge.wait_for` means; JSON lists come back as tuples
    so entries compare like the in-process ones.
    """

    def __init__(self, reports: FakeReports) -> None:
        super().__init__()
        self.reports = reports
        self.users: set[str] = set()

    def add(self, entry: tuple[str, str, Any]) -> None:
        if entry[1] in self.users:
            super().add(entry)

    def deliver(self, user: str, sender: str, text: str) -> None:
        """Have the bridge that runs `user`'s session deliver a legacy message from
        `sender`; it reports `delivering`, then `delivered` or `undelivered`."""
        self.reports.deliver(user, sender, text)


@contextlib.asynccontextmanager
async def fake_reports() -> AsyncIterator[FakeReports]:
    """A `FakeReports` on a socket in a fresh short directory (unix paths are limited)."""
    with tempfile.TemporaryDirectory(prefix="xgw-fake-", dir="/tmp") as directory:
        reports = FakeReports(Path(directory) / "fake.sock")
        await reports.start()
        try:
            yield reports
        finally:
            await reports.close()
