"""The Stripe adapter: the only module that talks to Stripe, through the official `stripe` SDK.

Every call goes through the kit's guard for the "stripe" provider (shared rate limit → circuit
breaker → retries honouring Retry-After and the caller's deadline) and carries an
`Idempotency-Key` derived from our own ids, so a retry (ours, the guard's, or a client's after a
crash) asks Stripe for the same object instead of a second one. The SDK's own retries are off
(`max_network_retries=0`): the guard is the one place that decides to retry.

A card decline is a payment outcome, not a transport failure: it is caught *inside* the guarded
function and returned as a value, so the guard neither retries it nor counts it against the
breaker. Other 4xx answers are raised to the guard (which does not retry them or count them as
health failures) and come out of this module as `StripeRejected`. Results are the domain's plain
values (`domain.provider`), read from API answers and webhook objects alike.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import httpx
import stripe

from meshkit.errors import Unavailable
from meshkit.resilience import ProviderGuard
from payment_service.domain.provider import IntentResult, PayoutResult, RefundResult

logger = logging.getLogger(__name__)

T = TypeVar("T")

PROVIDER = "stripe"


class StripeRejected(Exception):
    """Stripe refused a request (4xx other than a card decline): final, not retried."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"stripe rejected the request: HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404 or self.code == "resource_missing"


class WebhookRejected(Exception):
    """A webhook failed signature or timestamp verification (`in_body`: its body is not a
    Stripe event, although signed)."""

    def __init__(self, message: str, *, in_body: bool = False) -> None:
        super().__init__(message)
        self.in_body = in_body


def _get(obj: Any, key: str, default: Any = None) -> Any:
    """Read a field of a StripeObject, a plain dict or None alike."""
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    try:
        return obj[key]
    except (KeyError, TypeError, AttributeError):
        return getattr(obj, key, default)


