"""The ops HTTP port: Prometheus `/metrics`, liveness `/healthz`, readiness `/readyz`.

Served by aiohttp on its own port so that scraping and probes never compete with gRPC traffic and
need no token.

A registry collector's `collect()` is synchronous, so figures that must be read from elsewhere (a
database) are read by a scrape hook (`Kit.on_scrape`) that `/metrics` awaits first, all hooks at
once, for at most `scrape_timeout_s`; a hook still running then goes on in the background and the
page shows what its collector holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

_log = logging.getLogger(__name__)

_ANY_ADDRESS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - bind addresses, compared only


def reachable_host(bind_host: str) -> str:
    """An address a local client can connect to for a server bound to `bind_host` (a wildcard
    bind is reached on loopback)."""
    return "127.0.0.1" if bind_host in _ANY_ADDRESS else bind_host


class HttpServer:
    """The public HTTP port of a service (provider webhooks, static metadata): only started
    when the service registered routes."""

    def __init__(self, *, host: str, port: int) -> None:
        self._host = host
        self.port = port
        self.app = web.Application(client_max_size=1024 * 1024)
        self._runner: web.AppRunner | None = None

    @property
    def has_routes(self) -> bool:
        return len(self.app.router.routes()) > 0

    def local_url(self, path: str = "") -> str:
        """`http://<host>:<port><path>` as a client on this machine reaches the server (once
        started, the port is the bound one)."""
        return f"http://{reachable_host(self._host)}:{self.port}{path}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self.port, reuse_address=True)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class OpsServer(HttpServer):
    """The ops port: `/metrics`, `/healthz` (alive), `/readyz` (SERVING and not draining)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        host: str,
        port: int,
        ready: Callable[[], bool],
    ) -> None:
        super().__init__(host=host, port=port)
        self._registry = registry
        self._ready = ready
        self.scrape_hooks: list[Callable[[], Awaitable[object]]] = []
        self.scrape_timeout_s = 3.0
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)

    async def _metrics(self, _request: web.Request) -> web.Response:
        if self.scrape_hooks:
            await self._run_scrape_hooks()
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _run_scrape_hooks(self) -> None:
        tasks = [asyncio.ensure_future(hook()) for hook in self.scrape_hooks]
        done, _ = await asyncio.wait(tasks, timeout=self.scrape_timeout_s)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                _log.warning("a scrape hook failed", exc_info=task.exception())

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")
