"""Stripe stand-ins with Stripe's idempotency semantics, for `make run`, tests and benchmarks only.

Three pieces, one idempotency implementation:

* `IdempotencyLayer`: Stripe's rules for `Idempotency-Key` (docs.stripe.com/idempotency), as an
  aiohttp middleware any Stripe-shaped server can put in front of its handlers:

  - it applies to POST requests that carry the header; a key is scoped to the API key of the
    request (the secret in `Authorization`, Bearer or Basic alike) and is at most 255 characters;
  - the first request's answer (status, body bytes, the headers that describe the bytes) is kept
    once the request was executed, whatever its status (5xx included); a later POST with the
    same key, method, path and parameters (the body bytes) gets exactly those bytes back with
    `Idempotent-Replayed: true` and `Original-Request: <the first request's id>`;
  - the same key with another method, path or parameters is a 400 `idempotency_error`; the same
    key while its first request is still running is a 409 `idempotency_error` with code
    `idempotency_key_in_use` (the `stripe` SDK raises `IdempotencyError` for the 400 and, as
    for any 409 on the v1 API, `APIError` with `http_status == 409` for the 409);
  - nothing is kept for a request that was not executed: no answer from the upstream
    (unreachable, or the connection failed before a whole answer arrived: then the outcome is
    unknown and a retry runs the request again), a 409 or 429 (refused before running), or an
    answer its handler marks `NOT_EXECUTED` (Stripe keeps nothing for parameters that failed
    validation);
  - keys are forgotten 24 h after first use (the clock is injectable); memory only, bounded.

  Every answer carries a `Request-Id: req_…` header, as Stripe's do.

* `proxy_app(upstream)`: a reverse proxy that puts the layer in front of a Stripe server that
  ignores `Idempotency-Key` (localstripe creates a second PaymentIntent for a repeated key).
  Everything else passes through unchanged: GETs (streamed), POSTs without a key, localstripe's
  `/_config/...` admin calls. `meshdev.embedded.LocalStripe` runs it in front of localstripe, so
  `make run` and every test that uses localstripe see Stripe's semantics.

* `fast_app()`: an in-memory Stripe that answers the calls the payment service's Stripe adapter
  makes (PaymentIntents create+confirm / retrieve / cancel, refunds, charges, payouts) in a small
  fraction of a millisecond, with the same layer in front, for benchmarks of our own path. The
  official `stripe` SDK accepts it as it accepts localstripe. It sends no webhooks.
  It also serves what the integration service's Stripe catalogue sync uses, which localstripe
  lacks (localstripe has products but no prices, and refuses restricted `rk_` keys): products
  (create with an optional own `id`, retrieve, update with metadata merge, delete, list with
  `starting_after` / `ending_before` paging, `search` on `metadata['k']:'v'` and `active`) and
  prices (create with `product` or `product_data`, retrieve, update of the mutable fields, list
  by `product` / `active` / `lookup_keys[]`). Any non-empty key is accepted, `rk_` included.

Both servers reserve `/_standin/` for themselves (`GET /_standin/stats`: requests served and the
mean time spent in the handlers, measured server-side). Run one as a process:

    python -m meshdev.standins.stripe proxy --upstream http://127.0.0.1:8421 --port 8420
    python -m meshdev.standins.stripe fast --port 8430
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import logging
import re
import secrets
import sys
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from meshdev.standins.faultproxy import CLIENT_DEFAULT_HEADERS, end_to_end_headers

__all__ = [
    "MAX_KEY_LENGTH",
    "NOT_EXECUTED",
    "TTL_S",
    "FastStripe",
    "HandlerStats",
    "IdempotencyLayer",
    "SavedResponse",
    "StandInServer",
    "fast_app",
    "main",
    "proxy_app",
    "stripe_error",
]

logger = logging.getLogger(__name__)

TTL_S = 24 * 3600.0
"""How long a key is remembered after its first use (Stripe: at least 24 h)."""
MAX_KEY_LENGTH = 255

IDEMPOTENCY_KEY = "Idempotency-Key"
IDEMPOTENT_REPLAYED = "Idempotent-Replayed"
ORIGINAL_REQUEST = "Original-Request"
REQUEST_ID = "Request-Id"

NOT_EXECUTED = web.ResponseKey("meshdev_stripe_not_executed", bool)
"""Set on an answer to a request that did not run (nothing is kept for its key)."""
_REQUEST_ID = web.RequestKey("meshdev_stripe_request_id", str)

# Statuses that say the request was refused before it ran: a retry must run it.
_REFUSED_BEFORE_RUNNING = frozenset({409, 429})
# Headers kept with a saved answer: the ones that say what its bytes are.
_BODY_HEADERS = ("Content-Type", "Content-Encoding")
_STANDIN_PREFIX = "/_standin/"


# -- Stripe's wire shapes ---------------------------------------------------------------------


def request_id(request: web.Request) -> str:
    """This request's `req_…` id (made on first use)."""
    rid = request.get(_REQUEST_ID)
    if rid is None:
        rid = request[_REQUEST_ID] = "req_" + secrets.token_hex(7)
    return rid


async def _stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    # An upstream's own Request-Id (a real Stripe behind the proxy) is kept.
    if REQUEST_ID not in response.headers:
        response.headers[REQUEST_ID] = request_id(request)


def json_response(obj: object, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(obj).encode(), content_type="application/json"
    )


def stripe_error(status: int, type_: str, message: str, **fields: object) -> web.Response:
    """An error answer in Stripe's shape: `{"error": {"type": ..., "message": ..., ...}}`."""
    return json_response({"error": {"type": type_, "message": message, **fields}}, status)


def _mismatch(key: str) -> web.Response:
    return stripe_error(
        400,
        "idempotency_error",
        "Keys for idempotent requests can only be used with the same parameters they were "
        f"first used with. Try using a key other than '{key}' if you meant to execute a "
        "different request.",
    )


