"""A local stand-in for Square (OAuth, Catalog, Customers, Inventory, Locations and signed
webhooks), for `make run` and tests only. The official `squareup` SDK talks to it unchanged:

    client = Square(base_url=server.url, token=access_token)      # or AsyncSquare(...)
    client.locations.list()                                       # TestConnection
    client.catalog.batch_upsert(idempotency_key=..., batches=[{"objects": [...]}])

(`base_url` replaces `environment`; the SDK appends `v2/...` and `oauth2/...` to it.) The new SDK
retries 429/408/409/5xx twice by default, honouring `Retry-After`: pass
`request_options={"max_retries": 0}` where a caller (or a test) wants to see the first answer.

OAuth, as Square's (developer.squareup.com/docs/oauth-api):

* `GET /oauth2/authorize?client_id&scope=A+B&state&redirect_uri[&code_challenge]` stands for the
  seller's consent: it answers 302 to `redirect_uri?code=…&response_type=code&state=…` at once
  (`&deny=1` answers `error=access_denied`; `&merchant_id=M` picks the consenting seller,
  default `DEV_MERCHANT_ID`). `authorize(...)` does the same from Python and returns the code.
  Codes are single-use and live 5 minutes; `code_challenge` is S256 (PKCE).
* `POST /oauth2/token` (JSON): `authorization_code` with `client_secret` (code flow) or
  `code_verifier` (PKCE: BASE64URL(SHA256(verifier)) must equal the challenge; a code issued with
  a challenge always needs its verifier), and `refresh_token` (code flow: with `client_secret`,
  the same refresh token comes back; PKCE: `client_id` only, and a NEW refresh token comes back,
  the old one is spent). Access tokens live 30 days (`expires_at`); refresh tokens here expire
  after 7 days unused (`refresh_ttl_s`) — Square documents code-flow refresh tokens as not
  expiring and PKCE ones as 90-day, but asks apps to refresh at least every 7 days, and this
  model makes a missed refresh visible. An older access token stays valid until its own expiry.
* `POST /oauth2/revoke` with `Authorization: Client <application secret>` and `access_token` or
  `merchant_id`: every token of that seller for this application stops working (a
  `oauth.authorization.revoked` webhook follows); `POST /oauth2/token/status` (Bearer).
* Errors use Square's body `{"errors": [{"category", "code", "detail"[, "field"]}]}`: 401
  `UNAUTHORIZED` for a wrong client id/secret or an unknown/used/expired code or refresh
  token, 400 `BAD_REQUEST` for a failed PKCE check or a missing parameter.

The API (`/v2/…`) needs `Authorization: Bearer <access token>`: unknown → 401 `UNAUTHORIZED`,
expired → 401 `ACCESS_TOKEN_EXPIRED`, revoked → 401 `ACCESS_TOKEN_REVOKED`, a missing scope → 403
`INSUFFICIENT_SCOPES`. What it answers (the calls the integration service makes):

* Locations `GET /v2/locations` (the cheap TestConnection call), `GET /v2/locations/{id}`,
  `GET /v2/merchants/{id|me}`.
* Catalog: `POST /v2/catalog/batch-upsert` (≤ 1,000 objects per batch, ≤ 10,000 per request,
  nested variations counted; each batch all-or-nothing, a bad batch does not stop the others;
  `#client` ids answered in `id_mappings`; `version` checked when given → 400
  `VERSION_MISMATCH`), `POST /v2/catalog/object`, `GET|DELETE /v2/catalog/object/{id}`,
  `POST /v2/catalog/batch-retrieve`, `POST /v2/catalog/batch-delete`, `GET /v2/catalog/list`
  (`types`, pages of 100, `cursor`), `POST /v2/catalog/search` (`object_types`, `begin_time`,
  `include_deleted_objects`, `exact_query` / `prefix_query` / `text_query` on name, sku and
  description, `limit` ≤ 1,000, `cursor`, `latest_time`), `GET /v2/catalog/info` (the limits).
  Only one catalog write runs at a time per seller, as at Square: a second one while the first
  is still being processed is answered 429 `RATE_LIMITED` (visible with `latency_s`).
* Customers: `GET|POST /v2/customers` (list with `cursor`, `limit` ≤ 100, `sort_field`,
  `sort_order`; create), `GET|PUT|DELETE /v2/customers/{id}` (update with optional `version` →
  400 `VERSION_MISMATCH`), `POST /v2/customers/search` (`email_address`, `phone_number`,
  `reference_id` exact/fuzzy, `created_at` / `updated_at` ranges, sort, `cursor`),
  `POST /v2/customers/bulk-create|bulk-update|bulk-retrieve|bulk-delete` (≤ 100 each).
* Inventory: `POST /v2/inventory/batch-change` and `/v2/inventory/changes/batch-create` (≤ 100
  PHYSICAL_COUNT / ADJUSTMENT changes on live ITEM_VARIATIONs), `POST
  /v2/inventory/batch-retrieve-counts` and `/v2/inventory/counts/batch-retrieve` (`cursor`,
  `limit` ≤ 1,000, `updated_after`, `states`), `GET /v2/inventory/{catalog_object_id}`.

Idempotency, as Square's: every create/upsert/change takes `idempotency_key` (bulk-create: each
map key); the same key with the same body answers the first answer again (same ids, nothing
created twice); with another body 400 `IDEMPOTENCY_KEY_REUSED`; while its first request still
runs 409 `CONFLICT`. Keys are per seller and kept 24 h. Answers that did not run (429, 5xx,
401/403) are not kept.

Limits: a token bucket of `rate_per_s` calls a second per application (default 45, Square's
limit for the guard; `burst` = one second's worth) → 429 `{"category": "RATE_LIMIT_ERROR",
"code": "RATE_LIMITED"}` with `Retry-After` (whole seconds, at least 1). Square publishes no
rate headers; this stand-in sends only `Retry-After`. Scripted faults: `fail_next` (5xx
`INTERNAL_SERVER_ERROR` / `SERVICE_UNAVAILABLE`), `throttle_next`, `slow_next`, `latency_s`.

Webhooks: with `webhook_url` set, changes are notified as Square does — `customer.created` /
`customer.updated` / `customer.deleted`, `catalog.version.updated`, `inventory.count.updated`,
`oauth.authorization.revoked` — each a JSON POST `{"merchant_id", "type", "event_id",
"created_at", "data": {"type", "id", "object"}}` signed

    x-square-hmacsha256-signature: base64(HMAC-SHA256(signature key, notification URL + body))

which `square.utils.webhooks_helper.verify_signature(request_body=…, signature_header=…,
signature_key=…, notification_url=…)` accepts. `emit(...)` posts one on demand (`forge=True`
signs with a wrong key, `created_at=` backdates it), `resend(event_id)` posts the same event
again (a replay, `square-retry-number` incremented). Deliveries are kept, not retried.

Counting for tests: every stored object keeps the `#client` id it was created under and its
SKU (variations); customers their `reference_id` and e-mail. `count_ref(ref)` and
`duplicates()` answer "present exactly once"; `stats` counts calls per operation and 429s.

As a process (`meshdev.embedded.SquareStandIn`): `python -m meshdev.standins.square --port N
[--webhook-url URL] [--rate-per-s R]`; control under `/_standin/` (see `apibase`, plus
`authorize`, `objects`, `customers`, `refs`, `grants`, `webhooks`, `webhooks/resend`,
`merchants`, `revoke-merchant`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import string
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from meshdev.standins.apibase import (
    ApiStandIn,
    AuthCodes,
    InFlight,
    ReplayStore,
    TokenBucket,
    WebhookDelivery,
    decode_cursor,
    dumps,
    encode_cursor,
    json_response,
    new_token,
    parse_rfc3339,
    pkce_challenge,
    read_json_object,
    rfc3339,
)

__all__ = [
    "ACCESS_TTL_S",
    "ALL_SCOPES",
    "DEV_ACCESS_TOKEN",
    "DEV_APPLICATION_ID",
    "DEV_APPLICATION_SECRET",
    "DEV_LOCATION_ID",
    "DEV_MERCHANT_ID",
    "DEV_SIGNATURE_KEY",
    "REFRESH_TTL_S",
    "SIGNATURE_HEADER",
    "SquareServer",
    "main",
    "square_signature",
]

logger = logging.getLogger(__name__)

DEV_APPLICATION_ID = "sq0idp-meshdev-dev-application"
"""The application `make run` and tests configure (production settings refuse it)."""
DEV_APPLICATION_SECRET = "sq0csp-meshdev-dev-only-not-a-real-secret"  # noqa: S105 - dev only
DEV_SIGNATURE_KEY = "meshdev-square-webhook-signature-key"
DEV_MERCHANT_ID = "MLMESHDEV0000001"
DEV_LOCATION_ID = "LMESHDEV0000001"
DEV_ACCESS_TOKEN = "EAAAmeshdev-dev-personal-access-token"  # noqa: S105 - dev only
"""A personal access token of the default seller with every scope (never expires)."""
SIGNATURE_HEADER = "x-square-hmacsha256-signature"
ACCESS_TTL_S = 30 * 86400.0
REFRESH_TTL_S = 7 * 86400.0
ALL_SCOPES = (
    "MERCHANT_PROFILE_READ",
    "ITEMS_READ",
    "ITEMS_WRITE",
    "CUSTOMERS_READ",
    "CUSTOMERS_WRITE",
    "INVENTORY_READ",
    "INVENTORY_WRITE",
)
MAX_BATCH_OBJECTS = 1000
MAX_UPSERT_OBJECTS = 10_000
LIST_PAGE = 100
MAX_SEARCH_LIMIT = 1000
MAX_CUSTOMERS_PAGE = 100
MAX_BULK_CUSTOMERS = 100
MAX_INVENTORY_CHANGES = 100
MAX_COUNTS_LIMIT = 1000
CATALOG_TYPES = frozenset(
    {"ITEM", "ITEM_VARIATION", "CATEGORY", "TAX", "DISCOUNT", "MODIFIER_LIST", "MODIFIER", "IMAGE"}
)
_TOP_LEVEL_DEFAULT = ("ITEM", "CATEGORY", "TAX", "DISCOUNT", "MODIFIER_LIST")
INVENTORY_STATES = frozenset(
    {"IN_STOCK", "SOLD", "RETURNED_BY_CUSTOMER", "RESERVED_FOR_SALE", "WASTE", "NONE"}
)
_KEY_LIMITS = {"catalog": 128, "customers": 45, "inventory": 128}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ID_ALPHABET = string.ascii_uppercase + string.digits

Obj = dict[str, Any]


def square_signature(signature_key: str, notification_url: str, body: bytes) -> str:
    """`x-square-hmacsha256-signature`: base64(HMAC-SHA256(key, notification URL + body))."""
    mac = hmac.new(signature_key.encode(), notification_url.encode() + body, hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def square_id(length: int = 24) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def error(status: int, category: str, code: str, detail: str, **extra: Any) -> web.Response:
    """An answer in Square's error shape."""
    item: Obj = {"category": category, "code": code, "detail": detail, **extra}
    return json_response({"errors": [item]}, status)


