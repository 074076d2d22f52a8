"""A local stand-in for SendGrid's v3 Mail Send API and its signed Event Webhook, for `make run`
and tests only. The official `sendgrid` SDK talks to it unchanged:

    sg = sendgrid.SendGridAPIClient(api_key, host=server.url)   # POST {url}/v3/mail/send
    response = sg.send(mail)                                     # 202, X-Message-Id

The SDK is synchronous (urllib): call it from a thread when the stand-in runs in your event loop.

What it answers, as SendGrid does:

* `POST /v3/mail/send` with `Authorization: Bearer <key>`: a key not configured → 401
  (`{"errors": [{"message": ..., "field": null, "help": null}]}`, SendGrid's shape); a body that
  is not a valid send request (personalizations, `to`, `from`, `subject`, `content`, addresses,
  `custom_args` strings, text/plain first) → 400 with every error found; otherwise 202, no body,
  `X-Message-Id`. The message is kept (`messages`: from, personalizations, subject, content parts,
  custom_args, headers, categories) for tests to read.
* Every authenticated answer carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
  `X-RateLimit-Reset` (epoch seconds) for a fixed window (`rate_limit` calls per `rate_period_s`,
  default 600 per 60 s); beyond it 429 `too many requests`.
* Scripted faults for the next calls (`fail_next`: 5xx; `throttle_next`: 429 with Retry-After;
  `slow_next` / `latency_s`: added latency) — for the sender's retries, breaker and failover.

Event Webhook (docs: "Getting started with the Event Webhook", "Event Webhook Security"): with a
`webhook_url`, it POSTs JSON arrays of events (`processed`, `delivered`, `bounce`, `dropped`,
`spamreport`, `unsubscribe`), one object per recipient with `email`, `timestamp`, `event`,
`smtp-id`, `sg_event_id` (unique per event), `sg_message_id` (`<X-Message-Id>.filter…`), the
message's `category`, and its `custom_args` (message-level merged with the personalization's)
echoed at the top level. Each POST is signed as SendGrid signs it:

    X-Twilio-Email-Event-Webhook-Timestamp: <unix seconds>
    X-Twilio-Email-Event-Webhook-Signature: base64(DER(ECDSA-P256-SHA256(key, timestamp + body)))

so `EventWebhook().verify_signature(body_text, signature, timestamp, EventWebhook(
server.public_key).public_key)` accepts it. The body ends with `\\r\\n` as SendGrid's do: verify
over the raw bytes received, never over re-serialised JSON. `public_key` is the verification key
as SendGrid's Mail Settings page shows it (base64 of the DER SubjectPublicKeyInfo, no PEM lines);
`public_key_pem` is the same key in PEM. The private key is generated per server, or loaded from
a PEM file (`load_or_create_signing_key`) so a dev setup keeps one key across restarts.

Events are sent when asked (`emit(message_id, "bounce")` posts and returns the delivery) or, with
`auto_events` on, `processed` then the recipient's outcome (`delivered` unless `set_outcome`
says otherwise) after each accepted message. Every POST and the receiver's answer is kept in
`deliveries`; a non-2xx answer is not retried (SendGrid retries for 24 h), so tests can count.
`emit(..., forge=True)` signs with a key nobody trusts (for "a forged receipt is refused").

As a process (`meshdev.embedded.SendGridStandIn`): `python -m meshdev.standins.sendgrid --port N
[--api-key K]... [--signing-key PEM] [--webhook-url URL] [--auto-events]`; tests and the launcher
drive it through JSON under `/_standin/` (messages, faults, config, outcomes, events, deliveries,
reset, settings), which SendGrid's API never uses.

The server base (fault script, webhook sender, lifecycle, control API) and the rate window come
from `meshdev.standins.apibase` (`HttpStandIn`, `FixedWindow`), shared with the other stand-ins;
the fault script and webhook sender classes are re-exported here.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshdev.standins.apibase import (
    Fault,
    FaultScript,
    FixedWindow,
    HttpStandIn,
    WebhookDelivery,
    WebhookSender,
    json_response,
    read_json_object,
)

__all__ = [
    "DEV_API_KEY",
    "EVENTS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Fault",
    "FaultScript",
    "FixedWindow",
    "SendGridServer",
    "SentMail",
    "WebhookDelivery",
    "WebhookSender",
    "generate_signing_key",
    "load_or_create_signing_key",
    "main",
    "public_key_base64",
    "public_key_pem",
    "sign_event_payload",
]

logger = logging.getLogger(__name__)

DEV_API_KEY = "SG.meshdev-dev-key.not-a-real-sendgrid-api-key-meshdev-dev-only"
"""The key `make run` and tests configure (production settings refuse it)."""
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
EVENTS = ("processed", "delivered", "bounce", "dropped", "spamreport", "unsubscribe", "deferred")
MAIL_SEND = "/v3/mail/send"
MAX_RECIPIENTS = 1000
_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message."
# Deliberately loose: SendGrid's own check is not published; this catches the obvious mistakes.
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
# Keys of an event that custom_args never overwrite.
_RESERVED = frozenset(
    {"email", "timestamp", "event", "smtp-id", "sg_event_id", "sg_message_id", "category"}
)


# -- the Event Webhook's signature --------------------------------------------------------------


def generate_signing_key() -> ec.EllipticCurvePrivateKey:
    """A new P-256 key pair, as SendGrid makes when signed webhooks are turned on."""
    return ec.generate_private_key(ec.SECP256R1())


def load_or_create_signing_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The P-256 private key in the PEM file at `path`, created (mode 0600) when missing."""
    path = Path(path)
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path} does not hold an EC private key")
        return key
    key = generate_signing_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key


