"""A local HTTP stand-in for an outside provider, for tests and benchmarks only.

It answers any path, can be scripted to answer 429 with Retry-After, 5xx, slow responses or a
connection reset (TCP RST), and records what reaches it — arrival times, paths, the most requests
in flight at once — so a test can count at the provider's side what the guards let through.

    async with ProviderStandIn() as provider:
        provider.script(Reply(503), Reply(429, headers={"Retry-After": "1"}))
        provider.default = Reply(200, delay_s=0.2)
        ... provider.count(), provider.max_in_window(1.0), provider.max_in_flight
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from aiohttp import web

from meshdev.standins.stripe import StandInServer

__all__ = ["Arrival", "ProviderStandIn", "Reply", "max_in_window"]


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer."""

    status: int = 200
    body: object = field(default_factory=lambda: {"ok": True})
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    """Time to wait before answering (a slow provider)."""
    reset: bool = False
    """Reset the connection (RST) instead of answering."""


@dataclass(frozen=True, slots=True)
class Arrival:
    """A request as it reached the stand-in (`at` is this process's monotonic clock)."""

    at: float
    method: str
    path: str


def max_in_window(times: list[float], window: float) -> int:
    """The most events in any half-open window [t, t + window) (sorted `times`)."""
    best = 0
    for i, start in enumerate(times):
        j = bisect_left(times, start + window, lo=i)
        best = max(best, j - i)
    return best


class ProviderStandIn:
    """The stand-in server (module doc); `url` once started."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self.default = Reply()
        self._script: deque[Reply] = deque()
        self.arrivals: list[Arrival] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._server: StandInServer | None = None
        self.url = ""

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with `replies` in order, then with `default`."""
        self._script.extend(replies)

    def clear(self) -> None:
        """Forget the script, the arrivals and the in-flight peak; answer 200 by default."""
        self._script.clear()
        self.arrivals.clear()
        self.max_in_flight = self.in_flight
        self.default = Reply()

    def count(self, path: str | None = None, since: float = 0.0) -> int:
        """Requests that arrived (optionally on `path`, at or after monotonic `since`)."""
        return sum(1 for a in self.arrivals if a.at >= since and (path is None or a.path == path))

    def times(self) -> list[float]:
        return sorted(a.at for a in self.arrivals)

    def max_in_window(self, window: float = 1.0) -> int:
        """The most arrivals in any window of `window` seconds (sliding)."""
        return max_in_window(self.times(), window)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.arrivals.append(Arrival(time.monotonic(), request.method, request.path))
        reply = self._script.popleft() if self._script else self.default
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await request.read()
            if reply.delay_s > 0:
                await asyncio.sleep(reply.delay_s)
            if reply.reset:
                transport = request.transport
                sock = transport.get_extra_info("socket") if transport else None
                if sock is not None:
                    # Linger 0: close() sends RST instead of FIN.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                if transport is not None:
                    transport.abort()
                raise asyncio.CancelledError
            body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
            return web.Response(
                status=reply.status,
                body=body,
                headers={"Content-Type": "application/json", **reply.headers},
            )
        finally:
            self.in_flight -= 1

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._server = StandInServer(app, self._host, self._port, handler_cancellation=True)
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