def bad_request(detail: str, code: str = "BAD_REQUEST", fld: str | None = None) -> web.Response:
    extra = {"field": fld} if fld else {}
    return error(400, "INVALID_REQUEST_ERROR", code, detail, **extra)


def not_found(detail: str) -> web.Response:
    return error(404, "INVALID_REQUEST_ERROR", "NOT_FOUND", detail)


class _Invalid(Exception):
    """A request error found deep inside a handler; answered as `bad_request`."""

    def __init__(self, detail: str, code: str = "BAD_REQUEST", fld: str | None = None) -> None:
        super().__init__(detail)
        self.detail, self.code, self.fld = detail, code, fld

    def item(self) -> Obj:
        item: Obj = {"category": "INVALID_REQUEST_ERROR", "code": self.code, "detail": self.detail}
        if self.fld:
            item["field"] = self.fld
        return item

    def response(self) -> web.Response:
        return bad_request(self.detail, self.code, self.fld)


# -- grants -----------------------------------------------------------------------------------


@dataclass(slots=True)
class AccessToken:
    token: str
    merchant_id: str
    client_id: str
    scopes: tuple[str, ...]
    expires_at: float | None
    revoked: bool = False


@dataclass(slots=True)
class RefreshToken:
    token: str
    merchant_id: str
    client_id: str
    scopes: tuple[str, ...]
    pkce: bool
    expires_at: float
    spent: bool = False
    revoked: bool = False


@dataclass(slots=True)
class Merchant:
    """A seller: its location, catalog, customers and inventory."""

    id: str
    name: str
    location_ids: list[str]
    currency: str = "USD"
    country: str = "US"
    catalog: dict[str, Obj] = field(default_factory=dict)
    """Every catalog object by id, flat (variations too), deleted ones kept with is_deleted."""
    customers: dict[str, Obj] = field(default_factory=dict)
    counts: dict[tuple[str, str, str], Obj] = field(default_factory=dict)
    """(catalog_object_id, location_id, state) -> InventoryCount."""
    changes: list[Obj] = field(default_factory=list)
    catalog_version: int = 0


# -- the server -------------------------------------------------------------------------------


Op = Callable[[web.Request, Merchant, Obj], Awaitable[web.Response]]


