"""SMS through Twilio's Messages API with the official `twilio` SDK (async HTTP client), and
verification of its signed callbacks.

Twilio has no idempotency key for message creation, so a request that may have been accepted
(the connection dropped after it was sent, a timeout) is not retried by the guard: it comes out
UNKNOWN and the queue decides (a re-send may make a second text — at most one per such
failure). Answers that reject before accepting anything (429 / 20429, 5xx) are retried by the
guard. 4xx errors are classified by Twilio's error code: the number (21211 invalid, 21610
unsubscribed by STOP, 21614 not a mobile) is a bounce; our account or sender (20003, 21606,
21212, ...) a rejection; the rest the message's fault. The status callback URL carries our
notification id; its signature covers the URL, so the id is authenticated too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import aiohttp
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

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

PROVIDER = "twilio"
SIGNATURE_HEADER = "x-twilio-signature"
# Error codes that mean the destination number cannot receive (a bounce; 21610 = STOP).
RECIPIENT_CODES = frozenset({21211, 21214, 21407, 21408, 21610, 21612, 21614})
ACCOUNT_CODES = frozenset({20003, 20005, 20008, 21212, 21606, 21659, 21703, 30002})


class _Refused(Exception):
    retryable = False

    def __init__(self, failure: SendFailure) -> None:
        super().__init__(failure.code)
        self.failure = failure


def _failure(exc: TwilioRestException) -> SendFailure:
    code = int(exc.code or 0)
    text = f"Twilio {exc.status} / {code}"
    if code in RECIPIENT_CODES:
        return SendFailure(
            FailureKind.RECIPIENT, f"twilio_{code}", text, suppress=code in (21610, 21614)
        )
    if exc.status in (401, 403) or code in ACCOUNT_CODES:
        return SendFailure(FailureKind.REJECTED, f"twilio_{code}", text)
    return SendFailure(FailureKind.CONTENT, f"twilio_{code}", text)


class TwilioSender:
    """Sends SMS through Twilio (build once inside the running loop; `close()` at shutdown)."""

    name = PROVIDER
    channel = Channel.SMS
    sessions = False

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        api_base: str,
        from_number: str,
        messaging_service_sid: str,
        guard: ProviderGuard,
        request_timeout_s: float,
        timeout_s: float,
    ) -> None:
        self._http = AsyncTwilioHttpClient(timeout=request_timeout_s)
        self._client = Client(account_sid, auth_token, http_client=self._http)
        self._client.api.base_url = api_base.rstrip("/")
        self._from = from_number
        self._service = messaging_service_sid
        self._guard = guard
        self._timeout_s = timeout_s

    async def _create(self, sms: OutboundSms) -> Accepted:
        sender = (
            {"messaging_service_sid": self._service} if self._service else {"from_": self._from}
        )
        extra = {"status_callback": sms.status_callback} if sms.status_callback else {}
        try:
            message = await self._client.messages.create_async(
                to=sms.to_number, body=sms.body, **sender, **extra
            )
        except TwilioRestException as exc:
            if exc.status == 429 or exc.status >= 500:
                raise  # not accepted: the guard retries (20429 is documented safe to retry)
            raise _Refused(_failure(exc)) from None
        except aiohttp.ClientConnectorError as exc:
            raise ConnectionError(f"cannot reach Twilio: {type(exc).__name__}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Uncertain(
                f"no answer from Twilio ({type(exc).__name__})", retryable=False
            ) from None
        return Accepted(str(message.sid or ""))

    async def send(self, message: OutboundEmail | OutboundSms) -> Accepted:
        assert isinstance(message, OutboundSms)
        try:
            return await self._guard.call(
                "messages.create",
                lambda: self._create(message),
                idempotent=True,
                timeout=self._timeout_s,
            )
        except _Refused as refused:
            raise SendError(refused.failure) from None
        except Uncertain as exc:
            raise SendError(
                SendFailure(FailureKind.UNKNOWN, "twilio_no_answer", str(exc))
            ) from None
        except MeshError as exc:
            raise SendError(guard_failure(exc)) from None

    async def send_many(
        self, messages: Sequence[OutboundEmail | OutboundSms]
    ) -> list[Accepted | SendFailure]:
        return await send_each(self, messages)

    async def close(self) -> None:
        await self._http.close()


class TwilioVerifier:
    """Checks `X-Twilio-Signature` (HMAC-SHA1 over the URL and the sorted POST parameters)
    with the SDK's validator, which also tries the URL with and without its port."""

    def __init__(self, auth_token: str) -> None:
        self._validator = RequestValidator(auth_token)

    def verify(self, url: str, params: Mapping[str, str], headers: Mapping[str, str]) -> bool:
        signature = headers.get(SIGNATURE_HEADER, "")
        if not signature or not url:
            return False
        try:
            return bool(self._validator.validate(url, dict(params), signature))
        except (ValueError, TypeError, UnicodeError):
            return False