def _id_of(value: Any) -> str:
    """An expandable field is an id string or an object with an id."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return str(_get(value, "id", "") or "")


def intent_result(pi: Any) -> IntentResult:
    """Our view of a PaymentIntent object (SDK object or a webhook's JSON)."""
    status = str(_get(pi, "status", "") or "")
    next_action = _get(pi, "next_action")
    redirect = _get(next_action, "redirect_to_url")
    error = _get(pi, "last_payment_error")
    return IntentResult(
        intent_id=str(_get(pi, "id", "")),
        status=status,
        charge_id=_id_of(_get(pi, "latest_charge")),
        client_secret=(
            str(_get(pi, "client_secret", "") or "") if status == "requires_action" else ""
        ),
        next_action_url=str(_get(redirect, "url", "") or ""),
        failure_code=str(_get(error, "code", "") or ""),
        decline_code=str(_get(error, "decline_code", "") or ""),
        failure_message=str(_get(error, "message", "") or ""),
    )


def _rejected(exc: stripe.StripeError) -> StripeRejected:
    return StripeRejected(
        exc.http_status or 0, str(exc.code or type(exc).__name__), str(exc.user_message or "")
    )


def _is_client_error(exc: stripe.StripeError) -> bool:
    status = exc.http_status or 0
    # 409 (idempotency conflict) and 429 are transient; everything else in 4xx is final.
    return 400 <= status < 500 and status not in (409, 429)


class StripeGateway:
    """Typed Stripe operations used by the payment service (build once at start)."""

    def __init__(
        self,
        *,
        secret_key: str,
        api_base: str,
        guard: ProviderGuard,
        api_version: str | None = None,
        timeout_s: float = 20.0,
        payment_method_types: list[str] | None = None,
    ) -> None:
        self._api_base = api_base.rstrip("/")
        # aiohttp: async-native, pooled connections, no thread per request.
        self._http = stripe.AIOHTTPClient(timeout=timeout_s)
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": self._api_base},
            stripe_version=api_version,
            http_client=self._http,
            max_network_retries=0,
        )
        self._guard = guard
        self._payment_method_types = payment_method_types or ["card"]

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def _call(
        self, operation: str, fn: Callable[[], Awaitable[T]], *, idempotent: bool = True
    ) -> T:
        """Run `fn` through the guard; final Stripe refusals come out as StripeRejected.

        Every call we make is safe to repeat (reads, or writes with an Idempotency-Key), so
        the guard may retry all of them.
        """

        async def attempt() -> T:
            try:
                return await fn()
            except stripe.APIConnectionError as exc:
                # The SDK wraps transport errors in an exception without an HTTP status; hand
                # the guard the transport error itself, so it is retried and counted as a
                # health failure of Stripe.
                cause = exc.__cause__
                if isinstance(cause, Exception):
                    raise cause from exc
                raise ConnectionError(str(exc)) from exc

        try:
            return await self._guard.call(operation, attempt, idempotent=idempotent)
        except stripe.StripeError as exc:
            if _is_client_error(exc):
                raise _rejected(exc) from exc
            if exc.http_status == 409:
                # Stripe is still working on an earlier request with the same key.
                raise Unavailable(
                    "Stripe is still processing this request; retry shortly",
                    reason="PROVIDER_IDEMPOTENCY_CONFLICT",
                    retry_after=1.0,
                ) from exc
            raise

    # -- payment intents ----------------------------------------------------------------------

    async def create_intent(
        self,
        *,
        idempotency_key: str,
        amount: int,
        currency: str,
        payment_method: str,
        metadata: Mapping[str, str],
        return_url: str = "",
    ) -> IntentResult:
        """Create and confirm a PaymentIntent in one call; a decline is a result."""
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency.lower(),
            "payment_method": payment_method,
            "payment_method_types": self._payment_method_types,
            "confirm": True,
            "metadata": dict(metadata),
        }
        if return_url:
            params["return_url"] = return_url

        async def create() -> IntentResult:
            try:
                pi = await self._client.v1.payment_intents.create_async(
                    params,  # type: ignore[arg-type]
                    {"idempotency_key": idempotency_key},
                )
            except stripe.CardError as exc:
                return self._declined(exc)
            return intent_result(pi)

        result = await self._call("payment_intents.create", create)
        if result.declined and not result.intent_id and result.charge_id:
            # Stripe names the PaymentIntent in the decline; some servers only name the charge.
            charge = await self.retrieve_charge(result.charge_id)
            intent_id = _id_of(_get(charge, "payment_intent"))
            result = dataclasses.replace(result, intent_id=intent_id)
        return result

    @staticmethod
    def _declined(exc: stripe.CardError) -> IntentResult:
        error = exc.error
        return IntentResult(
            intent_id=_id_of(_get(error, "payment_intent")),
            status="requires_payment_method",
            charge_id=_id_of(_get(error, "charge")),
            failure_code=str(exc.code or "card_declined"),
            decline_code=str(_get(error, "decline_code", "") or ""),
            failure_message=str(exc.user_message or "Your card was declined."),
            declined=True,
        )

    async def retrieve_intent(self, intent_id: str) -> IntentResult:
        async def retrieve() -> IntentResult:
            return intent_result(await self._client.v1.payment_intents.retrieve_async(intent_id))

        return await self._call("payment_intents.retrieve", retrieve)

    async def cancel_intent(self, *, idempotency_key: str, intent_id: str) -> IntentResult:
        async def cancel() -> IntentResult:
            pi = await self._client.v1.payment_intents.cancel_async(
                intent_id, options={"idempotency_key": idempotency_key}
            )
            return intent_result(pi)

        return await self._call("payment_intents.cancel", cancel)

    async def retrieve_charge(self, charge_id: str) -> Any:
        async def retrieve() -> Any:
            return await self._client.v1.charges.retrieve_async(charge_id)

        return await self._call("charges.retrieve", retrieve)

    # -- refunds ------------------------------------------------------------------------------

    async def create_refund(
        self,
        *,
        idempotency_key: str,
        intent_id: str,
        amount: int,
        metadata: Mapping[str, str],
    ) -> RefundResult:
        # The refund reason travels in metadata: Stripe's own `reason` has three values only
        # (and localstripe refuses the field).
        params: dict[str, Any] = {
            "payment_intent": intent_id,
            "amount": amount,
            "metadata": dict(metadata),
        }

        async def create() -> RefundResult:
            refund = await self._client.v1.refunds.create_async(
                params,  # type: ignore[arg-type]
                {"idempotency_key": idempotency_key},
            )
            return RefundResult(
                refund_id=str(refund.id),
                status=str(_get(refund, "status", "") or "pending"),
                failure_reason=str(_get(refund, "failure_reason", "") or ""),
            )

        return await self._call("refunds.create", create)

    async def retrieve_refund(self, refund_id: str) -> RefundResult:
        async def retrieve() -> RefundResult:
            refund = await self._client.v1.refunds.retrieve_async(refund_id)
            return RefundResult(
                refund_id=str(refund.id),
                status=str(_get(refund, "status", "") or "pending"),
                failure_reason=str(_get(refund, "failure_reason", "") or ""),
            )

        return await self._call("refunds.retrieve", retrieve)

    # -- payouts ------------------------------------------------------------------------------

    async def create_payout(
        self,
        *,
        idempotency_key: str,
        amount: int,
        currency: str,
        instant: bool,
        statement_descriptor: str,
        metadata: Mapping[str, str],
    ) -> PayoutResult:
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency.lower(),
            "method": "instant" if instant else "standard",
            "metadata": dict(metadata),
        }
        if statement_descriptor:
            params["statement_descriptor"] = statement_descriptor

        async def create() -> PayoutResult:
            payout = await self._client.v1.payouts.create_async(
                params,  # type: ignore[arg-type]
                {"idempotency_key": idempotency_key},
            )
            return payout_result(payout)

        return await self._call("payouts.create", create)

    # -- webhooks -----------------------------------------------------------------------------

    @staticmethod
    def verify_webhook(
        payload: bytes, signature_header: str, secret: str, tolerance_s: int
    ) -> dict[str, Any]:
        """Verify a webhook's signature and age with the SDK; return the event as JSON.

        The SDK's age check is one-sided (a timestamp in the future passes), so a timestamp
        more than `tolerance_s` ahead is refused here too: replay protection is symmetric.
        """
        if not signature_header:
            raise WebhookRejected("missing Stripe-Signature header")
        try:
            text = payload.decode("utf-8")
            stripe.WebhookSignature.verify_header(text, signature_header, secret, tolerance_s)
        except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError) as exc:
            raise WebhookRejected(str(exc).split("\n")[0] or "invalid signature") from None
        timestamp = _signature_timestamp(signature_header)
        if timestamp is not None and timestamp > time.time() + tolerance_s:
            raise WebhookRejected("timestamp is too far in the future")
        try:
            event = json.loads(text)
        except json.JSONDecodeError:
            raise WebhookRejected("body is not JSON", in_body=True) from None
        if not isinstance(event, dict) or not event.get("id") or not event.get("type"):
            raise WebhookRejected("body is not a Stripe event", in_body=True)
        return event

    async def register_local_webhook(
        self, *, webhook_id: str, url: str, secret: str, events: list[str] | None = None
    ) -> None:
        """Dev/test only: ask a localstripe server to deliver signed events to `url`.

        localstripe's `/_config/webhooks/{id}` is not part of Stripe's API (the SDK has no call
        for it); production settings refuse the option that leads here.
        """
        data: dict[str, Any] = {"url": url, "secret": secret}
        if events is not None:
            data["events"] = events
        async with httpx.AsyncClient(timeout=5.0) as client:
            response = await client.post(
                f"{self._api_base}/_config/webhooks/{webhook_id}", json=data
            )
            response.raise_for_status()
        logger.info("registered localstripe webhook", extra={"webhook_id": webhook_id, "url": url})


def payout_result(payout: Any) -> PayoutResult:
    arrival = _get(payout, "arrival_date")
    return PayoutResult(
        payout_id=str(_get(payout, "id", "")),
        status=str(_get(payout, "status", "") or "pending"),
        arrival_date=int(arrival) if arrival else None,
        failure_code=str(_get(payout, "failure_code", "") or ""),
        failure_message=str(_get(payout, "failure_message", "") or ""),
    )


def _signature_timestamp(header: str) -> int | None:
    for item in header.split(","):
        key, _, value = item.partition("=")
        if key.strip() == "t":
            try:
                return int(value)
            except ValueError:
                return None
    return None