def _in_flight(key: str) -> web.Response:
    return stripe_error(
        409,
        "idempotency_error",
        "There is currently another in-progress request using this Idempotent Key (that "
        "probably means you submitted twice, and the other request is still going through): "
        f"{key}. Please try again later.",
        code="idempotency_key_in_use",
    )


def api_key_of(authorization: str) -> str:
    """The API key a request authenticates with: `Bearer sk_…` and `Basic base64(sk_…:)` name
    the same key, as they do at Stripe."""
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credentials, validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return authorization
    return authorization


# -- the idempotency layer --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SavedResponse:
    """The first answer given under a key, replayed byte for byte."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...]
    """The headers that describe the body (Content-Type, Content-Encoding)."""
    request_id: str
    """The `Request-Id` of the request that produced it (sent back as `Original-Request`)."""


@dataclass(eq=False, slots=True)
class _Entry:
    fingerprint: bytes
    created: float
    saved: SavedResponse | None = None
    """None while the first request runs."""


class IdempotencyLayer:
    """Stripe's idempotency rules (module doc), in memory, for one server process.

    Bounded: beyond `max_keys` keys or `max_bytes` of saved bodies the oldest keys are forgotten
    early (a dev/test server; Stripe's own store is not bounded that way).
    """

    def __init__(
        self,
        *,
        ttl_s: float = TTL_S,
        max_keys: int = 100_000,
        max_bytes: int = 256 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        self.clock = clock
        # Insertion order is first-use order: expired and evicted keys are at the front.
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._bytes = 0
        self.replayed = 0
        """Answers given from saved responses."""

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every key (e.g. when the server behind was reset)."""
        self._entries.clear()
        self._bytes = 0

    def _drop(self, ident: tuple[str, str]) -> None:
        entry = self._entries.pop(ident)
        if entry.saved is not None:
            self._bytes -= len(entry.saved.body)

    def _prune(self, now: float) -> None:
        while self._entries:
            ident, oldest = next(iter(self._entries.items()))
            over = len(self._entries) > self.max_keys or self._bytes > self.max_bytes
            if oldest.created + self.ttl_s > now and not over:
                return
            self._drop(ident)

    def begin(
        self, scope: str, key: str, fingerprint: bytes
    ) -> _Entry | SavedResponse | web.Response:
        """The saved answer to replay, an error answer (400 mismatch, 409 in flight), or a new
        in-flight entry: then run the request and `finish()` the entry."""
        now = self.clock()
        self._prune(now)
        ident = (scope, key)
        entry = self._entries.get(ident)
        if entry is not None and entry.created + self.ttl_s <= now:
            self._drop(ident)
            entry = None
        if entry is None:
            entry = self._entries[ident] = _Entry(fingerprint, now)
            return entry
        # Parameters first: a different request under the key is a caller's bug (final), while
        # an in-flight one is worth a retry.
        if entry.fingerprint != fingerprint:
            return _mismatch(key)
        if entry.saved is None:
            return _in_flight(key)
        return entry.saved

    def finish(self, scope: str, key: str, entry: _Entry, saved: SavedResponse | None) -> None:
        """Keep `saved` under the key, or (None: the request did not run) free the key."""
        ident = (scope, key)
        if self._entries.get(ident) is not entry:
            return  # evicted (over the bound) while it ran
        if saved is None:
            del self._entries[ident]
            return
        entry.saved = saved
        self._bytes += len(saved.body)
        self._prune(self.clock())

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        """The layer as an aiohttp middleware (handlers behind it answer keyed POSTs with a
        `web.Response` whose body is bytes, so the answer can be kept)."""

        @web.middleware
        async def idempotency(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            key = request.headers.get(IDEMPOTENCY_KEY, "") if request.method == "POST" else ""
            if not key or request.path.startswith(_STANDIN_PREFIX):
                return await handler(request)
            if len(key) > MAX_KEY_LENGTH:
                return stripe_error(
                    400,
                    "invalid_request_error",
                    f"Invalid idempotency key: keys are at most {MAX_KEY_LENGTH} characters "
                    f"long (this one has {len(key)}).",
                )
            body = await request.read()
            digest = hashlib.sha256(request.method.encode())
            for part in (request.raw_path.encode(), body):
                digest.update(b"\0")
                digest.update(part)
            scope = api_key_of(request.headers.get("Authorization", ""))
            outcome = self.begin(scope, key, digest.digest())
            if isinstance(outcome, web.Response):
                return outcome
            if isinstance(outcome, SavedResponse):
                self.replayed += 1
                headers = CIMultiDict(outcome.headers)
                headers[IDEMPOTENT_REPLAYED] = "true"
                headers[ORIGINAL_REQUEST] = outcome.request_id
                headers[IDEMPOTENCY_KEY] = key
                return web.Response(status=outcome.status, body=outcome.body, headers=headers)
            saved: SavedResponse | None = None
            try:
                response = await handler(request)
                if (
                    isinstance(response, web.Response)
                    and isinstance(response.body, bytes)
                    and response.status not in _REFUSED_BEFORE_RUNNING
                    and not response.get(NOT_EXECUTED, False)
                ):
                    rid = response.headers.setdefault(REQUEST_ID, request_id(request))
                    response.headers[ORIGINAL_REQUEST] = rid
                    response.headers[IDEMPOTENCY_KEY] = key
                    saved = SavedResponse(
                        status=response.status,
                        body=response.body,
                        headers=tuple(
                            (name, response.headers[name])
                            for name in _BODY_HEADERS
                            if name in response.headers
                        ),
                        request_id=rid,
                    )
                return response
            finally:
                # Also on cancellation or an error in the handler: the key is freed for a retry.
                self.finish(scope, key, outcome, saved)

        return idempotency


# -- shared server plumbing -------------------------------------------------------------------


@dataclass(slots=True)
class HandlerStats:
    """Requests served and the time spent in middlewares + handlers (not in HTTP parsing or
    writing), excluding `/_standin/` itself."""

    requests: int = 0
    seconds: float = 0.0

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        @web.middleware
        async def timed(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            if request.path.startswith(_STANDIN_PREFIX):
                return await handler(request)
            started = time.perf_counter()
            try:
                return await handler(request)
            finally:
                self.seconds += time.perf_counter() - started
                self.requests += 1

        return timed

    async def handle(self, _request: web.Request) -> web.Response:
        mean_ms = self.seconds / self.requests * 1000 if self.requests else 0.0
        return json_response(
            {"requests": self.requests, "handler_seconds": self.seconds, "mean_handler_ms": mean_ms}
        )


def _application(stats: HandlerStats, *middlewares: Any) -> web.Application:
    app = web.Application(middlewares=[stats.middleware(), *middlewares])
    app.on_response_prepare.append(_stamp_request_id)
    app.router.add_get(_STANDIN_PREFIX + "stats", stats.handle)
    return app


# -- the proxy --------------------------------------------------------------------------------


@dataclass(eq=False)
class _Proxy:
    upstream: str
    layer: IdempotencyLayer
    timeout_s: float
    session: aiohttp.ClientSession | None = field(default=None, init=False)

    async def session_ctx(self, _app: web.Application) -> AsyncIterator[None]:
        # auto_decompress=False: bodies pass through (and are kept) byte for byte.
        self.session = aiohttp.ClientSession(
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            connector=aiohttp.TCPConnector(limit=0),
        )
        try:
            yield
        finally:
            await self.session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None, "the proxy is not started"
        body = await request.read()
        try:
            upstream = await self.session.request(
                request.method,
                URL(self.upstream + request.raw_path, encoded=True),
                headers=end_to_end_headers(request.headers),
                data=body or None,
                allow_redirects=False,
                skip_auto_headers=CLIENT_DEFAULT_HEADERS,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return self._no_answer(request, exc)
        async with upstream:
            headers = end_to_end_headers(upstream.headers)
            if request.method == "POST":
                # Buffered: the layer may keep it (Stripe's POST answers are small).
                try:
                    payload = await upstream.read()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    return self._no_answer(request, exc)
                return web.Response(
                    status=upstream.status, reason=upstream.reason, body=payload, headers=headers
                )
            if request.method == "DELETE" and request.path == "/_config/data" and upstream.ok:
                # localstripe's store was flushed: its objects (and so our keys) are gone.
                self.layer.clear()
            response = web.StreamResponse(
                status=upstream.status, reason=upstream.reason, headers=headers
            )
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    def _no_answer(self, request: web.Request, exc: BaseException) -> web.Response:
        logger.warning(
            "stripe upstream gave no answer",
            extra={"upstream": self.upstream, "path": request.path, "error": repr(exc)},
        )
        response = stripe_error(
            502,
            "api_error",
            f"The Stripe stand-in at {self.upstream} gave no answer ({type(exc).__name__}).",
        )
        response[NOT_EXECUTED] = True
        return response


def proxy_app(
    upstream: str, *, layer: IdempotencyLayer | None = None, timeout_s: float = 60.0
) -> web.Application:
    """The idempotency proxy in front of the Stripe server at `upstream` (module doc)."""
    layer = layer if layer is not None else IdempotencyLayer()
    proxy = _Proxy(upstream.rstrip("/"), layer, timeout_s)
    app = _application(HandlerStats(), layer.middleware())
    app.cleanup_ctx.append(proxy.session_ctx)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    return app


# -- the fast stand-in ------------------------------------------------------------------------

Obj = dict[str, Any]

# Test cards (docs.stripe.com/testing), by what they do when a PaymentIntent is confirmed.
_REQUIRES_ACTION = frozenset(
    {"4000002500003155", "4000002760003184", "4000000000003220", "4000000000003063"}
)
# number -> (code, decline_code)
_DECLINES: dict[str, tuple[str, str]] = {
    "4000000000000002": ("card_declined", "generic_decline"),
    "4000000000000341": ("card_declined", "generic_decline"),
    "4000000000009995": ("card_declined", "insufficient_funds"),
    "4000000000009987": ("card_declined", "lost_card"),
    "4000000000009979": ("card_declined", "stolen_card"),
    "4000000000000069": ("expired_card", "expired_card"),
    "4000000000000127": ("incorrect_cvc", "incorrect_cvc"),
    "4000000000000119": ("processing_error", "processing_error"),
}
# Stripe's test PaymentMethod ids and their cards.
_TEST_PAYMENT_METHODS = {
    "pm_card_visa": "4242424242424242",
    "pm_card_mastercard": "5555555555554444",
    "pm_card_amex": "378282246310005",
    "pm_card_visa_chargeDeclined": "4000000000000002",
    "pm_card_chargeDeclined": "4000000000000002",
    "pm_card_chargeCustomerFail": "4000000000000341",
    "pm_card_chargeDeclinedInsufficientFunds": "4000000000009995",
    "pm_card_chargeDeclinedLostCard": "4000000000009987",
    "pm_card_chargeDeclinedStolenCard": "4000000000009979",
    "pm_card_chargeDeclinedExpiredCard": "4000000000000069",
    "pm_card_chargeDeclinedIncorrectCvc": "4000000000000127",
    "pm_card_chargeDeclinedProcessingError": "4000000000000119",
    "pm_card_threeDSecure2Required": "4000000000003220",
    "pm_card_authenticationRequired": "4000002500003155",
}
_CANCELABLE_STATES = (
    "requires_payment_method",
    "requires_capture",
    "requires_confirmation",
    "requires_action",
    "processing",
)
_DECLINE_MESSAGES = {
    "card_declined": "Your card was declined.",
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "Your card's security code is incorrect.",
    "processing_error": "An error occurred while processing your card. Try again in a little bit.",
}


def parse_form(body: bytes | str) -> Obj:
    """Stripe's form encoding (`metadata[k]=v`, `payment_method_types[0]=card`) as nested dicts;
    values stay strings, indexed keys stay dict keys ("0", "1", ...)."""
    text = body.decode() if isinstance(body, bytes) else body
    result: Obj = {}
    for name, value in parse_qsl(text, keep_blank_values=True):
        parts = name.replace("]", "").split("[")
        node = result
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return result


def _values(value: object) -> list[str]:
    if isinstance(value, dict):
        return [str(v) for _, v in sorted(value.items(), key=lambda kv: int(kv[0] or 0))]
    return [] if value is None else [str(value)]


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def _invalid(message: str, param: str, code: str = "parameter_invalid") -> web.Response:
    # Stripe keeps nothing under the key for parameters that failed validation.
    response = stripe_error(400, "invalid_request_error", message, param=param, code=code)
    response[NOT_EXECUTED] = True
    return response


def _missing(kind: str, obj_id: str, param: str = "id") -> web.Response:
    return stripe_error(
        404,
        "invalid_request_error",
        f"No such {kind}: '{obj_id}'",
        param=param,
        code="resource_missing",
    )


def _amount(form: Obj, name: str = "amount", required: bool = True) -> int | web.Response:
    raw = form.get(name)
    if raw is None:
        if required:
            return _invalid(f"Missing required param: {name}.", name, "parameter_missing")
        return 0
    try:
        amount = int(raw)
    except (TypeError, ValueError):
        return _invalid(f"Invalid integer: {raw}", name, "parameter_invalid_integer")
    if amount <= 0:
        return _invalid("This value must be greater than or equal to 1.", name)
    return amount


def _currency(form: Obj) -> str | web.Response:
    currency = str(form.get("currency", "")).lower()
    if not currency:
        return _invalid("Missing required param: currency.", "currency", "parameter_missing")
    if len(currency) != 3 or not currency.isalpha():
        return _invalid(f"Invalid currency: {currency}.", "currency")
    return currency


def _metadata(form: Obj) -> dict[str, str]:
    metadata = form.get("metadata")
    return {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}


class FastStripe:
    """In-memory Stripe objects behind the calls our Stripe adapter makes (module doc)."""

    def __init__(self, layer: IdempotencyLayer) -> None:
        self.layer = layer
        self.payment_methods: dict[str, Obj] = {}
        self.intents: dict[str, Obj] = {}
        self.charges: dict[str, Obj] = {}
        self.refunds: dict[str, Obj] = {}
        self.payouts: dict[str, Obj] = {}
        self.products: dict[str, Obj] = {}
        self.prices: dict[str, Obj] = {}
        self._seq = 0

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/payment_methods", self.create_payment_method),
            web.get("/v1/payment_methods/{id}", self.retrieve_payment_method),
            web.post("/v1/payment_intents", self.create_intent),
            web.get("/v1/payment_intents", self.list_intents),
            web.get("/v1/payment_intents/{id}", self.retrieve_intent),
            web.post("/v1/payment_intents/{id}/cancel", self.cancel_intent),
            web.post("/v1/payment_intents/{id}/_authenticate", self.authenticate_intent),
            web.get("/v1/charges/{id}", self.retrieve_charge),
            web.post("/v1/refunds", self.create_refund),
            web.get("/v1/refunds", self.list_refunds),
            web.get("/v1/refunds/{id}", self.retrieve_refund),
            web.post("/v1/payouts", self.create_payout),
            web.get("/v1/payouts/{id}", self.retrieve_payout),
            web.post("/v1/products", self.create_product),
            web.get("/v1/products", self.list_products),
            web.get("/v1/products/search", self.search_products),
            web.get("/v1/products/{id}", self.retrieve_product),
            web.post("/v1/products/{id}", self.update_product),
            web.delete("/v1/products/{id}", self.delete_product),
            web.post("/v1/prices", self.create_price),
            web.get("/v1/prices", self.list_prices),
            web.get("/v1/prices/{id}", self.retrieve_price),
            web.post("/v1/prices/{id}", self.update_price),
            web.post("/_config/webhooks/{id}", self.accept_webhook_config),
            web.delete("/_config/data", self.flush),
            web.route("*", "/{tail:.*}", self.unknown),
        ]

    # -- payment methods ----------------------------------------------------------------------
    def _card_of(self, pm_id: str) -> str | None:
        if pm_id in _TEST_PAYMENT_METHODS:
            return _TEST_PAYMENT_METHODS[pm_id]
        pm = self.payment_methods.get(pm_id)
        return None if pm is None else str(pm["_number"])

    async def create_payment_method(self, request: web.Request) -> web.Response:
        form = parse_form(await request.read())
        card = form.get("card")
        card = card if isinstance(card, dict) else {}
        number = str(card.get("number", ""))
        if form.get("type") != "card" or not number.isdigit():
            return _invalid("Only card payment methods with a card[number] are supported.", "card")
        pm: Obj = {
            "id": _new_id("pm_"),
            "object": "payment_method",
            "type": "card",
            "card": {
                "brand": "visa",
                "last4": number[-4:],
                "exp_month": int(card.get("exp_month", 12)),
                "exp_year": int(card.get("exp_year", 2030)),
                "funding": "credit",
            },
            "created": int(time.time()),
            "livemode": False,
            "metadata": _metadata(form),
            "_number": number,
        }
        self.payment_methods[pm["id"]] = pm
        return json_response(_public(pm))

    async def retrieve_payment_method(self, request: web.Request) -> web.Response:
        pm_id = request.match_info["id"]
        pm = self.payment_methods.get(pm_id)
        if pm is None:
            return _missing("payment_method", pm_id)
        return json_response(_public(pm))

    # -- payment intents ----------------------------------------------------------------------
    async def create_intent(self, request: web.Request) -> web.Response:
        form = parse_form(await request.read())
        amount = _amount(form)
        if isinstance(amount, web.Response):
            return amount
        currency = _currency(form)
        if isinstance(currency, web.Response):
            return currency
        pm_id = str(form.get("payment_method", ""))
        if pm_id and self._card_of(pm_id) is None:
            return _missing("PaymentMethod", pm_id, "payment_method")
        confirm = str(form.get("confirm", "false")).lower() == "true"
        pi_id = _new_id("pi_")
        pi: Obj = {
            "id": pi_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_received": 0,
            "currency": currency,
            "status": "requires_confirmation" if pm_id else "requires_payment_method",
            "capture_method": str(form.get("capture_method", "automatic_async")),
            "confirmation_method": "automatic",
            "client_secret": f"{pi_id}_secret_{secrets.token_hex(12)}",
            "created": int(time.time()),
            "livemode": False,
            "latest_charge": None,
            "last_payment_error": None,
            "metadata": _metadata(form),
            "next_action": None,
            "payment_method": pm_id or None,
            "payment_method_types": _values(form.get("payment_method_types")) or ["card"],
            "canceled_at": None,
            "cancellation_reason": None,
        }
        self.intents[pi_id] = pi
        if confirm:
            if not pm_id:
                return _invalid(
                    "You cannot confirm this PaymentIntent because it's missing a payment method.",
                    "payment_method",
                    "payment_intent_unexpected_state",
                )
            return self._confirm(request, pi, str(form.get("return_url", "")))
        return json_response(pi)

    def _confirm(self, request: web.Request, pi: Obj, return_url: str) -> web.Response:
        number = self._card_of(str(pi["payment_method"])) or ""
        if number in _REQUIRES_ACTION:
            pi["status"] = "requires_action"
            # Where Stripe would send the buyer; nothing is served there: finish 3-D Secure with
            # POST /v1/payment_intents/{id}/_authenticate, as on localstripe.
            url = f"{request.url.origin()}{_STANDIN_PREFIX}authenticate/{pi['id']}"
            pi["next_action"] = (
                {
                    "type": "redirect_to_url",
                    "redirect_to_url": {"url": url, "return_url": return_url},
                }
                if return_url
                else {
                    "type": "use_stripe_sdk",
                    "use_stripe_sdk": {"type": "three_d_secure_redirect"},
                }
            )
            return json_response(pi)
        return self._charge(pi, number)

    def _charge(self, pi: Obj, number: str) -> web.Response:
        decline = _DECLINES.get(number)
        charge: Obj = {
            "id": _new_id("ch_"),
            "object": "charge",
            "amount": pi["amount"],
            "amount_captured": 0 if decline else pi["amount"],
            "amount_refunded": 0,
            "captured": decline is None,
            "currency": pi["currency"],
            "created": int(time.time()),
            "livemode": False,
            "metadata": {},
            "paid": decline is None,
            "payment_intent": pi["id"],
            "payment_method": pi["payment_method"],
            "refunded": False,
            "status": "failed" if decline else "succeeded",
            "failure_code": decline[0] if decline else None,
            "failure_message": _DECLINE_MESSAGES[decline[0]] if decline else None,
            "outcome": {
                "network_status": "declined_by_network" if decline else "approved_by_network",
                "reason": decline[1] if decline else None,
                "type": "issuer_declined" if decline else "authorized",
            },
        }
        self.charges[charge["id"]] = charge
        pi["latest_charge"] = charge["id"]
        if decline is None:
            pi["status"] = "succeeded"
            pi["amount_received"] = pi["amount"]
            return json_response(pi)
        code, decline_code = decline
        error: Obj = {
            "type": "card_error",
            "code": code,
            "decline_code": decline_code,
            "message": _DECLINE_MESSAGES[code],
            "charge": charge["id"],
            "payment_method": {"id": pi["payment_method"], "object": "payment_method"},
        }
        pi["status"] = "requires_payment_method"
        pi["last_payment_error"] = dict(error)
        return json_response({"error": {**error, "payment_intent": pi}}, 402)

    async def list_intents(self, request: web.Request) -> web.Response:
        return _list(request, self.intents.values(), "/v1/payment_intents")

    async def retrieve_intent(self, request: web.Request) -> web.Response:
        pi_id = request.match_info["id"]
        pi = self.intents.get(pi_id)
        return _missing("payment_intent", pi_id, "intent") if pi is None else json_response(pi)

    async def cancel_intent(self, request: web.Request) -> web.Response:
        pi_id = request.match_info["id"]
        pi = self.intents.get(pi_id)
        if pi is None:
            return _missing("payment_intent", pi_id, "intent")
        if pi["status"] not in _CANCELABLE_STATES:
            return stripe_error(
                400,
                "invalid_request_error",
                "You cannot cancel this PaymentIntent because it has a status of "
                f"{pi['status']}. Only a PaymentIntent with one of the following statuses may "
                f"be canceled: {', '.join(_CANCELABLE_STATES)}.",
                code="payment_intent_unexpected_state",
            )
        form = parse_form(await request.read())
        pi.update(
            status="canceled",
            next_action=None,
            canceled_at=int(time.time()),
            cancellation_reason=form.get("cancellation_reason"),
        )
        return json_response(pi)

    async def authenticate_intent(self, request: web.Request) -> web.Response:
        """3-D Secure done (or failed) on the buyer's device, as localstripe's `_authenticate`."""
        pi_id = request.match_info["id"]
        pi = self.intents.get(pi_id)
        if pi is None:
            return _missing("payment_intent", pi_id, "intent")
        form = parse_form(await request.read())
        if form.get("client_secret") != pi["client_secret"]:
            return stripe_error(401, "invalid_request_error", "Invalid client_secret.")
        if pi["status"] != "requires_action":
            return _invalid("This PaymentIntent does not require action.", "intent")
        pi["next_action"] = None
        if str(form.get("success", "false")).lower() != "true":
            pi["status"] = "requires_payment_method"
            pi["last_payment_error"] = {
                "code": "payment_intent_authentication_failure",
                "message": "The provided PaymentMethod has failed authentication.",
                "type": "invalid_request_error",
            }
            return json_response(pi)
        self._charge(pi, "")  # authenticated: the charge goes through
        return json_response(pi)

    async def retrieve_charge(self, request: web.Request) -> web.Response:
        ch_id = request.match_info["id"]
        charge = self.charges.get(ch_id)
        return _missing("charge", ch_id) if charge is None else json_response(charge)

    # -- refunds ------------------------------------------------------------------------------
    async def create_refund(self, request: web.Request) -> web.Response:
        form = parse_form(await request.read())
        pi_id = str(form.get("payment_intent", ""))
        ch_id = str(form.get("charge", ""))
        if pi_id:
            pi = self.intents.get(pi_id)
            if pi is None:
                return _missing("payment_intent", pi_id, "payment_intent")
            ch_id = str(pi["latest_charge"] or "")
        elif not ch_id:
            return _invalid(
                "One of the following params should be provided for this request: "
                "payment_intent or charge.",
                "payment_intent",
                "parameter_missing",
            )
        charge = self.charges.get(ch_id)
        if charge is None or charge["status"] != "succeeded":
            return stripe_error(
                400,
                "invalid_request_error",
                "This PaymentIntent does not have a successful charge to refund.",
                code="charge_not_refundable",
            )
        remaining = int(charge["amount"]) - int(charge["amount_refunded"])
        amount = _amount(form, required=False)
        if isinstance(amount, web.Response):
            return amount
        amount = amount or remaining
        if remaining <= 0:
            return stripe_error(
                400,
                "invalid_request_error",
                f"Charge {ch_id} has already been refunded.",
                code="charge_already_refunded",
            )
        if amount > remaining:
            return stripe_error(
                400,
                "invalid_request_error",
                f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                f"({remaining})",
                param="amount",
                code="amount_too_large",
            )
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        refund: Obj = {
            "id": _new_id("re_"),
            "object": "refund",
            "amount": amount,
            "charge": ch_id,
            "currency": charge["currency"],
            "created": int(time.time()),
            "metadata": _metadata(form),
            "payment_intent": charge["payment_intent"],
            "reason": form.get("reason"),
            "status": "succeeded",
            "failure_reason": None,
        }
        self.refunds[refund["id"]] = refund
        return json_response(refund)

    async def list_refunds(self, request: web.Request) -> web.Response:
        pi_id = request.query.get("payment_intent")
        refunds = (
            r for r in self.refunds.values() if pi_id is None or r["payment_intent"] == pi_id
        )
        return _list(request, refunds, "/v1/refunds")

    async def retrieve_refund(self, request: web.Request) -> web.Response:
        re_id = request.match_info["id"]
        refund = self.refunds.get(re_id)
        return _missing("refund", re_id) if refund is None else json_response(refund)

    # -- payouts ------------------------------------------------------------------------------
    async def create_payout(self, request: web.Request) -> web.Response:
        form = parse_form(await request.read())
        amount = _amount(form)
        if isinstance(amount, web.Response):
            return amount
        currency = _currency(form)
        if isinstance(currency, web.Response):
            return currency
        method = str(form.get("method", "standard"))
        if method not in ("standard", "instant"):
            return _invalid(f"Invalid method: {method}.", "method")
        now = int(time.time())
        payout: Obj = {
            "id": _new_id("po_"),
            "object": "payout",
            "amount": amount,
            "currency": currency,
            "method": method,
            "arrival_date": now if method == "instant" else now + 2 * 86400,
            "automatic": False,
            "created": now,
            "livemode": False,
            "metadata": _metadata(form),
            "statement_descriptor": form.get("statement_descriptor"),
            "status": "pending",
            "type": "bank_account",
            "failure_code": None,
            "failure_message": None,
        }
        self.payouts[payout["id"]] = payout
        return json_response(payout)

    async def retrieve_payout(self, request: web.Request) -> web.Response:
        po_id = request.match_info["id"]
        payout = self.payouts.get(po_id)
        return _missing("payout", po_id) if payout is None else json_response(payout)

    # -- products and prices (the integration service's catalogue sync) -----------------------
    async def create_product(self, request: web.Request) -> web.Response:
        form = parse_form(await request.read())
        name = str(form.get("name", ""))
        if not name:
            return _invalid("Missing required param: name.", "name", "parameter_missing")
        product_id = str(form.get("id") or _new_id("prod_"))
        if product_id in self.products:
            return stripe_error(
                400,
                "invalid_request_error",
                f"Product already exists.: {product_id}",
                param="id",
                code="resource_already_exists",
            )
        now = int(time.time())
        product: Obj = {
            "id": product_id,
            "object": "product",
            "active": _bool(form.get("active"), True),
            "created": now,
            "updated": now,
            "default_price": None,
            "description": form.get("description") or None,
            "images": [],
            "livemode": False,
            "metadata": _metadata(form),
            "name": name,
            "type": "service",
            "url": form.get("url") or None,
            "_seq": self._next_seq(),
        }
        price_data = form.get("default_price_data")
        price: Obj | None = None
        if isinstance(price_data, dict):
            made = self._new_price({**price_data, "product": product_id})
            if isinstance(made, web.Response):
                return made
            price = made
            product["default_price"] = price["id"]
        self.products[product_id] = product
        if price is not None:
            self.prices[price["id"]] = price
        return json_response(_public(product))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def retrieve_product(self, request: web.Request) -> web.Response:
        product = self.products.get(request.match_info["id"])
        if product is None:
            return _missing("product", request.match_info["id"])
        return json_response(_public(product))

    async def update_product(self, request: web.Request) -> web.Response:
        product = self.products.get(request.match_info["id"])
        if product is None:
            return _missing("product", request.match_info["id"])
        form = parse_form(await request.read())
        for name in ("name", "description", "url"):
            if name in form:
                product[name] = form[name] or None
        if not product["name"]:
            return _invalid("name cannot be empty.", "name")
        if "active" in form:
            product["active"] = _bool(form["active"], True)
        if "default_price" in form:
            price_id = str(form["default_price"])
            price = self.prices.get(price_id)
            if price is None or price["product"] != product["id"]:
                return _missing("price", price_id, "default_price")
            product["default_price"] = price_id
        if "metadata" in form:
            product["metadata"] = _merge_metadata(product["metadata"], form["metadata"])
        product["updated"] = int(time.time())
        product["_seq"] = self._next_seq()
        return json_response(_public(product))

    async def delete_product(self, request: web.Request) -> web.Response:
        product_id = request.match_info["id"]
        if product_id not in self.products:
            return _missing("product", product_id)
        if any(p["product"] == product_id for p in self.prices.values()):
            return stripe_error(
                400,
                "invalid_request_error",
                "This product cannot be deleted because it has one or more user-created prices.",
                code="resource_in_use",
            )
        del self.products[product_id]
        return json_response({"id": product_id, "object": "product", "deleted": True})

    async def list_products(self, request: web.Request) -> web.Response:
        active = request.query.get("active")
        wanted = _array_param(request, "ids")
        products = [
            p
            for p in self.products.values()
            if (active is None or p["active"] == _bool(active, True))
            and (not wanted or p["id"] in wanted)
        ]
        return _paged(request, products, "/v1/products")

    async def search_products(self, request: web.Request) -> web.Response:
        query = request.query.get("query", "")
        clauses = re.findall(r"(\w+)(?:\[['\"]([^'\"]+)['\"]\])?\s*:\s*['\"]([^'\"]*)['\"]", query)
        if not clauses:
            return _invalid("Invalid search query.", "query")

        def matches(product: Obj) -> bool:
            for name, key, value in clauses:
                if name == "metadata":
                    if product["metadata"].get(key) != value:
                        return False
                elif name == "active":
                    if product["active"] != (value == "true"):
                        return False
                elif str(product.get(name)) != value:
                    return False
            return True

        found = [
            _public(p)
            for p in sorted(self.products.values(), key=lambda p: -p["_seq"])
            if matches(p)
        ]
        limit = int(request.query.get("limit", "10"))
        return json_response(
            {
                "object": "search_result",
                "data": found[:limit],
                "has_more": len(found) > limit,
                "next_page": None,
                "url": "/v1/products/search",
            }
        )

    def _new_price(self, form: Obj) -> Obj | web.Response:
        currency = _currency(form)
        if isinstance(currency, web.Response):
            return currency
        raw = form.get("unit_amount")
        try:
            unit_amount = int(str(raw))
        except ValueError:
            return _invalid(f"Invalid integer: {raw}", "unit_amount", "parameter_invalid_integer")
        if unit_amount < 0:
            return _invalid("unit_amount must be >= 0.", "unit_amount")
        product_id = form.get("product")
        if not product_id:
            return _invalid("Missing required param: product.", "product", "parameter_missing")
        price: Obj = {
            "id": _new_id("price_"),
            "object": "price",
            "active": _bool(form.get("active"), True),
            "billing_scheme": "per_unit",
            "created": int(time.time()),
            "currency": currency,
            "livemode": False,
            "lookup_key": form.get("lookup_key") or None,
            "metadata": _metadata(form),
            "nickname": form.get("nickname") or None,
            "product": str(product_id),
            "recurring": None,
            "tax_behavior": "unspecified",
            "type": "one_time",
            "unit_amount": unit_amount,
            "unit_amount_decimal": str(unit_amount),
            "_seq": self._next_seq(),
        }
        return price

    async def create_price(self, request: web.Request) -> web.Response:
        form = parse_form(await request.read())
        product_data = form.get("product_data")
        if isinstance(product_data, dict) and not form.get("product"):
            name = str(product_data.get("name", ""))
            if not name:
                return _invalid("Missing required param: product_data[name].", "product_data")
            product_id = _new_id("prod_")
            now = int(time.time())
            self.products[product_id] = {
                "id": product_id,
                "object": "product",
                "active": True,
                "created": now,
                "updated": now,
                "default_price": None,
                "description": None,
                "images": [],
                "livemode": False,
                "metadata": _metadata(product_data),
                "name": name,
                "type": "service",
                "url": None,
                "_seq": self._next_seq(),
            }
            form["product"] = product_id
        elif form.get("product") and str(form["product"]) not in self.products:
            return _missing("product", str(form["product"]), "product")
        price = self._new_price(form)
        if isinstance(price, web.Response):
            return price
        if price["lookup_key"] and str(form.get("transfer_lookup_key", "false")) == "true":
            for other in self.prices.values():
                if other["lookup_key"] == price["lookup_key"]:
                    other["lookup_key"] = None
        elif price["lookup_key"] and any(
            p["lookup_key"] == price["lookup_key"] for p in self.prices.values()
        ):
            return _invalid(
                f"A price with lookup_key {price['lookup_key']} already exists.", "lookup_key"
            )
        self.prices[price["id"]] = price
        return json_response(_public(price))

    async def retrieve_price(self, request: web.Request) -> web.Response:
        price = self.prices.get(request.match_info["id"])
        if price is None:
            return _missing("price", request.match_info["id"])
        return json_response(_public(price))

    async def update_price(self, request: web.Request) -> web.Response:
        price = self.prices.get(request.match_info["id"])
        if price is None:
            return _missing("price", request.match_info["id"])
        form = parse_form(await request.read())
        for immutable in ("unit_amount", "currency", "product"):
            if immutable in form:
                return _invalid(
                    f"Received unknown parameter: {immutable}", immutable, "parameter_unknown"
                )
        if "active" in form:
            price["active"] = _bool(form["active"], True)
        for name in ("nickname", "lookup_key"):
            if name in form:
                price[name] = form[name] or None
        if "metadata" in form:
            price["metadata"] = _merge_metadata(price["metadata"], form["metadata"])
        return json_response(_public(price))

    async def list_prices(self, request: web.Request) -> web.Response:
        product_id = request.query.get("product")
        active = request.query.get("active")
        lookup_keys = _array_param(request, "lookup_keys")
        prices = [
            p
            for p in self.prices.values()
            if (product_id is None or p["product"] == product_id)
            and (active is None or p["active"] == _bool(active, True))
            and (not lookup_keys or p["lookup_key"] in lookup_keys)
        ]
        return _paged(request, prices, "/v1/prices")

    # -- localstripe's admin calls, and the rest ----------------------------------------------
    async def accept_webhook_config(self, request: web.Request) -> web.Response:
        """localstripe's webhook registration, accepted so dev settings work; nothing is sent."""
        await request.read()
        return json_response({"id": request.match_info["id"], "delivers": False})

    async def flush(self, _request: web.Request) -> web.Response:
        """localstripe's `DELETE /_config/data`: forget every object and every key."""
        stores = (self.payment_methods, self.intents, self.charges, self.refunds, self.payouts)
        for store in (*stores, self.products, self.prices):
            store.clear()
        self.layer.clear()
        return json_response({"deleted": True})

    async def unknown(self, request: web.Request) -> web.Response:
        return stripe_error(
            404,
            "invalid_request_error",
            f"Unrecognized request URL ({request.method}: {request.path}). This Stripe "
            "stand-in answers only the calls the payment service makes.",
        )


def _public(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def _list(request: web.Request, items: Any, url: str) -> web.Response:
    try:
        limit = max(1, int(request.query.get("limit", "10")))
    except ValueError:
        return _invalid("Invalid integer.", "limit", "parameter_invalid_integer")
    newest_first = list(items)[::-1]
    return json_response(
        {
            "object": "list",
            "data": newest_first[:limit],
            "has_more": len(newest_first) > limit,
            "url": url,
        }
    )


def _array_param(request: web.Request, name: str) -> set[str]:
    """A list query parameter as the SDK encodes it (`name[0]=a&name[1]=b`) or `name[]=a`."""
    return {
        value
        for key, value in request.query.items()
        if key == name or (key.startswith(name + "[") and key.endswith("]"))
    }


def _bool(value: object, default: bool) -> bool:
    if value is None:
        return default
    return str(value).lower() == "true"


def _merge_metadata(current: dict[str, str], update: object) -> dict[str, str]:
    """Stripe's metadata update: keys merge, an empty value removes its key, "" clears all."""
    if not isinstance(update, dict):
        return {}
    merged = dict(current)
    for key, value in update.items():
        if value == "":
            merged.pop(str(key), None)
        else:
            merged[str(key)] = str(value)
    return merged


def _paged(request: web.Request, items: list[Obj], url: str) -> web.Response:
    """A Stripe list, newest first, paged by `limit` (1-100) and `starting_after` /
    `ending_before` object ids."""
    try:
        limit = min(100, max(1, int(request.query.get("limit", "10"))))
    except ValueError:
        return _invalid("Invalid integer.", "limit", "parameter_invalid_integer")
    ordered = sorted(items, key=lambda obj: -obj["_seq"])
    ids = [obj["id"] for obj in ordered]
    after, before = request.query.get("starting_after"), request.query.get("ending_before")
    if after is not None:
        if after not in ids:
            return _missing("object", after, "starting_after")
        rest = ordered[ids.index(after) + 1 :]
        page, more = rest[:limit], len(rest) > limit
    elif before is not None:
        if before not in ids:
            return _missing("object", before, "ending_before")
        rest = ordered[: ids.index(before)]
        page, more = rest[-limit:], len(rest) > limit
    else:
        page, more = ordered[:limit], len(ordered) > limit
    return json_response(
        {"object": "list", "data": [_public(obj) for obj in page], "has_more": more, "url": url}
    )


@web.middleware
async def _require_api_key(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.path.startswith(("/v1/", "/v2/")) and not api_key_of(
        request.headers.get("Authorization", "")
    ):
        return stripe_error(
            401,
            "invalid_request_error",
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth "
            "(e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
        )
    return await handler(request)


def fast_app(*, layer: IdempotencyLayer | None = None) -> web.Application:
    """The fast in-memory Stripe stand-in (module doc), the layer in front of its handlers."""
    layer = layer if layer is not None else IdempotencyLayer()
    stripe = FastStripe(layer)
    app = _application(HandlerStats(), _require_api_key, layer.middleware())
    app.router.add_routes(stripe.routes())
    return app


# -- serving ----------------------------------------------------------------------------------


class StandInServer:
    """One of this module's apps served on `host` (ephemeral port by default) in the running
    event loop, for tests: `async with StandInServer(proxy_app(url)) as server: server.url`."""

    def __init__(
        self,
        app: web.Application,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        handler_cancellation: bool = False,
    ) -> None:
        self.app = app
        self._host = host
        self._port = port
        self._cancellation = handler_cancellation  # cancel a handler when its client leaves
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            handler_cancellation=self._cancellation,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, backlog=1024)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meshdev.standins.stripe",
        description="Stripe stand-ins with Stripe's idempotency semantics (dev/test only).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    proxy = commands.add_parser("proxy", help="the idempotency proxy in front of a Stripe server")
    proxy.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:8421")
    fast = commands.add_parser("fast", help="the fast in-memory Stripe stand-in")
    for sub in (proxy, fast):
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    app = proxy_app(args.upstream) if args.command == "proxy" else fast_app()
    where = f" in front of {args.upstream}" if args.command == "proxy" else ""
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        access_log=None,
        shutdown_timeout=5.0,
        print=lambda _: logger.info(
            "stripe %s stand-in on http://%s:%d%s", args.command, args.host, args.port, where
        ),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
