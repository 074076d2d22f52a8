"""What the HTTP provider stand-ins share. `HttpStandIn`, the server base of all of them (the
messaging ones, `sendgrid` and `twilio`, too): fault script, webhook sender, lifecycle and control
API; `ApiStandIn`, what the integration providers' stand-ins (`square`, `quickbooks`,
`mailchimp`) add: a clock and call counters. Also rate limits (token bucket, sliding window,
fixed window, in-flight caps) that count what they refuse; a body-keyed idempotency store; OAuth
helpers (PKCE S256, single-use authorization codes); tokens and timestamps.

Dev/test only, like every module in `meshdev.standins`.

Control API every `HttpStandIn` serves (JSON; the providers never use `/_standin/`):

    GET    /_standin/health          {"ok": true}
    GET    /_standin/settings        what it runs with (an `ApiStandIn`: plus the call counters,
                                     `stats`)
    PATCH  /_standin/config          change limits / webhook settings while it runs
    POST   /_standin/faults          {"count", "status" (5xx | 429 | 0), "delay_s", "retry_after"}
    DELETE /_standin/faults
    GET    /_standin/deliveries      every webhook POST made and the receiver's answer
    POST   /_standin/reset           forget data, grants, faults, counters and deliveries

and every `ApiStandIn` also:

    POST   /_standin/clock           {"advance_s": N}: move the provider's clock forward (token
                                     expiry, `updated_at`), never the rate limiters' clock
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import secrets
import time
from abc import ABC, abstractmethod
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiohttp import web

from meshdev.standins.stripe import StandInServer

__all__ = [
    "ApiStandIn",
    "AuthCode",
    "AuthCodes",
    "Clock",
    "Decision",
    "Fault",
    "FaultScript",
    "FixedWindow",
    "HttpStandIn",
    "InFlight",
    "Limit",
    "ReplayStore",
    "SlidingWindow",
    "Stats",
    "TokenBucket",
    "WebhookDelivery",
    "WebhookSender",
    "decode_cursor",
    "dumps",
    "encode_cursor",
    "json_response",
    "new_token",
    "parse_rfc3339",
    "pkce_challenge",
    "read_json_object",
    "rfc3339",
]

logger = logging.getLogger(__name__)


# -- time and tokens -------------------------------------------------------------------------


class Clock:
    """The provider's wall clock (epoch seconds): real time plus an offset tests can advance, so
    "the access token expired" needs no sleeping."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def now(self) -> float:
        return time.time() + self.offset_s

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.offset_s += seconds


def rfc3339(epoch: float, *, millis: bool = True) -> str:
    """`2026-05-01T12:00:00.123Z` (UTC), as Square and Intuit write timestamps."""
    moment = datetime.fromtimestamp(epoch, UTC)
    if millis:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float:
    """Epoch seconds of an RFC 3339 / ISO 8601 timestamp (`Z` or an offset; naive means UTC)."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def new_token(prefix: str = "", nbytes: int = 24) -> str:
    return prefix + secrets.token_urlsafe(nbytes)


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: BASE64URL(SHA256(ASCII(code_verifier))) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# -- rate limits -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """One rate-limit decision."""

    allowed: bool
    limit: int
    remaining: int
    retry_after_s: float
    """Time until the next call would be allowed (0 when allowed)."""
    reset_s: float
    """Time until the limit is whole again."""


class Limit(ABC):
    """A rate limit; `None` capacity never refuses."""

    @abstractmethod
    def take(self) -> Decision:
        """Count one call, or refuse it."""

    @abstractmethod
    def reset(self) -> None:
        """Forget every call counted."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The limit's settings, for `GET /_standin/settings`."""


