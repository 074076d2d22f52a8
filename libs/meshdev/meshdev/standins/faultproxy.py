"""A fault-injecting HTTP proxy between a service's provider client and a provider stand-in.

The service under test is pointed at `<proxy.url>` instead of the provider (for payment:
`stripe_api_base`); the proxy forwards every request (method, path, query, headers, body) to the
real upstream (localstripe, a `ProviderStandIn`, ...) and streams the answer back. Our code runs
unmodified: faults are injected where they happen in production, on the network between us and
the provider. Tests script it per request kind (method + path prefix):

* `hold(method, path)`: matching requests wait at the proxy, before reaching the provider, until
  the rule is released; then they go through. "The create is waiting on the provider", made
  deterministic instead of raced with sleeps.
* `lose_answer(method, path)`: the first matching request reaches the provider and the provider
  acts on it, but the proxy reads the answer and closes the connection without sending a byte of
  it; every later matching request (the guard's retries) has its connection closed before it
  reaches the provider, until the rule is released. The client sees a transport error (for the
  `stripe` SDK: `aiohttp.ServerDisconnectedError` inside `stripe.APIConnectionError`), which the
  adapter hands to the kit's guard as a connection failure: retried, then UNAVAILABLE, outcome
  unknown. That is what a crash after the provider's side effect leaves behind.

Why retries are cut rather than forwarded: the guard retries a create with the same idempotency
key. A real provider would replay its first answer to that retry (and so recover the lost
answer), while a stand-in may ignore the key (localstripe ignores Idempotency-Key and would
create a second PaymentIntent). Cutting the retries models a link that stays down for the whole
call (or a process that died): exactly one side effect exists at the provider and its answer
never arrives.

Each rule counts the requests it matched, forwarded upstream and dropped, from its installation
on (after `release()` it keeps counting the requests it lets through).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

Mode = Literal["hold", "lose"]

# Hop-by-hop headers (RFC 9110 §7.6.1) and the ones the proxy's own HTTP stack sets.
_NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
# Headers aiohttp's client would add on its own: a proxy forwards the caller's, not these.
CLIENT_DEFAULT_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


def end_to_end_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The headers a proxy passes on (hop-by-hop ones, which describe one connection, dropped)."""
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in _NOT_FORWARDED)


@dataclass(eq=False)
class Rule:
    """One scripted fault for the requests whose method and path (prefix) match."""

    method: str
    path: str
    mode: Mode
    matched: int = 0
    """Matching requests that reached the proxy."""
    forwarded: int = 0
    """Of those, the ones sent on upstream (whether or not their answer was dropped)."""
    dropped: int = 0
    """Of those, the ones whose connection was closed without an answer."""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the first matching request reaches the proxy."""
    released: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by `release()`: the fault is over and matching requests go through unharmed."""
    first_sent: bool = False
    """lose mode: the one request that reaches the provider while the fault lasts has been sent."""

    def matches(self, method: str, path: str) -> bool:
        return method.upper() == self.method.upper() and path.startswith(self.path)

    def release(self) -> None:
        self.released.set()

    async def wait_arrived(self, timeout: float = 10.0) -> None:
        """Wait until a matching request has reached the proxy."""
        await asyncio.wait_for(self.arrived.wait(), timeout=timeout)


class FaultProxy:
    """A reverse proxy on 127.0.0.1 (ephemeral port) in front of `upstream` (module doc)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules: list[Rule] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._url = ""

    @property
    def url(self) -> str:
        """The base URL to give the service instead of the provider's (e.g. `stripe_api_base`)."""
        if not self._url:
            raise RuntimeError("the proxy is not started")
        return self._url

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        # auto_decompress=False: bodies pass through byte for byte, Content-Encoding intact.
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=60)
        )
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self._url = f"http://{host}:{port}"

    async def close(self) -> None:
        self.release_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- scripting ----------------------------------------------------------------------------
    def hold(self, method: str, path: str) -> Rule:
        """Hold matching requests before they reach the provider until the rule is released."""
        return self._add(Rule(method, path, "hold"))

    def lose_answer(self, method: str, path: str) -> Rule:
        """Let the first matching request reach the provider but drop its answer; cut every
        later one before it reaches the provider; until the rule is released."""
        return self._add(Rule(method, path, "lose"))

    def release_all(self) -> None:
        for rule in self.rules:
            rule.release()

    def _add(self, rule: Rule) -> Rule:
        self.rules.append(rule)
        return rule

    def _rule_for(self, method: str, path: str) -> Rule | None:
        # The newest matching rule wins: a rule installed later overrides an earlier one.
        return next((r for r in reversed(self.rules) if r.matches(method, path)), None)

    # -- the proxy ----------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        rule = self._rule_for(request.method, request.path)
        if rule is None:
            return await self._stream(request, body)
        rule.matched += 1
        rule.arrived.set()
        if rule.mode == "hold":
            await rule.released.wait()
        elif not rule.released.is_set():
            if rule.first_sent:
                # The link is down: this attempt never reaches the provider.
                return self._cut(request, rule)
            rule.first_sent = True
            rule.forwarded += 1
            await self._exchange(request, body)  # the provider acts on it; the answer is read ...
            return self._cut(request, rule)  # ... and lost on its way back
        rule.forwarded += 1
        return await self._stream(request, body)

    @contextlib.asynccontextmanager
    async def _upstream_request(
        self, request: web.Request, body: bytes
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The same request (method, path, query, headers, body), sent upstream."""
        assert self._session is not None, "the proxy is not started"
        async with self._session.request(
            request.method,
            URL(self.upstream + request.raw_path, encoded=True),
            headers=end_to_end_headers(request.headers),
            data=body,
            allow_redirects=False,
            # Send exactly the client's headers: none of aiohttp's defaults added.
            skip_auto_headers=CLIENT_DEFAULT_HEADERS,
        ) as upstream:
            yield upstream

    async def _exchange(self, request: web.Request, body: bytes) -> None:
        """Forward the request and read the provider's whole answer (then forget it)."""
        async with self._upstream_request(request, body) as upstream:
            await upstream.read()

    async def _stream(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """Forward the request and stream the provider's answer back as it arrives."""
        async with self._upstream_request(request, body) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                reason=upstream.reason,
                headers=end_to_end_headers(upstream.headers),
            )
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    @staticmethod
    def _cut(request: web.Request, rule: Rule) -> web.StreamResponse:
        """Close the client's connection without a byte of answer."""
        rule.dropped += 1
        if request.transport is not None:
            request.transport.close()
        # Never sent: aiohttp finds the connection closed and drops this response.
        return web.Response(status=502)
