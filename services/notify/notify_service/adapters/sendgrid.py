"""Email through SendGrid's v3 Mail Send API with the official `sendgrid` SDK, and verification
of its signed Event Webhook.

The SDK is synchronous (urllib): each send runs in a thread (`asyncio.to_thread`) inside the
kit's "sendgrid" guard, which rate-limits, breaks and retries (429 and 5xx are answers SendGrid
gives before accepting anything; a request that timed out may have been accepted — UNKNOWN —
and is retried with the same Message-ID header and custom_args). 400/413 are the message's
fault, 401/403 our account's (the next provider may take over). `custom_args` carry our
notification id, which SendGrid echoes in every event.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import socket
import urllib.error
from collections.abc import Mapping, Sequence
from typing import Any

import sendgrid
from python_http_client import exceptions as http_errors
from sendgrid.helpers.eventwebhook import EventWebhook

from meshkit.errors import MeshError
from meshkit.resilience import ProviderGuard
from notify_service.adapters.base import (
    Accepted,
    OutboundEmail,
    OutboundSms,
    SendError,
    Uncertain,
    guard_failure,
    send_each,
)
from notify_service.domain.model import Channel
from notify_service.domain.retry import FailureKind, SendFailure

PROVIDER = "sendgrid"
SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"


def _address(value: str) -> dict[str, str]:
    from email.utils import parseaddr

    name, address = parseaddr(value)
    return {"email": address, "name": name} if name else {"email": address}


def mail_body(email: OutboundEmail) -> dict[str, Any]:
    """The v3 mail/send JSON for one message."""
    to: dict[str, str] = {"email": email.to_address}
    if email.to_name:
        to["name"] = email.to_name
    content = [{"type": "text/plain", "value": email.text or " "}]
    if email.html:
        content.append({"type": "text/html", "value": email.html})
    body: dict[str, Any] = {
        "personalizations": [{"to": [to]}],
        "from": _address(email.from_address),
        "subject": email.subject,
        "content": content,
        "headers": {"Message-ID": email.message_id, **email.headers},
        "custom_args": {"notification_id": email.notification_id},
    }
    if email.reply_to:
        body["reply_to"] = _address(email.reply_to)
    if email.attachments:
        body["attachments"] = [
            {
                "content": base64.b64encode(a.content).decode(),
                "filename": a.filename,
                "type": a.content_type or "application/octet-stream",
                "disposition": "attachment",
            }
            for a in email.attachments
        ]
    return body


class SendGridSender:
    """Sends email through SendGrid (build once)."""

    name = PROVIDER
    channel = Channel.EMAIL
    sessions = False

    def __init__(
        self,
        *,
        api_key: str,
        api_base: str,
        guard: ProviderGuard,
        request_timeout_s: float,
        timeout_s: float,
    ) -> None:
        self._client = sendgrid.SendGridAPIClient(api_key=api_key, host=api_base.rstrip("/"))
        self._client.client.timeout = request_timeout_s
        self._guard = guard
        self._timeout_s = timeout_s

    def _post(self, body: dict[str, Any]) -> Accepted:
        try:
            response = self._client.send(body)
        except http_errors.HTTPError as exc:
            status = int(getattr(exc, "status_code", 0) or 0)
            if status == 429 or status >= 500:
                raise  # the guard reads status and headers (Retry-After, X-RateLimit-Reset)
            raise _Refused(_client_failure(status, exc)) from None
        except TimeoutError as exc:
            raise Uncertain(
                f"no answer from SendGrid ({type(exc).__name__})", retryable=True
            ) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ConnectionRefusedError | socket.gaierror):
                raise ConnectionError(f"cannot reach SendGrid: {exc.reason!r}") from None
            raise Uncertain(f"SendGrid connection failed: {exc.reason!r}", retryable=True) from None
        message_id = ""
        headers = getattr(response, "headers", None)
        if headers is not None:
            message_id = str(headers.get("X-Message-Id", "") or "")
        return Accepted(message_id)

    async def send(self, message: OutboundEmail | OutboundSms) -> Accepted:
        assert isinstance(message, OutboundEmail)
        body = mail_body(message)
        uncertain = False

        async def attempt() -> Accepted:
            nonlocal uncertain
            try:
                return await asyncio.to_thread(self._post, body)
            except Uncertain:
                uncertain = True
                raise

        try:
            return await self._guard.call(
                "mail.send", attempt, idempotent=True, timeout=self._timeout_s
            )
        except _Refused as refused:
            raise SendError(refused.failure) from None
        except Uncertain as exc:
            raise SendError(
                SendFailure(FailureKind.UNKNOWN, "sendgrid_no_answer", str(exc))
            ) from None
        except MeshError as exc:
            raise SendError(guard_failure(exc, uncertain=uncertain)) from None

    async def send_many(
        self, messages: Sequence[OutboundEmail | OutboundSms]
    ) -> list[Accepted | SendFailure]:
        return await send_each(self, messages)

    async def close(self) -> None:
        return None


class _Refused(Exception):
    retryable = False

    def __init__(self, failure: SendFailure) -> None:
        super().__init__(failure.code)
        self.failure = failure


def _client_failure(status: int, exc: Exception) -> SendFailure:
    detail = str(getattr(exc, "body", b"")[:300])
    if status in (401, 403):
        return SendFailure(FailureKind.REJECTED, f"sendgrid_{status}", "SendGrid refused our key")
    return SendFailure(FailureKind.CONTENT, f"sendgrid_{status}", detail)


class SendGridVerifier:
    """Checks the Event Webhook's ECDSA P-256 signature over timestamp + raw body."""

    def __init__(self, public_key: str) -> None:
        self._webhook = EventWebhook()
        self._key = self._webhook.convert_public_key_to_ecdsa(public_key)

    def verify(self, payload: bytes, headers: Mapping[str, str]) -> bool:
        signature = headers.get(SIGNATURE_HEADER, "")
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        if not signature or not timestamp:
            return False
        try:
            text = payload.decode("utf-8")
            return bool(self._webhook.verify_signature(text, signature, timestamp, self._key))
        except (UnicodeDecodeError, ValueError, binascii.Error, TypeError):
            return False