class SquareServer(ApiStandIn):
    """The stand-in (module doc) served in the running event loop; `url` once started."""

    name = "square"
    user_agent = "Square Connect v2"

    def __init__(
        self,
        *,
        application_id: str = DEV_APPLICATION_ID,
        application_secret: str = DEV_APPLICATION_SECRET,
        signature_key: str = DEV_SIGNATURE_KEY,
        webhook_url: str | None = None,
        rate_per_s: float | None = 45.0,
        burst: int | None = None,
        access_ttl_s: float = ACCESS_TTL_S,
        refresh_ttl_s: float = REFRESH_TTL_S,
        personal_access_token: str | None = DEV_ACCESS_TOKEN,
        serialize_catalog_writes: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.application_id = application_id
        self.application_secret = application_secret
        self.signature_key = signature_key
        self.webhook_url = webhook_url
        self.webhook_events: set[str] | None = None
        """Event types delivered automatically (None: all)."""
        self.limit = TokenBucket(rate_per_s, burst)
        self.access_ttl_s = access_ttl_s
        self.refresh_ttl_s = refresh_ttl_s
        self.personal_access_token = personal_access_token
        self.serialize_catalog_writes = serialize_catalog_writes
        self.catalog_writes = InFlight(1)
        self.replays = ReplayStore()
        super().__init__(host=host, port=port)
        self.codes = AuthCodes(self.clock)
        self._seq = 0
        self._events: dict[str, tuple[str, bytes, int]] = {}
        """event_id -> (url, body, retry number) for `resend`."""
        self._reset_data()

    # -- state -----------------------------------------------------------------------------------
    def _reset_data(self) -> None:
        self.merchants: dict[str, Merchant] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.codes.clear()
        self.replays.clear()
        self.limit.reset()
        self._events = {}
        self.add_merchant(DEV_MERCHANT_ID, "Meshdev Venue", DEV_LOCATION_ID)
        if self.personal_access_token:
            self.access_tokens[self.personal_access_token] = AccessToken(
                self.personal_access_token, DEV_MERCHANT_ID, self.application_id, ALL_SCOPES, None
            )

    def add_merchant(
        self, merchant_id: str | None = None, name: str = "Venue", location_id: str | None = None
    ) -> Merchant:
        """A new seller (one active location) that can authorize the application."""
        merchant = Merchant(
            id=merchant_id or "ML" + square_id(13),
            name=name,
            location_ids=[location_id or "L" + square_id(12)],
        )
        self.merchants[merchant.id] = merchant
        return merchant

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _now(self) -> str:
        return rfc3339(self.clock.now())

    # -- OAuth -----------------------------------------------------------------------------------
    def authorize(
        self,
        *,
        client_id: str | None = None,
        scopes: Iterable[str] = ALL_SCOPES,
        redirect_uri: str = "http://127.0.0.1/oauth/callback",
        code_challenge: str | None = None,
        merchant_id: str = DEV_MERCHANT_ID,
    ) -> str:
        """The seller consents: an authorization code for the token endpoint."""
        if merchant_id not in self.merchants:
            raise KeyError(f"no seller {merchant_id}")
        return self.codes.issue(
            client_id=client_id or self.application_id,
            redirect_uri=redirect_uri,
            scopes=tuple(scopes),
            account=merchant_id,
            code_challenge=code_challenge,
            prefix="sq0cgp-",
        ).code

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        client_id = query.get("client_id", "")
        redirect_uri = query.get("redirect_uri", "")
        if client_id != self.application_id:
            return web.Response(status=400, text="Invalid client_id")
        if not redirect_uri:
            return web.Response(status=400, text="redirect_uri is required by this stand-in")
        state = query.get("state")
        params: dict[str, str] = {}
        if query.get("deny"):
            params = {"error": "access_denied", "error_description": "user_denied"}
        else:
            merchant_id = query.get("merchant_id", DEV_MERCHANT_ID)
            method = query.get("code_challenge_method", "S256")
            if "code_challenge" in query and method != "S256":
                return web.Response(status=400, text="code_challenge_method must be S256")
            scopes = tuple(s for s in re.split(r"[\s+]+", query.get("scope", "")) if s)
            unknown = [s for s in scopes if s not in ALL_SCOPES]
            if unknown or merchant_id not in self.merchants:
                params = {"error": "invalid_scope" if unknown else "invalid_request"}
            else:
                params = {
                    "code": self.authorize(
                        client_id=client_id,
                        scopes=scopes,
                        redirect_uri=redirect_uri,
                        code_challenge=query.get("code_challenge"),
                        merchant_id=merchant_id,
                    ),
                    "response_type": "code",
                }
        if state is not None:
            params["state"] = state
        sep = "&" if "?" in redirect_uri else "?"
        raise web.HTTPFound(redirect_uri + sep + urlencode(params))

    def _issue(
        self, merchant_id: str, client_id: str, scopes: tuple[str, ...], pkce: bool
    ) -> tuple[AccessToken, RefreshToken]:
        now = self.clock.now()
        access = AccessToken(
            new_token("EAAA", 36), merchant_id, client_id, scopes, now + self.access_ttl_s
        )
        refresh = RefreshToken(
            new_token("EQAA", 36), merchant_id, client_id, scopes, pkce, now + self.refresh_ttl_s
        )
        self.access_tokens[access.token] = access
        self.refresh_tokens[refresh.token] = refresh
        return access, refresh

    def _token_answer(self, access: AccessToken, refresh: RefreshToken) -> web.Response:
        assert access.expires_at is not None
        body: Obj = {
            "access_token": access.token,
            "token_type": "bearer",
            "expires_at": rfc3339(access.expires_at, millis=False),
            "merchant_id": access.merchant_id,
            "refresh_token": refresh.token,
            "short_lived": False,
        }
        if refresh.pkce:
            body["refresh_token_expires_at"] = rfc3339(refresh.expires_at, millis=False)
        return json_response(body)

    async def _token(self, request: web.Request) -> web.Response:
        try:
            body = await read_json_object(request)
        except ValueError:
            return bad_request("The request body is not valid JSON.")
        grant_type = body.get("grant_type")
        client_id = body.get("client_id")
        secret = body.get("client_secret")
        unauthorized = error(401, "AUTHENTICATION_ERROR", "UNAUTHORIZED", "Not Authorized")
        if client_id != self.application_id:
            return unauthorized
        if secret is not None and not hmac.compare_digest(str(secret), self.application_secret):
            return unauthorized
        if grant_type == "authorization_code":
            self.stats.calls["oauth.code_exchange"] += 1
            code = body.get("code")
            if not code:
                return bad_request("Missing required parameter.", "MISSING_REQUIRED_PARAMETER")
            peek = self.codes._codes.get(code)
            verifier = body.get("code_verifier")
            if peek is not None and peek.code_challenge is not None:
                if not verifier or not hmac.compare_digest(
                    pkce_challenge(str(verifier)), peek.code_challenge
                ):
                    return bad_request("Invalid code_verifier.", fld="code_verifier")
            elif secret is None:
                return bad_request(
                    "client_secret is required (this code was not issued for PKCE).",
                    "MISSING_REQUIRED_PARAMETER",
                    "client_secret",
                )
            redeemed = self.codes.redeem(code, client_id, body.get("redirect_uri"))
            if isinstance(redeemed, str):
                detail = {
                    "used": "Authorization code is already redeemed",
                    "expired": "Authorization code is expired",
                    "redirect": "redirect_uri does not match the authorization request",
                }.get(redeemed, "Authorization code not found")
                return error(401, "AUTHENTICATION_ERROR", "UNAUTHORIZED", detail)
            access, refresh = self._issue(
                redeemed.account, client_id, redeemed.scopes, redeemed.code_challenge is not None
            )
            return self._token_answer(access, refresh)
        if grant_type == "refresh_token":
            self.stats.calls["oauth.refresh"] += 1
            old = self.refresh_tokens.get(str(body.get("refresh_token", "")))
            if old is None or old.client_id != client_id:
                return error(401, "AUTHENTICATION_ERROR", "UNAUTHORIZED", "Invalid refresh token")
            if not old.pkce and secret is None:
                return bad_request(
                    "client_secret is required", "MISSING_REQUIRED_PARAMETER", "client_secret"
                )
            if old.revoked:
                return error(
                    401, "AUTHENTICATION_ERROR", "ACCESS_TOKEN_REVOKED", "Refresh token revoked"
                )
            if old.spent or old.expires_at <= self.clock.now():
                detail = "Refresh token already used" if old.spent else "Refresh token expired"
                return error(401, "AUTHENTICATION_ERROR", "UNAUTHORIZED", detail)
            scopes = old.scopes
            if body.get("scopes"):
                scopes = tuple(s for s in old.scopes if s in set(body["scopes"]))
            now = self.clock.now()
            access = AccessToken(
                new_token("EAAA", 36), old.merchant_id, client_id, scopes, now + self.access_ttl_s
            )
            self.access_tokens[access.token] = access
            if old.pkce:
                old.spent = True
                refresh = RefreshToken(
                    new_token("EQAA", 36),
                    old.merchant_id,
                    client_id,
                    old.scopes,
                    True,
                    now + self.refresh_ttl_s,
                )
                self.refresh_tokens[refresh.token] = refresh
            else:
                old.expires_at = now + self.refresh_ttl_s  # 7 days from its last use
                refresh = old
            return self._token_answer(access, refresh)
        return bad_request(f"Invalid grant_type: {grant_type}", fld="grant_type")

    def revoke_merchant(self, merchant_id: str, client_id: str | None = None) -> int:
        """The seller removes the application (or it revokes itself): every token of that seller
        stops working. Returns how many tokens were revoked."""
        client = client_id or self.application_id
        revoked = 0
        grants: list[AccessToken | RefreshToken] = [
            *self.access_tokens.values(),
            *self.refresh_tokens.values(),
        ]
        for grant in grants:
            if grant.merchant_id == merchant_id and grant.client_id == client and not grant.revoked:
                grant.revoked = True
                revoked += 1
        if revoked:
            revocation = {"revoked_at": self._now(), "revoker_type": "APPLICATION"}
            self._notify(
                merchant_id,
                "oauth.authorization.revoked",
                {
                    "type": "revocation",
                    "id": str(uuid.uuid4()),
                    "object": {"revocation": revocation},
                },
            )
        return revoked

    async def _revoke(self, request: web.Request) -> web.Response:
        self.stats.calls["oauth.revoke"] += 1
        scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Client" or not hmac.compare_digest(secret.strip(), self.application_secret):
            return error(401, "AUTHENTICATION_ERROR", "UNAUTHORIZED", "Not Authorized")
        body = await read_json_object(request)
        if body.get("client_id") != self.application_id:
            return error(401, "AUTHENTICATION_ERROR", "UNAUTHORIZED", "Not Authorized")
        merchant_id = body.get("merchant_id")
        if body.get("access_token"):
            found = self.access_tokens.get(str(body["access_token"]))
            if found is None:
                return not_found("Access token not found")
            if body.get("revoke_only_access_token"):
                found.revoked = True
                return json_response({"success": True})
            merchant_id = found.merchant_id
        if not merchant_id:
            return bad_request("access_token or merchant_id is required")
        self.revoke_merchant(str(merchant_id))
        return json_response({"success": True})

    async def _token_status(self, request: web.Request) -> web.Response:
        grant = self._bearer(request)
        if isinstance(grant, web.Response):
            return grant
        body: Obj = {
            "scopes": list(grant.scopes),
            "client_id": grant.client_id,
            "merchant_id": grant.merchant_id,
        }
        if grant.expires_at is not None:
            body["expires_at"] = rfc3339(grant.expires_at, millis=False)
        return json_response(body)

    def _bearer(self, request: web.Request) -> AccessToken | web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        grant = self.access_tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if grant is None:
            self.stats.unauthorized += 1
            return error(
                401, "AUTHENTICATION_ERROR", "UNAUTHORIZED", "This request could not be authorized."
            )
        if grant.revoked:
            self.stats.unauthorized += 1
            return error(
                401, "AUTHENTICATION_ERROR", "ACCESS_TOKEN_REVOKED", "The access token was revoked."
            )
        if grant.expires_at is not None and grant.expires_at <= self.clock.now():
            self.stats.unauthorized += 1
            return error(
                401, "AUTHENTICATION_ERROR", "ACCESS_TOKEN_EXPIRED", "The access token expired."
            )
        return grant

    # -- the API dispatcher ----------------------------------------------------------------------
    def _op(
        self, name: str, scope: str, handler: Op, *, catalog_write: bool = False
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def run(request: web.Request) -> web.StreamResponse:
            self.stats.calls[name] += 1
            raw = await request.read()
            grant = self._bearer(request)
            if isinstance(grant, web.Response):
                return grant
            if scope not in grant.scopes:
                return error(
                    403,
                    "AUTHENTICATION_ERROR",
                    "INSUFFICIENT_SCOPES",
                    f"The merchant has not given your application sufficient permissions to do "
                    f"that. The following scopes are required: {scope}.",
                )
            merchant = self.merchants[grant.merchant_id]
            fault, delay = self.next_fault()
            if fault is not None:
                return self._fault_answer(fault.status, fault.retry_after)
            decision = self.limit.take()
            if not decision.allowed:
                self.stats.rate_limited += 1
                return self._rate_limited(decision.retry_after_s)
            body: Obj = {}
            if raw.strip():
                try:
                    parsed = json.loads(raw)
                except ValueError:
                    return bad_request(
                        "The request body is not valid JSON.", "INVALID_CONTENT_TYPE"
                    )
                if not isinstance(parsed, dict):
                    return bad_request("The request body must be a JSON object.")
                body = parsed
            lock_key = merchant.id if catalog_write and self.serialize_catalog_writes else ""
            with self.catalog_writes.enter(lock_key or f"-{id(request)}") as alone:
                if not alone:
                    self.stats.concurrency_limited += 1
                    return error(
                        429,
                        "RATE_LIMIT_ERROR",
                        "RATE_LIMITED",
                        "Another catalog update for this seller is being processed.",
                    )
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    return await handler(request, merchant, body)
                except _Invalid as exc:
                    return exc.response()

        return run

    @staticmethod
    def _fault_answer(status: int, retry_after: int | None) -> web.Response:
        if status == 429:
            response = error(429, "RATE_LIMIT_ERROR", "RATE_LIMITED", "Rate limit exceeded")
        elif status == 503:
            response = error(503, "API_ERROR", "SERVICE_UNAVAILABLE", "Service unavailable")
        else:
            response = error(status, "API_ERROR", "INTERNAL_SERVER_ERROR", "Internal error")
        if retry_after:
            response.headers["Retry-After"] = str(retry_after)
        return response

    @staticmethod
    def _rate_limited(retry_after_s: float) -> web.Response:
        response = error(429, "RATE_LIMIT_ERROR", "RATE_LIMITED", "Rate limit exceeded")
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
        return response

    async def _idempotent(
        self,
        merchant: Merchant,
        kind: str,
        body: Obj,
        run: Callable[[], web.Response],
        *,
        required: bool = True,
    ) -> web.Response:
        """Run a write under its `idempotency_key` (Square's rules, module doc)."""
        key = body.get("idempotency_key")
        if key is None or key == "":
            if required:
                raise _Invalid("Field must be set", "MISSING_REQUIRED_PARAMETER", "idempotency_key")
            return run()
        if not isinstance(key, str) or len(key) > _KEY_LIMITS[kind]:
            raise _Invalid(
                f"Field must be at most {_KEY_LIMITS[kind]} characters",
                "VALUE_TOO_LONG",
                "idempotency_key",
            )
        scope = f"{merchant.id}:{kind}"
        fingerprint = ReplayStore.fingerprint(json.dumps(body, sort_keys=True))
        outcome = self.replays.begin(scope, key, fingerprint)
        if outcome == "mismatch":
            raise _Invalid(
                "The idempotency key can only be retried with the same request data.",
                "IDEMPOTENCY_KEY_REUSED",
                "idempotency_key",
            )
        if outcome == "in_flight":
            return error(
                409, "INVALID_REQUEST_ERROR", "CONFLICT", "A request with this key is in progress."
            )
        if isinstance(outcome, tuple):
            status, saved = outcome
            return web.Response(status=status, body=saved, content_type="application/json")
        try:
            response = run()
        except _Invalid as exc:
            response = exc.response()
        except BaseException:
            self.replays.finish(scope, key, None)
            raise
        assert isinstance(response.body, bytes)
        self.replays.finish(scope, key, response.status, response.body)
        return response

    # -- locations and merchants -----------------------------------------------------------------
    def _location(self, merchant: Merchant, location_id: str) -> Obj:
        return {
            "id": location_id,
            "name": merchant.name,
            "merchant_id": merchant.id,
            "status": "ACTIVE",
            "country": merchant.country,
            "currency": merchant.currency,
            "timezone": "America/New_York",
            "type": "PHYSICAL",
            "business_name": merchant.name,
            "capabilities": ["CREDIT_CARD_PROCESSING"],
            "created_at": "2024-01-01T00:00:00.000Z",
        }

    async def list_locations(self, _r: web.Request, merchant: Merchant, _b: Obj) -> web.Response:
        return json_response(
            {"locations": [self._location(merchant, i) for i in merchant.location_ids]}
        )

    async def get_location(self, request: web.Request, merchant: Merchant, _b: Obj) -> web.Response:
        location_id = request.match_info["id"]
        if location_id not in merchant.location_ids:
            return not_found(f"Location `{location_id}` not found.")
        return json_response({"location": self._location(merchant, location_id)})

    async def get_merchant(self, request: web.Request, merchant: Merchant, _b: Obj) -> web.Response:
        merchant_id = request.match_info["id"]
        if merchant_id not in ("me", merchant.id):
            return not_found(f"Merchant `{merchant_id}` not found.")
        return json_response(
            {
                "merchant": {
                    "id": merchant.id,
                    "business_name": merchant.name,
                    "country": merchant.country,
                    "currency": merchant.currency,
                    "status": "ACTIVE",
                    "main_location_id": merchant.location_ids[0],
                    "language_code": "en-US",
                }
            }
        )

    # -- catalog ---------------------------------------------------------------------------------
    @staticmethod
    def _public(obj: Obj) -> Obj:
        return {k: v for k, v in obj.items() if not k.startswith("_")}

    def _render(self, merchant: Merchant, obj: Obj) -> Obj:
        """A stored object as the API shows it (items with their live variations inlined)."""
        out = self._public(obj)
        if obj["type"] == "ITEM":
            data = dict(out.get("item_data") or {})
            data["variations"] = [
                self._public(merchant.catalog[v])
                for v in obj["_variations"]
                if v in merchant.catalog and not merchant.catalog[v]["is_deleted"]
            ]
            out["item_data"] = data
        return out

    @staticmethod
    def _data_key(kind: str) -> str:
        return kind.lower() + "_data"

    def _validate_object(self, obj: object, path: str) -> Obj:
        if not isinstance(obj, dict):
            raise _Invalid("Expected an object", "INVALID_VALUE", path)
        kind = obj.get("type")
        if kind not in CATALOG_TYPES:
            raise _Invalid(f"Unsupported or missing type: {kind}", "INVALID_VALUE", path + ".type")
        if not isinstance(obj.get("id"), str) or not obj["id"]:
            raise _Invalid("Field must be set", "MISSING_REQUIRED_PARAMETER", path + ".id")
        if obj.get("is_deleted"):
            raise _Invalid("is_deleted must not be true", "INVALID_VALUE", path + ".is_deleted")
        data = obj.get(self._data_key(kind))
        if data is not None and not isinstance(data, dict):
            raise _Invalid("Expected an object", "INVALID_VALUE", f"{path}.{self._data_key(kind)}")
        data = data or {}
        if kind in ("ITEM", "CATEGORY") and not (
            isinstance(data.get("name"), str) and data["name"].strip()
        ):
            raise _Invalid(
                "Field must be set",
                "MISSING_REQUIRED_PARAMETER",
                f"{path}.{kind.lower()}_data.name",
            )
        if kind == "ITEM_VARIATION":
            price = data.get("price_money")
            if price is not None:
                amount = price.get("amount") if isinstance(price, dict) else None
                currency = price.get("currency") if isinstance(price, dict) else None
                if (
                    not isinstance(amount, int)
                    or isinstance(amount, bool)
                    or amount < 0
                    or not isinstance(currency, str)
                    or len(currency) != 3
                ):
                    raise _Invalid(
                        "price_money needs an integer amount >= 0 and a currency",
                        "INVALID_VALUE",
                        f"{path}.item_variation_data.price_money",
                    )
        return obj

    def _flatten(self, objects: list[Obj], path: str) -> list[tuple[Obj, str | None, str]]:
        """Objects and their nested variations as (object, parent id, path), parents first."""
        flat: list[tuple[Obj, str | None, str]] = []
        for i, raw in enumerate(objects):
            obj = self._validate_object(raw, f"{path}[{i}]")
            flat.append((obj, None, f"{path}[{i}]"))
            if obj["type"] == "ITEM":
                variations = (obj.get("item_data") or {}).get("variations") or []
                if not isinstance(variations, list):
                    raise _Invalid("Expected a list", "INVALID_VALUE", f"{path}[{i}].variations")
                for j, var in enumerate(variations):
                    vpath = f"{path}[{i}].item_data.variations[{j}]"
                    checked = self._validate_object(var, vpath)
                    if checked["type"] != "ITEM_VARIATION":
                        raise _Invalid("Expected ITEM_VARIATION", "INVALID_VALUE", vpath)
                    flat.append((checked, obj["id"], vpath))
        return flat

    def _upsert_batch(
        self, merchant: Merchant, objects: list[Obj], path: str
    ) -> tuple[list[Obj], list[Obj]]:
        """One all-or-nothing batch: (stored top-level objects, id mappings); raises _Invalid."""
        flat = self._flatten(objects, path)
        mapping: dict[str, str] = {}
        for obj, _parent, opath in flat:
            oid: str = obj["id"]
            if oid.startswith("#"):
                if oid in mapping:
                    raise _Invalid(f"Duplicate client id {oid}", "INVALID_VALUE", opath + ".id")
                mapping[oid] = square_id()
                continue
            current = merchant.catalog.get(oid)
            if current is None or current["is_deleted"]:
                raise _Invalid(f"Object with id {oid} not found.", "NOT_FOUND", opath + ".id")
            if current["type"] != obj["type"]:
                raise _Invalid("type cannot change", "INVALID_VALUE", opath + ".type")
            version = obj.get("version")
            if version is not None and version != current["version"]:
                raise _Invalid(
                    f"Object version does not match for object: {oid}",
                    "VERSION_MISMATCH",
                    opath + ".version",
                )

        items_in_batch = {o["id"] for o, _, _ in flat if o["type"] == "ITEM"}

        def resolve(ref: object, where: str) -> object:
            if isinstance(ref, str) and ref.startswith("#"):
                if ref not in mapping:
                    raise _Invalid(f"Unknown client id {ref}", "INVALID_VALUE", where)
                return mapping[ref]
            return ref

        for obj, parent, opath in flat:
            data = obj.get(self._data_key(obj["type"])) or {}
            if obj["type"] == "ITEM" and "category_id" in data:
                resolve(data["category_id"], opath + ".item_data.category_id")
            if obj["type"] == "ITEM_VARIATION":
                ref = parent if parent is not None else data.get("item_id")
                owner = merchant.catalog.get(str(ref))
                if not (
                    ref in items_in_batch
                    or (owner is not None and owner["type"] == "ITEM" and not owner["is_deleted"])
                ):
                    raise _Invalid(
                        f"item_id {ref} does not name an item",
                        "INVALID_VALUE",
                        opath + ".item_variation_data.item_id",
                    )

        # Everything checked: write.
        merchant.catalog_version = max(merchant.catalog_version + 1, int(self.clock.now() * 1000))
        version = merchant.catalog_version
        now = self._now()
        stored_top: list[Obj] = []
        # Items (and the rest) before variations, so a variation's item exists when it is written.
        ordered = sorted(flat, key=lambda entry: entry[0]["type"] == "ITEM_VARIATION")
        for obj, parent, opath in ordered:
            kind = obj["type"]
            oid = mapping.get(obj["id"]) or str(obj["id"])
            data = dict(obj.get(self._data_key(kind)) or {})
            if kind == "ITEM":
                data.pop("variations", None)
                if "category_id" in data:
                    data["category_id"] = resolve(data["category_id"], opath + ".category_id")
            if kind == "ITEM_VARIATION":
                data["item_id"] = resolve(parent if parent is not None else data["item_id"], opath)
            existing = merchant.catalog.get(oid)
            record: Obj = {
                "type": kind,
                "id": oid,
                "updated_at": now,
                "created_at": existing["created_at"] if existing else now,
                "version": version,
                "is_deleted": False,
                "present_at_all_locations": obj.get("present_at_all_locations", True),
                self._data_key(kind): data,
                "_seq": existing["_seq"] if existing else self._next_seq(),
                "_useq": self._next_seq(),
                # Only a top-level object's client id names it (nested ones repeat across batches).
                "_client_id": existing["_client_id"]
                if existing
                else (obj["id"].lstrip("#") if parent is None else ""),
                "_variations": existing["_variations"] if existing else [],
            }
            for extra in ("present_at_location_ids", "absent_at_location_ids"):
                if extra in obj:
                    record[extra] = obj[extra]
            if kind == "ITEM" and existing is not None:
                # Full replacement: variations left out of the update are deleted.
                kept = {
                    mapping.get(v["id"], v["id"])
                    for v, p, _ in flat
                    if p == obj["id"] and v["type"] == "ITEM_VARIATION"
                }
                for var_id in existing["_variations"]:
                    if var_id not in kept and var_id in merchant.catalog:
                        self._mark_deleted(merchant, var_id, now)
                record["_variations"] = [v for v in existing["_variations"] if v in kept]
            merchant.catalog[oid] = record
            if kind == "ITEM_VARIATION":
                owner = merchant.catalog[data["item_id"]]
                if oid not in owner["_variations"]:
                    owner["_variations"].append(oid)
            if parent is None:
                stored_top.append(record)
        stored_top.sort(key=lambda r: r["_seq"])
        mappings = [{"client_object_id": k, "object_id": v} for k, v in mapping.items()]
        return stored_top, mappings

    def _mark_deleted(self, merchant: Merchant, oid: str, now: str) -> None:
        obj = merchant.catalog[oid]
        obj.update(is_deleted=True, updated_at=now, _useq=self._next_seq())
        for var_id in obj.get("_variations", []):
            if var_id in merchant.catalog and not merchant.catalog[var_id]["is_deleted"]:
                self._mark_deleted(merchant, var_id, now)

    def _catalog_changed(self, merchant: Merchant) -> None:
        self._notify(
            merchant.id,
            "catalog.version.updated",
            {
                "type": "catalog",
                "id": "",
                "object": {"catalog_version": {"updated_at": self._now()}},
            },
        )

    async def batch_upsert(self, _r: web.Request, merchant: Merchant, body: Obj) -> web.Response:
        batches = body.get("batches")
        if not isinstance(batches, list) or not batches:
            raise _Invalid("Field must be set", "MISSING_REQUIRED_PARAMETER", "batches")
        total = 0
        for i, batch in enumerate(batches):
            objects = batch.get("objects") if isinstance(batch, dict) else None
            if not isinstance(objects, list) or not objects:
                raise _Invalid("Field must be set", "MISSING_REQUIRED_PARAMETER", f"batches[{i}]")
            size = sum(
                1 + len((o.get("item_data") or {}).get("variations") or [])
                if isinstance(o, dict)
                else 1
                for o in objects
            )
            if size > MAX_BATCH_OBJECTS:
                raise _Invalid(
                    f"A batch can contain at most {MAX_BATCH_OBJECTS} objects; batch {i} has "
                    f"{size}.",
                    "INVALID_VALUE",
                    f"batches[{i}].objects",
                )
            total += size
        if total > MAX_UPSERT_OBJECTS:
            raise _Invalid(
                f"A request can contain at most {MAX_UPSERT_OBJECTS} objects; it has {total}.",
                "INVALID_VALUE",
                "batches",
            )

        def run() -> web.Response:
            objects: list[Obj] = []
            mappings: list[Obj] = []
            errors: list[Obj] = []
            for i, batch in enumerate(batches):
                try:
                    stored, ids = self._upsert_batch(merchant, batch["objects"], f"batches[{i}]")
                except _Invalid as exc:
                    errors.append(exc.item())
                    continue
                objects += [self._render(merchant, o) for o in stored]
                mappings += ids
            if errors and not objects:
                return json_response({"errors": errors}, 400)
            self._catalog_changed(merchant)
            answer: Obj = {"objects": objects, "updated_at": self._now(), "id_mappings": mappings}
            if errors:
                answer["errors"] = errors
            return json_response(answer)

        return await self._idempotent(merchant, "catalog", body, run)

    async def upsert_object(self, _r: web.Request, merchant: Merchant, body: Obj) -> web.Response:
        obj = body.get("object")

        def run() -> web.Response:
            if not isinstance(obj, dict):
                raise _Invalid("Field must be set", "MISSING_REQUIRED_PARAMETER", "object")
            stored, ids = self._upsert_batch(merchant, [obj], "object")
            self._catalog_changed(merchant)
            return json_response(
                {"catalog_object": self._render(merchant, stored[0]), "id_mappings": ids}
            )

        return await self._idempotent(merchant, "catalog", body, run)

    async def get_object(self, request: web.Request, merchant: Merchant, _b: Obj) -> web.Response:
        oid = request.match_info["id"]
        obj = merchant.catalog.get(oid)
        if obj is None or obj["is_deleted"]:
            return not_found(f"Object with ID `{oid}` not found.")
        return json_response({"object": self._render(merchant, obj), "related_objects": []})

    def _delete_ids(self, merchant: Merchant, ids: Sequence[str]) -> list[str]:
        now = self._now()
        deleted: list[str] = []
        for oid in ids:
            obj = merchant.catalog.get(oid)
            if obj is None or obj["is_deleted"]:
                continue
            before = {k for k, v in merchant.catalog.items() if not v["is_deleted"]}
            self._mark_deleted(merchant, oid, now)
            deleted += [k for k in before if merchant.catalog[k]["is_deleted"]]
        if deleted:
            self._catalog_changed(merchant)
        return deleted

    async def delete_object(
        self, request: web.Request, merchant: Merchant, _b: Obj
    ) -> web.Response:
        oid = request.match_info["id"]
        if oid not in merchant.catalog or merchant.catalog[oid]["is_deleted"]:
            return not_found(f"Object with ID `{oid}` not found.")
        deleted = self._delete_ids(merchant, [oid])
        return json_response({"deleted_object_ids": deleted, "deleted_at": self._now()})

    async def batch_delete(self, _r: web.Request, merchant: Merchant, body: Obj) -> web.Response:
        ids = body.get("object_ids")
        if not isinstance(ids, list) or not ids or len(ids) > 200:
            raise _Invalid("object_ids needs 1 to 200 ids", "INVALID_VALUE", "object_ids")
        deleted = self._delete_ids(merchant, [str(i) for i in ids])
        return json_response({"deleted_object_ids": deleted, "deleted_at": self._now()})

    async def batch_retrieve(self, _r: web.Request, merchant: Merchant, body: Obj) -> web.Response:
        ids = body.get("object_ids")
        if not isinstance(ids, list) or not ids or len(ids) > 1000:
            raise _Invalid("object_ids needs 1 to 1000 ids", "INVALID_VALUE", "object_ids")
        objects = [
            self._render(merchant, merchant.catalog[i])
            for i in ids
            if i in merchant.catalog and not merchant.catalog[i]["is_deleted"]
        ]
        return json_response({"objects": objects})

    async def catalog_info(self, _r: web.Request, _m: Merchant, _b: Obj) -> web.Response:
        return json_response(
            {
                "limits": {
                    "batch_upsert_max_objects_per_batch": MAX_BATCH_OBJECTS,
                    "batch_upsert_max_total_objects": MAX_UPSERT_OBJECTS,
                    "batch_retrieve_max_object_ids": 1000,
                    "search_max_page_limit": MAX_SEARCH_LIMIT,
                    "batch_delete_max_object_ids": 200,
                }
            }
        )

    def _page(
        self, records: list[Obj], cursor: object, limit: int, key: str, scope: str
    ) -> tuple[list[Obj], str | None]:
        """Records ordered by `key` (a sequence number) after the cursor, and the next cursor."""
        after = 0
        if cursor:
            decoded = decode_cursor(str(cursor), scope)
            if decoded is None:
                raise _Invalid("Invalid cursor", "INVALID_CURSOR", "cursor")
            after = decoded
        ordered = sorted((r for r in records if r[key] > after), key=lambda r: r[key])
        page = ordered[:limit]
        more = len(ordered) > limit
        return page, encode_cursor(page[-1][key], scope) if more and page else None

    async def list_catalog(self, request: web.Request, merchant: Merchant, _b: Obj) -> web.Response:
        raw_types = request.query.get("types", "")
        types = {t.strip().upper() for t in raw_types.split(",") if t.strip()} or set(
            _TOP_LEVEL_DEFAULT
        )
        live = [o for o in merchant.catalog.values() if o["type"] in types and not o["is_deleted"]]
        scope = "list:" + ",".join(sorted(types))
        page, cursor = self._page(live, request.query.get("cursor"), LIST_PAGE, "_seq", scope)
        answer: Obj = {"objects": [self._render(merchant, o) for o in page]}
        if cursor:
            answer["cursor"] = cursor
        return json_response(answer)

    @staticmethod
    def _attributes(obj: Obj) -> dict[str, str]:
        data = obj.get(obj["type"].lower() + "_data") or {}
        return {
            k: str(data[k])
            for k in ("name", "description", "sku", "upc", "abbreviation")
            if data.get(k) is not None
        }

    def _matches(self, obj: Obj, query: Obj) -> bool:
        attrs = self._attributes(obj)
        exact = query.get("exact_query")
        if isinstance(exact, dict) and attrs.get(str(exact.get("attribute_name"))) != str(
            exact.get("attribute_value")
        ):
            return False
        prefix = query.get("prefix_query")
        if isinstance(prefix, dict):
            value = attrs.get(str(prefix.get("attribute_name")), "")
            if not value.lower().startswith(str(prefix.get("attribute_prefix", "")).lower()):
                return False
        text = query.get("text_query")
        if isinstance(text, dict):
            words = " ".join(attrs.values()).lower().split()
            for keyword in text.get("keywords") or []:
                if not any(w.startswith(str(keyword).lower()) for w in words):
                    return False
        return True

    async def search_catalog(self, _r: web.Request, merchant: Merchant, body: Obj) -> web.Response:
        types = {str(t).upper() for t in body.get("object_types") or _TOP_LEVEL_DEFAULT}
        include_deleted = bool(body.get("include_deleted_objects"))
        begin = body.get("begin_time")
        begin_s = None
        if begin:
            try:
                begin_s = parse_rfc3339(str(begin))
            except ValueError:
                raise _Invalid("Invalid RFC 3339 timestamp", "INVALID_TIME", "begin_time") from None
        limit = body.get("limit") or LIST_PAGE
        limit = LIST_PAGE if not isinstance(limit, int) or limit <= 0 else min(limit, 1000)
        query = body.get("query") or {}
        found = [
            o
            for o in merchant.catalog.values()
            if o["type"] in types
            and (include_deleted or not o["is_deleted"])
            and (begin_s is None or parse_rfc3339(o["updated_at"]) > begin_s)
            and self._matches(o, query)
        ]
        scope = (
            "search:"
            + hashlib.sha256(
                json.dumps(
                    {k: v for k, v in body.items() if k not in ("cursor", "limit")}, sort_keys=True
                ).encode()
            ).hexdigest()[:16]
        )
        page, cursor = self._page(found, body.get("cursor"), limit, "_useq", scope)
        answer: Obj = {
            "objects": [self._render(merchant, o) for o in page],
            "latest_time": self._now(),
        }
        if cursor:
            answer["cursor"] = cursor
        return json_response(answer)

    # -- customers -------------------------------------------------------------------------------
    _CUSTOMER_FIELDS = (
        "given_name",
        "family_name",
        "company_name",
        "nickname",
        "email_address",
        "address",
        "phone_number",
        "reference_id",
        "note",
        "birthday",
        "tax_ids",
    )

    def _customer_fields(self, body: Obj, path: str) -> Obj:
        fields = {k: body[k] for k in self._CUSTOMER_FIELDS if k in body}
        email = fields.get("email_address")
        if email is not None and (not isinstance(email, str) or not _EMAIL.match(email)):
            raise _Invalid("Invalid email address", "INVALID_EMAIL_ADDRESS", path + "email_address")
        for name in ("given_name", "family_name", "company_name", "nickname", "reference_id"):
            value = fields.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > 255):
                raise _Invalid(
                    "Expected a string of at most 255 characters", "INVALID_VALUE", path + name
                )
        return fields

    def _create_customer(self, merchant: Merchant, body: Obj, path: str = "") -> Obj:
        fields = self._customer_fields(body, path)
        if not any(
            fields.get(k)
            for k in ("given_name", "family_name", "company_name", "email_address", "phone_number")
        ):
            raise _Invalid(
                "At least one of the following must be included: given_name, family_name, "
                "company_name, email_address, or phone_number.",
                "BAD_REQUEST",
            )
        now = self._now()
        customer: Obj = {
            "id": square_id(26),
            "created_at": now,
            "updated_at": now,
            **fields,
            "preferences": {"email_unsubscribed": False},
            "creation_source": "THIRD_PARTY",
            "version": 0,
            "_seq": self._next_seq(),
            "_useq": self._seq,
            "_deleted": False,
        }
        merchant.customers[customer["id"]] = customer
        self._customer_event(merchant, "customer.created", customer)
        return customer

    def _customer_event(self, merchant: Merchant, event: str, customer: Obj) -> None:
        self._notify(
            merchant.id,
            event,
            {
                "type": "customer",
                "id": customer["id"],
                "object": {"customer": self._public(customer)},
            },
        )

    def _live_customer(self, merchant: Merchant, customer_id: str) -> Obj:
        customer = merchant.customers.get(customer_id)
        if customer is None or customer["_deleted"]:
            raise _CustomerMissing(customer_id)
        return customer

    def _update_customer(
        self, merchant: Merchant, customer_id: str, body: Obj, path: str = ""
    ) -> Obj:
        customer = self._live_customer(merchant, customer_id)
        version = body.get("version")
        if version is not None and version != customer["version"]:
            raise _Invalid("Customer version does not match", "VERSION_MISMATCH", path + "version")
        fields = self._customer_fields(body, path)
        for key, value in fields.items():
            if value is None:
                customer.pop(key, None)
            else:
                customer[key] = value
        customer.update(
            updated_at=self._now(), version=customer["version"] + 1, _useq=self._next_seq()
        )
        self._customer_event(merchant, "customer.updated", customer)
        return customer

    async def create_customer(self, _r: web.Request, merchant: Merchant, body: Obj) -> web.Response:
        def run() -> web.Response:
            return json_response({"customer": self._public(self._create_customer(merchant, body))})

        return await self._idempotent(merchant, "customers", body, run, required=False)

    async def get_customer(self, request: web.Request, merchant: Merchant, _b: Obj) -> web.Response:
        try:
            customer = self._live_customer(merchant, request.match_info["id"])
        except _CustomerMissing as exc:
            return exc.response()
        return json_response({"customer": self._public(customer)})

    async def update_customer(
        self, request: web.Request, merchant: Merchant, body: Obj
    ) -> web.Response:
        try:
            customer = self._update_customer(merchant, request.match_info["id"], body)
        except _CustomerMissing as exc:
            return exc.response()
        return json_response({"customer": self._public(customer)})

    async def delete_customer(
        self, request: web.Request, merchant: Merchant, _b: Obj
    ) -> web.Response:
        try:
            customer = self._live_customer(merchant, request.match_info["id"])
        except _CustomerMissing as exc:
            return exc.response()
        customer.update(_deleted=True, _useq=self._next_seq())
        self._customer_event(merchant, "customer.deleted", customer)
        return json_response({})

    def _customer_page(
        self, found: list[Obj], body: Obj, limit: object, scope: str
    ) -> web.Response:
        if limit is None:
            size = MAX_CUSTOMERS_PAGE
        elif isinstance(limit, int) and 1 <= limit <= MAX_CUSTOMERS_PAGE:
            size = limit
        else:
            raise _Invalid("limit must be between 1 and 100", "INVALID_VALUE", "limit")
        sort = body.get("sort") or {}
        field_ = sort.get("field") or body.get("sort_field") or "DEFAULT"
        descending = (sort.get("order") or body.get("sort_order") or "ASC") == "DESC"
        key = "_seq"
        if descending:
            # Newest first: walk sequence numbers backwards under a negated key.
            for customer in found:
                customer["_neg"] = -customer[key]
            key = "_neg"
        page, cursor = self._page(
            found, body.get("cursor"), size, key, f"{scope}:{field_}:{descending}"
        )
        answer: Obj = {"customers": [self._public(c) for c in page]}
        if cursor:
            answer["cursor"] = cursor
        if body.get("count"):
            answer["count"] = len(found)
        return json_response(answer)

    async def list_customers(
        self, request: web.Request, merchant: Merchant, _b: Obj
    ) -> web.Response:
        query = request.query
        limit = int(query["limit"]) if query.get("limit", "").isdigit() else None
        live = [c for c in merchant.customers.values() if not c["_deleted"]]
        body: Obj = dict(query)
        body["count"] = query.get("count") == "true"
        return self._customer_page(live, body, limit, "list")

    async def search_customers(
        self, _r: web.Request, merchant: Merchant, body: Obj
    ) -> web.Response:
        query = body.get("query") or {}
        filters = query.get("filter") or {}
        found = [
            c
            for c in merchant.customers.values()
            if not c["_deleted"] and _customer_matches(c, filters)
        ]
        search = dict(body)
        search["sort"] = query.get("sort") or {}
        scope = (
            "search:"
            + hashlib.sha256(json.dumps(filters, sort_keys=True).encode()).hexdigest()[:16]
        )
        return self._customer_page(found, search, body.get("limit"), scope)

    def _bulk_map(self, body: Obj, name: str) -> dict[str, Obj]:
        entries = body.get(name)
        if not isinstance(entries, dict) or not entries or len(entries) > MAX_BULK_CUSTOMERS:
            raise _Invalid(f"{name} needs 1 to {MAX_BULK_CUSTOMERS} entries", "INVALID_VALUE", name)
        return entries

    async def bulk_create_customers(
        self, _r: web.Request, merchant: Merchant, body: Obj
    ) -> web.Response:
        entries = self._bulk_map(body, "customers")
        responses: dict[str, Obj] = {}
        scope = f"{merchant.id}:customers"
        for key, fields in entries.items():
            if not isinstance(fields, dict):
                responses[key] = {
                    "errors": [_Invalid("Expected an object", "INVALID_VALUE").item()]
                }
                continue
            outcome = self.replays.begin(
                scope, key, ReplayStore.fingerprint(json.dumps(fields, sort_keys=True))
            )
            if outcome == "mismatch":
                item = _Invalid(
                    "The idempotency key can only be retried with the same request data.",
                    "IDEMPOTENCY_KEY_REUSED",
                ).item()
                responses[key] = {"errors": [item]}
                continue
            if isinstance(outcome, tuple):
                responses[key] = json.loads(outcome[1])
                continue
            try:
                answer: Obj = {"customer": self._public(self._create_customer(merchant, fields))}
                status = 200
            except _Invalid as exc:
                answer, status = {"errors": [exc.item()]}, 400
            self.replays.finish(scope, key, status, dumps(answer))
            responses[key] = answer
        return json_response({"responses": responses})

    async def bulk_update_customers(
        self, _r: web.Request, merchant: Merchant, body: Obj
    ) -> web.Response:
        responses: dict[str, Obj] = {}
        for customer_id, fields in self._bulk_map(body, "customers").items():
            try:
                if not isinstance(fields, dict):
                    raise _Invalid("Expected an object", "INVALID_VALUE")
                customer = self._update_customer(merchant, customer_id, fields)
                responses[customer_id] = {"customer": self._public(customer)}
            except (_Invalid, _CustomerMissing) as exc:
                responses[customer_id] = {"errors": [exc.item()]}
        return json_response({"responses": responses})

    async def bulk_retrieve_customers(
        self, _r: web.Request, merchant: Merchant, body: Obj
    ) -> web.Response:
        ids = body.get("customer_ids")
        if not isinstance(ids, list) or not ids or len(ids) > MAX_BULK_CUSTOMERS:
            raise _Invalid("customer_ids needs 1 to 100 ids", "INVALID_VALUE", "customer_ids")
        responses: dict[str, Obj] = {}
        for customer_id in ids:
            try:
                responses[customer_id] = {
                    "customer": self._public(self._live_customer(merchant, customer_id))
                }
            except _CustomerMissing as exc:
                responses[customer_id] = {"errors": [exc.item()]}
        return json_response({"responses": responses})

    async def bulk_delete_customers(
        self, _r: web.Request, merchant: Merchant, body: Obj
    ) -> web.Response:
        ids = body.get("customer_ids")
        if not isinstance(ids, list) or not ids or len(ids) > MAX_BULK_CUSTOMERS:
            raise _Invalid("customer_ids needs 1 to 100 ids", "INVALID_VALUE", "customer_ids")
        responses: dict[str, Obj] = {}
        for customer_id in ids:
            try:
                customer = self._live_customer(merchant, customer_id)
            except _CustomerMissing as exc:
                responses[customer_id] = {"errors": [exc.item()]}
                continue
            customer.update(_deleted=True, _useq=self._next_seq())
            self._customer_event(merchant, "customer.deleted", customer)
            responses[customer_id] = {}
        return json_response({"responses": responses})

    # -- inventory -------------------------------------------------------------------------------
    def _apply_change(self, merchant: Merchant, change: Obj, path: str, now: str) -> list[Obj]:
        kind = change.get("type")
        if kind == "PHYSICAL_COUNT":
            detail = change.get("physical_count")
        elif kind == "ADJUSTMENT":
            detail = change.get("adjustment")
        else:
            raise _Invalid(f"Unsupported change type {kind}", "INVALID_VALUE", path + ".type")
        if not isinstance(detail, dict):
            raise _Invalid("Field must be set", "MISSING_REQUIRED_PARAMETER", path)
        object_id = detail.get("catalog_object_id")
        obj = merchant.catalog.get(str(object_id))
        if obj is None or obj["is_deleted"] or obj["type"] != "ITEM_VARIATION":
            raise _Invalid(
                f"Invalid catalog_object_id {object_id}",
                "INVALID_VALUE",
                path + ".catalog_object_id",
            )
        location_id = detail.get("location_id")
        if location_id not in merchant.location_ids:
            raise _Invalid(
                f"Invalid location_id {location_id}", "INVALID_VALUE", path + ".location_id"
            )
        try:
            quantity = Decimal(str(detail.get("quantity")))
        except InvalidOperation:
            raise _Invalid("Invalid quantity", "INVALID_VALUE", path + ".quantity") from None
        if not quantity.is_finite() or quantity < 0:
            raise _Invalid("Invalid quantity", "INVALID_VALUE", path + ".quantity")
        if kind == "PHYSICAL_COUNT":
            state = detail.get("state", "IN_STOCK")
            if state not in INVENTORY_STATES:
                raise _Invalid(f"Invalid state {state}", "INVALID_VALUE", path + ".state")
            moves = [(state, quantity, True)]
        else:
            from_state, to_state = detail.get("from_state"), detail.get("to_state")
            if from_state not in INVENTORY_STATES or to_state not in INVENTORY_STATES:
                raise _Invalid("Invalid from_state/to_state", "INVALID_VALUE", path)
            moves = [(from_state, -quantity, False), (to_state, quantity, False)]
        touched: list[Obj] = []
        for state, amount, absolute in moves:
            if state == "NONE":
                continue
            key = (str(object_id), str(location_id), str(state))
            count = merchant.counts.get(key)
            current = Decimal(count["quantity"]) if count else Decimal(0)
            new = amount if absolute else current + amount
            count = {
                "catalog_object_id": object_id,
                "catalog_object_type": "ITEM_VARIATION",
                "state": state,
                "location_id": location_id,
                "quantity": _decimal_text(new),
                "calculated_at": now,
                "_useq": self._next_seq(),
            }
            merchant.counts[key] = count
            touched.append(count)
        return touched

    async def batch_change(self, _r: web.Request, merchant: Merchant, body: Obj) -> web.Response:
        changes = body.get("changes")
        if not isinstance(changes, list) or not changes or len(changes) > MAX_INVENTORY_CHANGES:
            raise _Invalid(
                f"changes needs 1 to {MAX_INVENTORY_CHANGES} entries", "INVALID_VALUE", "changes"
            )

        def run() -> web.Response:
            now = self._now()
            for i, change in enumerate(changes):  # check all before changing anything
                if not isinstance(change, dict):
                    raise _Invalid("Expected an object", "INVALID_VALUE", f"changes[{i}]")
            snapshot = {k: dict(v) for k, v in merchant.counts.items()}
            touched: list[Obj] = []
            stored: list[Obj] = []
            try:
                for i, change in enumerate(changes):
                    touched += self._apply_change(merchant, change, f"changes[{i}]", now)
                    detail_name = (
                        "physical_count" if change["type"] == "PHYSICAL_COUNT" else "adjustment"
                    )
                    record = {
                        "type": change["type"],
                        detail_name: {**change[detail_name], "id": square_id(), "created_at": now},
                    }
                    stored.append(record)
            except _Invalid:
                merchant.counts.clear()
                merchant.counts.update(snapshot)
                raise
            merchant.changes += stored
            counts = [self._public(c) for c in touched]
            self._notify(
                merchant.id,
                "inventory.count.updated",
                {
                    "type": "inventory",
                    "id": str(uuid.uuid4()),
                    "object": {"inventory_counts": counts},
                },
            )
            return json_response({"counts": counts, "changes": stored})

        return await self._idempotent(merchant, "inventory", body, run)

    async def batch_counts(self, _r: web.Request, merchant: Merchant, body: Obj) -> web.Response:
        ids = body.get("catalog_object_ids")
        locations = body.get("location_ids")
        states = body.get("states")
        updated_after = body.get("updated_after")
        after_s = parse_rfc3339(str(updated_after)) if updated_after else None
        limit = body.get("limit") or MAX_COUNTS_LIMIT
        if not isinstance(limit, int) or not 1 <= limit <= MAX_COUNTS_LIMIT:
            raise _Invalid("limit must be between 1 and 1000", "INVALID_VALUE", "limit")
        found = [
            c
            for c in merchant.counts.values()
            if (not ids or c["catalog_object_id"] in ids)
            and (not locations or c["location_id"] in locations)
            and ((states and c["state"] in states) or (not states and c["state"] == "IN_STOCK"))
            and (after_s is None or parse_rfc3339(c["calculated_at"]) > after_s)
        ]
        scope = hashlib.sha256(
            json.dumps([ids, locations, states, updated_after], sort_keys=True).encode()
        ).hexdigest()[:16]
        page, cursor = self._page(found, body.get("cursor"), limit, "_useq", scope)
        answer: Obj = {"counts": [self._public(c) for c in page]}
        if cursor:
            answer["cursor"] = cursor
        return json_response(answer)

    async def object_counts(
        self, request: web.Request, merchant: Merchant, _b: Obj
    ) -> web.Response:
        oid = request.match_info["id"]
        locations = [x for x in request.query.get("location_ids", "").split(",") if x]
        counts = [
            self._public(c)
            for c in merchant.counts.values()
            if c["catalog_object_id"] == oid
            and c["state"] == "IN_STOCK"
            and (not locations or c["location_id"] in locations)
        ]
        return json_response({"counts": counts})

    # -- webhooks --------------------------------------------------------------------------------
    def _notify(self, merchant_id: str, event_type: str, data: Obj) -> None:
        if not self.webhook_url or (
            self.webhook_events is not None and event_type not in self.webhook_events
        ):
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self.sender.spawn(self.emit(event_type, data, merchant_id=merchant_id))

    def event_body(
        self, event_type: str, data: Obj, *, merchant_id: str, created_at: float | None = None
    ) -> tuple[str, bytes]:
        event_id = str(uuid.uuid4())
        body = {
            "merchant_id": merchant_id,
            "type": event_type,
            "event_id": event_id,
            "created_at": rfc3339(self.clock.now() if created_at is None else created_at),
            "data": data,
        }
        return event_id, json.dumps(body, separators=(",", ":")).encode()

    async def emit(
        self,
        event_type: str,
        data: Obj,
        *,
        merchant_id: str = DEV_MERCHANT_ID,
        url: str | None = None,
        created_at: float | None = None,
        forge: bool = False,
    ) -> WebhookDelivery:
        """Post one signed event to `url` (default `webhook_url`); waits for the answer."""
        target = url or self.webhook_url
        if not target:
            raise RuntimeError("no webhook URL configured (webhook_url)")
        event_id, body = self.event_body(
            event_type, data, merchant_id=merchant_id, created_at=created_at
        )
        self._events[event_id] = (target, body, 0)
        return await self._post(target, body, 0, forge=forge)

    async def resend(self, event_id: str) -> WebhookDelivery:
        """Deliver an event again, byte for byte (Square retries the same way)."""
        target, body, retries = self._events[event_id]
        self._events[event_id] = (target, body, retries + 1)
        return await self._post(target, body, retries + 1)

    async def _post(
        self, url: str, body: bytes, retry: int, *, forge: bool = False
    ) -> WebhookDelivery:
        key = "forged-" + secrets.token_hex(8) if forge else self.signature_key
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: square_signature(key, url, body),
            "square-initial-delivery-timestamp": self._now(),
            "square-environment": "Sandbox",
        }
        if retry:
            headers["square-retry-number"] = str(retry)
            headers["square-retry-reason"] = "http_error"
        return await self.sender.post(url, body, headers)

    # -- counting for tests ------------------------------------------------------------------------
    def _refs_of(self, obj: Obj) -> set[str]:
        refs = {obj["_client_id"]} if obj.get("_client_id") else set()
        data = obj.get(obj["type"].lower() + "_data") or {}
        if data.get("sku"):
            refs.add(str(data["sku"]))
        return refs

    def live_objects(
        self, merchant_id: str = DEV_MERCHANT_ID, kind: str | None = None
    ) -> list[Obj]:
        """Live catalog objects (rendered), optionally of one type."""
        merchant = self.merchants[merchant_id]
        return [
            self._render(merchant, o)
            for o in sorted(merchant.catalog.values(), key=lambda o: o["_seq"])
            if not o["is_deleted"] and (kind is None or o["type"] == kind)
        ]

    def catalog_refs(self, merchant_id: str = DEV_MERCHANT_ID) -> Counter[str]:
        """How many live catalog objects carry each reference: a top-level object's `#client`
        id (without `#`), a variation's SKU."""
        merchant = self.merchants[merchant_id]
        counts: Counter[str] = Counter()
        for obj in merchant.catalog.values():
            if not obj["is_deleted"]:
                counts.update(self._refs_of(obj))
        return counts

    def customer_refs(self, merchant_id: str = DEV_MERCHANT_ID) -> Counter[str]:
        """How many live customers carry each `reference_id` and lower-case e-mail."""
        counts: Counter[str] = Counter()
        for customer in self.merchants[merchant_id].customers.values():
            if not customer["_deleted"]:
                refs = {customer.get("reference_id"), (customer.get("email_address") or "").lower()}
                counts.update(r for r in refs if r)
        return counts

    def count_ref(self, ref: str, merchant_id: str = DEV_MERCHANT_ID) -> int:
        """Live catalog objects plus live customers that carry `ref`."""
        return self.catalog_refs(merchant_id)[ref] + self.customer_refs(merchant_id)[ref]

    def duplicates(self, merchant_id: str = DEV_MERCHANT_ID) -> dict[str, int]:
        """References held by more than one live catalog object, or by more than one live
        customer (should be empty)."""
        found: dict[str, int] = {}
        for counts in (self.catalog_refs(merchant_id), self.customer_refs(merchant_id)):
            found.update({k: n for k, n in counts.items() if n > 1})
        return found

    def live_customers(self, merchant_id: str = DEV_MERCHANT_ID) -> list[Obj]:
        merchant = self.merchants[merchant_id]
        return [self._public(c) for c in merchant.customers.values() if not c["_deleted"]]

    # -- control API -----------------------------------------------------------------------------
    def _settings_json(self) -> dict[str, Any]:
        return {
            "application_id": self.application_id,
            "application_secret": self.application_secret,
            "signature_key": self.signature_key,
            "webhook_url": self.webhook_url,
            "webhook_events": sorted(self.webhook_events) if self.webhook_events else None,
            "rate_limit": self.limit.describe(),
            "serialize_catalog_writes": self.serialize_catalog_writes,
            "access_ttl_s": self.access_ttl_s,
            "refresh_ttl_s": self.refresh_ttl_s,
            "personal_access_token": self.personal_access_token,
            "merchant_id": DEV_MERCHANT_ID,
            "location_id": DEV_LOCATION_ID,
            "merchants": sorted(self.merchants),
            "idempotent_replays": self.replays.replayed,
        }

    def _configure_json(self, spec: dict[str, Any]) -> None:
        if "webhook_url" in spec:
            self.webhook_url = spec["webhook_url"] or None
        if "webhook_events" in spec:
            events = spec["webhook_events"]
            self.webhook_events = None if events is None else set(events)
        if "signature_key" in spec:
            self.signature_key = str(spec["signature_key"])
        if "rate_per_s" in spec or "burst" in spec:
            rate = spec.get("rate_per_s", self.limit.rate_per_s)
            self.limit.configure(
                None if rate is None else float(rate),
                None if spec.get("burst") is None else int(spec["burst"]),
            )
        if "serialize_catalog_writes" in spec:
            self.serialize_catalog_writes = bool(spec["serialize_catalog_writes"])
        if "access_ttl_s" in spec:
            self.access_ttl_s = float(spec["access_ttl_s"])
        if "refresh_ttl_s" in spec:
            self.refresh_ttl_s = float(spec["refresh_ttl_s"])

    async def _c_authorize(self, request: web.Request) -> web.Response:
        spec = await read_json_object(request)
        try:
            code = self.authorize(
                client_id=spec.get("client_id"),
                scopes=spec.get("scopes", ALL_SCOPES),
                redirect_uri=spec.get("redirect_uri", "http://127.0.0.1/oauth/callback"),
                code_challenge=spec.get("code_challenge"),
                merchant_id=spec.get("merchant_id", DEV_MERCHANT_ID),
            )
        except KeyError as exc:
            return json_response({"error": str(exc)}, 404)
        return json_response({"code": code})

    async def _c_objects(self, request: web.Request) -> web.Response:
        merchant_id = request.query.get("merchant_id", DEV_MERCHANT_ID)
        if merchant_id not in self.merchants:
            return json_response({"error": "no such merchant"}, 404)
        return json_response(self.live_objects(merchant_id, request.query.get("type")))

    async def _c_customers(self, request: web.Request) -> web.Response:
        merchant_id = request.query.get("merchant_id", DEV_MERCHANT_ID)
        if merchant_id not in self.merchants:
            return json_response({"error": "no such merchant"}, 404)
        return json_response(self.live_customers(merchant_id))

    async def _c_refs(self, request: web.Request) -> web.Response:
        merchant_id = request.query.get("merchant_id", DEV_MERCHANT_ID)
        if merchant_id not in self.merchants:
            return json_response({"error": "no such merchant"}, 404)
        return json_response(
            {
                "catalog": dict(self.catalog_refs(merchant_id)),
                "customers": dict(self.customer_refs(merchant_id)),
                "duplicates": self.duplicates(merchant_id),
            }
        )

    async def _c_grants(self, _request: web.Request) -> web.Response:
        now = self.clock.now()
        return json_response(
            {
                "access_tokens": [
                    {
                        "merchant_id": g.merchant_id,
                        "scopes": list(g.scopes),
                        "expires_at": g.expires_at,
                        "valid": not g.revoked and (g.expires_at is None or g.expires_at > now),
                    }
                    for g in self.access_tokens.values()
                ],
                "refresh_tokens": [
                    {
                        "merchant_id": g.merchant_id,
                        "pkce": g.pkce,
                        "expires_at": g.expires_at,
                        "valid": not (g.revoked or g.spent) and g.expires_at > now,
                    }
                    for g in self.refresh_tokens.values()
                ],
            }
        )

    async def _c_emit(self, request: web.Request) -> web.Response:
        spec = await read_json_object(request)
        try:
            delivery = await self.emit(
                spec["type"],
                spec.get("data") or {},
                merchant_id=spec.get("merchant_id", DEV_MERCHANT_ID),
                url=spec.get("url"),
                created_at=spec.get("created_at"),
                forge=bool(spec.get("forge", False)),
            )
        except RuntimeError as exc:
            return json_response({"error": str(exc)}, 409)
        return json_response(delivery.to_json())

    async def _c_resend(self, request: web.Request) -> web.Response:
        spec = await read_json_object(request)
        try:
            delivery = await self.resend(str(spec["event_id"]))
        except KeyError:
            return json_response({"error": "unknown event_id"}, 404)
        return json_response(delivery.to_json())

    async def _c_merchants(self, request: web.Request) -> web.Response:
        spec = await read_json_object(request)
        merchant = self.add_merchant(spec.get("merchant_id"), spec.get("name", "Venue"))
        return json_response({"merchant_id": merchant.id, "location_id": merchant.location_ids[0]})

    async def _c_revoke_merchant(self, request: web.Request) -> web.Response:
        spec = await read_json_object(request)
        return json_response(
            {"revoked": self.revoke_merchant(spec.get("merchant_id", DEV_MERCHANT_ID))}
        )

    def _extra_control(self, app: web.Application) -> None:
        app.router.add_post("/_standin/authorize", self._c_authorize)
        app.router.add_get("/_standin/objects", self._c_objects)
        app.router.add_get("/_standin/customers", self._c_customers)
        app.router.add_get("/_standin/refs", self._c_refs)
        app.router.add_get("/_standin/grants", self._c_grants)
        app.router.add_post("/_standin/webhooks", self._c_emit)
        app.router.add_post("/_standin/webhooks/resend", self._c_resend)
        app.router.add_post("/_standin/merchants", self._c_merchants)
        app.router.add_post("/_standin/revoke-merchant", self._c_revoke_merchant)

    def _routes(self, app: web.Application) -> None:
        op = self._op
        app.router.add_get("/oauth2/authorize", self._authorize)
        app.router.add_post("/oauth2/token", self._token)
        app.router.add_post("/oauth2/revoke", self._revoke)
        app.router.add_post("/oauth2/token/status", self._token_status)
        routes: list[tuple[str, str, str, str, Op, bool]] = [
            (
                "GET",
                "/v2/locations",
                "locations.list",
                "MERCHANT_PROFILE_READ",
                self.list_locations,
                False,
            ),
            (
                "GET",
                "/v2/locations/{id}",
                "locations.get",
                "MERCHANT_PROFILE_READ",
                self.get_location,
                False,
            ),
            (
                "GET",
                "/v2/merchants/{id}",
                "merchants.get",
                "MERCHANT_PROFILE_READ",
                self.get_merchant,
                False,
            ),
            (
                "POST",
                "/v2/catalog/batch-upsert",
                "catalog.batch_upsert",
                "ITEMS_WRITE",
                self.batch_upsert,
                True,
            ),
            (
                "POST",
                "/v2/catalog/object",
                "catalog.upsert_object",
                "ITEMS_WRITE",
                self.upsert_object,
                True,
            ),
            (
                "GET",
                "/v2/catalog/object/{id}",
                "catalog.get_object",
                "ITEMS_READ",
                self.get_object,
                False,
            ),
            (
                "DELETE",
                "/v2/catalog/object/{id}",
                "catalog.delete_object",
                "ITEMS_WRITE",
                self.delete_object,
                True,
            ),
            (
                "POST",
                "/v2/catalog/batch-delete",
                "catalog.batch_delete",
                "ITEMS_WRITE",
                self.batch_delete,
                True,
            ),
            (
                "POST",
                "/v2/catalog/batch-retrieve",
                "catalog.batch_retrieve",
                "ITEMS_READ",
                self.batch_retrieve,
                False,
            ),
            ("GET", "/v2/catalog/list", "catalog.list", "ITEMS_READ", self.list_catalog, False),
            (
                "POST",
                "/v2/catalog/search",
                "catalog.search",
                "ITEMS_READ",
                self.search_catalog,
                False,
            ),
            ("GET", "/v2/catalog/info", "catalog.info", "ITEMS_READ", self.catalog_info, False),
            (
                "GET",
                "/v2/customers",
                "customers.list",
                "CUSTOMERS_READ",
                self.list_customers,
                False,
            ),
            (
                "POST",
                "/v2/customers",
                "customers.create",
                "CUSTOMERS_WRITE",
                self.create_customer,
                False,
            ),
            (
                "POST",
                "/v2/customers/search",
                "customers.search",
                "CUSTOMERS_READ",
                self.search_customers,
                False,
            ),
            (
                "POST",
                "/v2/customers/bulk-create",
                "customers.bulk_create",
                "CUSTOMERS_WRITE",
                self.bulk_create_customers,
                False,
            ),
            (
                "POST",
                "/v2/customers/bulk-update",
                "customers.bulk_update",
                "CUSTOMERS_WRITE",
                self.bulk_update_customers,
                False,
            ),
            (
                "POST",
                "/v2/customers/bulk-retrieve",
                "customers.bulk_retrieve",
                "CUSTOMERS_READ",
                self.bulk_retrieve_customers,
                False,
            ),
            (
                "POST",
                "/v2/customers/bulk-delete",
                "customers.bulk_delete",
                "CUSTOMERS_WRITE",
                self.bulk_delete_customers,
                False,
            ),
            (
                "GET",
                "/v2/customers/{id}",
                "customers.get",
                "CUSTOMERS_READ",
                self.get_customer,
                False,
            ),
            (
                "PUT",
                "/v2/customers/{id}",
                "customers.update",
                "CUSTOMERS_WRITE",
                self.update_customer,
                False,
            ),
            (
                "DELETE",
                "/v2/customers/{id}",
                "customers.delete",
                "CUSTOMERS_WRITE",
                self.delete_customer,
                False,
            ),
            (
                "POST",
                "/v2/inventory/batch-change",
                "inventory.batch_change",
                "INVENTORY_WRITE",
                self.batch_change,
                False,
            ),
            (
                "POST",
                "/v2/inventory/changes/batch-create",
                "inventory.batch_change",
                "INVENTORY_WRITE",
                self.batch_change,
                False,
            ),
            (
                "POST",
                "/v2/inventory/batch-retrieve-counts",
                "inventory.batch_counts",
                "INVENTORY_READ",
                self.batch_counts,
                False,
            ),
            (
                "POST",
                "/v2/inventory/counts/batch-retrieve",
                "inventory.batch_counts",
                "INVENTORY_READ",
                self.batch_counts,
                False,
            ),
            (
                "GET",
                "/v2/inventory/{id}",
                "inventory.get",
                "INVENTORY_READ",
                self.object_counts,
                False,
            ),
        ]
        for method, path, name, scope, handler, catalog_write in routes:
            app.router.add_route(
                method, path, op(name, scope, handler, catalog_write=catalog_write)
            )
        app.router.add_route("*", "/v2/{tail:.*}", self._unknown)

    async def _unknown(self, request: web.Request) -> web.Response:
        return not_found(f"This stand-in does not serve {request.method} {request.path}")