def public_key_base64(key: ec.EllipticCurvePrivateKey) -> str:
    """The verification key as SendGrid's settings page shows it: base64 DER, one line."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def public_key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def sign_event_payload(key: ec.EllipticCurvePrivateKey, timestamp: str, payload: bytes) -> str:
    """base64(DER(ECDSA P-256 / SHA-256 over `timestamp` + `payload`)), SendGrid's signature."""
    der = key.sign(timestamp.encode() + payload, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(der).decode()


# -- the Mail Send API --------------------------------------------------------------------------


@dataclass(slots=True)
class SentMail:
    """A send request SendGrid accepted (202), as the API received it."""

    message_id: str
    """The `X-Message-Id` answered."""
    received_at: float
    from_: dict[str, Any]
    subject: str | None
    personalizations: list[dict[str, Any]]
    content: list[dict[str, Any]]
    custom_args: dict[str, str]
    """Message-level custom_args (each personalization may add its own)."""
    headers: dict[str, str]
    categories: list[str]
    template_id: str | None
    request: dict[str, Any]
    """The whole JSON body."""

    def recipients(self) -> list[str]:
        """Every to/cc/bcc address, in request order."""
        return [
            r["email"]
            for p in self.personalizations
            for kind in ("to", "cc", "bcc")
            for r in p.get(kind) or ()
        ]

    def content_of(self, mime_type: str) -> str | None:
        return next((c["value"] for c in self.content if c.get("type") == mime_type), None)

    @property
    def text(self) -> str | None:
        return self.content_of("text/plain")

    @property
    def html(self) -> str | None:
        return self.content_of("text/html")

    def args_for(self, personalization: int) -> dict[str, str]:
        """custom_args as the events of that personalization's recipients carry them."""
        return {
            **self.custom_args,
            **(self.personalizations[personalization].get("custom_args") or {}),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "received_at": self.received_at,
            "from": self.from_,
            "subject": self.subject,
            "personalizations": self.personalizations,
            "content": self.content,
            "custom_args": self.custom_args,
            "headers": self.headers,
            "categories": self.categories,
            "template_id": self.template_id,
            "recipients": self.recipients(),
        }


def sendgrid_error(
    status: int, message: str, field_: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    """An error in SendGrid's shape: `{"errors": [{"message", "field", "help"}]}`."""
    return json_response(
        {"errors": [{"message": message, "field": field_, "help": None}]}, status, headers
    )


def _err(message: str, field_: str | None, help_anchor: str | None = None) -> dict[str, Any]:
    return {
        "message": message,
        "field": field_,
        "help": _HELP + help_anchor if help_anchor else None,
    }


def _valid_email(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 320 and _EMAIL.match(value) is not None


def validate_mail(body: object) -> list[dict[str, Any]]:
    """SendGrid's validation of a v3 mail/send body (the rules a sender can break); [] if valid."""
    if not isinstance(body, dict):
        return [_err("Bad Request: the request body must be a JSON object.", None)]
    errors: list[dict[str, Any]] = []
    template = body.get("template_id")
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        errors.append(
            _err(
                "The personalizations field is required and must have at least one "
                "personalization.",
                "personalizations",
                "personalizations",
            )
        )
        personalizations = []
    elif len(personalizations) > MAX_RECIPIENTS:
        errors.append(
            _err(
                f"The personalizations field must have no more than {MAX_RECIPIENTS} items.",
                "personalizations",
                "personalizations",
            )
        )
    total = 0
    every_has_subject = bool(personalizations)
    for i, p in enumerate(personalizations):
        if not isinstance(p, dict):
            errors.append(_err("Invalid type.", f"personalizations.{i}", "personalizations"))
            every_has_subject = False
            continue
        every_has_subject = every_has_subject and isinstance(p.get("subject"), str)
        to = p.get("to")
        if not isinstance(to, list) or not to:
            errors.append(
                _err(
                    "The to array is required for all personalization objects, and must have "
                    "at least one email object with a valid email address.",
                    f"personalizations.{i}.to",
                    "personalizations.to",
                )
            )
        for kind in ("to", "cc", "bcc"):
            people = p.get(kind) or []
            if not isinstance(people, list):
                errors.append(_err("Invalid type.", f"personalizations.{i}.{kind}", None))
                continue
            total += len(people)
            for j, person in enumerate(people):
                address = person.get("email") if isinstance(person, dict) else None
                if not _valid_email(address):
                    errors.append(
                        _err(
                            "Does not contain a valid address.",
                            f"personalizations.{i}.{kind}.{j}.email",
                            f"personalizations.{kind}",
                        )
                    )
        args = p.get("custom_args")
        if args is not None and not _string_map(args):
            errors.append(
                _err(
                    "Custom args must be an object of string keys and string values.",
                    f"personalizations.{i}.custom_args",
                    "personalizations.custom_args",
                )
            )
    if total > MAX_RECIPIENTS:
        errors.append(
            _err(
                f"The total number of recipients must be no more than {MAX_RECIPIENTS}.",
                "personalizations",
                "personalizations",
            )
        )
    sender = body.get("from")
    if not isinstance(sender, dict) or "email" not in sender:
        errors.append(
            _err(
                "The from object must be provided for every email send. It is an object that "
                "requires the email parameter, but may also contain a name parameter.",
                "from",
                "from",
            )
        )
    elif not _valid_email(sender["email"]):
        errors.append(
            _err("The from email does not contain a valid address.", "from.email", "from")
        )
    subject = body.get("subject")
    if template is None and not every_has_subject and not (isinstance(subject, str) and subject):
        errors.append(
            _err(
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject "
                "defined.",
                "subject",
                "subject",
            )
        )
    content = body.get("content")
    if content is None:
        if template is None:
            errors.append(
                _err(
                    "Unless a valid template_id is provided, the content array is required.",
                    "content",
                    "content",
                )
            )
    elif not isinstance(content, list) or not content:
        errors.append(_err("The content array must have at least one item.", "content", "content"))
    else:
        types: list[str] = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                errors.append(
                    _err("The content type is required.", f"content.{i}.type", "content.type")
                )
                continue
            types.append(part["type"])
            value = part.get("value")
            if not isinstance(value, str) or not value:
                errors.append(
                    _err(
                        "The content value must be a string at least one character in length.",
                        f"content.{i}.value",
                        "content.value",
                    )
                )
        if "text/plain" in types and types[0] != "text/plain":
            errors.append(
                _err(
                    "If present, text/plain content must be first, followed by text/html, "
                    "followed by any other content.",
                    "content",
                    "content",
                )
            )
    for name in ("custom_args", "headers"):
        value = body.get(name)
        if value is not None and not _string_map(value):
            errors.append(_err(f"The {name} must be an object of string values.", name, name))
    return errors


def _string_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _new_message_id() -> str:
    return secrets.token_urlsafe(16)[:22]


class SendGridServer(HttpStandIn):
    """The stand-in (module doc) served in the running event loop; `url` once started (the base
    URL to give `SendGridAPIClient(host=...)`)."""

    user_agent = "SendGrid Event API"

    def __init__(
        self,
        *,
        api_keys: Iterable[str] = (DEV_API_KEY,),
        signing_key: ec.EllipticCurvePrivateKey | None = None,
        webhook_url: str | None = None,
        auto_events: bool = False,
        event_delay_s: float = 0.0,
        rate_limit: int | None = 600,
        rate_period_s: float = 60.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_keys = set(api_keys)
        self.signing_key = signing_key if signing_key is not None else generate_signing_key()
        self.webhook_url = webhook_url
        self.auto_events = auto_events
        self.event_delay_s = event_delay_s
        """Pause before each automatic event POST (processed, then the outcome)."""
        self.window = FixedWindow(rate_limit, rate_period_s)
        self.messages: list[SentMail] = []
        self.outcomes: dict[str, dict[str, Any]] = {}
        """Automatic outcome per recipient address (lower case); default `delivered`."""
        self.calls = 0
        """Mail send calls received (answered or not)."""
        self._forger = generate_signing_key()
        super().__init__(host=host, port=port)

    # -- configuration the service needs -------------------------------------------------------
    @property
    def public_key(self) -> str:
        """The Event Webhook verification key (base64 DER, as on SendGrid's settings page)."""
        return public_key_base64(self.signing_key)

    @property
    def public_key_pem(self) -> str:
        return public_key_pem(self.signing_key)

    # -- scripting (`fail_next`, `throttle_next`, `slow_next`: the base's) ---------------------
    def set_outcome(self, email: str, event: str = "bounce", **fields: Any) -> None:
        """What automatic events report for `email`: `bounce`, `dropped`, ... (extra fields such
        as `reason` go into the event)."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}")
        self.outcomes[email.lower()] = {"event": event, **fields}

    def _reset_data(self) -> None:
        """Forget messages, outcomes and the rate window (`reset`: deliveries and faults too)."""
        self.messages.clear()
        self.outcomes.clear()
        self.window.reset()
        self.calls = 0

    def message(self, message_id: str) -> SentMail:
        found = next((m for m in self.messages if m.message_id == message_id), None)
        if found is None:
            raise KeyError(f"no kept message {message_id!r}")
        return found

    # -- events --------------------------------------------------------------------------------
    def events_for(
        self,
        message: SentMail,
        event: str,
        *,
        email: str | None = None,
        timestamp: int | None = None,
        **fields: Any,
    ) -> list[dict[str, Any]]:
        """The event objects SendGrid would post for `message`'s recipients (or just `email`)."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; one of {', '.join(EVENTS)}")
        now = int(time.time()) if timestamp is None else timestamp
        events: list[dict[str, Any]] = []
        for i, p in enumerate(message.personalizations):
            people = [r for kind in ("to", "cc", "bcc") for r in p.get(kind) or ()]
            for j, person in enumerate(people):
                address = person["email"]
                if email is not None and address.lower() != email.lower():
                    continue
                item: dict[str, Any] = {
                    k: v for k, v in message.args_for(i).items() if k not in _RESERVED
                }
                item.update(
                    email=address,
                    timestamp=now,
                    event=event,
                    **{"smtp-id": f"<{message.message_id}@meshdev.sendgrid.test>"},
                    sg_event_id=secrets.token_urlsafe(16)[:22],
                    sg_message_id=f"{message.message_id}.filterdrecv-{i}-{j}.0",
                )
                if message.categories:
                    item["category"] = list(message.categories)
                item.update(_EVENT_DEFAULTS.get(event, {}))
                item.update(fields)
                events.append(item)
        if not events:
            raise KeyError(f"{email!r} is not a recipient of {message.message_id}")
        return events

    async def post_events(
        self,
        events: Sequence[dict[str, Any]],
        *,
        url: str | None = None,
        signed_at: int | None = None,
        forge: bool = False,
    ) -> WebhookDelivery:
        """POST `events` as one signed batch to `url` (default `webhook_url`)."""
        target = url or self.webhook_url
        if not target:
            raise RuntimeError("no Event Webhook URL configured (webhook_url)")
        body = json.dumps(list(events), separators=(",", ":")).encode() + b"\r\n"
        timestamp = str(int(time.time()) if signed_at is None else signed_at)
        key = self._forger if forge else self.signing_key
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign_event_payload(key, timestamp, body),
        }
        return await self.sender.post(target, body, headers)

    async def emit(
        self,
        message_id: str,
        event: str = "delivered",
        *,
        email: str | None = None,
        url: str | None = None,
        signed_at: int | None = None,
        forge: bool = False,
        **fields: Any,
    ) -> WebhookDelivery:
        """Post `event` for a kept message's recipients (or just `email`), signed; wait for the
        receiver's answer. `signed_at` backdates the signature (stale receipts); `forge` signs
        with an untrusted key; `fields` (e.g. `reason`) go into each event."""
        events = self.events_for(
            self.message(message_id), event, email=email, timestamp=signed_at, **fields
        )
        return await self.post_events(events, url=url, signed_at=signed_at, forge=forge)

    async def _auto_events(self, message: SentMail) -> None:
        for stage in ("processed", "outcome"):
            if self.event_delay_s:
                await asyncio.sleep(self.event_delay_s)
            events: list[dict[str, Any]] = []
            for address in dict.fromkeys(message.recipients()):
                spec = (
                    {"event": "processed"}
                    if stage == "processed"
                    else dict(self.outcomes.get(address.lower(), {"event": "delivered"}))
                )
                event = spec.pop("event")
                events += self.events_for(message, event, email=address, **spec)
            await self.post_events(events)

    # -- the API -------------------------------------------------------------------------------
    async def mail_send(self, request: web.Request) -> web.Response:
        self.calls += 1
        raw = await request.read()
        fault = self.faults.next()
        delay = self.faults.latency_s + (fault.delay_s if fault else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        authorization = request.headers.get("Authorization", "")
        if not authorization:
            return sendgrid_error(401, "authorization required")
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or key.strip() not in self.api_keys:
            return sendgrid_error(
                401, "The provided authorization grant is invalid, expired, or revoked"
            )
        if fault is not None and fault.status:
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else None
            if fault.status == 429:
                return sendgrid_error(429, "too many requests", headers=headers)
            return sendgrid_error(fault.status, "internal error", headers=headers)
        allowed, remaining, reset = self.window.take()
        limits = (
            {
                "X-RateLimit-Limit": str(self.window.limit),
                "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset": str(reset),
            }
            if self.window.limit is not None
            else {}
        )
        if not allowed:
            return sendgrid_error(429, "too many requests", headers=limits)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
        errors = validate_mail(body)
        if errors:
            return json_response({"errors": errors}, 400, limits)
        assert isinstance(body, dict)
        message = SentMail(
            message_id=_new_message_id(),
            received_at=time.time(),
            from_=dict(body["from"]),
            subject=body.get("subject"),
            personalizations=list(body["personalizations"]),
            content=list(body.get("content") or []),
            custom_args=dict(body.get("custom_args") or {}),
            headers=dict(body.get("headers") or {}),
            categories=list(body.get("categories") or []),
            template_id=body.get("template_id"),
            request=body,
        )
        self.messages.append(message)
        if self.auto_events and self.webhook_url:
            self.sender.spawn(self._auto_events(message))
        return web.Response(status=202, headers={**limits, "X-Message-Id": message.message_id})

    # -- the control API (`/_standin/`, for processes; the rest is the base's) -----------------
    def _routes(self, app: web.Application) -> None:
        app.router.add_post(MAIL_SEND, self.mail_send)

    def _extra_control(self, app: web.Application) -> None:
        app.router.add_get("/_standin/messages", self._messages)
        app.router.add_post("/_standin/outcomes", self._set_outcome)
        app.router.add_post("/_standin/events", self._emit)

    def _settings_json(self) -> dict[str, Any]:
        return {
            "api_keys": sorted(self.api_keys),
            "public_key": self.public_key,
            "public_key_pem": self.public_key_pem,
            "webhook_url": self.webhook_url,
            "auto_events": self.auto_events,
            "rate_limit": self.window.limit,
            "rate_period_s": self.window.period_s,
            "calls": self.calls,
        }

    def _configure_json(self, spec: dict[str, Any]) -> None:
        if "webhook_url" in spec:
            self.webhook_url = spec["webhook_url"] or None
        if "auto_events" in spec:
            self.auto_events = bool(spec["auto_events"])
        if "event_delay_s" in spec:
            self.event_delay_s = float(spec["event_delay_s"])
        if "rate_limit" in spec:
            self.window.limit = None if spec["rate_limit"] is None else int(spec["rate_limit"])
        if "rate_period_s" in spec:
            self.window.period_s = float(spec["rate_period_s"])
        if "api_keys" in spec:
            self.api_keys = set(spec["api_keys"])

    async def _messages(self, _request: web.Request) -> web.Response:
        return json_response([m.to_json() for m in self.messages])

    async def _set_outcome(self, request: web.Request) -> web.Response:
        spec = await read_json_object(request)
        email = spec.pop("email")
        self.set_outcome(email, **spec)
        return json_response({"email": email, **self.outcomes[email.lower()]})

    async def _emit(self, request: web.Request) -> web.Response:
        spec = await read_json_object(request)
        try:
            delivery = await self.emit(
                spec.pop("message_id"), spec.pop("event", "delivered"), **spec
            )
        except KeyError as exc:
            return json_response({"error": exc.args[0] if exc.args else "missing"}, 404)
        except (RuntimeError, ValueError) as exc:
            return json_response({"error": str(exc)}, 409)
        return json_response(delivery.to_json())


_EVENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "delivered": {"response": "250 2.0.0 OK", "ip": "127.0.0.1", "tls": 0},
    "bounce": {
        "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
        "status": "5.1.1",
        "type": "bounce",
        "bounce_classification": "Invalid Address",
    },
    "dropped": {"reason": "Bounced Address", "status": "5.0.0"},
    "deferred": {"response": "421 4.7.0 Try again later", "attempt": "1"},
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meshdev.standins.sendgrid",
        description="A SendGrid v3 Mail Send + Event Webhook stand-in (dev/test only).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--api-key", action="append", dest="api_keys", help="an accepted API key (repeatable)"
    )
    parser.add_argument("--signing-key", type=Path, help="P-256 private key PEM (created if new)")
    parser.add_argument("--webhook-url", help="where Event Webhook POSTs go")
    parser.add_argument("--auto-events", action="store_true", help="processed + delivered events")
    parser.add_argument("--rate-limit", type=int, default=600, help="calls per window; 0: none")
    parser.add_argument("--rate-period", type=float, default=60.0, help="window length (s)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    server = SendGridServer(
        api_keys=args.api_keys or (DEV_API_KEY,),
        signing_key=load_or_create_signing_key(args.signing_key) if args.signing_key else None,
        webhook_url=args.webhook_url,
        auto_events=args.auto_events,
        rate_limit=args.rate_limit or None,
        rate_period_s=args.rate_period,
    )
    web.run_app(
        server.app,
        host=args.host,
        port=args.port,
        access_log=None,
        shutdown_timeout=5.0,
        print=lambda _: logger.info("sendgrid stand-in on http://%s:%d", args.host, args.port),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
