"""A real HTTP receiver for webhooks a stand-in posts, for tests: it keeps every request (method,
path, full URL, headers, raw body) and answers with a status the test chooses, so a test can
check signatures over the exact bytes and URL a provider signed.

    async with WebhookReceiver() as hooks:
        server.webhook_url = hooks.url + "/square"
        ...
        [hit] = await hooks.wait("/square", 1)
        verify(hit.body, hit.headers["x-square-hmacsha256-signature"], hit.url)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self
from urllib.parse import parse_qsl

from aiohttp import web

from meshdev.standins.stripe import StandInServer

__all__ = ["ReceivedHook", "WebhookReceiver"]


@dataclass(frozen=True, slots=True)
class ReceivedHook:
    """One request as it reached the receiver."""

    method: str
    path: str
    url: str
    """The full URL as requested (scheme, host, port, path and query)."""
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    @property
    def form(self) -> dict[str, str]:
        """A form-encoded body as a flat dict (`data[merges][EMAIL]` keys kept as they are)."""
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))


@dataclass
class WebhookReceiver:
    """Serves every method and path on 127.0.0.1 (ephemeral port) in the running event loop."""

    status: int = 200
    """The status answered (change it to make the provider see failures)."""
    statuses: dict[str, int] = field(default_factory=dict)
    """A status per path, over `status`."""
    url: str = ""
    received: list[ReceivedHook] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _server: StandInServer | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(
            ReceivedHook(
                request.method, request.path, str(request.url), dict(request.headers), body
            )
        )
        self._arrived.set()
        return web.Response(status=self.statuses.get(request.path, self.status))

    def at(self, path: str, method: str | None = None) -> list[ReceivedHook]:
        return [
            r for r in self.received if r.path == path and (method is None or r.method == method)
        ]

    async def wait(
        self, path: str, count: int, *, method: str | None = "POST", timeout: float = 10.0
    ) -> list[ReceivedHook]:
        """Wait until `count` requests reached `path`; return them all."""
        async with asyncio.timeout(timeout):
            while len(self.at(path, method)) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.at(path, method)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._server = StandInServer(app)
        self.url = await self._server.start()
        return self.url

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
