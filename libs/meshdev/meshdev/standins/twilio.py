"""A local stand-in for Twilio's Programmable Messaging API, its signed status callbacks and
inbound replies, for `make run` and tests only. The official `twilio` SDK talks to it unchanged.

Pointing the SDK at it (twilio 9.x): the client has no base-URL option; every domain object
carries its own `base_url`, and the Messages API lives on the `api` domain, so

    client = Client(account_sid, auth_token)                 # sync (requests)
    client.api.base_url = server.url                         # was https://api.twilio.com
    client.messages.create(to=..., from_=..., body=..., status_callback=...)

    client = Client(account_sid, auth_token, http_client=AsyncTwilioHttpClient())   # async
    client.api.base_url = server.url
    await client.messages.create_async(...)

`http_client=` only chooses the transport (requests or aiohttp); it receives absolute URLs built
from `base_url`. Leave `edge` / `region` (and the `TWILIO_EDGE` / `TWILIO_REGION` environment
variables, which the client reads) unset: they rewrite the URL's host into `api.<edge>.<region>…`.

What it answers, as Twilio does (`{"code", "message", "more_info", "status"}` error bodies):

* `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded `To`, `From` or
  `MessagingServiceSid`, `Body`, `StatusCallback`: Basic auth `AccountSid:AuthToken` matching
  the path, else 401 / 20003; `To` not E.164 (or the magic +15005550001) → 400 / 21211; missing
  `To` 21604, `From` 21603, `Body` 21602; body over 1600 characters 21617; `To` opted out by a
  STOP reply → 21610. Otherwise 201 with the Message resource (`sid` SM…, `status` `queued`,
  or `accepted` for a Messaging Service without `From`).
* `GET .../Messages/{Sid}.json`: the resource with its current status (404 / 20404).
* More than `max_concurrency` requests in flight, or beyond `rate_per_s` per second → 429 /
  20429 "Too Many Requests" (safe to retry).
* Scripted faults for the next calls (`fail_next` 5xx / 20500, `throttle_next` 429 / 20429 with
  Retry-After, `slow_next` / `latency_s`).

Status callbacks: after a message with a `StatusCallback` is accepted, it POSTs `sent` and then
the outcome (`delivered`, or what `set_outcome(to, "undelivered", 30003)` says, with `ErrorCode`)
to that URL, form-encoded (`MessageSid`, `MessageStatus`, `SmsSid`, `SmsStatus`, `AccountSid`,
`From`, `To`, `ApiVersion`, [`MessagingServiceSid`], [`ErrorCode`]), signed as Twilio signs:

    X-Twilio-Signature: base64(HMAC-SHA1(auth_token, url + key1 + value1 + key2 + ...))

(the full URL as posted, then every POST parameter sorted by key), which
`twilio.request_validator.RequestValidator(auth_token).validate(url, params, signature)` accepts.
`auto_callbacks=False` stops the automatic ones; `emit_status(sid, status, error_code)` sends one
when a test wants it. Inbound replies: `inbound(from_, to, body)` posts what Twilio posts when a
handset texts one of our numbers (`MessageSid`, `From`, `To`, `Body`, `SmsStatus=received`, ...,
`OptOutType` for STOP/START/HELP keywords) to `inbound_url`, signed the same way; a STOP reply
also makes later sends to that handset fail with 21610, as Twilio's opt-out handling does (for
the whole account here; Twilio scopes it to the sender or Messaging Service), until START.
Every POST and the receiver's answer is kept in `deliveries`; `forge=True` signs with a wrong
token (for "a forged callback is refused").

As a process (`meshdev.embedded.TwilioStandIn`): `python -m meshdev.standins.twilio --port N
[--account-sid AC… --auth-token T] [--inbound-url URL]`; driven through JSON under `/_standin/`
(messages, faults, config, outcomes, status, inbound, deliveries, reset, settings).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import web

from meshdev.standins.apibase import (
    Fault,
    FixedWindow,
    HttpStandIn,
    WebhookDelivery,
    json_response,
    read_json_object,
)

__all__ = [
    "API_VERSION",
    "DEV_ACCOUNT_SID",
    "DEV_AUTH_TOKEN",
    "DEV_MESSAGING_SERVICE_SID",
    "DEV_PHONE_NUMBER",
    "SIGNATURE_HEADER",
    "SentSms",
    "TwilioServer",
    "main",
    "twilio_signature",
]

logger = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
DEV_ACCOUNT_SID = "AC" + "deadbeef" * 4
"""The account `make run` and tests configure (production settings refuse it)."""
DEV_AUTH_TOKEN = "feedface" * 4
DEV_MESSAGING_SERVICE_SID = "MG" + "deadbeef" * 4
DEV_PHONE_NUMBER = "+15005550006"
"""Twilio's magic "valid sender" test number."""
SIGNATURE_HEADER = "X-Twilio-Signature"
MAX_BODY = 1600
INVALID_NUMBER = "+15005550001"
"""Twilio's magic test number for "invalid To" (21211)."""
FINAL_STATUSES = ("delivered", "undelivered", "failed")
STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE", "STOP ALL"}
)
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_MESSAGES = re.compile(
    r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages(?:/(?P<sid>[^/]+))?\.json$"
)


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """`X-Twilio-Signature`: base64(HMAC-SHA1(auth token, url + each key+value sorted by key))."""
    payload = url + "".join(key + params[key] for key in sorted(params))
    mac = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def twilio_error(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """An error in Twilio's REST shape."""
    return json_response(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status,
        headers,
    )


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _rfc2822(epoch: float | None) -> str | None:
    return None if epoch is None else formatdate(epoch, usegmt=False).replace("-0000", "+0000")


@dataclass(slots=True)
class SentSms:
    """A message Twilio accepted (201), and what happened to it since."""

    sid: str
    account_sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    status_callback: str | None
    status: str
    created_at: float
    updated_at: float
    sent_at: float | None = None
    error_code: int | None = None
    error_message: str | None = None

    @property
    def num_segments(self) -> int:
        # GSM-7 segments of 153 characters once split (160 for one); UCS-2 ignored here.
        return 1 if len(self.body) <= 160 else -(-len(self.body) // 153)

    def resource(self) -> dict[str, Any]:
        """The Message resource as the API returns it."""
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": _rfc2822(self.created_at),
            "date_sent": _rfc2822(self.sent_at),
            "date_updated": _rfc2822(self.updated_at),
            "direction": "outbound-api",
            "error_code": self.error_code,
            "error_message": self.error_message,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": "0",
            "num_segments": str(self.num_segments),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": f"{uri}/Media.json", "feedback": f"{uri}/Feedback.json"},
            "to": self.to,
            "uri": f"{uri}.json",
        }


class TwilioServer(HttpStandIn):
    """The stand-in (module doc) served in the running event loop; `url` once started (the base
    URL to set as `client.api.base_url`)."""

    user_agent = "TwilioProxy/1.1"

    def __init__(
        self,
        *,
        account_sid: str = DEV_ACCOUNT_SID,
        auth_token: str = DEV_AUTH_TOKEN,
        inbound_url: str | None = None,
        auto_callbacks: bool = True,
        callback_delay_s: float = 0.0,
        max_concurrency: int | None = 100,
        rate_per_s: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.inbound_url = inbound_url
        """Where `inbound()` posts (the number's "A message comes in" webhook)."""
        self.auto_callbacks = auto_callbacks
        self.callback_delay_s = callback_delay_s
        """Pause before each automatic status callback (`sent`, then the outcome)."""
        self.max_concurrency = max_concurrency
        self.window = FixedWindow(rate_per_s, 1.0)
        self.messages: dict[str, SentSms] = {}
        self.outcomes: dict[str, tuple[str, int | None]] = {}
        """Automatic final status per `To` number: (status, ErrorCode); default delivered."""
        self.opted_out: set[str] = set()
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        super().__init__(host=host, port=port)

    # -- scripting (`throttle_next`, `slow_next`: the base's; a 429 answers 20429) -------------
    def fail_next(self, count: int = 1, status: int = 500) -> None:
        """Answer the next `count` calls with `status` (500 → 20500, 503 → 20503)."""
        self.faults.add(Fault(status=status), count)

    def set_outcome(
        self, to: str, status: str = "undelivered", error_code: int | None = 30003
    ) -> None:
        """What the automatic final callback reports for messages to `to`."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"a final status is one of {', '.join(FINAL_STATUSES)}")
        self.outcomes[to] = (status, None if status == "delivered" else error_code)

    def _reset_data(self) -> None:
        """Forget messages, outcomes, opt-outs and the rate window (`reset`: deliveries and
        faults too)."""
        self.messages.clear()
        self.outcomes.clear()
        self.opted_out.clear()
        self.window.reset()
        self.calls = 0
        self.max_in_flight = self.in_flight

    def message(self, sid: str) -> SentSms:
        found = self.messages.get(sid)
        if found is None:
            raise KeyError(f"no message {sid!r}")
        return found

    def sign(self, url: str, params: Mapping[str, str], *, forge: bool = False) -> str:
        token = secrets.token_hex(16) if forge else self.auth_token
        return twilio_signature(token, url, params)

    # -- callbacks -----------------------------------------------------------------------------
    async def post_signed(
        self, url: str, params: Mapping[str, str], *, forge: bool = False
    ) -> WebhookDelivery:
        """POST `params` form-encoded to `url`, signed with the auth token (or not, `forge`)."""
        body = urlencode(list(params.items())).encode()
        headers = {
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            SIGNATURE_HEADER: self.sign(url, params, forge=forge),
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        }
        return await self.sender.post(url, body, headers)

    def callback_params(
        self, message: SentSms, status: str, error_code: int | None = None
    ) -> dict[str, str]:
        params = {
            "AccountSid": message.account_sid,
            "ApiVersion": API_VERSION,
            "From": message.from_ or "",
            "MessageSid": message.sid,
            "MessageStatus": status,
            "SmsSid": message.sid,
            "SmsStatus": status,
            "To": message.to,
        }
        if message.messaging_service_sid:
            params["MessagingServiceSid"] = message.messaging_service_sid
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        if status == "delivered":
            params["RawDlrDoneDate"] = time.strftime("%y%m%d%H%M", time.gmtime())
        return params

    async def emit_status(
        self,
        sid: str,
        status: str,
        error_code: int | None = None,
        *,
        url: str | None = None,
        forge: bool = False,
    ) -> WebhookDelivery:
        """Move a message to `status` and POST its status callback (to `url`, default the
        message's StatusCallback); wait for the receiver's answer."""
        message = self.message(sid)
        target = url or message.status_callback
        if not target:
            raise RuntimeError(f"{sid} has no StatusCallback")
        now = time.time()
        message.status, message.updated_at = status, now
        if status == "sent" and message.sent_at is None:
            message.sent_at = now
        message.error_code = error_code
        message.error_message = None if error_code is None else f"error {error_code}"
        return await self.post_signed(
            target, self.callback_params(message, status, error_code), forge=forge
        )

    async def _auto_callbacks(self, message: SentSms) -> None:
        final, code = self.outcomes.get(message.to, ("delivered", None))
        for status, error_code in (("sent", None), (final, code)):
            if self.callback_delay_s:
                await asyncio.sleep(self.callback_delay_s)
            await self.emit_status(message.sid, status, error_code)

    async def inbound(
        self,
        from_: str,
        to: str = DEV_PHONE_NUMBER,
        body: str = "STOP",
        *,
        url: str | None = None,
        forge: bool = False,
    ) -> WebhookDelivery:
        """A handset `from_` texts `body` to our number `to`: POST it, signed, to `url` (default
        `inbound_url`) as Twilio's incoming-message webhook; STOP / START update opt-outs."""
        target = url or self.inbound_url
        if not target:
            raise RuntimeError("no inbound webhook URL configured (inbound_url)")
        sid = _sid("SM")
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "Body": body,
            "From": from_,
            "MessageSid": sid,
            "NumMedia": "0",
            "NumSegments": "1",
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "SmsStatus": "received",
            "To": to,
        }
        keyword = " ".join(body.upper().split())
        if keyword in STOP_WORDS:
            params["OptOutType"] = "STOP"
            self.opted_out.add(from_)
        elif keyword in START_WORDS:
            params["OptOutType"] = "START"
            self.opted_out.discard(from_)
        elif keyword in HELP_WORDS:
            params["OptOutType"] = "HELP"
        return await self.post_signed(target, params, forge=forge)

    # -- the API -------------------------------------------------------------------------------
    async def api(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._api(request)
        finally:
            self.in_flight -= 1

    async def _api(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        fault = self.faults.next()
        delay = self.faults.latency_s + (fault.delay_s if fault else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        match = _MESSAGES.match(request.path)
        if match is None:
            return twilio_error(404, 20404, f"The requested resource {request.path} was not found")
        if not self._authenticated(request.headers.get("Authorization", ""), match["account"]):
            return twilio_error(
                401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'}
            )
        too_many = twilio_error(429, 20429, "Too Many Requests")
        if self.max_concurrency is not None and self.in_flight > self.max_concurrency:
            return too_many
        if fault is not None and fault.status:
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else None
            if fault.status == 429:
                return twilio_error(429, 20429, "Too Many Requests", headers)
            code = 20503 if fault.status == 503 else 20500
            reason = "Service Unavailable" if fault.status == 503 else "Internal Server Error"
            return twilio_error(fault.status, code, reason, headers)
        if not self.window.take()[0]:
            return too_many
        if match["sid"] is not None:
            if request.method != "GET":
                return twilio_error(405, 20004, "Method not allowed")
            message = self.messages.get(match["sid"])
            if message is None:
                return twilio_error(
                    404, 20404, f"The requested resource {request.path} was not found"
                )
            return json_response(message.resource())
        if request.method != "POST":
            return twilio_error(405, 20004, "Method not allowed")
        try:
            form = dict(parse_qsl(raw.decode(), keep_blank_values=True))
        except UnicodeDecodeError:
            form = {}
        return self._create(match["account"], form)

    def _authenticated(self, authorization: str, account: str) -> bool:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (
            hmac.compare_digest(user, self.account_sid)
            and hmac.compare_digest(password, self.auth_token)
            and account == self.account_sid
        )

    def _create(self, account: str, form: dict[str, str]) -> web.Response:
        to = form.get("To", "")
        from_ = form.get("From") or None
        service = form.get("MessagingServiceSid") or None
        body = form.get("Body", "")
        if not to:
            return twilio_error(400, 21604, "A 'To' phone number is required.")
        if not _E164.match(to) or to == INVALID_NUMBER:
            return twilio_error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if from_ is None and service is None:
            return twilio_error(400, 21603, "A 'From' phone number is required.")
        if from_ is not None and not _E164.match(from_):
            return twilio_error(400, 21212, f"Invalid From Number (caller ID): {from_}")
        if service is not None and not re.fullmatch(r"MG[0-9a-f]{32}", service):
            return twilio_error(400, 21701, f"The Messaging Service Sid {service} is invalid.")
        if not body and not form.get("MediaUrl") and not form.get("ContentSid"):
            return twilio_error(400, 21602, "Message body is required.")
        if len(body) > MAX_BODY:
            return twilio_error(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        if to in self.opted_out:
            return twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")
        now = time.time()
        message = SentSms(
            sid=_sid("SM"),
            account_sid=account,
            to=to,
            from_=from_,
            messaging_service_sid=service,
            body=body,
            status_callback=form.get("StatusCallback") or None,
            status="queued" if from_ is not None else "accepted",
            created_at=now,
            updated_at=now,
        )
        self.messages[message.sid] = message
        if self.auto_callbacks and message.status_callback:
            self.sender.spawn(self._auto_callbacks(message))
        return json_response(message.resource(), 201)

    # -- the control API (`/_standin/`, for processes; the rest is the base's) -----------------
    def _routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/2010-04-01/{tail:.*}", self.api)

    def _extra_control(self, app: web.Application) -> None:
        app.router.add_get("/_standin/messages", self._messages)
        app.router.add_post("/_standin/outcomes", self._set_outcome)
        app.router.add_post("/_standin/status", self._emit_status)
        app.router.add_post("/_standin/inbound", self._inbound)

    def _settings_json(self) -> dict[str, Any]:
        return {
            "account_sid": self.account_sid,
            "auth_token": self.auth_token,
            "inbound_url": self.inbound_url,
            "auto_callbacks": self.auto_callbacks,
            "callback_delay_s": self.callback_delay_s,
            "max_concurrency": self.max_concurrency,
            "rate_per_s": self.window.limit,
            "calls": self.calls,
            "max_in_flight": self.max_in_flight,
            "opted_out": sorted(self.opted_out),
        }

    def _configure_json(self, spec: dict[str, Any]) -> None:
        if "inbound_url" in spec:
            self.inbound_url = spec["inbound_url"] or None
        if "auto_callbacks" in spec:
            self.auto_callbacks = bool(spec["auto_callbacks"])
        if "callback_delay_s" in spec:
            self.callback_delay_s = float(spec["callback_delay_s"])
        if "max_concurrency" in spec:
            value = spec["max_concurrency"]
            self.max_concurrency = None if value is None else int(value)
        if "rate_per_s" in spec:
            self.window.limit = None if spec["rate_per_s"] is None else int(spec["rate_per_s"])

    async def _messages(self, _request: web.Request) -> web.Response:
        return json_response([m.resource() for m in self.messages.values()])

    async def _set_outcome(self, request: web.Request) -> web.Response:
        spec = await read_json_object(request)
        try:
            self.set_outcome(
                spec["to"], spec.get("status", "undelivered"), spec.get("error_code", 30003)
            )
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        status, code = self.outcomes[spec["to"]]
        return json_response({"to": spec["to"], "status": status, "error_code": code})

    async def _emit_status(self, request: web.Request) -> web.Response:
        spec = await read_json_object(request)
        try:
            delivery = await self.emit_status(
                spec["sid"],
                spec["status"],
                spec.get("error_code"),
                url=spec.get("url"),
                forge=bool(spec.get("forge", False)),
            )
        except KeyError as exc:
            return json_response({"error": exc.args[0] if exc.args else "missing"}, 404)
        except RuntimeError as exc:
            return json_response({"error": str(exc)}, 409)
        return json_response(delivery.to_json())

    async def _inbound(self, request: web.Request) -> web.Response:
        spec = await read_json_object(request)
        try:
            delivery = await self.inbound(
                spec["from"],
                spec.get("to", DEV_PHONE_NUMBER),
                spec.get("body", "STOP"),
                url=spec.get("url"),
                forge=bool(spec.get("forge", False)),
            )
        except RuntimeError as exc:
            return json_response({"error": str(exc)}, 409)
        return json_response(delivery.to_json())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meshdev.standins.twilio",
        description="A Twilio Messaging API + status callback stand-in (dev/test only).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--account-sid", default=DEV_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=DEV_AUTH_TOKEN)
    parser.add_argument("--inbound-url", help="where inbound replies are posted")
    parser.add_argument("--no-callbacks", action="store_true", help="no automatic callbacks")
    parser.add_argument("--max-concurrency", type=int, default=100, help="0: unlimited")
    parser.add_argument("--rate-per-s", type=int, default=0, help="0: unlimited")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    server = TwilioServer(
        account_sid=args.account_sid,
        auth_token=args.auth_token,
        inbound_url=args.inbound_url,
        auto_callbacks=not args.no_callbacks,
        max_concurrency=args.max_concurrency or None,
        rate_per_s=args.rate_per_s or None,
    )
    web.run_app(
        server.app,
        host=args.host,
        port=args.port,
        access_log=None,
        shutdown_timeout=5.0,
        print=lambda _: logger.info("twilio stand-in on http://%s:%d", args.host, args.port),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
