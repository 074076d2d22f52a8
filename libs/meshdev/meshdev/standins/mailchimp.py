"""A local stand-in for the Mailchimp Marketing API (OAuth, audiences and members, batch
subscribe, webhooks), for `make run` and tests only. The official `mailchimp-marketing` SDK
talks to it unchanged once its host is set:

    metadata = GET {login base}/oauth2/metadata  (Authorization: OAuth <token>)
    client = MailchimpMarketing.Client()
    client.set_config({"access_token": token, "server": metadata["dc"]})
    client.api_client.host = metadata["api_endpoint"] + "/3.0"
    client.ping.get()

Pointing the SDK: `set_config` only records the server prefix; every call builds
`api_client.host + path` and then replaces the text "server" in that URL with the prefix (the
default host is `https://server.api.mailchimp.com/3.0`). Setting `api_client.host` to
`api_endpoint + "/3.0"` is therefore the one supported knob, and it is right in production too
(`https://us19.api.mailchimp.com/3.0`, no "server" left to replace); the host must not contain
the text "server". This stand-in's metadata answers its own origin as `api_endpoint`, so a
service that always uses `api_endpoint` needs no stand-in-specific code.

OAuth, as Mailchimp's (mailchimp.com/developer/marketing/guides/access-user-data-oauth-2):

* `GET /oauth2/authorize?response_type=code&client_id&redirect_uri&state` stands for the user's
  consent: 302 to `redirect_uri?code=…&state=…` (`&deny=1` → `error=access_denied`).
* `POST /oauth2/token` (form: `grant_type=authorization_code`, `client_id`, `client_secret`,
  `redirect_uri`, `code`) → `{"access_token", "expires_in": 0, "scope": null}`: tokens never
  expire (a user may still remove the app: `revoke_token`). Errors `{"error":
  "invalid_client" | "invalid_grant", "error_description"}` (401 / 400).
* `GET /oauth2/metadata` with `Authorization: OAuth <token>` → `{"dc", "role", "accountname",
  "user_id", "login", "login_url", "api_endpoint"}`.

The API (`/3.0/…`) takes the SDK's Basic auth (any user, the API key `<key>-<dc>` as password;
the suffix must name this datacenter) or `Authorization: Bearer <OAuth token>`; anything else →
401 "API Key Invalid". Errors are problem documents (`application/problem+json`: `type`, `title`,
`status`, `detail`, `instance`[, `errors`]) — the SDK raises `ApiClientError` with the text. It
answers:

* `GET /3.0/ping` (TestConnection), `GET /3.0/` (the account);
* `GET|POST /3.0/lists`, `GET /3.0/lists/{list_id}`;
* `POST /3.0/lists/{list_id}`: batch subscribe (≤ 500 `members`, `update_existing`) →
  `new_members`, `updated_members`, `errors` (per address), totals;
* `GET /3.0/lists/{list_id}/members` (`offset`, `count` ≤ 1,000, default 10, `status`,
  `since_last_changed`) → `members`, `total_items`;
* `POST /3.0/lists/{list_id}/members` (400 "Member Exists" for a known address);
* `GET|PUT|PATCH|DELETE /3.0/lists/{list_id}/members/{subscriber_hash}` — PUT upserts
  (`status_if_new` for a new member), the hash must be MD5 of the lower-cased address; DELETE
  archives; `POST …/actions/delete-permanent` deletes;
* `GET|POST /3.0/lists/{list_id}/webhooks`, `DELETE …/webhooks/{id}`: adding one first sends
  the GET Mailchimp sends to check the URL, and refuses the webhook (400) when that GET does not
  answer 2xx.

Limits: more than `max_connections` (10) requests in flight for an account → 429 "Too Many
Requests" ("You have exceeded the limit of 10 simultaneous connections."), and beyond
`rate_per_s` (default 10 a second, a token bucket) → 429 too. Mailchimp sends no rate-limit
headers and neither does this stand-in. Scripted faults: `fail_next` (5xx), `throttle_next`,
`slow_next`, `latency_s`.

Webhooks are unsigned, as Mailchimp's: a form-encoded POST (`type`, `fired_at`, `data[id]`,
`data[list_id]`, `data[email]`, `data[email_type]`, `data[merges][EMAIL]`, `data[merges][FNAME]`,
…) to each webhook URL of the list whose `events` include the type and whose `sources` include
the change's source (`api` for changes through the API; `emit(...)` plays a user's own
subscribe / unsubscribe / profile change). A per-connection secret belongs in the URL; the
stand-in posts to the URL exactly as registered. Deliveries are kept, not retried.

Counting for tests: `member_writes` counts writes per subscriber hash; `members(list_id)`.

As a process (`meshdev.embedded.MailchimpStandIn`): `python -m meshdev.standins.mailchimp
--port N`; control under `/_standin/` (see `apibase`, plus `authorize`, `members`, `webhooks`,
`revoke-token`).
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
import re
import secrets
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web

from meshdev.standins.apibase import (
    ApiStandIn,
    AuthCodes,
    InFlight,
    TokenBucket,
    WebhookDelivery,
    json_response,
    new_token,
    parse_rfc3339,
    read_json_object,
)

__all__ = [
    "DEV_API_KEY",
    "DEV_CLIENT_ID",
    "DEV_CLIENT_SECRET",
    "DEV_DC",
    "DEV_LIST_ID",
    "MailchimpServer",
    "main",
    "subscriber_hash",
]

logger = logging.getLogger(__name__)

DEV_DC = "us1"
DEV_CLIENT_ID = "123456789012"
"""The app `make run` and tests configure (production settings refuse it)."""
DEV_CLIENT_SECRET = "meshdev-dev-only-mailchimp-client-secret"  # noqa: S105 - dev only
DEV_API_KEY = "0123456789abcdef0123456789abcdef-" + DEV_DC
DEV_LIST_ID = "a1b2c3d4e5"
STATUSES = frozenset(
    {"subscribed", "unsubscribed", "cleaned", "pending", "transactional", "archived"}
)
EVENT_TYPES = ("subscribe", "unsubscribe", "profile", "upemail", "cleaned", "campaign")
MAX_BATCH_MEMBERS = 500
MAX_MEMBERS_PAGE = 1000
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ERRORS_DOC = "https://mailchimp.com/developer/marketing/docs/errors/"

Obj = dict[str, Any]


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: MD5 of the lower-cased address."""
    return hashlib.md5(email.lower().encode(), usedforsecurity=False).hexdigest()