class _CustomerMissing(Exception):
    def __init__(self, customer_id: str) -> None:
        super().__init__(customer_id)
        self.customer_id = customer_id

    def item(self) -> Obj:
        return {
            "category": "INVALID_REQUEST_ERROR",
            "code": "NOT_FOUND",
            "detail": f"Customer with ID `{self.customer_id}` not found.",
        }

    def response(self) -> web.Response:
        return json_response({"errors": [self.item()]}, 404)


def _decimal_text(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


def _text_filter(value: object, rule: object) -> bool:
    if not isinstance(rule, dict):
        return True
    text = str(value or "")
    if "exact" in rule:
        return text.lower() == str(rule["exact"]).lower()
    if "fuzzy" in rule:
        return str(rule["fuzzy"]).lower() in text.lower()
    return True


def _range_filter(value: str, rule: object) -> bool:
    if not isinstance(rule, dict):
        return True
    at = parse_rfc3339(value)
    if rule.get("start_at") and at < parse_rfc3339(str(rule["start_at"])):
        return False
    return not (rule.get("end_at") and at > parse_rfc3339(str(rule["end_at"])))


def _customer_matches(customer: Obj, filters: Obj) -> bool:
    return (
        _text_filter(customer.get("email_address"), filters.get("email_address"))
        and _text_filter(customer.get("phone_number"), filters.get("phone_number"))
        and _text_filter(customer.get("reference_id"), filters.get("reference_id"))
        and _range_filter(customer["created_at"], filters.get("created_at"))
        and _range_filter(customer["updated_at"], filters.get("updated_at"))
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meshdev.standins.square",
        description="A Square OAuth / Catalog / Customers / Inventory stand-in (dev/test only).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--application-id", default=DEV_APPLICATION_ID)
    parser.add_argument("--application-secret", default=DEV_APPLICATION_SECRET)
    parser.add_argument("--signature-key", default=DEV_SIGNATURE_KEY)
    parser.add_argument("--webhook-url", help="where webhook notifications are posted")
    parser.add_argument("--rate-per-s", type=float, default=45.0, help="0: unlimited")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    server = SquareServer(
        application_id=args.application_id,
        application_secret=args.application_secret,
        signature_key=args.signature_key,
        webhook_url=args.webhook_url,
        rate_per_s=args.rate_per_s or None,
    )
    web.run_app(
        server.app,
        host=args.host,
        port=args.port,
        access_log=None,
        shutdown_timeout=5.0,
        print=lambda _: logger.info("square stand-in on http://%s:%d", args.host, args.port),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