class TokenBucket(Limit):
    """`rate_per_s` tokens a second, at most `burst` saved (default: one second's worth). A
    client paced at exactly `rate_per_s` is never refused, whatever the jitter in between."""

    def __init__(
        self,
        rate_per_s: float | None,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.configure(rate_per_s, burst)

    def configure(self, rate_per_s: float | None, burst: int | None = None) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst if burst is not None else max(1, round(rate_per_s or 1))
        self.reset()

    def reset(self) -> None:
        self._tokens = float(self.burst)
        self._at = self.clock()

    def take(self) -> Decision:
        if self.rate_per_s is None:
            return Decision(True, 0, 0, 0.0, 0.0)
        now = self.clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            reset = (self.burst - self._tokens) / self.rate_per_s
            return Decision(True, self.burst, int(self._tokens), 0.0, reset)
        wait = (1.0 - self._tokens) / self.rate_per_s
        return Decision(False, self.burst, 0, wait, (self.burst - self._tokens) / self.rate_per_s)

    def describe(self) -> dict[str, Any]:
        return {"kind": "token_bucket", "rate_per_s": self.rate_per_s, "burst": self.burst}


class SlidingWindow(Limit):
    """At most `limit` accepted calls in any window of `period_s` seconds (refused calls do not
    count), as "500 requests per minute" reads."""

    def __init__(
        self, limit: int | None, period_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.period_s = period_s
        self.clock = clock
        self._accepted: deque[float] = deque()

    def reset(self) -> None:
        self._accepted.clear()

    def take(self) -> Decision:
        if self.limit is None:
            return Decision(True, 0, 0, 0.0, 0.0)
        now = self.clock()
        while self._accepted and self._accepted[0] <= now - self.period_s:
            self._accepted.popleft()
        if len(self._accepted) < self.limit:
            self._accepted.append(now)
            reset = self._accepted[0] + self.period_s - now
            return Decision(True, self.limit, self.limit - len(self._accepted), 0.0, reset)
        wait = self._accepted[0] + self.period_s - now
        return Decision(False, self.limit, 0, wait, self._accepted[-1] + self.period_s - now)

    def describe(self) -> dict[str, Any]:
        return {"kind": "sliding_window", "limit": self.limit, "period_s": self.period_s}


class InFlight:
    """Requests in flight per key (an account, a realm), with a cap; counts the peak."""

    def __init__(self, cap: int | None) -> None:
        self.cap = cap
        self.current: Counter[str] = Counter()
        self.peak = 0

    @contextmanager
    def enter(self, key: str) -> Iterator[bool]:
        """Count this request in; yields False when it is over the cap (refuse it)."""
        self.current[key] += 1
        self.peak = max(self.peak, self.current[key])
        try:
            yield self.cap is None or self.current[key] <= self.cap
        finally:
            self.current[key] -= 1
            if self.current[key] <= 0:
                del self.current[key]


@dataclass(slots=True)
class Stats:
    """What reached the provider, counted at its side (tests prove "exactly once" and "no 429"
    with these)."""

    calls: Counter[str] = field(default_factory=Counter)
    """Authenticated API calls by operation name (refused ones included)."""
    rate_limited: int = 0
    """429s answered because a limit was exceeded (scripted 429s are not counted here)."""
    concurrency_limited: int = 0
    """429s answered because too many requests were in flight."""
    scripted_faults: int = 0
    unauthorized: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "total_calls": sum(self.calls.values()),
            "rate_limited": self.rate_limited,
            "concurrency_limited": self.concurrency_limited,
            "scripted_faults": self.scripted_faults,
            "unauthorized": self.unauthorized,
        }


# -- idempotency (keys in the body, as Square's; request ids, as Intuit's) ---------------------


@dataclass(slots=True)
class _Saved:
    fingerprint: bytes
    created: float
    status: int | None = None
    """None while the first request runs."""
    body: bytes = b""


class ReplayStore:
    """Keys scoped per account: the first complete answer under a key is replayed for the same
    request; another request under the key, or the key while its first request runs, is
    reported to the caller, which answers in its provider's words. Bounded, memory only."""

    def __init__(self, ttl_s: float = 24 * 3600.0, max_keys: int = 200_000) -> None:
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._entries: OrderedDict[tuple[str, str], _Saved] = OrderedDict()
        self.replayed = 0

    def clear(self) -> None:
        self._entries.clear()
        self.replayed = 0

    @staticmethod
    def fingerprint(*parts: bytes | str) -> bytes:
        digest = hashlib.sha256()
        for part in parts:
            digest.update(b"\0")
            digest.update(part.encode() if isinstance(part, str) else part)
        return digest.digest()

    def begin(self, scope: str, key: str, fingerprint: bytes) -> str | tuple[int, bytes]:
        """`"new"` (run it, then `finish`), `"mismatch"`, `"in_flight"`, or the saved
        (status, body) to replay."""
        now = time.monotonic()
        while self._entries:
            ident, oldest = next(iter(self._entries.items()))
            if oldest.created + self.ttl_s > now and len(self._entries) <= self.max_keys:
                break
            del self._entries[ident]
        saved = self._entries.get((scope, key))
        if saved is None:
            self._entries[(scope, key)] = _Saved(fingerprint, now)
            return "new"
        if saved.fingerprint != fingerprint:
            return "mismatch"
        if saved.status is None:
            return "in_flight"
        self.replayed += 1
        return saved.status, saved.body

    def finish(self, scope: str, key: str, status: int | None, body: bytes = b"") -> None:
        """Keep the answer (or, `status` None: the request did not run, free the key)."""
        saved = self._entries.get((scope, key))
        if saved is None:
            return
        if status is None:
            del self._entries[(scope, key)]
            return
        saved.status, saved.body = status, body


# -- OAuth authorization codes ---------------------------------------------------------------


@dataclass(slots=True)
class AuthCode:
    """A code the authorize step issued: single use, short-lived, bound to its client and
    redirect URI (and, with PKCE, to its challenge)."""

    code: str
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    account: str
    """The merchant / realm / Mailchimp account that consented."""
    expires_at: float
    code_challenge: str | None = None
    used: bool = False


class AuthCodes:
    """Issued codes; `redeem` enforces single use, expiry, client and redirect URI."""

    def __init__(self, clock: Clock, ttl_s: float = 300.0) -> None:
        self.clock = clock
        self.ttl_s = ttl_s
        self._codes: dict[str, AuthCode] = {}

    def clear(self) -> None:
        self._codes.clear()

    def issue(
        self,
        *,
        client_id: str,
        redirect_uri: str,
        scopes: tuple[str, ...],
        account: str,
        code_challenge: str | None = None,
        prefix: str = "",
    ) -> AuthCode:
        code = AuthCode(
            code=new_token(prefix, 18),
            client_id=client_id,
            redirect_uri=redirect_uri,
            scopes=scopes,
            account=account,
            expires_at=self.clock.now() + self.ttl_s,
            code_challenge=code_challenge,
        )
        self._codes[code.code] = code
        return code

    def redeem(self, code: str, client_id: str, redirect_uri: str | None) -> AuthCode | str:
        """The code, now used; or why not: `unknown`, `used`, `expired`, `client`, `redirect`."""
        found = self._codes.get(code)
        if found is None:
            return "unknown"
        if found.used:
            return "used"
        if found.expires_at <= self.clock.now():
            return "expired"
        if found.client_id != client_id:
            return "client"
        if redirect_uri is not None and redirect_uri != found.redirect_uri:
            return "redirect"
        found.used = True
        return found


def encode_cursor(after: int, scope: str = "") -> str:
    """An opaque cursor: "after sequence number `after`" (stable while records are added)."""
    raw = json.dumps({"a": after, "s": scope}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, scope: str = "") -> int | None:
    """The sequence number a cursor names; None when it is not one of ours (or for another
    query)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        after = data["a"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(after, int) or data.get("s", "") != scope:
        return None
    return after


# -- faults, rate windows, webhooks and JSON (every HTTP stand-in here) ----------------------


@dataclass(frozen=True, slots=True)
class Fault:
    """One scripted answer to the next API call."""

    status: int = 503
    """The status to answer with (5xx, or 429); 0 answers normally, after `delay_s`."""
    delay_s: float = 0.0
    """Time to wait before answering."""
    retry_after: int | None = None
    """Seconds for a `Retry-After` header."""


class FaultScript:
    """Faults for the next calls, in order; then `latency_s` on every call."""

    def __init__(self) -> None:
        self._queue: deque[Fault] = deque()
        self.latency_s = 0.0
        """Latency added to every API call (on top of a fault's own delay)."""

    def add(self, fault: Fault, count: int = 1) -> None:
        self._queue.extend([fault] * count)

    def next(self) -> Fault | None:
        return self._queue.popleft() if self._queue else None

    def clear(self) -> None:
        self._queue.clear()
        self.latency_s = 0.0

    def __len__(self) -> int:
        return len(self._queue)

    def add_json(self, spec: dict[str, Any]) -> None:
        """`{"count": n, "status": s, "delay_s": d, "retry_after": r}` (control API)."""
        retry_after = spec.get("retry_after")
        self.add(
            Fault(
                status=int(spec.get("status", 503)),
                delay_s=float(spec.get("delay_s", 0.0)),
                retry_after=None if retry_after is None else int(retry_after),
            ),
            int(spec.get("count", 1)),
        )


class FixedWindow:
    """At most `limit` calls per window of `period_s` (windows aligned on the epoch, like the
    providers' `Reset` headers); `limit=None` never refuses."""

    def __init__(
        self, limit: int | None, period_s: float = 1.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.limit = limit
        self.period_s = period_s
        self.clock = clock
        self._window = -1
        self._used = 0

    def take(self) -> tuple[bool, int, int]:
        """Count one call: (allowed, remaining after it, the window's end in epoch seconds)."""
        now = self.clock()
        window = int(now // self.period_s)
        if window != self._window:
            self._window, self._used = window, 0
        reset = int((window + 1) * self.period_s)
        if self.limit is None:
            return True, 0, reset
        if self._used >= self.limit:
            return False, 0, reset
        self._used += 1
        return True, self.limit - self._used, reset

    def reset(self) -> None:
        self._window, self._used = -1, 0


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One POST a stand-in made to a webhook URL, and the receiver's answer."""

    url: str
    body: bytes
    headers: dict[str, str]
    status: int | None
    """The receiver's HTTP status; None when no answer came (`error` says why)."""
    error: str = ""
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "body": self.body.decode("utf-8", errors="replace")}


class WebhookSender:
    """Posts webhooks from a stand-in and keeps every attempt in `deliveries`. Background sends
    (automatic events) are tracked and cancelled on `stop()`."""

    def __init__(self, user_agent: str) -> None:
        self.user_agent = user_agent
        self.deliveries: list[WebhookDelivery] = []
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("webhook task failed", exc_info=task.exception())

    async def idle(self, timeout: float = 10.0) -> None:
        """Wait until every background send has finished."""
        async with asyncio.timeout(timeout):
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> WebhookDelivery:
        if self._session is None:
            raise RuntimeError("the stand-in is not started")
        sent = {"User-Agent": self.user_agent, **headers}
        try:
            async with self._session.post(url, data=body, headers=sent) as response:
                await response.read()
                delivery = WebhookDelivery(url, body, sent, response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            delivery = WebhookDelivery(url, body, sent, None, f"{type(exc).__name__}: {exc}")
        self.deliveries.append(delivery)
        # One self-contained line: a stand-in process logs with a plain format (no extras).
        logger.info("webhook POST %s -> %s", url, delivery.status or delivery.error)
        return delivery


def json_response(
    obj: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(obj).encode(),
        content_type="application/json",
        headers=headers,
    )


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The control API's JSON body (an object; empty means `{}`)."""
    raw = await request.read()
    if not raw.strip():
        return {}
    body = json.loads(raw)
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return body


# -- the server base -------------------------------------------------------------------------


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpStandIn(ABC):
    """A provider stand-in served in the running event loop (`async with`), or as a process
    through `app` (`web.run_app`): the fault script, the webhook sender and the control API
    under `/_standin/` (health, settings, config, faults, deliveries, reset). Subclasses add the
    provider's API in `_routes`, their own control routes in `_extra_control`, their settings in
    `_settings_json` / `_configure_json`, and forget their data in `_reset_data`."""

    user_agent = "meshdev stand-in"
    client_max_size = 1024**2
    """The largest request body accepted (aiohttp's default)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.faults = FaultScript()
        self.sender = WebhookSender(self.user_agent)
        self.app = self._build_app()
        self._server = StandInServer(self.app, host, port)

    # -- subclass hooks --------------------------------------------------------------------------
    @abstractmethod
    def _routes(self, app: web.Application) -> None:
        """Add the provider's API routes."""

    @abstractmethod
    def _settings_json(self) -> dict[str, Any]:
        """The provider-specific part of `GET /_standin/settings`."""

    @abstractmethod
    def _configure_json(self, spec: dict[str, Any]) -> None:
        """Apply the provider-specific keys of a `PATCH /_standin/config`."""

    @abstractmethod
    def _reset_data(self) -> None:
        """Forget the provider's data and grants."""

    @abstractmethod
    def _extra_control(self, app: web.Application) -> None:
        """Provider-specific control routes under `/_standin/`."""

    # -- scripting ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self._server.url

    @property
    def deliveries(self) -> list[WebhookDelivery]:
        return self.sender.deliveries

    def fail_next(self, count: int = 1, status: int = 503) -> None:
        """Answer the next `count` API calls with `status` (5xx), changing nothing."""
        self.faults.add(Fault(status=status), count)

    def throttle_next(self, count: int = 1, retry_after: int = 1) -> None:
        """Answer the next `count` API calls 429 (with `Retry-After`), changing nothing."""
        self.faults.add(Fault(status=429, retry_after=retry_after), count)

    def slow_next(self, count: int = 1, delay_s: float = 1.0) -> None:
        """Answer the next `count` API calls normally, after `delay_s`."""
        self.faults.add(Fault(status=0, delay_s=delay_s), count)

    def reset(self) -> None:
        """Forget data, faults and deliveries."""
        self._reset_data()
        self.faults.clear()
        self.sender.deliveries.clear()

    async def idle(self, timeout: float = 10.0) -> None:
        """Wait until every automatic webhook POST started so far has been answered."""
        await self.sender.idle(timeout)

    # -- control API ----------------------------------------------------------------------------
    def _control_json(self) -> dict[str, Any]:
        """What `GET /_standin/settings` shows besides the URL and `_settings_json`."""
        return {"latency_s": self.faults.latency_s}

    async def _health(self, _request: web.Request) -> web.Response:
        return json_response({"ok": True})

    async def _settings(self, request: web.Request) -> web.Response:
        return json_response(
            {"url": str(request.url.origin()), **self._control_json(), **self._settings_json()}
        )

    async def _configure(self, request: web.Request) -> web.Response:
        spec = await read_json_object(request)
        if "latency_s" in spec:
            self.faults.latency_s = float(spec["latency_s"])
        try:
            self._configure_json(spec)
        except (KeyError, TypeError, ValueError) as exc:
            return json_response({"error": str(exc)}, 400)
        return await self._settings(request)

    async def _add_faults(self, request: web.Request) -> web.Response:
        self.faults.add_json(await read_json_object(request))
        return json_response({"pending": len(self.faults)})

    async def _clear_faults(self, _request: web.Request) -> web.Response:
        self.faults.clear()
        return json_response({"pending": 0})

    async def _deliveries(self, _request: web.Request) -> web.Response:
        return json_response([d.to_json() for d in self.deliveries])

    async def _reset(self, _request: web.Request) -> web.Response:
        self.reset()
        return json_response({"reset": True})

    def _control(self, app: web.Application) -> None:
        """The control routes every stand-in serves."""
        app.router.add_get("/_standin/health", self._health)
        app.router.add_get("/_standin/settings", self._settings)
        app.router.add_patch("/_standin/config", self._configure)
        app.router.add_post("/_standin/faults", self._add_faults)
        app.router.add_delete("/_standin/faults", self._clear_faults)
        app.router.add_get("/_standin/deliveries", self._deliveries)
        app.router.add_post("/_standin/reset", self._reset)

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.client_max_size)
        self._control(app)
        self._extra_control(app)
        self._routes(app)
        app.cleanup_ctx.append(self._sender_ctx)
        return app

    async def _sender_ctx(self, _app: web.Application) -> AsyncIterator[None]:
        await self.sender.start()
        yield
        await self.sender.stop()

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> str:
        return await self._server.start()

    async def stop(self) -> None:
        await self._server.stop()

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


class ApiStandIn(HttpStandIn):
    """What the integration providers' stand-ins add to `HttpStandIn`: the provider's clock
    (`POST /_standin/clock`), call counters (`stats`) and larger request bodies."""

    name = "provider"
    client_max_size = 64 * 1024 * 1024

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.clock = Clock()
        self.stats = Stats()
        super().__init__(host=host, port=port)

    def advance_clock(self, seconds: float) -> None:
        """Move the provider's clock forward (tokens expire, timestamps move)."""
        self.clock.advance(seconds)

    def reset(self) -> None:
        """Forget data, grants, faults, counters and deliveries."""
        super().reset()
        self.stats = Stats()

    def next_fault(self) -> tuple[Fault | None, float]:
        """The next scripted fault to answer with (None: answer normally), and the delay to add
        first (the configured latency plus a scripted slow call)."""
        fault = self.faults.next()
        delay = self.faults.latency_s + (fault.delay_s if fault else 0.0)
        if fault is not None and fault.status:
            self.stats.scripted_faults += 1
            return fault, delay
        return None, delay

    def _control_json(self) -> dict[str, Any]:
        return {
            **super()._control_json(),
            "clock_offset_s": self.clock.offset_s,
            "stats": self.stats.to_json(),
        }

    async def _clock(self, request: web.Request) -> web.Response:
        spec = await read_json_object(request)
        try:
            self.advance_clock(float(spec.get("advance_s", 0.0)))
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response({"now": self.clock.now(), "offset_s": self.clock.offset_s})

    def _control(self, app: web.Application) -> None:
        super()._control(app)
        app.router.add_post("/_standin/clock", self._clock)


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode()
