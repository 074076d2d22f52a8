"""A local stand-in for Intuit QuickBooks Online (OAuth 2 with rotating refresh tokens, the
Accounting API v3 the integration service uses, and signed webhooks), for `make run` and tests
only. The official `intuit-oauth` and `python-quickbooks` SDKs talk to it unchanged:

    auth = AuthClient(client_id, client_secret, redirect_uri,
                      environment=server.discovery_url)       # a discovery document URL
    auth.get_bearer_token(code, realm_id=realm_id)            # or auth.refresh() / auth.revoke()
    qb = QuickBooks(auth_client=auth, refresh_token=auth.refresh_token,
                    company_id=realm_id, minorversion=75)
    qb.api_url_v3 = server.url + "/v3"                        # was https://quickbooks.api.intuit.com/v3
    Customer.filter(DisplayName="Ada", qb=qb)

`AuthClient`'s `environment` accepts a discovery document URL in place of `sandbox` /
`production` (it GETs it at construction): this stand-in serves one at
`/.well-known/openid_configuration` naming its own endpoints, so the SDK needs no patching.
python-quickbooks picks `api_url_v3` for any environment other than `sandbox`.

OAuth, as Intuit's (developer.intuit.com, "OAuth 2.0"):

* `GET /connect/oauth2?client_id&response_type=code&scope&redirect_uri&state` stands for the
  user's consent: 302 to `redirect_uri?code=…&state=…&realmId=…` (`&deny=1` →
  `error=access_denied`; `&realm_id=R` picks the company, default `DEV_REALM_ID`).
  `authorize(...)` does the same from Python. Codes are single-use and live 5 minutes.
* `POST /oauth2/v1/tokens/bearer`, form-encoded, `Authorization: Basic base64(id:secret)`:
  `authorization_code` (with the same `redirect_uri`) and `refresh_token`. Answer:
  `{"token_type": "bearer", "access_token", "expires_in": 3600, "refresh_token",
  "x_refresh_token_expires_in"}`. A wrong client → 401 `{"error": "invalid_client"}`; a bad,
  used, expired or revoked code or refresh token → 400 `{"error": "invalid_grant"}`.
* Refresh tokens live 100 days (never beyond 5 years from the authorization) and ROTATE: every
  refresh answers a new refresh token. The one just used keeps working for
  `rotation_grace_s` (default 60 s; answering a new access token and the newest refresh token
  of that authorization, so a racing replica loses nothing), then `invalid_grant`. Access
  tokens live 1 hour; an older one works until its own expiry.
* `POST /oauth2/v1/tokens/revoke` (Basic auth, JSON `{"token": refresh or access token}`) ends
  the whole authorization: every token of it stops working.
* `stats.calls["oauth.refresh"]` counts refresh requests (whatever their outcome), so a test can
  prove "exactly one refresh" across replicas.

The API under `/v3/company/{realmId}/…` needs `Authorization: Bearer <access token>` of that
company (expired/unknown → 401 `AuthenticationFailed` 3200; another company's → 403 3100). It
answers what python-quickbooks sends (`?minorversion=…`, JSON bodies, `?requestid=…`):

* `companyinfo/{realmId}` (the cheap TestConnection call); `GET {entity}/{id}`;
* `POST {entity}` for Item, Customer, SalesReceipt and RefundReceipt: create without `Id`,
  update with `Id` + `SyncToken` (stale → 400 `Stale Object Error` 5010; `"sparse": true`
  merges, otherwise the object is replaced), `?operation=delete` for the receipts. Checked as
  QuickBooks checks them: unique Item `Name` and Customer `DisplayName` (6240 "Duplicate Name
  Exists Error"), required `IncomeAccountRef` for items and `DepositToAccountRef` for refund
  receipts (2020), references that must exist (2500), `Amount` = `Qty` * `UnitPrice` (6070),
  `DocNumber` ≤ 21 characters (2050). `TotalAmt` is computed. Seeded accounts: 1 Services
  (income), 2 Sales of Product Income, 3 Undeposited Funds, 4 Checking.
* `query` (POST `application/text` body or GET `?query=`): `SELECT * | COUNT(*) FROM Entity
  [WHERE f = 'v' AND f IN (…) AND f LIKE '%v%' AND f > 'v' …] [ORDER BY|ORDERBY f [ASC|DESC]]
  [STARTPOSITION n] [MAXRESULTS n ≤ 1000]` → `{"QueryResponse": {"Item": [...],
  "startPosition", "maxResults"}}` (`{"totalCount": n}` for COUNT);
* `batch`: ≤ 30 `BatchItemRequest`s (create / update / delete / Query), answered in order with
  a `Fault` per failed item;
* `cdc?entities=A,B&changedSince=…` (≤ 30 days back): changes since then, deleted ones as
  `{"Id", "status": "Deleted"}`.

`requestid`, as Intuit's: a POST with a `requestid` already seen for the company gets the first
answer again, whatever its body (so a retried create creates nothing twice).

Limits per company (Intuit's): 500 requests per minute (a sliding minute; batch included) and 10
in flight → 429 with a `{"fault": {"error": [{"message": "message=ThrottleExceeded;
errorCode=003001; statusCode=429", "code": "3001"}], "type": "SERVICE"}}` body; batch requests
also at most 40 per minute. Intuit documents no rate-limit headers: this stand-in adds
`Retry-After` (whole seconds until the window frees a slot), which a client may honour but
should not need. Scripted faults: `fail_next` (5xx `SystemFault` 10000), `throttle_next`,
`slow_next`, `latency_s`.

Webhooks: with `webhook_url` set, every change is notified, signed

    intuit-signature: base64(HMAC-SHA256(verifier token, raw body))

in the CloudEvents format Intuit moved to in 2025-26 (a JSON array of `{"specversion": "1.0",
"id", "source", "type": "qbo.customer.created.v1", "datacontenttype", "time",
"intuitentityid", "intuitaccountid", "data": {}}`; events carry ids, never the record), or
with `webhook_format="legacy"` the older `{"eventNotifications": [{"realmId",
"dataChangeEvent": {"entities": [{"name", "id", "operation", "lastUpdated"}]}}]}`. `emit(...)`
posts one on demand (`forge=True` signs with a wrong token), `resend(event_id)` replays one.

Counting for tests: `receipt_refs()` counts live sales and refund receipts by `DocNumber` and
`PrivateNote`, `duplicates()` lists references held twice; `stats` counts calls and 429s.

As a process (`meshdev.embedded.QuickBooksStandIn`): `python -m meshdev.standins.quickbooks
--port N [--webhook-url URL]`; control under `/_standin/` (see `apibase`, plus `authorize`,
`grants`, `entities`, `refs`, `webhooks`, `webhooks/resend`, `realms`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import web

from meshdev.standins.apibase import (
    ApiStandIn,
    AuthCodes,
    InFlight,
    ReplayStore,
    SlidingWindow,
    WebhookDelivery,
    json_response,
    new_token,
    parse_rfc3339,
    read_json_object,
)

__all__ = [
    "ACCESS_TTL_S",
    "DEV_CLIENT_ID",
    "DEV_CLIENT_SECRET",
    "DEV_REALM_ID",
    "DEV_VERIFIER_TOKEN",
    "REFRESH_TTL_S",
    "SIGNATURE_HEADER",
    "QuickBooksServer",
    "intuit_signature",
    "main",
]

logger = logging.getLogger(__name__)

DEV_CLIENT_ID = "ABmeshdevQuickBooksDevClientId0000000000000000000"
"""The app `make run` and tests configure (production settings refuse it)."""
DEV_CLIENT_SECRET = "meshdev-dev-only-quickbooks-client-secret"  # noqa: S105 - dev only
DEV_VERIFIER_TOKEN = "meshdev-dev-only-intuit-webhook-verifier-token"  # noqa: S105 - dev only
DEV_REALM_ID = "9341450000000001"
SIGNATURE_HEADER = "intuit-signature"
ACCOUNTING_SCOPE = "com.intuit.quickbooks.accounting"
ACCESS_TTL_S = 3600.0
REFRESH_TTL_S = 100 * 86400.0
MAX_AUTHORIZATION_S = 5 * 365 * 86400.0
ROTATION_GRACE_S = 60.0
MAX_BATCH_ITEMS = 30
MAX_RESULTS = 1000
CDC_MAX_AGE_S = 30 * 86400.0
WRITABLE = ("Item", "Customer", "SalesReceipt", "RefundReceipt")
ENTITIES = {
    name.lower(): name
    for name in ("Item", "Customer", "SalesReceipt", "RefundReceipt", "Account", "CompanyInfo")
}
_RECEIPTS = ("SalesReceipt", "RefundReceipt")
_CENT = Decimal("0.01")

Obj = dict[str, Any]


def intuit_signature(verifier_token: str, body: bytes) -> str:
    """`intuit-signature`: base64(HMAC-SHA256(verifier token, raw body))."""
    mac = hmac.new(verifier_token.encode(), body, hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def qbo_time(epoch: float) -> str:
    """`2026-01-01T10:00:00+00:00`, QuickBooks' timestamp shape."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _encode(obj: object) -> object:
    if isinstance(obj, Decimal):
        # Money has two places; float's shortest repr writes it back exactly.
        return int(obj) if obj == obj.to_integral_value() else float(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def qbo_json(obj: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(obj, default=_encode).encode(),
        content_type="application/json",
        headers=headers,
    )


class QboFault(Exception):
    """A request error in QuickBooks' words (`Fault.Error[]`); 400 unless said otherwise."""

    def __init__(
        self,
        message: str,
        code: str,
        detail: str = "",
        *,
        element: str = "",
        kind: str = "ValidationFault",
        status: int = 400,
    ) -> None:
        super().__init__(message)
        self.message, self.code, self.detail = message, code, detail or message
        self.element, self.kind, self.status = element, kind, status

    def fault(self) -> Obj:
        error: Obj = {"Message": self.message, "Detail": self.detail, "code": self.code}
        if self.element:
            error["element"] = self.element
        return {"Error": [error], "type": self.kind}


def _strip_empty(value: Any) -> Any:
    """The SDK sends unset fields as "" / [] / refs with empty name and type: drop them."""
    if isinstance(value, dict):
        cleaned = {k: _strip_empty(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v not in ("", [], {}, None)}
    if isinstance(value, list):
        return [_strip_empty(v) for v in value]
    return value


def _decimal(value: object, element: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise QboFault("Invalid Number", "2040", f"{element}: {value}", element=element) from None
    if not number.is_finite():
        raise QboFault("Invalid Number", "2040", f"{element}: {value}", element=element)
    return number


def _ref(obj: Obj, name: str) -> str | None:
    ref = obj.get(name)
    if isinstance(ref, dict) and ref.get("value") not in (None, ""):
        return str(ref["value"])
    return None


# -- grants -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Authorization:
    """One connection of a company to the app: its chain of tokens."""

    id: str
    realm_id: str
    client_id: str
    scopes: tuple[str, ...]
    created_at: float
    latest_refresh: str = ""
    revoked: bool = False


@dataclass(slots=True)
class QboAccessToken:
    token: str
    authorization: Authorization
    expires_at: float


@dataclass(slots=True)
class QboRefreshToken:
    token: str
    authorization: Authorization
    expires_at: float
    rotated_at: float | None = None
    """When it was used (and replaced); usable again only within the grace."""


@dataclass(slots=True)
class Company:
    """A QuickBooks company (realm) and its records."""

    realm_id: str
    name: str
    entities: dict[str, dict[str, Obj]] = field(default_factory=dict)
    next_id: int = 1


# -- the query language ---------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:\\.|[^'\\])*')|(?P<op><=|>=|!=|<>|=|<|>)|(?P<punct>[(),*])"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.]*)|(?P<num>-?\d+(?:\.\d+)?))",
)
_CLAUSE_WORDS = ("ORDER", "ORDERBY", "STARTPOSITION", "MAXRESULTS")


@dataclass(slots=True)
class Query:
    entity: str
    count: bool
    conditions: list[tuple[str, str, list[str]]]
    order_by: str | None = None
    descending: bool = False
    start: int = 1
    max_results: int = 100


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.strip().rstrip(";")
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            if text[pos:].strip() == "":
                break
            raise QboFault("Error parsing query", "4000", f"near: {text[pos : pos + 20]}")
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "str":
            value = value[1:-1].replace("\\'", "'").replace("\\\\", "\\")
        out.append((kind, value))
        pos = match.end()
    return out


def parse_query(text: str) -> Query:
    """QuickBooks' SQL subset (module doc)."""
    toks = _tokens(text)
    i = 0

    def word(expected: str | None = None) -> str:
        nonlocal i
        if i >= len(toks):
            raise QboFault("Error parsing query", "4000", f"unexpected end; expected {expected}")
        _kind, value = toks[i]
        if expected is not None and value.upper() != expected:
            raise QboFault("Error parsing query", "4000", f"expected {expected}, found {value}")
        i += 1
        return value

    word("SELECT")
    count = False
    if i + 3 < len(toks) and toks[i][1].upper() == "COUNT" and toks[i + 1][1] == "(":
        count = True
        while word() != ")":
            pass
    else:
        while i < len(toks) and toks[i][1].upper() != "FROM":
            i += 1
    word("FROM")
    entity_word = word()
    entity = ENTITIES.get(entity_word.lower())
    if entity is None:
        raise QboFault("Invalid query", "4000", f"unknown entity {entity_word}")
    query = Query(entity=entity, count=count, conditions=[])
    if i < len(toks) and toks[i][1].upper() == "WHERE":
        i += 1
        while True:
            name = word()
            kind, op = toks[i] if i < len(toks) else ("", "")
            if kind == "op":
                i += 1
                query.conditions.append((name, op, [word()]))
            elif op.upper() in ("IN", "LIKE"):
                i += 1
                if op.upper() == "LIKE":
                    query.conditions.append((name, "LIKE", [word()]))
                else:
                    word("(")
                    values = [word()]
                    while toks[i][1] == ",":
                        i += 1
                        values.append(word())
                    word(")")
                    query.conditions.append((name, "IN", values))
            else:
                raise QboFault("Error parsing query", "4000", f"bad condition on {name}")
            if i < len(toks) and toks[i][1].upper() == "AND":
                i += 1
                continue
            break
    while i < len(toks):
        keyword = word().upper()
        if keyword in ("ORDER", "ORDERBY"):
            if keyword == "ORDER":
                word("BY")
            query.order_by = word()
            if i < len(toks) and toks[i][1].upper() in ("ASC", "DESC"):
                query.descending = word().upper() == "DESC"
        elif keyword == "STARTPOSITION":
            query.start = max(1, int(word()))
        elif keyword == "MAXRESULTS":
            query.max_results = int(word())
            if not 1 <= query.max_results <= MAX_RESULTS:
                raise QboFault("Invalid query", "4000", f"MAXRESULTS must be 1..{MAX_RESULTS}")
        else:
            raise QboFault("Error parsing query", "4000", f"unexpected {keyword}")
    return query


def _field(obj: Obj, path: str) -> object:
    value: object = obj
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    if isinstance(value, dict) and "value" in value:
        return value["value"]  # a reference compares by its id
    return value


def _compare(actual: object, op: str, wanted: str) -> bool:
    if actual is None:
        return op in ("!=", "<>")
    if isinstance(actual, bool):
        left: Any = str(actual).lower()
        right: Any = wanted.lower()
    else:
        left, right = str(actual), wanted
        try:
            left, right = Decimal(left), Decimal(right)
        except InvalidOperation:
            try:
                left, right = parse_rfc3339(str(actual)), parse_rfc3339(wanted)
            except ValueError:
                left, right = str(actual).lower(), wanted.lower()
    if op == "=":
        return bool(left == right)
    if op in ("!=", "<>"):
        return bool(left != right)
    if op == "<":
        return bool(left < right)
    if op == ">":
        return bool(left > right)
    if op == "<=":
        return bool(left <= right)
    return bool(left >= right)


def _matches(obj: Obj, conditions: list[tuple[str, str, list[str]]]) -> bool:
    for name, op, values in conditions:
        actual = _field(obj, name)
        if op == "IN":
            if not any(_compare(actual, "=", v) for v in values):
                return False
        elif op == "LIKE":
            pattern = "^" + ".*".join(re.escape(p) for p in values[0].split("%")) + "$"
            if actual is None or not re.match(pattern, str(actual), re.IGNORECASE | re.DOTALL):
                return False
        elif not _compare(actual, op, values[0]):
            return False
    return True


# -- the server -------------------------------------------------------------------------------


Handler = Callable[[web.Request, Company, bytes], Awaitable[web.Response]]


class QuickBooksServer(ApiStandIn):
    """The stand-in (module doc) served in the running event loop; `url` once started."""

    name = "quickbooks"
    user_agent = "Intuit-Webhooks"

    def __init__(
        self,
        *,
        client_id: str = DEV_CLIENT_ID,
        client_secret: str = DEV_CLIENT_SECRET,
        verifier_token: str = DEV_VERIFIER_TOKEN,
        webhook_url: str | None = None,
        webhook_format: str = "cloudevents",
        per_minute: int | None = 500,
        max_in_flight: int | None = 10,
        batch_per_minute: int | None = 40,
        rotation_grace_s: float = ROTATION_GRACE_S,
        access_ttl_s: float = ACCESS_TTL_S,
        refresh_ttl_s: float = REFRESH_TTL_S,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if webhook_format not in ("cloudevents", "legacy"):
            raise ValueError("webhook_format is cloudevents or legacy")
        self.client_id = client_id
        self.client_secret = client_secret
        self.verifier_token = verifier_token
        self.webhook_url = webhook_url
        self.webhook_format = webhook_format
        self.per_minute = per_minute
        self.batch_per_minute = batch_per_minute
        self.in_flight = InFlight(max_in_flight)
        self.rotation_grace_s = rotation_grace_s
        self.access_ttl_s = access_ttl_s
        self.refresh_ttl_s = refresh_ttl_s
        self.replays = ReplayStore()
        super().__init__(host=host, port=port)
        self.codes = AuthCodes(self.clock)
        self._reset_data()

    # -- state -----------------------------------------------------------------------------------
    def _reset_data(self) -> None:
        self.companies: dict[str, Company] = {}
        self.authorizations: dict[str, Authorization] = {}
        self.access_tokens: dict[str, QboAccessToken] = {}
        self.refresh_tokens: dict[str, QboRefreshToken] = {}
        self.windows: dict[str, SlidingWindow] = {}
        self.batch_windows: dict[str, SlidingWindow] = {}
        self.codes.clear()
        self.replays.clear()
        self._events: dict[str, tuple[str, bytes]] = {}
        self._seq = 0
        self.add_company(DEV_REALM_ID, "Meshdev Venue LLC")

    def add_company(self, realm_id: str | None = None, name: str = "Venue") -> Company:
        """A new QuickBooks company with the seeded accounts."""
        company = Company(realm_id or str(9341450000000000 + secrets.randbelow(10**9)), name)
        self.companies[company.realm_id] = company
        now = qbo_time(self.clock.now())
        company.entities = {entity: {} for entity in ENTITIES.values()}
        for account, kind, sub in (
            ("Services", "Income", "ServiceFeeIncome"),
            ("Sales of Product Income", "Income", "SalesOfProductIncome"),
            ("Undeposited Funds", "Other Current Asset", "UndepositedFunds"),
            ("Checking", "Bank", "Checking"),
        ):
            self._store(
                company,
                "Account",
                {
                    "Name": account,
                    "AccountType": kind,
                    "AccountSubType": sub,
                    "Classification": "Revenue" if kind == "Income" else "Asset",
                    "Active": True,
                    "CurrentBalance": 0,
                },
                now,
            )
        company.entities["CompanyInfo"][company.realm_id] = {
            "Id": company.realm_id,
            "CompanyName": name,
            "LegalName": name,
            "Country": "US",
            "SyncToken": "0",
            "domain": "QBO",
            "MetaData": {"CreateTime": now, "LastUpdatedTime": now},
            "_seq": self._next_seq(),
            "_deleted": False,
        }
        return company

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _store(self, company: Company, entity: str, body: Obj, now: str) -> Obj:
        record: Obj = {
            **body,
            "Id": str(company.next_id),
            "SyncToken": "0",
            "domain": "QBO",
            "sparse": False,
            "MetaData": {"CreateTime": now, "LastUpdatedTime": now},
            "_seq": self._next_seq(),
            "_deleted": False,
        }
        company.next_id += 1
        company.entities[entity][record["Id"]] = record
        return record

    @property
    def discovery_url(self) -> str:
        """What `AuthClient(..., environment=...)` takes to use this stand-in."""
        return self.url + "/.well-known/openid_configuration"

    # -- OAuth -----------------------------------------------------------------------------------
    async def _discovery(self, request: web.Request) -> web.Response:
        base = str(request.url.origin())
        return json_response(
            {
                "issuer": base,
                "authorization_endpoint": base + "/connect/oauth2",
                "token_endpoint": base + "/oauth2/v1/tokens/bearer",
                "userinfo_endpoint": base + "/v1/openid_connect/userinfo",
                "revocation_endpoint": base + "/oauth2/v1/tokens/revoke",
                "jwks_uri": base + "/oauth2/v1/keys",
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "scopes_supported": [ACCOUNTING_SCOPE, "openid", "profile", "email"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            }
        )

    def authorize(
        self,
        *,
        client_id: str | None = None,
        scopes: Iterable[str] = (ACCOUNTING_SCOPE,),
        redirect_uri: str = "http://127.0.0.1/oauth/callback",
        realm_id: str = DEV_REALM_ID,
    ) -> str:
        """The user connects company `realm_id`: an authorization code."""
        if realm_id not in self.companies:
            raise KeyError(f"no company {realm_id}")
        return self.codes.issue(
            client_id=client_id or self.client_id,
            redirect_uri=redirect_uri,
            scopes=tuple(scopes),
            account=realm_id,
            prefix="AB11",
        ).code

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        if query.get("client_id") != self.client_id:
            return web.Response(status=400, text="invalid client_id")
        redirect_uri = query.get("redirect_uri", "")
        if not redirect_uri:
            return web.Response(status=400, text="redirect_uri is required")
        realm_id = query.get("realm_id", DEV_REALM_ID)
        scopes = tuple(query.get("scope", "").split())
        params: dict[str, str]
        if query.get("deny"):
            params = {"error": "access_denied"}
        elif query.get("response_type") != "code" or ACCOUNTING_SCOPE not in scopes:
            params = {"error": "invalid_request" if scopes else "invalid_scope"}
        elif realm_id not in self.companies:
            params = {"error": "invalid_request"}
        else:
            code = self.authorize(scopes=scopes, redirect_uri=redirect_uri, realm_id=realm_id)
            params = {"code": code, "realmId": realm_id}
        if "state" in query:
            params["state"] = query["state"]
        sep = "&" if "?" in redirect_uri else "?"
        raise web.HTTPFound(redirect_uri + sep + urlencode(params))

    def _client_ok(self, request: web.Request) -> bool:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            raw = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        client_id, _, secret = raw.partition(":")
        return hmac.compare_digest(client_id, self.client_id) and hmac.compare_digest(
            secret, self.client_secret
        )

    def _issue_access(self, authorization: Authorization) -> QboAccessToken:
        access = QboAccessToken(
            new_token("eyJmeshdev.", 48), authorization, self.clock.now() + self.access_ttl_s
        )
        self.access_tokens[access.token] = access
        return access

    def _issue_refresh(self, authorization: Authorization) -> QboRefreshToken:
        now = self.clock.now()
        hard_end = authorization.created_at + MAX_AUTHORIZATION_S
        refresh = QboRefreshToken(
            "AB11" + secrets.token_hex(24), authorization, min(now + self.refresh_ttl_s, hard_end)
        )
        self.refresh_tokens[refresh.token] = refresh
        authorization.latest_refresh = refresh.token
        return refresh

    def _token_answer(self, access: QboAccessToken, refresh: QboRefreshToken) -> web.Response:
        now = self.clock.now()
        return json_response(
            {
                "token_type": "bearer",
                "access_token": access.token,
                "expires_in": round(access.expires_at - now),
                "refresh_token": refresh.token,
                "x_refresh_token_expires_in": round(refresh.expires_at - now),
            },
            headers={"intuit_tid": str(uuid.uuid4())},
        )

    async def _token(self, request: web.Request) -> web.Response:
        raw = await request.read()
        form = dict(parse_qsl(raw.decode(errors="replace"), keep_blank_values=True))
        grant_type = form.get("grant_type")
        if grant_type == "refresh_token":
            self.stats.calls["oauth.refresh"] += 1
        elif grant_type == "authorization_code":
            self.stats.calls["oauth.code_exchange"] += 1
        if not self._client_ok(request):
            return json_response({"error": "invalid_client"}, 401)
        invalid_grant = json_response({"error": "invalid_grant"}, 400)
        now = self.clock.now()
        if grant_type == "authorization_code":
            redeemed = self.codes.redeem(
                form.get("code", ""), self.client_id, form.get("redirect_uri", "")
            )
            if isinstance(redeemed, str):
                return invalid_grant
            authorization = Authorization(
                id=str(uuid.uuid4()),
                realm_id=redeemed.account,
                client_id=self.client_id,
                scopes=redeemed.scopes,
                created_at=now,
            )
            self.authorizations[authorization.id] = authorization
            return self._token_answer(
                self._issue_access(authorization), self._issue_refresh(authorization)
            )
        if grant_type == "refresh_token":
            old = self.refresh_tokens.get(form.get("refresh_token", ""))
            if old is None or old.authorization.revoked or old.expires_at <= now:
                return invalid_grant
            authorization = old.authorization
            if old.rotated_at is not None:
                if now - old.rotated_at > self.rotation_grace_s:
                    return invalid_grant
                newest = self.refresh_tokens[authorization.latest_refresh]
                return self._token_answer(self._issue_access(authorization), newest)
            old.rotated_at = now
            return self._token_answer(
                self._issue_access(authorization), self._issue_refresh(authorization)
            )
        return json_response({"error": "unsupported_grant_type"}, 400)

    def revoke_authorization(self, authorization: Authorization) -> None:
        authorization.revoked = True

    async def _revoke(self, request: web.Request) -> web.Response:
        self.stats.calls["oauth.revoke"] += 1
        if not self._client_ok(request):
            return json_response({"error": "invalid_client"}, 401)
        try:
            body = await read_json_object(request)
        except ValueError:
            return json_response({"error": "invalid_request"}, 400)
        token = str(body.get("token", ""))
        found = self.refresh_tokens.get(token) or self.access_tokens.get(token)
        if found is not None:
            self.revoke_authorization(found.authorization)
        return web.Response(status=200)

    def revoke_realm(self, realm_id: str) -> int:
        """The user disconnects the app in QuickBooks: every authorization of the company ends."""
        ended = 0
        for authorization in self.authorizations.values():
            if authorization.realm_id == realm_id and not authorization.revoked:
                authorization.revoked = True
                ended += 1
        return ended

    # -- the API dispatcher ----------------------------------------------------------------------
    @staticmethod
    def _auth_fault(status: int, code: str, message: str, detail: str) -> web.Response:
        fault = {"error": [{"message": message, "detail": detail, "code": code}]}
        return qbo_json(
            {"fault": {**fault, "type": "AUTHENTICATION"}, "time": qbo_time_now()}, status
        )

    def _throttled(self, retry_after_s: float) -> web.Response:
        error = {
            "message": "message=ThrottleExceeded; errorCode=003001; statusCode=429",
            "detail": "The request limit was reached.",
            "code": "3001",
        }
        return qbo_json(
            {"fault": {"error": [error], "type": "SERVICE"}, "time": qbo_time_now()},
            429,
            {"Retry-After": str(max(1, math.ceil(retry_after_s)))},
        )

    def _window(
        self, store: dict[str, SlidingWindow], realm_id: str, limit: int | None
    ) -> SlidingWindow:
        window = store.get(realm_id)
        if window is None or window.limit != limit:
            window = store[realm_id] = SlidingWindow(limit, 60.0)
        return window

    async def api(self, request: web.Request) -> web.StreamResponse:
        realm_id = request.match_info["realm"]
        tail = request.match_info["tail"].strip("/")
        op = self._op_name(request.method, tail, request.query.get("operation"))
        self.stats.calls[op] += 1
        raw = await request.read()
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        access = self.access_tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        now = self.clock.now()
        if access is None or access.authorization.revoked or access.expires_at <= now:
            self.stats.unauthorized += 1
            detail = "Token expired" if access is not None else "Token invalid"
            return self._auth_fault(
                401,
                "3200",
                "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                detail,
            )
        company = self.companies.get(realm_id)
        if company is None or access.authorization.realm_id != realm_id:
            self.stats.unauthorized += 1
            return self._auth_fault(
                403,
                "3100",
                "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403",
                "The app is not authorized for this company.",
            )
        fault, delay = self.next_fault()
        if fault is not None:
            if fault.status == 429:
                return self._throttled(float(fault.retry_after or 1))
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else None
            system = QboFault(
                "An application error has occurred while processing your request",
                "10000",
                "System Failure Error: scripted fault",
                kind="SystemFault",
            )
            return qbo_json(
                {"Fault": system.fault(), "time": qbo_time_now()}, fault.status, headers
            )
        with self.in_flight.enter(realm_id) as admitted:
            if not admitted:
                self.stats.concurrency_limited += 1
                return self._throttled(1.0)
            decision = self._window(self.windows, realm_id, self.per_minute).take()
            if decision.allowed and op == "batch":
                decision = self._window(self.batch_windows, realm_id, self.batch_per_minute).take()
            if not decision.allowed:
                self.stats.rate_limited += 1
                return self._throttled(decision.retry_after_s)
            if delay > 0:
                await asyncio.sleep(delay)
            request_id = request.query.get("requestid")
            if request.method == "POST" and request_id:
                outcome = self.replays.begin(realm_id, request_id, b"")
                if isinstance(outcome, tuple):
                    return web.Response(
                        status=outcome[0], body=outcome[1], content_type="application/json"
                    )
                if outcome != "new":
                    return self._throttled(1.0)  # the first request with this id still runs
                try:
                    response = self._dispatch(request, company, tail, raw)
                except BaseException:
                    self.replays.finish(realm_id, request_id, None)
                    raise
                assert isinstance(response.body, bytes)
                self.replays.finish(realm_id, request_id, response.status, response.body)
                return response
            return self._dispatch(request, company, tail, raw)

    @staticmethod
    def _op_name(method: str, tail: str, operation: str | None) -> str:
        head = tail.split("/")[0].lower()
        if head in ("query", "batch", "cdc"):
            return head
        if method == "GET":
            return f"{head}.get"
        return f"{head}.{operation or 'save'}"

    def _dispatch(
        self, request: web.Request, company: Company, tail: str, raw: bytes
    ) -> web.Response:
        parts = tail.split("/")
        head = parts[0].lower()
        try:
            if head == "query":
                text = request.query.get("query") if request.method == "GET" else raw.decode()
                return qbo_json(
                    {"QueryResponse": self._query(company, text or ""), "time": qbo_time_now()}
                )
            if head == "batch" and request.method == "POST":
                return qbo_json(self._batch(company, self._json(raw)))
            if head == "cdc" and request.method == "GET":
                return qbo_json(self._cdc(company, request.query))
            entity = ENTITIES.get(head)
            if entity is None:
                raise QboFault(
                    "Unsupported Operation", "500", f"{request.method} /{tail}", status=400
                )
            if request.method == "GET" and len(parts) == 2:
                record = company.entities[entity].get(parts[1])
                if record is None or record["_deleted"]:
                    raise QboFault(
                        "Object Not Found",
                        "610",
                        f"Object Not Found : Something you're trying to use has been made "
                        f"inactive. Check the fields with accounts, customers, items, vendors "
                        f"or employees. : {entity} {parts[1]}",
                    )
                return qbo_json({entity: _public(record), "time": qbo_time_now()})
            if request.method == "POST" and len(parts) == 1:
                operation = request.query.get("operation") or "save"
                result = self._write(company, entity, operation, self._json(raw))
                self._notify(company, [(entity, result, operation)])
                return qbo_json({entity: _public(result), "time": qbo_time_now()})
            raise QboFault("Unsupported Operation", "500", f"{request.method} /{tail}")
        except QboFault as fault:
            return qbo_json({"Fault": fault.fault(), "time": qbo_time_now()}, fault.status)

    @staticmethod
    def _json(raw: bytes) -> Obj:
        try:
            body = json.loads(raw, parse_float=Decimal)
        except (ValueError, UnicodeDecodeError):
            raise QboFault("Request has invalid or unsupported property", "2010") from None
        if not isinstance(body, dict):
            raise QboFault("Request has invalid or unsupported property", "2010")
        return body

    # -- records ---------------------------------------------------------------------------------
    def _write(self, company: Company, entity: str, operation: str, body: Obj) -> Obj:
        if entity not in WRITABLE:
            raise QboFault("Unsupported Operation", "500", f"{entity} is read-only here")
        body = _strip_empty(body)
        now = qbo_time(self.clock.now())
        if operation == "delete":
            if entity not in _RECEIPTS:
                raise QboFault(
                    "Unsupported Operation",
                    "500",
                    f"Operation Delete is not supported for {entity}; make it inactive",
                )
            current = self._current(company, entity, body)
            current.update(_deleted=True, _seq=self._next_seq())
            current["MetaData"]["LastUpdatedTime"] = now
            return {"Id": current["Id"], "status": "Deleted", "domain": "QBO"}
        if operation not in ("save", "create", "update"):
            raise QboFault("Unsupported Operation", "500", f"operation={operation}")
        record_id = body.get("Id")
        if record_id in (None, "", "0", 0):
            fields = {k: v for k, v in body.items() if k not in ("Id", "SyncToken", "sparse")}
            fields = self._checked(company, entity, fields, None)
            return self._store(company, entity, fields, now)
        current = self._current(company, entity, body)
        if body.get("sparse") is True or str(body.get("sparse")).lower() == "true":
            merged = {
                **{k: v for k, v in current.items() if not k.startswith("_")},
                **{k: v for k, v in body.items() if k not in ("sparse",)},
            }
        else:
            merged = dict(body)
        fields = {
            k: v
            for k, v in merged.items()
            if k not in ("Id", "SyncToken", "sparse", "MetaData", "domain")
        }
        fields = self._checked(company, entity, fields, current["Id"])
        keep = {k: current[k] for k in ("Id", "domain", "_deleted")}
        created = current["MetaData"]["CreateTime"]
        current.clear()
        current.update(
            fields,
            **keep,
            SyncToken=str(int(body["SyncToken"]) + 1),
            sparse=False,
            MetaData={"CreateTime": created, "LastUpdatedTime": now},
            _seq=self._next_seq(),
        )
        return current

    def _current(self, company: Company, entity: str, body: Obj) -> Obj:
        current = company.entities[entity].get(str(body.get("Id")))
        if current is None or current["_deleted"]:
            raise QboFault("Object Not Found", "610", f"{entity} {body.get('Id')} not found")
        if str(body.get("SyncToken")) != current["SyncToken"]:
            raise QboFault(
                "Stale Object Error",
                "5010",
                f"Stale Object Error : You and another user were working on the same thing. "
                f"{entity} Id={current['Id']}, SyncToken={current['SyncToken']}",
            )
        return current

    def _exists(self, company: Company, entity: str, record_id: str | None) -> bool:
        found = company.entities[entity].get(str(record_id))
        return (
            found is not None and not found["_deleted"] and found.get("Active", True) is not False
        )

    def _invalid_ref(self, element: str, value: str | None) -> QboFault:
        return QboFault(
            "Invalid Reference Id",
            "2500",
            f"Invalid Reference Id : {element} assigned is not valid: {value}",
            element=element,
        )

    def _unique(
        self, company: Company, entity: str, key: str, value: str, own_id: str | None
    ) -> None:
        for record in company.entities[entity].values():
            if (
                not record["_deleted"]
                and record["Id"] != own_id
                and str(record.get(key, "")).lower() == value.lower()
            ):
                raise QboFault(
                    "Duplicate Name Exists Error",
                    "6240",
                    f"The name supplied already exists. : Id={record['Id']}",
                    element=key,
                )

    def _checked(self, company: Company, entity: str, fields: Obj, own_id: str | None) -> Obj:
        """Fields checked and completed as QuickBooks does (module doc)."""
        if entity == "Item":
            name = fields.get("Name")
            if not isinstance(name, str) or not name.strip() or len(name) > 100:
                raise QboFault(
                    "Required param missing, need to supply the required value for the API",
                    "2020",
                    "Required parameter Name is missing in the request",
                    element="Name",
                )
            self._unique(company, "Item", "Name", name, own_id)
            fields.setdefault("Type", "Service")
            fields.setdefault("Active", True)
            fields.setdefault("FullyQualifiedName", name)
            if fields["Type"] in ("Service", "NonInventory", "Inventory"):
                account = _ref(fields, "IncomeAccountRef")
                if account is None:
                    raise QboFault(
                        "Required param missing, need to supply the required value for the API",
                        "2020",
                        "Required parameter IncomeAccountRef is missing in the request",
                        element="IncomeAccountRef",
                    )
                if not self._exists(company, "Account", account):
                    raise self._invalid_ref("IncomeAccountRef", account)
            if "UnitPrice" in fields:
                fields["UnitPrice"] = _decimal(fields["UnitPrice"], "UnitPrice")
            return fields
        if entity == "Customer":
            name = fields.get("DisplayName")
            if not name:
                parts = [
                    fields.get(k)
                    for k in ("Title", "GivenName", "MiddleName", "FamilyName", "Suffix")
                ]
                composed = " ".join(str(p) for p in parts if p)
                name = composed or fields.get("CompanyName")
            if not isinstance(name, str) or not name.strip():
                raise QboFault(
                    "Required param missing, need to supply the required value for the API",
                    "2020",
                    "Required parameter DisplayName or a name is missing in the request",
                    element="DisplayName",
                )
            if len(name) > 500:
                raise QboFault(
                    "String length is either shorter or longer than supported by specification",
                    "2050",
                    element="DisplayName",
                )
            self._unique(company, "Customer", "DisplayName", name, own_id)
            fields["DisplayName"] = name
            fields.setdefault("FullyQualifiedName", name)
            fields.setdefault("Active", True)
            fields.setdefault("Balance", 0)
            return fields
        # SalesReceipt / RefundReceipt
        lines = fields.get("Line")
        if not isinstance(lines, list) or not lines:
            raise QboFault(
                "Required param missing, need to supply the required value for the API",
                "2020",
                "Required parameter Line is missing in the request",
                element="Line",
            )
        total = Decimal(0)
        for n, line in enumerate(lines):
            element = f"Line[{n}]"
            if not isinstance(line, dict):
                raise QboFault(
                    "Request has invalid or unsupported property", "2010", element=element
                )
            kind = line.get("DetailType")
            if kind == "SubTotalLineDetail":
                continue
            amount = _decimal(line.get("Amount", "x"), element + ".Amount")
            line["Amount"] = amount
            if kind == "DiscountLineDetail":
                total -= amount
                continue
            if kind != "SalesItemLineDetail":
                raise QboFault(
                    "Request has invalid or unsupported property",
                    "2010",
                    f"DetailType {kind}",
                    element=element,
                )
            detail = line.get("SalesItemLineDetail")
            item_id = _ref(detail, "ItemRef") if isinstance(detail, dict) else None
            if item_id is None or not self._exists(company, "Item", item_id):
                raise self._invalid_ref(element + ".ItemRef", item_id)
            assert isinstance(detail, dict)
            if "Qty" in detail and "UnitPrice" in detail:
                qty = _decimal(detail["Qty"], element + ".Qty")
                price = _decimal(detail["UnitPrice"], element + ".UnitPrice")
                detail["Qty"], detail["UnitPrice"] = qty, price
                if (qty * price).quantize(_CENT, ROUND_HALF_UP) != amount.quantize(
                    _CENT, ROUND_HALF_UP
                ):
                    raise QboFault(
                        "Amount is not equal to UnitPrice * Qty",
                        "6070",
                        f"Amount is not equal to UnitPrice * Qty. Supplied value:{amount}",
                        element=element,
                    )
            total += amount
            line.setdefault("Id", str(n + 1))
            line.setdefault("LineNum", n + 1)
        fields["TotalAmt"] = total.quantize(_CENT, ROUND_HALF_UP)
        fields["Balance"] = Decimal(0)
        customer = _ref(fields, "CustomerRef")
        if customer is not None and not self._exists(company, "Customer", customer):
            raise self._invalid_ref("CustomerRef", customer)
        deposit = _ref(fields, "DepositToAccountRef")
        if deposit is None:
            if entity == "RefundReceipt":
                raise QboFault(
                    "Required param missing, need to supply the required value for the API",
                    "2020",
                    "Required parameter DepositToAccountRef is missing in the request",
                    element="DepositToAccountRef",
                )
            fields["DepositToAccountRef"] = {"value": "3", "name": "Undeposited Funds"}
        elif not self._exists(company, "Account", deposit):
            raise self._invalid_ref("DepositToAccountRef", deposit)
        doc = fields.get("DocNumber")
        if doc is not None and (not isinstance(doc, str) or len(doc) > 21):
            raise QboFault(
                "String length is either shorter or longer than supported by specification",
                "2050",
                "DocNumber is at most 21 characters",
                element="DocNumber",
            )
        note = fields.get("PrivateNote")
        if note is not None and len(str(note)) > 4000:
            raise QboFault(
                "String length is either shorter or longer than supported by specification",
                "2050",
                "PrivateNote is at most 4000 characters",
                element="PrivateNote",
            )
        fields.setdefault(
            "TxnDate", datetime.fromtimestamp(self.clock.now(), UTC).date().isoformat()
        )
        fields.setdefault("CurrencyRef", {"value": "USD", "name": "United States Dollar"})
        return fields

    def _query(self, company: Company, text: str) -> Obj:
        query = parse_query(text)
        found = [
            r
            for r in company.entities[query.entity].values()
            if not r["_deleted"] and _matches(r, query.conditions)
        ]
        if query.count:
            return {"totalCount": len(found)}
        if query.order_by:
            key = query.order_by

            def sort_key(record: Obj) -> tuple[int, Any]:
                value = _field(record, key)
                if value is None:
                    return (1, "")
                try:
                    return (0, Decimal(str(value)))
                except InvalidOperation:
                    return (0, str(value).lower())

            found.sort(key=sort_key, reverse=query.descending)
        else:
            found.sort(key=lambda r: int(r["Id"]) if str(r["Id"]).isdigit() else 0)
        page = found[query.start - 1 : query.start - 1 + query.max_results]
        if not page:
            return {}
        return {
            query.entity: [_public(r) for r in page],
            "startPosition": query.start,
            "maxResults": len(page),
        }

    def _batch(self, company: Company, body: Obj) -> Obj:
        items = body.get("BatchItemRequest")
        if not isinstance(items, list) or not items:
            raise QboFault(
                "Request has invalid or unsupported property", "2010", element="BatchItemRequest"
            )
        if len(items) > MAX_BATCH_ITEMS:
            raise QboFault(
                "Batch request exceeds the maximum size",
                "4001",
                f"A batch holds at most {MAX_BATCH_ITEMS} items; this one has {len(items)}.",
            )
        responses: list[Obj] = []
        changes: list[tuple[str, Obj, str]] = []
        for item in items:
            bid = str(item.get("bId", "")) if isinstance(item, dict) else ""
            try:
                if not isinstance(item, dict):
                    raise QboFault("Request has invalid or unsupported property", "2010")
                if "Query" in item:
                    responses.append(
                        {"bId": bid, "QueryResponse": self._query(company, str(item["Query"]))}
                    )
                    continue
                entity = next((e for e in WRITABLE if e in item), None)
                if entity is None:
                    raise QboFault(
                        "Request has invalid or unsupported property",
                        "2010",
                        "no entity in batch item",
                    )
                operation = str(item.get("operation", "create"))
                result = self._write(
                    company,
                    entity,
                    "save" if operation in ("create", "update") else operation,
                    item[entity],
                )
                changes.append((entity, result, operation))
                responses.append({"bId": bid, entity: _public(result)})
            except QboFault as fault:
                responses.append({"bId": bid, "Fault": fault.fault()})
        if changes:
            self._notify(company, changes)
        return {"BatchItemResponse": responses, "time": qbo_time_now()}

    def _cdc(self, company: Company, query: Any) -> Obj:
        names = [n.strip() for n in str(query.get("entities", "")).split(",") if n.strip()]
        since_text = query.get("changedSince")
        if not names or not since_text:
            raise QboFault(
                "Required param missing, need to supply the required value for the API",
                "2020",
                "entities and changedSince are required",
            )
        try:
            since = parse_rfc3339(str(since_text))
        except ValueError:
            raise QboFault("Invalid date", "2040", f"changedSince: {since_text}") from None
        if self.clock.now() - since > CDC_MAX_AGE_S:
            raise QboFault(
                "Invalid changedSince", "4000", "changedSince must be within the last 30 days"
            )
        answers: list[Obj] = []
        budget = MAX_RESULTS
        for name in names:
            entity = ENTITIES.get(name.lower())
            if entity is None:
                raise QboFault("Invalid entity", "4000", f"unknown entity {name}")
            changed = sorted(
                (
                    r
                    for r in company.entities[entity].values()
                    if parse_rfc3339(r["MetaData"]["LastUpdatedTime"]) > since
                ),
                key=lambda r: r["_seq"],
            )[:budget]
            budget -= len(changed)
            listed = [
                {"Id": r["Id"], "status": "Deleted", "domain": "QBO", "MetaData": r["MetaData"]}
                if r["_deleted"]
                else _public(r)
                for r in changed
            ]
            answers.append(
                {
                    entity: listed,
                    "startPosition": 1,
                    "maxResults": len(listed),
                    "totalCount": len(listed),
                }
            )
        return {"CDCResponse": [{"QueryResponse": answers}], "time": qbo_time_now()}

    # -- webhooks --------------------------------------------------------------------------------
    def _notify(self, company: Company, changes: list[tuple[str, Obj, str]]) -> None:
        if not self.webhook_url:
            return
        events = [
            (
                entity,
                record["Id"],
                "Delete"
                if operation == "delete"
                else ("Update" if record.get("SyncToken", "0") != "0" else "Create"),
            )
            for entity, record, operation in changes
        ]
        self.sender.spawn(self.emit(events, realm_id=company.realm_id))

    def event_body(
        self, events: Sequence[tuple[str, str, str]], realm_id: str
    ) -> tuple[list[str], bytes]:
        """The notification for `(entity, id, operation)` changes (operation: Create, Update,
        Delete, ...), in the configured format; (event ids, body)."""
        now = self.clock.now()
        if self.webhook_format == "legacy":
            entities = [
                {"name": e, "id": i, "operation": op, "lastUpdated": qbo_time(now)}
                for e, i, op in events
            ]
            body: object = {
                "eventNotifications": [
                    {"realmId": realm_id, "dataChangeEvent": {"entities": entities}}
                ]
            }
            ids = [str(uuid.uuid4())]
        else:
            digest = hashlib.sha256(realm_id.encode()).digest()
            source = "intuit." + base64.b64encode(digest).decode()
            verbs = {
                "Create": "created",
                "Update": "updated",
                "Delete": "deleted",
                "Void": "voided",
                "Merge": "merged",
            }
            cloud: list[dict[str, Any]] = [
                {
                    "specversion": "1.0",
                    "id": str(uuid.uuid4()),
                    "source": source,
                    "type": f"qbo.{e.lower()}.{verbs.get(op, op.lower())}.v1",
                    "datacontenttype": "application/json",
                    "time": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
                    "intuitentityid": i,
                    "intuitaccountid": realm_id,
                    "data": {},
                }
                for e, i, op in events
            ]
            body = cloud
            ids = [str(c["id"]) for c in cloud]
        return ids, json.dumps(body, separators=(",", ":")).encode()

    async def emit(
        self,
        events: Sequence[tuple[str, str, str]],
        *,
        realm_id: str = DEV_REALM_ID,
        url: str | None = None,
        forge: bool = False,
    ) -> WebhookDelivery:
        """Post one signed notification of `(entity, id, operation)` changes; waits for the
        answer."""
        target = url or self.webhook_url
        if not target:
            raise RuntimeError("no webhook URL configured (webhook_url)")
        ids, body = self.event_body(events, realm_id)
        for event_id in ids:
            self._events[event_id] = (target, body)
        return await self._post(target, body, forge=forge)

    async def resend(self, event_id: str) -> WebhookDelivery:
        """Deliver a notification again, byte for byte (Intuit retries failed deliveries)."""
        target, body = self._events[event_id]
        return await self._post(target, body)

    async def _post(self, url: str, body: bytes, *, forge: bool = False) -> WebhookDelivery:
        token = "forged-" + secrets.token_hex(8) if forge else self.verifier_token
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: intuit_signature(token, body),
            "intuit-t-id": str(uuid.uuid4()),
        }
        return await self.sender.post(url, body, headers)

    # -- counting for tests ------------------------------------------------------------------------
    def records(self, entity: str, realm_id: str = DEV_REALM_ID) -> list[Obj]:
        """Live records of one entity (as the API shows them)."""
        return [
            _public(r)
            for r in sorted(
                self.companies[realm_id].entities[entity].values(), key=lambda r: int(r["Id"])
            )
            if not r["_deleted"]
        ]

    def receipt_refs(
        self, entity: str = "SalesReceipt", realm_id: str = DEV_REALM_ID
    ) -> Counter[str]:
        """How many live receipts of `entity` carry each DocNumber and each PrivateNote."""
        counts: Counter[str] = Counter()
        for record in self.companies[realm_id].entities[entity].values():
            if not record["_deleted"]:
                refs = {record.get("DocNumber"), record.get("PrivateNote")}
                counts.update(str(r) for r in refs if r)
        return counts

    def duplicates(self, realm_id: str = DEV_REALM_ID) -> dict[str, dict[str, int]]:
        """Per receipt entity, references held by more than one live receipt (should be empty)."""
        return {
            entity: {k: n for k, n in self.receipt_refs(entity, realm_id).items() if n > 1}
            for entity in _RECEIPTS
        }

    # -- control API -----------------------------------------------------------------------------
    def _settings_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "verifier_token": self.verifier_token,
            "discovery_url": self.url + "/.well-known/openid_configuration" if self.url else "",
            "realm_id": DEV_REALM_ID,
            "realms": sorted(self.companies),
            "webhook_url": self.webhook_url,
            "webhook_format": self.webhook_format,
            "per_minute": self.per_minute,
            "batch_per_minute": self.batch_per_minute,
            "max_in_flight": self.in_flight.cap,
            "peak_in_flight": self.in_flight.peak,
            "rotation_grace_s": self.rotation_grace_s,
            "access_ttl_s": self.access_ttl_s,
            "refresh_ttl_s": self.refresh_ttl_s,
            "request_id_replays": self.replays.replayed,
        }

    def _configure_json(self, spec: dict[str, Any]) -> None:
        if "webhook_url" in spec:
            self.webhook_url = spec["webhook_url"] or None
        if "webhook_format" in spec:
            if spec["webhook_format"] not in ("cloudevents", "legacy"):
                raise ValueError("webhook_format is cloudevents or legacy")
            self.webhook_format = spec["webhook_format"]
        if "verifier_token" in spec:
            self.verifier_token = str(spec["verifier_token"])
        if "per_minute" in spec:
            self.per_minute = None if spec["per_minute"] is None else int(spec["per_minute"])
        if "batch_per_minute" in spec:
            value = spec["batch_per_minute"]
            self.batch_per_minute = None if value is None else int(value)
        if "max_in_flight" in spec:
            value = spec["max_in_flight"]
            self.in_flight.cap = None if value is None else int(value)
        for name in ("rotation_grace_s", "access_ttl_s", "refresh_ttl_s"):
            if name in spec:
                setattr(self, name, float(spec[name]))

    async def _c_authorize(self, request: web.Request) -> web.Response:
        spec = await read_json_object(request)
        try:
            code = self.authorize(
                scopes=spec.get("scopes", (ACCOUNTING_SCOPE,)),
                redirect_uri=spec.get("redirect_uri", "http://127.0.0.1/oauth/callback"),
                realm_id=spec.get("realm_id", DEV_REALM_ID),
            )
        except KeyError as exc:
            return json_response({"error": str(exc)}, 404)
        return json_response({"code": code})

    async def _c_grants(self, _request: web.Request) -> web.Response:
        now = self.clock.now()
        return json_response(
            {
                "authorizations": [
                    {
                        "id": a.id,
                        "realm_id": a.realm_id,
                        "revoked": a.revoked,
                        "latest_refresh_token": a.latest_refresh,
                    }
                    for a in self.authorizations.values()
                ],
                "refresh_tokens": [
                    {
                        "authorization": r.authorization.id,
                        "expires_at": r.expires_at,
                        "rotated_at": r.rotated_at,
                        "valid": not r.authorization.revoked
                        and r.expires_at > now
                        and (r.rotated_at is None or now - r.rotated_at <= self.rotation_grace_s),
                    }
                    for r in self.refresh_tokens.values()
                ],
            }
        )

    async def _c_entities(self, request: web.Request) -> web.Response:
        entity = ENTITIES.get(request.match_info["entity"].lower())
        realm_id = request.query.get("realm_id", DEV_REALM_ID)
        if entity is None or realm_id not in self.companies:
            return json_response({"error": "unknown entity or realm"}, 404)
        return qbo_json(self.records(entity, realm_id))

    async def _c_refs(self, request: web.Request) -> web.Response:
        realm_id = request.query.get("realm_id", DEV_REALM_ID)
        if realm_id not in self.companies:
            return json_response({"error": "unknown realm"}, 404)
        return json_response(
            {
                "SalesReceipt": dict(self.receipt_refs("SalesReceipt", realm_id)),
                "RefundReceipt": dict(self.receipt_refs("RefundReceipt", realm_id)),
                "duplicates": self.duplicates(realm_id),
            }
        )

    async def _c_emit(self, request: web.Request) -> web.Response:
        spec = await read_json_object(request)
        try:
            delivery = await self.emit(
                [tuple(e) for e in spec["events"]],
                realm_id=spec.get("realm_id", DEV_REALM_ID),
                url=spec.get("url"),
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

    async def _c_realms(self, request: web.Request) -> web.Response:
        spec = await read_json_object(request)
        company = self.add_company(spec.get("realm_id"), spec.get("name", "Venue"))
        return json_response({"realm_id": company.realm_id})

    async def _c_revoke_realm(self, request: web.Request) -> web.Response:
        spec = await read_json_object(request)
        return json_response({"revoked": self.revoke_realm(spec.get("realm_id", DEV_REALM_ID))})

    def _extra_control(self, app: web.Application) -> None:
        app.router.add_post("/_standin/authorize", self._c_authorize)
        app.router.add_get("/_standin/grants", self._c_grants)
        app.router.add_get("/_standin/entities/{entity}", self._c_entities)
        app.router.add_get("/_standin/refs", self._c_refs)
        app.router.add_post("/_standin/webhooks", self._c_emit)
        app.router.add_post("/_standin/webhooks/resend", self._c_resend)
        app.router.add_post("/_standin/realms", self._c_realms)
        app.router.add_post("/_standin/revoke-realm", self._c_revoke_realm)

    def _routes(self, app: web.Application) -> None:
        for name in ("openid_configuration", "openid_sandbox_configuration"):
            app.router.add_get(f"/.well-known/{name}", self._discovery)
            app.router.add_get(f"/.well-known/{name}/", self._discovery)
        app.router.add_get("/connect/oauth2", self._authorize)
        app.router.add_post("/oauth2/v1/tokens/bearer", self._token)
        app.router.add_post("/oauth2/v1/tokens/revoke", self._revoke)
        app.router.add_route("*", "/v3/company/{realm}/{tail:.*}", self.api)


def qbo_time_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _public(record: Obj) -> Obj:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meshdev.standins.quickbooks",
        description="An Intuit OAuth + QuickBooks Online Accounting API stand-in (dev/test only).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", default=DEV_CLIENT_ID)
    parser.add_argument("--client-secret", default=DEV_CLIENT_SECRET)
    parser.add_argument("--verifier-token", default=DEV_VERIFIER_TOKEN)
    parser.add_argument("--webhook-url", help="where change notifications are posted")
    parser.add_argument(
        "--webhook-format", choices=("cloudevents", "legacy"), default="cloudevents"
    )
    parser.add_argument("--per-minute", type=int, default=500, help="0: unlimited")
    parser.add_argument("--rotation-grace", type=float, default=ROTATION_GRACE_S)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    server = QuickBooksServer(
        client_id=args.client_id,
        client_secret=args.client_secret,
        verifier_token=args.verifier_token,
        webhook_url=args.webhook_url,
        webhook_format=args.webhook_format,
        per_minute=args.per_minute or None,
        rotation_grace_s=args.rotation_grace,
    )
    web.run_app(
        server.app,
        host=args.host,
        port=args.port,
        access_log=None,
        shutdown_timeout=5.0,
        print=lambda _: logger.info("quickbooks stand-in on http://%s:%d", args.host, args.port),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
