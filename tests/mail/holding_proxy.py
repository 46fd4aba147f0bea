"""An HTTP proxy in front of Prosody's upload service that holds requests on command.

How the tests make an upload (PUT) or a download (GET) slow without sleeping: the test
holds a method, waits until a request of it has arrived (so it is under way, not over),
checks what must happen meanwhile, and releases it. It can also answer a method with an
error status, or stop listening (a service that is down). Prosody names the proxy in its
slots (`Prosody(upload_url=proxy.url)`), so the gateway's and the clients' transfers all
pass through it; the proxy is started first, Prosody's port set as its target after.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

import aiohttp
from aiohttp import web

from bridges.timeouts import within

LOOPBACK = "127.0.0.1"
HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


class HoldingProxy:
    """Forwards every request to `target`; requests of a held method wait for release."""

    def __init__(self) -> None:
        self.target: str | None = None
        """Where requests go, e.g. http://127.0.0.1:5280 (set before the first one)."""
        self.arrived: list[str] = []
        """Methods of the requests received so far, in order."""
        self.finished: list[str] = []
        """Methods of the requests forwarded and answered, in order."""
        self._held: set[str] = set()
        self._refused: dict[str, int] = {}
        self._released = asyncio.Event()
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> HoldingProxy:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{LOOPBACK}:{port}/"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop listening: from now on the service's URLs refuse connections."""
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def hold(self, method: str) -> None:
        """Hold every `method` request from now until `release`."""
        self._held.add(method)
        self._released.clear()

    def refuse(self, method: str, status: int) -> None:
        """Answer every `method` request with HTTP `status` instead of forwarding it."""
        self._refused[method] = status

    def release(self) -> None:
        self._held.clear()
        self._released.set()

    async def wait_arrived(self, method: str, count: int = 1, timeout: float = 30.0) -> None:
        """Until `count` requests of `method` have arrived (held ones included)."""
        async with self._changed:
            await within(
                self._changed.wait_for(lambda: self.arrived.count(method) >= count), timeout
            )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        async with self._changed:
            self.arrived.append(request.method)
            self._changed.notify_all()
        if request.method in self._held:
            await self._released.wait()
        if request.method in self._refused:
            await request.read()
            return web.Response(status=self._refused[request.method], text="refused")
        assert self.target is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                request.method, self.target + request.path_qs, data=body, headers=headers
            ) as answer,
        ):
            data = await answer.read()
            response = web.Response(status=answer.status, body=data)
            if "Content-Type" in answer.headers:
                response.headers["Content-Type"] = answer.headers["Content-Type"]
        async with self._changed:
            self.finished.append(request.method)
            self._changed.notify_all()
        return response