def problem(status: int, title: str, detail: str, errors: list[Obj] | None = None) -> web.Response:
    """An error as Mailchimp answers it (RFC 7807 problem document)."""
    body: Obj = {
        "type": _ERRORS_DOC,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": str(uuid.uuid4()),
    }
    if errors:
        body["errors"] = errors
    return web.Response(
        status=status, body=json.dumps(body).encode(), content_type="application/problem+json"
    )


class _Problem(Exception):
    def __init__(self, status: int, title: str, detail: str, errors: list[Obj] | None = None):
        super().__init__(detail)
        self.status, self.title, self.detail, self.errors = status, title, detail, errors

    def response(self) -> web.Response:
        return problem(self.status, self.title, self.detail, self.errors)


def _invalid(detail: str, errors: list[Obj] | None = None) -> _Problem:
    return _Problem(400, "Invalid Resource", detail, errors)


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


@dataclass(slots=True)
class Audience:
    id: str
    name: str
    members: dict[str, Obj] = field(default_factory=dict)
    """subscriber hash -> member (archived and permanently deleted ones marked)."""
    webhooks: dict[str, Obj] = field(default_factory=dict)
    created_at: str = ""


@dataclass(slots=True)
class Account:
    id: str
    name: str
    dc: str
    api_keys: set[str]
    lists: dict[str, Audience] = field(default_factory=dict)


Op = Callable[[web.Request, Account, Obj], Awaitable[web.Response]]


class MailchimpServer(ApiStandIn):
    """The stand-in (module doc) served in the running event loop; `url` once started."""

    name = "mailchimp"
    user_agent = "MailChimp"

    def __init__(
        self,
        *,
        client_id: str = DEV_CLIENT_ID,
        client_secret: str = DEV_CLIENT_SECRET,
        dc: str = DEV_DC,
        api_key: str = DEV_API_KEY,
        max_connections: int | None = 10,
        rate_per_s: float | None = 10.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.dc = dc
        self.api_key = api_key
        self.connections = InFlight(max_connections)
        self.limit = TokenBucket(rate_per_s)
        super().__init__(host=host, port=port)
        self.codes = AuthCodes(self.clock)
        self._reset_data()

    def _reset_data(self) -> None:
        self.account = Account("meshdev0account", "Meshdev Venue", self.dc, {self.api_key})
        self.account.lists[DEV_LIST_ID] = Audience(
            DEV_LIST_ID, "Meshdev Venue buyers", created_at=_stamp(self.clock.now())
        )
        self.tokens: dict[str, bool] = {}
        """OAuth access tokens -> still valid."""
        self.member_writes: Counter[str] = Counter()
        self.codes.clear()
        self.limit.reset()

    # -- OAuth -----------------------------------------------------------------------------------
    def authorize(self, *, redirect_uri: str = "http://127.0.0.1/oauth/callback") -> str:
        """The user consents: an authorization code."""
        return self.codes.issue(
            client_id=self.client_id, redirect_uri=redirect_uri, scopes=(), account=self.account.id
        ).code

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") != self.client_id or not redirect_uri:
            return web.Response(status=400, text="invalid client_id or redirect_uri")
        if query.get("deny"):
            params = {"error": "access_denied"}
        elif query.get("response_type") != "code":
            params = {"error": "unsupported_response_type"}
        else:
            params = {"code": self.authorize(redirect_uri=redirect_uri)}
        if "state" in query:
            params["state"] = query["state"]
        sep = "&" if "?" in redirect_uri else "?"
        raise web.HTTPFound(redirect_uri + sep + urlencode(params))

    async def _token(self, request: web.Request) -> web.Response:
        self.stats.calls["oauth.code_exchange"] += 1
        form = dict(parse_qsl((await request.read()).decode(errors="replace")))
        if form.get("client_id") != self.client_id or not hmac.compare_digest(
            form.get("client_secret", ""), self.client_secret
        ):
            return json_response(
                {"error": "invalid_client", "error_description": "Invalid client credentials"}, 401
            )
        if form.get("grant_type") != "authorization_code":
            return json_response({"error": "unsupported_grant_type"}, 400)
        redeemed = self.codes.redeem(form.get("code", ""), self.client_id, form.get("redirect_uri"))
        if isinstance(redeemed, str):
            return json_response(
                {"error": "invalid_grant", "error_description": "Invalid authorization code"}, 400
            )
        token = new_token("", 24).replace("-", "a").replace("_", "b")
        self.tokens[token] = True
        return json_response({"access_token": token, "expires_in": 0, "scope": None})

    async def _metadata(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("oauth", "bearer") or not self.tokens.get(token.strip()):
            return json_response({"error": "invalid_token"}, 401)
        base = str(request.url.origin())
        return json_response(
            {
                "dc": self.dc,
                "role": "owner",
                "accountname": self.account.name,
                "user_id": 123456,
                "login": {"email": "owner@venue.test", "login_id": 123456, "login_name": "venue"},
                "login_url": base,
                "api_endpoint": base,
            }
        )

    def revoke_token(self, token: str | None = None) -> int:
        """The user removes the app (every token, or one): later calls get 401."""
        ended = 0
        for value in list(self.tokens):
            if (token is None or value == token) and self.tokens[value]:
                self.tokens[value] = False
                ended += 1
        return ended

    # -- the API dispatcher ----------------------------------------------------------------------
    def _authenticated(self, request: web.Request) -> bool:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        credentials = credentials.strip()
        if scheme.lower() in ("bearer", "oauth"):
            return bool(self.tokens.get(credentials))
        if scheme.lower() != "basic":
            return False
        try:
            key = base64.b64decode(credentials, validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
        return key in self.account.api_keys and key.rpartition("-")[2] == self.dc

    def _op(self, name: str, handler: Op) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def run(request: web.Request) -> web.StreamResponse:
            self.stats.calls[name] += 1
            raw = await request.read()
            if not self._authenticated(request):
                self.stats.unauthorized += 1
                return problem(
                    401,
                    "API Key Invalid",
                    "Your API key may be invalid, or you've attempted to access the wrong "
                    "datacenter.",
                )
            with self.connections.enter(self.account.id) as admitted:
                if not admitted:
                    self.stats.concurrency_limited += 1
                    return problem(
                        429,
                        "Too Many Requests",
                        f"You have exceeded the limit of {self.connections.cap} simultaneous "
                        "connections.",
                    )
                fault, delay = self.next_fault()
                if delay > 0:
                    await asyncio.sleep(delay)
                if fault is not None:
                    if fault.status == 429:
                        return problem(429, "Too Many Requests", "Scripted throttle.")
                    return problem(
                        fault.status,
                        "Internal Server Error",
                        "An unexpected internal error has occurred.",
                    )
                if not self.limit.take().allowed:
                    self.stats.rate_limited += 1
                    return problem(
                        429, "Too Many Requests", "You have exceeded the request rate limit."
                    )
                body: Obj = {}
                if raw.strip():
                    try:
                        parsed = json.loads(raw)
                    except ValueError:
                        return problem(
                            400, "JSON Parse Error", "We encountered an unspecified JSON error."
                        )
                    if isinstance(parsed, dict):
                        body = parsed
                try:
                    return await handler(request, self.account, body)
                except _Problem as exc:
                    return exc.response()

        return run

    def _audience(self, account: Account, list_id: str) -> Audience:
        audience = account.lists.get(list_id)
        if audience is None:
            raise _Problem(404, "Resource Not Found", "The requested resource could not be found.")
        return audience

    # -- account and lists -----------------------------------------------------------------------
    async def ping(self, _r: web.Request, _a: Account, _b: Obj) -> web.Response:
        return json_response({"health_status": "Everything's Chimpy!"})

    async def root(self, _r: web.Request, account: Account, _b: Obj) -> web.Response:
        return json_response(
            {
                "account_id": account.id,
                "login_id": "123456",
                "account_name": account.name,
                "email": "owner@venue.test",
                "role": "owner",
                "total_subscribers": sum(
                    1
                    for a in account.lists.values()
                    for m in a.members.values()
                    if m["status"] == "subscribed"
                ),
            }
        )

    def _list_json(self, audience: Audience) -> Obj:
        live = [m for m in audience.members.values() if not m.get("_deleted")]
        return {
            "id": audience.id,
            "web_id": int(hashlib.sha256(audience.id.encode()).hexdigest()[:6], 16),
            "name": audience.name,
            "date_created": audience.created_at,
            "stats": {
                "member_count": sum(1 for m in live if m["status"] == "subscribed"),
                "unsubscribe_count": sum(1 for m in live if m["status"] == "unsubscribed"),
                "cleaned_count": sum(1 for m in live if m["status"] == "cleaned"),
            },
        }

    async def lists(self, request: web.Request, account: Account, _b: Obj) -> web.Response:
        offset, count = self._window(request, default=10)
        audiences = list(account.lists.values())
        return json_response(
            {
                "lists": [self._list_json(a) for a in audiences[offset : offset + count]],
                "total_items": len(audiences),
            }
        )

    async def create_list(self, _r: web.Request, account: Account, body: Obj) -> web.Response:
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _invalid(
                "The resource submitted could not be validated.",
                [{"field": "name", "message": "This value should not be blank."}],
            )
        audience = Audience(secrets.token_hex(5), name, created_at=_stamp(self.clock.now()))
        account.lists[audience.id] = audience
        return json_response(self._list_json(audience))

    async def get_list(self, request: web.Request, account: Account, _b: Obj) -> web.Response:
        return json_response(self._list_json(self._audience(account, request.match_info["list"])))

    # -- members ---------------------------------------------------------------------------------
    @staticmethod
    def _window(request: web.Request, *, default: int, cap: int = 1000) -> tuple[int, int]:
        try:
            offset = int(request.query.get("offset", "0"))
            count = int(request.query.get("count", str(default)))
        except ValueError:
            raise _invalid("offset and count must be integers") from None
        if offset < 0 or not 1 <= count <= cap:
            raise _invalid(f"count must be between 1 and {cap}; offset >= 0")
        return offset, count

    def _public_member(self, member: Obj) -> Obj:
        return {k: v for k, v in member.items() if not k.startswith("_")}

    def _check_member(self, body: Obj, *, new: bool, status_key: str = "status") -> None:
        email = body.get("email_address")
        if (new or email is not None) and (not isinstance(email, str) or not _EMAIL.match(email)):
            raise _invalid(
                "The resource submitted could not be validated.",
                [
                    {
                        "field": "email_address",
                        "message": "Please provide a valid email address.",
                    }
                ],
            )
        status = body.get(status_key)
        if new and status is None:
            raise _invalid(
                "The resource submitted could not be validated.",
                [{"field": status_key, "message": "This value should not be blank."}],
            )
        if status is not None and status not in STATUSES:
            raise _invalid(
                "The resource submitted could not be validated.",
                [{"field": status_key, "message": f"Invalid status: {status}"}],
            )
        merges = body.get("merge_fields")
        if merges is not None and not isinstance(merges, dict):
            raise _invalid("merge_fields must be an object")

    def _upsert_member(
        self, audience: Audience, email: str, body: Obj, *, status: str | None, source: str
    ) -> tuple[Obj, str]:
        """Create or change a member; (member, "new" | "updated")."""
        now = _stamp(self.clock.now())
        key = subscriber_hash(email)
        member = audience.members.get(key)
        outcome = "updated"
        if member is None or member.get("_deleted"):
            outcome = "new"
            member = {
                "id": key,
                "email_address": email,
                "unique_email_id": secrets.token_hex(5),
                "contact_id": secrets.token_hex(16),
                "web_id": secrets.randbelow(10**9),
                "email_type": body.get("email_type", "html"),
                "status": status or "subscribed",
                "merge_fields": {"FNAME": "", "LNAME": ""},
                "interests": {},
                "ip_signup": "",
                "timestamp_signup": now if (status or "") == "subscribed" else "",
                "timestamp_opt": now,
                "language": body.get("language", ""),
                "vip": bool(body.get("vip", False)),
                "source": "API - Generic",
                "tags": [],
                "list_id": audience.id,
                "_deleted": False,
            }
            audience.members[key] = member
        before = dict(member)
        if "email_address" in body and body["email_address"].lower() != email.lower():
            raise _invalid("The subscriber hash does not match the email address.")
        if status is not None and outcome == "updated":
            member["status"] = status
        if isinstance(body.get("merge_fields"), dict):
            member["merge_fields"] = {**member["merge_fields"], **body["merge_fields"]}
        for name in ("email_type", "language", "vip"):
            if name in body:
                member[name] = body[name]
        member["last_changed"] = now
        member["full_name"] = " ".join(
            v
            for v in (member["merge_fields"].get("FNAME"), member["merge_fields"].get("LNAME"))
            if v
        )
        self.member_writes[key] += 1
        self._member_events(audience, before if outcome == "updated" else None, member, source)
        return member, outcome

    def _member_events(
        self, audience: Audience, before: Obj | None, after: Obj, source: str
    ) -> None:
        if before is None or before.get("status") != after["status"]:
            kind = {"subscribed": "subscribe", "unsubscribed": "unsubscribe", "cleaned": "cleaned"}
            event = kind.get(after["status"])
            if event:
                self._notify(audience, event, after, source)
        elif before.get("merge_fields") != after["merge_fields"]:
            self._notify(audience, "profile", after, source)

    async def list_members(self, request: web.Request, account: Account, _b: Obj) -> web.Response:
        audience = self._audience(account, request.match_info["list"])
        offset, count = self._window(request, default=10, cap=MAX_MEMBERS_PAGE)
        status = request.query.get("status")
        since = request.query.get("since_last_changed")
        since_s = parse_rfc3339(since) if since else None
        found = [
            m
            for m in audience.members.values()
            if not m["_deleted"]
            and (status is None or m["status"] == status)
            and (status == "archived" or m["status"] != "archived")
            and (since_s is None or parse_rfc3339(m["last_changed"]) > since_s)
        ]
        return json_response(
            {
                "members": [self._public_member(m) for m in found[offset : offset + count]],
                "list_id": audience.id,
                "total_items": len(found),
            }
        )

    async def add_member(self, request: web.Request, account: Account, body: Obj) -> web.Response:
        audience = self._audience(account, request.match_info["list"])
        self._check_member(body, new=True)
        email = body["email_address"]
        existing = audience.members.get(subscriber_hash(email))
        if existing is not None and not existing["_deleted"] and existing["status"] != "archived":
            raise _Problem(
                400,
                "Member Exists",
                f"{email} is already a list member. Use PUT to insert or update list members.",
            )
        member, _ = self._upsert_member(audience, email, body, status=body["status"], source="api")
        return json_response(self._public_member(member))

    def _member_of(self, request: web.Request, account: Account) -> tuple[Audience, str]:
        audience = self._audience(account, request.match_info["list"])
        key = request.match_info["hash"].lower()
        return audience, key

    async def get_member(self, request: web.Request, account: Account, _b: Obj) -> web.Response:
        audience, key = self._member_of(request, account)
        member = audience.members.get(key)
        if member is None or member["_deleted"]:
            raise _Problem(404, "Resource Not Found", "The requested resource could not be found.")
        return json_response(self._public_member(member))

    async def put_member(self, request: web.Request, account: Account, body: Obj) -> web.Response:
        audience, key = self._member_of(request, account)
        email = body.get("email_address")
        if not isinstance(email, str) or subscriber_hash(email) != key:
            raise _invalid(
                "The resource submitted could not be validated.",
                [{"field": "email_address", "message": "does not match the subscriber hash"}],
            )
        existing = audience.members.get(key)
        new = existing is None or existing["_deleted"]
        self._check_member(body, new=False)
        status = (
            body.get("status") if not new else (body.get("status_if_new") or body.get("status"))
        )
        if new and status is None:
            raise _invalid(
                "The resource submitted could not be validated.",
                [{"field": "status_if_new", "message": "This value should not be blank."}],
            )
        if status is not None and status not in STATUSES:
            raise _invalid(f"Invalid status: {status}")
        member, _ = self._upsert_member(audience, email, body, status=status, source="api")
        return json_response(self._public_member(member))

    async def patch_member(self, request: web.Request, account: Account, body: Obj) -> web.Response:
        audience, key = self._member_of(request, account)
        member = audience.members.get(key)
        if member is None or member["_deleted"]:
            raise _Problem(404, "Resource Not Found", "The requested resource could not be found.")
        self._check_member(body, new=False)
        updated, _ = self._upsert_member(
            audience, member["email_address"], body, status=body.get("status"), source="api"
        )
        return json_response(self._public_member(updated))

    async def archive_member(self, request: web.Request, account: Account, _b: Obj) -> web.Response:
        audience, key = self._member_of(request, account)
        member = audience.members.get(key)
        if member is None or member["_deleted"]:
            raise _Problem(404, "Resource Not Found", "The requested resource could not be found.")
        member.update(status="archived", last_changed=_stamp(self.clock.now()))
        return web.Response(status=204)

    async def delete_member(self, request: web.Request, account: Account, _b: Obj) -> web.Response:
        audience, key = self._member_of(request, account)
        member = audience.members.get(key)
        if member is None or member["_deleted"]:
            raise _Problem(404, "Resource Not Found", "The requested resource could not be found.")
        member["_deleted"] = True
        return web.Response(status=204)

    async def batch_subscribe(
        self, request: web.Request, account: Account, body: Obj
    ) -> web.Response:
        audience = self._audience(account, request.match_info["list"])
        members = body.get("members")
        if not isinstance(members, list) or not members or len(members) > MAX_BATCH_MEMBERS:
            raise _invalid(f"members needs 1 to {MAX_BATCH_MEMBERS} entries")
        update_existing = bool(body.get("update_existing", False))
        created: list[Obj] = []
        updated: list[Obj] = []
        errors: list[Obj] = []
        for entry in members:
            email = entry.get("email_address") if isinstance(entry, dict) else None
            try:
                if not isinstance(entry, dict):
                    raise _invalid("Expected an object")
                self._check_member(entry, new=False)
                if not isinstance(email, str):
                    raise _invalid("Please provide a valid email address.")
                existing = audience.members.get(subscriber_hash(email))
                is_new = existing is None or existing["_deleted"]
                if not is_new and not update_existing:
                    raise _Problem(400, "Member Exists", f"{email} is already a list member")
                status = (
                    (entry.get("status_if_new") or entry.get("status"))
                    if is_new
                    else entry.get("status")
                )
                if is_new and status is None:
                    raise _invalid("status or status_if_new is required")
                member, outcome = self._upsert_member(
                    audience, email, entry, status=status, source="api"
                )
                (created if outcome == "new" else updated).append(self._public_member(member))
            except _Problem as exc:
                errors.append(
                    {
                        "email_address": email,
                        "error": exc.detail,
                        "error_code": "ERROR_CONTACT_EXISTS"
                        if exc.title == "Member Exists"
                        else "ERROR_GENERIC",
                        "field": "",
                        "field_message": "",
                    }
                )
        return json_response(
            {
                "new_members": created,
                "updated_members": updated,
                "errors": errors,
                "total_created": len(created),
                "total_updated": len(updated),
                "error_count": len(errors),
            }
        )

    # -- webhooks --------------------------------------------------------------------------------
    async def add_webhook(self, request: web.Request, account: Account, body: Obj) -> web.Response:
        audience = self._audience(account, request.match_info["list"])
        url = body.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise _invalid(
                "The resource submitted could not be validated.",
                [{"field": "url", "message": "This value should be a valid URL."}],
            )
        check = await self._validation_get(url)
        if not 200 <= check < 300:
            raise _invalid(
                "The resource submitted could not be validated.",
                [
                    {
                        "field": "url",
                        "message": "We couldn't verify the URL is working. Please double check "
                        "and try again.",
                    }
                ],
            )
        events = body.get("events") or {name: True for name in EVENT_TYPES}
        sources = body.get("sources") or {"user": True, "admin": True, "api": False}
        webhook: Obj = {
            "id": secrets.token_hex(5),
            "url": url,
            "events": {name: bool(events.get(name, False)) for name in EVENT_TYPES},
            "sources": {name: bool(sources.get(name, False)) for name in ("user", "admin", "api")},
            "list_id": audience.id,
        }
        audience.webhooks[webhook["id"]] = webhook
        return json_response(webhook)

    async def _validation_get(self, url: str) -> int:
        """The GET Mailchimp sends when a webhook is saved; the status answered (0: none)."""
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
                session.get(url, headers={"User-Agent": self.user_agent}) as answer,
            ):
                await answer.read()
                return answer.status
        except (aiohttp.ClientError, TimeoutError):
            return 0

    async def list_webhooks(self, request: web.Request, account: Account, _b: Obj) -> web.Response:
        audience = self._audience(account, request.match_info["list"])
        hooks = list(audience.webhooks.values())
        return json_response({"webhooks": hooks, "list_id": audience.id, "total_items": len(hooks)})

    async def delete_webhook(self, request: web.Request, account: Account, _b: Obj) -> web.Response:
        audience = self._audience(account, request.match_info["list"])
        if audience.webhooks.pop(request.match_info["id"], None) is None:
            raise _Problem(404, "Resource Not Found", "The requested resource could not be found.")
        return web.Response(status=204)

    def event_form(self, audience: Audience, event: str, member: Obj) -> dict[str, str]:
        """The form fields Mailchimp posts for `event` about `member`."""
        fired = datetime.fromtimestamp(self.clock.now(), UTC).strftime("%Y-%m-%d %H:%M:%S")
        form = {
            "type": event,
            "fired_at": fired,
            "data[id]": member["unique_email_id"],
            "data[list_id]": audience.id,
            "data[email]": member["email_address"],
            "data[email_type]": member.get("email_type", "html"),
            "data[web_id]": str(member.get("web_id", "")),
            "data[ip_opt]": "127.0.0.1",
            "data[merges][EMAIL]": member["email_address"],
        }
        for key, value in member.get("merge_fields", {}).items():
            form[f"data[merges][{key}]"] = str(value)
        if event == "unsubscribe":
            form.update({"data[action]": "unsub", "data[reason]": "manual"})
        if event == "cleaned":
            form = {k: v for k, v in form.items() if not k.startswith("data[merges]")}
            form.update({"data[reason]": "hard", "data[campaign_id]": ""})
        return form

    def _notify(self, audience: Audience, event: str, member: Obj, source: str) -> None:
        targets = [
            h["url"]
            for h in audience.webhooks.values()
            if h["events"].get(event) and h["sources"].get(source)
        ]
        if not targets:
            return
        body = urlencode(self.event_form(audience, event, member)).encode()
        for url in targets:
            self.sender.spawn(self._post(url, body))

    async def _post(self, url: str, body: bytes) -> WebhookDelivery:
        return await self.sender.post(
            url, body, {"Content-Type": "application/x-www-form-urlencoded"}
        )

    async def emit(
        self,
        event: str,
        email: str,
        *,
        list_id: str = DEV_LIST_ID,
        url: str | None = None,
        merge_fields: dict[str, str] | None = None,
    ) -> list[WebhookDelivery]:
        """A change made by the subscriber (source `user`): applied to the member, then posted
        to the list's webhooks that want it (or to `url`); waits for the answers."""
        audience = self.account.lists[list_id]
        status = {"subscribe": "subscribed", "unsubscribe": "unsubscribed", "cleaned": "cleaned"}
        if event not in EVENT_TYPES:
            raise ValueError(f"unknown event {event!r}")
        body_fields: Obj = {"email_address": email}
        if merge_fields:
            body_fields["merge_fields"] = merge_fields
        existing = audience.members.get(subscriber_hash(email))
        now = _stamp(self.clock.now())
        if existing is None or existing["_deleted"]:
            member, _ = self._upsert_member(
                audience, email, body_fields, status=status.get(event, "subscribed"), source="none"
            )
        else:
            member = existing
            if event in status:
                member["status"] = status[event]
            if merge_fields:
                member["merge_fields"] = {**member["merge_fields"], **merge_fields}
            member["last_changed"] = now
        body = urlencode(self.event_form(audience, event, member)).encode()
        targets = (
            [url]
            if url
            else [
                h["url"]
                for h in audience.webhooks.values()
                if h["events"].get(event) and h["sources"]["user"]
            ]
        )
        return [await self._post(target, body) for target in targets]

    # -- for tests ---------------------------------------------------------------------------------
    def members(self, list_id: str = DEV_LIST_ID) -> list[Obj]:
        """Every member of the list that exists (archived included)."""
        return [
            self._public_member(m)
            for m in self.account.lists[list_id].members.values()
            if not m["_deleted"]
        ]

    # -- control API -----------------------------------------------------------------------------
    def _settings_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "dc": self.dc,
            "api_key": self.api_key,
            "list_id": DEV_LIST_ID,
            "max_connections": self.connections.cap,
            "peak_connections": self.connections.peak,
            "rate_limit": self.limit.describe(),
            "member_writes": sum(self.member_writes.values()),
        }

    def _configure_json(self, spec: dict[str, Any]) -> None:
        if "max_connections" in spec:
            value = spec["max_connections"]
            self.connections.cap = None if value is None else int(value)
        if "rate_per_s" in spec or "burst" in spec:
            rate = spec.get("rate_per_s", self.limit.rate_per_s)
            self.limit.configure(
                None if rate is None else float(rate),
                None if spec.get("burst") is None else int(spec["burst"]),
            )

    async def _c_authorize(self, request: web.Request) -> web.Response:
        spec = await read_json_object(request)
        return json_response(
            {
                "code": self.authorize(
                    redirect_uri=spec.get("redirect_uri", "http://127.0.0.1/oauth/callback")
                )
            }
        )

    async def _c_members(self, request: web.Request) -> web.Response:
        list_id = request.query.get("list_id", DEV_LIST_ID)
        if list_id not in self.account.lists:
            return json_response({"error": "unknown list"}, 404)
        return json_response({"members": self.members(list_id), "writes": dict(self.member_writes)})

    async def _c_emit(self, request: web.Request) -> web.Response:
        spec = await read_json_object(request)
        try:
            deliveries = await self.emit(
                spec["type"],
                spec["email"],
                list_id=spec.get("list_id", DEV_LIST_ID),
                url=spec.get("url"),
                merge_fields=spec.get("merge_fields"),
            )
        except (KeyError, ValueError) as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response([d.to_json() for d in deliveries])

    async def _c_revoke(self, request: web.Request) -> web.Response:
        spec = await read_json_object(request)
        return json_response({"revoked": self.revoke_token(spec.get("token"))})

    def _extra_control(self, app: web.Application) -> None:
        app.router.add_post("/_standin/authorize", self._c_authorize)
        app.router.add_get("/_standin/members", self._c_members)
        app.router.add_post("/_standin/webhooks", self._c_emit)
        app.router.add_post("/_standin/revoke-token", self._c_revoke)

    def _routes(self, app: web.Application) -> None:
        op = self._op
        app.router.add_get("/oauth2/authorize", self._authorize)
        app.router.add_post("/oauth2/token", self._token)
        app.router.add_get("/oauth2/metadata", self._metadata)
        lists = "/3.0/lists/{list}"
        member = lists + "/members/{hash}"
        table: list[tuple[str, str, str, Op]] = [
            ("GET", "/3.0/ping", "ping", self.ping),
            ("GET", "/3.0/", "root", self.root),
            ("GET", "/3.0/lists", "lists.list", self.lists),
            ("POST", "/3.0/lists", "lists.create", self.create_list),
            ("GET", lists, "lists.get", self.get_list),
            ("POST", lists, "lists.batch_subscribe", self.batch_subscribe),
            ("GET", lists + "/members", "members.list", self.list_members),
            ("POST", lists + "/members", "members.add", self.add_member),
            ("GET", member, "members.get", self.get_member),
            ("PUT", member, "members.put", self.put_member),
            ("PATCH", member, "members.patch", self.patch_member),
            ("DELETE", member, "members.archive", self.archive_member),
            ("POST", member + "/actions/delete-permanent", "members.delete", self.delete_member),
            ("GET", lists + "/webhooks", "webhooks.list", self.list_webhooks),
            ("POST", lists + "/webhooks", "webhooks.add", self.add_webhook),
            ("DELETE", lists + "/webhooks/{id}", "webhooks.delete", self.delete_webhook),
        ]
        for method, path, name, handler in table:
            app.router.add_route(method, path, op(name, handler))
        app.router.add_route("*", "/3.0/{tail:.*}", self._unknown)

    async def _unknown(self, request: web.Request) -> web.Response:
        return problem(404, "Resource Not Found", f"This stand-in does not serve {request.path}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meshdev.standins.mailchimp",
        description="A Mailchimp Marketing API + OAuth stand-in (dev/test only).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-connections", type=int, default=10, help="0: unlimited")
    parser.add_argument("--rate-per-s", type=float, default=10.0, help="0: unlimited")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    server = MailchimpServer(
        max_connections=args.max_connections or None, rate_per_s=args.rate_per_s or None
    )
    web.run_app(
        server.app,
        host=args.host,
        port=args.port,
        access_log=None,
        shutdown_timeout=5.0,
        print=lambda _: logger.info("mailchimp stand-in on http://%s:%d", args.host, args.port),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
